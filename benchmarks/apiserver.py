"""Benchmark: the brupop apiserver as its own process on the local control plane, under its service
account, with A agents (issue 20: 5,000). Each agent is a pod on a node of its own (plain Node objects and
pods with `spec.nodeName`: authorisation reads nothing else), with a pod-bound token of audience
brupop-apiserver and a shadow. Prints:

- the apiserver's resident memory at rest with the A agent pods in its informer;
- A agents reporting their status (`PUT /bottlerocket-node-resource`, the real check: TokenReview, the
  agent-pod cache, the token's node) each every I seconds (the agent's update check interval, 120 s: the
  most an idle agent reports), spread evenly, for M minutes: requests per second held, p50/p99 latency,
  failures, the apiserver's CPU and memory, and the TokenReviews it asked for;
- then as fast as 50 agents in flight can go: the most it holds;
- with `--watchers W`: the kube-apiserver's memory and CPU at rest with the two watches each of W agents
  (its shadow and its Node, by name, as both the Rust agent and ours watch), against none.

Then the conversion webhook, with the real kube-apiserver calling it: how many ConversionReviews a v1 list
of S shadows costs and how many objects each carries (what the 3 MiB body limit must fit), and /ping's
latency and the resident memory while reviews of about 2.9 MB (just under the limit) are converted.

    python -m benchmarks.apiserver [--agents 5000] [--interval 120] [--minutes 3] [--watchers 0]
        [--shadows 500]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import Any

import httpx

from benchmarks.measure import cpu_seconds, load, p50_p99_ms, rss_mib, runtime_python
from brupop.deploy import AGENT_SA
from brupop.kube.client import NODES, PODS, SHADOWS, KubeClient
from brupop.models.constants import (
    AGENT_COMPONENT,
    API_VERSION_V2,
    COMPONENT_LABEL,
    KIND,
    NAMESPACE,
    shadow_name,
)
from integ.build import build
from integ.cluster import ClusterState, LocalCluster, down
from integ.fleet import create_shadow, prepare
from integ.kubetools import admin, crd_for_local_use, install_crd
from integ.operator import ApiserverProcess, agent_token, apiserver_process, install_rbac

STATUS = {
    "current_version": "1.0.0",
    "target_version": "1.0.0",
    "current_state": "Idle",
    "crash_count": 0,
}
Obj = dict[str, Any]


async def agents(kube: KubeClient, count: int) -> list[dict[str, str]]:
    """`count` agents, each a node, an agent pod on it, its shadow; returns each one's request headers."""
    slots = asyncio.Semaphore(32)
    headers: list[dict[str, str]] = []
    started = time.monotonic()

    async def one(i: int) -> None:
        name = f"a{i:05d}"
        async with slots:
            node = await kube.create(NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
            pod = await kube.create(
                PODS,
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": f"brupop-agent-{name}",
                        "namespace": NAMESPACE,
                        "labels": {COMPONENT_LABEL: AGENT_COMPONENT},
                    },
                    "spec": {
                        "nodeName": name,
                        "serviceAccountName": AGENT_SA,
                        "containers": [{"name": "brupop", "image": "brupop"}],
                    },
                },
                namespace=NAMESPACE,
            )
            await create_shadow(kube, node)
            token = await agent_token(kube, pod)
        headers.append(
            {"BrupopNodeName": name, "BrupopNodeUid": node["metadata"]["uid"], "BrupopK8sAuthToken": token}
        )
        if len(headers) % 1000 == 0:
            rate = len(headers) / (time.monotonic() - started)
            print(f"  {len(headers)} agents ({rate:.0f}/s; {load()})", file=sys.stderr, flush=True)

    await asyncio.gather(*(one(i) for i in range(count)))
    return headers


