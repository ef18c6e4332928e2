import asyncio
import itertools
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from brupop.kube.leader import (
    JITTER,
    LeaderElector,
    LeaseConflictError,
    LeaseTiming,
    NotLeadingError,
    decide,
    micro_time,
    released,
)
from tests.electors import Overlap, skewed, stop_electors

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


def choose(
    current: dict[str, Any] | None, me: str = "me", now: datetime = NOW, *, expired: bool = False
) -> dict[str, Any] | None:
    return decide(
        current,
        identity=me,
        now=now,
        timing=TIMING,
        name="brupop-controller",
        namespace="ns",
        expired=expired,
    )


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


def test_a_live_lease_of_someone_else_is_respected_whatever_its_renew_time_says() -> None:
    assert choose(lease("other", NOW - timedelta(days=1))) is None


@pytest.mark.parametrize(
    ("current", "expired"),
    [
        (lease("other", NOW + timedelta(days=1)), True),  # unchanged for a lease duration, as we saw it
        (lease(None, NOW), False),
        (lease("", NOW), False),
        ({"metadata": {"name": "x"}, "spec": {"holderIdentity": "other", "renewTime": "garbage"}}, True),
    ],
)
def test_expired_or_released_leases_are_taken(current: dict[str, Any], expired: bool) -> None:
    body = choose(current, expired=expired)
    assert body is not None
    assert body["spec"]["holderIdentity"] == "me"
    assert body["spec"]["leaseTransitions"] == int(current["spec"].get("leaseTransitions") or 0) + 1


def test_release_gives_up_the_hold() -> None:
    spec = released(lease("me", NOW))["spec"]
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"]) == (None, 1)


