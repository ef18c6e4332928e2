"""RFC 3339 instants as the Rust brupop writes them, kept exactly as received.

The Rust brupop writes chrono's `to_rfc3339()` (nine fractional digits, `+00:00`), while other writers use
`Z` and fewer digits (Bottlerocket's host API writes chrono's serde form, `from_unix_nanos`). Python's
datetime holds only microseconds, so a parsed value keeps its original text:
an object read and written back is unchanged byte for byte, and `instant` serves every comparison.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

_RFC3339 = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt](?P<time>\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d{1,9}))?"
    r"(?P<offset>[Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,  # digits are 0-9 only, as in the CRD's pattern (`\d` would take any script's digits)
)
_IN_RANGE: Final = (
    "timestamp(self) >= timestamp('0001-01-01T00:00:00Z') && "
    "timestamp(self) <= timestamp('9999-12-31T23:59:59.999999999Z')"
)
_MESSAGE: Final = "must be an RFC 3339 time whose instant is in the years 1-9999 (UTC)"
SCHEMA: Final = {
    "type": "string",
    "maxLength": 64,
    "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$",
    "x-kubernetes-validations": [{"rule": _IN_RANGE, "message": _MESSAGE}],
}
"""The CRD schema of a timestamp field: the API server refuses what `Timestamp.parse` would refuse, so no
stored object fails the conversion webhook (a failed conversion fails every v1 list and watch, not just
that object's read)."""
RATCHETING_VALIDATIONS: Final = [
    {
        "rule": f"(oldSelf.hasValue() && oldSelf.value() == self) || ({_IN_RANGE})",
        "optionalOldSelf": True,
        "message": _MESSAGE,
    }
]
"""The same check for a field that objects stored before it existed may hold (the shadow's: the Rust
brupop's CRD checked no timestamp): a value left unchanged passes, since CEL's `||` absorbs the error
`timestamp()` raises on it. The API server validates the whole object on a status write, and a pattern
ratchets but a rule's evaluation error does not, so without the first term no status could ever be
written to such a shadow again. Only where `oldSelf` correlates (not inside a list)."""


@dataclass(frozen=True, slots=True)
class Timestamp:
    """An instant plus the exact RFC 3339 text it came from."""

    text: str
    instant: datetime = field(compare=False)

    @classmethod
    def parse(cls, text: str) -> Timestamp:
        match = _RFC3339.fullmatch(text)
        if match is None:
            raise ValueError(
                f"{text!r} is not an RFC 3339 timestamp (expected e.g. 2024-05-01T10:00:00.123456789+00:00 "
                "or 2024-05-01T10:00:00Z)"
            )
        offset_text = match["offset"]
        if offset_text in ("Z", "z"):
            offset = timedelta(0)
        else:
            sign = -1 if offset_text[0] == "-" else 1
            hours, minutes = int(offset_text[1:3]), int(offset_text[4:6])
            if hours > 23 or minutes > 59:
                raise ValueError(f"{text!r} has an invalid UTC offset {offset_text!r}")
            offset = sign * timedelta(hours=hours, minutes=minutes)
        micros = int((match["frac"] or "0").ljust(9, "0")[:6])
        try:
            local = datetime.fromisoformat(f"{match['date']}T{match['time']}")
        except ValueError as err:
            raise ValueError(f"{text!r} is not a valid date and time: {err}") from None
        try:
            instant = local.replace(microsecond=micros, tzinfo=timezone(offset)).astimezone(UTC)
        except OverflowError:  # e.g. 9999-12-31T23:59:59-23:59 is in year 10000 in UTC
            raise ValueError(f"{text!r} is an instant outside the years 1-9999 (UTC)") from None
        return cls(text=text, instant=instant)

    @classmethod
    def from_datetime(cls, moment: datetime) -> Timestamp:
        """The chrono `to_rfc3339()` form: UTC, nine fractional digits, `+00:00`."""
        if moment.tzinfo is None:
            raise ValueError("a naive datetime has no defined instant; pass an aware datetime")
        utc = moment.astimezone(UTC)
        text = utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "000+00:00"
        return cls(text=text, instant=utc)

    @classmethod
    def from_unix_nanos(cls, nanos: int) -> Timestamp:
        """chrono's serde form of a `DateTime<Utc>`, as Bottlerocket's host API writes it: a `Z` suffix
        and the fewest of 0, 3, 6 or 9 fractional digits that keep the value
        (`2024-10-24T17:02:03.620424496Z`)."""
        seconds, fraction = divmod(nanos, 1_000_000_000)
        utc = datetime.fromtimestamp(seconds, UTC)
        if fraction == 0:
            digits = ""
        elif fraction % 1_000_000 == 0:
            digits = f".{fraction // 1_000_000:03d}"
        elif fraction % 1_000 == 0:
            digits = f".{fraction // 1_000:06d}"
        else:
            digits = f".{fraction:09d}"
        text = f"{utc.replace(tzinfo=None).isoformat(timespec='seconds')}{digits}Z"
        return cls(text=text, instant=utc.replace(microsecond=fraction // 1_000))

    def __str__(self) -> str:
        return self.text


END_OF_TIME = datetime.max.replace(tzinfo=UTC)


def later(instant: datetime, delta: timedelta) -> datetime:
    """`instant + delta`, or END_OF_TIME when that is past year 9999: a schema-valid timestamp near the end
    of time (`9999-12-31T23:59:59Z`) plus a back-off or a deadline must not raise OverflowError."""
    try:
        return instant + delta
    except OverflowError:
        return END_OF_TIME
