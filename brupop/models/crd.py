"""The BottlerocketShadow CustomResourceDefinition, derived from the wire models so the schema the
cluster enforces can never drift from what the programs read and write.

Kubernetes wants a *structural* schema: every property typed, `nullable: true` for values that may be
null. `structural_schema` writes one from a model's fields: their types, constraints and descriptions. A
model with `NULLABLE = False` (the shadow's spec and status, the policies) has no nullable field: the API
server drops a null written to one, so an unset field is absent (kubectl shows nothing for it, where a new
shadow's `spec.version: null` showed `<no value>` as the Rust brupop's nullable schema had it).
"""

from __future__ import annotations

import copy
import inspect
import types
from enum import Enum
from typing import Annotated, Any, Final, Union, get_args, get_origin

from brupop.models import constants as c
from brupop.models.policy import UpdatePolicySpec, UpdatePolicyStatus
from brupop.models.shadow import ShadowSpec, ShadowStatus
from brupop.models.shadow_v1 import ShadowSpecV1, ShadowStatusV1
from brupop.models.timestamp import RATCHETING_VALIDATIONS, Timestamp
from brupop.models.timestamp import SCHEMA as TIMESTAMP_SCHEMA
from brupop.models.wire import Keys, MaxSize, Pattern, Range, Rule, Wire, wire_fields


def structural_schema(model: type[Wire]) -> dict[str, Any]:
    """The schema of a model (fields of scalars, enums, timestamps, int-or-strings, nested models, lists and
    maps, with their constraints and CEL rules) in the form Kubernetes accepts."""
    schema: dict[str, Any] = {"type": "object", "description": inspect.cleandoc(model.__doc__ or "")}
    properties: dict[str, Any] = {}
    required: list[str] = []
    for f in wire_fields(model):
        prop = _value_schema(f.hint)
        if not model.NULLABLE:
            prop.pop("nullable", None)
        if f.description:
            prop["description"] = f.description
        properties[f.key] = prop
        if f.required or f.schema_required:
            required.append(f.key)
    schema["properties"] = properties
    if required:
        schema["required"] = required
    if model.RULES:
        schema["x-kubernetes-validations"] = [rule.schema() for rule in model.RULES]
    return schema


_SIZE_KEYS = {"string": "maxLength", "array": "maxItems", "object": "maxProperties"}


def _constraint_schema(schema: dict[str, Any], mark: object) -> None:
    """Add what one `Annotated` constraint says to a value's schema."""
    if isinstance(mark, Pattern | Range):
        schema.update(mark.schema())
    elif isinstance(mark, MaxSize):
        schema[_SIZE_KEYS[schema["type"]]] = mark.limit
    elif isinstance(mark, Rule):
        schema.setdefault("x-kubernetes-validations", []).append(mark.schema())
    elif isinstance(mark, Keys):
        schema.setdefault("x-kubernetes-validations", []).append(mark.schema_rule())


def _container_schema(hint: Any) -> dict[str, Any] | None:
    """The schema of a nested model, a list or a typed map; None for other types."""
    origin = get_origin(hint)
    if isinstance(hint, type) and issubclass(hint, Wire):
        return structural_schema(hint)
    if origin is list:
        return {"type": "array", "items": _value_schema(get_args(hint)[0])}
    if origin is dict and get_args(hint)[1] is not Any:
        return {"type": "object", "additionalProperties": _value_schema(get_args(hint)[1])}
    return None


def _value_schema(hint: Any) -> dict[str, Any]:
    origin = get_origin(hint)
    if origin is Annotated:
        base, *marks = get_args(hint)
        schema = _value_schema(base)
        for mark in marks:
            _constraint_schema(schema, mark)
        return schema
    if origin in (Union, types.UnionType):
        present = [arg for arg in get_args(hint) if arg is not type(None)]
        inner = (
            {"x-kubernetes-int-or-string": True} if set(present) == {int, str} else _value_schema(*present)
        )
        return inner if len(present) == len(get_args(hint)) else {**inner, "nullable": True}
    container = _container_schema(hint)
    if container is not None:
        return container
    if isinstance(hint, type) and issubclass(hint, Enum):
        return {"type": "string", "enum": [member.value for member in hint]}
    if hint is Timestamp:
        return copy.deepcopy(TIMESTAMP_SCHEMA)
    if hint is str:
        return {"type": "string"}
    if hint is int:
        return {"type": "integer"}
    if hint is bool:
        return {"type": "boolean"}
    raise TypeError(f"no CRD schema for {hint!r}")


