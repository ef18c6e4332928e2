import pytest

from brupop.policy.holds import NO_REASON, hold_reason

HOLD = "brupop.bottlerocket.aws/hold"


@pytest.mark.parametrize(
    ("annotations", "reason"),
    [
        ({}, None),
        ({HOLD: "kernel debugging, ticket 4711"}, "kernel debugging, ticket 4711"),
        ({HOLD: "true"}, "true"),
        ({HOLD: ""}, NO_REASON),
        ({HOLD: "  "}, NO_REASON),
        ({HOLD: "false"}, None),
        ({HOLD: " False "}, None),
        ({"other": "x"}, None),
    ],
)
def test_any_value_but_false_holds_and_is_the_reason(annotations: dict[str, str], reason: str | None) -> None:
    assert hold_reason(annotations) == reason
