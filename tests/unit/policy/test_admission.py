"""Who may start: each reason on its own, their order, the per-pool limits, and properties over random
fleets: never more than a pool's limit in a cycle, nothing starts while paused, halted, held, backing off,
in a blackout, outside the window or with an unusable policy, and every candidate gets exactly one answer."""

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from brupop.models.policy import Halt, LabelSelector
from brupop.models.shadow import BottlerocketShadow, ShadowState
from brupop.models.timestamp import Timestamp
from brupop.policy.admission import (
    Admission,
    BackingOff,
    BlackedOut,
    Candidate,
    Code,
    Halted,
    Held,
    InvalidPolicy,
    NodeNotSeen,
    NoFreeSlot,
    Paused,
    WindowClosed,
    admit,
)
from brupop.policy.backoff import retry_at
from brupop.policy.blackout import Period, covering
from brupop.policy.cron import CronExpression
from brupop.policy.limits import Count, Limit, Percent, Unlimited
from brupop.policy.pools import ENV_POOL, Assignment, Defaults, Pool, assign, default_pool, pools_for
from brupop.policy.rollout import NodeInfo, node_name_of, start_order
from brupop.policy.schedule import Schedule
from brupop.policy.statemachine import is_active
from tests.factories import shadow
from tests.pools import before_policies

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
LABELS = {"bottlerocket.aws/updater-interface-version": "2.0.0"}
UTC_ZONE = ZoneInfo("UTC")


def schedule(text: str) -> Schedule:
    return Schedule.create(CronExpression.parse(text), UTC_ZONE, now=NOW - timedelta(days=1))


ALWAYS = schedule("* * * * * * *")
NIGHT = schedule("* * 2-4 * * * *")  # closed at NOW (12:00)
ELEVEN = schedule("0 0 11 * * * *")  # a trigger, fired at 11:00
HALT = Halt(
    since=Timestamp.from_datetime(NOW - timedelta(minutes=5)), failed_nodes=["x", "y"], message="spent"
)


def one_pool(**fields: object) -> Assignment:
    """Nodes n0..n9 in one pool named web."""
    settings = {"limit": Count(2), "schedule": ALWAYS, **fields}
    pool = Pool(name="web", selector=LabelSelector(), **settings)  # type: ignore[arg-type]
    return assign(
        [pool], default_pool(Defaults(max_concurrent=1, schedule=ALWAYS)), [_Node(f"n{i}") for i in range(10)]
    )


class _Node:
    def __init__(self, name: str, **labels: str) -> None:
        self.name = name
        self.labels = labels


def run(
    assignment: Assignment, *candidates: Candidate, in_cycle: tuple[str, ...] = (), halts=None, drained=None
) -> Admission:  # type: ignore[no-untyped-def]
    return admit(
        assignment,
        candidates=candidates,
        in_cycle=in_cycle,
        halts=halts or {},
        drained_at=drained or {},
        now=NOW,
    )


def reason_of(assignment: Assignment, candidate: Candidate, **kwargs: object) -> object:
    found = run(assignment, candidate, **kwargs)  # type: ignore[arg-type]
    return found.waiting.get(candidate.name)


def test_free_slots_start_in_order_and_the_rest_wait_for_a_slot() -> None:
    found = run(one_pool(), *(Candidate(f"n{i}") for i in range(1, 5)), in_cycle=("n0",))
    assert found.started == ("n1",)
    assert found.waiting == {name: NoFreeSlot(in_cycle=2, limit=2) for name in ("n2", "n3", "n4")}
    passed = found.pools["web"]
    assert (passed.size, passed.limit, passed.in_cycle, passed.started, passed.window_open) == (
        10,
        2,
        1,
        ("n1",),
        True,
    )
    assert passed.next_opening == NOW
    assert passed.blackout is None
    assert found.wake_at is None


def test_percentages_of_the_pool_and_unlimited() -> None:
    tenth = run(one_pool(limit=Percent(25)), *(Candidate(f"n{i}") for i in range(10)))
    assert tenth.started == ("n0", "n1", "n2")  # 25% of 10, rounded up
    everyone = run(one_pool(limit=Unlimited()), *(Candidate(f"n{i}") for i in range(10)))
    assert len(everyone.started) == 10
    assert everyone.pools["web"].limit is None
    nobody = run(one_pool(limit=Count(0)), Candidate("n0"))
    assert nobody.waiting == {"n0": NoFreeSlot(in_cycle=0, limit=0)}


