"""What an end-to-end run watches while it runs, from what the cluster and the hosts really do rather than
from what brupop says about itself:

- disruption: nodes made unschedulable (`spec.unschedulable`, what the scheduler obeys; a cordon the
  scenario made as the administrator does not count) or whose host is rebooting (from the reboot it
  accepted until it is back), never more than
  MAX_CONCURRENT_UPDATE at once; no pod evicted from a schedulable node and no host rebooted while its node
  is schedulable (a drain or reboot without a cordon);
- every PodDisruptionBudget at or above its `desiredHealthy`;
- leadership: from the fault proxy's log of what each controller replica sent, no spec written by a
  replica while another held the Lease, after it released it, or after its own lease ran out;
- at the end, no node left unschedulable that the administrator did not cordon, and every administrator's
  cordon still there.

The timeline records every node's states and every event of the run (kills, faults, restarts, exits), so a
failed run can be read and replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import defaultdict
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from brupop.kube.client import NODES, PDBS, PODS, SHADOWS, ApiError, KubeClient
from brupop.models.constants import NAMESPACE
from brupop.models.shadow import BottlerocketShadow
from integ.audit import deletions
from integ.faultproxy import Exchange
from integ.hostsim.host import SimulatedHost
from integ.kubetools import pod_ready, transient, watch_events
from integ.workloads import WORKLOADS

Obj = dict[str, Any]
STATES = ("StagedAndPerformedUpdate", "RebootedIntoUpdate", "MonitoringUpdate")


class InvariantBrokenError(AssertionError):
    """A rule of the run broken; `kind` names the rule (disruption, pdb, leadership, exit, cordon-left,
    cordon-undone, end-state, unplanned-failure, convergence, shutdown, scenario, setup)."""

    def __init__(self, message: str, *, kind: str = "scenario") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Timeline:
    started: float = field(default_factory=time.monotonic)
    states: dict[str, list[tuple[float, str]]] = field(default_factory=lambda: defaultdict(list))
    events: list[tuple[float, str]] = field(default_factory=list)

    def at(self, moment: float | None = None) -> float:
        """Seconds since the run started (of `moment`, a time.monotonic() value, or now)."""
        return (time.monotonic() if moment is None else moment) - self.started

    def record(self, node: str, state: str) -> None:
        history = self.states[node]
        if not history or history[-1][1] != state:
            history.append((self.at(), state))

    def note(self, text: str) -> None:
        self.events.append((self.at(), text))

    def events_report(self) -> str:
        return "\n".join(f"  {t:7.1f}s  {text}" for t, text in self.events)

    def report(self, *, total: float, ideal: float) -> str:
        lines = [f"{'node':<14} " + "  ".join(f"{s:<24}" for s in (*STATES, "Idle (done)"))]
        for node in sorted(self.states):
            at = {state: t for t, state in self.states[node]}
            cells = [f"{at[s]:6.1f}s" if s in at else "-" for s in STATES]
            done = self.states[node][-1][0] if self.states[node][-1][1] == "Idle" else None
            cells.append(f"{done:6.1f}s" if done is not None else "-")
            lines.append(f"{node:<14} " + "  ".join(f"{c:<24}" for c in cells))
        if self.events:
            lines += ["events:", self.events_report()]
        lines.append(
            f"total {total:.1f}s, ideal {ideal:.1f}s for these host timings and concurrency, "
            f"overhead ratio {total / ideal:.2f}"
        )
        return "\n".join(lines)


class Disruption:
    """Counts the nodes brupop has taken out of service, from the Node objects and the hosts themselves,
    and fails on the first one too many (`run` raises)."""

    def __init__(self, kube: KubeClient, *, limit: int, prefix: str, timeline: Timeline) -> None:
        self._kube = kube
        self._limit = limit
        self._prefix = prefix
        self._timeline = timeline
        self.admin_cordoned: set[str] = set()
        """Nodes the scenario cordoned as an administrator: theirs, not brupop's."""
        self.unschedulable: set[str] = set()
        self.hosts_down: set[str] = set()
        self.peak = 0
        self._broken: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._checks: set[asyncio.Task[None]] = set()

    def disrupted(self) -> set[str]:
        return (self.unschedulable - self.admin_cordoned) | self.hosts_down

    def _check(self) -> None:
        now = self.disrupted()
        self.peak = max(self.peak, len(now))
        if len(now) > self._limit:
            self.fail(f"{len(now)} nodes disrupted at once ({self._describe(now)}), limit {self._limit}")

    def _describe(self, nodes: Iterable[str]) -> str:
        return ", ".join(
            f"{n} ({'host rebooting' if n in self.hosts_down else 'unschedulable'})" for n in sorted(nodes)
        )

    def fail(self, message: str) -> None:
        self._timeline.note(f"INVARIANT BROKEN: {message}")
        if not self._broken.done():
            self._broken.set_result(message)

    def follow_host(self, host: SimulatedHost) -> None:
        """Learn when `host` accepts a reboot (from then on it is disrupted: it is on its way down, though
        its API may answer for a while), when it goes down and when it is back (hooks on the simulator)."""
        accept, go_down, come_back = host.on_reboot, host.go_down, host.come_back

        def rebooting() -> None:
            accept()
            self.hosts_down.add(host.name)
            self._timeline.note(f"host {host.name} accepted a reboot")
            self._soon(self._cordoned_before_reboot(host.name))
            self._soon(self._drained_before_reboot(host.name))
            self._check()

        def down() -> None:
            go_down()
            self._timeline.note(f"host {host.name} down for the reboot")

        def back() -> None:
            come_back()
            self.hosts_down.discard(host.name)
            self._timeline.note(f"host {host.name} back (boot {host.boots})")

        host.on_reboot = rebooting
        host.go_down = down  # type: ignore[method-assign]
        host.come_back = back  # type: ignore[method-assign]

    def observe(self, exchange: Exchange) -> None:
        """A fault-proxy observer: an eviction must only ever be asked for on a cordoned node."""
        match = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/eviction", exchange.path)
        if exchange.method == "POST" and match:
            self._soon(self._evicted_from_cordoned(match[1], match[2], exchange.client))

    def _soon(self, check: Coroutine[Any, Any, None]) -> None:
        async def guarded() -> None:
            try:
                await check
            except Exception as err:
                if not transient(err):
                    self.fail(f"a check failed: {err!r}")
                    return
                self._timeline.note(f"a check could not ask the kube-apiserver ({type(err).__name__})")

        task = asyncio.get_running_loop().create_task(guarded())
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _schedulable(self, node: str) -> bool:
        return not (await self._kube.get(NODES, node))["spec"].get("unschedulable")

    async def _cordoned_before_reboot(self, node: str) -> None:
        with contextlib.suppress(ApiError):
            if await self._schedulable(node):
                self.fail(f"the host of {node} accepted a reboot while {node} was schedulable")

    async def _drained_before_reboot(self, node: str) -> None:
        """A reboot kills every pod still on the node: each one not a DaemonSet's (those stay, as a drain
        leaves them) must have been evicted (terminating at least) before its host accepted the reboot."""
        pods, _ = await self._kube.list(PODS, field_selector=f"spec.nodeName={node}")
        left = [
            f"{p['metadata']['namespace']}/{p['metadata']['name']}"
            for p in pods
            if not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            and not any(o.get("kind") == "DaemonSet" for o in p["metadata"].get("ownerReferences") or ())
        ]
        if left:
            self.fail(f"the host of {node} accepted a reboot with pods never evicted: {', '.join(left)}")

    async def _evicted_from_cordoned(self, namespace: str, pod: str, client: str) -> None:
        with contextlib.suppress(ApiError):  # a pod already gone was on a node brupop had cordoned
            node = (await self._kube.get(PODS, pod, namespace=namespace))["spec"].get("nodeName")
            if node and await self._schedulable(node):
                self.fail(
                    f"{client} asked to evict {namespace}/{pod} from {node} while {node} was schedulable"
                )

    async def run(self) -> None:
        watching = asyncio.create_task(self._watch_nodes())
        try:
            waits: list[asyncio.Future[Any]] = [watching, self._broken]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if self._broken.done():
                raise InvariantBrokenError(self._broken.result(), kind="disruption")
            watching.result()
        finally:
            watching.cancel()
            for task in list(self._checks):
                task.cancel()
            await asyncio.gather(watching, *self._checks, return_exceptions=True)

    async def _watch_nodes(self) -> None:
        async for kind, node in watch_events(self._kube, NODES):
            name = node["metadata"]["name"]
            if not name.startswith(self._prefix):
                continue
            if kind != "DELETED" and node["spec"].get("unschedulable"):
                if name not in self.unschedulable:
                    self._timeline.note(f"node {name} unschedulable")
                self.unschedulable.add(name)
            elif name in self.unschedulable:
                self.unschedulable.discard(name)
                self._timeline.note(f"node {name} schedulable")
            self._check()


