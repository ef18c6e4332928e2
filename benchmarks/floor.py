"""Benchmark: the floor under each program's memory, the interpreter's fixed cost (issue 20 compares our RSS
with the Rust brupop's, whose programs start at a few MiB). Each line is a fresh interpreter of the
runtime-only virtualenv (as in the image) that imports one more layer and prints its resident memory
(VmRSS): nothing (`python -c pass`), the standard library every program needs (asyncio, ssl, json,
logging), the HTTP client and logger every program uses (httpx, structlog), what httpx loads for its first
request and OpenSSL's first TLS context, prometheus-client (the controller's and the apiserver's metrics),
then each program's code as `brupop <program>` loads it, over the layers it uses, before it connects
anywhere. What a program holds at rest above its line is its own: caches, connections, buffers.

    python -m benchmarks.floor
"""

from __future__ import annotations

import subprocess

from benchmarks.measure import load, runtime_python

NO_CLI = "import sys; sys.modules.setdefault('httpx._main', None); "
"""As `brupop/__init__.py` does: httpx's command-line client (click) is never loaded by a brupop program."""
STDLIB = NO_CLI + "import asyncio, ssl, json, logging"
CLIENT = STDLIB + ", httpx, structlog"
FIRST_REQUEST = CLIENT + ", httpcore, h11, anyio._backends._asyncio; ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)"
"""What httpx loads on its first request (its transport: httpcore, h11, anyio's asyncio backend) and
OpenSSL's first TLS context: every program carries these by the time it is at rest."""
METRICS = FIRST_REQUEST + "; import prometheus_client"
LAYERS = {
    "python -c pass": "",
    "+ asyncio, ssl, json, logging": STDLIB,
    "+ httpx, structlog": CLIENT,
    "+ httpx's first request": FIRST_REQUEST,
    "+ prometheus-client": METRICS,
    "agent's code": FIRST_REQUEST + "; import brupop.cli, brupop.agent.main, brupop.agent.settings",
    "controller's code": METRICS + "; import brupop.cli, brupop.controller.main, brupop.controller.settings",
    "apiserver's code": METRICS + "; import brupop.cli, brupop.apiserver.server, brupop.apiserver.settings",
}
REPORT = (
    "\nfor line in open('/proc/self/status'):\n"
    "    if line.startswith('VmRSS:'):\n"
    "        print(int(line.split()[1]) / 1024)"
)


def resident_mib(python: str, code: str, *, runs: int = 3) -> float:
    """The smallest VmRSS of `runs` fresh interpreters that ran `code` (the least disturbed by the load)."""
    found = []
    for _ in range(runs):
        done = subprocess.run([python, "-I", "-c", code + REPORT], check=True, capture_output=True, text=True)
        found.append(float(done.stdout))
    return min(found)


def main() -> None:
    python = runtime_python()
    version = subprocess.run([python, "-V"], check=True, capture_output=True, text=True).stdout.strip()
    print(f"resident memory of a fresh interpreter ({version}, runtime-only venv; {load()})")
    for what, code in LAYERS.items():
        print(f"  {what:32s} {resident_mib(python, code):5.1f} MiB")


if __name__ == "__main__":
    main()
