"""The wire reader on its own: what it accepts, what it refuses and how it names the place, and that
writing then reading gives back the same model."""

from dataclasses import dataclass, field
from datetime import UTC
from typing import Annotated, Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brupop.models.host import UpdateStatus
from brupop.models.shadow import BottlerocketShadow, ShadowState, ShadowStatus
from brupop.models.timestamp import Timestamp
from brupop.models.wire import Extra, Keys, MaxSize, Range, Rule, Wire, WireError, cel_quote, described


@dataclass(frozen=True, slots=True, kw_only=True)
class Leaf(Wire):
    count: Annotated[int, Range(0, 9, "digit")]
    flag: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Tree(Wire):
    EXTRA: ClassVar[Extra] = "ignore"

    label: str = described("A name.", key="labelText")
    leaves: list[Leaf] = field(default_factory=list)
    at: Timestamp | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def test_nested_values_are_read_and_written_back_under_their_keys() -> None:
    wire = {
        "labelText": "t",
        "leaves": [{"count": 1, "flag": True}, {"count": 2, "flag": False}],
        "at": "2024-05-01T10:00:00.123456789+00:00",
        "extra": {"any": ["thing"]},
    }
    tree = Tree.from_wire({**wire, "ignored": 1})
    assert tree.leaves[0] == Leaf(count=1, flag=True)
    assert tree.at is not None
    assert tree.at.instant.microsecond == 123456
    assert tree.to_wire() == wire


@pytest.mark.parametrize(
    ("wire", "location", "fragment"),
    [
        ({"labelText": 3}, "labelText", "expected a string, got int"),
        ({"labelText": "t", "leaves": {}}, "leaves", "expected a list, got dict"),
        ({"labelText": "t", "leaves": [{"count": 1}, {}]}, "leaves.1.count", "required field missing"),
        ({"labelText": "t", "leaves": [{"count": 10}]}, "leaves.0.count", "outside 0..9"),
        ({"labelText": "t", "leaves": [{"count": True}]}, "leaves.0.count", "expected an integer, got bool"),
        ({"labelText": "t", "leaves": [{"count": 1, "flag": 1}]}, "leaves.0.flag", "true or false"),
        ({"labelText": "t", "leaves": [{"count": 1, "more": 1}]}, "leaves.0.more", "unknown field"),
        ({"labelText": "t", "leaves": ["x"]}, "leaves.0", "expected an object, got str"),
        ({"labelText": "t", "at": "noon"}, "at", "RFC 3339"),
        ({"labelText": "t", "at": 5}, "at", "expected an RFC 3339 timestamp string, got int"),
        ({"labelText": "t", "extra": []}, "extra", "expected an object, got list"),
        ([], "object", "expected an object, got list"),
    ],
)
def test_the_first_bad_value_is_named_by_its_path(wire: object, location: str, fragment: str) -> None:
    with pytest.raises(WireError) as info:
        Tree.from_wire(wire)
    assert info.value.location == location
    assert fragment in info.value.message


def test_enums_and_literals_list_what_they_accept() -> None:
    with pytest.raises(WireError, match="current_state: expected one of 'Idle', "):
        ShadowStatus.from_wire(
            {"current_version": "1.0.0", "target_version": "1.0.0", "current_state": "Nap", "crash_count": 0}
        )
    with pytest.raises(WireError, match=r"apiVersion: expected 'brupop\.bottlerocket\.aws/v2'"):
        BottlerocketShadow.from_wire({"apiVersion": "brupop.bottlerocket.aws/v1"})


def test_from_json_refuses_what_is_not_json() -> None:
    with pytest.raises(WireError, match="object: not JSON"):
        UpdateStatus.from_json(b"{nope")


def test_a_type_without_a_reader_is_a_programming_error() -> None:
    @dataclass(frozen=True, slots=True, kw_only=True)
    class Odd(Wire):
        value: int | bool

    with pytest.raises(TypeError, match=r"only `X \| None` and `int \| str` unions"):
        Odd.from_wire({"value": 1})


versions = st.tuples(*(st.integers(0, 999),) * 3).map(lambda v: ".".join(map(str, v)))


