import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brupop.models.conversion import (
    V1_STATE_ANNOTATION,
    ConversionError,
    convert_object,
    handle_conversion_review,
    spec_to_v1,
    spec_to_v2,
    state_to_v1,
    state_to_v2,
    status_to_v1,
    status_to_v2,
)
from brupop.models.shadow import ShadowSpec, ShadowState, ShadowStatus
from brupop.models.shadow_v1 import ShadowSpecV1, ShadowStateV1, ShadowStatusV1

V1 = "brupop.bottlerocket.aws/v1"
V2 = "brupop.bottlerocket.aws/v2"
STAMP = "2022-07-09T19:32:38.609610964+00:00"


def test_state_mapping_matches_the_rust_brupop() -> None:
    assert [state_to_v2(s) for s in ShadowStateV1] == [
        ShadowState.IDLE,
        ShadowState.STAGED_AND_PERFORMED_UPDATE,
        ShadowState.STAGED_AND_PERFORMED_UPDATE,
        ShadowState.REBOOTED_INTO_UPDATE,
        ShadowState.MONITORING_UPDATE,
    ]
    assert [state_to_v1(s) for s in ShadowState] == [
        ShadowStateV1.IDLE,
        ShadowStateV1.STAGED_UPDATE,
        ShadowStateV1.REBOOTED_INTO_UPDATE,
        ShadowStateV1.MONITORING_UPDATE,
        ShadowStateV1.MONITORING_UPDATE,
    ]


def test_spec_conversion_copies_timestamp_and_version() -> None:
    assert spec_to_v2(ShadowSpecV1()) == ShadowSpec()
    v1 = ShadowSpecV1.from_wire(
        {"state": "StagedUpdate", "state_transition_timestamp": STAMP, "version": "1.2.3"}
    )
    v2 = spec_to_v2(v1)
    assert v2.to_wire() == {
        "state": "StagedAndPerformedUpdate",
        "state_transition_timestamp": STAMP,
        "version": "1.2.3",
    }
    assert spec_to_v1(v2) == v1


def test_status_conversion_adds_and_drops_crash_tracking() -> None:
    v1 = ShadowStatusV1(current_version="1.0.0", target_version="1.1.0", current_state=ShadowStateV1.IDLE)
    v2 = status_to_v2(v1)
    assert (v2.crash_count, v2.state_transition_failure_timestamp) == (0, None)
    failing = ShadowStatus.from_wire(
        {
            "current_version": "1.0.0",
            "target_version": "1.1.0",
            "current_state": "ErrorReset",
            "crash_count": 4,
            "state_transition_failure_timestamp": STAMP,
        }
    )
    assert status_to_v1(failing).to_wire() == {
        "current_version": "1.0.0",
        "target_version": "1.1.0",
        "current_state": "MonitoringUpdate",
    }


def v2_object(**status: Any) -> dict[str, Any]:
    return {
        "apiVersion": V2,
        "kind": "BottlerocketShadow",
        "metadata": {
            "name": "brs-a",
            "namespace": "ns",
            "uid": "1",
            "labels": {"team": "x"},
            "annotations": {"note": "kept"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "a", "uid": "n"}],
            "resourceVersion": "7",
        },
        "spec": {"state": "Idle", "state_transition_timestamp": None, "version": None},
        "status": {
            "current_version": "1.0.0",
            "target_version": "1.0.0",
            "current_state": "Idle",
            "crash_count": 0,
            "state_transition_failure_timestamp": None,
            **status,
        },
    }


def test_whole_object_keeps_all_metadata_both_ways() -> None:
    obj = v2_object()
    down = convert_object(obj, V1)
    assert down["apiVersion"] == V1
    assert down["metadata"] == obj["metadata"]
    assert convert_object(down, V2) == obj


def test_converting_to_the_same_version_changes_nothing() -> None:
    obj = v2_object()
    assert convert_object(obj, V2) == obj


def test_performed_update_survives_a_trip_through_v2() -> None:
    v1 = {
        "apiVersion": V1,
        "kind": "BottlerocketShadow",
        "metadata": {"name": "brs-a"},
        "spec": {"state": "PerformedUpdate", "state_transition_timestamp": STAMP, "version": "1.1.0"},
        "status": {"current_version": "1.0.0", "target_version": "1.1.0", "current_state": "PerformedUpdate"},
    }
    v2 = convert_object(v1, V2)
    assert v2["spec"]["state"] == v2["status"]["current_state"] == "StagedAndPerformedUpdate"
    assert V1_STATE_ANNOTATION in v2["metadata"]["annotations"]
    assert convert_object(v2, V1) == v1


def test_a_stale_remembered_state_is_not_restored() -> None:
    obj = v2_object(current_state="RebootedIntoUpdate")
    obj["metadata"]["annotations"][V1_STATE_ANNOTATION] = (
        '{"spec":"PerformedUpdate","status":"PerformedUpdate"}'
    )
    down = convert_object(obj, V1)
    assert down["status"]["current_state"] == "RebootedIntoUpdate"
    assert down["spec"]["state"] == "Idle"
    assert down["metadata"]["annotations"] == {"note": "kept"}


@pytest.mark.parametrize("garbage", ["not json", "[1]", "{}"])
def test_an_unreadable_remembered_state_is_dropped(garbage: str) -> None:
    obj = v2_object(current_state="StagedAndPerformedUpdate")
    obj["metadata"]["annotations"] = {V1_STATE_ANNOTATION: garbage}
    down = convert_object(obj, V1)
    assert down["status"]["current_state"] == "StagedUpdate"
    assert "annotations" not in down["metadata"]


