"""Benchmark: how close a whole rollout comes to the ideal. Runs the end-to-end happy path (20 nodes,
4 at a time by default) on the local control plane and prints the timeline and the overhead ratio:
actual time / (waves x the host's own refresh + prepare + activate + reboot time). Target <= 1.10.

    .venv/bin/python benchmarks/rollout_overhead.py [--nodes 20] [--concurrency 4] [--time-scale 0.25]

The time scale shrinks the host's timings (a 30 s reboot takes 30 x scale seconds); brupop's own latencies
(watch round trips, drains, token reviews) do not shrink, so a smaller scale shows them larger.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from brupop.logs import configure
from integ.build import build
from integ.cluster import LocalCluster, down
from integ.e2e import Options, main_run
from integ.scenarios import SCENARIOS


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--time-scale", type=float, default=0.25)
    args = parser.parse_args()
    state = LocalCluster(bins=build()).up()
    try:
        with tempfile.TemporaryDirectory() as work, (Path(state.directory) / "brupop.log").open("w") as log:
            configure({"LOGGING_FORMATTER": "json"}, stream=log)
            options = Options(nodes=args.nodes, concurrency=args.concurrency, time_scale=args.time_scale)
            print(main_run(state, Path(work), options, SCENARIOS["happy"]))
    finally:
        down()


if __name__ == "__main__":
    main()
