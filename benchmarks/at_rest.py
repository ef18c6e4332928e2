"""Benchmark: the whole operator at rest, each program its own process, without the end-to-end harness
(issue 20's "at rest, per process" rows on their own): the kube-apiserver and N nodes on the local control
plane, a simulated Bottlerocket host per node that offers nothing new, one apiserver, one controller under
its service account (MAX_CONCURRENT_UPDATE=2) and an agent per node with its pod's tokens, all under the
runtime-only interpreter (as in the image). Once every shadow reports Idle and a settling time has passed,
it counts each process's CPU for M minutes and prints, per process, CPU seconds per minute, resident memory
at the end (VmRSS) and its peak since it started (VmHWM).

    python -m benchmarks.at_rest [--nodes 6] [--minutes 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import time
from pathlib import Path

from benchmarks.measure import cpu_seconds, load, rss_mib, runtime_python
from benchmarks.pods import agent_env, controller_env
from brupop.kube.client import SHADOWS
from brupop.models.constants import NAMESPACE
from integ.build import build
from integ.cluster import LocalCluster, down
from integ.fleet import prepare
from integ.hostsim.fleet import Fleet
from integ.kubetools import BRUPOP_LABELS, admin, create_nodes, eventually
from integ.operator import (
    agent_pod,
    apiserver_process,
    install_agents,
    install_rbac,
)

VERSION = "1.0.0"
VARIANT, ARCH = "aws-k8s-1.29", "x86_64"
SETTLE_SECONDS = 15.0
"""After every shadow reports Idle: the agents' last reports and the controller's pass are done."""


def start(python: str, program: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`python -m brupop <program>` with only `env` (as its pod's manifest gives it), its output to `log`."""
    base = {
        "PATH": os.environ.get("PATH", ""),
        "BRUPOP_NAMESPACE": NAMESPACE,
        "LOGGING_FORMATTER": "json",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [python, "-m", "brupop", program], env={**base, **env}, stdout=out, stderr=subprocess.STDOUT
        )


def report(pids: dict[str, int], cpu: dict[str, float], minutes: float) -> list[str]:
    lines = [f"{'process':<22}{'CPU s/min':>10}{'RSS MiB':>9}{'peak MiB':>10}"]
    for name, pid in pids.items():
        if not Path(f"/proc/{pid}").exists():
            lines.append(f"{name:<22} exited")
            continue
        used = (cpu_seconds(pid) - cpu[name]) / minutes
        lines.append(f"{name:<22}{used:>10.3f}{rss_mib(pid):>9.1f}{rss_mib(pid, field='VmHWM'):>10.1f}")
    return lines


async def main(nodes: int, minutes: float) -> None:
    python = runtime_python()
    state = LocalCluster(bins=build()).up()
    directory = Path(state.directory)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        async with admin(state) as kube, contextlib.AsyncExitStack() as stack:
            await prepare(kube)
            await install_rbac(kube)
            await install_agents(kube)
            names = [f"rest-{i}" for i in range(nodes)]
            await create_nodes(kube, names, labels=BRUPOP_LABELS)
            fleet = Fleet(directory / "hosts")
            stack.push_async_callback(fleet.stop)
            fleet.repository.offer(VERSION, variant=VARIANT, arch=ARCH)
            for name in names:
                await fleet.add(name, version=VERSION, variant=VARIANT, arch=ARCH)
            replica = await stack.enter_async_context(
                apiserver_process(state, kube, name="brupop-apiserver-0", python=python)
            )
            env = await controller_env(state, kube, directory)
            processes["controller"] = start(python, "controller", env, directory / "controller.log")
            for name in names:
                pod = await agent_pod(kube, name)
                env = await agent_env(
                    state, kube, directory, pod, fleet, replica.running.url, replica.running.ca_file
                )
                processes[f"agent {name}"] = start(python, "agent", env, directory / f"agent-{name}.log")

            async def all_idle() -> bool:
                items, _ = await kube.list(SHADOWS, namespace=NAMESPACE)
                states = [(item.get("status") or {}).get("current_state") for item in items]
                return len(items) == nodes and all(s == "Idle" for s in states)

            await eventually(all_idle, within=180, what="every shadow to report Idle")
            await asyncio.sleep(SETTLE_SECONDS)
            pids = {"apiserver": replica.process.pid, **{k: p.pid for k, p in processes.items()}}
            cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
            begun, at_start = time.monotonic(), load()
            await asyncio.sleep(minutes * 60)
            lines = report(pids, cpu, (time.monotonic() - begun) / 60)
        print(f"{nodes} nodes at rest for {minutes:g} min ({at_start} at the start, {load()} at the end):")
        print("\n".join(lines))
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=15)
        down()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=6)
    parser.add_argument("--minutes", type=float, default=5.0)
    args = parser.parse_args()
    asyncio.run(main(args.nodes, args.minutes))
