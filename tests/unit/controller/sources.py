"""Scripted list + watch sources for the controller's informers (as `brupop.kube.client.KubeClient`'s
`list_watch` gives them): each resource lists the objects given, then watches forever."""

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from brupop.kube.client import Resource
from brupop.kube.informer import ListWatch
from tests.unit.controller.pokes import Pokes

Obj = dict[str, Any]


class Source:
    def __init__(self, objects: list[Obj]) -> None:
        self.objects = objects
        self.lists = 0
        self.watching = 0
        self.seen = Pokes()
        """Poked as a list or a watch begins and as a watch ends."""
        self.release = asyncio.Event()
        """A list answers once this is set (it is, unless a test clears it)."""
        self.release.set()
        self.transform: Callable[[Obj], Obj] = lambda obj: obj

    async def list(self) -> tuple[list[Obj], str]:
        self.lists += 1
        self.seen()
        await self.release.wait()
        return [self.transform(o) for o in self.objects], "1"

    async def watch(self, resource_version: str) -> AsyncIterator[tuple[str, Obj]]:
        self.watching += 1
        self.seen()
        try:
            await asyncio.Event().wait()
            yield "BOOKMARK", {}  # never reached
        finally:
            self.watching -= 1
            self.seen()


class Kube:
    """`list_watch` over one Source per resource."""

    def __init__(self, objects: dict[Resource, list[Obj]]) -> None:
        self.sources = {resource: Source(found) for resource, found in objects.items()}

    def list_watch(self, resource: Resource, *, transform: Callable[[Obj], Obj]) -> ListWatch:
        source = self.sources[resource]
        source.transform = transform
        return source
