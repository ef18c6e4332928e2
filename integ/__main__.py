"""`python -m integ build | cluster up|down|env`: the local control plane from the command line."""

from __future__ import annotations

import argparse
import sys
import time

from integ import build as building
from integ import cluster as clustering


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m integ", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build (or reuse) the control-plane binaries")
    cluster = sub.add_parser("cluster", help="start, stop or locate the local cluster")
    cluster.add_argument("action", choices=["up", "down", "env"])
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            building.build()
        elif args.action == "up":
            started = time.monotonic()
            state = clustering.LocalCluster(bins=building.build()).up()
            print(
                f"cluster ready in {time.monotonic() - started:.1f}s; logs in {state.directory}/logs",
                file=sys.stderr,
            )
            print(f"export KUBECONFIG={state.kubeconfig}")
        elif args.action == "down":
            clustering.down()
        else:
            state = clustering.ClusterState.load()
            if state is None:
                print("no local cluster is running (python -m integ cluster up)", file=sys.stderr)
                return 1
            print(f"export KUBECONFIG={state.kubeconfig}")
    except (building.BuildError, clustering.ClusterError) as err:
        print(f"integ: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
