"""The agent's readiness endpoint, over a real TCP connection."""

from collections.abc import AsyncIterator

import httpx
import pytest

from brupop.agent.health import serve_readiness
from integ.cluster import free_port


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[str, list[str | None]]]:
    reason: list[str | None] = ["cannot use the host API socket: run with group 274"]
    port = free_port()
    server = await serve_readiness(port=port, not_ready=lambda: reason[0])
    yield f"http://127.0.0.1:{port}", reason
    server.close()


async def test_readyz_says_why_the_agent_is_not_ready_until_it_is(
    endpoint: tuple[str, list[str | None]],
) -> None:
    url, reason = endpoint
    async with httpx.AsyncClient(base_url=url) as http:
        answer = await http.get("/readyz")
        assert (answer.status_code, answer.text) == (503, f"{reason[0]}\n")
        reason[0] = None
        answer = await http.get("/readyz")
        assert (answer.status_code, answer.text) == (200, "ready\n")


@pytest.mark.parametrize(("method", "path"), [("GET", "/metrics"), ("POST", "/readyz")])
async def test_anything_else_is_404(endpoint: tuple[str, list[str | None]], method: str, path: str) -> None:
    url, _ = endpoint
    async with httpx.AsyncClient(base_url=url) as http:
        assert (await http.request(method, path)).status_code == 404