def _version(
    *,
    name: str,
    storage: bool,
    spec: type[Wire],
    status: type[Wire],
    with_crash_count: bool,
) -> dict[str, Any]:
    spec_schema = _ratcheting_timestamps(structural_schema(spec))
    status_schema = _ratcheting_timestamps(structural_schema(status))
    status_schema["nullable"] = True
    columns = [
        {"name": "State", "type": "string", "jsonPath": ".status.current_state"},
        {"name": "Version", "type": "string", "jsonPath": ".status.current_version"},
        {"name": "Target State", "type": "string", "jsonPath": ".spec.state"},
        {"name": "Target Version", "type": "string", "jsonPath": ".spec.version"},
    ]
    if with_crash_count:
        columns.append({"name": "Crash Count", "type": "string", "jsonPath": ".status.crash_count"})
    # A CRD with its own columns loses kubectl's AGE column unless it names it.
    columns.append({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})
    return {
        "name": name,
        "served": True,
        "storage": storage,
        "schema": {
            "openAPIV3Schema": {
                "description": "One Bottlerocket node's update: the controller's goal, the agent's report.",
                "type": "object",
                "required": ["spec"],
                "properties": {"spec": spec_schema, "status": status_schema},
            }
        },
        "subresources": {"status": {}},
        "additionalPrinterColumns": columns,
    }


def _ratcheting_timestamps(schema: dict[str, Any]) -> dict[str, Any]:
    """A shadow's spec or status schema with its timestamps' checks in the form that lets a value stored
    before them stay (see `RATCHETING_VALIDATIONS`): clusters upgrading from the Rust brupop hold such
    shadows, and every status write to one would be refused."""
    for prop in schema["properties"].values():
        if prop.get("x-kubernetes-validations") == TIMESTAMP_SCHEMA["x-kubernetes-validations"]:
            prop["x-kubernetes-validations"] = copy.deepcopy(RATCHETING_VALIDATIONS)
    return schema


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


POLICY_COLUMNS: Final = (
    ("State", "string", ".status.state", 0),
    ("Selected", "integer", ".status.selected", 0),
    ("Up-To-Date", "integer", ".status.upToDate", 0),
    ("Updating", "integer", ".status.updating", 0),
    ("Failed", "integer", ".status.failed", 0),
    ("Held", "integer", ".status.held", 0),
    ("Limit", "string", ".status.limit", 0),
    ("Window", "string", ".status.window", 0),
    ("Next-Opening", "date", ".status.nextOpening", 1),
    ("Age", "date", ".metadata.creationTimestamp", 0),
)


def update_policy_crd() -> dict[str, Any]:
    """The UpdatePolicy CRD: one served version, no conversion, cluster-scoped (a policy selects Nodes,
    which are cluster-scoped, as Karpenter's NodePool does), status as a subresource so people edit the
    spec and only the controller writes the status. `kubectl get brup` shows the fleet at a glance."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": c.POLICY_CRD_NAME,
            "labels": {"app.kubernetes.io/part-of": "brupop", "app.kubernetes.io/managed-by": "brupop"},
        },
        "spec": {
            "group": c.API_GROUP,
            "names": {
                "kind": c.POLICY_KIND,
                "plural": c.POLICY_PLURAL,
                "singular": c.POLICY_SINGULAR,
                "shortNames": [c.POLICY_SHORT_NAME],
            },
            "scope": "Cluster",
            "versions": [
                {
                    "name": c.POLICY_VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "description": "A pool of opted-in Bottlerocket nodes (by label selector) and "
                            "how brupop updates it: how many at once, when, what stops it, and what marks a "
                            "node carries while it updates.",
                            "type": "object",
                            "required": ["spec"],
                            "properties": {
                                "spec": structural_schema(UpdatePolicySpec),
                                "status": structural_schema(UpdatePolicyStatus),
                            },
                        }
                    },
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": name, "type": kind, "jsonPath": path, **({"priority": 1} if wide else {})}
                        for name, kind, path, wide in POLICY_COLUMNS
                    ],
                }
            ],
        },
    }
