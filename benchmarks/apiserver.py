"""Benchmark: the brupop apiserver as its own process on the local control plane, under its service
account: resident memory once idle with N agent pods in its informer (target <= 60 MiB for 1,000) and the
latency of authenticated status updates (target p99 <= 20 ms, TokenReview excluded: its result is cached).

    .venv/bin/python benchmarks/apiserver.py [--pods 1000] [--updates 500]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time

from benchmarks.measure import p50_p99_ms, rss_mib, runtime_python
from brupop.kube.client import PODS
from brupop.models.constants import AGENT_COMPONENT, COMPONENT_LABEL, NAMESPACE
from integ.build import build
from integ.cluster import LocalCluster, down
from integ.fleet import prepare
from integ.kubetools import BRUPOP_LABELS, admin, create_nodes, eventually
from integ.operator import agent_pod, agent_token, apiserver_process, install_agents, install_rbac


async def main(pods: int, updates: int) -> None:
    state = LocalCluster(bins=build()).up()
    try:
        async with admin(state) as kube, contextlib.AsyncExitStack() as stack:
            await prepare(kube)
            await install_rbac(kube)
            await install_agents(kube)
            nodes = await create_nodes(kube, [f"bench-{i}" for i in range(10)], labels=BRUPOP_LABELS)
            slots = asyncio.Semaphore(20)

            async def pod(i: int) -> None:
                body = {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": f"agent-{i}",
                        "namespace": NAMESPACE,
                        "labels": {COMPONENT_LABEL: AGENT_COMPONENT, "bench": "yes"},
                    },
                    "spec": {"nodeName": f"bench-{i % 10}", "containers": [{"name": "c", "image": "x"}]},
                }
                async with slots:
                    await kube.create(PODS, body, namespace=NAMESPACE)

            await asyncio.gather(*(pod(i) for i in range(pods)))
            replica = await stack.enter_async_context(
                apiserver_process(state, kube, name="brupop-apiserver-bench", python=runtime_python())
            )
            node = nodes[0]
            real = await agent_pod(kube, "bench-0")
            headers = {
                "BrupopNodeName": "bench-0",
                "BrupopNodeUid": node["metadata"]["uid"],
                "BrupopK8sAuthToken": await agent_token(kube, real),
            }
            async with replica.running.client() as http:

                async def created() -> bool:
                    answer = await http.post("/bottlerocket-node-resource", headers=headers)
                    return answer.status_code == 200

                await eventually(created, within=60, what="the apiserver to serve")
                await asyncio.sleep(10)  # idle: informer synced, nothing happening
                idle = rss_mib(replica.process.pid)
                status = {
                    "current_version": "1.0.0",
                    "target_version": "1.1.0",
                    "current_state": "Idle",
                    "crash_count": 0,
                    "state_transition_failure_timestamp": None,
                }
                latencies = []
                for i in range(updates):
                    status["crash_count"] = i % 3
                    started = time.perf_counter()
                    answer = await http.put("/bottlerocket-node-resource", headers=headers, json=status)
                    latencies.append(time.perf_counter() - started)
                    assert answer.status_code == 200, answer.text
                busy = rss_mib(replica.process.pid)
        print(f"agent pods in the informer: {pods + 10}")
        p50, p99 = p50_p99_ms(latencies)
        print(
            f"apiserver resident memory: {idle:.1f} MiB idle, {busy:.1f} MiB after {updates} updates "
            "(target <= 60 MiB)"
        )
        print(
            f"authenticated status update (PUT, TokenReview cached): p50 {p50:.1f} ms, p99 {p99:.1f} ms "
            "(target p99 <= 20 ms)"
        )
    finally:
        down()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--updates", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(main(args.pods, args.updates))
