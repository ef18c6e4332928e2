"""Sending: one bounded queue and one task per destination, so a slow or dead receiver delays nothing but
its own queue.

`Notifier.notify()` is synchronous and constant-time: it filters the notice per destination and appends it
to that destination's queue, dropping the oldest waiting notice when the queue is full (counted), and
returns. It never raises and never waits, so an update step cannot be slowed or failed by it. `run()` (the
controller starts it as a task of its own) sends each queue in order: one attempt is bounded by the
timeout; a connection error, a timeout, 408, 425, 429 or a 5xx answer is retried after a jittered,
doubling back-off (at least the receiver's `Retry-After`, within the cap), up to the attempt limit; any
other answer is final. A notice that is not delivered is counted as failed and logged (destination kind
and host, the error's kind; never the URL).

Metrics, per destination (`sink`: webhook or slack): `brupop_notifications_total{outcome}` (sent, failed,
dropped), `brupop_notification_retries_total` and `brupop_notification_queue_length`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import deque
from collections.abc import Callable
from typing import Final

import httpx
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from brupop.notify.events import Notice
from brupop.notify.payloads import payload
from brupop.notify.settings import NotifySettings, SinkSettings

log = structlog.get_logger("brupop.notify")
RETRYABLE: Final = frozenset({408, 425, 429})
OUTCOMES: Final = ("sent", "failed", "dropped")


class NotifyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.notifications = Counter(
            "brupop_notifications",
            "Notifications by destination and outcome (sent, failed after its retries, dropped from a full "
            "queue).",
            ["sink", "outcome"],
            registry=registry,
        )
        self.retries = Counter(
            "brupop_notification_retries", "Notification attempts repeated.", ["sink"], registry=registry
        )
        self.queued = Gauge(
            "brupop_notification_queue_length",
            "Notifications waiting to be sent.",
            ["sink"],
            registry=registry,
        )


class _Sink:
    """One destination: its queue and its sending loop."""

    def __init__(
        self,
        config: SinkSettings,
        settings: NotifySettings,
        metrics: NotifyMetrics,
        jitter: Callable[[], float],
    ) -> None:
        self.config = config
        self._settings = settings
        self._jitter = jitter
        self._queue: deque[Notice] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        name = config.kind.value
        self._outcome = {o: metrics.notifications.labels(sink=name, outcome=o) for o in OUTCOMES}
        self._retries = metrics.retries.labels(sink=name)
        self._length = metrics.queued.labels(sink=name)

    def offer(self, notice: Notice) -> None:
        if notice.event not in self.config.events:
            return
        if len(self._queue) >= self._settings.queue_size:
            self._queue.popleft()
            self._outcome["dropped"].inc()
        self._queue.append(notice)
        self._length.set(len(self._queue))
        self._idle.clear()
        self._wake.set()

    async def settled(self) -> None:
        await self._idle.wait()

    async def work(self, http: httpx.AsyncClient) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                notice = self._queue.popleft()
                self._length.set(len(self._queue))
                try:
                    outcome = await self._deliver(http, notice)
                except Exception as err:  # whatever goes wrong, the next notice still goes out
                    log.error("notification failed", sink=self.config.kind.value, error=type(err).__name__)
                    outcome = "failed"
                self._outcome[outcome].inc()
            self._idle.set()

    async def _deliver(self, http: httpx.AsyncClient, notice: Notice) -> str:
        template = self._settings.templates[notice.event]
        document = payload(self.config.kind, notice, template, cluster=self._settings.cluster)
        body = json.dumps(document).encode()
        problem = ""
        for attempt in range(1, self._settings.attempts + 1):
            retry_after = 0.0
            try:
                async with asyncio.timeout(self._settings.timeout):
                    answer = await http.post(
                        self.config.url.value, content=body, headers={"Content-Type": "application/json"}
                    )
            except (httpx.TransportError, TimeoutError) as err:
                problem = type(err).__name__
            else:
                if answer.is_success:
                    return "sent"
                problem = f"HTTP {answer.status_code}"
                if answer.status_code not in RETRYABLE and answer.status_code < 500:
                    break
                retry_after = retry_after_seconds(answer.headers.get("Retry-After"))
            if attempt == self._settings.attempts:
                break
            self._retries.inc()
            settings = self._settings
            await asyncio.sleep(
                backoff_delay(
                    attempt,
                    first=settings.backoff,
                    cap=settings.max_backoff,
                    jitter=self._jitter(),
                    retry_after=retry_after,
                )
            )
        log.warning(
            "notification not delivered",
            sink=self.config.kind.value,
            destination=self.config.url.redacted(),
            notice=notice.event.value,
            error=problem,
        )
        return "failed"


def backoff_delay(attempt: int, *, first: float, cap: float, jitter: float, retry_after: float) -> float:
    """The wait after failed attempt number `attempt` (from 1): doubling from `first`, jittered (`jitter`
    in [0, 1)) to between half and all of it, never under the receiver's Retry-After, never over `cap`."""
    full = min(first * 2.0 ** (attempt - 1), cap)
    return min(max(full * (0.5 + jitter / 2), retry_after), cap)


def retry_after_seconds(header: str | None) -> float:
    """A Retry-After header in seconds (0 when absent, or an HTTP date, which is not worth a clock)."""
    with contextlib.suppress(TypeError, ValueError):
        return max(float(header), 0.0)  # type: ignore[arg-type]
    return 0.0


class Notifier:
    """Hands notices to every destination that subscribed to their event."""

    def __init__(
        self,
        settings: NotifySettings,
        *,
        registry: CollectorRegistry,
        transport: httpx.AsyncBaseTransport | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        metrics = NotifyMetrics(registry)
        self._sinks = [_Sink(sink, settings, metrics, jitter) for sink in settings.sinks]
        self._transport = transport
        self._timeout = settings.timeout

    def notify(self, notice: Notice) -> None:
        """Queue the notice for every destination that wants it; returns at once, never raises."""
        for sink in self._sinks:
            sink.offer(notice)

    async def settled(self) -> None:
        """Until every queue is empty and nothing is being sent (for shutdown and tests)."""
        for sink in self._sinks:
            await sink.settled()

    async def run(self) -> None:
        """Send until cancelled."""
        if not self._sinks:
            return
        async with (
            httpx.AsyncClient(
                transport=self._transport, timeout=self._timeout, follow_redirects=False
            ) as http,
            asyncio.TaskGroup() as group,
        ):
            for sink in self._sinks:
                group.create_task(sink.work(http))
