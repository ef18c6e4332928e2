"""ApiserverClient with respx: identity headers, the token re-read on every call, retries with full-jitter
exponential back-off for connection errors, 429 and 5xx answers for a time budget (in fake time here),
and each operation's route."""

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import respx

from brupop.agent import apiclient
from brupop.agent.apiclient import ApiserverClient, ApiserverError
from brupop.models.shadow import ShadowState, ShadowStatus

BASE = "https://brupop-apiserver.test:8443"
RESOURCE = f"{BASE}/bottlerocket-node-resource"
RETRY_FOR = 60.0
CAP = 10.0
STATUS = ShadowStatus(
    current_version="1.20.3", target_version="1.21.0", current_state=ShadowState.IDLE, crash_count=2
)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("token-1\n")
    return path


@pytest.fixture
def backoffs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The upper bound of every back-off drawn; the draw is that bound (the longest wait)."""
    bounds: list[float] = []

    def uniform(low: float, high: float) -> float:
        assert low == 0
        bounds.append(high)
        return high

    monkeypatch.setattr(apiclient, "random", SimpleNamespace(uniform=uniform))
    return bounds


class FakeTime:
    """The client's clock and sleep: sleeping moves the clock, nothing waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
async def client(
    token_file: Path, backoffs: list[float], fake_time: FakeTime
) -> AsyncIterator[ApiserverClient]:
    api = ApiserverClient(
        base_url=BASE,
        node_name="n1",
        token_file=token_file,
        ca_file=None,
        retry_for=RETRY_FOR,
        backoff_cap=CAP,
        clock=fake_time.clock,
        sleep=fake_time.sleep,
    )
    api.node_uid = "uid-n1"
    yield api
    await api.close()


@pytest.fixture
def mocked() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


async def test_every_call_names_the_node_and_carries_the_token(
    mocked: respx.MockRouter, client: ApiserverClient
) -> None:
    route = mocked.post(f"{RESOURCE}/uncordon").respond(200)
    await client.uncordon()
    headers = route.calls.last.request.headers
    assert (headers["BrupopNodeName"], headers["BrupopNodeUid"], headers["BrupopK8sAuthToken"]) == (
        "n1",
        "uid-n1",
        "token-1",
    )


async def test_the_token_is_read_again_for_every_call(
    mocked: respx.MockRouter, client: ApiserverClient, token_file: Path
) -> None:
    route = mocked.post(f"{RESOURCE}/uncordon").respond(200)
    await client.uncordon()
    token_file.write_text("token-2\n")  # the kubelet rotated the projected token
    await client.uncordon()
    assert [call.request.headers["BrupopK8sAuthToken"] for call in route.calls] == ["token-1", "token-2"]


async def test_an_unreadable_token_fails_before_any_request(
    mocked: respx.MockRouter, client: ApiserverClient, token_file: Path
) -> None:
    route = mocked.post(f"{RESOURCE}/uncordon").respond(200)
    token_file.unlink()
    with pytest.raises(ApiserverError, match="cannot read the service account token"):
        await client.uncordon()
    assert not route.called


async def test_server_errors_are_retried_with_growing_backoff(
    mocked: respx.MockRouter, client: ApiserverClient, backoffs: list[float]
) -> None:
    route = mocked.post(f"{RESOURCE}/cordon-and-drain").mock(
        side_effect=[httpx.Response(500), httpx.Response(503), httpx.Response(200)]
    )
    await client.cordon_and_drain()
    assert route.call_count == 3
    assert backoffs == [0.1, 0.2]


async def test_connection_errors_are_retried(
    mocked: respx.MockRouter, client: ApiserverClient, backoffs: list[float]
) -> None:
    route = mocked.put(RESOURCE).mock(
        side_effect=[httpx.ConnectError("connection refused"), httpx.ReadTimeout("slow"), httpx.Response(200)]
    )
    await client.update_status(STATUS)
    assert route.call_count == 3
    assert backoffs == [0.1, 0.2]


async def test_an_apiserver_restart_of_most_of_a_minute_is_waited_out(
    mocked: respx.MockRouter, client: ApiserverClient, fake_time: FakeTime
) -> None:
    down = [httpx.ConnectError("connection refused")] * 9 + [httpx.Response(503), httpx.Response(429)]
    route = mocked.put(RESOURCE).mock(side_effect=[*down, httpx.Response(200)])
    await client.update_status(STATUS)
    assert route.call_count == 12
    assert 50 < sum(fake_time.slept) < RETRY_FOR


