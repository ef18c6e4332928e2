import pytest

from brupop.models.constants import shadow_name
from brupop.models.shadow import DEFAULT_SPEC, BottlerocketShadow, ShadowState, ShadowStatus
from brupop.models.wire import WireError

WIRE = {
    "apiVersion": "brupop.bottlerocket.aws/v2",
    "kind": "BottlerocketShadow",
    "metadata": {"name": "brs-ip-10-0-0-1", "namespace": "brupop-bottlerocket-aws", "labels": {"a": "b"}},
    "spec": {
        "state": "StagedAndPerformedUpdate",
        "state_transition_timestamp": "2022-07-09T19:32:38.609610964+00:00",
        "version": "1.21.0",
    },
    "status": {
        "current_version": "1.20.3",
        "target_version": "1.21.0",
        "current_state": "Idle",
        "crash_count": 2,
        "state_transition_failure_timestamp": "2022-07-09T19:00:00Z",
    },
}


def test_wire_object_round_trips_unchanged() -> None:
    parsed = BottlerocketShadow.from_wire(WIRE)
    assert parsed.spec.state is ShadowState.STAGED_AND_PERFORMED_UPDATE
    assert parsed.status is not None
    assert parsed.status.update_available()
    assert parsed.name == "brs-ip-10-0-0-1"
    assert parsed.to_wire() == WIRE


def test_default_spec_serialises_nulls_so_a_merge_patch_clears_fields() -> None:
    assert DEFAULT_SPEC.to_wire() == {
        "state": "Idle",
        "state_transition_timestamp": None,
        "version": None,
    }
    assert BottlerocketShadow.from_wire({"metadata": {"name": "x"}, "spec": {}}).status is None


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("current_version", "v1.2.3", "current_version"),
        ("target_version", "1.2", "target_version"),
        ("current_state", "Rebooting", "current_state"),
        ("crash_count", -1, "crash_count"),
        ("crash_count", 2**32, "crash_count"),
        ("state_transition_failure_timestamp", "noon", "state_transition_failure_timestamp"),
        ("surprise", 1, "surprise"),
    ],
)
def test_bad_status_fields_are_named(field: str, value: object, fragment: str) -> None:
    body = {**WIRE["status"], field: value}  # type: ignore[dict-item]
    with pytest.raises(WireError) as info:
        ShadowStatus.from_wire(body)
    assert fragment in str(info.value)


@pytest.mark.parametrize("version", ["1.2.3", "0.0.0", "1.2.3-rc.1", "1.2.3+build.5", "10.20.30-alpha-1.x+b"])
def test_semver_versions_are_accepted(version: str) -> None:
    status = ShadowStatus.from_wire({**WIRE["status"], "current_version": version})  # type: ignore[dict-item]
    assert status.current_version == version


@pytest.mark.parametrize("version", ["01.2.3", "1.2.3-", "1.2.3-01", "1.2", "1.2.3.4", ""])
def test_non_semver_versions_are_rejected(version: str) -> None:
    with pytest.raises(WireError):
        ShadowStatus.from_wire({**WIRE["status"], "current_version": version})  # type: ignore[dict-item]


def test_shadow_name_prefixes_the_node_name() -> None:
    assert shadow_name("ip-10-0-0-1.ec2.internal") == "brs-ip-10-0-0-1.ec2.internal"
