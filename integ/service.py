"""A stand-in for the `brupop-apiserver` Service: a TCP proxy on 127.0.0.1 that spreads connections over
the replicas' endpoints, round robin. TLS passes through untouched, so agents and the kube-apiserver's
conversion webhook calls talk to the replicas as they would in a cluster.

A dead replica is not skipped: as kube-proxy does, the Service keeps sending connections to its endpoint
until the endpoint is removed (`retire`: a killed pod's endpoint goes a moment later, once the kubelet has
seen the container die and the EndpointSlice controller and kube-proxy have caught up), and a connection
sent there is refused (here: closed before a byte is answered).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

_CHUNK = 65536


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


class Service:
    def __init__(self, backends: list[int]) -> None:
        self.backends = list(backends)
        """Ports on 127.0.0.1; change the list to add or remove endpoints."""
        self._turn = itertools.count()
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Future[Any]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def retire(self, port: int, *, after: float) -> None:
        """Remove `port`'s endpoint `after` seconds from now (kube-proxy's lag behind a pod's death)."""

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self.backends.remove(port)

        asyncio.get_running_loop().call_later(after, remove)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        if not self.backends:
            return None
        port = self.backends[next(self._turn) % len(self.backends)]
        try:
            return await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await self._connect()
        if upstream is None:
            writer.close()
            return
        up_reader, up_writer = upstream
        link = asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        self._links.add(link)
        try:
            await link
        finally:
            self._links.discard(link)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Service]:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        try:
            yield self
        finally:
            self._server.close()
            for link in list(self._links):
                link.cancel()
            await asyncio.gather(*self._links, return_exceptions=True)
