"""The Prometheus client against answers shaped as the HTTP API documents them (respx stands in for the
server; tests/integ/test_prometheus.py asks a real one): typed results, every kind of failure as a fact,
credentials read afresh, and no answer whatever its body that makes `query` raise."""

import asyncio
import json
import socket
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from hypothesis import given
from hypothesis import strategies as st

from brupop.models.health import (
    Answer,
    BadAnswer,
    HttpError,
    Matrix,
    NotSent,
    QueryError,
    Sample,
    Scalar,
    Series,
    String,
    TimedOut,
    Unreachable,
    Vector,
)
from brupop.models.policy import PrometheusGate
from brupop.observe.prometheus import PrometheusClient, outcome
from integ.pki import CertificateAuthority

URL = "http://prometheus.test:9090"
QUERY_URL = f"{URL}/api/v1/query"
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def success(result_type: str, result: Any, **extra: Any) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": result_type, "result": result}, **extra}


def client(**options: Any) -> PrometheusClient:
    return PrometheusClient(url=URL, timeout=timedelta(seconds=2), clock=lambda: NOW, **options)


@respx.mock
async def test_a_vector_comes_back_typed_with_the_query_and_the_time_it_was_asked() -> None:
    route = respx.get(QUERY_URL).mock(
        return_value=httpx.Response(
            200,
            json=success(
                "vector",
                [
                    {
                        "metric": {"alertname": "KubeNodeNotReady", "alertstate": "firing"},
                        "value": [1.5, "1"],
                    },
                    {"metric": {"__name__": "up"}, "histogram": [1.5, {"count": "3", "sum": "2"}]},
                    {"metric": {}, "value": [1.5, "NaN"]},
                ],
                warnings=["partial answer"],
            ),
        )
    )
    async with client() as prometheus:
        found = await prometheus.query('ALERTS{alertstate="firing"}')
    assert isinstance(found, Answer)
    assert found.query == 'ALERTS{alertstate="firing"}'
    assert found.at == NOW
    assert found.warnings == ("partial answer",)
    assert isinstance(found.result, Vector)
    first, histogram, nan = found.result.samples
    assert first == Sample(labels={"alertname": "KubeNodeNotReady", "alertstate": "firing"}, value=1.0)
    assert histogram.value is None
    assert nan.value != nan.value  # NaN
    sent = route.calls.last.request
    assert sent.url.params["query"] == 'ALERTS{alertstate="firing"}'
    assert sent.url.params["timeout"] == "2"
    assert "time" not in sent.url.params
    assert "Authorization" not in sent.headers


@respx.mock
async def test_a_query_at_a_given_time_says_so_and_a_path_prefix_is_kept() -> None:
    route = respx.get("https://example.test/prometheus/api/v1/query").mock(
        return_value=httpx.Response(200, json=success("scalar", [1.5, "+Inf"]))
    )
    async with PrometheusClient(url="https://example.test/prometheus/", timeout=timedelta(seconds=1)) as p:
        found = await p.query("vector(1)", at=datetime(2025, 6, 1, tzinfo=UTC))
    assert isinstance(found, Answer)
    assert found.result == Scalar(float("inf"))
    assert route.calls.last.request.url.params["time"] == "1748736000.000"


