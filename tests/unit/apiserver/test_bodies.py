"""Crafted request bodies on the two routes that read one (issue 14 item 11): every bad body gets a 4xx
naming what is wrong, a ConversionReview with a bad object gets 200 with `result.status: Failed`, and
nothing answers 5xx; plus property tests that any JSON body gets a non-5xx answer."""

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brupop.apiserver.app import create_app
from brupop.apiserver.bodies import CONVERSION_BODY_LIMIT, STATUS_BODY_LIMIT
from tests.unit.apiserver.test_app import HEADERS, STATUS, Gate, Ops

V1 = "brupop.bottlerocket.aws/v1"
V2 = "brupop.bottlerocket.aws/v2"
DEEP = 100_000
STAMP = "2024-05-01T10:00:00.123456789+00:00"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(gate=Gate(), ops=Ops())
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def status_with(**changes: Any) -> bytes:
    return json.dumps({**STATUS, **changes}).encode()


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"[" * 20_000 + b"]" * 20_000, 400, "nested deeper than"),
        (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, 400, "nested deeper than"),
        (b"[" * 100 + b"]" * 100, 400, "nested deeper than 64 levels"),
        (b'{"\\ud800": 1}', 422, r"'\ud800': unknown field"),
        (status_with(current_version="\udfff"), 422, r"current_version: '\udfff' is not valid Unicode"),
        (
            status_with(state_transition_failure_timestamp="9999-12-31T23:59:59-23:59"),
            422,
            "state_transition_failure_timestamp: '9999-12-31T23:59:59-23:59' is an instant outside",
        ),
        (
            status_with(state_transition_failure_timestamp="0001-01-01T00:00:00+23:59"),
            422,
            "state_transition_failure_timestamp: '0001-01-01T00:00:00+23:59' is an instant outside",
        ),
        (
            status_with(state_transition_failure_timestamp="10000-01-01T00:00:00Z"),
            422,
            "state_transition_failure_timestamp: '10000-01-01T00:00:00Z' is not an RFC 3339 timestamp",
        ),
        (status_with(crash_count=float("nan")), 400, "NaN is not JSON"),
        (status_with(crash_count=float("inf")), 400, "Infinity is not JSON"),
        (b'{"crash_count": ' + b"9" * 5000 + b"}", 400, "not JSON"),
        (b'{"current_version": "\xff\xfe"}', 400, "not JSON"),
        (b'"\\ud800"', 422, "expected an object, got str"),
        (b"null", 422, "expected an object, got null"),
    ],
)
async def test_bad_status_bodies_are_4xx_naming_what_is_wrong(
    client: httpx.AsyncClient, body: bytes, status: int, message: str
) -> None:
    answer = await client.put("/bottlerocket-node-resource", headers=HEADERS, content=body)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"], answer.text


def review(*objects: Any, desired: str = V2, uid: Any = "uid-1") -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "ConversionReview",
        "request": {"uid": uid, "desiredAPIVersion": desired, "objects": list(objects)},
    }


def v1_shadow(**metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": V1,
        "kind": "BottlerocketShadow",
        "metadata": {"name": "brs-a", "namespace": "brupop-bottlerocket-aws", **metadata},
        "spec": {"state": "Idle", "state_transition_timestamp": None, "version": None},
    }


def with_spec(**spec: Any) -> dict[str, Any]:
    obj = v1_shadow()
    obj["spec"].update(spec)
    return obj


def nested(levels: int) -> Any:
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


def raw(value: Any) -> bytes:
    return json.dumps(value).encode()  # ensure_ascii: a lone surrogate goes out as its \u escape


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            raw(review({**v1_shadow(), "metadata": []})),
            "request.objects[0]: invalid brupop.bottlerocket.aws/v1 BottlerocketShadow: metadata: expected",
        ),
        (raw(review({**v1_shadow(), "metadata": "brs-a"})), "metadata: expected an object, got str"),
        (raw(review(v1_shadow(annotations=["a"]))), "metadata.annotations: expected an object, got list"),
        (raw(review(v1_shadow(labels="team=blue"))), "metadata.labels: expected an object, got str"),
        (raw(review(v1_shadow(labels={"team": "\udc80"}))), r"metadata.labels.team: '\udc80' is not valid"),
        (raw(review(v1_shadow(labels={"\ud83d": "x"}))), r"metadata.labels: the key '\ud83d' is not valid"),
        (
            raw(review(with_spec(state_transition_timestamp="10000-01-01T00:00:00Z"))),
            "spec.state_transition_timestamp: '10000-01-01T00:00:00Z' is not an RFC 3339 timestamp",
        ),
        (
            raw(review(with_spec(state_transition_timestamp="9999-12-31T23:59:59-23:59"))),
            "spec.state_transition_timestamp: '9999-12-31T23:59:59-23:59' is an instant outside",
        ),
        (raw(review(v1_shadow(), {"apiVersion": V1, "metadata": {"name": 7}, "spec": 1})), "objects[1]"),
        (raw(review(v1_shadow(), desired="\udfff")), r"'\udfff' is not a valid BottlerocketShadow version"),
    ],
)
async def test_a_review_with_a_bad_object_answers_200_failed_naming_it(
    client: httpx.AsyncClient, body: bytes, message: str
) -> None:
    answer = await client.post("/crdconvert", content=body)
    assert answer.status_code == 200, answer.text
    response = answer.json()["response"]
    assert response["uid"] == "uid-1"
    assert response["result"]["status"] == "Failed"
    assert response["convertedObjects"] is None
    assert message in response["result"]["message"], response["result"]["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"request":' * DEEP + b"{}" + b"}" * DEEP, "nested deeper than"),
        (raw(review({"deep": nested(70)})), "nested deeper than 64 levels"),
        (b'{"request": {"objects": [NaN]}}', "NaN is not JSON"),
        (b"\xff", "not JSON"),
        (raw(review(v1_shadow(), uid="\ud800")), r"request.uid: '\ud800' is not valid Unicode"),
        (raw(review(v1_shadow(), uid=["u"])), "request.uid: expected a string, got list"),
        (raw([review(v1_shadow())]), "a ConversionReview must be a JSON object"),
    ],
)
async def test_a_body_that_is_no_conversion_review_is_a_400_naming_why(
    client: httpx.AsyncClient, body: bytes, message: str
) -> None:
    answer = await client.post("/crdconvert", content=body)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"], answer.text


