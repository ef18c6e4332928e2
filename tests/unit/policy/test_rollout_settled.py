"""A fleet at rest (issue 20: 15,000 nodes on one controller): the pass goes past settled nodes after one
check (`brupop.policy.rollout._settled`). Each node that only looks settled (one respect apart from a
settled node, and that respect calls for a decision) still gets its decision; and for random fleets in
random pools the quick way gives the very Plan that looking at every node gives, also when the pass is
given the last pass's settled shadows and some shadows and Nodes changed since."""

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brupop.models import constants as c
from brupop.models.policy import GateKind
from brupop.models.progress import Waiting
from brupop.models.shadow import BottlerocketShadow, ShadowState
from brupop.models.timestamp import Timestamp
from brupop.policy import rollout
from brupop.policy.admission import GateBlocked
from brupop.policy.budget import BudgetState
from brupop.policy.pools import Defaults, pools_for
from brupop.policy.rollout import (
    NodeInfo,
    Plan,
    Pools,
    RolloutConfig,
    Settled,
    node_name_of,
    plan,
    tracked,
)
from tests.factories import shadow
from tests.pools import window

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
S = ShadowState
OPT_IN = {c.UPDATER_INTERFACE_LABEL: c.UPDATER_INTERFACE_VERSION}
POOL = "example.com/pool"
DEFAULTS = Defaults(max_concurrent=2, schedule=window("* * * * * * *", now=NOW))
BUDGET = {"maxFailures": 1, "window": "1h"}
MARKS = {"labels": {"example.com/updating": "true"}}
CYCLE = json.dumps(
    {"from": "1.0.0", "to": "1.1.0", "start": Timestamp.from_datetime(NOW - timedelta(hours=1)).text}
)
WAITING = json.dumps(
    Waiting(
        reason="GateBlocked", message="blocked", since=Timestamp.from_datetime(NOW - timedelta(minutes=5))
    ).to_wire()
)


def policy(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "generation": 1},
        "spec": {"nodeSelector": {"matchLabels": {POOL: name}}, **spec},
    }


def node(name: str, *, labels: dict[str, str] | None = None, **fields: Any) -> NodeInfo:
    """A Node opted in, in pool `p` (unless `labels` says otherwise)."""
    wearing = {**OPT_IN, POOL: "p"} if labels is None else labels
    return NodeInfo(name=name, uid=f"uid-{name}", labels=wearing, **fields)


def annotated(s: BottlerocketShadow, **annotations: str) -> BottlerocketShadow:
    return replace(s, metadata={**s.metadata, "annotations": annotations})


def run(
    shadows: list[BottlerocketShadow],
    nodes: list[NodeInfo],
    policies: list[dict[str, Any]],
    *,
    budgets: dict[str, BudgetState] | None = None,
    gated: dict[str, GateBlocked] | None = None,
    settled: Settled | None = None,
) -> Plan:
    by_name = {n.name: n for n in nodes}
    assignment = pools_for(policies, tracked(shadows, by_name), DEFAULTS, now=NOW)
    pools = Pools(assignment=assignment, budgets=budgets or {}, gated=gated or {})
    return plan(shadows, by_name, now=NOW, config=RolloutConfig(), pools=pools, settled=settled)


def slow(*args: Any, **kwargs: Any) -> Plan:
    """The same pass looking at every shadow in full, as before the quick way."""
    with mock.patch.object(rollout, "_settled", return_value=False):
        return run(*args, **kwargs)


def settled_fleet(count: int) -> tuple[list[BottlerocketShadow], list[NodeInfo]]:
    return [shadow(f"n{i}") for i in range(count)], [node(f"n{i}") for i in range(count)]


def test_a_fleet_at_rest_needs_no_decision() -> None:
    shadows, nodes = settled_fleet(500)
    result = run(shadows, nodes, [policy("p", failureBudget=BUDGET, duringUpdate=MARKS)])
    assert (result.spec_changes, result.annotations, result.started, result.waiting) == ({}, {}, (), {})
    assert (result.deletions, result.in_cycle, result.marks, result.stuck) == ((), {}, {}, {})
    assert (result.active, result.wake_at, result.budgets["p"].failures) == (0, None, ())
    assert result == slow(shadows, nodes, [policy("p", failureBudget=BUDGET, duringUpdate=MARKS)])


