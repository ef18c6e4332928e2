"""Benchmark: the controller as its own process on the local control plane. Prints its resident memory with
N Nodes and shadows (targets: <= 50 MiB for 1,000, <= 100 MiB for 5,000) and the time from a status change
to its spec patch, seen on a watch (target p99 <= 200 ms).

    .venv/bin/python benchmarks/controller.py [--nodes 1000] [--changes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

import httpx

from benchmarks.measure import p50_p99_ms, rss_mib, runtime_python
from brupop.kube.client import NODES, SHADOWS, KubeClient
from brupop.models.constants import API_VERSION_V2, KIND, NAMESPACE, shadow_name
from integ.build import build
from integ.cluster import LocalCluster, down, free_port
from integ.fleet import prepare
from integ.kubetools import BRUPOP_LABELS, admin, eventually

IDLE = {"current_version": "1.0.0", "target_version": "1.0.0", "current_state": "Idle", "crash_count": 0}


async def populate(kube: KubeClient, count: int) -> None:
    slots = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        name = f"n{i:05d}"
        async with slots:
            node = await kube.create(
                NODES,
                {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": BRUPOP_LABELS}},
            )
            owner = {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node["metadata"]["uid"]}
            await kube.create(
                SHADOWS,
                {
                    "apiVersion": API_VERSION_V2,
                    "kind": KIND,
                    "metadata": {"name": shadow_name(name), "ownerReferences": [owner]},
                    "spec": {"state": "Idle"},
                },
                namespace=NAMESPACE,
            )
            await kube.merge_patch(
                SHADOWS, shadow_name(name), {"status": IDLE}, namespace=NAMESPACE, subresource="status"
            )

    await asyncio.gather(*(one(i) for i in range(count)))


async def main(nodes: int, changes: int) -> None:
    state = LocalCluster(bins=build()).up()
    process = None
    try:
        async with admin(state) as kube:
            await prepare(kube)
            started = time.monotonic()
            await populate(kube, nodes)
            print(f"created {nodes} nodes and shadows in {time.monotonic() - started:.0f}s", file=sys.stderr)
            port = free_port()
            env = {
                **os.environ,
                "KUBECONFIG": state.kubeconfig,
                "MAX_CONCURRENT_UPDATE": "unlimited",
                "BRUPOP_NAMESPACE": NAMESPACE,
                "CONTROLLER_INTERNAL_PORT": str(port),
                "CONTROLLER_BIND_ADDRESS": "127.0.0.1",
                "LOGGING_FORMATTER": "json",
                "TRACING_FILTER_DIRECTIVE": "warn",
            }
            process = subprocess.Popen([runtime_python(), "-m", "brupop", "controller"], env=env)

            async def ready() -> bool:
                try:
                    async with httpx.AsyncClient() as http:
                        return (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(ready, within=120, what="the controller to be ready")
            await asyncio.sleep(10)
            settled = rss_mib(process.pid)
            _, version = await kube.list(SHADOWS, namespace=NAMESPACE, page_size=500)
            seen: dict[str, float] = {}
            arrived = asyncio.Event()

            async def watch() -> None:
                async for _, obj in kube.watch(SHADOWS, namespace=NAMESPACE, resource_version=version):
                    if (obj.get("spec") or {}).get("state") == "StagedAndPerformedUpdate":
                        seen.setdefault(obj["metadata"]["name"], time.perf_counter())
                        arrived.set()

            watcher = asyncio.create_task(watch())
            latencies = []
            for i in range(changes):
                name = shadow_name(f"n{i:05d}")
                arrived.clear()
                sent = time.perf_counter()
                await kube.merge_patch(
                    SHADOWS,
                    name,
                    {"status": {**IDLE, "target_version": "1.1.0"}},
                    namespace=NAMESPACE,
                    subresource="status",
                )
                while name not in seen:
                    await asyncio.wait_for(arrived.wait(), 10)
                    arrived.clear()
                latencies.append(seen[name] - sent)
            watcher.cancel()
        print(f"nodes and shadows: {nodes}")
        print(
            f"controller resident memory: {settled:.1f} MiB settled "
            "(targets: <= 50 MiB at 1,000, <= 100 at 5,000)"
        )
        p50, p99 = p50_p99_ms(latencies)
        print(
            f"status change -> spec patch seen on a watch, {changes} changes: "
            f"p50 {p50:.0f} ms, p99 {p99:.0f} ms (target p99 <= 200 ms)"
        )
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=10)
        down()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.nodes, args.changes))
