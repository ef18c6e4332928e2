"""Benchmark: the controller as its own process on the local control plane, at scale (issue 20: 15,000
nodes). N kwok nodes (Ready, heartbeating as kwok's stages make them: each node's status every 60-150 s)
with the brupop label, and their shadows, all Idle. Prints:

- how long the controller takes to be ready (its informers' first lists) and its resident memory, settled
  (target at 15,000 nodes: <= 120 MiB) and at its peak;
- the time of a pass over the whole fleet (`brupop_reconcile_pass_duration_seconds` from its metrics: the
  mean and the slowest bucket of the passes while measuring);
- the time from a status change (a node's agent reporting a new target version) to the controller's spec
  patch, seen on a watch (target p99 <= 200 ms), over C changes one after another, and the kube-apiserver's
  answer to the status patch alone (one request's round trip: the controller's label and spec patches
  are two more);
- with `--policy-toggles T`, an UpdatePolicy over every node paused and resumed T times (issue 16: a pause
  takes effect within a second): the time from the pause to the controller's status for it, and from the
  resume to the start of a node offered an update while paused, both seen on watches;
- the kube-apiserver's resident memory and the machine's load.

    python -m benchmarks.controller [--nodes 15000] [--changes 200] [--plain] [--policy-toggles 0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

import httpx

from benchmarks.measure import load, p50_p99_ms, rss_mib, runtime_python
from brupop.kube.client import NODES, POLICIES, SHADOWS, KubeClient
from brupop.models.constants import (
    API_VERSION_POLICY,
    NAMESPACE,
    POLICY_CRD_NAME,
    POLICY_KIND,
    shadow_name,
)
from integ.build import build
from integ.cluster import KWOK_NODE_LABEL, LocalCluster, down, free_port
from integ.fleet import create_shadow, prepare
from integ.helm import chart_objects, find
from integ.kubetools import BRUPOP_LABELS, admin, eventually, install_crd

IDLE = {"current_version": "1.0.0", "target_version": "1.0.0", "current_state": "Idle", "crash_count": 0}
PASS_METRIC = "brupop_reconcile_pass_duration_seconds"


async def populate(kube: KubeClient, count: int, *, kwok: bool) -> None:
    slots = asyncio.Semaphore(32)
    done = [0]
    started = time.monotonic()

    async def one(i: int) -> None:
        name = f"n{i:05d}"
        meta: dict[str, object] = {"name": name, "labels": {"kubernetes.io/hostname": name, **BRUPOP_LABELS}}
        if kwok:
            meta["labels"] = {KWOK_NODE_LABEL[0]: KWOK_NODE_LABEL[1], **meta["labels"]}  # type: ignore[dict-item]
            meta["annotations"] = {"kwok.x-k8s.io/node": "fake"}
        async with slots:
            node = await kube.create(NODES, {"apiVersion": "v1", "kind": "Node", "metadata": meta})
            await create_shadow(kube, node)
            await kube.merge_patch(
                SHADOWS, shadow_name(name), {"status": IDLE}, namespace=NAMESPACE, subresource="status"
            )
        done[0] += 1
        if done[0] % 1000 == 0:
            rate = done[0] / (time.monotonic() - started)
            print(f"  {done[0]} nodes and shadows ({rate:.0f}/s; {load()})", file=sys.stderr, flush=True)

    await asyncio.gather(*(one(i) for i in range(count)))


class Seen:
    """When each key was first seen on a watch, and a way to wait for one."""

    def __init__(self) -> None:
        self.at: dict[object, float] = {}
        self._arrived = asyncio.Event()

    def saw(self, key: object) -> None:
        self.at.setdefault(key, time.perf_counter())
        self._arrived.set()

    async def since(self, key: object, sent: float, *, within: float = 30) -> float:
        """Seconds from `sent` until `key` was seen (waiting for it up to `within` seconds)."""
        async with asyncio.timeout(within):
            while key not in self.at:
                self._arrived.clear()
                await self._arrived.wait()
        return self.at[key] - sent


async def watch_starts(kube: KubeClient, version: str, starts: Seen) -> None:
    async for _, obj in kube.watch(SHADOWS, namespace=NAMESPACE, resource_version=version):
        if (obj.get("spec") or {}).get("state") == "StagedAndPerformedUpdate":
            starts.saw(obj["metadata"]["name"])


async def offer(kube: KubeClient, index: int) -> str:
    """Node `index`'s agent reports an update on offer; returns its shadow's name."""
    name = shadow_name(f"n{index:05d}")
    body = {"status": {**IDLE, "target_version": "1.1.0"}}
    await kube.merge_patch(SHADOWS, name, body, namespace=NAMESPACE, subresource="status")
    return name


async def policy_reactions(
    kube: KubeClient, starts: Seen, *, first: int, toggles: int
) -> tuple[list[float], list[float]]:
    """An UpdatePolicy over every node, paused and resumed `toggles` times: (pause -> the controller's status
    for that generation, resume -> the start of a node offered an update while paused), in seconds. Nodes
    from index `first` on are offered their update, one per toggle, once the paused status shows it waits."""
    body = {
        "apiVersion": API_VERSION_POLICY,
        "kind": POLICY_KIND,
        "metadata": {"name": "bench"},
        "spec": {"nodeSelector": {}, "maxConcurrent": "unlimited"},
    }
    version = (await kube.create(POLICIES, body))["metadata"]["resourceVersion"]
    followed, waiting = Seen(), Seen()

    async def watch() -> None:
        async for _, obj in kube.watch(POLICIES, resource_version=version):
            status = obj.get("status") or {}
            generation = status.get("observedGeneration")
            if isinstance(generation, int):
                followed.saw(generation)
                waiting.saw((generation, status.get("upToDate")))

    watcher = asyncio.create_task(watch())
    pauses, resumes = [], []
    try:
        await followed.since(1, time.perf_counter())  # the controller's first status for the policy
        selected = (await kube.get(POLICIES, "bench"))["status"]["selected"]
        for turn in range(toggles):
            sent = time.perf_counter()
            paused = await kube.merge_patch(POLICIES, "bench", {"spec": {"paused": True}})
            generation = paused["metadata"]["generation"]
            pauses.append(await followed.since(generation, sent))
            name = await offer(kube, first + turn)
            # Seen waiting (one node fewer up to date) before the resume, so the resume is what starts it.
            await waiting.since((generation, selected - first - turn - 1), sent)
            sent = time.perf_counter()
            await kube.merge_patch(POLICIES, "bench", {"spec": {"paused": False}})
            resumes.append(await starts.since(name, sent))
    finally:
        watcher.cancel()
        await kube.delete(POLICIES, "bench")
    return pauses, resumes


def pass_times(metrics: str) -> tuple[int, float, float]:
    """(passes, total seconds, upper bound of the slowest bucket) from the controller's /metrics text."""
    count, total, slowest, previous = 0, 0.0, 0.0, 0.0
    for line in metrics.splitlines():
        if line.startswith(f"{PASS_METRIC}_count"):
            count = int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith(f"{PASS_METRIC}_sum"):
            total = float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{PASS_METRIC}_bucket"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            seen = float(line.rsplit(" ", 1)[1])
            if seen > previous and bound != "+Inf":
                slowest = float(bound)
            previous = seen
    return count, total, slowest


