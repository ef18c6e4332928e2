"""The reconciler with update policies: status written when it changed and only then, halts and resumes
announced once, a halt kept across leadership terms, invalid policies and holds reported once, a trigger
policy's schedule recorded on the Lease, marks with the in-cycle label, and the per-policy metrics (the
health gates' part: test_reconciler_health)."""

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry

from brupop.controller.metrics import FleetMetrics
from brupop.controller.reconciler import Reconciler
from brupop.controller.settings import ControllerSettings
from brupop.models import constants as c
from brupop.models.policy import UpdatePolicyStatus
from brupop.models.shadow import ShadowState
from brupop.models.timestamp import Timestamp
from brupop.policy.rollout import NodeInfo
from tests.controller_doubles import LABELS, Fleet, Lease
from tests.factories import shadow

NOW = datetime(2024, 3, 15, 10, 0, tzinfo=UTC)
S = ShadowState
POOL = "example.com/pool"


def policy(name: str = "web", *, annotations: Mapping[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "generation": 1,
            "annotations": dict(annotations or {}),
        },
        "spec": {"nodeSelector": {"matchLabels": {POOL: name}}, **spec},
    }


def world(*shadows: Any, pool: str = "web", **policy_spec: Any) -> Fleet:
    fleet = Fleet(list(shadows))
    for name in fleet.node_info:
        fleet.node_info[name] = NodeInfo(name=name, uid="u", labels={**LABELS, POOL: pool})
    fleet.policy_objects[pool] = policy(pool, **policy_spec)
    return fleet


def reconciler(
    fleet: Fleet,
    clock: list[datetime],
    *,
    lease: Lease | None = None,
    registry: CollectorRegistry | None = None,
    **env: str,
) -> Reconciler:
    return Reconciler(
        view=fleet,
        writer=fleet,
        leadership=lease or Lease(),
        settings=ControllerSettings.from_env({"MAX_CONCURRENT_UPDATE": "1", **env}, now=NOW),
        metrics=FleetMetrics(registry or CollectorRegistry()),
        clock=lambda: clock[0],
    )


def status(fleet: Fleet, name: str = "web") -> UpdatePolicyStatus:
    return UpdatePolicyStatus.from_wire(fleet.policy_objects[name]["status"])


async def test_a_policys_status_is_written_when_it_changed_and_only_then() -> None:
    fleet = world(shadow("a", current="1.1.0", target="1.1.0"), shadow("b", current="1.0.0", target="1.1.0"))
    r = reconciler(fleet, [NOW])
    await r.reconcile_once()
    written = status(fleet)
    assert (written.selected, written.up_to_date, written.updating, written.limit) == (2, 1, 1, "1")
    assert written.observed_generation == 1
    assert fleet.writes.count("status web") == 1
    await r.reconcile_once()  # the node started in the first pass is still updating: same status
    assert fleet.writes.count("status web") == 1
    fleet.by_name["brs-b"] = shadow("b", current="1.1.0", target="1.1.0")
    await r.reconcile_once()
    assert (status(fleet).up_to_date, status(fleet).updating) == (2, 0)
    assert fleet.writes.count("status web") == 2


async def test_a_halt_is_announced_once_and_so_is_its_resume() -> None:
    failed = shadow("a", current="1.0.0", target="1.1.0", crashes=1, failed_at=NOW - timedelta(minutes=1))
    budget = {"maxFailures": 1, "window": "1h"}
    fleet = world(failed, shadow("b", current="1.0.0", target="1.1.0"), failureBudget=budget)
    clock = [NOW]
    r = reconciler(fleet, clock)
    await r.reconcile_once()
    await r.reconcile_once()
    assert fleet.policy_events == [("web", "PolicyHalted", True)]
    halt = status(fleet).halted
    assert halt is not None
    assert halt.failed_nodes == ["a"]
    assert fleet.by_name["brs-b"].spec.state is S.IDLE  # nothing starts while halted
    resumed = {c.RESUMED_AT_ANNOTATION: Timestamp.from_datetime(NOW).text}
    fleet.policy_objects["web"]["metadata"]["annotations"] = resumed
    clock[0] = NOW + timedelta(seconds=1)
    await r.reconcile_once()
    assert fleet.policy_events[1:] == [("web", "PolicyResumed", False)]
    assert status(fleet).halted is None
    assert fleet.by_name["brs-b"].spec.state is S.STAGED_AND_PERFORMED_UPDATE


