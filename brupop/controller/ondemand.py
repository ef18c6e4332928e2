"""An informer that runs only while something needs it.

The health gates and verification read Pods and workloads, which a cluster has by the thousand; most
clusters configure neither, and then the controller must not list or watch them at all (nor need the
rights to). `want(True)` starts a fresh informer (list, then watch), `want(False)` stops it and drops its
cache, so memory and API load follow the policies that ask. Until its first list completes nothing is
known (`items()` is None): the caller treats that as unknown, never as empty.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from brupop.kube.informer import Informer

Obj = dict[str, Any]


class OnDemandInformer:
    def __init__(self, make: Callable[[], Informer]) -> None:
        self._make = make
        self._informer: Informer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[None]] = set()

    @property
    def running(self) -> bool:
        return self._task is not None

    def want(self, wanted: bool) -> None:
        """Start (in the running event loop) or stop the informer; a repeat changes nothing."""
        if wanted and self._task is None:
            self._informer = self._make()
            self._task = asyncio.get_running_loop().create_task(self._informer.run())
        elif not wanted and self._task is not None:
            self._task.cancel()
            self._stopping.add(self._task)
            self._task.add_done_callback(self._stopping.discard)
            self._task, self._informer = None, None

    def items(self) -> list[Obj] | None:
        """The cached objects; None while not running or not listed yet."""
        if self._informer is None or not self._informer.ready.is_set():
            return None
        return self._informer.items()

    async def aclose(self) -> None:
        self.want(False)
        for task in list(self._stopping):
            with contextlib.suppress(asyncio.CancelledError):
                await task
