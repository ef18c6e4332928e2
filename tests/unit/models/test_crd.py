from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from brupop.models.crd import custom_resource_definition, structural_schema, update_policy_crd
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
    age = ("Age", ".metadata.creationTimestamp")  # not shown by kubectl once a CRD has its own columns
    assert columns == {"v2": [*expected, ("Crash Count", ".status.crash_count"), age], "v1": [*expected, age]}
    assert versions()["v2"]["additionalPrinterColumns"][-1]["type"] == "date"


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
    # Optional fields are not nullable: the API server drops a null written to them, so an unset field is
    # absent (kubectl shows `<no value>` for a null).
    assert spec["properties"]["version"] == {
        "pattern": SEMVER_PATTERN,
        "type": "string",
        "description": spec["properties"]["version"]["description"],
    }
    assert status["nullable"] is True
    assert sorted(status["required"]) == ["crash_count", "current_state", "current_version", "target_version"]
    crash = status["properties"]["crash_count"]
    assert (crash["type"], crash["format"], crash["minimum"]) == ("integer", "uint32", 0)
    assert "nullable" not in status["properties"]["state_transition_failure_timestamp"]

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
    class Odd(Wire):
        anything: dict[str, Any]

    with pytest.raises(TypeError, match="no CRD schema"):
        structural_schema(Odd)


def test_update_policy_crd_identity_and_columns() -> None:
    crd = update_policy_crd()
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "updatepolicies.brupop.bottlerocket.aws"
    assert spec["names"] == {
        "kind": "UpdatePolicy",
        "plural": "updatepolicies",
        "singular": "updatepolicy",
        "shortNames": ["brup"],
    }
    assert spec["scope"] == "Cluster"
    assert "conversion" not in spec
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    columns = [(c["name"], c["jsonPath"], c.get("priority", 0)) for c in version["additionalPrinterColumns"]]
    assert columns == [
        ("State", ".status.state", 0),
        ("Selected", ".status.selected", 0),
        ("Up-To-Date", ".status.upToDate", 0),
        ("Updating", ".status.updating", 0),
        ("Failed", ".status.failed", 0),
        ("Held", ".status.held", 0),
        ("Limit", ".status.limit", 0),
        ("Window", ".status.window", 0),
        ("Next-Opening", ".status.nextOpening", 1),
        ("Age", ".metadata.creationTimestamp", 0),
    ]


def walk(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}[{index}]")


def test_update_policy_schema_is_structural_bounded_and_prunes_nulls_in_spec() -> None:
    schema = update_policy_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]
    assert spec["required"] == ["nodeSelector"]
    for path, node in walk(spec):
        assert "nullable" not in node, path
        if node.get("type") == "string" and "enum" not in node:
            assert "maxLength" in node, path  # CEL cost is estimated from these bounds
        if node.get("type") == "array":
            assert "maxItems" in node, path
        if node.get("type") == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, path
    assert spec["properties"]["maxConcurrent"]["x-kubernetes-int-or-string"] is True
    assert spec["properties"]["paused"]["type"] == "boolean"
    blackout = spec["properties"]["schedule"]["properties"]["blackouts"]["items"]
    assert blackout["x-kubernetes-validations"][0]["fieldPath"] == ".end"
    labels = spec["properties"]["nodeSelector"]["properties"]["matchLabels"]
    assert labels["additionalProperties"]["pattern"].startswith("^")
    assert schema["properties"]["status"]["properties"]["nextOpening"]["nullable"] is True
