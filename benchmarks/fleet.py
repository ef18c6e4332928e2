"""Benchmark: brupop at work and at rest, every program its own process, in the shape of issue 20's table.

One run on the local control plane, through the end-to-end harness (integ/e2e.py, integ/actors.py: two
controller replicas, two apiserver replicas, an agent per node, each as its pod runs it), with the
kube-apiserver's audit log on (benchmarks/audit.py):

1. the happy scenario: N nodes, C at a time, the hosts' timings x the time scale. Printed: the makespan
   and the ideal (`integ.e2e.ideal_seconds`: waves x the host's own time per node: refresh, prepare,
   activate, shutdown and reboot), each node's cycle split into the host's time, the drain
   (the workloads' time: evictions, PodDisruptionBudgets, kwok's one-second pod deletion) and the rest,
   brupop's own; and the Kubernetes API requests per node update, by program, counted at the
   kube-apiserver.
2. then M minutes at rest: per process, CPU per minute (/proc/PID/stat), resident memory at the end
   (steady, VmRSS) and its peak since the process started (VmHWM, the rollout included), and the API
   requests per minute by program.

    python -m benchmarks.fleet [--nodes 6] [--concurrency 2] [--time-scale 0.1] [--idle-minutes 5]

The programs run under an interpreter with brupop's runtime dependencies only (and the harness's own
extras, which no program imports), as in the image: the test extras would add about 3 MiB to every
program (schemathesis brings rich, which structlog then imports); the benchmark starts itself again under
that interpreter. The machine's load average is printed with each phase.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import audit
from benchmarks.measure import cpu_seconds, harness_python, load, rss_mib
from brupop.kube.client import SHADOWS
from brupop.logs import configure
from brupop.models.constants import NAMESPACE
from integ.build import build
from integ.cluster import ClusterState, LocalCluster, down
from integ.e2e import Options, Run, Scenario, fleet_done, run_scenario
from integ.hostsim.host import Timings
from integ.kubetools import admin, eventually, watch_events
from integ.monitors import Timeline
from integ.processes import BrupopProcess
from integ.workloads import clean

SETTLE_SECONDS = 20.0
"""After the rollout, before the rest is measured: the last reports and Events are sent."""


@dataclass
class Sample:
    role: str
    pod: str
    cpu_per_minute: float
    rss: float
    peak: float


@dataclass
class Measurement:
    """What the scenario's observer (`observe`, run as its chaos step) saw."""

    minutes: float
    specs: dict[str, list[tuple[float, str]]] = field(default_factory=lambda: defaultdict(list))
    rollout: tuple[datetime, datetime] | None = None
    idle: tuple[datetime, datetime] | None = None
    samples: list[Sample] = field(default_factory=list)
    load_rollout: str = ""
    load_idle: str = ""
    clock: tuple[float, float] = (0.0, 0.0)
    """A wall-clock time and the monotonic time it was taken at, to place log lines on the timeline."""
    drains: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    timeline: Timeline | None = None

    async def observe(self, run: Run) -> None:
        self.timeline = run.timeline
        self.clock = (time.time(), time.monotonic())
        started = datetime.now(UTC)
        specs = asyncio.create_task(self._follow_specs(run))
        try:

            async def converged() -> bool:
                return await fleet_done(run.kube, run.names, set())

            await eventually(converged, within=run.options.within, what="the rollout")
            self.rollout = (started, datetime.now(UTC))
            self.load_rollout = load()
            self._drains(run)
            await asyncio.sleep(SETTLE_SECONDS)
            await self._at_rest(run)
        finally:
            specs.cancel()

    async def _follow_specs(self, run: Run) -> None:
        async for _, obj in watch_events(run.kube, SHADOWS, NAMESPACE):
            node = obj["metadata"]["name"].removeprefix("brs-")
            state = (obj.get("spec") or {}).get("state")
            history = self.specs[node]
            if state and (not history or history[-1][1] != state):
                history.append((run.timeline.at(), state))

    def _drains(self, run: Run) -> None:
        """When each drain began and ended, from the apiserver replicas' logs, on the run's timeline."""
        wall, mono = self.clock
        for replica in run.world.pods.all.values():
            if replica.program != "apiserver":
                continue
            for entry in replica.entries():
                if entry.get("event") in ("draining", "drained") and "node" in entry:
                    at = datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00")).timestamp()
                    self.drains[entry["node"]].append(run.timeline.at(mono + at - wall))

    async def _at_rest(self, run: Run) -> None:
        leader = await run.controllers.leader()
        processes = [p for p in run.world.pods.all.values() if p.running]

        def role(process: BrupopProcess) -> str:
            if process.program == "controller":
                return "controller (leader)" if process is leader else "controller (standby)"
            return process.program

        begun, cpu = datetime.now(UTC), {p.pod: cpu_seconds(p.pid) for p in processes}
        clock = time.monotonic()
        await asyncio.sleep(self.minutes * 60)
        minutes = (time.monotonic() - clock) / 60
        self.idle = (begun, datetime.now(UTC))
        self.load_idle = load()
        for p in processes:
            if not p.running:
                continue
            used = (cpu_seconds(p.pid) - cpu[p.pod]) / minutes
            self.samples.append(Sample(role(p), p.pod, used, rss_mib(p.pid), rss_mib(p.pid, field="VmHWM")))


