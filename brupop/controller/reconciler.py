"""The controller's loop: coalesce events, run one level-based pass over the whole fleet, write what
changed, and sleep until the next event or time-based deadline (a back-off ending, the window opening,
or a slow safety resync). No fixed polling.

The view must already reflect the controller's own writes when the next pass runs (the kube-backed view
"assumes" each patched object until its watch event arrives); otherwise a pass running before the watch
caught up would count a just-started node as idle and could start one node too many.

One-shot schedules (a trigger time rather than a window) stay open from the trigger until a pass finds no
node that wants to start; `drained_at` records that moment, as the Rust brupop's loop does implicitly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from brupop.controller.metrics import FleetMetrics
from brupop.controller.settings import ControllerSettings
from brupop.models.shadow import BottlerocketShadow, ShadowSpec, ShadowState
from brupop.policy.rollout import NodeInfo, Plan, RolloutConfig, plan
from brupop.policy.statemachine import is_active

RESYNC = timedelta(minutes=5)
log = structlog.get_logger("brupop.controller")


class FleetView(Protocol):
    def shadows(self) -> list[BottlerocketShadow]: ...
    def nodes(self) -> Mapping[str, NodeInfo]: ...


class FleetWriter(Protocol):
    async def write_spec(self, name: str, spec: ShadowSpec) -> None: ...
    async def delete_shadow(self, name: str) -> None: ...
    async def record_event(self, name: str, *, reason: str, message: str, warning: bool = False) -> None: ...


class Reconciler:
    def __init__(
        self,
        *,
        view: FleetView,
        writer: FleetWriter,
        settings: ControllerSettings,
        metrics: FleetMetrics,
        clock: Callable[[], datetime],
    ) -> None:
        self._view = view
        self._writer = writer
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._config = RolloutConfig(
            max_concurrent=settings.max_concurrent, controller_node=settings.node_name
        )
        self._drained_at = clock()
        self._wake = asyncio.Event()

    def poke(self) -> None:
        """Something changed: run a pass soon (many pokes before the pass coalesce into one)."""
        self._wake.set()

    async def run(self) -> None:
        """Reconcile until cancelled."""
        while True:
            self._wake.clear()
            deadline = await self.reconcile_once()
            delay = max((deadline - self._clock()).total_seconds(), 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)

    async def reconcile_once(self) -> datetime:
        """One pass; returns when the next pass is due even if nothing happens."""
        now = self._clock()
        schedule = self._settings.schedule
        window_open = schedule.is_open(now, drained_at=self._drained_at)
        shadows = self._view.shadows()
        decided = plan(shadows, self._view.nodes(), now=now, config=self._config, window_open=window_open)
        await self._apply(decided, {s.name: s for s in shadows})
        if window_open and not decided.started and not decided.held:
            self._drained_at = now
            window_open = schedule.is_open(now, drained_at=self._drained_at)
        self._metrics.observe(shadows, now=now, active=decided.active, window_open=window_open)
        deadlines = [now + RESYNC]
        if decided.wake_at is not None:
            deadlines.append(decided.wake_at)
        if decided.held and not window_open:
            opening = schedule.next_opening(now, drained_at=self._drained_at)
            if opening is not None:
                deadlines.append(opening)
        return min(deadlines)

    async def _apply(self, decided: Plan, before: Mapping[str, BottlerocketShadow]) -> None:
        for name in decided.deletions:
            log.info("deleting shadow of a node that left brupop", shadow=name)
            await self._writer.delete_shadow(name)
        for name, spec in decided.spec_changes.items():
            old = before[name]
            log.info(
                "spec", shadow=name, state=spec.state.value, version=spec.version, was=old.spec.state.value
            )
            await self._writer.write_spec(name, spec)
            await self._announce(old, spec, started=name in decided.started)

    async def _announce(self, old: BottlerocketShadow, spec: ShadowSpec, *, started: bool) -> None:
        status = old.status
        if started:
            await self._writer.record_event(
                old.name,
                reason="UpdateStarted",
                message=f"updating from {status.current_version if status else '?'} to {spec.version}",
            )
        elif status is not None and status.current_state is ShadowState.ERROR_RESET and is_active(old):
            await self._writer.record_event(
                old.name,
                reason="UpdateFailed",
                message=f"update to {old.spec.version} failed (crash count {status.crash_count})",
                warning=True,
            )
        elif spec.state is not old.spec.state and spec.state is not ShadowState.IDLE:
            await self._writer.record_event(
                old.name, reason="TargetState", message=f"target state {spec.state.value} ({spec.version})"
            )
