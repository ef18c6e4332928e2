"""Benchmark: one reconcile pass in process, no cluster (issue 20: where a pass over 15,000 nodes goes).

The real reconciler, with the real health parts (no pool sets gates or verification, so they list and ask
nothing), the real notices and fleet metrics, over N nodes and shadows parsed as the controller's caches
parse them (`brupop.controller.cluster.trim_node`, `trim_shadow`), all Idle and opted in; the view and the
writer are dicts here. Prints the best of R settled passes, a pass that starts a node whose agent just
reported an update on offer, and the pass after it, each with the time of its parts (the pass's own
functions, timed around their calls), and the machine's load:

    python -m benchmarks.controller_pass [--nodes 15000] [--repeat 5]

A pass on the cluster (`python -m benchmarks.controller`) takes longer: the same process also parses
every watch event (kwok's heartbeats of 15,000 Nodes among them) and shares the machine with the
kube-apiserver.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry

from benchmarks.measure import load
from brupop.controller import announcer, health, metrics, policies, reconciler
from brupop.controller.cluster import PARSED, trim_node, trim_shadow
from brupop.controller.health_metrics import HealthMetrics
from brupop.controller.queries import PrometheusQueries
from brupop.controller.reconciler import Reconciler, UnreadableShadow
from brupop.controller.settings import ControllerSettings
from brupop.controller.workloads import ClusterWorkloads
from brupop.kube.client import Resource
from brupop.kube.informer import ListWatch
from brupop.models.constants import (
    IN_CYCLE_LABEL,
    NAMESPACE,
    UPDATER_INTERFACE_LABEL,
    UPDATER_INTERFACE_VERSION,
)
from brupop.models.policy import UpdatePolicyStatus
from brupop.models.shadow import BottlerocketShadow, ShadowSpec
from brupop.notify.events import Notice
from brupop.policy.marks import MarksChange

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
IDLE = {"current_version": "1.0.0", "target_version": "1.0.0", "current_state": "Idle", "crash_count": 0}
PARTS: list[tuple[object, str, str]] = [
    (reconciler, "tracked", "tracked"),
    (reconciler, "wanting", "wanting"),
    (policies.PolicyBook, "assign", "pools"),
    (health.Health, "assess", "health"),
    (reconciler, "plan", "plan"),
    (reconciler.Reconciler, "_apply", "writes"),
    (policies.PolicyBook, "reports", "policy reports"),
    (announcer.Announcer, "passed", "notices"),
    (reconciler.Reconciler, "_report_held", "held report"),
    (metrics.FleetMetrics, "observe", "fleet metrics"),
]
"""What a pass's time is shared out to: (where, function, label)."""


class Memory:
    """The reconciler's view and writer over dicts (a write lands at once, as the caches' `assume`)."""

    def __init__(self, count: int) -> None:
        self.by_name: dict[str, BottlerocketShadow] = {}
        self.node_info = {}
        for i in range(count):
            node = trim_node(_node(f"n{i:05d}"))[PARSED]
            self.node_info[node.name] = node
            shadow = trim_shadow(_shadow(node.name, node.uid))[PARSED]
            assert isinstance(shadow, BottlerocketShadow)
            self.by_name[shadow.name] = shadow

    def shadows(self) -> list[BottlerocketShadow]:
        return list(self.by_name.values())

    def unreadable(self) -> list[UnreadableShadow]:
        return []

    def nodes(self) -> Mapping[str, Any]:
        return dict(self.node_info)

    def policies(self) -> list[dict[str, Any]]:
        return []

    async def write_shadow(
        self, shadow: BottlerocketShadow, *, spec: ShadowSpec | None, annotations: Mapping[str, str | None]
    ) -> bool:
        merged = {**shadow.annotations, **annotations}
        metadata = {**shadow.metadata, "annotations": {k: v for k, v in merged.items() if v is not None}}
        self.by_name[shadow.name] = replace(shadow, spec=spec or shadow.spec, metadata=metadata)
        return True

    async def delete_shadow(self, shadow: BottlerocketShadow) -> bool:
        del self.by_name[shadow.name]
        return True

    async def write_node(self, node: str, *, in_cycle: bool | None, marks: MarksChange) -> bool:
        info = self.node_info[node]
        labels = {k: v for k, v in info.labels.items() if k != IN_CYCLE_LABEL}
        if in_cycle or (in_cycle is None and info.in_cycle):
            labels[IN_CYCLE_LABEL] = "true"
        self.node_info[node] = replace(info, labels=labels)
        return True

    async def write_policy_status(self, policy: Mapping[str, Any], status: UpdatePolicyStatus) -> bool:
        return True

    def record_event(self, name: str, *, reason: str, message: str, warning: bool = False) -> None:
        return None

    def record_node_event(self, node: str, *, reason: str, message: str, warning: bool = True) -> None:
        return None

    def record_policy_event(self, name: str, *, reason: str, message: str, warning: bool = False) -> None:
        return None


