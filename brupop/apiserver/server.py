"""Runs the apiserver: HTTPS with the mounted certificate, an informer over the agent pods, and a
certificate watcher. When cert-manager renews the certificate, the new one is loaded into the live TLS
context: new connections get it and requests in flight are not interrupted (the Rust brupop restarted).

Start-up loads the certificate and binds the listening socket before it says it serves: a certificate it
cannot load or an address it cannot listen on is a `SettingsError` naming the variable (one line, exit 2),
not a traceback or a "serving" followed by an exit.

At rest the process sleeps: uvicorn's main loop wakes ten times a second to refresh the Date header and
look for a stop request, so `QuietServer` waits for the stop instead and `dated` writes the Date header
into each answer; the certificate watcher looks at the files' metadata once a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
from email.utils import formatdate
from pathlib import Path
from types import FrameType

import structlog
import uvicorn
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from brupop.apiserver.app import create_app
from brupop.apiserver.cluster import ClusterGate, ClusterNodeOperations, trim_pod
from brupop.apiserver.metrics import DrainMetrics
from brupop.apiserver.settings import ApiserverSettings
from brupop.kube.client import PODS, KubeClient
from brupop.kube.config import KubeConfig
from brupop.kube.events import EventRecorder
from brupop.kube.informer import Informer
from brupop.kube.memory import release_freed_memory
from brupop.models.constants import AGENT_COMPONENT, COMPONENT_LABEL
from brupop.settings import SettingsError

log = structlog.get_logger("brupop.apiserver")
CERT_CHECK_SECONDS = 60.0
"""How often the certificate files are looked at (their metadata; cert-manager renews weeks ahead)."""
REPORTER = "brupop.bottlerocket.aws/apiserver"
"""The `reportingController` of the apiserver's Events."""


def _signature(*paths: Path) -> tuple[tuple[int, int, int], ...]:
    """What changes when a file is replaced or rewritten (the kubelet swaps a Secret's files by symlink)."""
    found = []
    for path in paths:
        meta = path.stat()
        found.append((meta.st_ino, meta.st_mtime_ns, meta.st_size))
    return tuple(found)


async def reload_certificates(context: ssl.SSLContext, cert: Path, key: Path, *, every: float) -> None:
    """Load a changed certificate and key into `context`; a half-written pair is retried next time."""
    current = _signature(cert, key)
    while True:
        await asyncio.sleep(every)
        try:
            latest = _signature(cert, key)
            if latest != current:
                context.load_cert_chain(str(cert), str(key))
                current = latest
                log.info("loaded a renewed serving certificate", cert=str(cert))
        except (OSError, ssl.SSLError) as err:
            log.warning("cannot load the serving certificate yet", error=str(err))


class QuietServer(uvicorn.Server):
    """uvicorn's server, minus its main loop's tick: it waits for a stop (`stop()`, or SIGTERM/SIGINT
    through uvicorn's own handler) instead of looking for one ten times a second. Serve a `dated` app with
    `date_header=False`: the tick is also what refreshed uvicorn's Date header."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._stopping = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def stop(self) -> None:
        self.should_exit = True
        self._stopping.set()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._loop is not None:  # a signal handler runs between the loop's steps: wake the loop
            self._loop.call_soon_threadsafe(self._stopping.set)

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.on_tick(0)  # the default headers, once
        if not self.should_exit:
            await self._stopping.wait()


def dated(app: ASGIApp) -> ASGIApp:
    """`app` with a Date header (RFC 9110: an origin server with a clock sends one) in every answer."""

    async def with_date(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_dated(message: Message) -> None:
            if message["type"] == "http.response.start":
                date = formatdate(usegmt=True).encode()
                message = {**message, "headers": [*message.get("headers", ()), (b"date", date)]}
            await send(message)

        await app(scope, receive, send_dated if scope["type"] == "http" else send)

    return with_date


def _load_tls(config: uvicorn.Config, tls_dir: Path) -> ssl.SSLContext:
    """Load the app and the serving certificate (uvicorn builds the TLS context while loading)."""
    try:
        config.load()
    except (OSError, ssl.SSLError) as err:
        raise SettingsError(
            f"APISERVER_TLS_DIR={str(tls_dir)!r}: cannot load tls.crt and tls.key there: {err}"
        ) from None
    assert config.ssl is not None
    return config.ssl


def _listen(host: str, port: int) -> socket.socket:
    """The bound listening socket; a failure names the variable to change."""
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    except OSError as err:
        raise SettingsError(f"APISERVER_BIND_ADDRESS={host!r}: cannot listen on {host}: {err}") from None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        name, value = (
            ("APISERVER_BIND_ADDRESS", host)
            if err.errno == errno.EADDRNOTAVAIL
            else ("APISERVER_INTERNAL_PORT", port)
        )
        raise SettingsError(
            f"{name}={str(value)!r}: cannot listen on {host} port {port}: {err.strerror}"
        ) from None
    return sock


async def serve(
    settings: ApiserverSettings, kube_config: KubeConfig, *, stop: asyncio.Event | None = None
) -> None:
    """Serve until SIGTERM/SIGINT (uvicorn's own handling), or until `stop` is set when given."""
    namespace = settings.namespace or kube_config.namespace
    cert, key = settings.tls_dir / "tls.crt", settings.tls_dir / "tls.key"
    async with KubeClient(kube_config) as kube:
        agents = Informer(
            kube.list_watch(
                PODS,
                namespace=namespace,
                label_selector=f"{COMPONENT_LABEL}={AGENT_COMPONENT}",
                transform=trim_pod,
            ),
            name="agent-pods",
            transform=trim_pod,
        )
        events = EventRecorder(kube, controller=REPORTER, instance=socket.gethostname())
        registry = CollectorRegistry()
        app = create_app(
            gate=ClusterGate(kube=kube, agents=agents, namespace=namespace),
            ops=ClusterNodeOperations(
                kube=kube,
                namespace=namespace,
                drain_seconds=settings.drain_seconds,
                events=events,
                metrics=DrainMetrics(registry),
            ),
            registry=registry,
        )
        config = uvicorn.Config(
            dated(app),
            host=settings.bind,
            port=settings.port,
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
            log_config=None,
            access_log=False,
            date_header=False,
            timeout_graceful_shutdown=30,
        )
        context = _load_tls(config, settings.tls_dir)
        listening = _listen(settings.bind, settings.port)
        server = QuietServer(config)

        async def trim_after_sync() -> None:
            await agents.ready.wait()
            release_freed_memory()

        async def stop_when_asked() -> None:
            if stop is not None:
                await stop.wait()
                server.stop()

        tasks = [
            asyncio.create_task(stop_when_asked()),
            asyncio.create_task(trim_after_sync()),
            asyncio.create_task(agents.run()),
            asyncio.create_task(events.run()),
            asyncio.create_task(reload_certificates(context, cert, key, every=CERT_CHECK_SECONDS)),
        ]
        log.info("serving", port=settings.port, namespace=namespace)
        try:
            await server.serve(sockets=[listening])
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
