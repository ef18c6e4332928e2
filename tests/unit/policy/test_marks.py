import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from brupop.models.policy import DuringUpdate, Taint, TaintEffect
from brupop.policy.marks import MarksChange, change, read_record

RECORD = "brupop.bottlerocket.aws/during-update"
KARPENTER = DuringUpdate(
    annotations={"karpenter.sh/do-not-disrupt": "true"},
    labels={"example.com/updating": "true"},
    taints=[Taint(key="example.com/updating", effect=TaintEffect.PREFER_NO_SCHEDULE)],
)


def apply(
    found: MarksChange, labels: dict[str, str], annotations: dict[str, str], taints: list[dict[str, Any]]
) -> tuple[dict[str, str], dict[str, str], list[dict[str, Any]]]:
    def merged(current: dict[str, str], patch: dict[str, str | None]) -> dict[str, str]:
        out = dict(current)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = value
        return out

    new_taints = taints if found.taints is None else found.taints
    return merged(labels, found.labels), merged(annotations, found.annotations), new_taints


def cycle(
    wanted: DuringUpdate | None,
    in_cycle: bool,
    node: tuple[dict[str, str], dict[str, str], list[dict[str, Any]]],
):  # type: ignore[no-untyped-def]
    labels, annotations, taints = node
    return apply(
        change(wanted, in_cycle=in_cycle, labels=labels, annotations=annotations, taints=taints), *node
    )


def test_a_cycle_adds_the_marks_and_its_end_removes_them() -> None:
    bare: tuple[dict[str, str], dict[str, str], list[dict[str, Any]]] = (
        {"kubernetes.io/hostname": "n1"},
        {},
        [],
    )
    during = cycle(KARPENTER, True, bare)
    labels, annotations, taints = during
    assert labels == {"kubernetes.io/hostname": "n1", "example.com/updating": "true"}
    assert annotations["karpenter.sh/do-not-disrupt"] == "true"
    assert taints == [{"key": "example.com/updating", "effect": "PreferNoSchedule"}]
    assert read_record(annotations) == KARPENTER
    assert change(KARPENTER, in_cycle=True, labels=labels, annotations=annotations, taints=taints).empty
    assert cycle(KARPENTER, False, during) == bare


def test_an_administrators_marks_are_never_touched() -> None:
    admin = (
        {"example.com/updating": "admin"},
        {"karpenter.sh/do-not-disrupt": "true"},
        [{"key": "example.com/updating", "effect": "PreferNoSchedule", "value": "admin"}],
    )
    during = cycle(KARPENTER, True, admin)
    assert during[0] == admin[0]
    assert during[2] == admin[2]
    assert {k: v for k, v in during[1].items() if k != RECORD} == admin[1]
    assert read_record(during[1]) == DuringUpdate()
    assert cycle(KARPENTER, False, during) == admin


def test_a_mark_changed_or_removed_by_someone_else_is_theirs_from_then_on() -> None:
    labels, annotations, taints = cycle(KARPENTER, True, ({}, {}, []))
    labels["example.com/updating"] = "mine-now"
    del annotations["karpenter.sh/do-not-disrupt"]
    taints = [{**taints[0], "value": "changed"}]
    after = cycle(KARPENTER, False, (labels, annotations, taints))
    assert after == ({"example.com/updating": "mine-now"}, {}, taints)


def test_a_policy_that_changes_mid_cycle_updates_brupops_marks_and_drops_them_at_the_end() -> None:
    during = cycle(KARPENTER, True, ({}, {}, []))
    narrower = DuringUpdate(
        labels={"example.com/updating": "yes"},
        taints=[Taint(key="example.com/updating", value="v2", effect=TaintEffect.PREFER_NO_SCHEDULE)],
    )
    labels, annotations, taints = cycle(narrower, True, during)
    assert labels == {"example.com/updating": "yes"}
    assert annotations["karpenter.sh/do-not-disrupt"] == "true"  # no longer asked for: kept to the end
    assert taints == [{"key": "example.com/updating", "effect": "PreferNoSchedule", "value": "v2"}]
    assert cycle(narrower, False, (labels, annotations, taints)) == ({}, {}, [])


def test_a_mark_the_policy_stops_asking_for_stays_until_the_cycle_ends() -> None:
    """A node moved mid-cycle to a pool without marks (or whose policy dropped one) keeps the marks brupop
    added until its cycle ends: taking do-not-disrupt off a rebooting node is what the mark is there to
    prevent."""
    during = cycle(KARPENTER, True, ({}, {}, []))
    moved = cycle(None, True, during)
    assert moved == during
    assert cycle(None, False, moved) == ({}, {}, [])


