import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brupop.models.timestamp import SCHEMA, Timestamp


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2022-07-09T19:32:38.609610964+00:00", datetime(2022, 7, 9, 19, 32, 38, 609610, tzinfo=UTC)),
        ("2022-07-09T19:32:38Z", datetime(2022, 7, 9, 19, 32, 38, tzinfo=UTC)),
        ("2022-07-09T19:32:38.5z", datetime(2022, 7, 9, 19, 32, 38, 500000, tzinfo=UTC)),
        ("2022-07-09t21:32:38.123+02:00", datetime(2022, 7, 9, 19, 32, 38, 123000, tzinfo=UTC)),
        ("2022-07-09T17:02:38.1234567-02:30", datetime(2022, 7, 9, 19, 32, 38, 123456, tzinfo=UTC)),
    ],
)
def test_parses_every_fraction_length_and_offset(text: str, expected: datetime) -> None:
    parsed = Timestamp.parse(text)
    assert parsed.instant == expected
    assert parsed.text == text


@pytest.mark.parametrize(
    "text",
    [
        "2022-07-09 19:32:38Z",  # space instead of T
        "2022-07-09T19:32:38",  # no offset
        "2022-07-09T19:32:38.1234567890Z",  # ten fractional digits
        "2022-13-09T19:32:38Z",  # month 13
        "2022-07-09T19:32:38+24:00",  # offset out of range
        "yesterday",
    ],
)
def test_rejects_what_is_not_rfc3339(text: str) -> None:
    with pytest.raises(ValueError, match=r"RFC 3339|valid date|offset"):
        Timestamp.parse(text)


def test_from_datetime_writes_the_chrono_form() -> None:
    moment = datetime(2024, 5, 1, 12, 0, 1, 250, tzinfo=timezone(timedelta(hours=2)))
    assert Timestamp.from_datetime(moment).text == "2024-05-01T10:00:01.000250000+00:00"


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        Timestamp.from_datetime(datetime(2024, 5, 1))


@given(st.datetimes(timezones=st.just(UTC)))
def test_written_timestamps_parse_back_to_the_same_instant(moment: datetime) -> None:
    written = Timestamp.from_datetime(moment)
    assert Timestamp.parse(written.text).instant == moment
    assert str(written) == written.text


@pytest.mark.parametrize(
    ("nanos", "text"),
    [
        (1_729_789_323_620_424_496, "2024-10-24T17:02:03.620424496Z"),  # the host API reference's example
        (1_729_789_323_620_424_000, "2024-10-24T17:02:03.620424Z"),
        (1_729_789_323_620_000_000, "2024-10-24T17:02:03.620Z"),
        (1_729_789_323_000_000_000, "2024-10-24T17:02:03Z"),
        (0, "1970-01-01T00:00:00Z"),
    ],
)
def test_unix_nanos_are_written_in_chronos_serde_form(nanos: int, text: str) -> None:
    written = Timestamp.from_unix_nanos(nanos)
    assert written.text == text
    assert written == Timestamp.parse(text)
    assert written.instant == Timestamp.parse(text).instant


@pytest.mark.parametrize(
    "text",
    [
        "9999-12-31T23:59:59-23:59",  # a valid RFC 3339 text whose instant is in year 10000
        "0001-01-01T00:00:00+23:59",  # ... or in year 0
    ],
)
def test_an_instant_outside_the_representable_years_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="outside the years 1-9999"):
        Timestamp.parse(text)


CRD_PATTERN = re.compile(SCHEMA["pattern"])
TIMESTAMP_LIKE = st.from_regex(
    r"\A[0-9\u0660-\u0669]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{0,10})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})?\Z"
)


@given(TIMESTAMP_LIKE)
def test_what_the_crd_lets_in_is_what_the_reader_reads(text: str) -> None:
    """The API server must refuse what brupop cannot read back, or one stored shadow fails the conversion
    webhook and with it every v1 list and watch. The CRD's pattern takes the reader's syntax exactly; what
    the reader refuses beyond syntax (a 30 February, an offset past 23:59, an instant outside the years
    1-9999) the CRD's CEL rule refuses too (CEL's timestamp() fails on the first two)."""
    refusal = ""
    try:
        Timestamp.parse(text)
    except ValueError as err:
        refusal = str(err)
    if not refusal:
        assert CRD_PATTERN.fullmatch(text)
    elif CRD_PATTERN.fullmatch(text):
        assert any(why in refusal for why in ("not a valid date", "invalid UTC offset", "outside the years"))


def test_digits_of_other_scripts_are_no_timestamp() -> None:
    with pytest.raises(ValueError, match="not an RFC 3339 timestamp"):
        Timestamp.parse("\u0662\u0660\u0662\u0664-10-24T17:02:03Z")
