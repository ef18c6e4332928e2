"""The single entry point: `brupop controller|agent|apiserver`.

Each subcommand imports its program lazily, so the agent never pays for the apiserver's imports (the agent
runs under a 50Mi memory limit on every node).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

PROGRAMS = ("controller", "agent", "apiserver")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brupop",
        description="Bottlerocket update operator. Configuration comes from environment variables.",
    )
    sub = parser.add_subparsers(dest="program", required=True, metavar="PROGRAM")
    sub.add_parser("controller", help="decide which nodes update when (one per cluster, leader-elected)")
    sub.add_parser("agent", help="drive this node's Bottlerocket host through its update (DaemonSet)")
    sub.add_parser("apiserver", help="authenticate agents and make cluster changes for them")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    print(f"brupop {args.program}: not implemented yet", file=sys.stderr)
    return 2