# Any JSON at all: scalars, lone surrogates in keys and strings, nesting; as a status body, as a
# ConversionReview, and as the objects inside one.
surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
texts = st.text(st.characters(codec="utf-8") | surrogates, max_size=8)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)
shadow_like = st.fixed_dictionaries(
    {"apiVersion": st.sampled_from([V1, V2]), "kind": st.just("BottlerocketShadow")},
    optional={"metadata": json_values, "spec": json_values, "status": json_values},
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(body=json_values)
async def test_any_json_status_body_gets_a_non_5xx_answer(body: Any) -> None:
    app = create_app(gate=Gate(), ops=Ops())
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        answer = await http.put("/bottlerocket-node-resource", headers=HEADERS, content=raw(body))
    assert answer.status_code < 500, answer.text


reviews = st.builds(
    lambda objects, desired: review(*objects, desired=desired),
    st.lists(shadow_like | json_values, max_size=3),
    st.sampled_from([V1, V2]) | texts,
)


@FUZZ
@given(body=json_values | reviews)
async def test_any_json_conversion_body_gets_a_non_5xx_answer(body: Any) -> None:
    app = create_app(gate=Gate(), ops=Ops())
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        answer = await http.post("/crdconvert", content=raw(body))
    assert answer.status_code < 500, answer.text
    if answer.status_code == 200:
        assert answer.json()["response"]["result"]["status"] in ("Success", "Failed")


# Item 10 of issue 14: bodies are capped per route, by Content-Length first and while they arrive.
async def chunks(total: int, size: int = 65536) -> AsyncIterator[bytes]:
    for _ in range(total // size):
        yield b" " * size


@pytest.mark.parametrize(
    ("method", "path", "limit"),
    [
        ("PUT", "/bottlerocket-node-resource", STATUS_BODY_LIMIT),
        ("POST", "/crdconvert", CONVERSION_BODY_LIMIT),
    ],
)
async def test_a_body_over_the_routes_limit_is_a_413(
    client: httpx.AsyncClient, method: str, path: str, limit: int
) -> None:
    declared = await client.request(
        method, path, headers={**HEADERS, "Content-Length": str(50_000_000)}, content=b"{}"
    )
    assert declared.status_code == 413, declared.text
    assert declared.json() == {
        "error": f"the request body is larger than this route's limit of {limit} bytes"
    }
    streamed = await client.request(method, path, headers=HEADERS, content=chunks(limit + 2 * 65536))
    assert streamed.status_code == 413, streamed.text
    assert "larger than this route's limit" in streamed.json()["error"]


def batch_of_shadows(count: int) -> bytes:
    """A ConversionReview of `count` v2 shadows as the kube-apiserver stores them (status, owner, two
    managedFields entries): about 1.4 kB each, what a kube-apiserver that converts a list at once sends."""
    obj = {
        "apiVersion": V2,
        "kind": "BottlerocketShadow",
        "metadata": {
            "name": "brs-ip-10-0-1-17.us-west-2.compute.internal",
            "namespace": "brupop-bottlerocket-aws",
            "uid": "8d3f4b2a-0f5e-4c1d-9a7b-6e5d4c3b2a10",
            "resourceVersion": "123456",
            "generation": 3,
            "creationTimestamp": "2024-05-01T10:00:00Z",
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "name": "ip-10-0-1-17.us-west-2.compute.internal",
                    "uid": "00000000-0000-4000-8000-000000000017",
                }
            ],
            "managedFields": [
                {
                    "manager": manager,
                    "operation": "Update",
                    "apiVersion": V2,
                    "time": "2024-05-01T10:00:00Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {
                        "f:metadata": {"f:ownerReferences": {".": {}, 'k:{"uid":"x"}': {}}},
                        "f:spec": {},
                    },
                }
                for manager in ("brupop-python", "brupop-python-status")
            ],
        },
        "spec": {
            "state": "StagedAndPerformedUpdate",
            "state_transition_timestamp": STAMP,
            "version": "1.20.3",
        },
        "status": {
            "current_version": "1.20.2",
            "target_version": "1.20.3",
            "current_state": "StagedAndPerformedUpdate",
            "crash_count": 2,
            "state_transition_failure_timestamp": STAMP,
        },
    }
    return raw(review(*[obj] * count, desired=V1))


async def test_a_review_of_500_shadows_fits_and_is_converted(client: httpx.AsyncClient) -> None:
    body = batch_of_shadows(500)
    assert 600_000 < len(body) < CONVERSION_BODY_LIMIT / 3
    answer = await client.post("/crdconvert", content=body)
    assert answer.status_code == 200
    response = answer.json()["response"]
    assert response["result"]["status"] == "Success"
    assert len(response["convertedObjects"]) == 500
    assert {o["apiVersion"] for o in response["convertedObjects"]} == {V1}
