"""The plugin's command line, shared by `kubectl brupop ...` and `brupop status|pause|...`, so both take
the same arguments. Kept free of imports beyond argparse: `brupop agent` builds this parser too."""

from __future__ import annotations

import argparse
from typing import Final

DEFAULT_NAMESPACE: Final = "brupop-bottlerocket-aws"
COMMANDS: Final = ("status", "pause", "resume", "hold", "release", "retry")


def connection_flags(parser: argparse.ArgumentParser, *, default: object) -> None:
    """kubectl's flags for where to connect, and where brupop is installed."""
    parser.add_argument("--kubeconfig", metavar="FILE", default=default, help="the kubeconfig file to use")
    parser.add_argument("--context", metavar="NAME", default=default, help="the kubeconfig context to use")
    parser.add_argument(
        "-n",
        "--namespace",
        metavar="NAMESPACE",
        default=default,
        help=f"the namespace brupop is installed in (default {DEFAULT_NAMESPACE})",
    )


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The commands, each also taking the connection flags after its name."""
    status = sub.add_parser("status", help="each node's state and why it waits; each policy's progress")
    status.add_argument("-o", "--output", choices=("text", "json", "yaml"), default="text")
    status.add_argument("-w", "--watch", action="store_true", help="redraw whenever something changes")
    pause = sub.add_parser("pause", help="let nothing new start: in every pool, or in one policy's")
    pause.add_argument("policy", nargs="?", help="the UpdatePolicy to pause (default: everything)")
    resume = sub.add_parser("resume", help="undo `pause`; with a policy, also clear its failure-budget halt")
    resume.add_argument("policy", nargs="?", help="the UpdatePolicy to resume (default: what `pause` paused)")
    hold = sub.add_parser("hold", help="keep one node out of new updates (the hold annotation)")
    hold.add_argument("node")
    hold.add_argument("--reason", help="why (shown by status); default: who held it")
    release = sub.add_parser("release", help="let a held node update again")
    release.add_argument("node")
    retry = sub.add_parser("retry", help="skip the back-off after a node's failed update")
    retry.add_argument("node")
    for command in (status, pause, resume, hold, release, retry):
        connection_flags(command, default=argparse.SUPPRESS)


def parser(prog: str = "kubectl brupop") -> argparse.ArgumentParser:
    parsed = argparse.ArgumentParser(
        prog=prog,
        description="Ask brupop what the fleet is doing and why, and steer it (pause, hold, retry).",
    )
    connection_flags(parsed, default=None)
    add_commands(parsed.add_subparsers(dest="program", required=True, metavar="COMMAND"))
    return parsed