def test_an_unreadable_record_removes_nothing_but_itself() -> None:
    node = (
        {"example.com/updating": "true"},
        {RECORD: "{not json", "karpenter.sh/do-not-disrupt": "true"},
        [],
    )
    assert read_record(node[1]) == DuringUpdate()
    labels, annotations, _ = cycle(KARPENTER, False, node)
    assert labels == node[0]
    assert annotations == {"karpenter.sh/do-not-disrupt": "true"}


def test_the_record_is_compact_json_of_what_was_added() -> None:
    _, annotations, _ = cycle(DuringUpdate(labels={"a": "1"}), True, ({}, {}, []))
    assert json.loads(annotations[RECORD])["labels"] == {"a": "1"}
    assert " " not in annotations[RECORD]


keys = st.sampled_from(["a", "b", "c"])
values = st.sampled_from(["1", "2"])
effects = st.sampled_from(list(TaintEffect))
maps = st.dictionaries(keys, values, max_size=3)
wanted_marks = st.builds(
    DuringUpdate,
    labels=maps,
    annotations=maps,
    taints=st.lists(
        st.builds(Taint, key=keys, value=st.none() | values, effect=effects),
        max_size=3,
        unique_by=lambda t: (t.key, t.effect),
    ),
)
node_taints = st.lists(
    st.fixed_dictionaries({"key": keys, "effect": effects.map(str)}, optional={"value": values}),
    max_size=3,
    unique_by=lambda t: (t["key"], t["effect"]),
)


@given(
    wanted=wanted_marks,
    labels=maps,
    annotations=maps,
    taints=node_taints,
    steps=st.lists(st.booleans(), max_size=5),
)
def test_admin_marks_survive_any_sequence_and_the_end_leaves_only_them(
    wanted: DuringUpdate,
    labels: dict[str, str],
    annotations: dict[str, str],
    taints: list[dict[str, Any]],
    steps: list[bool],
) -> None:
    admin = (dict(labels), dict(annotations), [dict(t) for t in taints])
    node = admin
    for in_cycle in [*steps, True]:
        node = cycle(wanted, in_cycle, node)
        # An administrator's mark is never changed or removed.
        assert node[0].items() >= admin[0].items()
        assert node[1].items() >= admin[1].items()
        assert all(t in node[2] for t in admin[2])
        # Idempotent: applying the same decision again changes nothing.
        assert change(wanted, in_cycle=in_cycle, labels=node[0], annotations=node[1], taints=node[2]).empty
    # In the cycle every wanted mark is there, unless an administrator's mark has that key.
    assert all(node[0].get(k) == v for k, v in wanted.labels.items() if k not in admin[0])
    assert all(node[1].get(k) == v for k, v in wanted.annotations.items() if k not in admin[1])
    admin_taints = {(t["key"], t["effect"]) for t in admin[2]}
    for taint in wanted.taints:
        if (taint.key, taint.effect.value) not in admin_taints:
            assert any(
                t["key"] == taint.key and t["effect"] == taint.effect.value and t.get("value") == taint.value
                for t in node[2]
            )
    assert cycle(wanted, False, node) == admin


@given(
    labels=maps,
    annotations=maps,
    taints=node_taints,
    steps=st.lists(st.tuples(st.none() | wanted_marks, st.booleans()), max_size=6),
    last=st.none() | wanted_marks,
)
def test_whatever_the_policy_asks_mid_cycle_brupops_marks_stay_to_the_end_and_then_go(
    labels: dict[str, str],
    annotations: dict[str, str],
    taints: list[dict[str, Any]],
    steps: list[tuple[DuringUpdate | None, bool]],
    last: DuringUpdate | None,
) -> None:
    admin = (dict(labels), dict(annotations), [dict(t) for t in taints])
    node = admin
    for wanted, in_cycle in steps:
        before = read_record(node[1])
        node = cycle(wanted, in_cycle, node)
        if in_cycle:  # nothing brupop added goes while the node is in its cycle
            after = read_record(node[1])
            assert set(after.labels) >= set(before.labels)
            assert set(after.annotations) >= set(before.annotations)
            assert {(t.key, t.effect) for t in after.taints} >= {(t.key, t.effect) for t in before.taints}
    assert cycle(last, False, node) == admin
