"""The apiserver's HTTP server at rest (issue 20): it sets no timer while nothing happens (uvicorn's own main
loop wakes ten times a second), yet every answer carries a current Date header, `stop()` ends it, and the
real process still stops on SIGTERM."""

import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from brupop.apiserver.server import QuietServer, dated
from integ.pki import CertificateAuthority


async def ping(request: Request) -> PlainTextResponse:
    return PlainTextResponse("pong")


def app() -> Starlette:
    return Starlette(routes=[Route("/ping", ping)])


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[tuple[QuietServer, str]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(dated(app()), log_config=None, access_log=False, date_header=False)
    server = QuietServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(500):
                with contextlib.suppress(httpx.TransportError):
                    await http.get(f"{url}/ping")
                    break
                await asyncio.sleep(0.01)
        yield server, url
    finally:
        server.stop()
        await asyncio.wait_for(task, 10)


def count_timers(loop: asyncio.AbstractEventLoop) -> Callable[[], int]:
    """Count the timers set on `loop` from now on (asyncio.sleep and every call_later go through call_at)."""
    timers = []
    real = loop.call_at

    def call_at(
        when: float, callback: Callable[..., object], *args: Any, **kwargs: Any
    ) -> asyncio.TimerHandle:
        timers.append(callback)
        return real(when, callback, *args, **kwargs)

    loop.call_at = call_at  # type: ignore[method-assign]
    return lambda: len(timers)


async def test_an_idle_server_sets_no_timer() -> None:
    async with serving():
        loop = asyncio.get_running_loop()
        timers = count_timers(loop)
        try:
            await loop.run_in_executor(None, time.sleep, 0.5)  # this wait itself sets no timer on the loop
        finally:
            del loop.call_at  # type: ignore[method-assign]
        assert timers() == 0


async def test_every_answer_has_a_current_date_header() -> None:
    async with serving() as (_, url), httpx.AsyncClient() as http:
        answer = await http.get(f"{url}/ping")
    assert answer.text == "pong"
    assert len(answer.headers.get_list("date")) == 1
    assert abs(parsedate_to_datetime(answer.headers["date"]).timestamp() - time.time()) < 60


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    ca = CertificateAuthority.create(tmp_path)
    ca.issue(tmp_path, "tls", common_name="brupop-apiserver", ips=("127.0.0.1",), server=True)
    return tmp_path


def test_the_apiserver_process_stops_on_sigterm(tls_dir: Path, tmp_path: Path) -> None:
    """No cluster: the kubeconfig points where nothing listens, and the apiserver serves /ping anyway."""
    kubeconfig = tmp_path / "config.json"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
            }
        )
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        "PATH": os.environ.get("PATH", ""),
        "LOGGING_FORMATTER": "json",
        "KUBECONFIG": str(kubeconfig),
        "APISERVER_INTERNAL_PORT": str(port),
        "APISERVER_BIND_ADDRESS": "127.0.0.1",
        "APISERVER_TLS_DIR": str(tls_dir),
        "BRUPOP_NAMESPACE": "brupop-bottlerocket-aws",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "brupop", "apiserver"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        context = ssl.create_default_context(cafile=str(tls_dir / "ca.crt"))
        with httpx.Client(verify=context) as http:
            for _ in range(600):
                with contextlib.suppress(httpx.TransportError):
                    if http.get(f"https://127.0.0.1:{port}/ping").text == "pong":
                        break
                assert process.poll() is None, process.communicate()[0]
                time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)  # the pod's grace period: SIGKILL would follow
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code in (0, -signal.SIGTERM), process.communicate()[0]
