"""The agent's readiness endpoint for the kubelet: `GET /readyz` answers 200 while the agent watches its
shadow and Node and can use the host API, else 503 with the reason (for a host socket it may not use, what
to fix). A misconfigured agent then shows as not ready in `kubectl get pods` and holds a DaemonSet rollout.
A few lines of asyncio: the agent's memory budget has no room for a web framework."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable


def _answer(status: str, text: str) -> bytes:
    body = f"{text}\n".encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def serve_readiness(*, port: int, not_ready: Callable[[], str | None]) -> asyncio.Server:
    """Serve `/readyz` on `port` (every address); `not_ready` says why the agent is not ready, or None."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(
            asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError
        ):
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            method, _, rest = head.decode("latin-1").partition(" ")
            path = rest.partition(" ")[0].partition("?")[0]
            if (method, path) != ("GET", "/readyz"):
                answer = _answer("404 Not Found", "only GET /readyz is served here")
            elif (reason := not_ready()) is None:
                answer = _answer("200 OK", "ready")
            else:
                answer = _answer("503 Service Unavailable", reason)
            writer.write(answer)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, port=port)
