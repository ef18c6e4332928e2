"""The programs under test in an end-to-end run, each a `brupop` process of its own as its pod runs it:
one agent per node (the DaemonSet pod's environment and pod-bound tokens), the controller Deployment (two
leader-elected replicas, each its own pod name and service-account token) and the apiserver Deployment
(replicas behind a Service stand-in). Every Kubernetes client among them reaches the kube-apiserver through
its own listener of the fault proxy. A crash is SIGKILL and a new process; a graceful stop is SIGTERM.

`Pods` keeps every process of the run and turns any exit nobody asked for into a broken invariant (a
controller that loses its Lease campaigns again: it never exits for that). An agent lives as on a node:
its host's shutdown stops it (SIGTERM, then SIGKILL) and a new one starts once the host is back."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import sys
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from pathlib import Path

from brupop.controller.main import LEASE_NAME
from brupop.deploy import CONTROLLER_SA
from brupop.kube.client import LEASES, ApiError, KubeClient
from brupop.models.constants import NAMESPACE
from integ.clocks import Clocks
from integ.cluster import ClusterState, free_port
from integ.faultproxy import FaultProxy
from integ.hostsim.fleet import Fleet
from integ.hostsim.host import SimulatedHost
from integ.kubetools import pod_bound_token, until
from integ.monitors import InvariantBrokenError, Timeline
from integ.operator import (
    PROGRAM_LOGGING,
    ApiserverProcess,
    Obj,
    agent_pod,
    agent_token,
    answering,
    apiserver_pod,
    in_cluster_env,
    service_account_token,
    service_account_volume,
)
from integ.podenv import container_env
from integ.processes import IMAGE_USER, BrupopProcess, Exit, RunAs, owned_by
from integ.service import Service

GRACE = 30.0
SHUTDOWN_GRACE = 5.0
"""Seconds a host's shutdown waits for the agent after SIGTERM before it kills it."""
"""Seconds a program gets between SIGTERM and SIGKILL: the pods' terminationGracePeriodSeconds (default)."""
PROGRAM_USER = IMAGE_USER
"""The user the controller and apiserver replicas run as: the image's."""


def pod_user(pod: Obj) -> RunAs:
    """The user a pod's container runs as: its pod's securityContext (runAsUser, runAsGroup,
    supplementalGroups; for the agent DaemonSet the host socket's group 274), else the image's."""
    context = pod["spec"].get("securityContext") or {}
    return RunAs(
        int(context.get("runAsUser", IMAGE_USER.uid)),
        int(context.get("runAsGroup", IMAGE_USER.gid)),
        tuple(int(g) for g in context.get("supplementalGroups") or ()),
    )


@dataclass
class World:
    """What every actor of a run shares."""

    cluster: ClusterState
    kube: KubeClient
    proxy: FaultProxy
    timeline: Timeline
    pods: Pods
    directory: Path
    """The run's files (a directory every program's user may enter): `pods/<pod name>/`, `hosts/`."""
    python: str = sys.executable
    clocks: Clocks = field(default_factory=Clocks)
    """Each program's wall clock against the machine's."""

    def pod_dir(self, name: str) -> Path:
        return self.directory / "pods" / name

    def container(
        self, pod: str, program: str, env: Mapping[str, str], *, run_as: RunAs, service_account: Path
    ) -> BrupopProcess:
        """`program` as `pod`'s container runs it (its service account in-cluster, a read-only root), one
        of the run's processes."""
        return self.pods.add(
            BrupopProcess(
                pod=pod,
                program=program,
                env=env,
                directory=self.pod_dir(pod),
                run_as=run_as,
                python=self.python,
                service_account=service_account,
                read_only_root=True,
            )
        )


class Pods:
    """Every brupop process of a run; `watch` raises on the first exit that nobody asked for."""

    def __init__(self, timeline: Timeline) -> None:
        self._timeline = timeline
        self.all: dict[str, BrupopProcess] = {}
        self._exits: asyncio.Queue[tuple[BrupopProcess, Exit]] = asyncio.Queue()

    def add(self, process: BrupopProcess) -> BrupopProcess:
        self.all[process.pod] = process
        process.on_exit = lambda exit: self._exits.put_nowait((process, exit))
        return process

    async def watch(self) -> None:
        while True:
            process, exit = await self._exits.get()
            self._timeline.note(exit.describe())
            if exit.asked:
                continue
            raise InvariantBrokenError(
                f"{exit.describe()}; its last log lines:\n{process.tail()}", kind="exit"
            )

    async def ps(self) -> str:
        """`ps -o pid,ruser,args` of the running processes: each names its pod and shows its user (the
        real one), once each has become that user (one started through `integ.unprivileged` starts as
        root and drops to its user when its interpreter is up)."""
        with contextlib.suppress(TimeoutError):
            await until(
                lambda: all(p.became_its_user() for p in self.all.values() if p.running),
                within=20,
                what="every process to run as its user",
            )
        pids = [str(p.pid) for p in self.all.values() if p.running]
        if not pids:
            return ""
        ps = await asyncio.create_subprocess_exec(
            "ps", "-ww", "-o", "pid,ruser,args", "-p", ",".join(pids), stdout=asyncio.subprocess.PIPE
        )
        out, _ = await ps.communicate()
        return out.decode(errors="replace").rstrip()

    async def stop(self, *, grace: float = GRACE) -> list[str]:
        """SIGTERM every process; the ones that outlived their grace period (then SIGKILLed)."""
        running = [p for p in self.all.values() if p.running]
        stopped = await asyncio.gather(*(p.terminate(grace=grace) for p in running))
        return [
            f"{p.pod} did not stop within {grace:g}s of SIGTERM"
            for p, ok in zip(running, stopped, strict=True)
            if not ok
        ]