CYCLE_LABEL = {**OPT_IN, POOL: "p", c.IN_CYCLE_LABEL: "true"}
MARKED = {c.DURING_UPDATE_ANNOTATION: '{"labels":["example.com/updating"]}'}


@pytest.mark.parametrize(
    ("odd", "node_", "found"),
    [
        # An update on offer: it starts.
        (shadow("odd", target="1.1.0"), node("odd"), lambda p: p.started == ("brs-odd",)),
        # A leftover spec: it is reset.
        (shadow("odd", spec_version="1.1.0"), node("odd"), lambda p: "brs-odd" in p.spec_changes),
        # The in-cycle label still on its Node: it goes (the marks it records with it).
        (shadow("odd"), node("odd", labels=CYCLE_LABEL), lambda p: p.in_cycle == {"odd": False}),
        # Its Node left brupop: its shadow goes.
        (shadow("odd"), node("odd", labels={}), lambda p: p.deletions == ("brs-odd",)),
        # A failure reported and not yet undone: in a cycle, so labelled.
        (shadow("odd", state=S.ERROR_RESET), node("odd"), lambda p: p.in_cycle == {"odd": True}),
        # A failure recorded on a node back at Idle: its pool's budget counts it (and halts).
        (
            shadow("odd", crashes=1, failed_at=NOW - timedelta(minutes=5)),
            node("odd"),
            lambda p: [f.node for f in p.budgets["p"].failures] == ["odd"] and p.budgets["p"].halt,
        ),
        # A cycle record left after the cycle: its end goes into the history.
        (
            annotated(shadow("odd"), **{c.CYCLE_ANNOTATION: CYCLE}),
            node("odd"),
            lambda p: p.annotations["brs-odd"][c.CYCLE_ANNOTATION] is None,
        ),
        # A cycle record that does not read: it goes.
        (
            annotated(shadow("odd"), **{c.CYCLE_ANNOTATION: "{"}),
            node("odd"),
            lambda p: p.annotations["brs-odd"] == {c.CYCLE_ANNOTATION: None},
        ),
        # A gate's waiting note on a node that no longer waits: it goes.
        (
            annotated(shadow("odd"), **{c.WAITING_ANNOTATION: WAITING}),
            node("odd"),
            lambda p: p.annotations["brs-odd"] == {c.WAITING_ANNOTATION: None},
        ),
        # brupop's marks recorded on a Node out of its cycle: they go, shadow settled or not.
        (shadow("odd"), node("odd", annotations=MARKED), lambda p: "odd" in p.marks),
    ],
)
def test_a_node_that_only_looks_settled_still_gets_its_decision(
    odd: BottlerocketShadow, node_: NodeInfo, found: Any
) -> None:
    shadows, nodes = settled_fleet(10)
    policies = [policy("p", maxConcurrent="unlimited", failureBudget=BUDGET, duringUpdate=MARKS)]
    result = run([*shadows, odd], [*nodes, node_], policies)
    assert found(result), result
    assert result == slow([*shadows, odd], [*nodes, node_], policies)


# Property: the quick way and the full look give the same Plan -------------------------------------------

versions = st.sampled_from(["1.0.0", "1.1.0"])
notes = st.sampled_from(
    [{}, {}, {c.CYCLE_ANNOTATION: CYCLE}, {c.CYCLE_ANNOTATION: "x"}, {c.WAITING_ANNOTATION: WAITING}]
)


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[BottlerocketShadow], list[NodeInfo]]:
    shadows, nodes = [], []
    for i in range(draw(st.integers(0, 10))):
        name = f"n{i}"
        settled = draw(st.booleans())  # half of them settled, so the quick way is taken
        made = shadow(
            name,
            spec=S.IDLE if settled else draw(st.sampled_from(list(S))),
            state=S.IDLE if settled else draw(st.none() | st.sampled_from(list(S))),
            current=draw(versions),
            target="1.0.0" if settled else draw(versions),
            crashes=draw(st.integers(0, 3)),
            failed_at=draw(st.none() | st.integers(0, 120).map(lambda m: NOW - timedelta(minutes=m))),
            spec_version=None if settled else draw(st.none() | versions),
        )
        if settled:
            made = replace(made, status=replace(made.status, current_version="1.0.0"))  # type: ignore[type-var]
        shadows.append(annotated(made, **draw(notes)))
        kind = draw(st.sampled_from(["in", "in", "in", "cycle", "cordoned", "left", "unseen"]))
        pool = draw(st.sampled_from([None, "p", "q"]))
        labels = {**OPT_IN, **({POOL: pool} if pool else {})}
        if kind in ("cycle", "cordoned"):
            labels[c.IN_CYCLE_LABEL] = "true"
        elif kind == "left":
            labels = {}
        annotations = {**(MARKED if draw(st.booleans()) else {})}
        if draw(st.booleans()):
            annotations[c.HOLD_ANNOTATION] = "hold"
        if kind != "unseen":
            nodes.append(
                NodeInfo(
                    name=name,
                    uid=f"uid-{name}",
                    labels=labels,
                    annotations=annotations,
                    brupop_cordon=kind == "cordoned",
                )
            )
    return shadows, nodes


