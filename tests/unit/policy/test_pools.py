from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from brupop.models.policy import LabelSelector
from brupop.policy.cron import CronExpression
from brupop.policy.limits import Count, Percent, Unlimited
from brupop.policy.pools import (
    ENV_POOL,
    Defaults,
    Pool,
    Unreadable,
    assign,
    default_pool,
    pools_for,
    read_policy,
    resolve,
)
from brupop.policy.rollout import NodeInfo
from brupop.policy.schedule import Schedule, ScheduleKind
from tests.policy_cases import readme_examples

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
NIGHTLY = Schedule.create(CronExpression.parse("* * 2-4 * * * *"), ZoneInfo("Europe/Paris"), now=NOW)
ENV = Defaults(max_concurrent=1, schedule=NIGHTLY, stuck_after=timedelta(hours=2))


def obj(name: str, spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "brupop.bottlerocket.aws/v1alpha1",
        "kind": "UpdatePolicy",
        "metadata": {"name": name, **metadata},
        "spec": spec,
    }


def pool(name: str, spec: dict[str, Any], **metadata: Any) -> Pool:
    return resolve(read_policy(obj(name, spec, **metadata)), ENV, now=NOW)


def test_fields_left_out_take_the_environments_values() -> None:
    found = pool("web", {"nodeSelector": {}}, generation=4)
    assert (found.limit, found.schedule, found.stuck_after, found.generation) == (
        Count(1),
        NIGHTLY,
        timedelta(hours=2),
        4,
    )
    assert found.usable
    assert not found.paused
    assert found.budget is None
    assert found.marks is None
    same_schedule = pool("web", {"nodeSelector": {}, "schedule": {"blackouts": []}})
    assert same_schedule.schedule is NIGHTLY
    zoned = pool("web", {"nodeSelector": {}, "schedule": {"timeZone": "Asia/Tokyo"}})
    assert zoned.schedule is not None
    assert (zoned.schedule.expression, zoned.schedule.zone) == (NIGHTLY.expression, ZoneInfo("Asia/Tokyo"))


def test_fields_a_policy_sets_override_the_environment() -> None:
    found = pool(
        "web",
        {
            "nodeSelector": {"matchLabels": {"pool": "web"}},
            "priority": 5,
            "maxConcurrent": "10%",
            "schedule": {
                "cron": "0 0 3 * * * *",
                "blackouts": [{"start": "2025-12-24", "end": "2025-12-26"}],
            },
            "paused": True,
            "failureBudget": {"maxFailures": "5%", "window": "1h"},
            "stuckAfter": "45m",
            "duringUpdate": {"annotations": {"karpenter.sh/do-not-disrupt": "true"}},
        },
    )
    assert found.limit == Percent(10)
    assert found.priority == 5
    assert found.paused
    assert found.schedule is not None
    assert found.schedule.kind is ScheduleKind.TRIGGER
    assert found.schedule.zone == ZoneInfo("Europe/Paris")  # the environment's zone still applies
    (freeze,) = found.blackouts
    assert freeze.start == datetime(2025, 12, 23, 23, tzinfo=UTC)
    assert found.budget is not None
    assert found.budget.max_failures == Percent(5)
    assert found.stuck_after == timedelta(minutes=45)
    assert found.marks is not None
    assert found.marks.annotations == {"karpenter.sh/do-not-disrupt": "true"}
    assert pool("u", {"nodeSelector": {}, "maxConcurrent": "unlimited"}).limit == Unlimited()


@pytest.mark.parametrize(
    ("schedule", "problem"),
    [
        ({"timeZone": "Mars/Olympus"}, "spec.schedule.timeZone: 'Mars/Olympus' is not a time zone"),
        ({"cron": "99 * * * * *"}, "spec.schedule.cron: '99 * * * * *': second field"),
        ({"cron": "0 0 0 30 2 * *"}, "never fires again"),
        ({"cron": "* * * * * * 2024"}, "never fires again"),
    ],
)
def test_what_cel_cannot_check_makes_the_policy_unusable(schedule: dict[str, Any], problem: str) -> None:
    found = pool("web", {"nodeSelector": {}, "schedule": schedule})
    assert not found.usable
    assert problem in found.problems[0]


def test_an_unusable_resume_annotation_is_a_notice_not_a_problem() -> None:
    found = pool("web", {"nodeSelector": {}}, annotations={"brupop.bottlerocket.aws/resumed-at": "soon"})
    assert found.usable
    assert found.resumed_at is None
    assert "is not an RFC 3339 time" in found.notices[0]
    ok = pool(
        "web",
        {"nodeSelector": {}},
        annotations={"brupop.bottlerocket.aws/resumed-at": "2025-06-01T11:00:00Z"},
    )
    assert ok.resumed_at == NOW - timedelta(hours=1)
    assert not ok.notices


