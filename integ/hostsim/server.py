"""HTTP/1.1 on a Unix socket for one simulated host (asyncio + h11: light enough for a thousand hosts in
one process). A reboot closes the socket and its connections, removes the socket file, and brings it back
after the host's reboot time, unless the host is set never to return."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import h11

from integ.hostsim.host import Response, SimulatedHost

MAX_BODY = 64 * 1024


class HostServer:
    def __init__(self, host: SimulatedHost, socket_path: Path) -> None:
        self.host = host
        self.path = socket_path
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._reboot: asyncio.Task[None] | None = None
        host.on_reboot = self._schedule_reboot

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._connection, path=str(self.path))

    async def stop(self) -> None:
        if self._reboot is not None:
            self._reboot.cancel()
        await self._close()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        self.path.unlink(missing_ok=True)

    def _schedule_reboot(self) -> None:
        self._reboot = asyncio.get_running_loop().create_task(self._rebooting())

    async def _rebooting(self) -> None:
        await self._close()
        await asyncio.sleep(self.host.timings.reboot * self.host.time_scale)
        if self.host.faults.never_returns:
            return
        self.host.come_back()
        await self.start()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    body = b""
                    while True:
                        part = conn.next_event()
                        if part is h11.NEED_DATA:
                            conn.receive_data(await reader.read(65536))
                        elif isinstance(part, h11.Data):
                            body += part.data
                            if len(body) > MAX_BODY:
                                raise h11.RemoteProtocolError("body too large")
                        elif isinstance(part, h11.EndOfMessage):
                            break
                    answer = self.host.handle(event.method.decode(), event.target.decode())
                    writer.write(_encode(conn, answer))
                    await writer.drain()
                    if answer.after is not None:
                        answer.after()
                        return
                    if conn.our_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except (h11.RemoteProtocolError, ConnectionError, asyncio.CancelledError):
            return  # a per-connection handler: ending quietly on shutdown is the whole job
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()


def _encode(conn: h11.Connection, answer: Response) -> bytes:
    headers = [("Content-Length", str(len(answer.body)))]
    if answer.body:
        headers.append(("Content-Type", answer.content_type))
    out = conn.send(h11.Response(status_code=answer.status, headers=headers)) or b""
    if answer.body:
        out += conn.send(h11.Data(data=answer.body)) or b""
    out += conn.send(h11.EndOfMessage()) or b""
    return out
