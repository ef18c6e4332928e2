"""Leader election on a `coordination.k8s.io/v1` Lease, so several controller replicas are safe: only the
holder writes specs. Timings follow client-go's defaults (15 s lease, renew every 2 s, give up leading when
a renewal has not succeeded for 10 s, before anyone else may take over). On shutdown the leader releases
the Lease, so a successor takes over at once instead of waiting for it to expire.

`decide` is the pure part: given the Lease as read, who we are and the time, what to write (if anything).
Writes carry the read resourceVersion, so two candidates racing for an expired Lease cannot both win: the
loser gets a 409 and stays a follower.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import structlog

from brupop.models.timestamp import Timestamp

log = structlog.get_logger("brupop.leader")


class LeaseConflictError(Exception):
    """The Lease changed (or appeared) since it was read."""


class LeaseStore(Protocol):
    async def get(self) -> dict[str, Any] | None: ...
    async def create(self, body: dict[str, Any]) -> dict[str, Any]: ...
    async def replace(self, body: dict[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    duration: timedelta = timedelta(seconds=15)
    renew_deadline: timedelta = timedelta(seconds=10)
    retry_period: timedelta = timedelta(seconds=2)


def micro_time(moment: datetime) -> str:
    """Kubernetes MicroTime: RFC 3339, microseconds, `Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _expiry(spec: Mapping[str, Any]) -> datetime | None:
    renewed = spec.get("renewTime") or spec.get("acquireTime")
    if not isinstance(renewed, str):
        return None
    try:
        stamp = Timestamp.parse(renewed)
    except ValueError:
        return None
    return stamp.instant + timedelta(seconds=int(spec.get("leaseDurationSeconds") or 0))


def decide(
    lease: Mapping[str, Any] | None,
    *,
    identity: str,
    now: datetime,
    timing: LeaseTiming,
    name: str,
    namespace: str,
) -> dict[str, Any] | None:
    """The Lease to write to hold (or take) leadership now, or None when another holder's lease is live."""
    seconds = max(1, math.ceil(timing.duration.total_seconds()))  # the API takes whole seconds
    if lease is None:
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "holderIdentity": identity,
                "leaseDurationSeconds": seconds,
                "acquireTime": micro_time(now),
                "renewTime": micro_time(now),
                "leaseTransitions": 0,
            },
        }
    spec = dict(lease.get("spec") or {})
    holder = spec.get("holderIdentity") or ""
    if holder == identity:
        spec.update(renewTime=micro_time(now), leaseDurationSeconds=seconds)
        return {**lease, "spec": spec}
    expiry = _expiry(spec)
    if holder and expiry is not None and expiry > now:
        return None
    spec.update(
        holderIdentity=identity,
        leaseDurationSeconds=seconds,
        acquireTime=micro_time(now),
        renewTime=micro_time(now),
        leaseTransitions=int(spec.get("leaseTransitions") or 0) + 1,
    )
    return {**lease, "spec": spec}


def released(lease: Mapping[str, Any]) -> dict[str, Any]:
    """The Lease with our hold given up, so a successor need not wait for it to expire."""
    spec = dict(lease.get("spec") or {})
    spec.update(holderIdentity=None, leaseDurationSeconds=1)
    return {**lease, "spec": spec}


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
    ) -> None:
        self._store = store
        self._identity = identity
        self._name = name
        self._namespace = namespace
        self._timing = timing or LeaseTiming()
        self._clock = clock
        self._held: dict[str, Any] | None = None
        self.leading = asyncio.Event()
        self.lost = asyncio.Event()

    async def _attempt(self) -> bool:
        """One try to take or renew the Lease; True when we hold it afterwards."""
        current = await self._store.get()
        wanted = decide(
            current,
            identity=self._identity,
            now=self._clock(),
            timing=self._timing,
            name=self._name,
            namespace=self._namespace,
        )
        if wanted is None:
            return False
        self._held = await (self._store.create(wanted) if current is None else self._store.replace(wanted))
        return True

    async def _try(self) -> bool:
        try:
            return await self._attempt()
        except LeaseConflictError:
            return False
        except Exception as err:  # any API or transport failure: keep trying within the deadlines
            log.warning("lease request failed", error=str(err))
            return False

    async def run(self) -> None:
        """Acquire, then renew until a renewal deadline is missed (sets `lost`) or the task is cancelled."""
        period = self._timing.retry_period.total_seconds()
        while True:  # the Lease is polled: its holder writes no events we could wait for
            if await self._try():
                break
            await asyncio.sleep(period)
        log.info("became leader", identity=self._identity, lease=self._name)
        self.leading.set()
        last_renewal = self._clock()
        try:
            while True:
                await asyncio.sleep(period)
                if await self._try():
                    last_renewal = self._clock()
                elif self._clock() - last_renewal >= self._timing.renew_deadline:
                    log.error("lost leadership: could not renew the lease in time", lease=self._name)
                    self.leading.clear()
                    self.lost.set()
                    return
        finally:
            if self.leading.is_set():
                await self._release()

    async def _release(self) -> None:
        self.leading.clear()
        if self._held is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.shield(self._store.replace(released(self._held)))
            log.info("released leadership", lease=self._name)
