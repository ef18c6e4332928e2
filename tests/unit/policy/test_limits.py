import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brupop.policy.limits import Count, Percent, Unlimited, describe, from_env, parse_limit, tolerance


@pytest.mark.parametrize(
    ("value", "limit"),
    [
        (0, Count(0)),
        (3, Count(3)),
        ("0%", Percent(0)),
        ("10%", Percent(10)),
        ("100%", Percent(100)),
        ("unlimited", Unlimited()),
    ],
)
def test_parse(value: int | str, limit: object) -> None:
    assert parse_limit(value) == limit
    assert str(limit) == str(value)


@pytest.mark.parametrize("value", [-1, "101%", "07%", "3", "ten%", "", "UNLIMITED"])
def test_parse_refuses_what_the_schema_refuses(value: int | str) -> None:
    with pytest.raises(ValueError, match=str(value) if value else "expected"):
        parse_limit(value)


@pytest.mark.parametrize(
    ("percent", "size", "limit"),
    [(10, 25, 3), (10, 5, 1), (10, 0, 0), (0, 50, 0), (100, 7, 7), (33, 3, 1), (34, 3, 2)],
)
def test_percentages_round_up_as_kubernetes_rounds_max_unavailable(
    percent: int, size: int, limit: int
) -> None:
    assert Percent(percent).of(size) == limit


@given(percent=st.integers(0, 100), size=st.integers(0, 100_000))
def test_percent_is_the_ceiling_of_the_exact_share(percent: int, size: int) -> None:
    value = Percent(percent).of(size)
    assert value == math.ceil(percent * size / 100)
    assert value <= size
    assert (value > 0) == (percent > 0 and size > 0)


def test_counts_and_unlimited_ignore_the_pool_size_and_env_values_map_over() -> None:
    assert Count(2).of(100) == 2
    assert Unlimited().of(100) is None
    assert from_env(None) == Unlimited()
    assert from_env(4) == Count(4)
    assert (describe(None), describe(3)) == ("unlimited", "3")


@pytest.mark.parametrize(
    ("value", "total", "tolerated"),
    [(0, 10, 0), (2, 10, 2), ("10%", 10, 1), ("10%", 5, 0), ("10%", 19, 1), ("100%", 7, 7), ("0%", 7, 0)],
)
def test_tolerances_round_down(value: int | str, total: int, tolerated: int) -> None:
    assert tolerance(value, total) == tolerated


def test_a_tolerance_is_never_unlimited() -> None:
    with pytest.raises(ValueError, match="a tolerance is a count or a percentage"):
        tolerance("unlimited", 3)
