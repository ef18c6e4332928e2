"""The single entry point: `brupop controller|agent|apiserver`, and the kubectl plugin's commands
(`brupop status|pause|resume|hold|release|retry`, the same as `kubectl brupop ...`).

Each subcommand imports its program lazily, so the agent never pays for the apiserver's imports (the agent
runs under a 50Mi memory limit on every node); a program named alone, as the pods start them, runs without
loading the argument parser, which only `--help` and the plugin's commands need. Configuration comes from
environment variables; a bad value ends the program with one line naming the variable, the value and what
is accepted, and exit code 2, also when a program finds it while starting (a certificate it cannot load,
an address it cannot listen on).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from brupop.kube.config import KubeConfigError
from brupop.logs import LoggingConfigError, configure
from brupop.settings import SettingsError

if TYPE_CHECKING:
    import argparse

CONFIG_ERRORS = (SettingsError, KubeConfigError, LoggingConfigError)


def _parser() -> argparse.ArgumentParser:
    import argparse

    from brupop.plugin.args import add_commands

    parser = argparse.ArgumentParser(
        prog="brupop",
        description="Bottlerocket update operator. Configuration comes from environment variables.",
    )
    sub = parser.add_subparsers(dest="program", required=True, metavar="PROGRAM")
    sub.add_parser("controller", help="decide which nodes update when (one leader per cluster)")
    sub.add_parser("agent", help="drive this node's Bottlerocket host through its update (DaemonSet)")
    sub.add_parser("apiserver", help="authenticate agents and make cluster changes for them")
    add_commands(sub)
    return parser


def _apiserver() -> Coroutine[Any, Any, None]:
    from brupop.apiserver.server import serve
    from brupop.apiserver.settings import ApiserverSettings
    from brupop.kube.config import KubeConfig

    return serve(ApiserverSettings.from_env(os.environ), KubeConfig.load())


def _controller() -> Coroutine[Any, Any, None]:
    from datetime import UTC, datetime

    from brupop.controller.main import run
    from brupop.controller.settings import ControllerSettings
    from brupop.kube.config import KubeConfig

    return run(ControllerSettings.from_env(os.environ, now=datetime.now(UTC)), KubeConfig.load())


def _agent() -> Coroutine[Any, Any, None]:
    from brupop.agent.main import run
    from brupop.agent.settings import AgentSettings
    from brupop.kube.config import KubeConfig

    return run(AgentSettings.from_env(os.environ), KubeConfig.load())


PROGRAMS: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
    "apiserver": _apiserver,
    "controller": _controller,
    "agent": _agent,
}


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if len(words) == 1 and words[0] in PROGRAMS:  # as the pods run them: no argument parser to load
        name = words[0]
    else:
        from brupop.plugin.args import COMMANDS

        args = _parser().parse_args(words)
        if args.program in COMMANDS:
            from brupop.plugin.main import run

            return run(args, prog="brupop")
        name = args.program
    try:
        configure(os.environ)
        program = PROGRAMS[name]()
    except CONFIG_ERRORS as err:
        print(f"brupop {name}: {err}", file=sys.stderr)
        return 2
    try:
        asyncio.run(program)
    except CONFIG_ERRORS as err:  # found at start-up, before serving (e.g. a port that cannot be bound)
        print(f"brupop {name}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
