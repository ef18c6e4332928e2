import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from brupop.kube.drain import DrainTimeoutError, EvictionBlockedError, PodGoneError, blocking_pdbs, drain
from brupop.kube.informer import Backoff

Obj = dict[str, Any]
FAST = Backoff(base=0.001, cap=0.005)
PDB_MESSAGE = (
    "Cannot evict pod as it would violate the pod's disruption budget. "
    "The disruption budget web needs 8 healthy pods and has 8 currently"
)


def pod(
    name: str, *, uid: str | None = None, owner: str | None = "ReplicaSet", phase: str = "Running"
) -> Obj:
    meta: Obj = {"name": name, "namespace": "default", "uid": uid or f"uid-{name}", "resourceVersion": "1"}
    if owner:
        meta["ownerReferences"] = [{"kind": owner, "name": "o", "controller": True}]
    return {"metadata": meta, "status": {"phase": phase}}


class Pods:
    """Pods on one node; an allowed eviction deletes the pod and emits a DELETED watch event."""

    def __init__(self, pods: list[Obj], *, blocked: dict[str, int] | None = None) -> None:
        self.pods = {p["metadata"]["name"]: p for p in pods}
        self.blocked = dict(blocked or {})  # pod -> refusals before it may go (-1: forever)
        self.events: asyncio.Queue[tuple[str, Obj] | None] = asyncio.Queue()
        self.evictions: list[str] = []
        self.lists = 0
        self.watch_breaks = 0

    async def list_pods(self, node: str) -> tuple[list[Obj], str]:
        self.lists += 1
        return list(self.pods.values()), "100"

    async def watch_pods(self, node: str, resource_version: str) -> AsyncIterator[tuple[str, Obj]]:
        while True:
            event = await self.events.get()
            if event is None:
                return
            yield event

    async def evict(self, namespace: str, name: str, uid: str) -> None:
        self.evictions.append(name)
        if name not in self.pods:
            raise PodGoneError(name)
        left = self.blocked.get(name, 0)
        if left != 0:
            self.blocked[name] = left - 1
            raise EvictionBlockedError(PDB_MESSAGE)
        gone = self.pods.pop(name)
        self.events.put_nowait(("DELETED", gone))


async def test_evicts_what_must_go_and_leaves_daemonset_and_mirror_pods() -> None:
    daemon = pod("ds", owner="DaemonSet")
    mirror = pod("static", owner=None)
    mirror["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "x"}
    api = Pods([pod("a"), pod("b"), daemon, mirror, pod("done-ds", owner="DaemonSet", phase="Succeeded")])
    assert await drain(api, "n", time_limit=5, backoff=FAST) == 3
    assert sorted(api.evictions) == ["a", "b", "done-ds"]
    assert sorted(api.pods) == ["ds", "static"]


async def test_pdb_refusals_are_retried_until_allowed() -> None:
    api = Pods([pod("a"), pod("b")], blocked={"a": 3})
    assert await drain(api, "n", time_limit=5, backoff=FAST) == 2
    assert api.evictions.count("a") == 4


async def test_a_pdb_that_never_allows_fails_after_the_limit_naming_pods_and_pdbs() -> None:
    api = Pods([pod("a"), pod("b"), pod("c")], blocked={"a": -1, "c": -1})
    with pytest.raises(DrainTimeoutError) as info:
        await drain(api, "node-1", time_limit=0.2, backoff=FAST)
    assert info.value.remaining == ["default/a", "default/c"]
    assert info.value.pdbs == ["web"]
    assert "drain of node node-1 timed out after 0.2s with 2 pod(s) left: default/a, default/c" in str(
        info.value
    )
    assert "blocked by PodDisruptionBudget(s) web" in str(info.value)
    assert "b" not in api.pods


async def test_a_replaced_statefulset_pod_counts_as_gone() -> None:
    class Recreating(Pods):
        async def evict(self, namespace: str, name: str, uid: str) -> None:
            self.evictions.append(name)
            self.pods.pop(name)  # the replacement comes back under the same name, on another node
            self.events.put_nowait(("ADDED", pod(name, uid="new-uid", owner="StatefulSet")))

    api = Recreating([pod("web-0", owner="StatefulSet")])
    assert await drain(api, "n", time_limit=5, backoff=FAST) == 1


async def test_a_pod_already_gone_needs_no_wait() -> None:
    class Vanished(Pods):
        async def evict(self, namespace: str, name: str, uid: str) -> None:
            self.pods.pop(name, None)
            raise PodGoneError(name)

    assert await drain(Vanished([pod("a")]), "n", time_limit=5, backoff=FAST) == 1


async def test_the_watch_catching_up_after_it_ends() -> None:
    class Quiet(Pods):
        async def evict(self, namespace: str, name: str, uid: str) -> None:
            self.pods.pop(name)  # deleted, but the stream ends before telling us
            self.events.put_nowait(None)

    api = Quiet([pod("a")])
    assert await drain(api, "n", time_limit=5, backoff=FAST) == 1
    assert api.lists == 3  # the first round, the catch-up after the stream ended, the final check


async def test_transient_errors_are_retried() -> None:
    class Flaky(Pods):
        failures = 2

        async def evict(self, namespace: str, name: str, uid: str) -> None:
            if self.failures:
                self.failures -= 1
                raise ConnectionError("reset")
            await super().evict(namespace, name, uid)

    assert await drain(Flaky([pod("a")]), "n", time_limit=5, backoff=FAST) == 1


async def test_pods_bound_after_the_first_listing_are_drained_too() -> None:
    class LateArrival(Pods):
        async def evict(self, namespace: str, name: str, uid: str) -> None:
            await super().evict(namespace, name, uid)
            if name == "a":  # the scheduler had not seen the cordon yet
                self.pods["late"] = pod("late")

    api = LateArrival([pod("a")])
    assert await drain(api, "n", time_limit=5, backoff=FAST) == 2
    assert api.pods == {}


async def test_an_empty_node_drains_at_once() -> None:
    assert await drain(Pods([pod("ds", owner="DaemonSet")]), "n", time_limit=5) == 0


def test_pdb_names_are_read_from_the_refusal() -> None:
    assert blocking_pdbs(PDB_MESSAGE) == {"web"}
    assert blocking_pdbs("something else") == set()
