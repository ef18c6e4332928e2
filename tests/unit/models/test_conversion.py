import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brupop.models.conversion import (
    V2_FIELDS_ANNOTATION,
    ConversionError,
    ReviewError,
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


def test_performed_update_reads_back_as_staged_update_and_leaves_no_annotation() -> None:
    v1 = {
        "apiVersion": V1,
        "kind": "BottlerocketShadow",
        "metadata": {"name": "brs-a"},
        "spec": {"state": "PerformedUpdate", "state_transition_timestamp": STAMP, "version": "1.1.0"},
        "status": {"current_version": "1.0.0", "target_version": "1.1.0", "current_state": "PerformedUpdate"},
    }
    v2 = convert_object(v1, V2)
    assert v2["spec"]["state"] == v2["status"]["current_state"] == "StagedAndPerformedUpdate"
    assert v2["metadata"] == {"name": "brs-a"}  # nothing internal in what is stored and read as v2
    back = convert_object(v2, V1)
    assert back["spec"]["state"] == back["status"]["current_state"] == "StagedUpdate"


def error_reset(crashes: int = 3) -> dict[str, Any]:
    obj = v2_object(current_state="ErrorReset", crash_count=crashes, state_transition_failure_timestamp=STAMP)
    obj["spec"] = {"state": "Idle", "state_transition_timestamp": STAMP, "version": "1.1.0"}
    return obj


def test_a_v1_label_edit_keeps_error_reset_and_the_crash_back_off() -> None:
    """Item 12 of issue 14: `kubectl label` through v1 reads the object as v1, adds the label, and the API
    server converts it back: the crash count and failure time survive, and v2 carries no annotation."""
    stored = error_reset()
    seen = convert_object(stored, V1)
    assert seen["status"] == {
        "current_version": "1.0.0",
        "target_version": "1.0.0",
        "current_state": "MonitoringUpdate",
    }
    assert V2_FIELDS_ANNOTATION in seen["metadata"]["annotations"]
    labelled = copy.deepcopy(seen)
    labelled["metadata"]["labels"]["edited"] = "yes"
    back = convert_object(labelled, V2)
    assert back["status"] == stored["status"]
    assert back["spec"] == stored["spec"]
    assert back["metadata"] == {**stored["metadata"], "labels": {"team": "x", "edited": "yes"}}


def test_a_spec_in_error_reset_survives_a_v1_round_trip() -> None:
    stored = error_reset()
    stored["spec"]["state"] = "ErrorReset"
    assert convert_object(convert_object(stored, V1), V2) == stored


def test_a_v1_write_of_a_new_status_starts_from_crash_count_0() -> None:
    seen = convert_object(error_reset(), V1)
    seen["status"]["current_state"] = "Idle"
    back = convert_object(seen, V2)
    assert back["status"]["current_state"] == "Idle"
    assert (back["status"]["crash_count"], back["status"]["state_transition_failure_timestamp"]) == (0, None)
    assert back["spec"] == error_reset()["spec"]  # the spec part was not changed: nothing lost there
    assert V2_FIELDS_ANNOTATION not in back["metadata"]["annotations"]


@pytest.mark.parametrize(
    "record",
    [
        "not json",
        "[1]",
        '{"status": {"v1": "x", "v2": {"crash_count": 5}}}',
        '{"status": {"v1": {"current_version": "1.0.0", "target_version": "1.0.0", '
        '"current_state": "MonitoringUpdate"}, "v2": {"current_state": "Idle"}}}',
        '{"status": {"v1": {"current_version": "1.0.0", "target_version": "1.0.0", '
        '"current_state": "MonitoringUpdate"}, "v2": {"crash_count": -1}}}',
        '{"status": {"v1": {"current_version": "1.0.0", "target_version": "1.0.0", '
        '"current_state": "MonitoringUpdate"}, "v2": {"current_version": "9.9.9"}}}',
    ],
)
def test_a_record_that_does_not_fit_is_ignored_and_dropped(record: str) -> None:
    v1 = convert_object(v2_object(current_state="MonitoringUpdate"), V1)
    v1["metadata"]["annotations"][V2_FIELDS_ANNOTATION] = record
    back = convert_object(v1, V2)
    assert back["status"] == v2_object(current_state="MonitoringUpdate")["status"]
    assert back["metadata"]["annotations"] == {"note": "kept"}


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
        (v2_object(current_version="\udfff"), V1, r"status.current_version: '\\udfff' is not valid Unicode"),
        (
            {**v2_object(), "metadata": {"name": "brs-a", "labels": {"a": "\ud800"}}},
            V1,
            r"metadata.labels.a: '\\ud800' is not valid Unicode",
        ),
        (
            {**v2_object(), "metadata": {"annotations": {"a": 1}}},
            V1,
            "metadata.annotations.a: expected a string",
        ),
    ],
)
def test_bad_objects_raise_a_clear_error(obj: dict[str, Any], desired: str, message: str) -> None:
    with pytest.raises(ConversionError, match=message):
        convert_object(obj, desired)


