"""Leader election on a `coordination.k8s.io/v1` Lease, so several controller replicas are safe: only the
holder writes. Timings are client-go's shape, a little longer (a 20 s lease, give up leading when a
renewal has not succeeded for 15 s, retry every 2 s: client-go's 15 s and 10 s made the leader's renewals
half its CPU at rest, see `LeaseTiming`). On shutdown the leader releases the Lease, so a successor
takes over at once instead of waiting for it to expire. A replica that stops leading campaigns again.

Why two replicas never lead at once, even with hung connections and wrong wall clocks:

- Expiry is judged by local observation, as client-go does: a candidate takes over only a Lease whose
  record it has seen unchanged for `leaseDurationSeconds` on its own monotonic clock (or one without a
  holder). Wall clocks of replicas are never compared; `renewTime` is written for people and other tools.
- A term is counted from the *start* of the last successful renewal attempt. The leader stops leading
  (and `time_left()` reaches 0) at that start + the renew deadline. A successor must first observe the
  renewed record, which exists only after that start, unchanged for a whole lease duration: it cannot lead
  before start + the lease duration. The gap (5 s by default) covers writes still in flight.
- Every attempt is bounded by what is left of the renew deadline (`asyncio.timeout`), whatever the
  transport's own timeouts; so is the release.
- Writes carry the resourceVersion they read, so two candidates racing for a free Lease cannot both win.

What it costs at rest (an idle operator should cost nothing): the leader renews with one PUT of the Lease
it wrote last (client-go's fast path; only a 409, someone else's change, makes it read the Lease first),
and only once no more than two retries still fit before the renew deadline (10.2 s after its last
renewal), retrying every retry period after a failure. A candidate given a `watch` of the Lease does not
poll it: it sees each renewal (and a release, at once) on the watch and reads the Lease again when the
record it observed would expire; observing on a watch is observing later than the write, so the argument
above holds. Without a watch, or while watching fails (say, RBAC without list/watch on
the Lease), it reads the Lease every retry period.

Writers use `time_left()` (check right before each write and bound it) and `steady()` (whether a batch of
writes may begin: no renewal attempt has been missed but the latest). The Lease also carries a few
annotations of the leader's own state that must outlive a term (`annotate`), such as when a one-shot
schedule last drained.

`decide` is the pure part: given the Lease as read, who we are, the time and whether the holder's record
has expired by our observation, what to write (if anything).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import structlog

log = structlog.get_logger("brupop.leader")

JITTER = 0.2
"""Waits between attempts are the retry period plus up to this fraction of it."""


class LeaseConflictError(Exception):
    """The Lease changed (or appeared) since it was read."""


class NotLeadingError(Exception):
    """A leader-only write was asked of a replica that does not (or no longer safely) lead."""


class LeaseStore(Protocol):
    async def get(self) -> dict[str, Any] | None: ...
    async def create(self, body: dict[str, Any]) -> dict[str, Any]: ...
    async def replace(self, body: dict[str, Any]) -> dict[str, Any]: ...


class LeaseWatch(Protocol):
    def changes(self, resource_version: str) -> AsyncGenerator[dict[str, Any] | None, None]:
        """The Lease after each change following `resource_version` (None once deleted); ends when the
        server ends the watch, raises when it cannot be watched."""
        ...


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    """client-go's three timings. The Lease API keeps the duration in whole seconds, so a duration that is
    not one (a 0.3 s lease would silently become 1 s) is refused rather than rounded.

    The defaults are client-go's (15 s, 10 s, 2 s) with 5 s more on the lease and on the deadline: a
    renewal is the leader's one periodic write, and with a 10 s deadline keeping two retries in hand meant
    one every 5 s, half the leader's CPU at rest; with 15 s, one every 10.2 s. The price is a later
    take-over after a crash (20 s after the last renewal instead of 15: a node update takes minutes, and a
    stopping leader releases the Lease at once); the 5 s between the deadline and the lease's end, which
    covers writes still in flight, is the same."""

    duration: timedelta = timedelta(seconds=20)
    renew_deadline: timedelta = timedelta(seconds=15)
    retry_period: timedelta = timedelta(seconds=2)

    def __post_init__(self) -> None:
        duration = self.duration.total_seconds()
        renew = self.renew_deadline.total_seconds()
        retry = self.retry_period.total_seconds()
        if duration < 1 or duration != int(duration):
            raise ValueError(
                f"lease duration {duration:g}s: must be a whole number of seconds, at least 1 "
                "(the Lease API's leaseDurationSeconds is an integer)"
            )
        if not renew < duration:
            raise ValueError(
                f"renew deadline {renew:g}s must be shorter than the lease duration {duration:g}s"
            )
        if not retry > 0:
            raise ValueError(f"retry period {retry:g}s must be positive")
        if not self.longest_retry_wait < renew:
            raise ValueError(
                f"retry period {retry:g}s must be shorter than the renew deadline {renew:g}s "
                f"(with {JITTER:.0%} jitter)"
            )

    @property
    def seconds(self) -> int:
        return int(self.duration.total_seconds())

    @property
    def longest_retry_wait(self) -> float:
        """Seconds at most between two attempts after a failure: a retry period with its most jitter."""
        return self.retry_period.total_seconds() * (1 + JITTER)

    @property
    def renew_interval(self) -> float:
        """Seconds from a successful renewal to the next attempt: as late as leaves two retries (each
        `longest_retry_wait`) before the renew deadline (10.2 s by default), at least a retry period."""
        return max(
            self.renew_deadline.total_seconds() - 2 * self.longest_retry_wait,
            self.retry_period.total_seconds(),
        )

    @property
    def steady_margin(self) -> float:
        """The time left that lets a batch of writes begin: what remains when the renewal after the last
        success has failed and its retry is due, so a batch begins only while no attempt but the latest
        was missed."""
        left = self.renew_deadline.total_seconds() - self.renew_interval - self.longest_retry_wait
        return max(left, 0.0)


def micro_time(moment: datetime) -> str:
    """Kubernetes MicroTime: RFC 3339, microseconds, `Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record(lease: Mapping[str, Any]) -> str:
    """The leader election record as compared between observations (client-go compares the same fields)."""
    return json.dumps(lease.get("spec") or {}, sort_keys=True, default=str)


def _lease_seconds(lease: Mapping[str, Any]) -> float:
    value = (lease.get("spec") or {}).get("leaseDurationSeconds")
    return float(value) if isinstance(value, int) and value > 0 else 0.0


def _held_by_someone(lease: Mapping[str, Any] | None) -> bool:
    return bool(lease and (lease.get("spec") or {}).get("holderIdentity"))


def decide(
    lease: Mapping[str, Any] | None,
    *,
    identity: str,
    now: datetime,
    timing: LeaseTiming,
    name: str,
    namespace: str,
    expired: bool,
) -> dict[str, Any] | None:
    """The Lease to write to hold (or take) leadership now, or None when another holder's lease is live.
    `expired`: the current record has gone unchanged for its lease duration by our own observation."""
    stamp = micro_time(now)
    if lease is None:
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "holderIdentity": identity,
                "leaseDurationSeconds": timing.seconds,
                "acquireTime": stamp,
                "renewTime": stamp,
                "leaseTransitions": 0,
            },
        }
    spec = dict(lease.get("spec") or {})
    holder = spec.get("holderIdentity") or ""
    if holder == identity:
        spec.update(renewTime=stamp, leaseDurationSeconds=timing.seconds)
        return {**lease, "spec": spec}
    if holder and not expired:
        return None
    spec.update(
        holderIdentity=identity,
        leaseDurationSeconds=timing.seconds,
        acquireTime=stamp,
        renewTime=stamp,
        leaseTransitions=int(spec.get("leaseTransitions") or 0) + 1,
    )
    return {**lease, "spec": spec}


def released(lease: Mapping[str, Any]) -> dict[str, Any]:
    """The Lease with our hold given up, so a successor need not wait for it to expire."""
    spec = dict(lease.get("spec") or {})
    spec.update(holderIdentity=None, leaseDurationSeconds=1)
    return {**lease, "spec": spec}


def annotated(lease: Mapping[str, Any], key: str, value: str) -> dict[str, Any]:
    meta = dict(lease.get("metadata") or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), key: value}
    return {**lease, "metadata": meta}


@dataclass(frozen=True, slots=True)
class Term:
    """One stretch of leadership; `ended` is set when it is over (lost, released or cancelled)."""

    number: int
    ended: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(slots=True)
class _Observed:
    record: str
    since: float


class LeaderElector:
    def __init__(
        self,
        *,
        store: LeaseStore,
        identity: str,
        name: str,
        namespace: str,
        timing: LeaseTiming | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        watch: LeaseWatch | None = None,
    ) -> None:
        self._store = store
        self._watch = watch
        self._identity = identity
        self._name = name
        self._namespace = namespace
        self._timing = timing or LeaseTiming()
        self._clock = clock
        self._held: dict[str, Any] | None = None
        """The Lease as this replica last wrote it (or read it to annotate)."""
        self._seen: dict[str, Any] | None = None
        """The Lease as this replica, campaigning, last read or watched it."""
        self._observed: _Observed | None = None
        self._watch_failing = False
        self._renewed_at = 0.0
        self._lock = asyncio.Lock()
        self._terms = 0
        self.term: Term | None = None
        """The current term while leading, else None."""
        self.leading = asyncio.Event()

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def time_left(self) -> float:
        """Seconds this replica may still write for: until the renew deadline of its last renewal (0 when
        it does not lead). A write must be both checked against and bounded by it."""
        if not self.leading.is_set():
            return 0.0
        return max(self._renewed_at + self._timing.renew_deadline.total_seconds() - self._now(), 0.0)

    def steady(self) -> bool:
        """Whether a batch of writes may begin: leading, and no renewal attempt missed but the latest
        (see `LeaseTiming.steady_margin`); each write is still checked against `time_left()`."""
        left = self.time_left()
        return left > 0 and left >= self._timing.steady_margin

    def annotation(self, key: str) -> str | None:
        """An annotation of the Lease as last read or written by this replica."""
        value = ((self._held or {}).get("metadata") or {}).get("annotations", {}).get(key)
        return value if isinstance(value, str) else None

    async def annotate(self, key: str, value: str) -> None:
        """Record `key: value` on the Lease now (leader only); raises NotLeadingError when this replica does
        not lead or lost the Lease meanwhile, and the Kubernetes client's error when the write failed."""
        async with self._lock:
            left = self.time_left()
            if left <= 0 or self._held is None:
                raise NotLeadingError(f"cannot record {key}: not leading")
            try:
                async with asyncio.timeout(left):
                    self._held = await self._store.replace(annotated(self._held, key, value))
            except LeaseConflictError:
                raise NotLeadingError(f"cannot record {key}: the Lease changed under us") from None
            except TimeoutError:
                raise NotLeadingError(f"cannot record {key}: the renew deadline passed") from None

    def _expired(self, lease: Mapping[str, Any], at: float) -> bool:
        record = _record(lease)
        if self._observed is None or self._observed.record != record:
            self._observed = _Observed(record, at)
        return at - self._observed.since >= _lease_seconds(lease)

    async def _attempt(self) -> bool:
        """One try to take or renew the Lease; True when we hold it afterwards."""
        if self.leading.is_set() and self._held is not None:
            renewal = self._decide(self._held, expired=False)
            assert renewal is not None  # we hold it: decide renews
            try:
                self._held = await self._store.replace(renewal)
                return True
            except LeaseConflictError:  # someone else wrote it since: read it and decide again
                log.info("the Lease changed since it was renewed; reading it", lease=self._name)
        current = await self._store.get()
        self._seen = current
        wanted = self._decide(current, expired=current is not None and self._expired(current, self._now()))
        if wanted is None:
            return False
        self._held = await (self._store.create(wanted) if current is None else self._store.replace(wanted))
        return True

    def _decide(self, current: Mapping[str, Any] | None, *, expired: bool) -> dict[str, Any] | None:
        return decide(
            current,
            identity=self._identity,
            now=self._clock(),
            timing=self._timing,
            name=self._name,
            namespace=self._namespace,
            expired=expired,
        )

    async def _try(self, *, until: float) -> bool:
        """One attempt, abandoned at loop time `until`; any failure counts as not holding the Lease."""
        async with self._lock:
            try:
                async with asyncio.timeout_at(until):
                    return await self._attempt()
            except LeaseConflictError:
                return False
            except TimeoutError:
                log.warning("lease request timed out", lease=self._name)
                return False
            except Exception as err:  # any API or transport failure: keep trying within the deadlines
                log.warning("lease request failed", lease=self._name, error=str(err))
                return False

    def _retry_wait(self) -> float:
        return self._timing.retry_period.total_seconds() * (1 + random.uniform(0, JITTER))

    async def run(self) -> None:
        """Campaign until cancelled: acquire, renew until a renew deadline is missed, then campaign again.
        Cancelling releases the Lease when held."""
        try:
            while True:
                await self._acquire()
                await self._hold()
        finally:
            await self._release()

    async def _acquire(self) -> None:
        renew = self._timing.renew_deadline.total_seconds()
        while True:
            started = self._now()
            if await self._try(until=started + renew):
                self._begin(started)
                return
            await self._wait_for_a_chance()

    async def _wait_for_a_chance(self) -> None:
        """Until the Lease may be ours: with a watch, until its holder lets it go or the record we observed
        would expire (each renewal seen restarts the observation); else, or when watching fails, one retry
        period."""
        seen, version = self._seen, str(((self._seen or {}).get("metadata") or {}).get("resourceVersion", ""))
        if self._watch is None or not _held_by_someone(seen) or not version:
            await asyncio.sleep(self._retry_wait())
            return
        try:
            async with (
                asyncio.timeout_at(self._expiry()) as window,
                contextlib.aclosing(self._watch.changes(version)) as changes,
            ):
                async for lease in changes:
                    self._watch_failing = False
                    if not _held_by_someone(lease):
                        return  # released or deleted: try at once
                    assert lease is not None
                    self._seen = lease
                    self._expired(lease, self._now())  # a new record restarts the observation
                    window.reschedule(self._expiry())
            self._watch_failing = False  # the server ended the watch: read the Lease, then watch again
        except TimeoutError:
            return  # the record we observed may have expired: look
        except Exception as err:  # no watch (RBAC, an old server) or a broken one: poll for a while
            if not self._watch_failing:  # said once per failing stretch, not every retry period
                log.warning("cannot watch the Lease; reading it instead", lease=self._name, error=str(err))
            self._watch_failing = True
            await asyncio.sleep(self._retry_wait())

    def _expiry(self) -> float:
        """Loop time at which the record last observed has gone unchanged for its lease duration, at least a
        retry period from now (a Lease that names no duration is looked at every retry period)."""
        soonest = self._now() + self._timing.retry_period.total_seconds()
        if self._observed is None or self._seen is None:
            return soonest
        return max(self._observed.since + _lease_seconds(self._seen), soonest)

    def _begin(self, started: float) -> None:
        self._renewed_at = started
        self._terms += 1
        self.term = Term(self._terms)
        self.leading.set()
        log.info("became leader", identity=self._identity, lease=self._name, term=self._terms)

    def _end(self) -> None:
        self.leading.clear()
        if self.term is not None:
            self.term.ended.set()
            self.term = None

    async def _hold(self) -> None:
        """Renew once half the renew deadline has passed since the last renewal, retry every retry period
        after a failure; return (no longer leading) once the renew deadline has passed."""
        renew = self._timing.renew_deadline.total_seconds()
        failed = False
        while True:
            deadline = self._renewed_at + renew
            due = (
                (self._now() + self._retry_wait())
                if failed
                else self._renewed_at + self._timing.renew_interval
            )
            await asyncio.sleep(max(min(due, deadline) - self._now(), 0.0))
            started = self._now()
            if started < deadline and await self._try(until=deadline):
                self._renewed_at = started
                failed = False
            elif self._now() >= deadline:
                log.error("lost leadership: could not renew the lease in time", lease=self._name)
                self._end()
                self._observed = None
                return
            else:
                failed = True

    async def _release(self) -> None:
        leading, left = self.leading.is_set(), self.time_left()
        self._end()
        if not leading or self._held is None or left <= 0:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(left):
                await asyncio.shield(self._store.replace(released(self._held)))
            log.info("released leadership", lease=self._name)
