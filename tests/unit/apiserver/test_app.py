from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pytest

from brupop.apiserver.app import OperationError, create_app
from brupop.apiserver.auth import AuthError, NodeIdentity, require_headers
from brupop.models.shadow import ShadowStatus

NODE_UID = "6f1d2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b"
HEADERS = {"BrupopNodeName": "node-a", "BrupopNodeUid": NODE_UID, "BrupopK8sAuthToken": "good"}
STATUS = {
    "current_version": "1.20.3",
    "target_version": "1.21.0",
    "current_state": "Idle",
    "crash_count": 0,
    "state_transition_failure_timestamp": None,
}

ROUTES = [
    ("POST", "/bottlerocket-node-resource"),
    ("PUT", "/bottlerocket-node-resource"),
    ("POST", "/bottlerocket-node-resource/cordon-and-drain"),
    ("POST", "/bottlerocket-node-resource/uncordon"),
    ("POST", "/bottlerocket-node-resource/exclude-from-lb"),
    ("POST", "/bottlerocket-node-resource/remove-exclusion-from-lb"),
]


class Gate:
    async def identify(self, headers: Mapping[str, str]) -> NodeIdentity:
        name, uid, token = require_headers(headers)
        if token != "good":
            raise AuthError(403, "bad token")
        return NodeIdentity(name=name, uid=uid)


class Ops:
    def __init__(self) -> None:
        self.calls: list[tuple[str, NodeIdentity, Any]] = []

    async def create_shadow(self, node: NodeIdentity) -> dict[str, Any]:
        self.calls.append(("create", node, None))
        return {"metadata": {"name": f"brs-{node.name}"}}

    async def update_status(self, node: NodeIdentity, status: ShadowStatus) -> dict[str, Any]:
        self.calls.append(("status", node, status))
        return {}

    async def cordon_and_drain(self, node: NodeIdentity) -> None:
        self.calls.append(("drain", node, None))
        if node.name == "stuck":
            raise OperationError(
                409, "drain timed out", {"pods": ["default/web-0"], "blocking_pdbs": ["web"]}
            )

    async def uncordon(self, node: NodeIdentity) -> None:
        self.calls.append(("uncordon", node, None))

    async def exclude_from_lb(self, node: NodeIdentity) -> None:
        self.calls.append(("exclude", node, None))

    async def remove_exclusion_from_lb(self, node: NodeIdentity) -> None:
        self.calls.append(("include", node, None))


@pytest.fixture
def ops() -> Ops:
    return Ops()


@pytest.fixture
async def client(ops: Ops) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(gate=Gate(), ops=ops)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        yield c


async def test_ping_and_metrics_need_no_auth(client: httpx.AsyncClient) -> None:
    assert (await client.get("/ping")).text == "pong"
    await client.post("/bottlerocket-node-resource", headers=HEADERS)
    metrics = (await client.get("/metrics")).text
    assert (
        'brupop_apiserver_requests_total{code="200",method="POST",route="/bottlerocket-node-resource"} 1.0'
        in metrics
    )
    assert "brupop_apiserver_request_duration_seconds_bucket" in metrics


async def test_create_uses_the_headers_node_and_ignores_the_body(client: httpx.AsyncClient, ops: Ops) -> None:
    answer = await client.post(
        "/bottlerocket-node-resource",
        headers=HEADERS,
        json={"node_selector": {"node_name": "someone-else", "node_uid": "x"}},
    )
    assert answer.status_code == 200
    assert answer.json() == {"metadata": {"name": "brs-node-a"}}
    assert ops.calls == [("create", NodeIdentity("node-a", NODE_UID), None)]


async def test_status_update_validates_and_echoes(client: httpx.AsyncClient, ops: Ops) -> None:
    answer = await client.put("/bottlerocket-node-resource", headers=HEADERS, json=STATUS)
    assert answer.status_code == 200
    assert answer.json() == STATUS
    assert ops.calls[0][2] == ShadowStatus.from_wire(STATUS)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**STATUS, "crash_count": -3}, "crash_count"),
        ({**STATUS, "current_version": "v1"}, "current_version"),
        ({k: v for k, v in STATUS.items() if k != "current_state"}, "current_state"),
        ({**STATUS, "extra_field": 1}, "extra_field"),
    ],
)
async def test_bad_status_bodies_get_422_naming_the_field(
    client: httpx.AsyncClient, ops: Ops, body: dict[str, Any], field: str
) -> None:
    answer = await client.put("/bottlerocket-node-resource", headers=HEADERS, json=body)
    assert answer.status_code == 422
    assert field in answer.text
    assert ops.calls == []


async def test_non_json_status_body_is_a_client_error(client: httpx.AsyncClient, ops: Ops) -> None:
    answer = await client.put("/bottlerocket-node-resource", headers=HEADERS, content=b"{not json")
    assert 400 <= answer.status_code < 500
    assert ops.calls == []


@pytest.mark.parametrize(
    ("path", "call"),
    [
        ("cordon-and-drain", "drain"),
        ("uncordon", "uncordon"),
        ("exclude-from-lb", "exclude"),
        ("remove-exclusion-from-lb", "include"),
    ],
)
async def test_node_actions(client: httpx.AsyncClient, ops: Ops, path: str, call: str) -> None:
    answer = await client.post(f"/bottlerocket-node-resource/{path}", headers=HEADERS)
    assert answer.status_code == 200
    assert answer.content == b""
    assert ops.calls == [(call, NodeIdentity("node-a", NODE_UID), None)]


async def test_operation_errors_reach_the_caller_with_detail(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/bottlerocket-node-resource/cordon-and-drain", headers={**HEADERS, "BrupopNodeName": "stuck"}
    )
    assert answer.status_code == 409
    assert answer.json() == {"error": "drain timed out", "pods": ["default/web-0"], "blocking_pdbs": ["web"]}


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({**HEADERS, "BrupopK8sAuthToken": "forged"}, 403)],
)
async def test_every_node_route_is_guarded(
    client: httpx.AsyncClient, ops: Ops, headers: dict[str, str], status: int
) -> None:
    for method, path in ROUTES:
        answer = await client.request(method, path, headers=headers, json=STATUS)
        assert answer.status_code == status, (method, path)
        assert "error" in answer.json()
    assert ops.calls == []


async def test_conversion_webhook(client: httpx.AsyncClient) -> None:
    review = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "ConversionReview",
        "request": {"uid": "abc", "desiredAPIVersion": "brupop.bottlerocket.aws/v1", "objects": []},
    }
    answer = await client.post("/crdconvert", json=review)
    assert answer.status_code == 200
    assert answer.json()["response"] == {
        "uid": "abc",
        "result": {"status": "Success", "message": None},
        "convertedObjects": [],
    }
    assert (await client.post("/crdconvert", content=b"nope")).status_code == 400
    assert (await client.post("/crdconvert", json=[1])).status_code == 400