def test_a_node_in_a_cycle_whose_node_is_unknown_counts_against_every_pool() -> None:
    found = run(one_pool(), Candidate("n1"), Candidate("n2"), in_cycle=("gone",))
    assert found.started == ("n1",)
    assert found.pools["web"].in_cycle == 1
    assert found.pools[ENV_POOL].in_cycle == 1
    assert run(one_pool(), Candidate("stranger")).waiting == {"stranger": NodeNotSeen()}


def test_each_pool_gate() -> None:
    assert reason_of(one_pool(problems=("bad zone",), schedule=None), Candidate("n1")) == InvalidPolicy(
        pool="web", problems=("bad zone",)
    )
    assert reason_of(one_pool(paused=True), Candidate("n1")) == Paused(pool="web")
    assert reason_of(one_pool(), Candidate("n1"), halts={"web": HALT}) == Halted(
        pool="web", since=NOW - timedelta(minutes=5), failed_nodes=("x", "y")
    )
    freeze = (
        Period(start=NOW - timedelta(hours=1), end=NOW + timedelta(hours=1), reason="freeze"),
        Period(start=NOW + timedelta(hours=1), end=NOW + timedelta(hours=3)),
    )
    assert reason_of(one_pool(blackouts=freeze), Candidate("n1")) == BlackedOut(
        until=NOW + timedelta(hours=3), reason="freeze"
    )
    assert reason_of(one_pool(schedule=NIGHT), Candidate("n1")) == WindowClosed(
        opens=datetime(2025, 6, 2, 2, tzinfo=UTC)
    )


def test_each_node_gate() -> None:
    assert reason_of(one_pool(), Candidate("n1", hold="debugging")) == Held(reason="debugging")
    until = NOW + timedelta(minutes=3)
    assert reason_of(one_pool(), Candidate("n1", retry_at=until)) == BackingOff(until=until)
    assert run(one_pool(), Candidate("n1", retry_at=NOW)).started == ("n1",)


def test_the_first_reason_that_applies_wins() -> None:
    everything = one_pool(paused=True, schedule=NIGHT)
    assert reason_of(everything, Candidate("n1", hold="x", retry_at=NOW + timedelta(hours=1))) == Paused(
        pool="web"
    )
    held = reason_of(one_pool(schedule=NIGHT), Candidate("n1", hold="x", retry_at=NOW + timedelta(hours=1)))
    assert held == Held(reason="x")
    backing = reason_of(one_pool(schedule=NIGHT), Candidate("n1", retry_at=NOW + timedelta(hours=1)))
    assert isinstance(backing, BackingOff)


def test_triggers_stay_open_until_drained_and_pools_report_their_next_opening() -> None:
    assert run(
        one_pool(schedule=ELEVEN), Candidate("n1"), drained={"web": NOW - timedelta(hours=2)}
    ).started == ("n1",)
    closed = run(one_pool(schedule=ELEVEN), Candidate("n1"), drained={"web": NOW - timedelta(minutes=30)})
    assert closed.waiting["n1"] == WindowClosed(opens=datetime(2025, 6, 2, 11, tzinfo=UTC))
    assert run(one_pool(schedule=ELEVEN), Candidate("n1")).started == ()  # no drain time known: no replay
    freeze = (Period(start=NOW - timedelta(hours=1), end=NOW + timedelta(hours=1)),)
    blacked = run(one_pool(blackouts=freeze), Candidate("n1"))
    passed = blacked.pools["web"]
    assert passed.blackout is not None
    assert passed.next_opening == NOW + timedelta(hours=1)
    assert not passed.window_open
    invalid = run(one_pool(problems=("x",), schedule=None)).pools["web"]
    assert invalid.next_opening is None
    assert not invalid.window_open


def test_wake_at_is_the_earliest_reason_to_lapse() -> None:
    found = run(
        one_pool(schedule=NIGHT),
        Candidate("n1", retry_at=NOW + timedelta(minutes=10)),
        Candidate("n2"),
    )
    assert found.wake_at == NOW + timedelta(minutes=10)
    assert run(one_pool(paused=True), Candidate("n1")).wake_at is None
    assert {Code(r.code) for r in found.waiting.values()} == {Code.BACKING_OFF, Code.WINDOW_CLOSED}