@given(
    current=versions,
    target=versions,
    state=st.sampled_from(ShadowState),
    crashes=st.integers(0, 2**32 - 1),
    failed_at=st.none() | st.datetimes(timezones=st.just(UTC)).map(Timestamp.from_datetime),
)
def test_status_round_trips(
    current: str, target: str, state: ShadowState, crashes: int, failed_at: Timestamp | None
) -> None:
    status = ShadowStatus(
        current_version=current,
        target_version=target,
        current_state=state,
        crash_count=crashes,
        state_transition_failure_timestamp=failed_at,
    )
    assert ShadowStatus.from_wire(status.to_wire()) == status


@dataclass(frozen=True, slots=True, kw_only=True)
class Shaped(Wire):
    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="self.low <= self.high",
            message="low above high",
            check=lambda m: m.low <= m.high,
            field="low",
        ),
    )

    amount: int | str = 0
    maybe: int | str | None = None
    names: Annotated[dict[str, Annotated[str, MaxSize(3)]], MaxSize(2), Keys("[a-z]+", "lower case")] = field(
        default_factory=dict
    )
    items: Annotated[list[str], MaxSize(1)] = field(default_factory=list)
    low: Annotated[int, Rule(cel="self % 2 == 0", message="must be even", check=lambda v: v % 2 == 0)] = 0
    high: int = 0


def test_int_or_string_typed_maps_sizes_keys_and_rules_are_read() -> None:
    read = Shaped.from_wire(
        {"amount": "10%", "maybe": None, "names": {"a": "xyz"}, "items": ["i"], "low": 2, "high": 4}
    )
    assert (read.amount, read.maybe, read.names, read.low) == ("10%", None, {"a": "xyz"}, 2)
    assert Shaped.from_wire({"amount": 3}).amount == 3


@pytest.mark.parametrize(
    ("wire", "location", "fragment"),
    [
        ({"amount": True}, "amount", "expected an integer or a string, got bool"),
        ({"amount": 1.5}, "amount", "expected an integer or a string, got float"),
        ({"names": {"a": 1}}, "names.a", "expected a string, got int"),
        ({"names": []}, "names", "expected an object, got list"),
        ({"names": {"a": "wxyz"}}, "names.a", "has 4 characters, more than the 3 allowed"),
        ({"names": {"a": "x", "b": "y", "c": "z"}}, "names", "has 3 keys, more than the 2 allowed"),
        ({"items": ["a", "b"]}, "items", "has 2 items, more than the 1 allowed"),
        ({"names": {"A": "x"}}, "names", "every key must be lower case"),
        ({"low": 3, "high": 4}, "low", "must be even"),
        ({"low": 4, "high": 2}, "low", "low above high"),
    ],
)
def test_new_constraints_name_the_field(wire: object, location: str, fragment: str) -> None:
    with pytest.raises(WireError) as info:
        Shaped.from_wire(wire)
    assert (info.value.location, info.value.message) == (location, fragment)


def test_a_model_rule_without_a_field_names_the_object() -> None:
    @dataclass(frozen=True, slots=True, kw_only=True)
    class Whole(Wire):
        RULES: ClassVar[tuple[Rule, ...]] = (Rule(cel="false", message="never", check=lambda m: False),)

    with pytest.raises(WireError, match=r"^object: never$"):
        Whole.from_wire({})
    assert Rule(cel="x", message="m", check=bool).schema() == {"rule": "x", "message": "m"}
    assert Rule(cel="x", message="m", check=bool, field="f").schema()["fieldPath"] == ".f"


def test_cel_quote_escapes_backslashes_and_quotes() -> None:
    assert cel_quote("a\\.b'c") == "'a\\\\.b\\'c'"
    assert Keys("[a-z]+", "lower").schema_rule()["rule"] == "self.all(k, k.matches('^[a-z]+$'))"


def test_a_type_the_reader_does_not_know_is_a_programming_error() -> None:
    @dataclass(frozen=True, slots=True, kw_only=True)
    class Odd(Wire):
        ratio: float

    with pytest.raises(TypeError, match="no wire reader for <class 'float'>"):
        Odd.from_wire({"ratio": 1.0})
