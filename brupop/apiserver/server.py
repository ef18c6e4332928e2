"""Runs the apiserver: HTTPS with the mounted certificate, an informer over the agent pods, and a
certificate watcher. When cert-manager renews the certificate, the new one is loaded into the live TLS
context: new connections get it and requests in flight are not interrupted (the Rust brupop restarted).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
from pathlib import Path

import structlog
import uvicorn

from brupop.apiserver.app import create_app
from brupop.apiserver.cluster import ClusterGate, ClusterNodeOperations, trim_pod
from brupop.apiserver.settings import ApiserverSettings
from brupop.kube.client import PODS, KubeClient
from brupop.kube.config import KubeConfig
from brupop.kube.informer import Informer
from brupop.kube.memory import release_freed_memory
from brupop.models.constants import AGENT_COMPONENT, COMPONENT_LABEL

log = structlog.get_logger("brupop.apiserver")
CERT_CHECK_SECONDS = 10.0


def _fingerprint(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


async def reload_certificates(context: ssl.SSLContext, cert: Path, key: Path, *, every: float) -> None:
    """Load a changed certificate and key into `context`; a half-written pair is retried next time."""
    current = _fingerprint(cert, key)
    while True:
        await asyncio.sleep(every)
        try:
            latest = _fingerprint(cert, key)
            if latest != current:
                context.load_cert_chain(str(cert), str(key))
                current = latest
                log.info("loaded a renewed serving certificate", cert=str(cert))
        except (OSError, ssl.SSLError) as err:
            log.warning("cannot load the serving certificate yet", error=str(err))


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
        app = create_app(
            gate=ClusterGate(kube=kube, agents=agents, namespace=namespace),
            ops=ClusterNodeOperations(kube=kube, namespace=namespace, drain_seconds=settings.drain_seconds),
        )
        config = uvicorn.Config(
            app,
            host=settings.bind,
            port=settings.port,
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=30,
        )
        config.load()
        assert config.ssl is not None
        server = uvicorn.Server(config)

        async def trim_after_sync() -> None:
            await agents.ready.wait()
            release_freed_memory()

        async def stop_when_asked() -> None:
            if stop is not None:
                await stop.wait()
                server.should_exit = True

        tasks = [
            asyncio.create_task(stop_when_asked()),
            asyncio.create_task(trim_after_sync()),
            asyncio.create_task(agents.run()),
            asyncio.create_task(reload_certificates(config.ssl, cert, key, every=CERT_CHECK_SECONDS)),
        ]
        log.info("serving", port=settings.port, namespace=namespace)
        try:
            await server.serve()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