class Steady:
    """Leadership that always may write and records nothing."""

    def steady(self) -> bool:
        return True

    def drained_at(self) -> Mapping[str, datetime]:
        return {}

    async def record_drained(self, pool: str, at: datetime, *, live: Collection[str]) -> bool:
        return True


class NoLister:
    """No pool needs the cluster's Pods or workloads here, so nothing is ever listed."""

    def list_watch(self, resource: Resource, *, transform: Callable[[Any], Any]) -> ListWatch:
        raise AssertionError(f"{resource.plural} listed: no pool in this benchmark needs them")


def _node(name: str) -> dict[str, Any]:
    labels = {
        UPDATER_INTERFACE_LABEL: UPDATER_INTERFACE_VERSION,
        "kubernetes.io/hostname": name,
        "type": "kwok",
    }
    return {
        "metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": "1", "labels": labels},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


def _shadow(node: str, uid: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"brs-{node}",
            "namespace": NAMESPACE,
            "uid": f"uid-brs-{node}",
            "resourceVersion": "1",
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": uid}],
        },
        "spec": {"state": "Idle"},
        "status": IDLE,
    }


def timed(spent: dict[str, float]) -> None:
    """Time each of `PARTS` into `spent` (seconds by label) around its calls."""
    for owner, name, label in PARTS:
        original = getattr(owner, name)

        def wrapper(original: Callable[..., Any], label: str) -> Callable[..., Any]:
            if asyncio.iscoroutinefunction(original):

                @functools.wraps(original)
                async def waited(*args: Any, **kwargs: Any) -> Any:
                    began = time.perf_counter()
                    try:
                        return await original(*args, **kwargs)
                    finally:
                        spent[label] += time.perf_counter() - began

                return waited

            @functools.wraps(original)
            def called(*args: Any, **kwargs: Any) -> Any:
                began = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    spent[label] += time.perf_counter() - began

            return called

        setattr(owner, name, wrapper(original, label))


async def one(
    run: Callable[[], Awaitable[object]], spent: dict[str, float]
) -> tuple[float, dict[str, float]]:
    spent.clear()
    began = time.perf_counter()
    await run()
    return time.perf_counter() - began, dict(spent)


def show(what: str, result: tuple[float, dict[str, float]]) -> None:
    total, parts = result
    shares = ", ".join(f"{label} {parts.get(label, 0.0) * 1000:.1f}" for _, _, label in PARTS)
    print(f"{what}: {total * 1000:.1f} ms ({shares})")


async def main(count: int, repeat: int) -> None:
    fleet = Memory(count)
    parts = health.Health(
        queries=PrometheusQueries(interval=timedelta(seconds=10), on_change=lambda: None, clock=lambda: NOW),
        workloads=ClusterWorkloads(NoLister(), on_change=lambda: None),
        metrics=HealthMetrics(CollectorRegistry()),
    )
    heard: list[Notice] = []
    spent: dict[str, float] = defaultdict(float)
    timed(spent)
    r = Reconciler(
        view=fleet,
        writer=fleet,
        leadership=Steady(),
        settings=ControllerSettings.from_env({"MAX_CONCURRENT_UPDATE": "unlimited"}, now=NOW),
        metrics=metrics.FleetMetrics(CollectorRegistry()),
        clock=lambda: NOW,
        health=parts,
        notices=announcer.Announcer(heard.append).passed,
    )
    try:
        print(f"{count} settled nodes and shadows in process ({load()})")
        show("the term's first pass", await one(r.reconcile_once, spent))
        settled = [await one(r.reconcile_once, spent) for _ in range(repeat)]
        show(f"a settled pass, best of {repeat}", min(settled, key=lambda result: result[0]))
        offered = fleet.by_name["brs-n00001"]
        assert offered.status is not None
        fleet.by_name[offered.name] = replace(offered, status=replace(offered.status, target_version="1.1.0"))
        show("a pass that starts a node", await one(r.reconcile_once, spent))
        show("the pass after it", await one(r.reconcile_once, spent))
    finally:
        await parts.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=15000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.nodes, args.repeat))