class Agents:
    """One `brupop agent` per node, as the DaemonSet's pod there runs it; `kill` then `start` is a
    container restart (the pod and its tokens stay)."""

    def __init__(
        self, world: World, *, apiserver_port: int, hosts: Fleet, without_boot_id: Set[str] = frozenset()
    ) -> None:
        self._world = world
        self._apiserver_port = apiserver_port
        self._hosts = hosts
        self._without_boot_id = without_boot_id
        """Nodes whose agent is given a boot-ID file that does not exist (as when /proc is not readable)."""
        self.processes: dict[str, BrupopProcess] = {}
        self._starting: dict[str, asyncio.Lock] = {}
        self._rebooting: set[asyncio.Task[None]] = set()

    def __getitem__(self, node: str) -> BrupopProcess:
        return self.processes[node]

    async def start(self, node: str) -> BrupopProcess:
        """Start the node's agent (a no-op while it runs: a scenario and the host's boot may both ask)."""
        async with self._starting.setdefault(node, asyncio.Lock()):
            if node not in self.processes:
                self.processes[node] = await self._create(node)
            process = self.processes[node]
            if not process.running:
                await process.start()
                self._world.timeline.note(f"{process.pod} started (pid {process.pid}, {process.user})")
            return process

    def follow_reboots(self, host: SimulatedHost) -> None:
        """As on a node: the host's shutdown stops the agent's container (SIGTERM as the host goes down,
        SIGKILL after `SHUTDOWN_GRACE`), and the kubelet starts a new one once the host is back, which knows
        only what the cluster and the host tell it."""
        go_down, come_back = host.go_down, host.come_back
        back = asyncio.Event()

        def down() -> None:
            go_down()
            back.clear()
            process = self.processes.get(host.name)
            pid = process.terminate_now() if process is not None else None
            task = asyncio.get_running_loop().create_task(self._rebooted(host.name, pid, back))
            self._rebooting.add(task)
            task.add_done_callback(self._rebooted_done)

        def up() -> None:
            come_back()
            back.set()

        host.go_down = down  # type: ignore[method-assign]
        host.come_back = up  # type: ignore[method-assign]

    def _rebooted_done(self, task: asyncio.Task[None]) -> None:
        self._rebooting.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            self._world.timeline.note(f"restarting an agent after its host's boot failed: {error!r}")

    async def close(self) -> None:
        """Stop following reboots (the run is over)."""
        for task in list(self._rebooting):
            task.cancel()
        await asyncio.gather(*self._rebooting, return_exceptions=True)

    async def _rebooted(self, node: str, pid: int | None, back: asyncio.Event) -> None:
        process = self.processes[node]
        if pid is not None:
            self._world.timeline.note(f"SIGTERM {process.pod}: its host shuts down")
            with contextlib.suppress(TimeoutError):
                await until(lambda: process.pid != pid or not process.running, within=SHUTDOWN_GRACE)
            if process.running and process.pid == pid:
                await process.kill()
                self._world.timeline.note(f"SIGKILL {process.pod}: its host went off")
        await back.wait()
        await self.start(node)

    async def _create(self, node: str) -> BrupopProcess:
        world = self._world
        pod = await agent_pod(world.kube, node)
        name = str(pod["metadata"]["name"])
        user = pod_user(pod)
        directory = world.pod_dir(name)
        directory.mkdir(parents=True, exist_ok=True)
        # The projected volumes of the DaemonSet's pod: the in-cluster token, the apiserver-audience token.
        volume = service_account_volume(
            world.cluster,
            directory / "serviceaccount",
            await pod_bound_token(world.kube, pod, audiences=[]),
            user,
        )
        tokens = directory / "tokens"
        tokens.mkdir(exist_ok=True)
        token = tokens / "bottlerocket-agent-service-account-token"
        token.write_text(await agent_token(world.kube, pod))
        owned_by(token, user)
        ca = directory / "ca.crt"
        shutil.copyfile(Path(world.cluster.directory) / "ca.crt", ca)
        owned_by(ca, user, mode=0o644)
        env = {
            # The container's environment as the chart has it, the downward API resolved from the pod:
            **container_env(pod),
            "APISERVER_SERVICE_PORT": str(self._apiserver_port),
            # What the pod's mounts, its host and the cluster's DNS give it, at their local places:
            **in_cluster_env(await world.proxy.listen(name)),
            "BRUPOP_APISERVER_URL": f"https://127.0.0.1:{self._apiserver_port}",
            "BRUPOP_TOKEN_FILE": str(token),
            "BRUPOP_CA_FILE": str(ca),
            "BRUPOP_HOST_SOCKET": str(self._hosts.socket(node)),
            "BRUPOP_BOOT_ID_FILE": str(
                directory / "no-boot-id" if node in self._without_boot_id else self._hosts.boot_id_file(node)
            ),
            "AGENT_INTERNAL_PORT": str(free_port()),  # every node's pod has the port; here they share a host
            **world.clocks.agent(node),
        }
        return world.container(name, "agent", env, run_as=user, service_account=volume)

    async def kill(self, node: str) -> None:
        await self.processes[node].kill()
        self._world.timeline.note(f"SIGKILL {self.processes[node].pod} (agent of {node})")

    async def restart(self, node: str) -> None:
        """A crash and a container restart."""
        await self.kill(node)
        await self.start(node)