pools_ = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "maxConcurrent": st.sampled_from([0, 1, "50%", "unlimited"]),
            "failureBudget": st.just(BUDGET),
            "duringUpdate": st.just(MARKS),
            "paused": st.booleans(),
            "stuckAfter": st.just("30m"),
        },
    ),
    min_size=2,
    max_size=2,
)


@settings(max_examples=300, deadline=None)
@given(fleets(), pools_, st.booleans())
def test_the_quick_way_past_settled_nodes_gives_the_same_plan(
    fleet: tuple[list[BottlerocketShadow], list[NodeInfo]], specs: list[dict[str, Any]], gate: bool
) -> None:
    shadows, nodes = fleet
    policies = [policy(name, **spec) for name, spec in zip(("p", "q"), specs, strict=True)]
    blocked = GateBlocked(gate=GateKind.PODS, reason="busy", since=NOW - timedelta(minutes=1))
    gated = {node_name_of(s): blocked for s in shadows[:2]} if gate else {}
    assert run(shadows, nodes, policies, gated=gated) == slow(shadows, nodes, policies, gated=gated)


def mixed(
    first: tuple[list[BottlerocketShadow], list[NodeInfo]],
    second: tuple[list[BottlerocketShadow], list[NodeInfo]],
    kept: list[bool],
) -> tuple[list[BottlerocketShadow], list[NodeInfo]]:
    """The fleet a later pass sees: per node, its shadow and its Node each still the first pass's object
    (kept) or the second fleet's (changed, gone or new)."""
    shadows = [{node_name_of(s): s for s in fleet[0]} for fleet in (first, second)]
    nodes = [{n.name: n for n in fleet[1]} for fleet in (first, second)]
    names = sorted({*shadows[0], *shadows[1], *nodes[0], *nodes[1]})
    now_shadows, now_nodes = [], []
    for i, name in enumerate(names):
        source = 0 if kept[2 * i] else 1
        if name in shadows[source]:
            now_shadows.append(shadows[source][name])
        source = 0 if kept[2 * i + 1] else 1
        if name in nodes[source]:
            now_nodes.append(nodes[source][name])
    return now_shadows, now_nodes


@settings(max_examples=300, deadline=None)
@given(fleets(), fleets(), st.lists(st.booleans(), min_size=22, max_size=22), pools_)
def test_a_pass_given_the_last_passs_settled_shadows_gives_the_same_plan(
    first: tuple[list[BottlerocketShadow], list[NodeInfo]],
    second: tuple[list[BottlerocketShadow], list[NodeInfo]],
    kept: list[bool],
    specs: list[dict[str, Any]],
) -> None:
    policies = [policy(name, **spec) for name, spec in zip(("p", "q"), specs, strict=True)]
    earlier = run(*first, policies)
    shadows, nodes = mixed(first, second, kept)
    later = run(shadows, nodes, policies, settled=earlier.settled)
    assert later == run(shadows, nodes, policies) == slow(shadows, nodes, policies)
    assert later.settled == run(shadows, nodes, policies).settled


def test_a_settled_shadow_is_passed_by_while_it_and_its_node_are_the_same_objects() -> None:
    shadows, nodes = settled_fleet(3)
    earlier = run(shadows, nodes, [])
    assert sorted(entry[2] for entry in earlier.settled.values()) == ["n0", "n1", "n2"]
    offered = shadow("n1", target="1.1.0")  # an agent reported: a new object
    left = node("n2", labels={})  # its Node left brupop: a new object too
    later = run([shadows[0], offered, shadows[2]], [nodes[0], nodes[1], left], [], settled=earlier.settled)
    assert (later.started, later.deletions) == (("brs-n1",), ("brs-n2",))
    assert [entry[2] for entry in later.settled.values()] == ["n0"]
