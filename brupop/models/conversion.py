"""Conversion between BottlerocketShadow v1 and v2, and the CRD conversion webhook's pure handler.

Conversion is a "pinwheel": each object steps one version at a time towards the desired one, so adding a
v3 later means adding one step each way. Metadata is copied unchanged (the Rust brupop kept only name,
namespace, uid and ownerReferences, losing labels and annotations).

What one version cannot express:
- v1 has no `ErrorReset` (it reads as `MonitoringUpdate`), no `crash_count` and no
  `state_transition_failure_timestamp`. v2 -> v1 carries what it hides in one annotation,
  `V2_FIELDS_ANNOTATION`, next to the v1 spec or status it was hidden behind; v1 -> v2 restores each part
  whose v1 fields did not change and always drops the annotation. So a write through v1 that leaves the
  status alone (`kubectl label` of a v1 object: read as v1, patched, converted back) keeps the crash
  back-off, while a v1 write of a new status starts again from crash_count 0, as the Rust brupop does. The
  annotation exists only in v1 views: v2 objects, the stored ones, never carry it.
- v1 `StagedUpdate` and `PerformedUpdate` both become v2 `StagedAndPerformedUpdate`, which reads back as
  `StagedUpdate` (as in the Rust brupop). No brupop program writes v1; remembering the difference would
  mean an internal annotation on every stored object a v1 client once wrote.

A ConversionReview is answered per the Rust brupop: HTTP 200, `result.status` `Success` or `Failed` (with
a message naming the object and the field). A review that cannot be answered at all (no usable
`request.uid`) raises `ReviewError`, which the webhook turns into a 400.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

from brupop.models.constants import API_GROUP, API_VERSION_V1, API_VERSION_V2
from brupop.models.shadow import BottlerocketShadow, ShadowSpec, ShadowState, ShadowStatus
from brupop.models.shadow_v1 import BottlerocketShadowV1, ShadowSpecV1, ShadowStateV1, ShadowStatusV1
from brupop.models.wire import Wire, WireError, invalid_text, shown, text

V2_FIELDS_ANNOTATION: Final = f"{API_GROUP}/v2-fields"
REVIEW_VERSIONS: Final = ("apiextensions.k8s.io/v1", "apiextensions.k8s.io/v1beta1")

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


class ReviewError(ValueError):
    """A ConversionReview that cannot be answered (the answer must echo a `request.uid` it lacks)."""


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


_HIDDEN: Final[Mapping[type[Wire], frozenset[str]]] = {
    ShadowSpec: frozenset({"state"}),
    ShadowStatus: frozenset({"current_state", "crash_count", "state_transition_failure_timestamp"}),
}


def _hidden_spec(spec: ShadowSpec) -> dict[str, Any]:
    """The v2 spec fields v1 cannot show."""
    return {"state": spec.state.value} if spec.state is ShadowState.ERROR_RESET else {}


def _hidden_status(status: ShadowStatus) -> dict[str, Any]:
    """The v2 status fields v1 cannot show."""
    hidden: dict[str, Any] = {}
    if status.current_state is ShadowState.ERROR_RESET:
        hidden["current_state"] = status.current_state.value
    if status.crash_count:
        hidden["crash_count"] = status.crash_count
    if status.state_transition_failure_timestamp is not None:
        hidden["state_transition_failure_timestamp"] = status.state_transition_failure_timestamp.text
    return hidden


def shadow_to_v1(shadow: BottlerocketShadow) -> BottlerocketShadowV1:
    spec = spec_to_v1(shadow.spec)
    status = status_to_v1(shadow.status) if shadow.status else None
    hidden: dict[str, Any] = {}
    if fields := _hidden_spec(shadow.spec):
        hidden["spec"] = {"v1": spec.to_wire(), "v2": fields}
    if status is not None and shadow.status is not None and (fields := _hidden_status(shadow.status)):
        hidden["status"] = {"v1": status.to_wire(), "v2": fields}
    note = json.dumps(hidden, sort_keys=True, separators=(",", ":")) if hidden else None
    return BottlerocketShadowV1(metadata=_annotated(shadow.metadata, note), spec=spec, status=status)


def shadow_to_v2(shadow: BottlerocketShadowV1) -> BottlerocketShadow:
    hidden = _read_note((shadow.metadata.get("annotations") or {}).get(V2_FIELDS_ANNOTATION))
    spec = _restored(spec_to_v2(shadow.spec), shadow.spec, hidden.get("spec"), spec_to_v1)
    status = None
    if shadow.status is not None:
        status = _restored(status_to_v2(shadow.status), shadow.status, hidden.get("status"), status_to_v1)
    return BottlerocketShadow(metadata=_annotated(shadow.metadata, None), spec=spec, status=status)


def _annotated(metadata: Mapping[str, Any], note: str | None) -> dict[str, Any]:
    """`metadata` with the hidden-fields annotation set to `note` (removed when None)."""
    out = dict(metadata)
    annotations = {k: v for k, v in (metadata.get("annotations") or {}).items() if k != V2_FIELDS_ANNOTATION}
    if note is not None:
        annotations[V2_FIELDS_ANNOTATION] = note
    if annotations:
        out["annotations"] = annotations
    else:
        out.pop("annotations", None)
    return out


def _read_note(raw: object) -> dict[str, Any]:
    """The parts recorded in the annotation; anything unreadable counts as nothing recorded."""
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


W = TypeVar("W", ShadowSpec, ShadowStatus)
V = TypeVar("V", ShadowSpecV1, ShadowStatusV1)


def _restored(converted: W, v1: V, record: object, down: Callable[[W], V]) -> W:
    """`converted` with the hidden v2 fields of `record` put back, when the v1 part they were hidden
    behind is unchanged and they are what it hid (they convert down to the same v1 part); else
    `converted` as it is. A record that does not read is ignored."""
    if not isinstance(record, dict) or not isinstance(record.get("v2"), dict):
        return converted
    try:
        if type(v1).from_wire(record.get("v1")) != v1:
            return converted
        wire = converted.to_wire()
        wire.update({key: value for key, value in record["v2"].items() if key in _HIDDEN[type(converted)]})
        restored = type(converted).from_wire(wire)
    except WireError:
        return converted
    return restored if down(restored) == v1 else converted


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
            f"Desired version {text(desired_api_version)} is not a valid BottlerocketShadow version "
            f"(expected one of {', '.join(VERSIONS)})"
        )


def check_metadata(metadata: object) -> None:
    """The parts of metadata conversion reads: labels and annotations are maps of strings."""
    if not isinstance(metadata, Mapping):
        return  # the object's reader names it
    for part in ("labels", "annotations"):
        values = metadata.get(part)
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise WireError(f"metadata.{part}", f"expected an object, got {type(values).__name__}")
        for key, value in values.items():
            if not isinstance(value, str):
                raise WireError(
                    f"metadata.{part}.{text(key)}", f"expected a string, got {type(value).__name__}"
                )


def convert_object(obj: Mapping[str, Any], desired_api_version: str) -> dict[str, Any]:
    """Convert one BottlerocketShadow (as JSON) to `desired_api_version`, one version step at a time."""
    _check_desired(desired_api_version)
    current = obj.get("apiVersion")
    if current not in VERSIONS:
        raise ConversionError(
            f"object apiVersion {shown(current)} is not a BottlerocketShadow version (expected one of "
            f"{', '.join(VERSIONS)})"
        )
    target = VERSIONS.index(desired_api_version)
    result = dict(obj)
    try:
        check_metadata(obj.get("metadata"))
        while (position := VERSIONS.index(result["apiVersion"])) != target:
            step = _STEP_UP if position < target else _STEP_DOWN
            result = step[result["apiVersion"]](result)
        if (problem := invalid_text(result)) is not None:
            raise problem  # text no answer could carry, e.g. a lone surrogate in a label
    except WireError as err:
        raise ConversionError(f"invalid {current} BottlerocketShadow: {err}") from None
    return result


def _uid(request: Mapping[str, Any]) -> str:
    uid = request.get("uid")
    if not isinstance(uid, str):
        kind = "missing" if uid is None else f"expected a string, got {type(uid).__name__}"
        raise ReviewError(f"request.uid: {kind}")
    if (problem := invalid_text(uid, at="request.uid")) is not None:
        raise ReviewError(str(problem))
    return uid


def _name(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return f" (name {shown(name)})" if isinstance(name, str) else ""


def handle_conversion_review(review: Mapping[str, Any]) -> dict[str, Any]:
    """Answer an `apiextensions.k8s.io` ConversionReview: every object converted, in order, or `Failed`.

    The response is well formed whenever the review has a `request.uid` to echo (else `ReviewError`), with
    `result.status` `Success` or `Failed` as the Rust brupop sends.
    """
    request = review.get("request")
    if not isinstance(request, Mapping):
        raise ReviewError("request: expected an object")
    response: dict[str, Any] = {"uid": _uid(request)}
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
                raise ConversionError(f"request.objects[{index}]{_name(obj)}: {err}") from None
    except ConversionError as err:
        response["result"] = {"status": "Failed", "message": str(err)}
        response["convertedObjects"] = None
    else:
        response["result"] = {"status": "Success", "message": None}
        response["convertedObjects"] = converted
    version = review.get("apiVersion")
    return {
        "apiVersion": version if version in REVIEW_VERSIONS else REVIEW_VERSIONS[0],
        "kind": "ConversionReview",
        "response": response,
    }
