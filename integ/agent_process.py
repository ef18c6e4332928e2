"""`brupop agent` in a process of its own, as the agent DaemonSet's pod runs it on a node:

- as the image's user (65532) with the pod's supplementary groups, read from the DaemonSet in the cluster
  (`securityContext.supplementalGroups`: 274, the group of Bottlerocket's host socket), through
  `integ.unprivileged`;
- with the container's environment from that DaemonSet, the downward API resolved from the real pod
  (`integ.podenv`), and the local stand-ins for what the pod mounts;
- with the pod's identity: a pod-bound token for the Kubernetes API (a kubeconfig holding the cluster CA,
  and no namespace, as in-cluster configuration has none of its own) and one of audience
  `brupop-apiserver` for the brupop apiserver, and the apiserver's CA; all in a directory of files that
  user may read, root-owned mode 0644 as projected volumes are.

A restart is SIGKILL (`kill`) and a new `agent_process`; a graceful stop is SIGTERM (`terminate`). Each
process logs (JSON lines) to its own `<cluster dir>/agent-<node>-<n>.log`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import signal
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from brupop.kube.client import KubeClient
from brupop.kube.config import KubeConfig
from brupop.models.constants import NAMESPACE
from integ.cluster import ClusterState, free_port
from integ.kubetools import eventually, pod_bound_token
from integ.operator import KINDS, RunningApiserver, agent_pod, agent_token, stop_process
from integ.podenv import container_env
from integ.unprivileged import command, needs_root, remove, shared_directory

IMAGE_USER = 65532
"""`USER 65532:65532` in the Containerfile."""
REPO = Path(__file__).resolve().parent.parent
Obj = dict[str, Any]
_started = itertools.count()


def _readable(path: Path, content: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o755)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    path.chmod(0o644)
    return path


def _kubeconfig(cluster: ClusterState, path: Path, token_file: Path) -> Path:
    base = KubeConfig.from_kubeconfig(Path(cluster.kubeconfig))
    assert base.ca_file is not None
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "pod",
        "clusters": [
            {
                "name": "local",
                "cluster": {
                    "server": base.server,
                    "certificate-authority-data": base64.b64encode(base.ca_file.read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": "pod", "user": {"tokenFile": str(token_file)}}],
        "contexts": [{"name": "pod", "context": {"cluster": "local", "user": "pod"}}],
    }
    return _readable(path, json.dumps(config))


@dataclass
class AgentProcess:
    node: str
    process: asyncio.subprocess.Process
    log: Path
    health_port: int
    groups: Sequence[int]

    def entries(self) -> list[Obj]:
        """The JSON log lines so far."""
        entries = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    entries.append(entry)
        return entries

    def logged(self, event: str) -> list[Obj]:
        return [e for e in self.entries() if e.get("event") == event]

    def alive(self) -> None:
        """Raise if the process has exited (with the end of its log)."""
        if self.process.returncode is not None:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"the agent for {self.node} exited with {self.process.returncode}:\n{tail}")

    async def readiness(self) -> tuple[int, str] | None:
        """`GET /readyz`: status and text, or None while nothing listens."""
        self.alive()
        try:
            async with httpx.AsyncClient() as http:
                answer = await http.get(f"http://127.0.0.1:{self.health_port}/readyz")
        except httpx.TransportError:
            return None
        return answer.status_code, answer.text

    async def started(self) -> None:
        """Wait until it serves its readiness endpoint (its watches may still be syncing)."""

        async def serving() -> bool:
            return await self.readiness() is not None

        await eventually(serving, within=60, what=f"the agent for {self.node} to start")

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()

    def terminate(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)


async def _daemonset_pod_spec(kube: KubeClient) -> Obj:
    daemonset = await kube.get(KINDS["DaemonSet"], "brupop-agent", namespace=NAMESPACE)
    spec: Obj = daemonset["spec"]["template"]["spec"]
    return spec


@contextlib.asynccontextmanager
async def agent_process(
    cluster: ClusterState,
    kube: KubeClient,
    server: RunningApiserver,
    *,
    node: str,
    socket: Path,
    boot_id_file: Path,
    groups: Sequence[int] | None = None,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[AgentProcess]:
    """`brupop agent` for `node` as its DaemonSet pod would run it (see the module docstring); `groups`
    replaces the DaemonSet's supplementary groups and `env` adds to or overrides its environment. Stopped
    with SIGTERM (then SIGKILL) on exit, unless it already ended."""
    refusal = needs_root("running the agent as the image's user")
    if refusal is not None:
        raise RuntimeError(refusal)
    pod = await agent_pod(kube, node)
    pod_spec = await _daemonset_pod_spec(kube)
    if groups is None:
        groups = list((pod_spec.get("securityContext") or {}).get("supplementalGroups") or [])
    files = shared_directory(f"brupop-agent-{node}-")
    tokens = files / "tokens"
    kube_token = _readable(tokens / "kubernetes", await pod_bound_token(kube, pod, audiences=[]))
    variables = {
        **container_env(pod),
        "PATH": os.environ.get("PATH", ""),
        "KUBECONFIG": str(_kubeconfig(cluster, files / "kubeconfig", kube_token)),
        "BRUPOP_APISERVER_URL": server.url,
        "BRUPOP_CA_FILE": str(_readable(files / "ca" / "ca.crt", server.ca_pem)),
        "BRUPOP_TOKEN_FILE": str(_readable(tokens / "brupop-apiserver", await agent_token(kube, pod))),
        "BRUPOP_HOST_SOCKET": str(socket),
        "BRUPOP_BOOT_ID_FILE": str(boot_id_file),
        "AGENT_INTERNAL_PORT": str(free_port()),
        "LOGGING_FORMATTER": "json",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    log = Path(cluster.directory) / f"agent-{node}-{next(_started)}.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *command(uid=IMAGE_USER, gid=IMAGE_USER, groups=groups, program=["-m", "brupop", "agent"]),
            env=variables,
            cwd=REPO,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    agent = AgentProcess(
        node=node, process=process, log=log, health_port=int(variables["AGENT_INTERNAL_PORT"]), groups=groups
    )
    try:
        yield agent
    finally:
        await stop_process(process, grace=10)
        remove(files)