def review(desired: str, objects: Any, uid: Any = "705ab4f5") -> dict[str, Any]:
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
    ],
)
def test_review_reports_malformed_requests_as_failed(body: dict[str, Any], message: str) -> None:
    response = handle_conversion_review(body)["response"]
    assert response["result"]["status"] == "Failed"
    assert response["convertedObjects"] is None
    assert __import__("re").search(message, response["result"]["message"])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"request": "nonsense"}, "request: expected an object"),
        ({"request": {"desiredAPIVersion": V1, "objects": []}}, "request.uid: missing"),
        (review(V1, [], uid=7), "request.uid: expected a string, got int"),
        (review(V1, [], uid="\udc00"), r"request.uid: '\\udc00' is not valid Unicode"),
    ],
)
def test_a_review_without_a_usable_uid_cannot_be_answered(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ReviewError, match=message):
        handle_conversion_review(body)


def test_the_answer_names_a_known_review_version_only() -> None:
    assert handle_conversion_review({**review(V1, []), "apiVersion": {"x": 1}})["apiVersion"] == (
        "apiextensions.k8s.io/v1"
    )
    assert (
        handle_conversion_review({**review(V1, []), "apiVersion": "apiextensions.k8s.io/v1beta1"})[
            "apiVersion"
        ]
        == "apiextensions.k8s.io/v1beta1"
    )


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


def performed_as_staged(obj: dict[str, Any]) -> dict[str, Any]:
    """What survives v1 -> v2 -> v1: PerformedUpdate reads back as StagedUpdate."""
    out = copy.deepcopy(obj)
    for part, key in (("spec", "state"), ("status", "current_state")):
        if out[part] is not None and out[part][key] == "PerformedUpdate":
            out[part][key] = "StagedUpdate"
    return out


@given(v1_objects())
def test_v1_to_v2_to_v1_loses_only_performed_update(obj: dict[str, Any]) -> None:
    original = copy.deepcopy(obj)
    assert convert_object(convert_object(obj, V2), V1) == performed_as_staged(original)
    assert obj == original  # the input is not mutated


@given(v2_objects())
def test_v2_to_v1_to_v2_is_the_identity(obj: dict[str, Any]) -> None:
    original = copy.deepcopy(obj)
    assert convert_object(convert_object(obj, V1), V2) == original
    assert obj == original


@given(v1_objects(), st.none() | st.text(max_size=30) | v2_objects().map(lambda o: convert_object(o, V1)))
def test_v2_never_carries_the_annotation(obj: dict[str, Any], record: Any) -> None:
    if isinstance(record, dict):  # the record a real v2 -> v1 conversion wrote, now on another object
        record = (record["metadata"].get("annotations") or {}).get(V2_FIELDS_ANNOTATION)
    if record is not None:
        obj["metadata"]["annotations"] = {
            **obj["metadata"].get("annotations", {}),
            V2_FIELDS_ANNOTATION: record,
        }
    assert V2_FIELDS_ANNOTATION not in (convert_object(obj, V2)["metadata"].get("annotations") or {})