@pytest.mark.parametrize(
    ("result_type", "result", "expected"),
    [
        ("vector", [], Vector(())),
        ("scalar", [1, "-2.5"], Scalar(-2.5)),
        ("string", [1, "hello"], String("hello")),
        (
            "matrix",
            [{"metric": {"job": "a"}, "values": [[2, "1"], [1, "0"]], "histograms": [[3, {"count": "1"}]]}],
            Matrix((Series(labels={"job": "a"}, points=((1.0, 0.0), (2.0, 1.0), (3.0, None))),)),
        ),
    ],
)
def test_every_result_type_is_read(result_type: str, result: Any, expected: Any) -> None:
    found = outcome(
        url=URL, query="q", asked=NOW, status=200, body=json.dumps(success(result_type, result)).encode()
    )
    assert isinstance(found, Answer)
    assert found.result == expected


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            400,
            {
                "status": "error",
                "errorType": "bad_data",
                "error": 'invalid parameter "query": 1:5: parse error',
            },
            QueryError(url=URL, error_type="bad_data", message='invalid parameter "query": 1:5: parse error'),
        ),
        (
            422,
            {
                "status": "error",
                "errorType": "execution",
                "error": "query processing would load too many samples",
            },
            QueryError(
                url=URL, error_type="execution", message="query processing would load too many samples"
            ),
        ),
        (
            503,
            {"status": "error", "errorType": "timeout", "error": "query timed out in expression evaluation"},
            QueryError(url=URL, error_type="timeout", message="query timed out in expression evaluation"),
        ),
        (200, {"status": "error"}, QueryError(url=URL, error_type="unknown", message="(no message)")),
        (
            502,
            "<html><body>Bad   Gateway</body></html>",
            HttpError(url=URL, status=502, body="<html><body>Bad Gateway</body></html>"),
        ),
        (401, "", HttpError(url=URL, status=401, body="")),
        (302, "", HttpError(url=URL, status=302, body="")),
        (200, "<html>login</html>", BadAnswer(url=URL, reason="not JSON: '<html>login</html>'")),
        (200, [], BadAnswer(url=URL, reason='expected an object with "status": "success"')),
        (200, {"status": "success"}, BadAnswer(url=URL, reason='"data" is not an object')),
    ],
)
def test_errors_are_facts_with_prometheus_own_words(status: int, body: Any, expected: Any) -> None:
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    assert outcome(url=URL, query="q", asked=NOW, status=status, body=raw) == expected


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"resultType": "histogram", "result": []}, "is not vector, matrix, scalar or string"),
        ({"resultType": "vector", "result": {}}, "data.result is not a list"),
        ({"resultType": "vector", "result": [7]}, "data.result[0]: not an object"),
        ({"resultType": "vector", "result": [{"metric": {"a": 1}, "value": [1, "1"]}]}, "labels are not"),
        ({"resultType": "vector", "result": [{"metric": [], "value": [1, "1"]}]}, "labels are not"),
        ({"resultType": "vector", "result": [{"value": [1]}]}, "expected [time, value]"),
        ({"resultType": "vector", "result": [{"value": ["now", "1"]}]}, "the time is not a number"),
        ({"resultType": "vector", "result": [{"value": [True, "1"]}]}, "the time is not a number"),
        ({"resultType": "vector", "result": [{"value": [1, 1]}]}, "the value is not a string"),
        ({"resultType": "vector", "result": [{"value": [1, "one"]}]}, "'one' is not a number"),
        ({"resultType": "vector", "result": [{"histogram": 3}]}, "expected [time, value]"),
        ({"resultType": "matrix", "result": [{"values": {}}]}, "values and histograms must be lists"),
        ({"resultType": "matrix", "result": [{"values": [[1, "x"]]}]}, "data.result[0].values[0]"),
        ({"resultType": "string", "result": [1, 2]}, "a string result's value is not a string"),
        ({"resultType": "scalar", "result": None}, "expected [time, value]"),
    ],
)
def test_answers_that_do_not_follow_the_api_are_bad_answers_naming_the_place(
    data: Any, fragment: str
) -> None:
    body = json.dumps({"status": "success", "data": data}).encode()
    found = outcome(url=URL, query="q", asked=NOW, status=200, body=body)
    assert isinstance(found, BadAnswer)
    assert fragment in found.reason


def test_warnings_must_be_a_list() -> None:
    body = json.dumps({**success("vector", []), "warnings": "oops"}).encode()
    assert outcome(url=URL, query="q", asked=NOW, status=200, body=body) == BadAnswer(
        url=URL, reason='"warnings" is not a list'
    )


def test_an_answer_nested_too_deep_is_not_json() -> None:
    found = outcome(url=URL, query="q", asked=NOW, status=200, body=b"[" * 100_000)
    assert isinstance(found, BadAnswer)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
SHAPED = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["success", "error"]) | JSON,
        "data": st.fixed_dictionaries(
            {"resultType": st.sampled_from(["vector", "matrix", "scalar", "string"]) | JSON, "result": JSON}
        )
        | JSON,
    }
)


@given(
    status=st.integers(100, 599),
    body=st.binary(max_size=64)
    | JSON.map(json.dumps).map(str.encode)
    | SHAPED.map(json.dumps).map(str.encode),
)
def test_no_answer_makes_the_reader_raise(status: int, body: bytes) -> None:
    found = outcome(url=URL, query="q", asked=NOW, status=status, body=body)
    assert isinstance(found, Answer | BadAnswer | QueryError | HttpError)


def failing(error: httpx.RequestError, cause: BaseException) -> Any:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error from cause

    return fail


def unverified() -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_message = "unable to get local issuer certificate"
    return error


@pytest.mark.parametrize(
    ("cause", "reason"),
    [
        (OSError(111, "Connect call failed ('10.0.0.1', 9090)"), "connection refused"),
        (socket.gaierror(-2, "Name or service not known"), "name or service not known"),
        (unverified(), "TLS certificate not trusted (unable to get local issuer certificate)"),
        (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), "TLS failed ("),
        (ValueError("odd"), "all connection attempts failed"),
    ],
)
async def test_a_failed_connection_is_unreachable_with_its_root_cause(
    cause: BaseException, reason: str
) -> None:
    error = httpx.ConnectError("All connection attempts failed")
    async with client(transport=httpx.MockTransport(failing(error, cause))) as prometheus:
        found = await prometheus.query("up")
    assert isinstance(found, Unreachable)
    assert found.reason.startswith(reason)


@respx.mock
async def test_a_connection_reset_is_unreachable() -> None:
    respx.get(QUERY_URL).mock(
        side_effect=httpx.RemoteProtocolError("Server disconnected without sending a response.")
    )
    async with client() as prometheus:
        found = await prometheus.query("up")
    assert found == Unreachable(url=URL, reason="server disconnected without sending a response.")


