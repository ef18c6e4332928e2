import pytest
from hypothesis import given
from hypothesis import strategies as st

from brupop.models.policy import LabelSelector
from brupop.policy.selector import matches, selector_text

LABELS = {"pool": "web", "zone": "a"}


def selector(**wire: object) -> LabelSelector:
    return LabelSelector.from_wire(wire)


@pytest.mark.parametrize(
    ("wire", "selected"),
    [
        ({}, True),
        ({"matchLabels": {"pool": "web"}}, True),
        ({"matchLabels": {"pool": "web", "zone": "b"}}, False),
        ({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}, True),
        ({"matchExpressions": [{"key": "rack", "operator": "In", "values": ["a"]}]}, False),
        ({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}, False),
        ({"matchExpressions": [{"key": "rack", "operator": "NotIn", "values": ["a"]}]}, True),
        ({"matchExpressions": [{"key": "pool", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": "rack", "operator": "Exists"}]}, False),
        ({"matchExpressions": [{"key": "rack", "operator": "DoesNotExist"}]}, True),
        ({"matchExpressions": [{"key": "pool", "operator": "DoesNotExist"}]}, False),
        (
            {
                "matchLabels": {"pool": "web"},
                "matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}],
            },
            False,
        ),
    ],
)
def test_every_entry_and_requirement_must_hold(wire: dict[str, object], selected: bool) -> None:
    assert matches(selector(**wire), LABELS) is selected


keys = st.sampled_from(["a", "b", "c"])
values = st.sampled_from(["1", "2"])


@given(wanted=st.dictionaries(keys, values), labels=st.dictionaries(keys, values))
def test_match_labels_select_exactly_the_supersets(wanted: dict[str, str], labels: dict[str, str]) -> None:
    assert matches(selector(matchLabels=wanted), labels) == (wanted.items() <= labels.items())


@given(key=keys, chosen=st.lists(values, min_size=1, max_size=64), labels=st.dictionaries(keys, values))
def test_in_and_not_in_are_complements(key: str, chosen: list[str], labels: dict[str, str]) -> None:
    inside = selector(matchExpressions=[{"key": key, "operator": "In", "values": chosen}])
    outside = selector(matchExpressions=[{"key": key, "operator": "NotIn", "values": chosen}])
    assert matches(inside, labels) != matches(outside, labels)


def test_selectors_are_written_as_kubectl_takes_them() -> None:
    written = selector(
        matchLabels={"zone": "a", "app": "backup"},
        matchExpressions=[
            {"key": "tier", "operator": "In", "values": ["db", "cache"]},
            {"key": "env", "operator": "NotIn", "values": ["dev"]},
            {"key": "canary", "operator": "Exists"},
            {"key": "legacy", "operator": "DoesNotExist"},
        ],
    )
    assert selector_text(written) == "app=backup,zone=a,tier in (db,cache),env notin (dev),canary,!legacy"
    assert selector_text(selector()) == "(everything)"
