import asyncio
import itertools
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from brupop.kube.drain import (
    DrainResult,
    DrainTimeoutError,
    EvictionRefusedError,
    Notice,
    Pace,
    drain,
)
from brupop.kube.retry import Backoff
from brupop.policy.drain import Eviction, read_eviction

Obj = dict[str, Any]
FAST = Backoff(base=0.001, cap=0.005)
TOLERATE_ALL = [{"operator": "Exists"}]
PACE = Pace(rate=10_000.0, min_retry=0.001, report_after=0.05, report_every=60.0, stale_after=1.0, quiet=0.05)
PDB_REFUSAL = {
    "kind": "Status",
    "status": "Failure",
    "message": "Cannot evict pod as it would violate the pod's disruption budget.",
    "reason": "TooManyRequests",
    "details": {
        "causes": [
            {
                "reason": "DisruptionBudget",
                "message": "The disruption budget web needs 8 healthy pods and has 8 currently",
            }
        ]
    },
    "code": 429,
}
EVICTED = read_eviction(201, {"kind": "Status", "status": "Success"})
BLOCKED = read_eviction(429, PDB_REFUSAL)


def pod(
    name: str,
    *,
    uid: str | None = None,
    owner: str | None = "ReplicaSet",
    owner_uid: str = "rs-1",
    phase: str = "Running",
    tolerations: list[Obj] | None = None,
) -> Obj:
    meta: Obj = {"name": name, "namespace": "default", "uid": uid or f"uid-{name}", "resourceVersion": "1"}
    if owner:
        meta["ownerReferences"] = [{"kind": owner, "name": "o", "controller": True, "uid": owner_uid}]
    spec: Obj = {"nodeName": "n"}
    if tolerations is not None:
        spec["tolerations"] = tolerations
    return {"metadata": meta, "spec": spec, "status": {"phase": phase}}


class Pods:
    """Pods on one node: an eviction answers as `answers` says (default: allowed, which deletes the pod and
    emits a DELETED watch event). `answers[name]` is a list consumed one per call; its last item repeats."""

    def __init__(self, pods: list[Obj], *, answers: Mapping[str, list[Eviction]] | None = None) -> None:
        self.pods = {p["metadata"]["name"]: p for p in pods}
        self.answers = {name: list(seq) for name, seq in (answers or {}).items()}
        self.events: asyncio.Queue[tuple[str, Obj] | None] = asyncio.Queue()
        self.evictions: list[str] = []
        self.eviction_times: list[float] = []
        self.lists = 0
        self.disrupted: dict[str, dict[str, str]] = {}
        self.elsewhere: dict[str, Obj] = {}
        """Pods bound to other nodes (only `get_pod` sees them)."""
        self.gets = 0

    async def list_pods(self, node: str) -> tuple[list[Obj], str]:
        self.lists += 1
        return list(self.pods.values()), "100"

    async def watch_pods(self, node: str, resource_version: str) -> AsyncIterator[tuple[str, Obj]]:
        while True:
            event = await self.events.get()
            if event is None:
                return
            yield event

    async def evict(self, namespace: str, name: str, uid: str) -> Eviction:
        self.evictions.append(name)
        self.eviction_times.append(asyncio.get_running_loop().time())
        if name not in self.pods:
            return read_eviction(404, {"reason": "NotFound"})
        queued = self.answers.get(name)
        if queued:
            answer = queued.pop(0) if len(queued) > 1 else queued[0]
            if answer.name != "Evicted":
                return answer
        self.delete(name)
        return EVICTED

    async def disrupted_pods(self, namespace: str, pdb: str) -> Mapping[str, str]:
        return self.disrupted.get(pdb, {})

    async def get_pod(self, namespace: str, name: str) -> Obj | None:
        self.gets += 1
        return self.pods.get(name) or self.elsewhere.get(name)

    def delete(self, name: str) -> Obj:
        gone = self.pods.pop(name)
        self.events.put_nowait(("DELETED", gone))
        self.replaced(gone)
        return gone

    def replaced(self, gone: Obj) -> None:
        """What a controller does when one of its pods goes: here nothing."""

    def bind(self, new: Obj) -> None:
        self.pods[new["metadata"]["name"]] = new
        self.events.put_nowait(("ADDED", new))

    def bind_elsewhere(self, new: Obj) -> None:
        self.elsewhere[new["metadata"]["name"]] = new | {"spec": {**new["spec"], "nodeName": "other"}}


