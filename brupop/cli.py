"""The single entry point: `brupop controller|agent|apiserver`.

Each subcommand imports its program lazily, so the agent never pays for the apiserver's imports (the agent
runs under a 50Mi memory limit on every node). Configuration comes from environment variables; a bad value
ends the program with one line naming the variable, the value and what is accepted, and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from brupop.kube.config import KubeConfigError
from brupop.logs import LoggingConfigError, configure
from brupop.settings import SettingsError

CONFIG_ERRORS = (SettingsError, KubeConfigError, LoggingConfigError)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brupop",
        description="Bottlerocket update operator. Configuration comes from environment variables.",
    )
    sub = parser.add_subparsers(dest="program", required=True, metavar="PROGRAM")
    sub.add_parser("controller", help="decide which nodes update when (one leader per cluster)")
    sub.add_parser("agent", help="drive this node's Bottlerocket host through its update (DaemonSet)")
    sub.add_parser("apiserver", help="authenticate agents and make cluster changes for them")
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
    args = _parser().parse_args(argv)
    try:
        configure(os.environ)
        program = PROGRAMS[args.program]()
    except CONFIG_ERRORS as err:
        print(f"brupop {args.program}: {err}", file=sys.stderr)
        return 2
    try:
        asyncio.run(program)
    except KeyboardInterrupt:
        return 130
    return 0