async def test_a_new_leader_keeps_the_halt_its_predecessor_wrote() -> None:
    failed = shadow("a", current="1.0.0", target="1.1.0", crashes=1, failed_at=NOW - timedelta(minutes=1))
    fleet = world(
        failed, shadow("b", current="1.0.0", target="1.1.0"), failureBudget={"maxFailures": 1, "window": "1h"}
    )
    first = reconciler(fleet, [NOW])
    await first.reconcile_once()
    # The failure leaves the shadow (the agent reset it) before the next leader starts.
    fleet.by_name["brs-a"] = shadow("a", current="1.0.0", target="1.1.0")
    second = reconciler(fleet, [NOW + timedelta(minutes=5)])
    await second.reconcile_once()
    assert [s.spec.state for s in fleet.shadows()] == [S.IDLE, S.IDLE]
    assert fleet.policy_events == [("web", "PolicyHalted", True)]  # not announced again
    assert status(fleet).halted is not None


async def test_a_policy_deleted_and_created_again_starts_with_a_fresh_budget() -> None:
    failed = shadow("a", current="1.0.0", target="1.1.0", crashes=1, failed_at=NOW - timedelta(minutes=1))
    fleet = world(failed, failureBudget={"maxFailures": 1, "window": "1h"})
    r = reconciler(fleet, [NOW])
    await r.reconcile_once()
    assert status(fleet).halted is not None
    fleet.by_name["brs-a"] = shadow("a", current="1.0.0", target="1.1.0")
    recreated = policy("web", failureBudget={"maxFailures": 1, "window": "1h"})
    recreated["metadata"]["uid"] = "uid-web-2"
    fleet.policy_objects["web"] = recreated
    await r.reconcile_once()
    assert fleet.by_name["brs-a"].spec.state is S.STAGED_AND_PERFORMED_UPDATE


async def test_an_invalid_policy_is_reported_once_and_starts_nothing() -> None:
    fleet = world(shadow("a", current="1.0.0", target="1.1.0"), schedule={"timeZone": "Mars/Olympus_Mons"})
    r = reconciler(fleet, [NOW])
    await r.reconcile_once()
    await r.reconcile_once()
    assert fleet.policy_events == [("web", "PolicyInvalid", True)]
    assert status(fleet).state is not None
    assert status(fleet).state.value == "Invalid"
    assert fleet.by_name["brs-a"].spec.state is S.IDLE


async def test_a_held_node_is_reported_once_per_hold() -> None:
    fleet = world(shadow("a", current="1.0.0", target="1.1.0"))
    info = fleet.node_info["a"]
    fleet.node_info["a"] = NodeInfo(
        name="a", uid="u", labels=info.labels, annotations={c.HOLD_ANNOTATION: "debug"}
    )
    r = reconciler(fleet, [NOW])
    await r.reconcile_once()
    await r.reconcile_once()
    assert fleet.node_events == [("a", "NodeHeld")]
    assert status(fleet).held == 1
    fleet.node_info["a"] = NodeInfo(
        name="a", uid="u", labels=info.labels, annotations={c.HOLD_ANNOTATION: "other"}
    )
    await r.reconcile_once()
    assert fleet.node_events == [("a", "NodeHeld"), ("a", "NodeHeld")]


async def test_a_trigger_policy_records_where_it_starts_and_when_it_drains() -> None:
    fleet = world(shadow("a", current="1.1.0", target="1.1.0"), schedule={"cron": "0 0 11 * * * *"})
    lease = Lease()
    clock = [NOW]
    r = reconciler(fleet, clock, lease=lease)
    await r.reconcile_once()
    assert lease.pool_records == [("web", NOW)]  # a trigger before the policy was seen is not replayed
    clock[0] = NOW.replace(hour=11, second=5)
    await r.reconcile_once()  # fired at 11:00; nothing to start: drained
    assert lease.pool_records == [("web", NOW), ("web", NOW.replace(hour=11, second=5))]
    await r.reconcile_once()
    assert len(lease.pool_records) == 2
    # A new leader takes the record, and does not replay today's trigger.
    fleet.by_name["brs-late"] = shadow("late", current="1.0.0", target="1.1.0")
    fleet.node_info["late"] = NodeInfo(name="late", uid="u", labels={**LABELS, POOL: "web"})
    await reconciler(fleet, [NOW.replace(hour=12)], lease=lease).reconcile_once()
    assert fleet.by_name["brs-late"].spec.state is S.IDLE


async def test_marks_are_written_with_the_in_cycle_label_and_removed_with_it() -> None:
    marks = {"annotations": {"karpenter.sh/do-not-disrupt": "true"}}
    fleet = world(shadow("a", current="1.0.0", target="1.1.0"), duringUpdate=marks)
    r = reconciler(fleet, [NOW])
    await r.reconcile_once()
    assert fleet.writes[0] == "label a True"
    assert fleet.node_info["a"].annotations["karpenter.sh/do-not-disrupt"] == "true"
    fleet.by_name["brs-a"] = shadow("a", current="1.1.0", target="1.1.0")  # done
    await r.reconcile_once()
    assert "karpenter.sh/do-not-disrupt" not in fleet.node_info["a"].annotations
    assert c.IN_CYCLE_LABEL not in fleet.node_info["a"].labels