def test_every_reason_says_what_it_means() -> None:
    reasons = [
        (InvalidPolicy(pool="web", problems=("a", "b")), "policy web cannot be followed: a; b"),
        (Paused(pool="web"), "policy web is paused"),
        (
            Halted(pool="web", since=NOW, failed_nodes=("x",)),
            "policy web halted at 2025-06-01T12:00:00+00:00 after failures on x",
        ),
        (Held(reason="why"), "held by annotation: why"),
        (BackingOff(until=NOW), "backing off after a failed update until 2025-06-01T12:00:00+00:00"),
        (BlackedOut(until=NOW, reason="freeze"), "blackout until 2025-06-01T12:00:00+00:00 (freeze)"),
        (BlackedOut(until=NOW, reason=None), "blackout until 2025-06-01T12:00:00+00:00"),
        (WindowClosed(opens=None), "update window closed; opens never"),
        (NoFreeSlot(in_cycle=3, limit=3), "no free slot (3/3 updating)"),
        (NodeNotSeen(), "its Node object has not been seen"),
    ]
    for reason, text in reasons:
        assert reason.message() == text


# Random fleets: three label values, up to four policies over them, the default pool for the rest.
SCHEDULES = {"always": ALWAYS, "always-too": ALWAYS, "night": NIGHT, "eleven": ELEVEN}
limits: st.SearchStrategy[Limit] = st.one_of(
    st.builds(Count, st.integers(0, 4)), st.builds(Percent, st.integers(0, 100)), st.just(Unlimited())
)
selectors = st.one_of(
    st.just(LabelSelector()),
    st.builds(lambda v: LabelSelector(match_labels={"group": v}), st.sampled_from("abc")),
)
hours_around = st.integers(-30, 30).map(lambda h: NOW + timedelta(hours=h))
periods = st.lists(
    st.tuples(hours_around, st.integers(1, 20)).map(
        lambda p: Period(start=p[0], end=p[0] + timedelta(hours=p[1]))
    ),
    max_size=2,
).map(lambda found: tuple(sorted(found, key=lambda p: (p.start, p.end))))


rarely = st.integers(0, 4).map(lambda n: n == 0)  # a gate that closes a pool, one time in five


@st.composite
def fleets(
    draw: st.DrawFn,
) -> tuple[Assignment, list[Candidate], list[str], dict[str, Halt], dict[str, datetime]]:
    count = draw(st.integers(0, 4))
    pools = [
        Pool(
            name=f"p{i}",
            limit=draw(limits),
            schedule=SCHEDULES[draw(st.sampled_from(sorted(SCHEDULES)))],
            blackouts=draw(periods),
            paused=draw(rarely),
            selector=draw(selectors),
            priority=draw(st.integers(0, 2)),
            problems=("unusable",) if draw(rarely) else (),
        )
        for i in range(count)
    ]
    env = replace(default_pool(Defaults(max_concurrent=draw(st.none() | st.integers(0, 3)), schedule=ALWAYS)))
    nodes = [_Node(f"n{i}", group=draw(st.sampled_from("abcd"))) for i in range(draw(st.integers(0, 20)))]
    assignment = assign(pools, env, nodes)
    names = [n.name for n in nodes]
    busy = draw(st.lists(st.sampled_from(names), unique=True)) if names else []
    busy += draw(st.sampled_from([[], ["gone-1"], ["gone-1"], ["gone-1", "gone-2"]]))  # Nodes no longer seen
    idle = [n for n in names if n not in busy]
    chosen = draw(st.permutations(idle)) if idle else []
    candidates = [
        Candidate(
            name,
            retry_at=draw(st.none() | st.integers(-60, 60).map(lambda m: NOW + timedelta(minutes=m))),
            hold=draw(st.none() | st.just("hold")),
        )
        for name in chosen[: draw(st.integers(0, len(chosen)))]
    ]
    if draw(st.booleans()):
        candidates.append(Candidate("stranger"))
    halts = {p.name: HALT for p in pools if draw(rarely)}
    drained = {name: draw(hours_around) for name in assignment.pools if draw(st.booleans())}
    return assignment, candidates, busy, halts, drained


