"""Benchmark: what a Kubernetes API request costs brupop's client in CPU, on a connection kept from the last
request and on a new one (its TCP and TLS handshake), against the local kube-apiserver (issue 20: the
controller leader's renewal every 5 s met an expired connection a third of the time with httpx's 5 s
keep-alive; `brupop.kube.client.KEEPALIVE`).

Prints the CPU time per request of this process for GETs of one object, 0.02 s apart, with the client's
idle connections expiring at once (every request a new connection) and with `KEEPALIVE`, then how many
of 12 requests spaced like the leader's renewals (`LeaseTiming().renew_interval` from the last one's
start) opened a new connection.

    .venv/bin/python -m benchmarks.connections [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from brupop.kube.client import KEEPALIVE, NAMESPACES, KubeClient
from brupop.kube.leader import LeaseTiming
from integ.build import build
from integ.cluster import LocalCluster, down
from integ.kubetools import admin


def _pool(kube: KubeClient) -> object:
    return kube._http._transport._pool  # type: ignore[attr-defined]  # httpx keeps it private


def _expire_after(kube: KubeClient, seconds: float) -> None:
    _pool(kube)._keepalive_expiry = seconds  # type: ignore[attr-defined]


def _connections(kube: KubeClient) -> set[int]:
    return {id(c) for c in _pool(kube).connections}  # type: ignore[attr-defined]


async def _cpu_per_request(kube: KubeClient, requests: int) -> float:
    await kube.get(NAMESPACES, "default")
    began = time.process_time()
    for _ in range(requests):
        await asyncio.sleep(0.02)
        await kube.get(NAMESPACES, "default")
    return (time.process_time() - began) / requests * 1000


async def _new_connections_at_renewal_pace(kube: KubeClient, attempts: int) -> int:
    loop = asyncio.get_running_loop()
    interval = LeaseTiming().renew_interval
    await kube.get(NAMESPACES, "default")
    started, opened = loop.time(), 0
    for _ in range(attempts):
        await asyncio.sleep(max(started + interval - loop.time(), 0.0))
        started = loop.time()
        before = _connections(kube)
        await kube.get(NAMESPACES, "default")
        opened += bool(_connections(kube) - before)
    return opened


async def main(requests: int) -> None:
    state = LocalCluster(bins=build()).up()
    try:
        for label, expiry in (("a new connection each", 0.0), (f"kept ({KEEPALIVE:.0f} s)", KEEPALIVE)):
            async with admin(state) as kube:
                _expire_after(kube, expiry)
                print(f"CPU per request, {label}: {await _cpu_per_request(kube, requests):.2f} ms")
        for label, expiry in (("httpx's default (5 s)", 5.0), (f"KEEPALIVE ({KEEPALIVE:.0f} s)", KEEPALIVE)):
            async with admin(state) as kube:
                _expire_after(kube, expiry)
                opened = await _new_connections_at_renewal_pace(kube, 12)
                print(f"renewal-paced requests that opened a connection, keep-alive {label}: {opened}/12")
    finally:
        down()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200)
    asyncio.run(main(parser.parse_args().requests))