@pytest.mark.parametrize(
    ("obj", "desired", "message"),
    [
        (
            v2_object(),
            "brupop.bottlerocket.aws/-v2",
            "Desired version brupop.bottlerocket.aws/-v2 is not a valid",
        ),
        (
            {**v2_object(), "apiVersion": "brupop.bottlerocket.aws/v3"},
            V1,
            "apiVersion 'brupop.bottlerocket.aws/v3'",
        ),
        (v2_object(current_state="Exploded"), V1, "status.current_state"),
    ],
)
def test_bad_objects_raise_a_clear_error(obj: dict[str, Any], desired: str, message: str) -> None:
    with pytest.raises(ConversionError, match=message):
        convert_object(obj, desired)


def review(desired: str, objects: Any, uid: str = "705ab4f5") -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "ConversionReview",
        "request": {"uid": uid, "desiredAPIVersion": desired, "objects": objects},
    }


def test_review_converts_every_object_in_order() -> None:
    objects = [v2_object(), {**v2_object(), "metadata": {"name": "brs-b"}}]
    answer = handle_conversion_review(review(V1, objects))
    assert answer["apiVersion"] == "apiextensions.k8s.io/v1"
    assert answer["kind"] == "ConversionReview"
    response = answer["response"]
    assert response["uid"] == "705ab4f5"
    assert response["result"] == {"status": "Success", "message": None}
    assert [o["metadata"]["name"] for o in response["convertedObjects"]] == ["brs-a", "brs-b"]
    assert {o["apiVersion"] for o in response["convertedObjects"]} == {V1}


def test_review_with_an_unknown_desired_version_fails_even_without_objects() -> None:
    response = handle_conversion_review(review("brupop.bottlerocket.aws/-v2", []))["response"]
    assert response["result"]["status"] == "Failed"
    assert response["result"]["message"].startswith(
        "Desired version brupop.bottlerocket.aws/-v2 is not a valid BottlerocketShadow version"
    )
    assert response["convertedObjects"] is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"request": {"uid": "u", "objects": []}}, "desiredAPIVersion"),
        ({"request": {"uid": "u", "desiredAPIVersion": V1}}, "request.objects is missing"),
        (review(V1, ["nope"]), r"request.objects\[0\] is not an object"),
        (review(V1, [v2_object(), v2_object(current_state="Nope")]), r"objects\[1\] \(name 'brs-a'\)"),
        ({"request": "nonsense"}, "desiredAPIVersion"),
    ],
)
def test_review_reports_malformed_requests_as_failed(body: dict[str, Any], message: str) -> None:
    response = handle_conversion_review(body)["response"]
    assert response["result"]["status"] == "Failed"
    assert response["convertedObjects"] is None
    assert __import__("re").search(message, response["result"]["message"])


# Property tests: round trips over every representable object.
versions = st.sampled_from(["1.0.0", "1.20.3", "2.0.0-rc.1", "0.1.0+b7"])
stamps = st.none() | st.sampled_from([STAMP, "2024-01-01T00:00:00Z", "2024-01-01T02:00:00.5+02:00"])
label_maps = st.dictionaries(
    st.sampled_from(["a", "b/c", "team"]), st.text(max_size=5), min_size=1, max_size=3
)
metadata = st.fixed_dictionaries(
    {"name": st.sampled_from(["brs-a", "brs-b"])},
    optional={"labels": label_maps, "annotations": label_maps, "uid": st.uuids().map(str)},
)


@st.composite
def v1_objects(draw: st.DrawFn) -> dict[str, Any]:
    status = draw(
        st.none()
        | st.fixed_dictionaries(
            {
                "current_version": versions,
                "target_version": versions,
                "current_state": st.sampled_from(list(ShadowStateV1)),
            }
        )
    )
    return {
        "apiVersion": V1,
        "kind": "BottlerocketShadow",
        "metadata": draw(metadata),
        "spec": {
            "state": draw(st.sampled_from(list(ShadowStateV1))).value,
            "state_transition_timestamp": draw(stamps),
            "version": draw(st.none() | versions),
        },
        "status": None if status is None else {**status, "current_state": status["current_state"].value},
    }


@st.composite
def v2_objects(draw: st.DrawFn) -> dict[str, Any]:
    status = draw(
        st.none()
        | st.fixed_dictionaries(
            {
                "current_version": versions,
                "target_version": versions,
                "current_state": st.sampled_from(list(ShadowState)).map(lambda s: s.value),
                "crash_count": st.integers(0, 2**32 - 1),
                "state_transition_failure_timestamp": stamps,
            }
        )
    )
    return {
        "apiVersion": V2,
        "kind": "BottlerocketShadow",
        "metadata": draw(metadata),
        "spec": {
            "state": draw(st.sampled_from(list(ShadowState))).value,
            "state_transition_timestamp": draw(stamps),
            "version": draw(st.none() | versions),
        },
        "status": status,
    }


@given(v1_objects())
def test_v1_to_v2_to_v1_is_the_identity(obj: dict[str, Any]) -> None:
    original = copy.deepcopy(obj)
    assert convert_object(convert_object(obj, V2), V1) == original
    assert obj == original  # the input is not mutated


def lossy_view(obj: dict[str, Any]) -> dict[str, Any]:
    """What survives v2 -> v1 -> v2: ErrorReset reads as MonitoringUpdate, crash tracking is gone."""
    out = copy.deepcopy(obj)
    for part, key in (("spec", "state"), ("status", "current_state")):
        if out[part] is not None and out[part][key] == "ErrorReset":
            out[part][key] = "MonitoringUpdate"
    if out["status"] is not None:
        out["status"].update(crash_count=0, state_transition_failure_timestamp=None)
    return out


@given(v2_objects())
def test_v2_to_v1_to_v2_loses_only_the_documented_fields(obj: dict[str, Any]) -> None:
    assert convert_object(convert_object(obj, V1), V2) == lossy_view(obj)
