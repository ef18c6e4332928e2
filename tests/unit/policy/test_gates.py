"""Pre-disruption gates: each gate's verdict and its words, what fails open and what never does, how pod
and pool-wide gates combine, since-when tracking, and admission: a blocked node never starts, and
properties over random facts (fail closed blocks on every unavailable answer; the cluster gate blocks
exactly when more nodes are unhealthy than it tolerates)."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brupop.models.health import (
    Answer,
    BadAnswer,
    HttpError,
    Matrix,
    NodeHealth,
    NotSent,
    OwnerRef,
    PodFact,
    QueryError,
    QueryFailure,
    Sample,
    Scalar,
    Series,
    String,
    TimedOut,
    Unreachable,
    Vector,
)
from brupop.models.policy import ClusterGate, GateKind, Gates, PodGate, PrometheusGate
from brupop.policy.admission import Admission, Candidate, GateBlocked, NoFreeSlot, WindowClosed, admit
from brupop.policy.drain import CORDON_ANNOTATION, CORDONED_BY_ADMIN, CORDONED_BY_BRUPOP
from brupop.policy.gates import (
    Block,
    GateFacts,
    cluster_block,
    first_blocks,
    gate_blocks,
    pod_blocks,
    pool_blocks,
    prometheus_block,
    series_text,
    track,
    unavailable,
)
from brupop.policy.pools import Defaults, assign, default_pool
from brupop.policy.schedule import schedule_from_settings

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
URL = "http://prometheus:9090"
QUERY = 'ALERTS{alertstate="firing",severity="critical"}'


def prometheus_gate(**fields: Any) -> PrometheusGate:
    return PrometheusGate.from_wire({"url": URL, "query": QUERY, **fields})


def answer(result: Any) -> Answer:
    return Answer(query=QUERY, at=NOW, result=result)


def alert(name: str, state: str = "firing") -> Sample:
    return Sample(labels={"__name__": "ALERTS", "alertname": name, "alertstate": state}, value=1.0)


def node(name: str, *, ready: bool = True, unschedulable: bool = False, by: str | None = None) -> NodeHealth:
    return NodeHealth(
        name=name,
        ready=ready,
        unschedulable=unschedulable,
        annotations={} if by is None else {CORDON_ANNOTATION: by},
    )


def pod(name: str, *, node: str | None = "n1", phase: str = "Running", **labels: str) -> PodFact:
    namespace, _, short = name.partition("/")
    return PodFact(namespace=namespace, name=short, node=node, labels=labels, phase=phase, owner=None)


# --- prometheus ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        (Vector(()), None),
        (Matrix((Series(labels={"a": "b"}, points=()),)), None),
        (Vector((alert("KubeNodeNotReady"),)), f"alert KubeNodeNotReady firing (query {QUERY})"),
        (
            Vector((alert("B"), alert("A"), alert("A"), alert("C", "pending"))),
            f"alerts A, B firing; alert C pending (query {QUERY})",
        ),
        (
            Vector(tuple(alert(f"A{i}") for i in range(7))),
            f"alerts A0, A1, A2, A3, A4 and 2 more alerts firing (query {QUERY})",
        ),
        (
            Vector((Sample(labels={"__name__": "up", "job": "api"}, value=0.0),)),
            f'1 series up{{job="api"}} = 0 (query {QUERY})',
        ),
        (
            Vector((Sample(labels={"job": "a"}, value=None), Sample(labels={}, value=2.0))),
            f'2 series, e.g. {{job="a"}} = a native histogram (query {QUERY})',
        ),
        (Matrix((Series(labels={}, points=((1.0, 1.0),)),)), f"1 series returned (query {QUERY})"),
    ],
)
def test_the_prometheus_gate_blocks_while_the_query_returns_series(result: Any, reason: str | None) -> None:
    block = prometheus_block(prometheus_gate(), QUERY, answer(result))
    assert (None if block is None else block.reason) == reason
    assert block is None or not block.unknown


@pytest.mark.parametrize("result", [Scalar(0.0), String("ok")])
def test_a_gate_query_that_is_never_empty_blocks_and_says_how_to_fix_it(result: Any) -> None:
    block = prometheus_block(prometheus_gate(failOpen=True), QUERY, answer(result))
    assert block is not None
    assert block.unknown
    assert "which is never empty: write one that returns series only while something is wrong" in block.reason


UNAVAILABLE: list[QueryFailure] = [
    Unreachable(url=URL, reason="connection refused"),
    TimedOut(url=URL, after=timedelta(seconds=10)),
    HttpError(url=URL, status=503, body="upstream down"),
    HttpError(url=URL, status=429),
    QueryError(url=URL, error_type="timeout", message="query timed out"),
    QueryError(url=URL, error_type="unavailable", message="shutting down"),
]
WRONG: list[QueryFailure] = [
    QueryError(url=URL, error_type="bad_data", message="1:5: parse error"),
    QueryError(url=URL, error_type="execution", message="too many samples"),
    HttpError(url=URL, status=401, body="Unauthorized"),
    HttpError(url=URL, status=404),
    BadAnswer(url=URL, reason="not JSON: '<html>'"),
    NotSent(url=URL, reason="cannot read /t: no such file or directory"),
]


@pytest.mark.parametrize("failure", UNAVAILABLE)
def test_an_unavailable_prometheus_blocks_unless_the_gate_fails_open(failure: QueryFailure) -> None:
    assert unavailable(failure)
    closed = prometheus_block(prometheus_gate(), QUERY, failure)
    assert closed == Block(GateKind.PROMETHEUS, f"{failure.describe()} (fail closed)", unknown=True)
    assert prometheus_block(prometheus_gate(failOpen=True), QUERY, failure) is None


@pytest.mark.parametrize("failure", WRONG)
def test_a_gate_that_cannot_work_blocks_even_failing_open(failure: QueryFailure) -> None:
    assert not unavailable(failure)
    block = prometheus_block(prometheus_gate(failOpen=True), QUERY, failure)
    assert block == Block(
        GateKind.PROMETHEUS, f"{failure.describe()} (blocks until the query can be answered)", unknown=True
    )


def test_failures_describe_themselves() -> None:
    assert [f.describe() for f in UNAVAILABLE[:3] + WRONG[:1] + WRONG[4:]] == [
        "Prometheus unreachable: connection refused",
        "Prometheus did not answer within 10s",
        "Prometheus answered HTTP 503: upstream down",
        "Prometheus query error (bad_data): 1:5: parse error",
        "Prometheus gave an answer brupop cannot read: not JSON: '<html>'",
        "Prometheus not queried: cannot read /t: no such file or directory",
    ]
    assert HttpError(url=URL, status=404).describe() == "Prometheus answered HTTP 404"


FAILURES = st.one_of(
    st.builds(Unreachable, url=st.just(URL), reason=st.text(max_size=5)),
    st.builds(TimedOut, url=st.just(URL), after=st.timedeltas(timedelta(0), timedelta(minutes=5))),
    st.builds(HttpError, url=st.just(URL), status=st.integers(100, 599), body=st.text(max_size=5)),
    st.builds(
        QueryError,
        url=st.just(URL),
        error_type=st.sampled_from(
            ["bad_data", "execution", "timeout", "canceled", "internal", "unavailable", "x"]
        ),
        message=st.text(max_size=5),
    ),
    st.builds(BadAnswer, url=st.just(URL), reason=st.text(max_size=5)),
    st.builds(NotSent, url=st.just(URL), reason=st.text(max_size=5)),
)


@given(failure=FAILURES, fail_open=st.booleans())
def test_fail_closed_blocks_on_every_failed_query_and_fail_open_only_on_a_wrong_gate(
    failure: QueryFailure, fail_open: bool
) -> None:
    block = prometheus_block(prometheus_gate(failOpen=fail_open), QUERY, failure)
    if fail_open and unavailable(failure):
        assert block is None
    else:
        assert block is not None
        assert (block.unknown, block.gate) == (True, GateKind.PROMETHEUS)


# --- cluster ------------------------------------------------------------------------------------------


def test_the_cluster_gate_counts_nodes_unhealthy_for_reasons_not_brupops() -> None:
    nodes = [
        node("a", ready=False),
        node("b", unschedulable=True, by=CORDONED_BY_ADMIN),
        node("c", unschedulable=True),
        node("d", unschedulable=True, by=CORDONED_BY_BRUPOP),
        node("e", ready=False),
        *(node(f"ok{i}") for i in range(5)),
    ]
    block = cluster_block(ClusterGate(max_unhealthy_nodes=1), nodes, frozenset({"e"}))
    assert block == Block(
        GateKind.CLUSTER,
        "3 of 10 nodes unhealthy, at most 1 allowed (maxUnhealthyNodes 1): a (NotReady), b (unschedulable), "
        "c (unschedulable)",
    )
    assert cluster_block(ClusterGate(max_unhealthy_nodes=3), nodes, frozenset({"e"})) is None
    assert cluster_block(ClusterGate(max_unhealthy_nodes="30%"), nodes, frozenset({"e"})) is None
    assert cluster_block(ClusterGate(max_unhealthy_nodes="29%"), nodes, frozenset({"e"})) is not None


def test_a_percentage_of_unhealthy_nodes_is_rounded_down() -> None:
    five = [node("bad", ready=False), *(node(f"n{i}") for i in range(4))]
    assert cluster_block(ClusterGate(max_unhealthy_nodes="10%"), five, frozenset()) is not None
    assert cluster_block(ClusterGate(max_unhealthy_nodes="20%"), five, frozenset()) is None


def test_many_unhealthy_nodes_are_shortened() -> None:
    nodes = [node(f"n{i}", ready=False) for i in range(8)]
    block = cluster_block(ClusterGate(max_unhealthy_nodes=0), nodes, frozenset())
    assert block is not None
    assert block.reason.endswith("n4 (NotReady) and 3 more nodes")


NODES = st.lists(
    st.builds(
        NodeHealth,
        name=st.sampled_from([f"n{i}" for i in range(12)]),
        ready=st.booleans(),
        unschedulable=st.booleans(),
        annotations=st.sampled_from(
            [{}, {CORDON_ANNOTATION: CORDONED_BY_BRUPOP}, {CORDON_ANNOTATION: CORDONED_BY_ADMIN}]
        ),
    ),
    max_size=12,
    unique_by=lambda n: n.name,
)


@given(
    nodes=NODES,
    in_cycle=st.frozensets(st.sampled_from([f"n{i}" for i in range(12)])),
    limit=st.integers(0, 12) | st.integers(0, 100).map(lambda p: f"{p}%"),
)
def test_the_cluster_gate_blocks_exactly_when_more_are_unhealthy_than_tolerated(
    nodes: list[NodeHealth], in_cycle: frozenset[str], limit: int | str
) -> None:
    unhealthy = [
        n
        for n in nodes
        if n.name not in in_cycle
        and (not n.ready or (n.unschedulable and n.annotations.get(CORDON_ANNOTATION) != CORDONED_BY_BRUPOP))
    ]
    allowed = limit if isinstance(limit, int) else int(limit[:-1]) * len(nodes) // 100
    block = cluster_block(ClusterGate(max_unhealthy_nodes=limit), nodes, in_cycle)
    assert (block is not None) == (len(unhealthy) > allowed)
    if isinstance(limit, str) and block is not None:
        assert len(unhealthy) * 100 > int(limit[:-1]) * len(nodes), "more than the percentage"


# --- pods ---------------------------------------------------------------------------------------------


def test_a_cluster_scoped_pod_gate_blocks_every_candidate() -> None:
    gate = PodGate.from_wire({"selector": {"matchLabels": {"app": "backup"}}})
    pods = [
        pod("kube-system/backup-0", node="n9", app="backup"),
        pod("kube-system/backup-old", app="backup", phase="Succeeded"),
        pod("default/web", app="web"),
    ]
    blocks = pod_blocks(gate, pods, ["n1", "n2"])
    expected = Block(GateKind.PODS, "pod kube-system/backup-0 matches the blocking selector app=backup")
    assert blocks == {"n1": expected, "n2": expected}
    assert pod_blocks(gate, pods[1:], ["n1"]) == {}, "finished pods do not block"


def test_an_unscheduled_pod_counts_for_the_cluster_but_no_node() -> None:
    pods = [pod("ns/pending", node=None, phase="Pending", app="x")]
    cluster = PodGate.from_wire({"selector": {"matchLabels": {"app": "x"}}})
    on_node = PodGate.from_wire({"selector": {"matchLabels": {"app": "x"}}, "scope": "Node"})
    assert set(pod_blocks(cluster, pods, ["n1"])) == {"n1"}
    assert pod_blocks(on_node, pods, ["n1"]) == {}


def test_a_node_scoped_pod_gate_blocks_only_the_node_the_pods_run_on() -> None:
    gate = PodGate.from_wire(
        {
            "selector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["db", "cache"]}]},
            "scope": "Node",
        }
    )
    pods = [
        pod("a/db-1", node="n1", tier="db"),
        pod("a/db-0", node="n1", tier="cache"),
        pod("b/x", node="n2"),
    ]
    assert pod_blocks(gate, pods, ["n1", "n2", "n3"]) == {
        "n1": Block(
            GateKind.PODS, "pods a/db-0, a/db-1 on this node match the blocking selector tier in (db,cache)"
        )
    }


# --- all gates of a pool ------------------------------------------------------------------------------


def test_no_gates_block_nothing() -> None:
    assert gate_blocks(None, GateFacts(), ["n1"]) == {}
    assert gate_blocks(Gates(), GateFacts(nodes=[node("n1", ready=False)]), ["n1"]) == {}


def test_a_prometheus_gate_not_asked_yet_blocks() -> None:
    blocks = gate_blocks(Gates(prometheus=prometheus_gate(failOpen=True)), GateFacts(), ["n1"])
    assert blocks == {"n1": (Block(GateKind.PROMETHEUS, "Prometheus has not been asked yet", unknown=True),)}


def test_pod_gates_block_every_candidate_while_the_pods_are_not_known() -> None:
    gates = Gates.from_wire({"pods": [{"selector": {"matchLabels": {"app": "backup"}}, "scope": "Node"}]})
    unknown = Block(GateKind.PODS, "the controller has not listed the cluster's pods yet", unknown=True)
    assert gate_blocks(gates, GateFacts(pods=None), ["n1", "n2"]) == {"n1": (unknown,), "n2": (unknown,)}
    assert gate_blocks(Gates(), GateFacts(pods=None), ["n1"]) == {}


def test_the_gates_of_a_pool_combine_pool_wide_first_and_pod_gates_joined() -> None:
    gates = Gates.from_wire(
        {
            "prometheus": {"url": URL, "query": QUERY},
            "cluster": {"maxUnhealthyNodes": 0},
            "pods": [
                {"selector": {"matchLabels": {"app": "backup"}}, "scope": "Node"},
                {"selector": {"matchLabels": {"app": "batch"}}, "scope": "Node"},
            ],
        }
    )
    facts = GateFacts(
        prometheus=answer(Vector((alert("Boom"),))),
        nodes=[node("n1"), node("n2"), node("n3", ready=False)],
        pods=[pod("a/b", node="n1", app="backup"), pod("a/c", node="n1", app="batch")],
    )
    blocks = gate_blocks(gates, facts, ["n1", "n2"])
    assert [b.gate for b in blocks["n1"]] == [GateKind.PROMETHEUS, GateKind.CLUSTER, GateKind.PODS]
    assert blocks["n1"][2].reason == (
        "pod a/b on this node matches the blocking selector app=backup; "
        "pod a/c on this node matches the blocking selector app=batch"
    )
    assert [b.gate for b in blocks["n2"]] == [GateKind.PROMETHEUS, GateKind.CLUSTER]
    calm = GateFacts(prometheus=answer(Vector(())), nodes=[node("n1"), node("n2")], pods=facts.pods)
    assert gate_blocks(gates, calm, ["n1", "n2"]) == {"n1": (blocks["n1"][2],)}


def test_the_pool_wide_blocks_are_the_prometheus_and_cluster_gates() -> None:
    gates = Gates.from_wire(
        {
            "prometheus": {"url": URL, "query": QUERY},
            "cluster": {"maxUnhealthyNodes": 0},
            "pods": [{"selector": {"matchLabels": {"app": "backup"}}}],
        }
    )
    facts = GateFacts(
        prometheus=answer(Vector((alert("Boom"),))),
        nodes=[node("n1", ready=False)],
        pods=[pod("a/b", node="n1", app="backup")],
    )
    assert [b.gate for b in pool_blocks(gates, facts)] == [GateKind.PROMETHEUS, GateKind.CLUSTER]
    assert pool_blocks(None, facts) == ()
    assert pool_blocks(gates, GateFacts(prometheus=answer(Vector(())))) == ()


def test_a_gate_keeps_its_since_while_it_blocks_and_starts_afresh_after_letting_go() -> None:
    later = NOW + timedelta(minutes=1)
    first = track({}, {"n1": [Block(GateKind.PROMETHEUS, "alert A firing")]}, now=NOW)
    assert first == {"n1": (GateBlocked(gate=GateKind.PROMETHEUS, reason="alert A firing", since=NOW),)}
    again = track(
        first,
        {"n1": [Block(GateKind.PROMETHEUS, "alert B firing"), Block(GateKind.PODS, "pod x")]},
        now=later,
    )
    assert again["n1"] == (
        GateBlocked(gate=GateKind.PROMETHEUS, reason="alert B firing", since=NOW),
        GateBlocked(gate=GateKind.PODS, reason="pod x", since=later),
    )
    assert track(again, {}, now=later) == {}
    assert track({}, {"n1": [Block(GateKind.PODS, "pod x")]}, now=later)["n1"][0].since == later
    assert first_blocks(again) == {"n1": again["n1"][0]}
    assert first_blocks({"n1": ()}) == {}


def test_the_admission_reason_says_which_gate_blocks_and_since_when() -> None:
    reason = GateBlocked(gate=GateKind.PROMETHEUS, reason="alert KubeNodeNotReady firing", since=NOW)
    assert reason.code == "GateBlocked"
    assert reason.message() == (
        "blocked by the prometheus gate since 2025-06-01T12:00:00+00:00: alert KubeNodeNotReady firing"
    )


# --- admission ----------------------------------------------------------------------------------------


def admitted(
    nodes: list[str],
    candidates: list[str],
    *,
    gated: dict[str, GateBlocked] | None = None,
    limit: int | None = None,
    cron: str = "* * * * * * *",
    in_cycle: tuple[str, ...] = (),
) -> Admission:
    """One admission pass over the default pool made of `nodes`."""
    schedule = schedule_from_settings(
        cron_expression=cron, window_start=None, window_stop=None, timezone=None, now=NOW
    )[0]
    default = default_pool(Defaults(max_concurrent=limit, schedule=schedule))
    return admit(
        assign([], default, [_Labelled(n) for n in nodes]),
        candidates=[Candidate(n) for n in candidates],
        in_cycle=in_cycle,
        halts={},
        drained_at={},
        now=NOW,
        gated=gated,
    )


class _Labelled:
    def __init__(self, name: str) -> None:
        self.name = name
        self.labels: dict[str, str] = {}


def test_a_blocked_node_waits_with_the_gate_and_the_others_start() -> None:
    blocked = GateBlocked(gate=GateKind.PODS, reason="pod a/b on this node matches", since=NOW)
    admission = admitted(["n1", "n2"], ["n1", "n2"], gated={"n1": blocked})
    assert admission.started == ("n2",)
    assert admission.waiting == {"n1": blocked}


def test_a_closed_window_is_reported_before_a_gate_and_a_gate_before_a_full_pool() -> None:
    blocked = GateBlocked(gate=GateKind.CLUSTER, reason="3 of 10 nodes unhealthy", since=NOW)
    closed = admitted(["n1"], ["n1"], gated={"n1": blocked}, cron="0 0 3 * * * *")
    assert isinstance(closed.waiting["n1"], WindowClosed)
    full = admitted(["n1", "n2"], ["n1"], gated={"n1": blocked}, limit=1, in_cycle=("n2",))
    assert full.waiting == {"n1": blocked}
    ungated = admitted(["n1", "n2"], ["n1"], limit=1, in_cycle=("n2",))
    assert isinstance(ungated.waiting["n1"], NoFreeSlot)


@given(
    names=st.lists(st.sampled_from([f"n{i}" for i in range(8)]), unique=True, max_size=8),
    gated=st.sets(st.sampled_from([f"n{i}" for i in range(8)])),
    limit=st.none() | st.integers(0, 8),
)
def test_a_node_a_gate_blocks_never_starts(names: list[str], gated: set[str], limit: int | None) -> None:
    blocks = {n: GateBlocked(gate=GateKind.PROMETHEUS, reason="alert", since=NOW) for n in gated}
    admission = admitted(names, names, gated=blocks, limit=limit)
    assert not set(admission.started) & gated
    assert all(isinstance(admission.waiting[n], GateBlocked) for n in gated & set(names))
    assert set(admission.started) | set(admission.waiting) == set(names)


def test_series_are_written_as_promql_writes_them() -> None:
    assert series_text({"__name__": "up", "job": "a", "instance": "x"}) == 'up{instance="x",job="a"}'
    assert series_text({"__name__": "up"}) == "up"
    assert series_text({}) == "{}"


def test_pods_with_owners_are_pods_too() -> None:
    owned = PodFact(
        namespace="a", name="b", node="n1", labels={"app": "x"}, phase="Running", owner=OwnerRef("Job", "j")
    )
    gate = PodGate.from_wire({"selector": {"matchLabels": {"app": "x"}}, "scope": "Node"})
    assert set(pod_blocks(gate, [owned], ["n1"])) == {"n1"}