def _cycles(measured: Measurement) -> str:
    """Each node's cycle: when the controller asked for each state, when the agent reported it, the drain
    and the host's reboot, and where the time went."""
    if measured.timeline is None:
        return "no timeline"
    run_states, events = measured.timeline.states, measured.timeline.events
    host: dict[str, dict[str, float]] = defaultdict(dict)
    for at, text in events:
        words = str(text).split()
        if len(words) >= 3 and words[0] == "host":
            kind = {"accepted": "accepted", "down": "down", "back": "back"}.get(words[2])
            if kind is not None:
                host[words[1]].setdefault(kind, at)
    lines = [
        f"{'node':<10}{'start':>7}{'staged':>8}{'asked':>7}{'drain':>7}{'drained':>8}{'reboot':>8}"
        f"{'back':>7}{'booted':>8}{'idle':>7}   (seconds on the run's clock)"
    ]
    rows = []
    for node in sorted(measured.specs):
        spec = {state: at for at, state in measured.specs[node]}
        status = {state: at for at, state in run_states.get(node, [])}
        drain = measured.drains.get(node, [])
        h = host.get(node, {})
        marks = [
            spec.get("StagedAndPerformedUpdate"),
            status.get("StagedAndPerformedUpdate"),
            spec.get("RebootedIntoUpdate"),
            drain[0] if drain else None,
            drain[-1] if len(drain) > 1 else None,
            h.get("accepted"),
            h.get("back"),
            status.get("RebootedIntoUpdate"),
            max((t for t, s in run_states.get(node, []) if s == "Idle"), default=None),
        ]
        lines.append(f"{node:<10}" + "".join(f"{m:7.2f} " if m is not None else "     - " for m in marks))
        if all(m is not None for m in marks):
            rows.append([m for m in marks if m is not None])
    if rows:

        def mean(i: int, j: int) -> float:
            return statistics.fmean(r[j] - r[i] for r in rows)

        parts = {
            "staging (the host's prepare and activate, and the agent's polling)": (0, 1),
            "controller and agent hand-over": (1, 2),
            "until the drain began": (2, 3),
            "drain": (3, 4),
            "until the host took the reboot": (4, 5),
            "shutdown and reboot": (5, 6),
            "boot seen and reported": (6, 7),
            "monitoring and back to Idle": (7, 8),
        }
        lines.append("mean per node: " + ", ".join(f"{what} {mean(*ij):.2f}s" for what, ij in parts.items()))
    return "\n".join(lines)


