"""A fault-injecting HTTP/1.1 proxy in front of the kube-apiserver, one listener per client.

Every brupop process gets a kubeconfig that points at its own listener, so a fault can target one client:
only the leader's Lease renewals, only one agent's calls, only watches. TLS is terminated with a
certificate of the cluster's CA (the clients trust that CA already) and each request is forwarded over TLS
to the real kube-apiserver with its headers, bearer token included, untouched. Responses stream through
as they arrive (a watch is a chunked response that never ends on its own).

Faults, for requests matched by method, path pattern, client and whether they are watches:
- `delay`: forward after a pause;
- `stall`: hold the request without answering until the fault is lifted (then forward it) or the client
  gives up;
- `drop`: reset the connection instead of answering;
- `answer`: a Kubernetes Status with 429 (and Retry-After) or a 5xx, without asking the kube-apiserver;
- `cut` (not a fault but an act): reset the open watches that match, now.

Every request is recorded (client, method, path, arrival and answer times, status, and the body of writes)
so monitors can judge afterwards what each client did and when: e.g. spec writes compared with the Lease
holder's terms. When the kube-apiserver is down the proxy resets the client's connection, as a refused
connection would end the client's request.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, urlsplit

import h11

from integ.pki import CertificateAuthority

Action = Literal["delay", "stall", "drop", "answer"]
_READ = 65536
_REASONS = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}


@dataclass(frozen=True)
class Match:
    """Which requests a fault takes: every field given must match (regular expressions match in full)."""

    methods: frozenset[str] | None = None
    path: str | None = None
    """A pattern searched for in the path (without the query)."""
    client: str | None = None
    """A pattern the client's name must match in full."""
    watch: bool | None = None

    def __call__(self, exchange: Exchange) -> bool:
        return (
            (self.methods is None or exchange.method in self.methods)
            and (self.path is None or re.search(self.path, exchange.path) is not None)
            and (self.client is None or re.fullmatch(self.client, exchange.client) is not None)
            and (self.watch is None or exchange.watch is self.watch)
        )

    def describe(self) -> str:
        parts = [
            "/".join(sorted(self.methods)) if self.methods else "",
            f"path~{self.path}" if self.path else "",
            f"client={self.client}" if self.client else "",
            {True: "watches", False: "non-watches", None: ""}[self.watch],
        ]
        return " ".join(p for p in parts if p) or "every request"


@dataclass(frozen=True)
class Fault:
    match: Match
    action: Action
    seconds: float = 0.0
    """For `delay`: how long."""
    status: int = 503
    """For `answer`: 429, 500, 503, ..."""
    retry_after: int | None = None
    """For `answer`: the Retry-After header, in seconds."""
    count: int | None = None
    """How many requests it takes before it lifts itself; None: until lifted."""

    def describe(self) -> str:
        what = {
            "delay": f"delay {self.seconds:g}s",
            "stall": "stall",
            "drop": "drop the connection",
            "answer": f"answer {self.status}"
            + (f" (Retry-After {self.retry_after})" if self.retry_after is not None else ""),
        }[self.action]
        return f"{what} for {self.match.describe()}" + (f", {self.count} times" if self.count else "")


@dataclass
class Exchange:
    """One request through the proxy and what became of it."""

    client: str
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes
    arrived: float
    """time.monotonic() when the request was read in full."""
    answered: float | None = None
    """When the response's head was sent (for a watch: when it started streaming)."""
    status: int | None = None
    fault: str | None = None
    """What the proxy did to it, if anything."""

    @property
    def watch(self) -> bool:
        return (self.query.get("watch") or [""])[0] in ("1", "true")

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def json(self) -> object:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


@dataclass
class _Active:
    fault: Fault
    used: int = 0
    lifted: asyncio.Event = field(default_factory=asyncio.Event)


class Injected:
    """A fault in force; `lift()` ends it (stalled requests go on to the kube-apiserver)."""

    def __init__(self, proxy: FaultProxy, active: _Active) -> None:
        self._proxy = proxy
        self._active = active

    @property
    def fault(self) -> Fault:
        return self._active.fault

    @property
    def used(self) -> int:
        return self._active.used

    def lift(self) -> None:
        self._proxy._lift(self._active)


