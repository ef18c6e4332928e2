"""Watching leader electors in tests: whether two ever lead at once, and stopping them within a bound."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from brupop.kube.leader import LeaderElector


class Overlap:
    """Samples, every few milliseconds, whether two electors believe they lead at the same time."""

    def __init__(self, a: LeaderElector, b: LeaderElector) -> None:
        self.seen = False
        self._task = asyncio.create_task(self._watch(a, b))

    async def _watch(self, a: LeaderElector, b: LeaderElector) -> None:
        while True:
            self.seen = self.seen or (a.leading.is_set() and b.leading.is_set())
            await asyncio.sleep(0.005)

    def stop(self) -> bool:
        """Stop sampling; whether the two ever led together."""
        self._task.cancel()
        return self.seen


async def stop_electors(*tasks: asyncio.Task[None], within: float = 10.0) -> None:
    """Cancel electors' tasks; each must be done `within` seconds (a release that hangs is a bug too)."""
    for task in tasks:
        task.cancel()
    _, pending = await asyncio.wait(tasks, timeout=within)
    assert not pending, f"an elector did not stop within {within:g} s of being cancelled"


def skewed(by: timedelta) -> Callable[[], datetime]:
    """A wall clock `by` ahead of the real one (behind when negative)."""
    return lambda: datetime.now(UTC) + by
