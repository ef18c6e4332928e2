"""What an end-to-end run watches while it runs: the invariants, checked on every watch event (never more
nodes cordoned by brupop than allowed, no PDB below its minimum), and the timeline of every node's states,
optionally drawn live as a table."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, TextIO

from brupop.kube.client import NODES, PDBS, SHADOWS, KubeClient
from brupop.models.constants import NAMESPACE
from brupop.models.shadow import BottlerocketShadow
from brupop.policy.drain import CORDON_ANNOTATION, CORDONED_BY_BRUPOP
from integ.kubetools import watch_events
from integ.workloads import WORKLOADS

Obj = dict[str, Any]


class InvariantBrokenError(AssertionError):
    pass


@dataclass
class Timeline:
    started: float = field(default_factory=time.monotonic)
    states: dict[str, list[tuple[float, str]]] = field(default_factory=lambda: defaultdict(list))

    def record(self, node: str, state: str) -> None:
        history = self.states[node]
        if not history or history[-1][1] != state:
            history.append((time.monotonic() - self.started, state))

    def report(self, *, total: float, ideal: float) -> str:
        lines = [
            f"{'node':<14} "
            + "  ".join(
                f"{s:<24}"
                for s in ("StagedAndPerformedUpdate", "RebootedIntoUpdate", "MonitoringUpdate", "Idle (done)")
            )
        ]
        for node in sorted(self.states):
            at = {state: t for t, state in self.states[node]}
            cells = [
                f"{at[s]:6.1f}s" if s in at else "-"
                for s in ("StagedAndPerformedUpdate", "RebootedIntoUpdate", "MonitoringUpdate")
            ]
            done = self.states[node][-1][0] if self.states[node][-1][1] == "Idle" else None
            cells.append(f"{done:6.1f}s" if done is not None else "-")
            lines.append(f"{node:<14} " + "  ".join(f"{c:<24}" for c in cells))
        lines.append(
            f"total {total:.1f}s, ideal {ideal:.1f}s for these host timings and concurrency, "
            f"overhead ratio {total / ideal:.2f}"
        )
        return "\n".join(lines)


async def monitor_nodes(kube: KubeClient, limit: int, prefix: str) -> None:
    cordoned: set[str] = set()
    async for kind, node in watch_events(kube, NODES):
        name = node["metadata"]["name"]
        if not name.startswith(prefix):
            continue
        mine = (node["metadata"].get("annotations") or {}).get(CORDON_ANNOTATION) == CORDONED_BY_BRUPOP
        (cordoned.add if mine and kind != "DELETED" else cordoned.discard)(name)
        if len(cordoned) > limit:
            raise InvariantBrokenError(
                f"{len(cordoned)} nodes cordoned by brupop at once ({sorted(cordoned)}), limit {limit}"
            )


async def monitor_pdbs(kube: KubeClient) -> None:
    async for _, pdb in watch_events(kube, PDBS, WORKLOADS):
        status = pdb.get("status") or {}
        if (
            "currentHealthy" in status
            and status["currentHealthy"] < pdb["spec"]["minAvailable"]
            and status.get("observedGeneration")
        ):
            # A budget can dip only when a pod dies on its own; brupop's evictions never take it below.
            raise InvariantBrokenError(
                f"PDB {pdb['metadata']['name']}: {status['currentHealthy']} healthy, "
                f"minAvailable {pdb['spec']['minAvailable']}"
            )


async def follow_shadows(kube: KubeClient, timeline: Timeline, live: TextIO | None) -> None:
    """Record every state change on the timeline; with `live`, redraw the table at most twice a second and
    once more when the run ends (this task is cancelled then)."""
    latest: dict[str, BottlerocketShadow] = {}
    last_draw = 0.0
    try:
        async for kind, obj in watch_events(kube, SHADOWS, NAMESPACE):
            shadow = BottlerocketShadow.from_wire(obj)
            node = shadow.name.removeprefix("brs-")
            if kind == "DELETED":
                latest.pop(node, None)
                continue
            latest[node] = shadow
            if shadow.status is not None:
                timeline.record(node, shadow.status.current_state.value)
            if live is not None and time.monotonic() - last_draw > 0.5:
                last_draw = time.monotonic()
                draw(latest, live, elapsed=time.monotonic() - timeline.started)
    finally:
        if live is not None:
            draw(latest, live, elapsed=time.monotonic() - timeline.started)


def draw(shadows: dict[str, BottlerocketShadow], out: TextIO, *, elapsed: float) -> None:
    rows = [f"{'NAME':<16}{'STATE':<26}{'VERSION':<10}{'TARGET STATE':<26}{'TARGET VERSION':<16}CRASH COUNT"]
    for node in sorted(shadows):
        s = shadows[node]
        st = s.status
        rows.append(
            f"{'brs-' + node:<16}{st.current_state.value if st else '':<26}"
            f"{st.current_version if st else '':<10}"
            f"{s.spec.state.value:<26}{s.spec.version or '':<16}{st.crash_count if st else ''}"
        )
    clear = "\x1b[H\x1b[2J" if out.isatty() else ""
    out.write(f"{clear}t={elapsed:5.1f}s\n" + "\n".join(rows) + "\n\n")
    out.flush()