class _ResetError(Exception):
    """The downstream connection is to be reset (a dropped connection, a kube-apiserver that is down)."""


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset, as a crashed or refusing server would."""
    with contextlib.suppress(OSError):
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    def __init__(self, *, upstream: str, ca_file: Path, cert_dir: Path) -> None:
        self.upstream = urlsplit(upstream)
        self.log: list[Exchange] = []
        self.observers: list[Callable[[Exchange], None]] = []
        """Called with every request as it arrives (before any fault or forwarding)."""
        self._upstream_tls = ssl.create_default_context(cafile=str(ca_file))
        self._upstream_tls.set_alpn_protocols(["http/1.1"])
        cert_dir.mkdir(parents=True, exist_ok=True)
        cert, key = cert_dir / "proxy.crt", cert_dir / "proxy.key"
        if not key.exists():
            CertificateAuthority.load(ca_file.parent).issue(
                cert_dir, "proxy", common_name="kube-apiserver-proxy", ips=("127.0.0.1",), server=True
            )
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._tls.load_cert_chain(str(cert), str(key))
        self._tls.set_alpn_protocols(["http/1.1"])
        self._servers: dict[str, asyncio.Server] = {}
        self._faults: list[_Active] = []
        self._streams: dict[int, tuple[Exchange, asyncio.StreamWriter]] = {}
        self._ids = itertools.count()
        self._handlers: set[asyncio.Task[None]] = set()

    async def listen(self, client: str) -> str:
        """The URL of `client`'s own listener (made on first use)."""
        if client not in self._servers:

            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                task = asyncio.current_task()
                assert task is not None
                self._handlers.add(task)
                try:
                    await self._connection(client, reader, writer)
                except asyncio.CancelledError:
                    pass  # a per-connection task: ending quietly when the proxy closes is the whole job
                finally:
                    self._handlers.discard(task)

            self._servers[client] = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=self._tls)
        port = self._servers[client].sockets[0].getsockname()[1]
        return f"https://127.0.0.1:{port}"

    def inject(self, fault: Fault) -> Injected:
        active = _Active(fault)
        self._faults.append(active)
        return Injected(self, active)

    @contextlib.contextmanager
    def injected(self, fault: Fault) -> Iterator[Injected]:
        handle = self.inject(fault)
        try:
            yield handle
        finally:
            handle.lift()

    def _lift(self, active: _Active) -> None:
        if active in self._faults:
            self._faults.remove(active)
        active.lifted.set()

    def lift_all(self) -> None:
        for active in list(self._faults):
            self._lift(active)

    def cut(self, match: Match) -> int:
        """Reset every open watch (or other streaming answer) that `match` takes; how many there were."""
        cut = 0
        for exchange, writer in list(self._streams.values()):
            if match(exchange):
                exchange.fault = (exchange.fault + "; " if exchange.fault else "") + "cut"
                _reset(writer)
                cut += 1
        return cut

    def open_watches(self, match: Match | None = None) -> list[Exchange]:
        return [e for e, _ in self._streams.values() if e.watch and (match is None or match(e))]

    async def close(self) -> None:
        self.lift_all()
        for server in self._servers.values():
            server.close()
        for _, writer in list(self._streams.values()):
            _reset(writer)
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        self._servers.clear()

    def _fault_for(self, exchange: Exchange) -> _Active | None:
        for active in self._faults:
            if active.fault.match(exchange):
                active.used += 1
                if active.fault.count is not None and active.used >= active.fault.count:
                    self._faults.remove(active)
                return active
        return None

    async def _connection(
        self, client: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        down = h11.Connection(h11.SERVER)
        upstream: _Upstream | None = None
        try:
            while True:
                request, body = await _read_request(down, reader)
                if request is None:
                    return
                target = urlsplit(request.target.decode())
                exchange = Exchange(
                    client=client,
                    method=request.method.decode(),
                    path=target.path,
                    query=parse_qs(target.query),
                    body=body if request.method != b"GET" else b"",
                    arrived=time.monotonic(),
                )
                self.log.append(exchange)
                for observe in self.observers:
                    observe(exchange)
                active = self._fault_for(exchange)
                if active is not None:
                    exchange.fault = active.fault.describe()
                    if not await self._apply(active, exchange, down, reader, writer):
                        continue  # answered by the proxy itself
                if upstream is None:
                    upstream = await self._connect()
                keep = await self._forward(upstream, request, body, exchange, down, writer)
                if not keep:
                    await upstream.close()
                    upstream = None
                if down.our_state is h11.MUST_CLOSE or down.their_state is h11.MUST_CLOSE:
                    return
                down.start_next_cycle()
        except _ResetError:
            _reset(writer)
        except (h11.ProtocolError, ConnectionError, OSError, asyncio.IncompleteReadError, ssl.SSLError):
            _reset(writer)
        finally:
            if upstream is not None:
                await upstream.close()
            with contextlib.suppress(Exception):
                writer.close()

    async def _apply(
        self,
        active: _Active,
        exchange: Exchange,
        down: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Do the fault; True when the request is then to be forwarded."""
        fault = active.fault
        if fault.action == "delay":
            await asyncio.sleep(fault.seconds)
            return True
        if fault.action == "stall":
            gone = asyncio.create_task(reader.read(1))  # the client sends nothing more unless it closes
            lifted = asyncio.create_task(active.lifted.wait())
            await asyncio.wait([gone, lifted], return_when=asyncio.FIRST_COMPLETED)
            lifted.cancel()
            if gone.done():
                raise _ResetError
            gone.cancel()
            return True
        if fault.action == "drop":
            raise _ResetError
        status = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": f"injected by the test's fault proxy: {fault.describe()}",
            "reason": _REASONS.get(fault.status, "InternalError"),
            "code": fault.status,
        }
        payload = json.dumps(status).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
        if fault.retry_after is not None:
            headers.append(("Retry-After", str(fault.retry_after)))
        writer.write(down.send(h11.Response(status_code=fault.status, headers=headers)) or b"")
        writer.write(down.send(h11.Data(data=payload)) or b"")
        writer.write(down.send(h11.EndOfMessage()) or b"")
        await writer.drain()
        exchange.answered, exchange.status = time.monotonic(), fault.status
        if down.our_state is h11.MUST_CLOSE:
            raise _ResetError
        down.start_next_cycle()
        return False

    async def _connect(self) -> _Upstream:
        try:
            reader, writer = await asyncio.open_connection(
                self.upstream.hostname,
                self.upstream.port,
                ssl=self._upstream_tls,
                server_hostname=self.upstream.hostname,
            )
        except (OSError, ssl.SSLError):
            raise _ResetError from None
        return _Upstream(reader, writer)

    async def _forward(
        self,
        upstream: _Upstream,
        request: h11.Request,
        body: bytes,
        exchange: Exchange,
        down: h11.Connection,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Send the request upstream and stream the answer back; False when the upstream connection ends."""
        try:
            upstream.send(request, body)
            await upstream.writer.drain()
            response = await upstream.response()
        except (h11.ProtocolError, ConnectionError, OSError, asyncio.IncompleteReadError, ssl.SSLError):
            raise _ResetError from None
        writer.write(
            down.send(
                h11.Response(
                    status_code=response.status_code, headers=response.headers, reason=response.reason
                )
            )
            or b""
        )
        await writer.drain()
        exchange.answered, exchange.status = time.monotonic(), response.status_code
        key = next(self._ids)
        self._streams[key] = (exchange, writer)
        try:
            async for chunk in upstream.body():
                writer.write(down.send(h11.Data(data=chunk)) or b"")
                await writer.drain()
        except (h11.ProtocolError, ConnectionError, OSError, asyncio.IncompleteReadError, ssl.SSLError):
            raise _ResetError from None
        finally:
            self._streams.pop(key, None)
        writer.write(down.send(h11.EndOfMessage()) or b"")
        await writer.drain()
        return upstream.reusable()


class _Upstream:
    """One TLS connection to the kube-apiserver, one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h11.Connection(h11.CLIENT)

    def send(self, request: h11.Request, body: bytes) -> None:
        out = self.conn.send(request) or b""
        if body:
            out += self.conn.send(h11.Data(data=body)) or b""
        out += self.conn.send(h11.EndOfMessage()) or b""
        self.writer.write(out)

    async def _event(self) -> object:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.conn.receive_data(await self.reader.read(_READ))

    async def response(self) -> h11.Response:
        while True:
            event = await self._event()
            if isinstance(event, h11.Response):
                return event
            if isinstance(event, h11.ConnectionClosed):
                raise ConnectionResetError("the kube-apiserver closed the connection")

    async def body(self) -> AsyncIterator[bytes]:
        while True:
            event = await self._event()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionResetError("the kube-apiserver closed the connection mid-answer")

    def reusable(self) -> bool:
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
            return True
        return False

    async def close(self) -> None:
        self.writer.transport.abort()


async def _read_request(
    conn: h11.Connection, reader: asyncio.StreamReader
) -> tuple[h11.Request | None, bytes]:
    """The next request and its whole body; (None, b"") when the client closed the connection."""
    request: h11.Request | None = None
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(_READ)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.ConnectionClosed):
            return None, b""
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return request, body