async def token_reviews(kube: KubeClient) -> float:
    """TokenReviews the kube-apiserver has answered so far (its `apiserver_request_total`)."""
    async with httpx.AsyncClient(base_url=kube.config.server, verify=kube.config.ssl_context()) as http:
        text = (await http.get("/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("apiserver_request_total{") and 'resource="tokenreviews"' in line
    )


async def steady_reports(
    kube: KubeClient,
    http: httpx.AsyncClient,
    replica: ApiserverProcess,
    headers: list[dict[str, str]],
    *,
    interval: float,
    minutes: float,
) -> None:
    """Every agent reports every `interval` seconds, their reports spread evenly over it."""
    latencies: list[float] = []
    failures = 0
    gap = interval / len(headers)
    pid = replica.process.pid
    reviewed = await token_reviews(kube)
    cpu, began = cpu_seconds(pid), time.monotonic()
    end = began + minutes * 60
    pending: set[asyncio.Task[None]] = set()

    async def report(agent: dict[str, str]) -> None:
        nonlocal failures
        sent = time.perf_counter()
        try:
            answer = await http.put("/bottlerocket-node-resource", headers=agent, json=STATUS)
            ok = answer.status_code == 200
        except httpx.HTTPError:
            ok = False
        latencies.append(time.perf_counter() - sent)
        failures += not ok

    i = 0
    while (due := began + i * gap) < end:
        await asyncio.sleep(max(due - time.monotonic(), 0))
        task = asyncio.create_task(report(headers[i % len(headers)]))
        pending.add(task)
        task.add_done_callback(pending.discard)
        i += 1
    await asyncio.gather(*pending)
    spent = time.monotonic() - began
    used = cpu_seconds(pid) - cpu
    p50, p99 = p50_p99_ms(latencies)
    print(
        f"{len(headers)} agents reporting every {interval:g}s for {minutes:g} min: "
        f"{len(latencies) / spent:.1f} requests/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms, {failures} failed, "
        f"{await token_reviews(kube) - reviewed:.0f} TokenReviews; "
        f"apiserver CPU {used / spent:.0%} of a core, RSS {rss_mib(pid):.1f} MiB "
        f"(peak {rss_mib(pid, field='VmHWM'):.1f}); {load()}"
    )


async def flat_out(
    http: httpx.AsyncClient, replica: ApiserverProcess, headers: list[dict[str, str]], seconds: float
) -> None:
    latencies: list[float] = []
    failures = 0
    end = time.monotonic() + seconds
    pid = replica.process.pid
    cpu, began = cpu_seconds(pid), time.monotonic()
    turn = iter(range(10**9))

    async def worker() -> None:
        nonlocal failures
        while time.monotonic() < end:
            agent = headers[next(turn) % len(headers)]
            sent = time.perf_counter()
            try:
                ok = (
                    await http.put("/bottlerocket-node-resource", headers=agent, json=STATUS)
                ).status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - sent)
            failures += not ok

    await asyncio.gather(*(worker() for _ in range(50)))
    spent = time.monotonic() - began
    p50, p99 = p50_p99_ms(latencies)
    print(
        f"as fast as 50 agents in flight go, {seconds:g}s: {len(latencies) / spent:.0f} requests/s, "
        f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, {failures} failed; apiserver CPU "
        f"{(cpu_seconds(pid) - cpu) / spent:.0%} of a core; {load()}"
    )


async def watch_load(state: ClusterState, kube: KubeClient, watchers: int) -> None:
    """The kube-apiserver at rest with two watches per agent for `watchers` agents, against none."""
    pid = state.pids["kube-apiserver"]

    async def at_rest(seconds: float = 60) -> tuple[float, float]:
        cpu, began = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(seconds)
        return (cpu_seconds(pid) - cpu) / (time.monotonic() - began) * 60, rss_mib(pid)

    base_cpu, base_rss = await at_rest()
    pool = httpx.AsyncHTTPTransport(
        verify=kube.config.ssl_context(),
        limits=httpx.Limits(max_connections=2 * watchers + 10, max_keepalive_connections=10),
    )
    async with KubeClient(kube.config, timeout=60, transport=pool) as watching:

        async def hold(resource: Any, namespace: str | None, name: str) -> None:
            _, version = await watching.list(
                resource, namespace=namespace, field_selector=f"metadata.name={name}"
            )
            with contextlib.suppress(Exception):
                async for _ in watching.watch(
                    resource,
                    namespace=namespace,
                    resource_version=version,
                    field_selector=f"metadata.name={name}",
                ):
                    pass

        tasks = []
        for i in range(watchers):
            node = f"a{i:05d}"
            tasks.append(asyncio.create_task(hold(SHADOWS, NAMESPACE, shadow_name(node))))
            tasks.append(asyncio.create_task(hold(NODES, None, node)))
        await asyncio.sleep(30)
        cpu, rss = await at_rest()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(
        f"kube-apiserver at rest: {base_cpu:.2f} s CPU per min and {base_rss:.0f} MiB without agent watches; "
        f"{cpu:.2f} s per min and {rss:.0f} MiB with {2 * watchers} watches "
        f"({watchers} agents x 2, by name); {load()}"
    )


async def conversions(kube: KubeClient, replica: ApiserverProcess, shadows: int) -> None:
    """The webhook's figures (see the module docstring)."""
    await install_crd(
        kube,
        crd_for_local_use(webhook_url=f"{replica.running.url}/crdconvert", ca_pem=replica.running.ca_pem),
    )
    slots = asyncio.Semaphore(20)
    status = {
        "current_version": "1.20.2",
        "target_version": "1.20.3",
        "current_state": "StagedAndPerformedUpdate",
        "crash_count": 2,
        "state_transition_failure_timestamp": "2024-05-01T10:00:00.123456789+00:00",
    }

    async def shadow(i: int) -> None:
        name = f"brs-conv-{i}"
        body = {
            "apiVersion": API_VERSION_V2,
            "kind": KIND,
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"state": "Idle", "version": "1.20.3"},
        }
        async with slots:
            await kube.create(SHADOWS, body, namespace=NAMESPACE)
            await kube.merge_patch(
                SHADOWS, name, {"status": status}, namespace=NAMESPACE, subresource="status"
            )

    await asyncio.gather(*(shadow(i) for i in range(shadows)))
    async with replica.running.client() as http:

        async def reviewed() -> float:
            for line in (await http.get("/metrics")).text.splitlines():
                if line.startswith("brupop_apiserver_requests_total{") and 'route="/crdconvert"' in line:
                    return float(line.rsplit(" ", 1)[1])
            return 0.0

        v1 = f"/apis/brupop.bottlerocket.aws/v1/namespaces/{NAMESPACE}/bottlerocketshadows"
        before = await reviewed()
        listed = await kube.request("GET", v1, params={"limit": "500"})
        count = await reviewed() - before
        print(
            f"a v1 list of {len(listed['items'])} shadows: {count:.0f} ConversionReviews "
            f"({len(listed['items']) / max(count, 1):.1f} objects each)"
        )
        # Reviews just under the 3 MiB limit, of the objects the kube-apiserver just sent (v1, to convert up).
        each = len(json.dumps(listed["items"][0]))
        objects = (listed["items"] * (3_000_000 // each // len(listed["items"]) + 1))[: 2_900_000 // each]
        review = {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "ConversionReview",
            "request": {"uid": "bench", "desiredAPIVersion": API_VERSION_V2, "objects": objects},
        }
        big = json.dumps(review).encode()
        pings: list[float] = []
        done = asyncio.Event()

        async def ping() -> None:
            while not done.is_set():
                started = time.perf_counter()
                await http.get("/ping")
                pings.append(time.perf_counter() - started)
                await asyncio.sleep(0.01)

        pinger = asyncio.create_task(ping())
        for _ in range(5):
            answer = await http.post("/crdconvert", content=big)
            assert answer.status_code == 200, answer.text
        done.set()
        await pinger
        p50, p99 = p50_p99_ms(pings)
        after, peak = rss_mib(replica.process.pid), rss_mib(replica.process.pid, field="VmHWM")
        print(
            f"/ping while 5 reviews of {len(big) / 1e6:.1f} MB ({len(objects)} objects) are converted: "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms; apiserver resident memory "
            f"{after:.1f} MiB after, peak {peak:.1f} MiB"
        )
    await install_crd(kube, crd_for_local_use())


async def main(args: argparse.Namespace) -> None:
    state = LocalCluster(bins=build()).up()
    try:
        async with admin(state) as kube, contextlib.AsyncExitStack() as stack:
            await prepare(kube)
            await install_rbac(kube)
            started = time.monotonic()
            headers = await agents(kube, args.agents)
            print(f"created {args.agents} agents in {time.monotonic() - started:.0f}s", file=sys.stderr)
            replica = await stack.enter_async_context(
                apiserver_process(state, kube, name="brupop-apiserver-bench", python=runtime_python())
            )
            http = await stack.enter_async_context(replica.running.client())
            await asyncio.sleep(20)  # at rest: the informer synced, nothing happening
            print(
                f"apiserver resident memory at rest with {args.agents} agent pods in its informer: "
                f"{rss_mib(replica.process.pid):.1f} MiB; {load()}"
            )
            await steady_reports(kube, http, replica, headers, interval=args.interval, minutes=args.minutes)
            await flat_out(http, replica, headers, 60)
            if args.watchers:
                await watch_load(state, kube, min(args.watchers, args.agents))
            if args.shadows:
                await conversions(kube, replica, args.shadows)
    finally:
        down()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=5000)
    parser.add_argument("--interval", type=float, default=120.0, help="seconds between an agent's reports")
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--watchers", type=int, default=0, help="agents whose two watches are held")
    parser.add_argument("--shadows", type=int, default=500)
    asyncio.run(main(parser.parse_args()))
