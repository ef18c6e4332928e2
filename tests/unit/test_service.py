"""The Service stand-in sends connections to a dead replica's endpoint until it is retired, as kube-proxy
does (issue 15: it used to skip a dead replica at once, a kindness no cluster gives)."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from integ.service import Service


@asynccontextmanager
async def echo(word: bytes) -> AsyncIterator[asyncio.Server]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(word)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield server


def port_of(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


async def ask(service: Service) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    try:
        return await reader.read()
    finally:
        writer.close()


async def test_a_dead_replicas_endpoint_refuses_connections_until_it_is_retired() -> None:
    async with echo(b"a") as alive, echo(b"b") as doomed:
        dead = port_of(doomed)
        async with Service([port_of(alive), dead]).running() as service:
            assert sorted([await ask(service) for _ in range(4)]) == [b"a", b"a", b"b", b"b"]
            doomed.close()
            await doomed.wait_closed()
            assert sorted([await ask(service) for _ in range(4)]) == [b"", b"", b"a", b"a"]
            retired = asyncio.Event()
            service.retire(dead, after=0.0)
            asyncio.get_running_loop().call_soon(retired.set)
            await retired.wait()
            assert service.backends == [port_of(alive)]
            assert [await ask(service) for _ in range(3)] == [b"a", b"a", b"a"]


async def test_a_service_without_endpoints_refuses() -> None:
    async with Service([]).running() as service:
        assert await ask(service) == b""
