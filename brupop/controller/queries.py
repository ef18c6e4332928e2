"""The Prometheus queries the controller needs (gates' and health queries), each asked on a task of its own
at a modest cadence while someone wants it, with the last outcome cached for the reconciler: a reconcile
pass reads outcomes and never awaits Prometheus, however slow it is (a query may take up to its 5-minute
timeout).

Owners (the gatekeeper, the verifier) each say which queries they want now (`want`); a query is asked as
long as one owner wants it: at once when it is first wanted, then every `interval`. A query nobody wants
any more is no longer asked, its connection is closed and its outcome forgotten: a query wanted again
starts unknown ("not asked yet", which fails closed), never with a stale answer. An outcome is at most one
interval plus one query's timeout old; one older than twice that (its task died, which it should not) is
not used either.

The reconciler is poked when an outcome changes meaning (another result or another failure, not the
same answer asked again), so it acts within a moment of an alert firing or clearing.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import structlog

from brupop.models.health import Answer, Outcome
from brupop.models.policy import HealthQuery, PrometheusGate, duration
from brupop.observe.prometheus import PrometheusClient

log = structlog.get_logger("brupop.controller")

_EPOCH = datetime.fromtimestamp(0, UTC)


@dataclass(frozen=True, slots=True)
class Query:
    """One PromQL query on one server, as the client asks it (what the answer means, e.g. failOpen, is the
    policy's business, so a gate and a health query asking the same thing share one query)."""

    url: str
    promql: str
    timeout: timedelta
    bearer_token_file: str | None = None
    ca_file: str | None = None

    @classmethod
    def of(cls, source: PrometheusGate | HealthQuery) -> Query:
        return cls(
            url=source.url,
            promql=source.query,
            timeout=duration(source.timeout),
            bearer_token_file=source.bearer_token_file,
            ca_file=source.ca_file,
        )


@dataclass(frozen=True, slots=True)
class _Asked:
    outcome: Outcome
    at: datetime


def _meaning(outcome: Outcome) -> Outcome:
    """The outcome without when it was asked."""
    return replace(outcome, at=_EPOCH) if isinstance(outcome, Answer) else outcome


class PrometheusQueries:
    def __init__(
        self,
        *,
        interval: timedelta,
        on_change: Callable[[], None],
        clock: Callable[[], datetime],
        client: Callable[[Query], PrometheusClient] | None = None,
    ) -> None:
        self._interval = interval
        self._on_change = on_change
        self._clock = clock
        self._client = client or self._default_client
        self._wanted: dict[str, frozenset[Query]] = {}
        self._tasks: dict[Query, asyncio.Task[None]] = {}
        self._asked: dict[Query, _Asked] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    def _default_client(self, query: Query) -> PrometheusClient:
        return PrometheusClient(
            url=query.url,
            timeout=query.timeout,
            bearer_token_file=query.bearer_token_file,
            ca_file=query.ca_file,
            clock=self._clock,
        )

    @property
    def asking(self) -> frozenset[Query]:
        """The queries being asked now."""
        return frozenset(self._tasks)

    def want(self, owner: str, queries: Iterable[Query]) -> None:
        """The queries `owner` wants now (replacing what it wanted before); call from the event loop."""
        self._wanted[owner] = frozenset(queries)
        wanted = frozenset().union(*self._wanted.values())
        for query in set(self._tasks) - wanted:
            self._stop(self._tasks.pop(query))
            self._asked.pop(query, None)
        for query in wanted - set(self._tasks):
            task = asyncio.get_running_loop().create_task(self._ask(query))
            task.add_done_callback(functools.partial(self._ended, query))
            self._tasks[query] = task

    def _stop(self, task: asyncio.Task[None]) -> None:
        task.cancel()
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    def outcome(self, query: Query, *, since: datetime | None = None) -> Outcome | None:
        """The last outcome of `query` (None: not asked yet, only before `since`, or too old)."""
        asked = self._asked.get(query)
        if asked is None or (since is not None and asked.at < since):
            return None
        if self._clock() - asked.at > 2 * (self._interval + query.timeout):
            return None
        return asked.outcome

    async def _ask(self, query: Query) -> None:
        async with self._client(query) as client:
            while True:
                at = self._clock()
                outcome = await client.query(query.promql)
                before = self._asked.get(query)
                self._asked[query] = _Asked(outcome, at)
                if before is None or _meaning(before.outcome) != _meaning(outcome):
                    self._on_change()
                await asyncio.sleep(self._interval.total_seconds())

    def _ended(self, query: Query, task: asyncio.Task[None]) -> None:
        """A task that ended on its own (it should not: the client turns every failure into an outcome) is
        reported and forgotten with its outcome, so the next `want` asks the query again."""
        if task.cancelled() or self._tasks.get(query) is not task:
            return
        del self._tasks[query]
        self._asked.pop(query, None)
        log.error(
            "a Prometheus query's task ended; it is asked again at the next pass",
            error=repr(task.exception()),
        )

    async def aclose(self) -> None:
        self._wanted.clear()
        self._asked.clear()
        while self._tasks:
            self._stop(self._tasks.popitem()[1])
        await asyncio.gather(*self._stopping, return_exceptions=True)
