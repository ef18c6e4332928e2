"""Benchmark: resident memory of N simulated hosts in one process, and the latency of GET /updates/status
across them (targets for 1,000 hosts: <= 200 MiB, p99 <= 5 ms).

    .venv/bin/python benchmarks/hostsim_fleet.py [--hosts 1000] [--requests 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import tempfile
import time
from pathlib import Path

from benchmarks.measure import p50_p99_ms, rss_mib
from integ.hostsim.fleet import Fleet


async def request(path: Path, raw: bytes) -> float:
    started = time.perf_counter()
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(raw)
    await writer.drain()
    await reader.read()
    writer.close()
    return time.perf_counter() - started


async def main(hosts: int, requests: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    before = rss_mib()
    with tempfile.TemporaryDirectory() as directory:
        fleet = Fleet(Path(directory), time_scale=0.0)
        fleet.repository.offer("1.21.0", variant="aws-k8s-1.29", arch="x86_64")
        for i in range(hosts):
            await fleet.add(f"h{i}", version="1.20.3")
        get_status = b"GET /updates/status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        refresh = (
            b"POST /actions/refresh-updates HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        for i in range(hosts):  # give every host a full status document
            await request(fleet.socket(f"h{i}"), refresh)
        await asyncio.sleep(0.1)
        loaded = rss_mib()
        rng = random.Random(1)
        latencies = [
            await request(fleet.socket(f"h{rng.randrange(hosts)}"), get_status) for _ in range(requests)
        ]
        await fleet.stop()
    p50, p99 = p50_p99_ms(latencies)
    print(f"hosts: {hosts}")
    print(
        f"resident memory: {loaded:.1f} MiB total, {loaded - before:.1f} MiB for the hosts "
        "(target <= 200 MiB)"
    )
    print(
        f"GET /updates/status over {requests} requests (new connection each): "
        f"p50 {p50:.2f} ms, p99 {p99:.2f} ms (target p99 <= 5 ms)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    asyncio.run(main(args.hosts, args.requests))
