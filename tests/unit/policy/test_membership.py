import pytest

from brupop.policy.membership import in_cycle, managed, opted_in

OPT_IN = {"bottlerocket.aws/updater-interface-version": "2.0.0"}
IN_CYCLE = {"brupop.bottlerocket.aws/in-update-cycle": "true"}


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (OPT_IN, True),
        (IN_CYCLE, True),  # left brupop mid-cycle: still managed until the cycle is over
        ({**OPT_IN, **IN_CYCLE}, True),
        ({"bottlerocket.aws/updater-interface-version": "1.0.0"}, False),
        ({}, False),
    ],
)
def test_a_node_is_managed_while_opted_in_or_in_a_cycle(labels: dict[str, str], expected: bool) -> None:
    assert managed({"metadata": {"labels": labels}}) is expected
    assert (opted_in(labels) or in_cycle(labels)) is expected


@pytest.mark.parametrize("node", [{}, {"metadata": None}, {"metadata": {"labels": ["x"]}}])
def test_a_node_without_readable_labels_is_not_managed(node: dict[str, object]) -> None:
    assert not managed(node)