async def monitor_pdbs(
    kube: KubeClient, timeline: Timeline, log: Iterable[Exchange] = (), *, audit: Path | None = None
) -> None:
    """No budget below its desiredHealthy: brupop's evictions may take it down to the minimum, never below.
    A breach is told with what explains it: the budget's pods (node, ready, terminating), its status, the
    latest evictions through the fault proxy (`log`) with their answers, and, when the kube-apiserver keeps
    an audit log (`audit`, `integ/audit.py`), every deletion and eviction of the namespace's pods in the last
    minute with who asked (chaos seed 525: a pod of the budget went that brupop never evicted)."""
    async for _, pdb in watch_events(kube, PDBS, WORKLOADS):
        status = pdb.get("status") or {}
        if (
            "currentHealthy" in status
            and "desiredHealthy" in status
            and status["currentHealthy"] < status["desiredHealthy"]
            and status.get("observedGeneration") == pdb["metadata"].get("generation")
        ):
            name = pdb["metadata"]["name"]
            raise InvariantBrokenError(
                f"PDB {name}: {status['currentHealthy']} healthy, desiredHealthy {status['desiredHealthy']}"
                f"\n{await _explain_budget(kube, pdb, timeline, log)}"
                + _deletions(audit, pdb["metadata"]["namespace"]),
                kind="pdb",
            )