class Controllers:
    """The controller Deployment: replicas leader-elected on the Lease, each with its own pod name (its
    Lease identity) and service-account token. A replaced replica is a new pod with a new name."""

    def __init__(self, world: World, env: Mapping[str, str]) -> None:
        self._world = world
        self._env = dict(env)
        self._names = itertools.count()
        self.live: list[BrupopProcess] = []

    async def start(self) -> BrupopProcess:
        world = self._world
        start = next(self._names)
        name = f"brupop-controller-{start}"
        directory = world.pod_dir(name)
        directory.mkdir(parents=True, exist_ok=True)
        token = await service_account_token(world.kube, CONTROLLER_SA)
        volume = service_account_volume(world.cluster, directory / "serviceaccount", token, PROGRAM_USER)
        env = {
            **self._env,
            "POD_NAME": name,
            "CONTROLLER_INTERNAL_PORT": str(free_port()),
            "CONTROLLER_BIND_ADDRESS": "127.0.0.1",
            "BRUPOP_NAMESPACE": NAMESPACE,
            **in_cluster_env(await world.proxy.listen(name)),
            **PROGRAM_LOGGING,
            **world.clocks.controller(start),
        }
        process = world.container(name, "controller", env, run_as=PROGRAM_USER, service_account=volume)
        await process.start()
        self.live.append(process)
        world.timeline.note(f"{name} started (pid {process.pid}, {process.user})")
        return process

    async def holder(self) -> str | None:
        """The Lease's holder as the cluster has it now."""
        try:
            lease = await self._world.kube.get(LEASES, LEASE_NAME, namespace=NAMESPACE)
        except ApiError as err:
            if err.not_found:
                return None
            raise
        holder = (lease.get("spec") or {}).get("holderIdentity")
        return str(holder) if holder else None

    async def leader(self) -> BrupopProcess | None:
        holder = await self.holder()
        return next((p for p in self.live if p.pod == holder and p.running), None)

    async def kill(self, process: BrupopProcess) -> None:
        """SIGKILL one replica; its pod is replaced by a new one (`start`) when the scenario says so."""
        await process.kill()
        self.live.remove(process)
        self._world.timeline.note(f"SIGKILL {process.pod}")

    async def stop(self, process: BrupopProcess) -> bool:
        """SIGTERM one replica (a pod deleted); True when it stopped within its grace period."""
        stopped = await process.terminate(grace=GRACE)
        self.live.remove(process)
        self._world.timeline.note(f"SIGTERM {process.pod}" + ("" if stopped else " (then SIGKILL)"))
        return stopped


ENDPOINT_LAG = 2.0
"""Seconds a killed apiserver replica's endpoint stays behind the Service: the kubelet sees the container
die (its pod lifecycle relist runs every second), marks the pod not ready, and the EndpointSlice controller
and kube-proxy (whose iptables sync waits at least a second) follow; connections meanwhile are refused."""


class Replicas:
    """The apiserver Deployment: replica processes behind one Service; a killed replica is replaced, as its
    ReplicaSet would."""

    def __init__(self, world: World, *, drain_seconds: float) -> None:
        self._world = world
        self._drain_seconds = drain_seconds
        self._names = itertools.count()
        self.service = Service([])
        self.live: list[ApiserverProcess] = []

    async def start(self) -> ApiserverProcess:
        world = self._world
        start = next(self._names)
        name = f"brupop-apiserver-{start}"
        replica = await apiserver_pod(
            world.cluster,
            world.kube,
            name=name,
            drain_seconds=self._drain_seconds,
            python=world.python,
            server=await world.proxy.listen(name),
            run_as=PROGRAM_USER,
            pod_dir=world.pod_dir(name),
            env=world.clocks.apiserver(start),
            in_cluster=True,
        )
        world.pods.add(replica.process)
        await answering(replica)
        self.live.append(replica)
        self.service.backends.append(replica.port)
        world.timeline.note(f"{name} started (pid {replica.process.pid}, {replica.process.user})")
        return replica

    async def kill(self, replica: ApiserverProcess) -> None:
        await replica.process.kill()
        self._world.timeline.note(f"SIGKILL {replica.name}")
        self.live.remove(replica)
        self.service.retire(replica.port, after=ENDPOINT_LAG)
        await self.start()
