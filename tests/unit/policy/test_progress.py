"""What the controller writes on each shadow for people: the cycle it is in, the cycles it finished (bounded),
and why a node waits when only the controller can tell (a gate's verdict), each written only when it
changes."""

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from brupop.models.constants import CYCLE_ANNOTATION, HISTORY_ANNOTATION, WAITING_ANNOTATION
from brupop.models.policy import GateKind
from brupop.models.progress import HISTORY_LIMIT, CycleStart, History, Outcome, Waiting
from brupop.models.shadow import BottlerocketShadow, ShadowSpec, ShadowState
from brupop.models.timestamp import Timestamp
from brupop.policy.admission import BackingOff, GateBlocked, NoFreeSlot
from brupop.policy.progress import cycle_begins, cycle_change, read_history, waiting_change
from brupop.policy.stuck import Stuck
from tests.factories import shadow

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
START = NOW - timedelta(minutes=20)
S = ShadowState


def annotated(found: BottlerocketShadow, annotations: dict[str, str]) -> BottlerocketShadow:
    return replace(found, metadata={**found.metadata, "annotations": annotations})


def record(**fields: str) -> str:
    return json.dumps(
        {"from": "1.0.0", "to": "1.1.0", "start": Timestamp.from_datetime(START).text, **fields}
    )


def history(patch: dict[str, str | None]) -> History:
    text = patch[HISTORY_ANNOTATION]
    assert text is not None
    return History.from_json(text)


def test_a_start_records_where_the_cycle_begins() -> None:
    idle = shadow("n", current="1.0.0", target="1.1.0")
    spec = ShadowSpec(
        state=S.STAGED_AND_PERFORMED_UPDATE,
        state_transition_timestamp=Timestamp.from_datetime(START),
        version="1.1.0",
    )
    (text,) = cycle_begins(idle, spec, pool="web").values()
    assert text is not None
    assert CycleStart.from_json(text) == CycleStart(
        from_version="1.0.0", to_version="1.1.0", start=Timestamp.from_datetime(START), pool="web"
    )


def test_a_cycle_back_on_idle_on_its_target_is_appended_as_succeeded_and_its_record_goes() -> None:
    back = annotated(shadow("n", current="1.1.0", target="1.1.0"), {CYCLE_ANNOTATION: record()})
    patch = cycle_change(back, stuck=None, now=NOW)
    assert patch[CYCLE_ANNOTATION] is None
    (cycle,) = history(patch).cycles
    assert (cycle.from_version, cycle.to_version, cycle.outcome) == ("1.0.0", "1.1.0", Outcome.SUCCEEDED)
    assert (cycle.start.instant, cycle.end.instant) == (START, NOW)


def test_a_failed_cycle_is_appended_with_its_reason() -> None:
    failed = shadow("n", current="1.0.0", target="1.1.0", crashes=1, failed_at=NOW - timedelta(minutes=5))
    patch = cycle_change(annotated(failed, {CYCLE_ANNOTATION: record()}), stuck=None, now=NOW)
    (cycle,) = history(patch).cycles
    assert cycle.outcome is Outcome.FAILED
    assert cycle.reason == "update to 1.1.0 failed (crash count 1)"


def test_a_cycle_that_ended_without_its_target_or_a_failure_is_a_failure_that_says_so() -> None:
    undone = annotated(shadow("n", current="1.0.0", target="1.1.0"), {CYCLE_ANNOTATION: record()})
    (cycle,) = history(cycle_change(undone, stuck=None, now=NOW)).cycles
    assert (cycle.outcome, cycle.reason) == (Outcome.FAILED, "ended on 1.0.0 without reaching 1.1.0")


def test_a_failure_from_before_the_cycle_does_not_make_it_a_failure() -> None:
    earlier = shadow("n", current="1.1.0", target="1.1.0", crashes=1, failed_at=START - timedelta(hours=1))
    (cycle,) = history(
        cycle_change(annotated(earlier, {CYCLE_ANNOTATION: record()}), stuck=None, now=NOW)
    ).cycles
    assert cycle.outcome is Outcome.SUCCEEDED


def test_a_stuck_cycle_is_appended_once_and_the_cycle_goes_on() -> None:
    busy = shadow("n", spec=S.REBOOTED_INTO_UPDATE, state=S.STAGED_AND_PERFORMED_UPDATE, spec_version="1.1.0")
    busy = annotated(busy, {CYCLE_ANNOTATION: record()})
    found = Stuck(
        node="n", heading_to=S.REBOOTED_INTO_UPDATE, since=START, deadline=NOW - timedelta(minutes=1)
    )
    patch = cycle_change(busy, stuck=found, now=NOW)
    assert CYCLE_ANNOTATION not in patch  # the cycle is not over
    (cycle,) = history(patch).cycles
    assert (cycle.outcome, cycle.end.instant) == (Outcome.STUCK, found.deadline)
    assert cycle.reason == found.failure().reason
    again = annotated(busy, {**busy.metadata["annotations"], **patch})  # type: ignore[dict-item]
    assert cycle_change(again, stuck=found, now=NOW + timedelta(minutes=5)) == {}


