"""Benchmark: one agent idle on a node with 110 pods. The agent is `python -m brupop agent` in a process
of its own (in the runtime-only virtualenv, as in the image), configured by its environment as the
DaemonSet's pod is, reaching the local kube-apiserver with its pod's pod-bound token; the brupop apiserver
and the simulated host (which offers no newer version, so the agent stays Idle) run in this process. The
update check keeps its default interval (120 s), so it is part of the idle cost.

Prints the agent's resident memory (/proc/PID/status VmRSS) right after start-up and after N minutes idle
(target <= 35 MiB; the DaemonSet's limit is 50Mi), and its CPU time per minute over the idle period
(/proc/PID/stat utime + stime, counted from the moment it has reported Idle; target <= 30 ms/min), with a
line per minute. Also counts what woke the agent up (changes of its Node and of its shadow) and the
requests it made to its host while idle. The agent's log goes to <cluster dir>/agent.log, which is removed
with the cluster; a summary of it is printed.

    .venv/bin/python benchmarks/agent_idle.py [--minutes 10]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from benchmarks.measure import cpu_seconds, rss_mib, runtime_python
from benchmarks.pods import agent_env
from brupop.kube.client import NODES, PODS, SHADOWS, ApiError, KubeClient
from brupop.kube.informer import Informer
from brupop.logs import configure
from brupop.models.constants import NAMESPACE, shadow_name
from integ.build import build
from integ.cluster import ClusterState, LocalCluster, down
from integ.fleet import prepare
from integ.hostsim.fleet import Fleet
from integ.hostsim.host import Response, SimulatedHost
from integ.kubetools import BRUPOP_LABELS, admin, create_nodes, eventually, running
from integ.operator import (
    agent_pod,
    brupop_apiserver,
    install_agents,
    install_rbac,
    stop_process,
)

NODE = "agent-idle-0"
VERSION = "1.0.0"
VARIANT, ARCH = "aws-k8s-1.29", "x86_64"
PODS_ON_NODE = 110  # the kubelet's default maximum; the agent's own pod is one of them
WORKLOAD_NAMESPACE = "default"
RSS_TARGET_MIB = 35.0
CPU_TARGET_MS_PER_MIN = 30.0


async def fill_node(kube: KubeClient, node: str) -> None:
    """Trivial workload pods bound to `node` until it has PODS_ON_NODE, all Running (kwok's doing)."""
    slots = asyncio.Semaphore(20)

    async def pod(i: int) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"workload-{i:03d}", "namespace": WORKLOAD_NAMESPACE},
            "spec": {
                "nodeName": node,
                "automountServiceAccountToken": False,
                "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.9"}],
            },
        }
        async with slots:
            await kube.create(PODS, body, namespace=WORKLOAD_NAMESPACE)

    await asyncio.gather(*(pod(i) for i in range(PODS_ON_NODE - 1)))

    async def all_running() -> bool:
        items, _ = await kube.list(PODS, field_selector=f"spec.nodeName={node}", page_size=500)
        return len(running(items)) == PODS_ON_NODE

    await eventually(all_running, within=120, what=f"{PODS_ON_NODE} pods Running on {node}")


async def reported_idle(kube: KubeClient, node: str) -> bool:
    try:
        shadow = await kube.get(SHADOWS, shadow_name(node), namespace=NAMESPACE)
    except ApiError as err:
        if err.not_found:
            return False
        raise
    status = shadow.get("status") or {}
    return (
        status.get("current_state") == "Idle"
        and status.get("current_version") == VERSION
        and status.get("target_version") == VERSION
    )


def log_summary(log: Path) -> str:
    """How many lines the agent logged, by level, and the distinct events."""
    levels: collections.Counter[str] = collections.Counter()
    events: collections.Counter[str] = collections.Counter()
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            levels["unparsed"] += 1
            continue
        levels[str(entry.get("level"))] += 1
        events[str(entry.get("event"))] += 1
    by_level = ", ".join(f"{n} {level}" for level, n in levels.most_common()) or "empty"
    top = "; ".join(f"{n}x {event!r}" for event, n in events.most_common(5))
    return f"agent log: {by_level}" + (f" ({top})" if top else "")


def count_requests(host: SimulatedHost) -> collections.Counter[str]:
    """Count the requests the simulated host answers, by method and path."""
    counts: collections.Counter[str] = collections.Counter()
    handle = host.handle

    def counted(method: str, target: str) -> Response:
        counts[f"{method} {target.partition('?')[0]}"] += 1
        return handle(method, target)

    host.handle = counted  # type: ignore[method-assign]
    return counts


