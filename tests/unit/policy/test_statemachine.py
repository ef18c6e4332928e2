from datetime import UTC, datetime, timedelta

import pytest

from brupop.models.shadow import DEFAULT_SPEC, ShadowState
from brupop.models.timestamp import Timestamp
from brupop.policy.statemachine import is_active, next_spec, wants_update
from tests.factories import shadow

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
S = ShadowState


def test_no_status_gets_the_default_spec() -> None:
    assert (
        next_spec(shadow("a", spec=S.STAGED_AND_PERFORMED_UPDATE, state=None), now=NOW, may_start=True)
        == DEFAULT_SPEC
    )


def test_idle_with_an_update_starts_only_when_allowed() -> None:
    node = shadow("a", current="1.0.0", target="1.1.0")
    started = next_spec(node, now=NOW, may_start=True)
    assert started.state is S.STAGED_AND_PERFORMED_UPDATE
    assert started.version == "1.1.0"
    assert started.state_transition_timestamp == Timestamp.from_datetime(NOW)
    assert next_spec(node, now=NOW, may_start=False) == node.spec


def test_idle_without_an_update_resets_a_leftover_spec() -> None:
    node = shadow("a", current="1.1.0", target="1.1.0", spec_version="1.1.0")
    assert next_spec(node, now=NOW, may_start=False) == DEFAULT_SPEC


def test_crash_backoff_holds_an_idle_node_unless_it_was_waived() -> None:
    node = shadow("a", current="1.0.0", target="1.1.0", crashes=3, failed_at=NOW - timedelta(minutes=8))
    assert next_spec(node, now=NOW, may_start=True) == node.spec
    assert (
        next_spec(node, now=NOW + timedelta(minutes=1), may_start=True).state is S.STAGED_AND_PERFORMED_UPDATE
    )
    assert (
        next_spec(node, now=NOW, may_start=True, backoff_waived=True).state is S.STAGED_AND_PERFORMED_UPDATE
    )
    assert wants_update(node)  # whatever its back-off: admission weighs it
    assert not wants_update(shadow("b", current="1.1.0", target="1.1.0"))
    busy = shadow("c", spec=S.STAGED_AND_PERFORMED_UPDATE, current="1.0.0", target="1.1.0")
    assert not wants_update(busy)


@pytest.mark.parametrize(
    ("reached", "following"),
    [
        (S.STAGED_AND_PERFORMED_UPDATE, S.REBOOTED_INTO_UPDATE),
        (S.REBOOTED_INTO_UPDATE, S.MONITORING_UPDATE),
        (S.MONITORING_UPDATE, S.IDLE),
    ],
)
def test_each_reached_state_advances_one_step_keeping_the_version(
    reached: ShadowState, following: ShadowState
) -> None:
    node = shadow("a", spec=reached, state=reached, current="1.0.0", target="1.1.0", spec_version="1.1.0")
    result = next_spec(node, now=NOW, may_start=False)
    assert (result.state, result.version) == (following, "1.1.0")
    assert result.state_transition_timestamp == Timestamp.from_datetime(NOW)


def test_a_node_still_working_is_left_alone() -> None:
    node = shadow("a", spec=S.REBOOTED_INTO_UPDATE, state=S.STAGED_AND_PERFORMED_UPDATE, spec_version="1.1.0")
    assert next_spec(node, now=NOW, may_start=True) == node.spec


def test_error_reset_sends_the_node_back_to_idle_once() -> None:
    failing = shadow("a", spec=S.REBOOTED_INTO_UPDATE, state=S.ERROR_RESET, spec_version="1.1.0")
    result = next_spec(failing, now=NOW, may_start=False)
    assert (result.state, result.version) == (S.IDLE, "1.1.0")
    settled = shadow("a", spec=S.IDLE, state=S.ERROR_RESET, spec_version="1.1.0")
    assert next_spec(settled, now=NOW, may_start=True) == settled.spec
    assert (
        next_spec(shadow("a", spec=S.ERROR_RESET, state=S.ERROR_RESET), now=NOW, may_start=False).state
        is S.IDLE
    )


def test_active_means_anything_but_settled_idle() -> None:
    assert not is_active(shadow("a"))
    assert not is_active(shadow("a", state=None, spec=S.REBOOTED_INTO_UPDATE))
    assert is_active(shadow("a", spec=S.STAGED_AND_PERFORMED_UPDATE))
    assert is_active(shadow("a", spec=S.IDLE, state=S.ERROR_RESET))
    assert is_active(shadow("a", spec=S.IDLE, state=S.MONITORING_UPDATE))