async def main(nodes: int, changes: int, toggles: int, *, kwok: bool) -> None:
    state = LocalCluster(bins=build()).up()
    process = None
    try:
        async with admin(state) as kube, httpx.AsyncClient() as http:
            await prepare(kube)
            await install_crd(kube, find(chart_objects(), "CustomResourceDefinition", POLICY_CRD_NAME))
            started = time.monotonic()
            await populate(kube, nodes, kwok=kwok)
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
            launched = time.monotonic()
            process = subprocess.Popen([runtime_python(), "-m", "brupop", "controller"], env=env)

            async def ready() -> bool:
                try:
                    return (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(ready, within=600, what="the controller to be ready")
            synced = time.monotonic() - launched
            await asyncio.sleep(20)
            settled = rss_mib(process.pid)
            before = pass_times((await http.get(f"http://127.0.0.1:{port}/metrics")).text)
            _, version = await kube.list(SHADOWS, namespace=NAMESPACE, page_size=500)
            starts = Seen()
            watcher = asyncio.create_task(watch_starts(kube, version, starts))
            latencies, answers = [], []
            for i in range(changes):
                sent = time.perf_counter()
                name = await offer(kube, i)
                answers.append(time.perf_counter() - sent)
                latencies.append(await starts.since(name, sent))
            after = pass_times((await http.get(f"http://127.0.0.1:{port}/metrics")).text)
            pauses, resumes = await policy_reactions(kube, starts, first=changes, toggles=toggles)
            watcher.cancel()
            peak = rss_mib(process.pid, field="VmHWM")
            apiserver = rss_mib(state.pids["kube-apiserver"])
        passes, seconds = after[0] - before[0], after[1] - before[1]
        kind = "kwok nodes (Ready, heartbeating)" if kwok else "plain Node objects (no kubelet)"
        print(f"{nodes} {kind} and their shadows ({load()})")
        print(f"controller ready (informers synced) {synced:.1f}s after its start")
        print(
            f"controller resident memory: {settled:.1f} MiB settled, peak {peak:.1f} MiB "
            "(target at 15,000: <= 120 MiB)"
        )
        if passes:
            print(
                f"a pass over the fleet: {seconds / passes * 1000:.0f} ms on average over {passes} passes, "
                f"the slowest under {after[2] * 1000:.0f} ms"
            )
        p50, p99 = p50_p99_ms(latencies)
        print(
            f"status change -> spec patch seen on a watch, {changes} changes: "
            f"p50 {p50:.0f} ms, p99 {p99:.0f} ms (target p99 <= 200 ms)"
        )
        p50, p99 = p50_p99_ms(answers)
        print(
            f"  of which the kube-apiserver's answer to the status patch itself: p50 {p50:.0f} ms, "
            f"p99 {p99:.0f} ms (the controller's label and spec patches are two more such requests)"
        )
        if toggles:
            p50, p99 = p50_p99_ms(pauses)
            print(
                f"policy paused -> the controller's status for it seen on a watch, {toggles} pauses: "
                f"p50 {p50:.0f} ms, p99 {p99:.0f} ms (issue 16: within a second)"
            )
            p50, p99 = p50_p99_ms(resumes)
            print(
                f"policy resumed -> a waiting node's start seen on a watch, {toggles} resumes: "
                f"p50 {p50:.0f} ms, p99 {p99:.0f} ms"
            )
        print(f"kube-apiserver resident memory: {apiserver:.0f} MiB")
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        down()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=15000)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument(
        "--plain", action="store_true", help="Node objects no kwok manages: no status, heartbeats or leases"
    )
    parser.add_argument("--policy-toggles", type=int, default=0, help="pause and resume a policy T times")
    args = parser.parse_args()
    asyncio.run(main(args.nodes, args.changes, args.policy_toggles, kwok=not args.plain))
