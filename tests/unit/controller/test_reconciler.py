import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from brupop.controller.metrics import FleetMetrics
from brupop.controller.reconciler import RESYNC, Reconciler, UnreadableShadow
from brupop.controller.settings import ControllerSettings
from brupop.models.shadow import ShadowState
from brupop.models.timestamp import Timestamp
from brupop.policy.rollout import node_name_of
from brupop.policy.stuck import DEFAULT_STUCK_AFTER
from brupop.settings import SettingsError
from tests.controller_doubles import Fleet, Lease
from tests.factories import shadow

NOW = datetime(2024, 3, 15, 10, 0, tzinfo=UTC)  # Friday
S = ShadowState


def settings(**env: str) -> ControllerSettings:
    return ControllerSettings.from_env({"MAX_CONCURRENT_UPDATE": "2", **env}, now=NOW)


def reconciler(
    fleet: Fleet, config: ControllerSettings, clock: list[datetime], lease: Lease | None = None
) -> Reconciler:
    return Reconciler(
        view=fleet,
        writer=fleet,
        leadership=lease or Lease(),
        settings=config,
        metrics=FleetMetrics(CollectorRegistry()),
        clock=lambda: clock[0],
    )


async def test_a_pass_starts_up_to_the_limit_and_announces_it() -> None:
    fleet = Fleet([shadow(f"n{i}", current="1.0.0", target="1.1.0") for i in range(5)])
    clock = [NOW]
    r = reconciler(fleet, settings(), clock)
    assert await r.reconcile_once() == NOW  # it wrote: look again at once
    started = [s.name for s in fleet.shadows() if s.spec.state is S.STAGED_AND_PERFORMED_UPDATE]
    assert started == ["brs-n0", "brs-n1"]
    assert [(name, reason) for name, reason, _ in fleet.events] == [
        ("brs-n0", "UpdateStarted"),
        ("brs-n1", "UpdateStarted"),
    ]
    assert fleet.writes[:3] == ["label n0 True", "label n1 True", "spec brs-n0"]  # labelled before started
    assert await r.reconcile_once() == NOW + RESYNC


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
    await r.reconcile_once()  # settled: the in-cycle label goes
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
        (
            {"MAX_CONCURRENT_UPDATE": "1", "STUCK_AFTER_REBOOTED_INTO_UPDATE": "soon"},
            "STUCK_AFTER_REBOOTED_INTO_UPDATE='soon': expected a number of seconds >= 1",
        ),
        (
            {"MAX_CONCURRENT_UPDATE": "1", "STUCK_AFTER_IDLE": "1e12"},
            "STUCK_AFTER_IDLE='1e12': expected a number of seconds from 1 to 31536000",
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
    assert parsed.stuck_after == DEFAULT_STUCK_AFTER
    tuned = ControllerSettings.from_env(
        {"MAX_CONCURRENT_UPDATE": "1", "STUCK_AFTER_STAGED_AND_PERFORMED_UPDATE": "90"}, now=NOW
    )
    assert tuned.stuck_after[S.STAGED_AND_PERFORMED_UPDATE] == timedelta(seconds=90)
    assert tuned.stuck_after[S.IDLE] == DEFAULT_STUCK_AFTER[S.IDLE]


async def test_no_write_while_the_lease_is_not_steady() -> None:
    fleet = Fleet([shadow("n", current="1.0.0", target="1.1.0")])
    lease = Lease()
    lease.steady_now = False
    r = reconciler(fleet, settings(), [NOW], lease)
    deadline = await r.reconcile_once()
    assert fleet.writes == []
    assert NOW < deadline < NOW + RESYNC  # looks again soon, to write once the Lease is renewed
    lease.steady_now = True
    await r.reconcile_once()
    assert fleet.by_name["brs-n"].spec.state is S.STAGED_AND_PERFORMED_UPDATE


async def test_a_failed_write_is_retried_by_a_later_pass_after_a_back_off() -> None:
    fleet = Fleet([shadow("n", current="1.0.0", target="1.1.0")])
    fleet.refuse = {"spec brs-n"}
    r = reconciler(fleet, settings(), [NOW])
    deadline = await r.reconcile_once()
    assert NOW <= deadline < NOW + RESYNC
    assert fleet.events == []  # nothing announced for a write that did not land
    fleet.refuse = set()
    await r.reconcile_once()
    assert fleet.by_name["brs-n"].spec.state is S.STAGED_AND_PERFORMED_UPDATE


async def test_a_node_starts_only_once_it_carries_the_in_cycle_label() -> None:
    fleet = Fleet([shadow("n", current="1.0.0", target="1.1.0")])
    fleet.refuse = {"label n True"}
    r = reconciler(fleet, settings(), [NOW])
    await r.reconcile_once()
    assert fleet.writes == ["label n True"]
    assert fleet.by_name["brs-n"].spec.state is S.IDLE


TRIGGER = "0 0 11 * * * *"  # 11:00 every day


async def test_a_new_leader_does_not_replay_a_trigger_that_already_drained() -> None:
    fleet = Fleet([shadow("late", current="1.0.0", target="1.1.0")])
    drained = NOW.replace(hour=11, minute=30)  # today's trigger fired at 11:00 and drained at 11:30
    clock = [NOW.replace(hour=12)]
    config = settings(SCHEDULER_CRON_EXPRESSION=TRIGGER)
    await reconciler(fleet, config, clock, Lease(drained_at=drained)).reconcile_once()
    assert fleet.by_name["brs-late"].spec.state is S.IDLE  # closed until tomorrow 11:00


async def test_a_new_leader_carries_on_with_an_open_trigger() -> None:
    fleet = Fleet([shadow(f"n{i}", current="1.0.0", target="1.1.0") for i in range(2)])
    clock = [NOW.replace(hour=11, minute=30)]  # today's trigger fired at 11:00, nothing drained since
    lease = Lease(drained_at=NOW.replace(hour=10))
    config = settings(SCHEDULER_CRON_EXPRESSION=TRIGGER, MAX_CONCURRENT_UPDATE="1")
    await reconciler(fleet, config, clock, lease).reconcile_once()
    assert fleet.by_name["brs-n0"].spec.state is S.STAGED_AND_PERFORMED_UPDATE
    assert lease.records == []  # still open: n1 waits for the slot


async def test_the_first_leader_ever_records_its_start_and_every_drain() -> None:
    fleet = Fleet([shadow("n", current="1.1.0", target="1.1.0")])
    clock = [NOW.replace(hour=10)]
    lease = Lease()
    r = reconciler(fleet, settings(SCHEDULER_CRON_EXPRESSION=TRIGGER), clock, lease)
    await r.reconcile_once()
    assert lease.records == [NOW.replace(hour=10)]  # a trigger before the first leader is not replayed
    clock[0] = NOW.replace(hour=11, second=5)
    await r.reconcile_once()  # fired at 11:00, nothing to start: drained now
    assert lease.records == [NOW.replace(hour=10), NOW.replace(hour=11, second=5)]
    await r.reconcile_once()
    assert len(lease.records) == 2  # closed: nothing more to record


async def test_a_window_schedule_writes_nothing_to_the_lease() -> None:
    fleet = Fleet([shadow("n", current="1.1.0", target="1.1.0")])
    lease = Lease()
    await reconciler(fleet, settings(), [NOW], lease).reconcile_once()
    assert lease.records == []


async def test_unreadable_shadows_hold_a_slot_and_are_reported_once_per_change() -> None:
    fleet = Fleet([shadow(f"n{i}", current="1.0.0", target="1.1.0") for i in range(2)])
    fleet.bad = [UnreadableShadow("brs-bad", "7", "spec.state_transition_timestamp: out of range", "bad")]
    registry = CollectorRegistry()
    r = Reconciler(
        view=fleet,
        writer=fleet,
        leadership=Lease(),
        settings=settings(MAX_CONCURRENT_UPDATE="2"),
        metrics=FleetMetrics(registry),
        clock=lambda: NOW,
    )
    await r.reconcile_once()
    await r.reconcile_once()
    assert [s.name for s in fleet.shadows() if s.spec.state is not S.IDLE] == ["brs-n0"]
    assert [e for e in fleet.events if e[1] == "InvalidShadow"] == [("brs-bad", "InvalidShadow", True)]
    assert registry.get_sample_value("brupop_shadows_invalid") == 1
    fleet.bad = [UnreadableShadow("brs-bad", "8", "still wrong", "bad")]
    await r.reconcile_once()
    assert len([e for e in fleet.events if e[1] == "InvalidShadow"]) == 2


async def test_a_stuck_node_is_reported_once_on_its_shadow_and_node_and_keeps_its_slot() -> None:
    asked = shadow(
        "slow", spec=S.REBOOTED_INTO_UPDATE, state=S.STAGED_AND_PERFORMED_UPDATE, spec_version="1.1.0"
    )
    asked = replace(asked, spec=replace(asked.spec, state_transition_timestamp=Timestamp.from_datetime(NOW)))
    fleet = Fleet([asked, shadow("next", current="1.0.0", target="1.1.0")])
    registry = CollectorRegistry()
    clock = [NOW + timedelta(seconds=50)]
    r = Reconciler(
        view=fleet,
        writer=fleet,
        leadership=Lease(),
        settings=settings(MAX_CONCURRENT_UPDATE="1", STUCK_AFTER_REBOOTED_INTO_UPDATE="60"),
        metrics=FleetMetrics(registry),
        clock=lambda: clock[0],
    )
    assert await r.reconcile_once() == clock[0]  # labelled the busy node; then ...
    assert await r.reconcile_once() == NOW + timedelta(seconds=60)  # ... wakes at the deadline
    assert fleet.node_events == []
    clock[0] = NOW + timedelta(seconds=61)
    await r.reconcile_once()
    await r.reconcile_once()
    assert fleet.node_events == [("slow", "UpdateStuck")]
    assert [e for e in fleet.events if e[1] == "UpdateStuck"] == [("brs-slow", "UpdateStuck", True)]
    assert registry.get_sample_value("brupop_nodes_stuck") == 1
    assert fleet.by_name["brs-next"].spec.state is S.IDLE  # the stuck node keeps its slot


async def test_cancelling_the_loop_is_never_lost_when_a_wake_up_arrives_at_the_same_moment() -> None:
    """asyncio.wait_for(event.wait()) on Python 3.11 swallows a cancellation that arrives while the event
    is being set: the loop would go on and the controller would never release its Lease."""
    for ticks in range(8):
        fleet = Fleet([shadow("n", current="1.1.0", target="1.1.0")])
        r = reconciler(fleet, settings(), [NOW])
        task = asyncio.create_task(r.run())
        for _ in range(3):
            await asyncio.sleep(0)  # the first pass is done: the loop waits for a wake-up
        r.poke()
        for _ in range(ticks):
            await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=2)
        assert done == {task}, f"the cancellation was lost ({ticks} loop iterations after the wake-up)"
        assert task.cancelled()


async def test_each_pass_is_timed() -> None:
    """Issue 20: how long a pass over the fleet takes (the plan and its writes) is a metric, so its cost at
    15,000 nodes can be read off a running controller."""
    registry = CollectorRegistry()
    fleet = Fleet([shadow("a", current="1.0.0", target="1.1.0")])
    clock = [NOW]
    rec = Reconciler(
        view=fleet,
        writer=fleet,
        leadership=Lease(),
        settings=settings(),
        metrics=FleetMetrics(registry),
        clock=lambda: clock[0],
    )
    await rec.reconcile_once()
    await rec.reconcile_once()
    assert registry.get_sample_value("brupop_reconcile_pass_duration_seconds_count") == 2
    assert (registry.get_sample_value("brupop_reconcile_pass_duration_seconds_sum") or 0) > 0
