"""The programs under test in an end-to-end run, each startable, stoppable and killable as a scenario needs:
one agent per node (in this process, with its pod's identity), the controller (in this process, as its
service account; a restart hands the Lease over) and the apiserver Deployment (replica processes behind a
Service stand-in; a killed replica is replaced)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime

from brupop.agent.agent import Agent
from brupop.controller.main import run as run_controller
from brupop.controller.settings import ControllerSettings
from brupop.deploy import CONTROLLER_SA
from brupop.kube.client import KubeClient
from brupop.models.constants import NAMESPACE
from integ.cluster import ClusterState
from integ.hostsim.fleet import Fleet
from integ.operator import (
    ApiserverProcess,
    RunningApiserver,
    apiserver_process,
    config_as,
    node_agent,
    service_account_token,
)
from integ.service import Service


class Agents:
    """One agent per node, each in this process with its own pod-bound tokens; `restart` is a container
    restart (the pod stays, the program starts from nothing)."""

    def __init__(
        self, cluster: ClusterState, kube: KubeClient, server: RunningApiserver, hosts: Fleet
    ) -> None:
        self._cluster = cluster
        self._kube = kube
        self._server = server
        self._hosts = hosts
        self._running: dict[str, tuple[Agent, contextlib.AsyncExitStack]] = {}

    def __getitem__(self, node: str) -> Agent:
        return self._running[node][0]

    async def start(self, node: str) -> None:
        stack = contextlib.AsyncExitStack()
        agent = await stack.enter_async_context(
            node_agent(self._cluster, self._kube, self._server, node=node, socket=self._hosts.socket(node))
        )
        self._running[node] = (agent, stack)

    async def restart(self, node: str) -> None:
        _, stack = self._running.pop(node)
        await stack.aclose()
        await self.start(node)

    async def stop(self) -> None:
        stacks = [stack for _, stack in self._running.values()]
        self._running.clear()
        await asyncio.gather(*(stack.aclose() for stack in stacks))


class Controllers:
    """The controller as its own service account; `restart` stops it and starts a successor (the stopped
    one releases the Lease, so the successor leads at once)."""

    def __init__(self, cluster: ClusterState, kube: KubeClient, env: Mapping[str, str]) -> None:
        self._cluster = cluster
        self._kube = kube
        self._env = env
        self._stops: list[asyncio.Event] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._retired: set[asyncio.Task[None]] = set()

    @property
    def running(self) -> list[asyncio.Task[None]]:
        """The controller that should be running now (none while one is being replaced)."""
        return [] if self._tasks[-1] in self._retired else self._tasks[-1:]

    async def start(self) -> None:
        settings = ControllerSettings.from_env(self._env, now=datetime.now(UTC))
        token = await service_account_token(self._kube, CONTROLLER_SA)
        stop = asyncio.Event()
        self._stops.append(stop)
        task = run_controller(
            settings,
            config_as(self._cluster, token),
            namespace=NAMESPACE,
            identity=f"controller-{len(self._stops)}",
            stop=stop,
            metrics_port=0,
        )
        self._tasks.append(asyncio.create_task(task))

    async def restart(self) -> None:
        retiring = self._tasks[-1]
        self._retired.add(retiring)
        self._stops[-1].set()
        await retiring
        await self.start()

    async def stop(self) -> None:
        for stop in self._stops:
            stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class Replicas:
    """The apiserver Deployment: replicas in processes of their own behind one Service; a killed replica
    is replaced, as its ReplicaSet would."""

    def __init__(
        self,
        cluster: ClusterState,
        kube: KubeClient,
        stack: contextlib.AsyncExitStack,
        *,
        drain_seconds: float,
    ) -> None:
        self._cluster = cluster
        self._kube = kube
        self._stack = stack
        self._drain_seconds = drain_seconds
        self.service = Service([])
        self.live: list[ApiserverProcess] = []
        self._started = 0

    async def start(self) -> None:
        replica = await self._stack.enter_async_context(
            apiserver_process(
                self._cluster,
                self._kube,
                name=f"brupop-apiserver-{self._started}",
                drain_seconds=self._drain_seconds,
            )
        )
        self._started += 1
        self.live.append(replica)
        self.service.backends.append(replica.port)

    async def kill(self, replica: ApiserverProcess) -> None:
        replica.kill()
        await replica.process.wait()
        self.live.remove(replica)
        self.service.backends.remove(replica.port)
        await self.start()
