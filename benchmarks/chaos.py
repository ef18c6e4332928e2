"""Benchmark: the full chaos campaign (integ/chaos.py), not a test. Starts the local control plane, runs N
randomized scenarios on it one after another (run n has seed S + n), prints one line per run and a summary
(verdicts by kind, faults injected by kind, runs that left a node cordoned, breached a PDB or did not
converge, the median makespan / ideal), and exits 1 if any run failed. About 40-60 s a run.

    .venv/bin/python benchmarks/chaos.py [--runs 100] [--seed 1] [--time-scale 0.05]

(The same as `python -m integ chaos --runs 100 --seed 1`; a failed run is replayed with `--runs 1 --seed S`.)
"""

from __future__ import annotations

import sys

from integ.__main__ import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--runs" not in args:
        args = ["--runs", "100", *args]
    raise SystemExit(main(["chaos", *args]))