def _deletions(audit: Path | None, namespace: str) -> str:
    if audit is None or not audit.exists():
        return ""
    since = datetime.now(UTC) - timedelta(minutes=1)
    found = deletions(audit, namespace=namespace, since=since)
    return "\n  pods of the namespace deleted or evicted in the last minute (the audit log):\n" + "\n".join(
        f"    {line}" for line in found or ["none"]
    )


async def _node_ready(kube: KubeClient, name: str) -> str:
    """The node's Ready condition (status and reason), as the node lifecycle controller set it."""
    try:
        node = await kube.get(NODES, name)
    except Exception as err:
        return f"unknown ({err})"
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return f"{condition.get('status')} ({condition.get('reason')})"
    return "no condition"


async def _explain_budget(kube: KubeClient, pdb: Obj, timeline: Timeline, log: Iterable[Exchange]) -> str:
    status = pdb.get("status") or {}
    lines = [
        f"  status: disruptionsAllowed {status.get('disruptionsAllowed')}, expectedPods "
        f"{status.get('expectedPods')}, disruptedPods {status.get('disruptedPods') or {}}"
    ]
    selector = ",".join(f"{k}={v}" for k, v in pdb["spec"]["selector"].get("matchLabels", {}).items())
    try:
        pods, _ = await kube.list(PODS, namespace=pdb["metadata"]["namespace"], label_selector=selector)
    except Exception as err:
        if not transient(err):
            raise
        pods = []
        lines.append(f"  its pods could not be listed ({err})")
    nodes: dict[str, str] = {}
    for pod in pods:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        node = str(spec.get("nodeName"))
        if node not in nodes:
            nodes[node] = await _node_ready(kube, node)
        lines.append(
            f"  pod {meta['name']} on {node} (node Ready: {nodes[node]}): "
            + ("ready" if pod_ready(pod) else "not ready")
            + (f", terminating since {meta['deletionTimestamp']}" if meta.get("deletionTimestamp") else "")
            + f", created {meta.get('creationTimestamp')}"
        )
    evictions = [e for e in log if e.method == "POST" and e.path.endswith("/eviction")][-8:]
    for e in evictions:
        lines.append(
            f"  eviction of {e.path.split('/')[-2]} by {e.client} at {timeline.at(e.arrived):.2f}s: "
            f"answered {e.status}"
        )
    return "\n".join(lines)