def _table(measured: Measurement) -> str:
    by_role: dict[str, list[Sample]] = defaultdict(list)
    for sample in measured.samples:
        by_role[sample.role].append(sample)
    lines = [f"{'at rest, per process':<24}{'n':>3}{'RSS steady MiB':>16}{'peak MiB':>10}{'CPU s/min':>11}"]
    for role in sorted(by_role):
        found = by_role[role]
        rss = statistics.median(s.rss for s in found)
        peak = max(s.peak for s in found)
        cpu = statistics.median(s.cpu_per_minute for s in found)
        spread = (
            f"  (CPU {min(s.cpu_per_minute for s in found):.3f}-{max(s.cpu_per_minute for s in found):.3f}, "
            f"RSS {min(s.rss for s in found):.1f}-{max(s.rss for s in found):.1f})"
            if len(found) > 1
            else ""
        )
        lines.append(f"{role:<24}{len(found):>3}{rss:>16.1f}{peak:>10.1f}{cpu:>11.3f}{spread}")
    return "\n".join(lines)


def _requests(log: Path, measured: Measurement, nodes: int) -> str:
    lines = []
    if measured.rollout is not None:
        found = audit.requests(log, since=measured.rollout[0], until=measured.rollout[1])
        counts = audit.by_program(found)
        lines.append(
            "Kubernetes API requests per node update (rollout, counted at the kube-apiserver): "
            + ", ".join(f"{p} {counts[p] / nodes:.1f}" for p in ("controller", "apiserver", "agent"))
            + f"; all {counts.total() / nodes:.1f}"
        )
        for program in ("controller", "apiserver", "agent"):
            top = audit.by_call(found, program).most_common(8)
            lines.append(f"  {program}: " + ", ".join(f"{n} {call}" for call, n in top))
    if measured.idle is not None:
        since, until = measured.idle
        found = audit.requests(log, since=since, until=until)
        minutes = (until - since).total_seconds() / 60
        counts = audit.by_program(found)
        lines.append(
            "Kubernetes API requests per minute at rest: "
            + ", ".join(f"{p} {counts[p] / minutes:.1f}" for p in ("controller", "apiserver", "agent"))
        )
        for program in ("controller", "apiserver", "agent"):
            top = audit.by_call(found, program).most_common(6)
            if top:
                lines.append(f"  {program}: " + ", ".join(f"{n} {call}" for call, n in top))
    return "\n".join(lines)


async def _run(state: ClusterState, log: Path, options: Options, minutes: float) -> str:
    measured = Measurement(minutes=minutes)
    scenario = Scenario(
        "every node updates, then the fleet rests", chaos=measured.observe, after_rollout=True
    )
    async with admin(state) as kube:
        await clean(kube)
        report = await run_scenario(state, kube, Path(state.directory), options, scenario)
    return "\n".join(
        [
            f"{options.nodes} nodes, {options.concurrency} at a time, time scale {options.time_scale:g}",
            f"makespan {report.total:.1f}s; ideal {report.ideal:.1f}s (the hosts' own time): "
            f"{report.total / report.ideal:.2f}x; {measured.load_rollout}",
            _cycles(measured),
            _requests(log, measured, options.nodes),
            f"at rest for {minutes:g} min ({measured.load_idle}):",
            _table(measured),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--time-scale", type=float, default=0.1, help="host seconds x this = real seconds")
    parser.add_argument("--idle-minutes", type=float, default=5.0, help="the window at rest (default 5)")
    args = parser.parse_args()
    python = harness_python()
    if Path(sys.prefix) != Path(python).parent.parent:  # not yet under the runtime-only interpreter
        os.execv(python, [python, "-m", "benchmarks.fleet", *sys.argv[1:]])
    state = LocalCluster(bins=build()).up()
    try:
        log = audit.enable(state)
        with (Path(state.directory) / "brupop.log").open("w") as out:
            configure({"LOGGING_FORMATTER": "json"}, stream=out)
            options = Options(
                nodes=args.nodes,
                concurrency=args.concurrency,
                time_scale=args.time_scale,
                timings=Timings(refresh=1, prepare=20, activate=1, reboot=30),
                within=600.0,
            )
            print(asyncio.run(_run(state, log, options, args.idle_minutes)))
    finally:
        down()


if __name__ == "__main__":
    main()