@contextlib.asynccontextmanager
async def counting_changes(kube: KubeClient, node: str) -> AsyncIterator[collections.Counter[str]]:
    """Informers like the agent's own (same selectors): how often each would have woken the agent."""
    changes: collections.Counter[str] = collections.Counter()

    def counter(what: str) -> Informer:
        resource, namespace, selector = (
            (NODES, None, f"metadata.name={node}")
            if what == "Node"
            else (SHADOWS, NAMESPACE, f"metadata.name={shadow_name(node)}")
        )
        return Informer(
            kube.list_watch(resource, namespace=namespace, field_selector=selector),
            name=f"count/{what}",
            on_change=lambda: changes.update([what]),
        )

    informers = [counter("Node"), counter("shadow")]
    tasks = [asyncio.create_task(i.run()) for i in informers]
    try:
        for informer in informers:
            await informer.ready.wait()
        yield changes
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def main(minutes: int) -> None:
    state = LocalCluster(bins=build()).up()
    directory = Path(state.directory)
    try:
        async with admin(state) as kube:
            # This process's own log (the in-process brupop apiserver's) goes to a file too.
            configure({"LOGGING_FORMATTER": "json"}, stream=(directory / "brupop.log").open("w"))
            await prepare(kube)
            await install_rbac(kube)
            await install_agents(kube)
            await create_nodes(kube, [NODE], labels=BRUPOP_LABELS)
            pod = await agent_pod(kube, NODE)
            await fill_node(kube, NODE)
            print(f"{PODS_ON_NODE} pods Running on {NODE}", file=sys.stderr)
            fleet = Fleet(directory / "hosts")
            fleet.repository.offer(VERSION, variant=VARIANT, arch=ARCH)  # the newest is the one it runs
            host = await fleet.add(NODE, version=VERSION, variant=VARIANT, arch=ARCH)
            requests = count_requests(host)
            try:
                async with brupop_apiserver(state, kube) as server:
                    await measure(state, kube, pod, server.url, server.ca_file, fleet, requests, minutes)
            finally:
                await fleet.stop()
    finally:
        down()


async def measure(
    state: ClusterState,
    kube: KubeClient,
    pod: dict[str, Any],
    apiserver_url: str,
    ca_file: Path,
    hosts: Fleet,
    host_requests: collections.Counter[str],
    minutes: int,
) -> None:
    directory = Path(state.directory)
    env = {
        "PATH": os.environ.get("PATH", ""),
        **await agent_env(state, kube, directory, pod, hosts, apiserver_url, ca_file),
        "BRUPOP_NAMESPACE": NAMESPACE,
        # As the DaemonSet's container has them (manifest and image):
        "LOGGING_FORMATTER": "json",
        "LOGGING_ANSI_ENABLED": "false",
        "TRACING_FILTER_DIRECTIVE": "info",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    log = directory / "agent.log"
    with log.open("wb") as out:
        agent = await asyncio.create_subprocess_exec(
            runtime_python(),
            "-m",
            "brupop",
            "agent",
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )

    def alive() -> None:
        if agent.returncode is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"the agent exited with {agent.returncode}:\n{tail}")

    async def idle() -> bool:
        alive()
        return await reported_idle(kube, NODE)

    try:
        async with counting_changes(kube, NODE) as changes:
            launched = time.monotonic()
            await eventually(idle, within=120, what="the agent to report Idle")
            started, cpu_start = time.monotonic(), cpu_seconds(agent.pid)
            woken, asked = collections.Counter(changes), collections.Counter(host_requests)
            print(
                f"agent pid {agent.pid} reported Idle {started - launched:.1f} s after launch: "
                f"RSS {rss_mib(agent.pid):.1f} MiB, start-up CPU {cpu_start * 1000:.0f} ms",
                flush=True,
            )
            for minute in range(1, minutes + 1):
                await asyncio.sleep(max(started + 60 * minute - time.monotonic(), 0))
                alive()
                used_ms = (cpu_seconds(agent.pid) - cpu_start) * 1000
                print(
                    f"{minute:3d} min idle: RSS {rss_mib(agent.pid):5.1f} MiB, CPU {used_ms:5.0f} ms so far",
                    flush=True,
                )
            rss, peak = rss_mib(agent.pid), rss_mib(agent.pid, field="VmHWM")
            anon, files = rss_mib(agent.pid, field="RssAnon"), rss_mib(agent.pid, field="RssFile")
            per_minute = (cpu_seconds(agent.pid) - cpu_start) * 1000 / minutes
            woken, asked = changes - woken, host_requests - asked
            still_idle = await reported_idle(kube, NODE)
    finally:
        await stop_process(agent, grace=10)
    print(
        f"changes that woke the agent while idle: {woken['Node']} of its Node, {woken['shadow']} of its "
        f"shadow; still Idle at the end: {'yes' if still_idle else 'NO'}"
    )
    print(
        f"host API requests while idle: {asked.total()}"
        + (f" ({', '.join(f'{n} {what}' for what, n in asked.most_common())})" if asked else "")
    )
    print(log_summary(log))
    print(
        f"agent idle {minutes} min on a node with {PODS_ON_NODE} pods: "
        f"RSS {rss:.1f} MiB (anonymous {anon:.1f} + files {files:.1f}; peak {peak:.1f}; "
        f"target <= {RSS_TARGET_MIB:.0f} MiB, limit 50Mi) "
        f"{'OK' if rss <= RSS_TARGET_MIB else 'OVER'}, "
        f"CPU {per_minute:.1f} ms/min (target <= {CPU_TARGET_MS_PER_MIN:.0f} ms/min) "
        f"{'OK' if per_minute <= CPU_TARGET_MS_PER_MIN else 'OVER'}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=int, default=10, help="idle minutes to measure (default 10)")
    args = parser.parse_args()
    if args.minutes < 1:
        parser.error("--minutes must be at least 1")
    asyncio.run(main(args.minutes))
