"""A webhook receiver for notification tests and the demo: a real HTTP/1.1 server on 127.0.0.1 that
records every request and answers as told (a status, or never), and an address that refuses connections.

Kept small on purpose (request line, headers, a Content-Length body, keep-alive): it only has to speak
to httpx, as a Slack or webhook endpoint would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

Answer = Callable[[int], int | None]
"""Request number (from 0) -> the status to answer, or None to never answer."""


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    answer: Answer = field(default=lambda _: 200)
    requests: list[Received] = field(default_factory=list)
    answered: int = 0
    port: int = 0
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def release(self) -> None:
        """Let the requests that were held unanswered end (their connections close)."""
        self._release.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for entry in lines:
                    if ":" in entry:
                        key, value = entry.split(":", 1)
                        headers[key.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                number = len(self.requests)
                self.requests.append(Received(path=line.split(" ")[1], headers=headers, body=body))
                status = self.answer(number)
                if status is None:
                    await self._release.wait()
                    return
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\nok".encode())
                await writer.drain()
                self.answered += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def receiving(answer: Answer = lambda _: 200) -> AsyncIterator[Receiver]:
    receiver = Receiver(answer=answer)
    server = await asyncio.start_server(receiver._serve, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    try:
        yield receiver
    finally:
        receiver.release()
        server.close()
        await server.wait_closed()


@contextlib.contextmanager
def refusing() -> Iterator[str]:
    """A URL whose port is bound but not listening: every connection is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
