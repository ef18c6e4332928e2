"""The BottlerocketShadow CustomResourceDefinition, derived from the pydantic models so the schema the
cluster enforces can never drift from what the programs read and write.

Kubernetes wants a *structural* schema: no `$ref`, `nullable: true` instead of `anyOf [X, null]`, no
`additionalProperties` beside `properties`, no titles. `structural_schema` rewrites pydantic's JSON
schema into that form.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from brupop.models import constants as c
from brupop.models.shadow import ShadowSpec, ShadowStatus
from brupop.models.shadow_v1 import ShadowSpecV1, ShadowStatusV1

_DROPPED_KEYS = frozenset({"title", "default", "additionalProperties"})


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema in the structural form Kubernetes accepts."""
    schema = model.model_json_schema(by_alias=True)
    definitions: Mapping[str, Any] = schema.pop("$defs", {})

    def rewrite(node: Mapping[str, Any]) -> dict[str, Any]:
        if "$ref" in node:
            target = definitions[node["$ref"].rsplit("/", 1)[-1]]
            extra = {k: v for k, v in node.items() if k != "$ref"}
            return rewrite({**target, **extra})
        variants = node.get("anyOf")
        if variants is not None:
            rest = [v for v in variants if v.get("type") != "null"]
            if len(rest) != 1:
                raise ValueError(f"cannot express anyOf {variants!r} in a structural schema")
            merged = rewrite(rest[0])
            merged.update(rewrite({k: v for k, v in node.items() if k != "anyOf"}))
            if len(rest) < len(variants):
                merged["nullable"] = True
            return merged
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DROPPED_KEYS:
                continue
            if key == "properties":
                out[key] = {name: rewrite(prop) for name, prop in value.items()}
            elif key == "items":
                out[key] = rewrite(value)
            else:
                out[key] = value
        return out

    return rewrite(schema)


def _version(
    *,
    name: str,
    storage: bool,
    spec: type[BaseModel],
    status: type[BaseModel],
    with_crash_count: bool,
) -> dict[str, Any]:
    status_schema = structural_schema(status)
    status_schema["nullable"] = True
    columns = [
        {"name": "State", "type": "string", "jsonPath": ".status.current_state"},
        {"name": "Version", "type": "string", "jsonPath": ".status.current_version"},
        {"name": "Target State", "type": "string", "jsonPath": ".spec.state"},
        {"name": "Target Version", "type": "string", "jsonPath": ".spec.version"},
    ]
    if with_crash_count:
        columns.append({"name": "Crash Count", "type": "string", "jsonPath": ".status.crash_count"})
    return {
        "name": name,
        "served": True,
        "storage": storage,
        "schema": {
            "openAPIV3Schema": {
                "description": "One Bottlerocket node's update: the controller's goal, the agent's report.",
                "type": "object",
                "required": ["spec"],
                "properties": {"spec": structural_schema(spec), "status": status_schema},
            }
        },
        "subresources": {"status": {}},
        "additionalPrinterColumns": columns,
    }


def custom_resource_definition(
    *,
    namespace: str = c.NAMESPACE,
    service_name: str = c.APISERVER_SERVICE_NAME,
    service_port: int = c.APISERVER_SERVICE_PORT,
    ca_certificate: str = c.APISERVER_CERTIFICATE,
) -> dict[str, Any]:
    """The CRD with both versions and the conversion webhook served by the brupop apiserver.

    cert-manager's CA injector fills the webhook's `caBundle` from the `ca_certificate` Certificate, which
    the manifests create (the Rust brupop named one that does not exist, leaving the webhook untrusted).
    `conversionReviewVersions` lists ConversionReview API versions (the Rust brupop listed CR versions).
    """
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": c.CRD_NAME,
            "annotations": {"cert-manager.io/inject-ca-from": f"{namespace}/{ca_certificate}"},
            "labels": {"app.kubernetes.io/part-of": "brupop", "app.kubernetes.io/managed-by": "brupop"},
        },
        "spec": {
            "group": c.API_GROUP,
            "names": {
                "kind": c.KIND,
                "plural": c.PLURAL,
                "singular": c.SINGULAR,
                "shortNames": [c.SHORT_NAME],
            },
            "scope": "Namespaced",
            "conversion": {
                "strategy": "Webhook",
                "webhook": {
                    "clientConfig": {
                        "service": {
                            "name": service_name,
                            "namespace": namespace,
                            "path": c.CONVERSION_WEBHOOK_PATH,
                            "port": service_port,
                        }
                    },
                    "conversionReviewVersions": ["v1"],
                },
            },
            "versions": [
                _version(
                    name="v2", storage=True, spec=ShadowSpec, status=ShadowStatus, with_crash_count=True
                ),
                _version(
                    name="v1", storage=False, spec=ShadowSpecV1, status=ShadowStatusV1, with_crash_count=False
                ),
            ],
        },
    }
