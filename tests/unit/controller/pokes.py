"""A callback that tests can wait on: counts its calls and wakes whoever waits for a condition it made
true, with a deadline (no polling)."""

import asyncio
from collections.abc import Callable


class Pokes:
    def __init__(self) -> None:
        self.count = 0
        self._event = asyncio.Event()

    def __call__(self) -> None:
        self.count += 1
        self._event.set()

    async def until(self, condition: Callable[[], object], *, seconds: float = 5.0) -> None:
        """Wait until `condition()` holds, looking again after each call."""
        async with asyncio.timeout(seconds):
            while not condition():
                self._event.clear()
                await self._event.wait()
