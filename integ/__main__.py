"""`python -m integ build | cluster up|down|env | run SCENARIO | demo | chaos --runs N --seed S`: the local
control plane, the end-to-end scenarios and the chaos campaign from the command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from brupop.logs import configure
from integ import audit
from integ import build as building
from integ import cluster as clustering
from integ.chaos import Outcome, campaign
from integ.clocks import faketime_library
from integ.e2e import Options, main_run
from integ.kubetools import admin
from integ.monitors import InvariantBrokenError
from integ.processes import stop_on_sigterm
from integ.scenarios import SCENARIOS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m integ", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "build",
        help="build (or reuse) the control-plane binaries, helm, prometheus and promtool; fetch libfaketime",
    )
    cluster = sub.add_parser("cluster", help="start, stop or locate the local cluster")
    cluster.add_argument("action", choices=["up", "down", "env"])
    for name, text in (
        ("run", "run a scenario end to end"),
        ("demo", "a live rollout across simulated nodes"),
    ):
        command = sub.add_parser(name, help=text)
        if name == "run":
            command.add_argument("scenario", choices=sorted(SCENARIOS))
        command.add_argument("--nodes", type=int, default=6)
        command.add_argument("--concurrency", type=int, default=2)
        command.add_argument(
            "--time-scale", type=float, default=0.1, help="host seconds x this = real seconds"
        )
        command.add_argument("--keep", action="store_true", help="leave the cluster running afterwards")
    chaos = sub.add_parser("chaos", help="a campaign of randomized runs, each checked by the monitors")
    chaos.add_argument("--runs", type=int, default=10)
    chaos.add_argument("--seed", type=int, default=1, help="the first run's seed (run n has seed + n)")
    chaos.add_argument("--time-scale", type=float, default=0.05)
    args = parser.parse_args(argv)
    stop_on_sigterm()
    try:
        if args.command == "build":
            building.build()
            faketime_library()  # the chaos campaign's clocks
        elif args.command in ("run", "demo"):
            return _rollout(args)
        elif args.command == "chaos":
            return _chaos(args)
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
            running = clustering.ClusterState.load()
            if running is None:
                print("no local cluster is running (python -m integ cluster up)", file=sys.stderr)
                return 1
            print(f"export KUBECONFIG={running.kubeconfig}")
    except (building.BuildError, clustering.ClusterError, InvariantBrokenError) as err:
        print(f"integ: {err}", file=sys.stderr)
        return 1
    return 0


def _rollout(args: argparse.Namespace) -> int:
    started = time.monotonic()
    bins = building.build()
    print("starting the local control plane ...", file=sys.stderr, flush=True)
    state = clustering.LocalCluster(bins=bins).up()
    print(
        f"cluster ready in {time.monotonic() - started:.0f}s; rolling out 1.20.3 -> 1.21.0 "
        f"on {args.nodes} nodes, "
        f"{args.concurrency} at a time",
        file=sys.stderr,
        flush=True,
    )
    log_file = (Path(state.directory) / "brupop.log").open("w")
    configure({"LOGGING_FORMATTER": "json"}, stream=log_file)
    print(f"brupop's own logs: {log_file.name}", file=sys.stderr, flush=True)
    try:
        options = Options(
            nodes=args.nodes,
            concurrency=args.concurrency,
            time_scale=args.time_scale,
            live=sys.stdout if args.command == "demo" else None,
        )
        report = main_run(
            state, Path(state.directory), options, SCENARIOS[getattr(args, "scenario", "happy")]
        )
        print(report)
        print(f"done in {time.monotonic() - started:.0f}s (including the cluster start)", file=sys.stderr)
    finally:
        if args.keep:
            print(
                f"the cluster keeps running: export KUBECONFIG={state.kubeconfig}  "
                "(kubectl get brs -n brupop-bottlerocket-aws; stop it with: python -m integ cluster down)"
            )
        else:
            clustering.down()
    return 0


def _chaos(args: argparse.Namespace) -> int:
    state = clustering.LocalCluster(bins=building.build()).up()
    audit.enable(state, policy=audit.POD_DELETIONS)  # a PDB breach names who took each pod away
    log_file = (Path(state.directory) / "brupop.log").open("w")
    configure({"LOGGING_FORMATTER": "json"}, stream=log_file)

    async def go() -> list[Outcome]:
        async with admin(state) as kube:
            return await campaign(
                state,
                kube,
                Path(state.directory),
                runs=args.runs,
                seed=args.seed,
                time_scale=args.time_scale,
                out=sys.stdout,
            )

    passed = False
    try:
        outcomes = asyncio.run(go())
        passed = all(o.verdict == "ok" for o in outcomes)
    finally:
        # After a failure (or a crash) the cluster's logs stay for the post-mortem.
        clustering.down(keep_files=not passed)
        if not passed:
            print(f"the cluster's logs and each run's files: {state.directory}", file=sys.stderr)
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