LEASE_PATH = re.compile(r"/apis/coordination\.k8s\.io/v1/namespaces/[^/]+/leases(?:/([^/]+))?")
SPEC_PATH = re.compile(r"/apis/brupop\.bottlerocket\.aws/v\d+/namespaces/[^/]+/bottlerocketshadows/([^/]+)")
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class _Term:
    holder: str | None
    """None: released."""
    client: str
    arrived: float
    answered: float
    duration: float


def _lease_writes(log: Iterable[Exchange], lease: str) -> list[_Term]:
    terms = []
    for exchange in log:
        match = LEASE_PATH.fullmatch(exchange.path)
        body = exchange.json()
        if not (match and exchange.method in ("POST", "PUT") and exchange.ok and isinstance(body, dict)):
            continue
        if (match[1] or (body.get("metadata") or {}).get("name")) != lease:
            continue
        spec = body.get("spec") or {}
        assert exchange.answered is not None
        terms.append(
            _Term(
                holder=spec.get("holderIdentity") or None,
                client=exchange.client,
                arrived=exchange.arrived,
                answered=exchange.answered,
                duration=float(spec.get("leaseDurationSeconds") or 0),
            )
        )
    return sorted(terms, key=lambda t: t.answered)


def leadership_violations(log: Iterable[Exchange], *, lease: str, timeline: Timeline) -> list[str]:
    """Spec writes (applied: 2xx) by a controller replica that may not have held the Lease when the write
    took effect, which is some moment between its arrival and its answer: another replica's acquisition,
    or its own release, had been answered before it arrived, or was in flight while it was (either may
    have taken effect first); or it was answered more than a lease duration after its writer's last
    successful renewal arrived (others may take over by then)."""
    exchanges = list(log)
    terms = _lease_writes(exchanges, lease)
    found = []
    for write in exchanges:
        shadow = SPEC_PATH.fullmatch(write.path)
        if not (
            shadow and write.method in WRITES and write.ok and write.client.startswith("brupop-controller")
        ):
            continue
        answered = write.answered
        assert answered is not None  # a 2xx
        before = [t for t in terms if t.answered < write.arrived]
        what = f"{write.client} {write.method} {shadow[1]} at {timeline.at(write.arrived):.2f}s"
        if not before:
            found.append(f"{what} before any replica held the Lease")
            continue
        last = before[-1]
        if last.holder != write.client:
            held = f"held by {last.holder}" if last.holder else f"released by {last.client}"
            found.append(f"{what} while the Lease was {held} (since {timeline.at(last.answered):.2f}s)")
            continue
        overlapping = [
            t
            for t in terms
            if t.holder != write.client and t.answered >= write.arrived and t.arrived < answered
        ]
        if overlapping:
            t = overlapping[0]
            taken = f"taken by {t.holder}" if t.holder else f"released by {t.client}"
            found.append(
                f"{what}, answered at {timeline.at(answered):.2f}s, while the Lease was being {taken} "
                f"(sent at {timeline.at(t.arrived):.2f}s, answered at {timeline.at(t.answered):.2f}s)"
            )
            continue
        own = [t for t in terms if t.holder == write.client and t.arrived < write.arrived]
        expiry = own[-1].arrived + own[-1].duration
        if answered > expiry:
            found.append(
                f"{what}, answered {answered - expiry:.2f}s after its lease ran out "
                f"(last renewal sent at {timeline.at(own[-1].arrived):.2f}s)"
            )
    return found


async def follow_shadows(kube: KubeClient, timeline: Timeline) -> None:
    """Record every state change on the timeline."""
    async for kind, obj in watch_events(kube, SHADOWS, NAMESPACE):
        shadow = BottlerocketShadow.from_wire(obj)
        if kind != "DELETED" and shadow.status is not None:
            timeline.record(shadow.name.removeprefix("brs-"), shadow.status.current_state.value)