class Store:
    """An in-memory Lease with resourceVersion checks, like the API server's optimistic concurrency, and a
    watch of its changes. Writes are recorded (loop time, holder)."""

    def __init__(self) -> None:
        self.obj: dict[str, Any] | None = None
        self.version = 0
        self.fail = False
        self.fail_replaces = 0
        """How many of the next replaces fail (as an unreachable server)."""
        self.writes: list[tuple[float, str | None]] = []
        self.wrote = asyncio.Event()
        self._watchers: list[asyncio.Queue[dict[str, Any]]] = []

    async def changes(self, resource_version: str) -> AsyncGenerator[dict[str, Any] | None, None]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._watchers.append(queue)
        try:
            if self.obj is not None and int(self.obj["metadata"]["resourceVersion"]) > int(resource_version):
                yield self.obj
            while True:
                yield await queue.get()
        finally:
            self._watchers.remove(queue)

    async def get(self) -> dict[str, Any] | None:
        if self.fail:
            raise RuntimeError("apiserver unreachable")
        return None if self.obj is None else {**self.obj, "metadata": dict(self.obj["metadata"])}

    def _store(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.obj = {**body, "metadata": {**body["metadata"], "resourceVersion": str(self.version)}}
        self.writes.append((asyncio.get_running_loop().time(), self.obj["spec"].get("holderIdentity")))
        self.wrote.set()
        for queue in self._watchers:
            queue.put_nowait(self.obj)
        return self.obj

    def touch(self) -> None:
        """Someone else changes the Lease (say, an annotation): its resourceVersion moves on."""
        assert self.obj is not None
        meta = self.obj["metadata"]
        self._store({**self.obj, "metadata": {**meta, "annotations": {"someone/else": str(self.version)}}})

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.obj is not None:
            raise LeaseConflictError
        return self._store(body)

    async def replace(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.fail or self.fail_replaces > 0:
            self.fail_replaces = max(self.fail_replaces - 1, 0)
            raise RuntimeError("apiserver unreachable")
        if (
            self.obj is None
            or body["metadata"].get("resourceVersion") != self.obj["metadata"]["resourceVersion"]
        ):
            raise LeaseConflictError
        return self._store(body)


class View:
    """One replica's connection to a shared Store: it can hang (a server that accepts and never answers)
    and counts the reads that came back. Its watch of the Lease can be made to fail."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.hang = False
        self.reads = 0
        self.watch_fails = False
        self._read = asyncio.Condition()

    def changes(self, resource_version: str) -> AsyncGenerator[dict[str, Any] | None, None]:
        if self.watch_fails:
            raise RuntimeError("403 Forbidden: cannot watch leases")
        return self.store.changes(resource_version)

    async def _answer(self) -> None:
        if self.hang:
            await asyncio.Event().wait()

    async def get(self) -> dict[str, Any] | None:
        await self._answer()
        found = await self.store.get()
        async with self._read:
            self.reads += 1
            self._read.notify_all()
        return found

    async def wait_for_reads(self, count: float) -> None:
        async with self._read:
            await self._read.wait_for(lambda: self.reads >= count)

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        await self._answer()
        return await self.store.create(body)

    async def replace(self, body: dict[str, Any]) -> dict[str, Any]:
        await self._answer()
        return await self.store.replace(body)


# The shortest timings the Lease API honours: leaseDurationSeconds is a whole number of seconds.
FAST = LeaseTiming(
    duration=timedelta(seconds=1),
    renew_deadline=timedelta(seconds=0.6),
    retry_period=timedelta(seconds=0.1),
)


@pytest.mark.parametrize(
    ("duration", "renew", "retry", "message"),
    [
        (0.3, 0.2, 0.02, "whole number of seconds, at least 1"),
        (1.5, 1.0, 0.1, "whole number of seconds, at least 1"),
        (2, 2, 0.1, "renew deadline 2s must be shorter than the lease duration 2s"),
        (2, 1, 1, "retry period 1s must be shorter than the renew deadline 1s"),
        (2, 1, 0, "retry period 0s must be positive"),
    ],
)
def test_timings_the_lease_api_cannot_honour_are_refused(
    duration: float, renew: float, retry: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        LeaseTiming(
            duration=timedelta(seconds=duration),
            renew_deadline=timedelta(seconds=renew),
            retry_period=timedelta(seconds=retry),
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
    # a released (holder None) and b took over after it: b may do so at once, as the release reaches its
    # watch, so the Lease's writes are what tells (reading the Lease here raced b's takeover).
    await asyncio.wait_for(second.leading.wait(), 2)
    holders = [holder for _, holder in store.writes]
    released = holders.index(None)
    assert set(holders[:released]) == {"a"}
    assert set(holders[released + 1 :]) == {"b"}
    task_b.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task_b


async def test_a_leader_that_cannot_renew_steps_down_then_campaigns_again() -> None:
    store = Store()
    elector = LeaderElector(store=store, identity="a", name="l", namespace="ns", timing=FAST)
    task = asyncio.create_task(elector.run())
    await asyncio.wait_for(elector.leading.wait(), 2)
    first = elector.term
    assert first is not None
    store.fail = True
    await asyncio.wait_for(first.ended.wait(), 2)
    assert not elector.leading.is_set()
    assert elector.time_left() == 0
    store.fail = False  # nobody else took the Lease: it is still ours to renew
    await asyncio.wait_for(elector.leading.wait(), 2)
    assert elector.term is not None
    assert elector.term.number == first.number + 1
    await stop_electors(task)


async def test_annotations_live_on_the_lease_across_terms_and_only_the_leader_writes_them() -> None:
    store = Store()
    a = LeaderElector(store=store, identity="a", name="l", namespace="ns", timing=FAST)
    with pytest.raises(NotLeadingError):
        await a.annotate("example/key", "1")
    task_a = asyncio.create_task(a.run())
    await asyncio.wait_for(a.leading.wait(), 2)
    await a.annotate("example/key", "2")
    assert a.annotation("example/key") == "2"
    await stop_electors(task_a)
    b = LeaderElector(store=store, identity="b", name="l", namespace="ns", timing=FAST)
    task_b = asyncio.create_task(b.run())
    await asyncio.wait_for(b.leading.wait(), 2)
    assert b.annotation("example/key") == "2"
    await stop_electors(task_b)


@pytest.mark.parametrize(
    ("skew_a", "skew_b"),
    [(timedelta(0), timedelta(hours=3)), (-timedelta(hours=3), timedelta(0))],
    ids=["candidate-ahead", "leader-behind"],
)
async def test_clock_skew_between_replicas_never_makes_two_leaders(
    skew_a: timedelta, skew_b: timedelta
) -> None:
    """The candidate's wall clock is hours ahead of the leader's (or the leader's behind): expiry is judged
    by how long b has seen the Lease unchanged on its own monotonic clock, never by comparing a's
    renewTime with b's wall clock."""
    store = Store()
    a = LeaderElector(store=store, identity="a", name="l", namespace="ns", timing=FAST, clock=skewed(skew_a))
    b_view = View(store)
    b = LeaderElector(store=b_view, identity="b", name="l", namespace="ns", timing=FAST, clock=skewed(skew_b))
    task_a = asyncio.create_task(a.run())
    await asyncio.wait_for(a.leading.wait(), 2)
    overlap = Overlap(a, b)
    task_b = asyncio.create_task(b.run())
    try:
        # b reads the Lease for three lease durations while a renews; it must never take over.
        await b_view.wait_for_reads(3 * FAST.duration / FAST.retry_period)
        assert not b.leading.is_set()
        assert a.leading.is_set()
        await stop_electors(task_a)  # a releases: b takes over at once
        await asyncio.wait_for(b.leading.wait(), 2)
    finally:
        await stop_electors(task_a, task_b)
    assert not overlap.stop()


async def test_a_renewal_that_hangs_ends_the_term_before_anyone_else_may_lead() -> None:
    """a's server stops answering mid-term (no error, no timeout from the transport): a must stop leading,
    and stop writing (time_left() == 0), before b, which sees the Lease unchanged, takes over."""
    store = Store()
    a_view = View(store)
    a = LeaderElector(store=a_view, identity="a", name="l", namespace="ns", timing=FAST)
    b = LeaderElector(store=store, identity="b", name="l", namespace="ns", timing=FAST)
    task_a = asyncio.create_task(a.run())
    await asyncio.wait_for(a.leading.wait(), 2)
    task_b = asyncio.create_task(b.run())
    overlap = Overlap(a, b)
    try:
        a_view.hang = True
        await asyncio.wait_for(b.leading.wait(), 10)
        assert not a.leading.is_set()
        assert a.time_left() == 0
    finally:
        await stop_electors(task_a, task_b)
    assert not overlap.stop()


async def _leading(elector: LeaderElector) -> asyncio.Task[None]:
    task = asyncio.create_task(elector.run())
    await asyncio.wait_for(elector.leading.wait(), 2)
    return task


async def _renewals(store: Store, holder: str, count: int) -> list[float]:
    """Wait until `holder` has written the Lease `count` more times; the loop times of those writes."""
    start = len(store.writes)
    while len([w for w in store.writes[start:] if w[1] == holder]) < count:
        store.wrote.clear()
        await store.wrote.wait()
    return [at for at, who in store.writes[start:] if who == holder][:count]


async def test_a_leader_renews_with_one_write_of_the_lease_it_holds_and_no_read() -> None:
    """client-go's fast path: the renewal is a PUT carrying the resourceVersion of the leader's own last
    write (a change by anyone else makes it a 409, and only then is the Lease read)."""
    store = Store()
    view = View(store)
    a = LeaderElector(store=view, identity="a", name="l", namespace="ns", timing=FAST)
    task = await _leading(a)
    reads = view.reads
    await _renewals(store, "a", 4)
    assert view.reads == reads
    await stop_electors(task)


def test_the_default_renewals_come_every_10_2_s_with_two_retries_in_hand_before_the_deadline() -> None:
    """One renewal every 10.2 s (client-go's shape renewed every 2 s, our first timings every 5 s): two
    retries, each a retry period with its most jitter, still fit in the 15 s deadline, and the Lease runs 5 s
    past it."""
    timing = LeaseTiming()
    assert timing.renew_interval == pytest.approx(10.2)
    assert timing.renew_interval + 2 * 2.0 * (1 + JITTER) <= timing.renew_deadline.total_seconds()
    assert (timing.duration - timing.renew_deadline).total_seconds() == 5


async def test_a_quiet_leader_renews_only_when_no_more_than_two_retries_fit_before_its_deadline() -> None:
    store = Store()
    a = LeaderElector(store=store, identity="a", name="l", namespace="ns", timing=FAST)
    task = await _leading(a)
    term = a.term
    times = await _renewals(store, "a", 5)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    latest = FAST.renew_deadline.total_seconds() - 2 * FAST.retry_period.total_seconds() * (1 + JITTER)
    assert min(gaps) >= latest - 0.01, gaps
    assert a.term is term
    await stop_electors(task)


async def test_a_failed_renewal_is_retried_within_the_renew_deadline_and_the_term_goes_on() -> None:
    store = Store()
    a = LeaderElector(store=store, identity="a", name="l", namespace="ns", timing=FAST)
    task = await _leading(a)
    term = a.term
    store.fail_replaces = 1  # the next renewal fails; the retry, a retry period later, must not
    await _renewals(store, "a", 2)
    assert store.fail_replaces == 0
    assert a.term is term
    assert a.leading.is_set()
    await stop_electors(task)


async def test_a_leader_stays_steady_between_its_renewals() -> None:
    """A batch of writes may begin at any moment of a term whose renewals succeed."""
    store = Store()
    a = LeaderElector(store=store, identity="a", name="l", namespace="ns", timing=FAST)
    task = await _leading(a)
    samples = []
    while len(store.writes) < 5:
        samples.append(a.steady())
        await asyncio.sleep(0.01)
    assert all(samples)
    await stop_electors(task)


async def test_a_lease_changed_by_someone_else_is_read_and_renewed_in_the_same_term() -> None:
    store = Store()
    view = View(store)
    a = LeaderElector(store=view, identity="a", name="l", namespace="ns", timing=FAST)
    task = await _leading(a)
    term = a.term
    store.touch()  # the leader's next PUT is a 409: it reads the Lease, still its own, and renews it
    await _renewals(store, "a", 2)
    assert a.term is term
    assert store.obj is not None
    assert store.obj["metadata"]["annotations"] == {"someone/else": "1"}
    await stop_electors(task)


async def test_a_standby_watches_the_lease_instead_of_reading_it_and_takes_over_at_release() -> None:
    store = Store()
    a = LeaderElector(store=store, identity="a", name="l", namespace="ns", timing=FAST)
    b_view = View(store)
    b = LeaderElector(store=b_view, identity="b", name="l", namespace="ns", timing=FAST, watch=b_view)
    task_a = await _leading(a)
    overlap = Overlap(a, b)
    task_b = asyncio.create_task(b.run())
    try:
        three_leases = int(3 * FAST.duration.total_seconds() / FAST.renew_interval)
        await _renewals(store, "a", three_leases)
        assert not b.leading.is_set()
        assert b_view.reads <= 2  # its first look, and perhaps one when a watch began before a's write
        await stop_electors(task_a)  # a releases: b sees it on its watch and takes over
        await asyncio.wait_for(b.leading.wait(), 2)
    finally:
        await stop_electors(task_a, task_b)
    assert not overlap.stop()


async def test_a_watching_standby_takes_over_a_lease_that_stopped_changing() -> None:
    """a's server stops answering: b sees no more renewals on its watch and takes over once the record
    has gone unchanged for a lease duration; a has stopped writing by then."""
    store = Store()
    a_view = View(store)
    a = LeaderElector(store=a_view, identity="a", name="l", namespace="ns", timing=FAST)
    b_view = View(store)
    b = LeaderElector(store=b_view, identity="b", name="l", namespace="ns", timing=FAST, watch=b_view)
    task_a = await _leading(a)
    task_b = asyncio.create_task(b.run())
    overlap = Overlap(a, b)
    try:
        await _renewals(store, "a", 2)
        a_view.hang = True
        await asyncio.wait_for(b.leading.wait(), 10)
        assert not a.leading.is_set()
        assert a.time_left() == 0
        assert b_view.reads <= 3
    finally:
        await stop_electors(task_a, task_b)
    assert not overlap.stop()


async def test_a_standby_that_cannot_watch_reads_the_lease_every_retry_period() -> None:
    store = Store()
    a = LeaderElector(store=store, identity="a", name="l", namespace="ns", timing=FAST)
    b_view = View(store)
    b_view.watch_fails = True  # e.g. RBAC without list/watch on the Lease (an older chart)
    b = LeaderElector(store=b_view, identity="b", name="l", namespace="ns", timing=FAST, watch=b_view)
    task_a = await _leading(a)
    task_b = asyncio.create_task(b.run())
    try:
        await b_view.wait_for_reads(5)
        assert not b.leading.is_set()
        await stop_electors(task_a)
        await asyncio.wait_for(b.leading.wait(), 2)
    finally:
        await stop_electors(task_a, task_b)