async def test_metrics_per_policy_and_for_the_environment() -> None:
    failed = shadow("a", current="1.0.0", target="1.1.0", crashes=1, failed_at=NOW - timedelta(minutes=1))
    fleet = world(
        failed, shadow("b", current="1.1.0", target="1.1.0"), failureBudget={"maxFailures": 1, "window": "1h"}
    )
    fleet.policy_objects["quiet"] = policy("quiet", paused=True)
    registry = CollectorRegistry()
    r = reconciler(fleet, [NOW], registry=registry)
    await r.reconcile_once()
    value = registry.get_sample_value
    assert value("brupop_policy_halted", {"policy": "web"}) == 1
    assert value("brupop_policy_failures", {"policy": "web"}) == 1
    assert value("brupop_policy_paused", {"policy": "quiet"}) == 1
    assert value("brupop_policy_nodes", {"policy": "web", "phase": "Failed"}) == 1
    assert value("brupop_policy_nodes", {"policy": "web", "phase": "UpToDate"}) == 1
    assert value("brupop_policy_nodes", {"policy": "(environment)", "phase": "UpToDate"}) == 0
    del fleet.policy_objects["quiet"]
    await r.reconcile_once()
    assert value("brupop_policy_paused", {"policy": "quiet"}) is None  # a deleted policy's series go


async def test_a_status_that_cannot_be_written_is_retried_but_holds_up_no_drain() -> None:
    fleet = world(shadow("a", current="1.1.0", target="1.1.0"), schedule={"cron": "0 0 11 * * * *"})
    fleet.refuse = {"status web"}
    lease = Lease()
    clock = [NOW]
    r = reconciler(fleet, clock, lease=lease)
    assert NOW < await r.reconcile_once() < NOW + timedelta(minutes=1)  # retried soon
    clock[0] = NOW.replace(hour=11, second=5)
    await r.reconcile_once()
    assert lease.pool_records[-1] == ("web", NOW.replace(hour=11, second=5))  # drained all the same


async def test_a_pass_with_a_change_waiting_leaves_the_reports_to_a_pass_at_most_a_second_later() -> None:
    fleet = world(shadow("a", current="1.1.0", target="1.1.0"), shadow("b", current="1.1.0", target="1.1.0"))
    registry = CollectorRegistry()
    clock = [NOW]
    r = reconciler(fleet, clock, registry=registry)
    await r.reconcile_once()
    assert status(fleet).state.value == "Active"
    fleet.policy_objects["web"]["spec"]["paused"] = True
    fleet.policy_objects["web"]["metadata"]["generation"] = 2
    paused = registry.get_sample_value("brupop_policy_paused", {"policy": "web"})
    r.poke()  # a change arrived during the pass: the next one follows at once
    clock[0] = NOW + timedelta(milliseconds=500)
    await r.reconcile_once()
    assert status(fleet).observed_generation == 1  # not written yet
    assert registry.get_sample_value("brupop_policy_paused", {"policy": "web"}) == paused == 0
    clock[0] = NOW + timedelta(seconds=1)  # changes keep arriving, but the reports waited a second
    await r.reconcile_once()
    assert (status(fleet).observed_generation, status(fleet).state.value) == (2, "Paused")
    assert registry.get_sample_value("brupop_policy_paused", {"policy": "web"}) == 1


async def test_a_pass_with_nothing_waiting_reports_at_once() -> None:
    fleet = world(shadow("a", current="1.1.0", target="1.1.0"))
    clock = [NOW]
    r = reconciler(fleet, clock)
    await r.reconcile_once()
    fleet.policy_objects["web"]["spec"]["paused"] = True
    fleet.policy_objects["web"]["metadata"]["generation"] = 2
    clock[0] = NOW + timedelta(milliseconds=10)
    await r.reconcile_once()
    assert status(fleet).state.value == "Paused"


async def test_a_halt_in_a_pass_that_reported_nothing_has_its_event_at_once_and_its_status_later() -> None:
    failed = shadow("a", current="1.0.0", target="1.1.0", crashes=1, failed_at=NOW - timedelta(minutes=1))
    budget = {"maxFailures": 1, "window": "1h"}
    fleet = world(shadow("a", current="1.0.0", target="1.0.0"), failureBudget=budget)
    clock = [NOW]
    r = reconciler(fleet, clock)
    await r.reconcile_once()
    fleet.by_name["brs-a"] = failed
    r.poke()
    await r.reconcile_once()  # halted here: its Event is every pass's (it is not a look at the fleet)
    assert fleet.policy_events == [("web", "PolicyHalted", True)]
    assert status(fleet).halted is None  # the status waits
    clock[0] = NOW + timedelta(seconds=1)
    await r.reconcile_once()
    assert status(fleet).halted is not None
    assert fleet.policy_events == [("web", "PolicyHalted", True)]
