"""Benchmark: what notifications cost the caller. For receivers that refuse connections, never answer,
or answer 500, and one that answers 200, prints the time one `Notifier.notify()` call takes (p50, p99
over N calls, in microseconds) and how late a 10 ms timer of the same event loop fires while the
notifier retries in the background (p50, p99, max, in ms): the controller's update steps share that loop.

    .venv/bin/python benchmarks/notify.py [--calls 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from benchmarks.measure import p50_p99_ms
from brupop.notify.events import Event, Notice
from brupop.notify.sender import Notifier
from brupop.notify.settings import NotifySettings
from integ.receiver import receiving, refusing

NOTICE = Notice(event=Event.NODE_FAILED, at=datetime.now(UTC), node="ip-10-0-1-7", reason="rollback")


@contextlib.asynccontextmanager
async def receiver(kind: str) -> AsyncIterator[str]:
    if kind == "refused":
        with refusing() as url:
            yield url
        return
    answers = {"hanging": None, "500": 500, "200": 200}
    async with receiving(lambda _: answers[kind]) as running:
        yield running.url


async def timer_lateness(stop: asyncio.Event) -> list[float]:
    late = []
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(0.01)
        late.append(time.perf_counter() - before - 0.01)
    return late


async def one(kind: str, calls: int) -> None:
    async with receiver(kind) as url:
        settings = NotifySettings.from_env(
            {"NOTIFY_WEBHOOK_URL": url, "NOTIFY_EVENTS": "all", "NOTIFY_TIMEOUT_SECONDS": "1"}
        )
        notifier = Notifier(replace(settings, backoff=0.05, max_backoff=0.5), registry=CollectorRegistry())
        sending = asyncio.create_task(notifier.run())
        stop = asyncio.Event()
        ticking = asyncio.create_task(timer_lateness(stop))
        durations = []
        for _ in range(calls):
            before = time.perf_counter()
            notifier.notify(NOTICE)
            durations.append(time.perf_counter() - before)
            if len(durations) % 50 == 0:
                await asyncio.sleep(0.005)  # let the sender and the timer run between bursts
        await asyncio.sleep(3)
        stop.set()
        late = await ticking
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sending
    p50, p99 = p50_p99_ms(durations)
    l50, l99 = p50_p99_ms(late)
    print(
        f"{kind:>8}: notify() p50 {p50 * 1000:6.1f} µs, p99 {p99 * 1000:6.1f} µs; "
        f"10 ms timer late by p50 {l50:5.2f} ms, p99 {l99:5.2f} ms, max {max(late) * 1000:5.2f} ms"
    )


async def main(calls: int) -> None:
    for kind in ("200", "refused", "hanging", "500"):
        await one(kind, calls)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=5000)
    asyncio.run(main(parser.parse_args().calls))