@settings(max_examples=200)  # with the other properties, the unit suite stays under 2 minutes
@given(fleet=fleets())
def test_properties_of_admission(
    fleet: tuple[Assignment, list[Candidate], list[str], dict[str, Halt], dict[str, datetime]],
) -> None:
    assignment, candidates, busy, halts, drained = fleet
    found = admit(assignment, candidates=candidates, in_cycle=busy, halts=halts, drained_at=drained, now=NOW)
    # Every candidate gets exactly one answer.
    assert set(found.started) | set(found.waiting) == {c.name for c in candidates}
    assert len(found.started) + len(found.waiting) == len(candidates)
    by_name = {c.name: c for c in candidates}
    before: Counter[str] = Counter()
    for node in busy:
        pool = assignment.pool_of.get(node)
        before.update(list(assignment.pools) if pool is None else [pool])
    started_in = Counter(assignment.pool_of[name] for name in found.started)
    for name, pool in assignment.pools.items():
        limit = pool.limit.of(len(assignment.members[name]))
        # Never more than the pool's limit in a cycle (or no new start when already above it).
        if limit is not None:
            assert started_in[name] <= max(0, limit - before[name])
        if started_in[name]:
            assert pool.usable
            assert not pool.paused
            assert name not in halts
            assert covering(pool.blackouts, NOW) is None
            assert pool.schedule is not None
            assert pool.schedule.is_open(NOW, drained_at=drained.get(name, NOW))
    for name in found.started:
        candidate = by_name[name]
        assert candidate.hold is None
        assert candidate.retry_at is None or candidate.retry_at <= NOW
    order = [c.name for c in candidates]
    for name, reason in found.waiting.items():
        if isinstance(reason, NoFreeSlot):
            pool = assignment.pool_of[name]
            # The slot really is taken, and nobody later in the order of the same pool started instead.
            assert before[pool] + started_in[pool] >= reason.limit
            later = order[order.index(name) + 1 :]
            assert not [n for n in later if n in found.started and assignment.pool_of[n] == pool]
        if name == "stranger":
            assert reason == NodeNotSeen()


states = st.sampled_from(list(ShadowState))


@st.composite
def env_fleets(draw: st.DrawFn) -> tuple[list[BottlerocketShadow], dict[str, NodeInfo]]:
    shadows = []
    for i in range(draw(st.integers(0, 12))):
        failed = draw(st.none() | st.integers(0, 20).map(lambda m: NOW - timedelta(minutes=m)))
        shadows.append(
            shadow(
                f"n{i}",
                spec=draw(states),
                state=draw(st.none() | states),
                target=draw(st.sampled_from(["1.0.0", "1.1.0"])),
                crashes=draw(st.integers(0, 3)),
                failed_at=failed,
            )
        )
    seen = [node_name_of(s) for s in shadows if draw(st.integers(0, 5)) > 0]
    return shadows, {n: NodeInfo(name=n, uid=f"uid-{n}", labels=LABELS) for n in seen}


@settings(max_examples=150)
@given(fleet=env_fleets(), limit=st.none() | st.integers(0, 4), window_open=st.booleans())
def test_with_no_policy_admission_starts_what_the_rollout_pass_starts(
    fleet: tuple[list[BottlerocketShadow], dict[str, NodeInfo]], limit: int | None, window_open: bool
) -> None:
    """The environment-only configuration behaves as before: the default pool admits exactly the nodes the
    rollout pass started before policies existed."""
    shadows, nodes = fleet
    expected = before_policies(shadows, nodes, limit=limit, window_open=window_open, now=NOW)
    env = Defaults(max_concurrent=limit, schedule=ALWAYS if window_open else NIGHT)
    assignment = pools_for([], nodes.values(), env, now=NOW)
    waiting = [
        s for s in shadows if s.status is not None and not is_active(s) and s.status.update_available()
    ]
    candidates = [
        Candidate(node_name_of(s), retry_at=retry_at(s.status))  # type: ignore[arg-type]
        for s in start_order(waiting, controller_node=None)
    ]
    found = admit(
        assignment,
        candidates=candidates,
        in_cycle=[node_name_of(s) for s in shadows if is_active(s)],
        halts={},
        drained_at={},
        now=NOW,
    )
    by_shadow = {s.name: node_name_of(s) for s in shadows}
    assert list(found.started) == [by_shadow[name] for name in expected]