async def test_retries_stop_once_the_budget_is_spent_with_a_capped_backoff(
    mocked: respx.MockRouter, client: ApiserverClient, backoffs: list[float], fake_time: FakeTime
) -> None:
    route = mocked.post(f"{RESOURCE}/uncordon").respond(502, text="bad gateway")
    with pytest.raises(ApiserverError) as gave_up:
        await client.uncordon()
    attempts = route.call_count
    assert str(gave_up.value) == (
        "POST /bottlerocket-node-resource/uncordon: 502 bad gateway "
        f"(gave up after {attempts} attempts in 60s)"
    )
    assert sum(fake_time.slept) == pytest.approx(RETRY_FOR)
    assert backoffs[:8] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, CAP]
    assert set(backoffs[7:]) == {CAP}


async def test_the_budget_counts_from_the_first_failure_not_from_a_long_drain(
    mocked: respx.MockRouter, client: ApiserverClient, fake_time: FakeTime
) -> None:
    calls = 0

    def drained_then_lost(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            fake_time.now += 1500  # the drain ran for 25 minutes, then the replica died
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return httpx.Response(200)

    route = mocked.post(f"{RESOURCE}/cordon-and-drain").mock(side_effect=drained_then_lost)
    await client.cordon_and_drain()
    assert route.call_count == 2


async def test_the_last_connection_error_is_named_when_giving_up(
    mocked: respx.MockRouter, client: ApiserverClient
) -> None:
    mocked.post(f"{RESOURCE}/uncordon").mock(side_effect=httpx.ConnectError(""))
    with pytest.raises(ApiserverError, match=r"uncordon: ConnectError \(gave up after \d+ attempts in 60s\)"):
        await client.uncordon()


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (httpx.Response(403, json={"error": "node n1 has a different UID"}), "node n1 has a different UID"),
        (httpx.Response(409, text="conflict, plain"), "conflict, plain"),
        (httpx.Response(409, json={"error": "drain timed out"}), "drain timed out"),
    ],
)
async def test_client_errors_are_raised_at_once_with_the_servers_reason(
    mocked: respx.MockRouter,
    client: ApiserverClient,
    backoffs: list[float],
    answer: httpx.Response,
    reason: str,
) -> None:
    route = mocked.post(RESOURCE).mock(return_value=answer)
    with pytest.raises(ApiserverError) as refused:
        await client.create_shadow()
    assert str(refused.value) == f"POST /bottlerocket-node-resource: {answer.status_code} {reason}"
    assert refused.value.status == answer.status_code
    assert route.call_count == 1
    assert backoffs == []


async def test_a_json_refusal_keeps_its_details(mocked: respx.MockRouter, client: ApiserverClient) -> None:
    body = {"error": "drain timed out", "pods": ["default/web-0"]}
    mocked.post(f"{RESOURCE}/cordon-and-drain").respond(409, json=body)
    with pytest.raises(ApiserverError) as refused:
        await client.cordon_and_drain()
    assert refused.value.detail == body


Call = Callable[[ApiserverClient], Awaitable[None]]


@pytest.mark.parametrize(
    ("call", "method", "path", "body"),
    [
        (
            ApiserverClient.create_shadow,
            "POST",
            "",
            {"node_selector": {"node_name": "n1", "node_uid": "uid-n1"}},
        ),
        (
            lambda api: api.update_status(STATUS),
            "PUT",
            "",
            {
                "current_version": "1.20.3",
                "target_version": "1.21.0",
                "current_state": "Idle",
                "crash_count": 2,
                "state_transition_failure_timestamp": None,
            },
        ),
        (ApiserverClient.cordon_and_drain, "POST", "/cordon-and-drain", None),
        (ApiserverClient.uncordon, "POST", "/uncordon", None),
        (ApiserverClient.exclude_from_lb, "POST", "/exclude-from-lb", None),
        (ApiserverClient.remove_exclusion_from_lb, "POST", "/remove-exclusion-from-lb", None),
    ],
    ids=["create_shadow", "update_status", "cordon_and_drain", "uncordon", "exclude", "remove_exclusion"],
)
async def test_each_operation_uses_its_route(
    mocked: respx.MockRouter,
    client: ApiserverClient,
    call: Call,
    method: str,
    path: str,
    body: object,
) -> None:
    route = mocked.route(method=method, url=f"{RESOURCE}{path}").respond(200, json={})
    await call(client)
    request = route.calls.last.request
    assert (request.method, request.url.path) == (method, f"/bottlerocket-node-resource{path}")
    assert (json.loads(request.content) if request.content else None) == body
