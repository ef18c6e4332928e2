"""The controller's plain-HTTP port: `/metrics` (Prometheus), `/healthz` (the process is alive) and
`/readyz` (its caches are synced). A few lines of asyncio instead of a web framework keep the controller's
memory small; requests are tiny GETs from Prometheus and the kubelet."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

MAX_REQUEST_HEAD = 8192


def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def serve_endpoints(
    *, host: str, port: int, registry: CollectorRegistry, ready: Callable[[], bool]
) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            method, path, *_ = head[:MAX_REQUEST_HEAD].decode("latin-1").split(" ", 2)
            path = path.split("?", 1)[0]
            if method != "GET":
                answer = _response("405 Method Not Allowed", b"GET only\n")
            elif path == "/metrics":
                answer = _response("200 OK", generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                answer = _response("200 OK", b"ok\n")
            elif path == "/readyz":
                answer = (
                    _response("200 OK", b"ready\n")
                    if ready()
                    else _response("503 Service Unavailable", b"syncing\n")
                )
            else:
                answer = _response("404 Not Found", b"not found\n")
            writer.write(answer)
            await writer.drain()
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ValueError,
            ConnectionError,
        ):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