async def run(api: Pods, *, time_limit: float = 5, notices: list[Notice] | None = None) -> DrainResult:
    heard = notices if notices is not None else []
    return await drain(api, "n", time_limit=time_limit, pace=PACE, backoff=FAST, notify=heard.append)


async def test_evicts_what_must_go_and_leaves_daemonset_and_mirror_pods() -> None:
    daemon = pod("ds", owner="DaemonSet")
    mirror = pod("static", owner=None)
    mirror["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "x"}
    api = Pods([pod("a"), pod("b"), daemon, mirror, pod("done-ds", owner="DaemonSet", phase="Succeeded")])
    result = await run(api)
    assert (result.evicted, result.left_running) == (3, [])
    assert sorted(api.evictions) == ["a", "b", "done-ds"]
    assert sorted(api.pods) == ["ds", "static"]


async def test_pdb_refusals_are_retried_until_allowed() -> None:
    api = Pods([pod("a"), pod("b")], answers={"a": [BLOCKED] * 3 + [EVICTED]})
    assert (await run(api)).evicted == 2
    assert api.evictions.count("a") == 4


async def test_a_pdb_that_never_allows_fails_after_the_limit_naming_pods_pdbs_and_answers() -> None:
    api = Pods([pod("a"), pod("b"), pod("c")], answers={"a": [BLOCKED], "c": [BLOCKED]})
    with pytest.raises(DrainTimeoutError) as info:
        await run(api, time_limit=0.2)
    assert info.value.remaining == ["default/a", "default/c"]
    assert info.value.pdbs == ["web"]
    assert "drain of node n timed out after 0.2s with 2 pod(s) left: default/a, default/c" in str(info.value)
    assert "blocked by PodDisruptionBudget(s) web" in str(info.value)
    assert "last answers: default/a: DisruptionBudget, default/c: DisruptionBudget" in str(info.value)
    assert "b" not in api.pods


async def test_a_replaced_statefulset_pod_counts_as_gone() -> None:
    class Recreating(Pods):
        def replaced(self, gone: Obj) -> None:  # the replacement comes back under the same name, here
            new = pod(gone["metadata"]["name"], uid="new-uid", owner="StatefulSet", tolerations=TOLERATE_ALL)
            self.pods[new["metadata"]["name"]] = new
            self.events.get_nowait()  # and the watch missed the deletion: only the new pod is seen
            self.events.put_nowait(("MODIFIED", new))

    api = Recreating([pod("web-0", owner="StatefulSet")])
    result = await run(api)
    assert (result.evicted, result.left_running) == (1, ["default/web-0"])
    assert api.evictions == ["web-0"]


async def test_a_pod_already_gone_needs_no_wait() -> None:
    class Vanished(Pods):
        async def evict(self, namespace: str, name: str, uid: str) -> Eviction:
            self.pods.pop(name, None)
            return read_eviction(404, {"reason": "NotFound", "message": f'pods "{name}" not found'})

    assert (await run(Vanished([pod("a")]))).evicted == 1


async def test_the_watch_catching_up_after_it_ends() -> None:
    class Quiet(Pods):
        async def evict(self, namespace: str, name: str, uid: str) -> Eviction:
            self.pods.pop(name)  # deleted, but the stream ends before telling us
            self.events.put_nowait(None)
            return EVICTED

    api = Quiet([pod("a")])
    assert (await run(api)).evicted == 1
    assert api.lists == 3  # the first listing, the catch-up after the stream ended, the last check


async def test_a_watch_that_ends_at_once_is_retried_with_back_off_not_in_a_loop() -> None:
    """A watch that ends as soon as it starts, with no event (a proxy or a server that closes it at once),
    must not become a hot loop of list + watch calls while a PodDisruptionBudget holds the drain: an empty
    stream counts as a failed watch and is retried after the back-off (review hole)."""

    class Hasty(Pods):
        async def list_pods(self, node: str) -> tuple[list[Obj], str]:
            await asyncio.sleep(0)  # a real listing yields to the loop
            return await super().list_pods(node)

        async def watch_pods(self, node: str, resource_version: str) -> AsyncIterator[tuple[str, Obj]]:
            await asyncio.sleep(0)
            return
            yield  # an async generator that ends with no event

    api = Hasty([pod("a")], answers={"a": [BLOCKED] * 40 + [EVICTED]})
    assert (await run(api)).evicted == 1
    assert api.lists < 60, f"{api.lists} listings while one pod waited for its PodDisruptionBudget"


async def test_no_answer_is_retried() -> None:
    class Flaky(Pods):
        failures = 2

        async def evict(self, namespace: str, name: str, uid: str) -> Eviction:
            if self.failures:
                self.failures -= 1
                raise ConnectionError("reset")
            return await super().evict(namespace, name, uid)

    assert (await run(Flaky([pod("a")]))).evicted == 1


async def test_a_pod_bound_late_that_does_not_tolerate_the_cordon_is_evicted_too() -> None:
    class LateArrival(Pods):
        def replaced(self, gone: Obj) -> None:
            if gone["metadata"]["name"] == "a":  # the scheduler had not seen the cordon yet
                self.bind(pod("late"))

    api = LateArrival([pod("a")])
    assert (await run(api)).evicted == 2
    assert api.pods == {}


async def test_a_replacement_that_tolerates_the_cordon_is_left_running_and_reported() -> None:
    """Item 5 of issue 14: the Deployment's replacement tolerates the cordon and lands on the cordoned node
    again; evicting it would bring the next one, forever. It is left running and the drain ends."""

    class TolerantDeployment(Pods):
        made = 0

        def replaced(self, gone: Obj) -> None:
            self.made += 1
            self.bind(pod(f"web-{self.made}", tolerations=TOLERATE_ALL))

    api = TolerantDeployment([pod("web-0", tolerations=TOLERATE_ALL)])
    notices: list[Notice] = []
    result = await run(api, time_limit=2, notices=notices)
    assert api.evictions == ["web-0"]
    assert (result.evicted, result.left_running) == (1, ["default/web-1"])
    assert [(n.reason, n.pod) for n in notices] == [("LeftRunning", "default/web-1")]
    assert "tolerates the cordon" in notices[0].message


async def test_a_scheduler_that_keeps_binding_here_has_every_late_pod_evicted_none_left() -> None:
    """Chaos seed 279 (issue 15): after a kube-apiserver restart the scheduler's stale cache went on binding
    the evicted pods' replacements to the cordoned node. Each one would die in the reboot without its
    eviction (a PDB-protected one among them), so each is evicted, however many come, until they stop."""

    class StaleScheduler(Pods):
        made = 0

        def replaced(self, gone: Obj) -> None:
            if self.made < 6:
                self.made += 1
                self.bind(pod(f"bound-{self.made}", owner_uid="rs-loop"))

    api = StaleScheduler([pod("bound-0", owner_uid="rs-loop")])
    notices: list[Notice] = []
    result = await run(api, notices=notices)
    assert api.evictions == [f"bound-{i}" for i in range(7)]
    assert (result.evicted, result.left_running, api.pods) == (7, [], {})
    assert not [n for n in notices if n.reason == "LeftRunning"]


async def test_a_pod_bound_just_after_the_last_one_went_is_evicted_before_the_drain_ends() -> None:
    """Seed 279 again: the StatefulSet's new web-1 was bound to the cordoned node a moment after the drain's
    last look, and the host rebooted over it. Once pods have been bound to the node during the drain, the
    drain ends only after `Pace.quiet` seconds with none bound."""

    class SlowStatefulSet(Pods):
        def replaced(self, gone: Obj) -> None:
            if gone["metadata"]["name"] == "a":  # the scheduler had not seen the cordon
                self.bind(pod("late", owner_uid="rs-2"))
            elif gone["metadata"]["name"] == "web-1" and gone["metadata"]["uid"] == "uid-web-1":
                asyncio.get_running_loop().call_later(
                    0.05, self.bind, pod("web-1", uid="uid-web-1-new", owner="StatefulSet", owner_uid="ss")
                )

    api = SlowStatefulSet([pod("a"), pod("web-1", owner="StatefulSet", owner_uid="ss")])
    result = await drain(api, "n", time_limit=5, pace=replace(PACE, quiet=0.3), backoff=FAST)
    assert sorted(api.evictions) == ["a", "late", "web-1", "web-1"]
    assert (result.evicted, result.left_running, api.pods) == (4, [], {})


async def test_a_controller_that_never_stops_binding_here_fails_the_drain_paced_and_named() -> None:
    """A controller that sets `spec.nodeName` itself and ignores the cordon: no reboot over its pods. The
    drain keeps evicting them, each owner's later ones after a back-off, and fails at its time limit saying
    why, so the node is uncordoned and tried again later."""

    class NodeNameController(Pods):
        made = 0

        def replaced(self, gone: Obj) -> None:
            self.made += 1
            self.bind(pod(f"bound-{self.made}", owner_uid="rs-loop"))

    api = NodeNameController([pod("bound-0", owner_uid="rs-loop")])
    pace = replace(PACE, min_retry=0.1)
    with pytest.raises(DrainTimeoutError) as info:
        await drain(api, "n", time_limit=0.6, pace=pace, backoff=FAST)
    assert "were bound to the node after its cordon" in str(info.value)
    assert info.value.remaining == [f"default/bound-{api.made}"]
    # The first three late pods go at once; from the fourth on, one per `min_retry` at most.
    assert len(api.eviction_times) > 5
    assert min(b - a for a, b in itertools.pairwise(api.eviction_times[3:])) >= 0.1 - 0.001


async def test_evictions_are_paced_overall_and_per_pod() -> None:
    api = Pods([pod(f"p{i}") for i in range(6)], answers={"p0": [BLOCKED] * 2 + [EVICTED]})
    pace = Pace(rate=200.0, min_retry=0.05, concurrency=5)
    await drain(api, "n", time_limit=5, pace=pace, backoff=FAST)
    # 8 starts at 200 per second take at least 7 intervals (each start may come a little late, not early).
    times = api.eviction_times
    assert len(times) == 8
    assert times[-1] - times[0] >= 7 / 200 - 0.001
    retries = [t for name, t in zip(api.evictions, api.eviction_times, strict=True) if name == "p0"]
    assert min(b - a for a, b in itertools.pairwise(retries)) >= 0.05 - 0.001


NAMESPACE_TERMINATING = {
    "kind": "Status",
    "status": "Failure",
    "message": 'pods "a" is forbidden: unable to create new content in namespace default because it is being '
    "terminated",
    "reason": "Forbidden",
    "details": {
        "name": "a",
        "kind": "pods",
        "causes": [
            {
                "reason": "NamespaceTerminating",
                "message": "namespace default is being terminated",
                "field": "metadata.namespace",
            }
        ],
    },
    "code": 403,
}


async def test_a_pod_in_a_terminating_namespace_is_waited_for_not_evicted_again() -> None:
    """Item 20 of issue 14: a 403 with cause NamespaceTerminating is no refusal to retry: the namespace
    controller deletes the pod, the drain waits for that."""

    class Terminating(Pods):
        answered = asyncio.Event()

        async def evict(self, namespace: str, name: str, uid: str) -> Eviction:
            self.answered.set()
            return await super().evict(namespace, name, uid)

    api = Terminating([pod("a")], answers={"a": [read_eviction(403, NAMESPACE_TERMINATING)]})
    drained = asyncio.create_task(run(api))
    await api.answered.wait()
    for _ in range(50):  # many turns of the loop, in which a retry would have been made
        await asyncio.sleep(0.001)
    assert api.evictions == ["a"]  # no retries while the namespace goes
    api.delete("a")  # the namespace controller
    assert (await drained).evicted == 1


MULTIPLE_PDBS = {
    "kind": "Status",
    "status": "Failure",
    "message": "This pod has more than one PodDisruptionBudget, which the eviction subresource does not "
    "support.",
    "code": 500,
}
RBAC = {
    "kind": "Status",
    "status": "Failure",
    "message": 'pods "a" is forbidden: User "system:serviceaccount:x:y" cannot create resource '
    '"pods/eviction"',
    "reason": "Forbidden",
    "details": {"name": "a", "kind": "pods"},
    "code": 403,
}


@pytest.mark.parametrize(
    ("status", "body", "name", "tried_again"),
    [(500, MULTIPLE_PDBS, "MultiplePodDisruptionBudgets", False), (403, RBAC, "Forbidden", True)],
)
async def test_a_refusal_for_good_fails_the_drain_naming_it_not_after_the_time_limit(
    status: int, body: Obj, name: str, tried_again: bool
) -> None:
    """Item 20 of issue 14: several PDBs matching one pod (a 500 the API server sends on every try) fail
    the drain at once; no permission once the denials have lasted `denials_settle` seconds; neither
    after DRAIN_TIMEOUT."""
    api = Pods([pod("a"), pod("b")], answers={"a": [read_eviction(status, body)]})
    pace = replace(PACE, denials_settle=0.05)
    with pytest.raises(EvictionRefusedError) as info:
        await drain(api, "n", time_limit=3600, pace=pace, backoff=FAST)
    assert info.value.pod == "default/a"
    assert info.value.answer.name == name
    assert f"the eviction of default/a was refused ({name}): " in str(info.value)
    assert (api.evictions.count("a") > 1) is tried_again


async def test_a_denial_that_passes_is_no_refusal_for_good() -> None:
    """Found by the end-to-end kube-apiserver-restart scenario: a kube-apiserver that has just started
    answers 403 Forbidden until its authorizer has caught up with the RBAC objects; the drain took the
    first such answer as final, failed, and the node recorded a failed update."""
    api = Pods([pod("a")], answers={"a": [read_eviction(403, RBAC), read_eviction(403, RBAC), EVICTED]})
    result = await run(api)
    assert result.evicted == 1
    assert api.evictions.count("a") == 3


async def test_evictions_refused_for_long_are_reported_while_they_last() -> None:
    api = Pods([pod("a")], answers={"a": [BLOCKED] * 200 + [EVICTED]})
    notices: list[Notice] = []
    await run(api, notices=notices)
    refused = [n for n in notices if n.reason == "EvictionRefused"]
    assert len(refused) == 1  # then every report_every
    assert refused[0].pod == "default/a"
    assert refused[0].pdbs == ("web",)
    assert "DisruptionBudget" in refused[0].message


def _server_time(ours_ahead_by: float, age: float) -> str:
    """A `disruptedPods` time written `age` seconds ago by a kube-apiserver whose clock is behind ours by
    `ours_ahead_by` seconds."""
    moment = datetime.now(UTC) - timedelta(seconds=ours_ahead_by + age)
    return moment.isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize("ours_ahead_by", [0.0, -300.0])
async def test_a_pdb_holding_a_lost_eviction_is_named_and_the_pod_tried_as_it_expires(
    ours_ahead_by: float,
) -> None:
    """Item 27 of issue 14: the PDB counts pod `a` as disrupted (an eviction whose delete was lost) while
    `a` lives on; the drain names the PDB and the pod and gets `a` out once the entry expires. Also when our
    clock is 5 minutes behind the kube-apiserver's (by our clock the entry was written in the future)."""

    class StaleBudget(Pods):
        expires = 0.0

        async def evict(self, namespace: str, name: str, uid: str) -> Eviction:
            if asyncio.get_running_loop().time() < self.expires:
                self.evictions.append(name)
                return BLOCKED
            return await super().evict(namespace, name, uid)

    api = StaleBudget([pod("a")])
    left = 1.5  # seconds until the disruption controller expires the entry; more than PACE.stale_after
    api.disrupted = {"web": {"a": _server_time(ours_ahead_by, 120 - left)}}
    api.expires = asyncio.get_running_loop().time() + left
    notices: list[Notice] = []
    assert (await run(api, notices=notices)).evicted == 1
    stale = [n for n in notices if n.reason == "StaleDisruption"]
    assert len(stale) == 1
    assert (stale[0].pod, stale[0].pdbs) == ("default/a", ("web",))
    assert "has counted pod default/a as disrupted since" in stale[0].message


@pytest.mark.parametrize("ours_ahead_by", [0.0, 60.0])
async def test_a_fresh_disruption_entry_is_no_stale_one(ours_ahead_by: float) -> None:
    """Another client's eviction in flight, its entry written just now: not a lost one, also when our clock
    is a minute ahead of the kube-apiserver's (by our clock the entry is a minute old)."""
    api = Pods([pod("a")], answers={"a": [BLOCKED] * 3 + [EVICTED]})
    api.disrupted = {"web": {"a": _server_time(ours_ahead_by, 0.0)}}
    notices: list[Notice] = []
    await run(api, notices=notices)
    assert not [n for n in notices if n.reason == "StaleDisruption"]


async def test_an_empty_node_drains_at_once() -> None:
    assert (await run(Pods([pod("ds", owner="DaemonSet")]))).evicted == 0


REPLACED = read_eviction(
    409, {"message": "Precondition failed: UID in precondition: uid-web-1, UID in object"}
)


async def test_the_quiet_counts_from_a_late_pods_departure_not_its_arrival() -> None:
    """Seed 279's shape, found by review: a late StatefulSet pod web-1, held by its PDB longer than
    `Pace.quiet`; its successor is bound a moment after it goes. Counted from web-1's arrival, the quiet
    had run out by then and the drain ended over the new web-1."""

    class StaleScheduler(Pods):
        bound_at = 0.0

        def replaced(self, gone: Obj) -> None:
            loop = asyncio.get_running_loop()
            if gone["metadata"]["name"] == "a":
                self.bound_at = loop.time()
                self.bind(pod("web-1", owner="StatefulSet", owner_uid="ss"))
            elif gone["metadata"]["uid"] == "uid-web-1":
                successor = pod("web-1", uid="web-1-b", owner="StatefulSet", owner_uid="ss")
                loop.call_later(0.05, self.bind, successor)

        async def evict(self, namespace: str, name: str, uid: str) -> Eviction:
            if uid == "uid-web-1" and asyncio.get_running_loop().time() - self.bound_at < 0.5:
                self.evictions.append(name)
                return BLOCKED
            return await super().evict(namespace, name, uid)

    api = StaleScheduler([pod("a")])
    result = await drain(api, "n", time_limit=5, pace=replace(PACE, quiet=0.3), backoff=FAST)
    assert (result.evicted, api.pods) == (3, {})


async def test_a_statefulset_pods_successor_bound_here_a_moment_later_is_evicted() -> None:
    """No late pod before it: web-1 was there when the drain began, and a scheduler that missed the cordon
    binds its successor (same name) 100 ms after it is gone."""

    class StatefulSet(Pods):
        def replaced(self, gone: Obj) -> None:
            if gone["metadata"]["uid"] == "uid-web-1":
                successor = pod("web-1", uid="web-1-b", owner="StatefulSet", owner_uid="ss")
                asyncio.get_running_loop().call_later(0.1, self.bind, successor)

    api = StatefulSet([pod("web-1", owner="StatefulSet", owner_uid="ss")])
    result = await drain(api, "n", time_limit=5, pace=replace(PACE, quiet=0.3), backoff=FAST)
    assert (result.evicted, api.pods) == (2, {})


async def test_a_listing_older_than_the_watch_does_not_drop_a_pod_for_good() -> None:
    """The last listing is answered from before a late pod `p` was bound, while the watch has shown p: the
    listing must not make the drain forget p (it is PDB-blocked: the drain times out naming it)."""

    class StaleList(Pods):
        async def list_pods(self, node: str) -> tuple[list[Obj], str]:
            self.lists += 1
            snapshot = list(self.pods.values())
            if self.lists == 2:
                self.bind(pod("p", owner_uid="rs-2"))
                await asyncio.sleep(0.02)  # the watch shows p before the listing's answer arrives
            return snapshot, "100"

    api = StaleList([pod("a")], answers={"p": [BLOCKED]})
    with pytest.raises(DrainTimeoutError) as info:
        await drain(api, "n", time_limit=1, pace=PACE, backoff=FAST)
    assert info.value.remaining == ["default/p"]


async def test_an_old_pods_late_answer_does_not_end_the_wait_for_its_successor() -> None:
    """web-1's eviction is answered late (409, the pod was replaced: UID precondition) after the watch has
    shown the old web-1 deleted and the new web-1 bound: the answer is about the old pod only."""

    class Replaced(Pods):
        async def evict(self, namespace: str, name: str, uid: str) -> Eviction:
            if uid == "uid-web-1":
                self.evictions.append(name)
                self.events.put_nowait(("DELETED", self.pods.pop("web-1")))
                self.bind(pod("web-1", uid="web-1-b", owner="StatefulSet", owner_uid="ss"))
                await asyncio.sleep(0.05)
                return REPLACED
            return await super().evict(namespace, name, uid)

    api = Replaced([pod("web-1", owner="StatefulSet", owner_uid="ss")], answers={"web-1": [BLOCKED]})
    with pytest.raises(DrainTimeoutError) as info:
        await drain(api, "n", time_limit=1, pace=PACE, backoff=FAST)
    assert info.value.remaining == ["default/web-1"]


async def test_a_time_limit_reached_while_late_pods_keep_coming_says_so() -> None:
    class Binder(Pods):
        def replaced(self, gone: Obj) -> None:
            late = pod(f"x{len(self.evictions)}", owner_uid=f"rs-{len(self.evictions)}")
            if gone["metadata"]["name"] == "a":
                self.bind(late)
            else:
                asyncio.get_running_loop().call_later(0.1, self.bind, late)

    with pytest.raises(DrainTimeoutError) as info:
        await drain(Binder([pod("a")]), "n", time_limit=0.5, pace=replace(PACE, quiet=0.3), backoff=FAST)
    assert "0 pod(s) left" not in str(info.value)
    assert "were bound to the node after its cordon" in str(info.value)


async def test_a_statefulset_pods_successor_bound_elsewhere_ends_the_drain_without_the_quiet() -> None:
    """The common case (issue 20): web-1's successor is bound to another node a moment after web-1 goes;
    the drain ends then, not after `Pace.quiet` (30 s here, longer than the drain may take)."""

    class StatefulSet(Pods):
        def replaced(self, gone: Obj) -> None:
            successor = pod("web-1", uid="web-1-b", owner="StatefulSet", owner_uid="ss")
            asyncio.get_running_loop().call_later(0.05, self.bind_elsewhere, successor)

    api = StatefulSet([pod("a"), pod("web-1", owner="StatefulSet", owner_uid="ss")])
    result = await drain(api, "n", time_limit=2, pace=replace(PACE, quiet=30.0), backoff=FAST)
    assert (result.evicted, api.pods, api.evictions) == (2, {}, ["a", "web-1"])
    assert api.gets >= 1


async def test_a_successor_still_pending_is_waited_for_until_it_is_bound() -> None:
    """The successor exists unscheduled first (no nodeName), then a scheduler that missed the cordon binds
    it here: it is evicted, not left to the reboot."""

    class StatefulSet(Pods):
        def replaced(self, gone: Obj) -> None:
            if gone["metadata"]["uid"] != "uid-web-1":
                return
            successor = pod("web-1", uid="web-1-b", owner="StatefulSet", owner_uid="ss")
            self.elsewhere["web-1"] = successor | {"spec": {}}  # pending: not bound anywhere yet
            asyncio.get_running_loop().call_later(0.1, self.bind, successor)

    api = StatefulSet([pod("web-1", owner="StatefulSet", owner_uid="ss")])
    result = await drain(api, "n", time_limit=5, pace=replace(PACE, quiet=2.0), backoff=FAST)
    assert (result.evicted, api.pods, api.evictions) == (2, {}, ["web-1", "web-1"])


async def test_a_successor_that_stays_pending_is_looked_for_ever_less_often() -> None:
    """A successor that no scheduler binds (no room anywhere) is looked for over the whole `Pace.quiet`:
    the looks start 0.1 s apart and grow to 0.5 s, not ten a second for the 2 s (found by review)."""

    class Unschedulable(Pods):
        def replaced(self, gone: Obj) -> None:
            successor = pod("web-1", uid="web-1-b", owner="StatefulSet", owner_uid="ss")
            self.elsewhere["web-1"] = successor | {"spec": {}}

    api = Unschedulable([pod("web-1", owner="StatefulSet", owner_uid="ss")])
    result = await drain(api, "n", time_limit=5, pace=replace(PACE, quiet=2.0), backoff=FAST)
    assert (result.evicted, api.pods) == (1, {})
    assert 2 <= api.gets <= 9  # at 0, 0.1, 0.25, 0.48, 0.81, 1.31, 1.81 s


async def test_a_statefulset_pod_without_a_successor_ends_the_drain_after_the_quiet() -> None:
    """The StatefulSet scaled down (or its successor cannot be read): the drain waits `Pace.quiet` for
    one, then ends."""

    class Unreadable(Pods):
        async def get_pod(self, namespace: str, name: str) -> Obj | None:
            self.gets += 1
            if self.gets % 2:
                raise ConnectionError("the kube-apiserver went away")
            return None

    api = Unreadable([pod("web-1", owner="StatefulSet", owner_uid="ss")])
    result = await drain(api, "n", time_limit=5, pace=replace(PACE, quiet=0.3), backoff=FAST)
    assert (result.evicted, api.pods) == (1, {})
    assert api.gets >= 2
    with pytest.raises(DrainTimeoutError, match="waiting for the node to be quiet"):
        await drain(
            Unreadable([pod("web-1", owner="StatefulSet", owner_uid="ss")]),
            "n",
            time_limit=0.2,
            pace=replace(PACE, quiet=30.0),
            backoff=FAST,
        )


async def test_a_look_for_the_successor_that_hangs_is_bounded_by_the_quiet() -> None:
    """A lookup that never answers (a kube-apiserver gone mid-request; the client's own timeout is 30 s)
    ends the wait at `Pace.quiet`, not at the drain's time limit (found by review)."""

    class Hanging(Pods):
        async def get_pod(self, namespace: str, name: str) -> Obj | None:
            await asyncio.Event().wait()
            return None

    api = Hanging([pod("web-1", owner="StatefulSet", owner_uid="ss")])
    result = await drain(api, "n", time_limit=2, pace=replace(PACE, quiet=0.3), backoff=FAST)
    assert (result.evicted, api.pods) == (1, {})
