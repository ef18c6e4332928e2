"""The verification record a shadow carries: written as compact JSON and read back unchanged, refused when
it does not read, bounded in size, and telling whether it belongs to the update in progress."""

import json
from datetime import UTC, datetime

import pytest

from brupop.models.health import SNAPSHOT_LIMIT, Readiness, WorkloadRef, WorkloadSnapshot
from brupop.models.timestamp import Timestamp
from brupop.models.verifying import REASON_LIMIT, VerificationOutcome, VerificationRecord, clipped
from brupop.models.wire import WireError

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)


def test_a_record_is_stored_as_compact_json_and_read_back() -> None:
    snapshot = WorkloadSnapshot.of(
        {WorkloadRef(kind="Deployment", namespace="a", name="web"): Readiness(ready=3, desired=3)},
        taken_at=NOW,
    )
    record = VerificationRecord(
        version="1.20.3",
        snapshot=snapshot,
        verified_at=Timestamp.from_datetime(NOW),
        outcome=VerificationOutcome.FAILED,
        ended_at=Timestamp.from_datetime(NOW),
        reason="node n1 is not Ready",
    )
    text = record.to_json()
    assert " " not in text.replace("node n1 is not Ready", "")
    assert json.loads(text)["verifiedAt"] == "2025-06-01T12:00:00.000000000+00:00"
    assert VerificationRecord.from_json(text) == record
    assert VerificationRecord.from_json('{"version": "1.20.3"}') == VerificationRecord(version="1.20.3")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('{"version": "v1"}', "version"),
        ('{"version": "1.0.0", "outcome": "Maybe"}', "outcome"),
        ('{"version": "1.0.0", "verifiedAt": "yesterday"}', "verifiedAt"),
        ('{"version": "1.0.0", "reason": "' + "x" * (REASON_LIMIT + 1) + '"}', "reason"),
        ('{"version": "1.0.0", "extra": 1}', "extra"),
        ("[]", "object"),
    ],
)
def test_a_record_that_does_not_read_names_the_field(text: str, where: str) -> None:
    with pytest.raises(WireError) as caught:
        VerificationRecord.from_json(text)
    assert caught.value.location == where


def test_a_full_record_stays_far_below_what_annotations_may_hold() -> None:
    worst = {
        WorkloadRef(kind="StatefulSet", namespace="n" * 63, name=f"{i:03d}" + "x" * 250): Readiness(
            ready=2**31 - 1, desired=2**31 - 1
        )
        for i in range(SNAPSHOT_LIMIT)
    }
    record = VerificationRecord(
        version="1.20.3",
        snapshot=WorkloadSnapshot.of(worst, taken_at=NOW),
        reason=clipped("y" * 10_000),
    )
    assert len(record.to_json().encode()) < 128 * 1024  # annotations may hold 256 KiB in all
    assert len(record.reason) == REASON_LIMIT
    assert record.reason.endswith("…")
    assert clipped("short") == "short"


def test_a_record_belongs_to_the_update_in_progress_until_it_ends() -> None:
    record = VerificationRecord(version="1.20.3")
    assert record.in_progress("1.20.3")
    assert not record.in_progress("1.20.4")
    assert not record.in_progress(None)
    ended = VerificationRecord(version="1.20.3", outcome=VerificationOutcome.PASSED)
    assert not ended.in_progress("1.20.3")
