"""HTTP/1.1 on Unix sockets for simulated hosts (asyncio + h11: light enough for a thousand hosts in one
process).

Each host's socket is made as Bottlerocket's API server makes `/run/api.sock`: owner root, group 274, mode
0660, in a directory anyone may enter, so a client without the group gets EACCES exactly as on a node
(only root can make it so: anything else fails with one line saying why). Next to it, a boot-ID file
(mode 0644, like `/proc/sys/kernel/random/boot_id`) holds the current boot's ID.

A reboot, once accepted, leaves the API up for the host's shutdown time; then the socket and its
connections close, the socket file goes, and after the reboot time it comes back (unless the host is set
never to return) with a new boot ID.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import h11

from brupop.models.constants import HOST_API_SOCKET_GROUP
from integ.hostsim.host import Response, SimulatedHost

MAX_BODY = 64 * 1024
Handler = Callable[[str, str, bytes], Response]
"""(method, target, body) -> the answer."""


class SimulatorError(RuntimeError):
    """The simulator cannot run as asked; the message is one line saying why."""


def require_root() -> None:
    if os.geteuid() != 0:
        raise SimulatorError(
            f"the host simulator makes its API socket as Bottlerocket does (owner root, group "
            f"{HOST_API_SOCKET_GROUP}, mode 0660), which only root can do, and it runs as uid "
            f"{os.geteuid()}: run it (and the tests that use it) as root, as CI does"
        )


def reachable_directory(path: Path) -> None:
    """Create `path` (and its parents) and let anyone enter it, as `/run` is."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)


class HostServer:
    def __init__(self, host: SimulatedHost, socket_path: Path, *, boot_id_file: Path) -> None:
        self.host = host
        self.path = socket_path
        self.boot_id_file = boot_id_file
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._reboot: asyncio.Task[None] | None = None
        host.on_reboot = self._schedule_reboot

    async def start(self) -> None:
        require_root()
        reachable_directory(self.path.parent)
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._connection, path=str(self.path))
        os.chown(self.path, 0, HOST_API_SOCKET_GROUP)
        self.path.chmod(0o660)
        reachable_directory(self.boot_id_file.parent)
        self.boot_id_file.write_text(f"{self.host.boot_id}\n")
        self.boot_id_file.chmod(0o644)

    async def stop(self) -> None:
        if self._reboot is not None:
            self._reboot.cancel()
        self._close()

    def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        self.path.unlink(missing_ok=True)

    def _schedule_reboot(self) -> None:
        if not self.host.shutdown_seconds:
            self._go_down()  # no shutdown time: down before the client's next request
        self._reboot = asyncio.get_running_loop().create_task(self._rebooting())

    def _go_down(self) -> None:
        self.host.go_down()
        self._close()

    async def _rebooting(self) -> None:
        if self.host.up.is_set():
            await asyncio.sleep(self.host.shutdown_seconds)
            self._go_down()
        await asyncio.sleep(self.host.timings.reboot * self.host.time_scale)
        if self.host.faults.never_returns:
            return
        self.host.come_back()
        await self.start()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await serve_http(reader, writer, lambda method, target, _: self.host.handle(method, target))
        finally:
            self._writers.discard(writer)


async def serve_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handle: Handler) -> None:
    """Answer the requests of one connection until it closes."""
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
                continue
            if isinstance(event, h11.ConnectionClosed):
                return
            if not isinstance(event, h11.Request):
                continue
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
            answer = handle(event.method.decode(), event.target.decode(), body)
            encoded = _encode(conn, answer)
            writer.write(encoded[: len(encoded) // 2] if answer.cut else encoded)
            await writer.drain()
            if answer.after is not None:
                answer.after()
            if answer.cut:
                writer.transport.abort()
                return
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except (h11.RemoteProtocolError, ConnectionError, asyncio.CancelledError):
        return  # a per-connection handler: ending quietly on shutdown is the whole job
    finally:
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
