"""Conversion between BottlerocketShadow v1 and v2, and the CRD conversion webhook's pure handler.

Conversion is a "pinwheel": each object steps one version at a time towards the desired one, so adding a
v3 later means adding one step each way. Metadata is copied unchanged (the Rust brupop kept only name,
namespace, uid and ownerReferences, losing labels and annotations).

Lossy cases, documented:
- v2 -> v1 maps `ErrorReset` to `MonitoringUpdate` and drops `crash_count` and
  `state_transition_failure_timestamp` (v1 has neither), so v2 -> v1 -> v2 loses them.
- v1 `StagedUpdate` and `PerformedUpdate` both become v2 `StagedAndPerformedUpdate`. To keep v1 -> v2 -> v1
  the identity, v1 -> v2 records a `PerformedUpdate` in the annotation `V1_STATE_ANNOTATION`, and v2 -> v1
  restores it (when the state is still StagedAndPerformedUpdate) and removes the annotation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Final

from brupop.models.constants import API_GROUP, API_VERSION_V1, API_VERSION_V2
from brupop.models.shadow import BottlerocketShadow, ShadowSpec, ShadowState, ShadowStatus
from brupop.models.shadow_v1 import BottlerocketShadowV1, ShadowSpecV1, ShadowStateV1, ShadowStatusV1
from brupop.models.wire import WireError

V1_STATE_ANNOTATION: Final = f"{API_GROUP}/v1-state"

_V1_TO_V2: Final = {
    ShadowStateV1.IDLE: ShadowState.IDLE,
    ShadowStateV1.STAGED_UPDATE: ShadowState.STAGED_AND_PERFORMED_UPDATE,
    ShadowStateV1.PERFORMED_UPDATE: ShadowState.STAGED_AND_PERFORMED_UPDATE,
    ShadowStateV1.REBOOTED_INTO_UPDATE: ShadowState.REBOOTED_INTO_UPDATE,
    ShadowStateV1.MONITORING_UPDATE: ShadowState.MONITORING_UPDATE,
}
_V2_TO_V1: Final = {
    ShadowState.IDLE: ShadowStateV1.IDLE,
    ShadowState.STAGED_AND_PERFORMED_UPDATE: ShadowStateV1.STAGED_UPDATE,
    ShadowState.REBOOTED_INTO_UPDATE: ShadowStateV1.REBOOTED_INTO_UPDATE,
    ShadowState.MONITORING_UPDATE: ShadowStateV1.MONITORING_UPDATE,
    ShadowState.ERROR_RESET: ShadowStateV1.MONITORING_UPDATE,
}


class ConversionError(ValueError):
    """An object that cannot be converted; the message says which and why."""


def state_to_v2(state: ShadowStateV1) -> ShadowState:
    return _V1_TO_V2[state]


def state_to_v1(state: ShadowState) -> ShadowStateV1:
    return _V2_TO_V1[state]


def spec_to_v2(spec: ShadowSpecV1) -> ShadowSpec:
    return ShadowSpec(
        state=state_to_v2(spec.state),
        state_transition_timestamp=spec.state_transition_timestamp,
        version=spec.version,
    )


def spec_to_v1(spec: ShadowSpec) -> ShadowSpecV1:
    return ShadowSpecV1(
        state=state_to_v1(spec.state),
        state_transition_timestamp=spec.state_transition_timestamp,
        version=spec.version,
    )


def status_to_v2(status: ShadowStatusV1) -> ShadowStatus:
    return ShadowStatus(
        current_version=status.current_version,
        target_version=status.target_version,
        current_state=state_to_v2(status.current_state),
        crash_count=0,
        state_transition_failure_timestamp=None,
    )


def status_to_v1(status: ShadowStatus) -> ShadowStatusV1:
    return ShadowStatusV1(
        current_version=status.current_version,
        target_version=status.target_version,
        current_state=state_to_v1(status.current_state),
    )


def shadow_to_v2(shadow: BottlerocketShadowV1) -> BottlerocketShadow:
    performed = {
        part: ShadowStateV1.PERFORMED_UPDATE.value
        for part, state in (
            ("spec", shadow.spec.state),
            ("status", shadow.status.current_state if shadow.status else None),
        )
        if state is ShadowStateV1.PERFORMED_UPDATE
    }
    metadata = dict(shadow.metadata)
    if performed:
        metadata["annotations"] = {
            **metadata.get("annotations", {}),
            V1_STATE_ANNOTATION: json.dumps(performed, sort_keys=True, separators=(",", ":")),
        }
    return BottlerocketShadow(
        metadata=metadata,
        spec=spec_to_v2(shadow.spec),
        status=status_to_v2(shadow.status) if shadow.status else None,
    )


def shadow_to_v1(shadow: BottlerocketShadow) -> BottlerocketShadowV1:
    metadata = dict(shadow.metadata)
    annotations = dict(metadata.get("annotations") or {})
    remembered = _remembered_v1_states(annotations.pop(V1_STATE_ANNOTATION, None))
    if V1_STATE_ANNOTATION in (metadata.get("annotations") or {}):
        if annotations:
            metadata["annotations"] = annotations
        else:
            del metadata["annotations"]
    spec = spec_to_v1(shadow.spec)
    if remembered.get("spec") and shadow.spec.state is ShadowState.STAGED_AND_PERFORMED_UPDATE:
        spec = replace(spec, state=ShadowStateV1.PERFORMED_UPDATE)
    status = status_to_v1(shadow.status) if shadow.status else None
    if (
        status is not None
        and shadow.status is not None
        and remembered.get("status")
        and shadow.status.current_state is ShadowState.STAGED_AND_PERFORMED_UPDATE
    ):
        status = replace(status, current_state=ShadowStateV1.PERFORMED_UPDATE)
    return BottlerocketShadowV1(metadata=metadata, spec=spec, status=status)


def _remembered_v1_states(raw: object) -> dict[str, bool]:
    """Which parts were `PerformedUpdate` in v1; anything unreadable counts as nothing remembered."""
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else {}
    except json.JSONDecodeError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    return {part: parsed.get(part) == ShadowStateV1.PERFORMED_UPDATE.value for part in ("spec", "status")}


def _up(obj: Mapping[str, Any]) -> dict[str, Any]:
    return shadow_to_v2(BottlerocketShadowV1.from_wire(obj)).to_wire()


def _down(obj: Mapping[str, Any]) -> dict[str, Any]:
    return shadow_to_v1(BottlerocketShadow.from_wire(obj)).to_wire()


# The pinwheel: versions in order, and the step from each one towards the next (up) or previous (down).
VERSIONS: Final = (API_VERSION_V1, API_VERSION_V2)
_STEP_UP: Final[Mapping[str, Callable[[Mapping[str, Any]], dict[str, Any]]]] = {API_VERSION_V1: _up}
_STEP_DOWN: Final[Mapping[str, Callable[[Mapping[str, Any]], dict[str, Any]]]] = {API_VERSION_V2: _down}


def _check_desired(desired_api_version: str) -> None:
    if desired_api_version not in VERSIONS:
        raise ConversionError(
            f"Desired version {desired_api_version} is not a valid BottlerocketShadow version "
            f"(expected one of {', '.join(VERSIONS)})"
        )


def convert_object(obj: Mapping[str, Any], desired_api_version: str) -> dict[str, Any]:
    """Convert one BottlerocketShadow (as JSON) to `desired_api_version`, one version step at a time."""
    _check_desired(desired_api_version)
    current = obj.get("apiVersion")
    if current not in VERSIONS:
        raise ConversionError(
            f"object apiVersion {current!r} is not a BottlerocketShadow version (expected one of "
            f"{', '.join(VERSIONS)})"
        )
    target = VERSIONS.index(desired_api_version)
    result = dict(obj)
    try:
        while (position := VERSIONS.index(result["apiVersion"])) != target:
            step = _STEP_UP if position < target else _STEP_DOWN
            result = step[result["apiVersion"]](result)
    except WireError as err:
        raise ConversionError(f"invalid {current} BottlerocketShadow: {err}") from None
    return result


def handle_conversion_review(review: Mapping[str, Any]) -> dict[str, Any]:
    """Answer an `apiextensions.k8s.io` ConversionReview: every object converted, in order, or `Failed`.

    The response is always well formed (the webhook answers HTTP 200 either way), with `result.status`
    `Success` or `Failed` as the Rust brupop sends.
    """
    request = review.get("request")
    request = request if isinstance(request, Mapping) else {}
    uid = request.get("uid", "")
    response: dict[str, Any] = {"uid": uid if isinstance(uid, str) else ""}
    try:
        desired = request.get("desiredAPIVersion")
        objects = request.get("objects")
        if not isinstance(desired, str):
            raise ConversionError("request.desiredAPIVersion is missing or not a string")
        _check_desired(desired)
        if not isinstance(objects, list):
            raise ConversionError("request.objects is missing or not a list")
        converted = []
        for index, obj in enumerate(objects):
            if not isinstance(obj, Mapping):
                raise ConversionError(f"request.objects[{index}] is not an object")
            try:
                converted.append(convert_object(obj, desired))
            except ConversionError as err:
                name = (obj.get("metadata") or {}).get("name", "?")
                raise ConversionError(f"request.objects[{index}] (name {name!r}): {err}") from None
    except ConversionError as err:
        response["result"] = {"status": "Failed", "message": str(err)}
        response["convertedObjects"] = None
    else:
        response["result"] = {"status": "Success", "message": None}
        response["convertedObjects"] = converted
    return {
        "apiVersion": review.get("apiVersion", "apiextensions.k8s.io/v1"),
        "kind": review.get("kind", "ConversionReview"),
        "response": response,
    }
