from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from brupop.controller.metrics import FleetMetrics
from brupop.controller.reconciler import RESYNC, Reconciler
from brupop.controller.settings import ControllerSettings
from brupop.models.shadow import BottlerocketShadow, ShadowSpec, ShadowState
from brupop.policy.rollout import NodeInfo, node_name_of
from brupop.settings import SettingsError
from tests.factories import shadow

NOW = datetime(2024, 3, 15, 10, 0, tzinfo=UTC)  # Friday
S = ShadowState
LABELS = {"bottlerocket.aws/updater-interface-version": "2.0.0"}


class Fleet:
    """Our FleetView and FleetWriter over a dict of shadows."""

    def __init__(self, shadows: list[BottlerocketShadow]) -> None:
        self.by_name = {s.name: s for s in shadows}
        self.events: list[tuple[str, str, bool]] = []
        self.deleted: list[str] = []

    def shadows(self) -> list[BottlerocketShadow]:
        return list(self.by_name.values())

    def nodes(self) -> Mapping[str, NodeInfo]:
        names = [node_name_of(s) for s in self.by_name.values()]
        return {n: NodeInfo(name=n, uid="u", labels=LABELS) for n in names}

    async def write_spec(self, name: str, spec: ShadowSpec) -> None:
        self.by_name[name] = replace(self.by_name[name], spec=spec)

    async def delete_shadow(self, name: str) -> None:
        self.deleted.append(name)
        del self.by_name[name]

    async def record_event(self, name: str, *, reason: str, message: str, warning: bool = False) -> None:
        self.events.append((name, reason, warning))


def settings(**env: str) -> ControllerSettings:
    return ControllerSettings.from_env({"MAX_CONCURRENT_UPDATE": "2", **env}, now=NOW)


def reconciler(fleet: Fleet, config: ControllerSettings, clock: list[datetime]) -> Reconciler:
    return Reconciler(
        view=fleet,
        writer=fleet,
        settings=config,
        metrics=FleetMetrics(CollectorRegistry()),
        clock=lambda: clock[0],
    )


async def test_a_pass_starts_up_to_the_limit_and_announces_it() -> None:
    fleet = Fleet([shadow(f"n{i}", current="1.0.0", target="1.1.0") for i in range(5)])
    clock = [NOW]
    deadline = await reconciler(fleet, settings(), clock).reconcile_once()
    started = [s.name for s in fleet.shadows() if s.spec.state is S.STAGED_AND_PERFORMED_UPDATE]
    assert started == ["brs-n0", "brs-n1"]
    assert [(name, reason) for name, reason, _ in fleet.events] == [
        ("brs-n0", "UpdateStarted"),
        ("brs-n1", "UpdateStarted"),
    ]
    assert deadline == NOW + RESYNC


async def test_failures_are_announced_as_warnings_and_backoff_sets_the_deadline() -> None:
    failing = shadow(
        "f",
        spec=S.REBOOTED_INTO_UPDATE,
        state=S.ERROR_RESET,
        spec_version="1.1.0",
        crashes=1,
        failed_at=NOW,
        current="1.0.0",
        target="1.1.0",
    )
    fleet = Fleet([failing])
    clock = [NOW]
    r = reconciler(fleet, settings(), clock)
    await r.reconcile_once()
    assert fleet.events == [("brs-f", "UpdateFailed", True)]
    assert fleet.by_name["brs-f"].spec.state is S.IDLE
    # The agent recovers; the node now waits out its back-off, which becomes the next deadline.
    recovered = fleet.by_name["brs-f"]
    assert recovered.status is not None
    fleet.by_name["brs-f"] = replace(recovered, status=replace(recovered.status, current_state=S.IDLE))
    assert await r.reconcile_once() == NOW + timedelta(minutes=3)


async def test_a_closed_window_wakes_the_controller_when_it_opens() -> None:
    fleet = Fleet([shadow("n", current="1.0.0", target="1.1.0")])
    clock = [NOW]
    r = reconciler(fleet, settings(SCHEDULER_CRON_EXPRESSION="* * 2-4 * * Mon-Fri *"), clock)
    assert await r.reconcile_once() == NOW + RESYNC  # Monday 02:00 is further away than the resync
    clock[0] = datetime(2024, 3, 18, 1, 58, tzinfo=UTC)
    deadline = await r.reconcile_once()
    assert fleet.by_name["brs-n"].spec.state is S.IDLE
    assert deadline == datetime(2024, 3, 18, 2, tzinfo=UTC)
    clock[0] = deadline
    await r.reconcile_once()
    assert fleet.by_name["brs-n"].spec.state is S.STAGED_AND_PERFORMED_UPDATE


async def test_a_trigger_stays_open_until_nothing_is_left_to_start() -> None:
    fleet = Fleet([shadow(f"n{i}", current="1.0.0", target="1.1.0") for i in range(3)])
    clock = [NOW]
    r = reconciler(
        fleet, settings(SCHEDULER_CRON_EXPRESSION="0 0 11 * * * *", MAX_CONCURRENT_UPDATE="1"), clock
    )
    await r.reconcile_once()
    assert all(s.spec.state is S.IDLE for s in fleet.shadows())
    clock[0] = NOW.replace(hour=11)
    for _ in range(3):  # each pass: the in-flight node finishes, the next one starts
        await r.reconcile_once()
        for name, s in list(fleet.by_name.items()):
            if s.spec.state is S.STAGED_AND_PERFORMED_UPDATE:
                fleet.by_name[name] = shadow(node_name_of(s), current="1.1.0", target="1.1.0")
        clock[0] += timedelta(hours=1)
    assert all(s.status and s.status.current_version == "1.1.0" for s in fleet.shadows())
    await r.reconcile_once()  # nothing left: drained, closed until tomorrow 11:00
    fleet.by_name["brs-late"] = shadow("late", current="1.0.0", target="1.1.0")
    await r.reconcile_once()
    assert fleet.by_name["brs-late"].spec.state is S.IDLE


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "MAX_CONCURRENT_UPDATE is not set"),
        (
            {"MAX_CONCURRENT_UPDATE": "lots"},
            "MAX_CONCURRENT_UPDATE='lots': expected a non-negative integer or 'unlimited'",
        ),
        ({"MAX_CONCURRENT_UPDATE": "1", "SCHEDULER_TIMEZONE": "Nowhere"}, "SCHEDULER_TIMEZONE='Nowhere'"),
        (
            {"MAX_CONCURRENT_UPDATE": "1", "CONTROLLER_INTERNAL_PORT": "99999"},
            "CONTROLLER_INTERNAL_PORT='99999'",
        ),
    ],
)
def test_bad_controller_settings(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        ControllerSettings.from_env(env, now=NOW)
    assert str(info.value).startswith(message)


def test_controller_settings() -> None:
    parsed = ControllerSettings.from_env(
        {
            "MAX_CONCURRENT_UPDATE": "unlimited",
            "MY_NODE_NAME": "ctl",
            "UPDATE_WINDOW_START": "1:0:0",
            "UPDATE_WINDOW_STOP": "2:0:0",
        },
        now=NOW,
    )
    assert (parsed.max_concurrent, parsed.node_name, parsed.metrics_port) == (None, "ctl", 8080)
    assert parsed.schedule.expression.text == "* * 1-2 * * * *"
    assert len(parsed.warnings) == 1
