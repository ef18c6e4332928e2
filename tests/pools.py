"""Pools for tests of the rollout pass: the environment's pool alone (no policy), as the controller builds
it from MAX_CONCURRENT_UPDATE and an open or closed schedule; and what the pass started before policies
existed, the oracle the environment-only configuration is checked against."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from brupop.models.shadow import BottlerocketShadow
from brupop.policy.backoff import may_retry
from brupop.policy.cron import CronExpression
from brupop.policy.pools import Defaults, pools_for
from brupop.policy.rollout import NodeInfo, Pools, node_name_of, start_order, tracked
from brupop.policy.schedule import Schedule
from brupop.policy.statemachine import is_active

UTC = ZoneInfo("UTC")


def window(text: str, *, now: datetime) -> Schedule:
    return Schedule.create(CronExpression.parse(text), UTC, now=now - timedelta(days=1))


def env_pools(
    shadows: Iterable[BottlerocketShadow],
    nodes: Mapping[str, NodeInfo],
    *,
    limit: int | None,
    now: datetime,
    window_open: bool = True,
) -> Pools:
    """Every tracked node in the environment's pool, its window open (every second) or closed (2099 only)."""
    schedule = window("* * * * * * *" if window_open else "* * * * * * 2099", now=now)
    defaults = Defaults(max_concurrent=limit, schedule=schedule)
    return Pools(assignment=pools_for([], tracked(list(shadows), nodes), defaults, now=now))


def before_policies(
    shadows: Iterable[BottlerocketShadow],
    nodes: Mapping[str, NodeInfo],
    *,
    limit: int | None,
    window_open: bool,
    now: datetime,
    unreadable: int = 0,
) -> list[str]:
    """The shadows the rollout pass started before policies existed (the oracle of "the environment alone
    behaves as before"): idle nodes that opted in, with an update on offer and their back-off over, in
    start order, as many as MAX_CONCURRENT_UPDATE leaves free after every node in a cycle (unreadable
    shadows included), and none while the window is closed."""
    shadows = list(shadows)
    eligible = [
        s
        for s in shadows
        if (node := nodes.get(node_name_of(s))) is not None
        and node.opted_in
        and s.status is not None
        and not is_active(s)
        and s.status.update_available()
        and may_retry(s.status, now=now)
    ]
    active = unreadable + sum(is_active(s) for s in shadows)
    if not window_open:
        slots = 0
    elif limit is None:
        slots = len(eligible)
    else:
        slots = max(limit - active, 0)
    return [s.name for s in start_order(eligible, controller_node=None)[:slots]]
