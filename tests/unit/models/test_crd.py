from dataclasses import dataclass
from typing import Any

import pytest

from brupop.models.crd import custom_resource_definition, structural_schema
from brupop.models.shadow import ShadowStatus
from brupop.models.version import SEMVER_PATTERN
from brupop.models.wire import Wire


def versions() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in custom_resource_definition()["spec"]["versions"]}


def test_identity_names_and_scope() -> None:
    crd = custom_resource_definition()
    assert crd["metadata"]["name"] == "bottlerocketshadows.brupop.bottlerocket.aws"
    spec = crd["spec"]
    assert spec["group"] == "brupop.bottlerocket.aws"
    assert spec["names"] == {
        "kind": "BottlerocketShadow",
        "plural": "bottlerocketshadows",
        "singular": "bottlerocketshadow",
        "shortNames": ["brs"],
    }
    assert spec["scope"] == "Namespaced"
    assert [(v["name"], v["served"], v["storage"]) for v in spec["versions"]] == [
        ("v2", True, True),
        ("v1", True, False),
    ]
    assert all(v["subresources"] == {"status": {}} for v in spec["versions"])


def test_conversion_webhook_and_ca_injection_point_at_real_objects() -> None:
    crd = custom_resource_definition(namespace="ops")
    webhook = crd["spec"]["conversion"]["webhook"]
    assert crd["spec"]["conversion"]["strategy"] == "Webhook"
    assert webhook["clientConfig"]["service"] == {
        "name": "brupop-apiserver",
        "namespace": "ops",
        "path": "/crdconvert",
        "port": 443,
    }
    assert webhook["conversionReviewVersions"] == ["v1"]
    assert (
        crd["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == "ops/brupop-apiserver-certificate"
    )


def test_printer_columns() -> None:
    columns = {
        name: [(c["name"], c["jsonPath"]) for c in v["additionalPrinterColumns"]]
        for name, v in versions().items()
    }
    expected = [
        ("State", ".status.current_state"),
        ("Version", ".status.current_version"),
        ("Target State", ".spec.state"),
        ("Target Version", ".spec.version"),
    ]
    assert columns == {"v2": [*expected, ("Crash Count", ".status.crash_count")], "v1": expected}


def test_v2_schema_is_structural_and_matches_the_wire_format() -> None:
    schema = versions()["v2"]["schema"]["openAPIV3Schema"]
    spec, status = schema["properties"]["spec"], schema["properties"]["status"]
    assert spec["required"] == ["state"]
    assert spec["properties"]["state"]["enum"] == [
        "Idle",
        "StagedAndPerformedUpdate",
        "RebootedIntoUpdate",
        "MonitoringUpdate",
        "ErrorReset",
    ]
    assert spec["properties"]["version"] == {
        "pattern": SEMVER_PATTERN,
        "type": "string",
        "description": spec["properties"]["version"]["description"],
        "nullable": True,
    }
    assert status["nullable"] is True
    assert sorted(status["required"]) == ["crash_count", "current_state", "current_version", "target_version"]
    crash = status["properties"]["crash_count"]
    assert (crash["type"], crash["format"], crash["minimum"]) == ("integer", "uint32", 0)
    assert status["properties"]["state_transition_failure_timestamp"]["nullable"] is True

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            assert not {"$ref", "anyOf", "additionalProperties", "title", "$defs"} & node.keys()
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)


def test_v1_schema_has_v1_states_and_no_crash_tracking() -> None:
    schema = versions()["v1"]["schema"]["openAPIV3Schema"]["properties"]
    assert "crash_count" not in schema["status"]["properties"]
    assert "StagedUpdate" in schema["spec"]["properties"]["state"]["enum"]


def test_types_without_a_schema_are_refused() -> None:
    @dataclass(frozen=True, slots=True, kw_only=True)
    class Nested(Wire):
        status: ShadowStatus

    with pytest.raises(TypeError, match="no CRD schema"):
        structural_schema(Nested)
