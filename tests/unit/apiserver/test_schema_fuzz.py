"""schemathesis: requests generated from the app's own OpenAPI schema never get a 5xx.

The gate enforces the headers but accepts any values, and the operations succeed, so generated bodies and
headers reach every route's validation and handler."""

from collections.abc import Mapping
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings

from brupop.apiserver.app import create_app
from brupop.apiserver.auth import NodeIdentity, require_headers
from brupop.models.shadow import ShadowStatus

SERVED: list[int] = []


class AnyCaller:
    async def identify(self, headers: Mapping[str, str]) -> NodeIdentity:
        name, uid, _ = require_headers(headers)
        return NodeIdentity(name=name, uid=uid)


class Accepting:
    async def create_shadow(self, node: NodeIdentity) -> dict[str, Any]:
        return {"metadata": {"name": f"brs-{node.name}"}}

    async def update_status(self, node: NodeIdentity, status: ShadowStatus) -> dict[str, Any]:
        return {}

    async def cordon_and_drain(self, node: NodeIdentity) -> None: ...
    async def uncordon(self, node: NodeIdentity) -> None: ...
    async def exclude_from_lb(self, node: NodeIdentity) -> None: ...
    async def remove_exclusion_from_lb(self, node: NodeIdentity) -> None: ...


schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(gate=AnyCaller(), ops=Accepting()))


@schema.parametrize()
@settings(max_examples=70, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_generated_request_gets_a_5xx(case: schemathesis.Case) -> None:
    response = case.call()
    SERVED.append(response.status_code)
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text)


def test_enough_requests_were_generated() -> None:
    # Runs after the generated tests in this module (pytest keeps file order).
    assert len(SERVED) >= 500, len(SERVED)