def test_an_unreadable_policy_keeps_what_its_selector_still_selects() -> None:
    broken = read_policy(
        obj("web", {"nodeSelector": {"matchLabels": {"pool": "web"}}, "priority": 3, "paused": "yes"})
    )
    assert isinstance(broken, Unreadable)
    assert (broken.name, broken.priority) == ("web", 3)
    assert broken.selector == LabelSelector(match_labels={"pool": "web"})
    found = resolve(broken, ENV, now=NOW)
    assert not found.usable
    assert "spec.paused" in found.problems[0]
    hopeless = read_policy({"metadata": "x", "spec": {"nodeSelector": 1, "priority": True}})
    assert hopeless == Unreadable(name="", error=hopeless.error, selector=None, priority=0)  # type: ignore[union-attr]
    assert read_policy({"spec": []}) == Unreadable(name="", error="spec: expected an object, got list")


@dataclass(frozen=True)
class Node:
    name: str
    labels: dict[str, str] = field(default_factory=dict)


def test_overlaps_go_to_the_highest_priority_then_the_first_name_and_the_rest_is_the_environments() -> None:
    web = pool("web", {"nodeSelector": {"matchLabels": {"pool": "web"}}})
    all_b = pool("b-all", {"nodeSelector": {}})
    all_a = pool("a-all", {"nodeSelector": {}})
    urgent = pool("urgent", {"nodeSelector": {"matchLabels": {"urgent": "yes"}}, "priority": 10})
    nodes = [Node("n1", {"pool": "web"}), Node("n2", {"pool": "web", "urgent": "yes"}), Node("n3")]
    found = assign([web, all_b, all_a, urgent], default_pool(ENV), nodes)
    assert found.pool_of == {"n1": "a-all", "n2": "urgent", "n3": "a-all"}
    assert found.members == {"urgent": ("n2",), "a-all": ("n1", "n3"), "b-all": (), "web": (), ENV_POOL: ()}
    assert [(o.node, o.winner) for o in found.overlaps["b-all"]] == [
        ("n1", "a-all"),
        ("n2", "urgent"),
        ("n3", "a-all"),
    ]
    assert [(o.node, o.winner) for o in found.overlaps["web"]] == [("n1", "a-all"), ("n2", "urgent")]
    assert [(o.node, o.winner) for o in found.overlaps["a-all"]] == [("n2", "urgent")]
    assert found.overlaps["urgent"] == ()


def test_with_no_policy_every_node_follows_the_environment() -> None:
    nodes = [NodeInfo(name=f"n{i}", uid=f"u{i}", labels={}) for i in range(3)]
    found = pools_for([], nodes, ENV, now=NOW)
    assert found.pools == {ENV_POOL: default_pool(ENV)}
    assert set(found.pool_of.values()) == {ENV_POOL}
    env = found.pools[ENV_POOL]
    assert (env.limit, env.schedule, env.stuck_after, env.paused) == (
        Count(1),
        NIGHTLY,
        timedelta(hours=2),
        False,
    )
    unlimited = default_pool(Defaults(max_concurrent=None, schedule=NIGHTLY))
    assert unlimited.limit == Unlimited()
    assert unlimited.stuck_after is None


def test_a_policy_whose_selector_cannot_be_read_selects_nothing() -> None:
    found = pools_for([obj("bad", {"nodeSelector": 3})], [Node("n1")], ENV, now=NOW)
    assert found.pool_of == {"n1": ENV_POOL}
    assert not found.pools["bad"].usable


def test_the_readme_examples_can_be_followed() -> None:
    examples = readme_examples()
    assert sorted(examples) == [
        "readme-careful",
        "readme-change-freeze",
        "readme-karpenter",
        "readme-quiet-cluster",
        "readme-stop-everything",
        "readme-verified",
        "readme-workers",
    ]
    for name, spec in examples.items():
        assert pool(name, spec).usable, name
    workers = pool("workers", examples["readme-workers"])
    assert workers.schedule is not None
    assert workers.schedule.kind is ScheduleKind.WINDOW
    assert len(workers.blackouts) == 2


def test_a_pool_carries_its_policys_gates_and_verification() -> None:
    found = pool(
        "verified",
        {
            "nodeSelector": {},
            "gates": {"cluster": {"maxUnhealthyNodes": 1}},
            "verification": {"soak": "5m"},
        },
    )
    assert found.gates is not None
    assert found.gates.cluster is not None
    assert found.gates.cluster.max_unhealthy_nodes == 1
    assert found.verification is not None
    assert found.verification.soak == "5m"
    plain = pool("plain", {"nodeSelector": {}})
    assert (plain.gates, plain.verification) == (None, None)
    assert (default_pool(ENV).gates, default_pool(ENV).verification) == (None, None)