def test_nothing_changes_in_a_cycle_or_without_a_record() -> None:
    busy = shadow("n", spec=S.REBOOTED_INTO_UPDATE, state=S.STAGED_AND_PERFORMED_UPDATE, spec_version="1.1.0")
    assert cycle_change(annotated(busy, {CYCLE_ANNOTATION: record()}), stuck=None, now=NOW) == {}
    assert cycle_change(shadow("n", current="1.1.0", target="1.1.0"), stuck=None, now=NOW) == {}


def test_a_record_on_a_shadow_without_a_status_waits_for_its_status() -> None:
    """Without a status nobody knows whether the cycle ended or how: the record stays, no history entry, and
    the pass goes on (it stopped the whole pass with an AssertionError)."""
    blank = annotated(shadow("n", state=None), {CYCLE_ANNOTATION: record()})
    assert cycle_change(blank, stuck=None, now=NOW) == {}


def test_an_unreadable_record_is_dropped_without_a_cycle() -> None:
    back = annotated(shadow("n", current="1.1.0", target="1.1.0"), {CYCLE_ANNOTATION: "{not json"})
    assert cycle_change(back, stuck=None, now=NOW) == {CYCLE_ANNOTATION: None}


@given(kept=st.integers(0, HISTORY_LIMIT + 3))
def test_history_keeps_the_newest_cycles_up_to_its_limit(kept: int) -> None:
    back = shadow("n", current="1.1.0", target="1.1.0")
    for turn in range(kept + 1):
        annotations = dict(back.metadata.get("annotations") or {})
        annotations[CYCLE_ANNOTATION] = record(
            start=Timestamp.from_datetime(START + timedelta(seconds=turn)).text
        )
        patch = cycle_change(annotated(back, annotations), stuck=None, now=NOW)
        annotations.update({k: v for k, v in patch.items() if v is not None})
        annotations.pop(CYCLE_ANNOTATION)
        back = annotated(back, annotations)
    cycles = read_history(back.metadata["annotations"]).cycles
    assert len(cycles) == min(kept + 1, HISTORY_LIMIT)
    assert cycles[-1].start.instant == START + timedelta(seconds=kept)  # newest last


def test_an_unreadable_history_starts_afresh() -> None:
    back = annotated(
        shadow("n", current="1.1.0", target="1.1.0"), {CYCLE_ANNOTATION: record(), HISTORY_ANNOTATION: "[1]"}
    )
    assert len(history(cycle_change(back, stuck=None, now=NOW)).cycles) == 1


BLOCKED = GateBlocked(gate=GateKind.PROMETHEUS, reason="alert KubeNodeNotReady firing", since=START)


def test_a_gates_verdict_is_written_once_and_removed_when_it_no_longer_holds() -> None:
    patch = waiting_change({}, BLOCKED)
    text = patch[WAITING_ANNOTATION]
    assert text is not None
    assert Waiting.from_json(text) == Waiting(
        reason="GateBlocked",
        message="blocked by the prometheus gate: alert KubeNodeNotReady firing",
        since=Timestamp.from_datetime(START),
    )
    assert waiting_change({WAITING_ANNOTATION: text}, BLOCKED) == {}
    assert waiting_change({WAITING_ANNOTATION: text}, None) == {WAITING_ANNOTATION: None}
    assert waiting_change({WAITING_ANNOTATION: "junk"}, BLOCKED) == patch  # an unreadable one is replaced
    changed = waiting_change({WAITING_ANNOTATION: text}, replace(BLOCKED, reason="alert X firing"))
    assert Waiting.from_json(changed[WAITING_ANNOTATION] or "").message.endswith("alert X firing")


def test_reasons_anyone_can_work_out_are_not_written() -> None:
    assert waiting_change({}, NoFreeSlot(in_cycle=1, limit=1)) == {}
    assert waiting_change({}, BackingOff(until=NOW)) == {}
    assert waiting_change({WAITING_ANNOTATION: "junk"}, NoFreeSlot(in_cycle=1, limit=1)) == {
        WAITING_ANNOTATION: None
    }
    assert waiting_change({}, None) == {}


def test_a_long_verdict_is_cut_to_what_the_annotation_holds() -> None:
    text = waiting_change({}, replace(BLOCKED, reason="x" * 5000))[WAITING_ANNOTATION]
    assert text is not None
    assert len(Waiting.from_json(text).message) == 1024
