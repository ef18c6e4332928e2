import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from brupop.kube.leader import LeaderElector, LeaseConflictError, LeaseTiming, decide, micro_time, released

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
TIMING = LeaseTiming()


def lease(holder: str | None, renewed: datetime, transitions: int = 3) -> dict[str, Any]:
    return {
        "metadata": {"name": "brupop-controller", "namespace": "ns", "resourceVersion": "9"},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 15,
            "acquireTime": micro_time(renewed),
            "renewTime": micro_time(renewed),
            "leaseTransitions": transitions,
        },
    }


def choose(current: dict[str, Any] | None, me: str = "me", now: datetime = NOW) -> dict[str, Any] | None:
    return decide(current, identity=me, now=now, timing=TIMING, name="brupop-controller", namespace="ns")


def test_no_lease_creates_one() -> None:
    body = choose(None)
    assert body is not None
    assert body["spec"]["holderIdentity"] == "me"
    assert body["spec"]["renewTime"] == "2024-03-01T12:00:00.000000Z"
    assert body["metadata"] == {"name": "brupop-controller", "namespace": "ns"}


def test_holder_renews_keeping_the_resource_version() -> None:
    body = choose(lease("me", NOW - timedelta(seconds=5)))
    assert body is not None
    assert body["spec"]["renewTime"] == micro_time(NOW)
    assert body["spec"]["leaseTransitions"] == 3
    assert body["metadata"]["resourceVersion"] == "9"


def test_a_live_lease_of_someone_else_is_respected() -> None:
    assert choose(lease("other", NOW - timedelta(seconds=14))) is None


@pytest.mark.parametrize(
    "current",
    [
        lease("other", NOW - timedelta(seconds=16)),
        lease(None, NOW),
        lease("", NOW),
        {"metadata": {"name": "x"}, "spec": {"holderIdentity": "other", "renewTime": "garbage"}},
    ],
)
def test_expired_released_or_unreadable_leases_are_taken(current: dict[str, Any]) -> None:
    body = choose(current)
    assert body is not None
    assert body["spec"]["holderIdentity"] == "me"
    assert body["spec"]["leaseTransitions"] == int(current["spec"].get("leaseTransitions") or 0) + 1


def test_release_gives_up_the_hold() -> None:
    spec = released(lease("me", NOW))["spec"]
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"]) == (None, 1)


class Store:
    """An in-memory Lease with resourceVersion checks, like the API server's optimistic concurrency."""

    def __init__(self) -> None:
        self.obj: dict[str, Any] | None = None
        self.version = 0
        self.fail = False

    async def get(self) -> dict[str, Any] | None:
        if self.fail:
            raise RuntimeError("apiserver unreachable")
        return None if self.obj is None else {**self.obj, "metadata": dict(self.obj["metadata"])}

    def _store(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.obj = {**body, "metadata": {**body["metadata"], "resourceVersion": str(self.version)}}
        return self.obj

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.obj is not None:
            raise LeaseConflictError
        return self._store(body)

    async def replace(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError("apiserver unreachable")
        if (
            self.obj is None
            or body["metadata"].get("resourceVersion") != self.obj["metadata"]["resourceVersion"]
        ):
            raise LeaseConflictError
        return self._store(body)


FAST = LeaseTiming(
    duration=timedelta(seconds=0.3),
    renew_deadline=timedelta(seconds=0.2),
    retry_period=timedelta(seconds=0.02),
)


async def test_only_one_of_two_candidates_leads_and_release_hands_over() -> None:
    store = Store()
    first = LeaderElector(store=store, identity="a", name="l", namespace="ns", timing=FAST)
    second = LeaderElector(store=store, identity="b", name="l", namespace="ns", timing=FAST)
    task_a = asyncio.create_task(first.run())
    await asyncio.wait_for(first.leading.wait(), 2)
    task_b = asyncio.create_task(second.run())
    # b keeps trying while a renews; it must not lead while a does.
    for _ in range(10):
        await asyncio.sleep(FAST.retry_period.total_seconds())
        assert not second.leading.is_set()
    task_a.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task_a
    assert store.obj is not None
    assert store.obj["spec"]["holderIdentity"] is None
    await asyncio.wait_for(second.leading.wait(), 2)
    assert store.obj["spec"]["holderIdentity"] == "b"
    task_b.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task_b


async def test_a_leader_that_cannot_renew_steps_down() -> None:
    store = Store()
    elector = LeaderElector(store=store, identity="a", name="l", namespace="ns", timing=FAST)
    task = asyncio.create_task(elector.run())
    await asyncio.wait_for(elector.leading.wait(), 2)
    store.fail = True
    await asyncio.wait_for(elector.lost.wait(), 2)
    assert not elector.leading.is_set()
    await task
