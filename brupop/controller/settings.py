"""The controller's configuration, from the Rust brupop's environment variables plus SCHEDULER_TIMEZONE."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from brupop.policy.rollout import ConcurrencyError, parse_max_concurrent
from brupop.policy.schedule import Schedule, ScheduleError, schedule_from_settings
from brupop.settings import SettingsError, optional, port, required


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
        )
