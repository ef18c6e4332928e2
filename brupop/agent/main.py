"""Runs one node's agent until SIGTERM/SIGINT, with its readiness endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import structlog

from brupop.agent.agent import Agent, AgentOptions
from brupop.agent.apiclient import ApiserverClient
from brupop.agent.health import serve_readiness
from brupop.agent.host import HostClient
from brupop.agent.settings import AgentSettings
from brupop.kube.client import KubeClient
from brupop.kube.config import KubeConfig

log = structlog.get_logger("brupop.agent")


async def run(settings: AgentSettings, kube_config: KubeConfig) -> None:
    namespace = settings.namespace or kube_config.namespace
    ca_file = settings.ca_file if settings.ca_file.exists() else None
    host = HostClient(settings.host_socket, boot_id_file=settings.boot_id_file)
    api = ApiserverClient(
        base_url=settings.apiserver_url_in(namespace),
        node_name=settings.node_name,
        token_file=settings.token_file,
        ca_file=ca_file,
        retry_for=settings.apiserver_retry,
    )
    options = AgentOptions(
        exclude_from_lb_wait=settings.exclude_from_lb_wait,
        update_check_interval=settings.update_check_interval,
    )
    async with KubeClient(kube_config) as kube:
        agent = Agent(
            node_name=settings.node_name, namespace=namespace, kube=kube, host=host, api=api, options=options
        )

        def not_ready() -> str | None:
            return None if agent.ready else agent.problem or "not watching its shadow and Node yet"

        readiness = await serve_readiness(port=settings.health_port, not_ready=not_ready)
        log.info("agent started", node=settings.node_name, namespace=namespace, apiserver=api.base_url)
        task = asyncio.create_task(agent.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            readiness.close()
            await host.close()
            await api.close()
