"""The controller's configuration, from the Rust brupop's environment variables plus SCHEDULER_TIMEZONE, the
per-state deadlines `STUCK_AFTER_<STATE>` (seconds; e.g. `STUCK_AFTER_REBOOTED_INTO_UPDATE=7200`) and the
notifications' `NOTIFY_*` (`brupop.notify.settings`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from brupop.models.shadow import ShadowState
from brupop.notify.settings import NotifySettings
from brupop.policy.rollout import ConcurrencyError, parse_max_concurrent
from brupop.policy.schedule import Schedule, ScheduleError, schedule_from_settings
from brupop.policy.stuck import DEFAULT_STUCK_AFTER
from brupop.settings import SettingsError, optional, port, required, seconds


def stuck_after_variable(state: ShadowState) -> str:
    """`STUCK_AFTER_REBOOTED_INTO_UPDATE` for RebootedIntoUpdate, and so on."""
    return "STUCK_AFTER_" + re.sub(r"(?<!^)(?=[A-Z])", "_", state.value).upper()


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    max_concurrent: int | None
    """None means unlimited."""
    schedule: Schedule
    warnings: tuple[str, ...]
    """Notes to log at start-up (e.g. a legacy window ignored because a cron expression is set)."""
    node_name: str | None
    """The node running the controller (updated last)."""
    metrics_port: int
    stuck_after: Mapping[ShadowState, timedelta]
    """How long a node may wait for its agent to reach each state before it is reported as stuck."""
    notify: NotifySettings
    """Where to send notifications, which and how (no destination: none are sent)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, now: datetime) -> ControllerSettings:
        raw_limit = required(
            env, "MAX_CONCURRENT_UPDATE", hint="expected a non-negative integer or 'unlimited'"
        )
        try:
            limit = parse_max_concurrent(raw_limit)
        except ConcurrencyError as err:
            raise SettingsError(f"MAX_CONCURRENT_UPDATE={raw_limit!r}: {err}") from None
        try:
            schedule, warnings = schedule_from_settings(
                cron_expression=optional(env, "SCHEDULER_CRON_EXPRESSION"),
                window_start=optional(env, "UPDATE_WINDOW_START"),
                window_stop=optional(env, "UPDATE_WINDOW_STOP"),
                timezone=optional(env, "SCHEDULER_TIMEZONE"),
                now=now,
            )
        except ScheduleError as err:
            raise SettingsError(str(err)) from None
        return cls(
            max_concurrent=limit,
            schedule=schedule,
            warnings=tuple(warnings),
            node_name=optional(env, "MY_NODE_NAME"),
            metrics_port=port(env, "CONTROLLER_INTERNAL_PORT", default=8080),
            stuck_after={state: _deadline(env, state, limit) for state, limit in DEFAULT_STUCK_AFTER.items()},
            notify=NotifySettings.from_env(env),
        )


MAX_DEADLINE = timedelta(days=365)


def _deadline(env: Mapping[str, str], state: ShadowState, default: timedelta) -> timedelta:
    name = stuck_after_variable(state)
    value = seconds(env, name, default=default.total_seconds(), minimum=1.0)
    if value > MAX_DEADLINE.total_seconds():
        raise SettingsError(
            f"{name}={env[name]!r}: expected a number of seconds from 1 to {MAX_DEADLINE.total_seconds():.0f}"
        )
    return timedelta(seconds=value)
