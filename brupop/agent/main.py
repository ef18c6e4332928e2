"""Runs one node's agent until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal

from brupop.agent.agent import Agent, AgentOptions
from brupop.agent.apiclient import ApiserverClient
from brupop.agent.host import HostClient
from brupop.agent.settings import AgentSettings
from brupop.kube.client import KubeClient
from brupop.kube.config import KubeConfig


async def run(settings: AgentSettings, kube_config: KubeConfig) -> None:
    namespace = settings.namespace or kube_config.namespace
    ca_file = settings.ca_file if settings.ca_file.exists() else None
    host = HostClient(settings.host_socket)
    api = ApiserverClient(
        base_url=settings.apiserver_url,
        node_name=settings.node_name,
        token_file=settings.token_file,
        ca_file=ca_file,
    )
    options = AgentOptions(
        exclude_from_lb_wait=settings.exclude_from_lb_wait,
        update_check_interval=settings.update_check_interval,
    )
    async with KubeClient(kube_config) as kube:
        agent = Agent(
            node_name=settings.node_name, namespace=namespace, kube=kube, host=host, api=api, options=options
        )
        task = asyncio.create_task(agent.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            await host.close()
            await api.close()