@respx.mock
async def test_httpx_timeouts_and_a_server_that_never_answers_are_timeouts() -> None:
    respx.get(QUERY_URL).mock(side_effect=httpx.ReadTimeout("timed out"))
    async with client() as prometheus:
        assert await prometheus.query("up") == TimedOut(url=URL, after=timedelta(seconds=2))

    never = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        await never.wait()
        raise AssertionError("unreachable")

    respx.get(QUERY_URL).mock(side_effect=hang)
    async with PrometheusClient(url=URL, timeout=timedelta(milliseconds=50)) as prometheus:
        assert await prometheus.query("up") == TimedOut(url=URL, after=timedelta(milliseconds=50))


@respx.mock
async def test_a_cancelled_caller_is_cancelled_not_timed_out() -> None:
    started = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    respx.get(QUERY_URL).mock(side_effect=hang)
    async with client() as prometheus:
        task = asyncio.create_task(prometheus.query("up"))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@respx.mock
async def test_an_answer_larger_than_the_limit_is_not_read_whole() -> None:
    many = [{"metric": {"i": str(i)}, "value": [1, "1"]} for i in range(1000)]
    respx.get(QUERY_URL).mock(return_value=httpx.Response(200, json=success("vector", many)))
    async with client(max_answer=10_000) as prometheus:
        found = await prometheus.query("up")
    assert found == BadAnswer(url=URL, reason="the answer is larger than 10000 bytes: narrow the query")


@respx.mock
async def test_a_body_that_cannot_be_decoded_is_a_bad_answer() -> None:
    respx.get(QUERY_URL).mock(
        return_value=httpx.Response(
            200, stream=httpx.ByteStream(b"not gzip"), headers={"Content-Encoding": "gzip"}
        )
    )
    async with client() as prometheus:
        found = await prometheus.query("up")
    assert isinstance(found, BadAnswer)
    assert "cannot be decoded" in found.reason


@respx.mock
async def test_the_bearer_token_is_read_again_for_every_query(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    route = respx.get(QUERY_URL).mock(return_value=httpx.Response(200, json=success("vector", [])))
    async with client(bearer_token_file=str(token)) as prometheus:
        await prometheus.query("up")
        token.write_text("rotated")
        await prometheus.query("up")
    assert [c.request.headers["Authorization"] for c in route.calls] == ["Bearer first", "Bearer rotated"]


@pytest.mark.parametrize("content", ["", "  \n", "two words", "t\u00f6ken"])
@respx.mock
async def test_a_token_file_without_a_token_sends_nothing(tmp_path: Path, content: str) -> None:
    token = tmp_path / "token"
    token.write_text(content)
    route = respx.get(QUERY_URL).mock(return_value=httpx.Response(200, json=success("vector", [])))
    async with client(bearer_token_file=str(token)) as prometheus:
        found = await prometheus.query("up")
    assert found == NotSent(
        url=URL, reason=f"the bearer token file {token} holds no token (one printable word)"
    )
    assert not route.called


async def test_a_missing_token_or_ca_file_sends_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    async with client(bearer_token_file=str(missing)) as prometheus:
        assert await prometheus.query("up") == NotSent(
            url=URL, reason=f"cannot read {missing}: no such file or directory"
        )
    async with client(ca_file=str(missing)) as prometheus:
        assert await prometheus.query("up") == NotSent(
            url=URL, reason=f"cannot read {missing}: no such file or directory"
        )


async def test_a_ca_file_without_certificates_sends_nothing(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("not a certificate")
    async with client(ca_file=str(ca)) as prometheus:
        found = await prometheus.query("up")
    assert isinstance(found, NotSent)
    assert f"the CA file {ca} holds no PEM certificates" in found.reason


@respx.mock
async def test_a_changed_ca_file_is_loaded_again(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = CertificateAuthority.create(tmp_path / "one")
    second = CertificateAuthority.create(tmp_path / "two")
    ca = tmp_path / "bundle.crt"
    ca.write_bytes(first.cert_file.read_bytes())
    respx.get(QUERY_URL).mock(return_value=httpx.Response(200, json=success("vector", [])))
    async with client(ca_file=str(ca)) as prometheus:
        await prometheus.query("up")
        before = prometheus._http
        await prometheus.query("up")
        assert prometheus._http is before
        ca.write_bytes(second.cert_file.read_bytes() + first.cert_file.read_bytes())
        await prometheus.query("up")
        assert prometheus._http is not before


@respx.mock
async def test_a_client_for_a_policy_gate_takes_its_settings(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("secret")
    gate = PrometheusGate.from_wire(
        {"url": "https://p.test:9091/", "query": "ALERTS", "timeout": "1m", "bearerTokenFile": str(token)}
    )
    route = respx.get("https://p.test:9091/api/v1/query").mock(
        return_value=httpx.Response(200, json=success("vector", []))
    )
    async with PrometheusClient.for_source(gate) as prometheus:
        assert prometheus.timeout == timedelta(minutes=1)
        assert isinstance(await prometheus.query(gate.query), Answer)
    assert route.calls.last.request.headers["Authorization"] == "Bearer secret"
    assert route.calls.last.request.url.params["timeout"] == "60"
