import json
from datetime import timedelta

import pytest

from brupop.models import constants as c
from brupop.models.policy import PolicyState
from brupop.plugin.facts import ControllerFacts, ShadowFacts, Snapshot
from brupop.plugin.report import NodeLine, Phase, Report, controller_defaults, report, retry_waived
from brupop.policy.admission import Code
from brupop.policy.drain import CORDON_ANNOTATION
from tests.unit.plugin.fleet import NOW, history, node, policy, shadow, snapshot, ts


def run(snap: Snapshot) -> Report:
    return report(snap, now=NOW)


def lines(snap: Snapshot) -> dict[str, NodeLine]:
    return {line.node: line for line in run(snap).nodes}


def test_nodes_that_cannot_be_judged_say_why() -> None:
    found = lines(
        snapshot(
            [node("no-shadow"), node("no-status"), node("opted-out", opted_in=False), node("bad")],
            [
                shadow("no-status", state=None),
                shadow("opted-out"),
                shadow("gone"),
                ShadowFacts(
                    name="brs-bad", node="bad", shadow=None, problem="status.crash_count: -1 is outside"
                ),
            ],
        )
    )
    assert {n: (line.phase, line.why) for n, line in found.items()} == {
        "bad": (Phase.UNKNOWN, "its shadow does not read: status.crash_count: -1 is outside"),
        "gone": (Phase.LEAVING, "its Node is gone; the controller deletes this shadow"),
        "no-shadow": (
            Phase.UNKNOWN,
            "no shadow yet: its agent has not registered (is the agent pod running on it?)",
        ),
        "no-status": (Phase.UNKNOWN, "its agent has not reported yet"),
        "opted-out": (
            Phase.LEAVING,
            "no longer opted in (label bottlerocket.aws/updater-interface-version); the controller deletes its shadow",
        ),
    }


def test_nodes_in_a_cycle_updating_failed_stuck_held_and_cordoned() -> None:
    held = {c.HOLD_ANNOTATION: "tests", CORDON_ANNOTATION: "brupop"}
    found = lines(
        snapshot(
            [
                node("step", labels={"pool": "p"}, annotations=held, unschedulable=True),
                node("late", labels={"pool": "p"}),
                node("failed"),
            ],
            [
                shadow(
                    "step",
                    spec="RebootedIntoUpdate",
                    state="StagedAndPerformedUpdate",
                    since=NOW - timedelta(minutes=3),
                ),
                shadow(
                    "late",
                    spec="RebootedIntoUpdate",
                    state="StagedAndPerformedUpdate",
                    since=NOW - timedelta(minutes=50),
                ),
                shadow(
                    "failed",
                    spec="MonitoringUpdate",
                    state="ErrorReset",
                    crashes=1,
                    failed_at=NOW - timedelta(minutes=1),
                ),
            ],
            [policy("p", stuckAfter="45m")],
        )
    )
    assert found["step"].phase is Phase.UPDATING
    assert found["step"].why == (
        "updating to 1.1.0: StagedAndPerformedUpdate -> RebootedIntoUpdate, step began 3 min ago; "
        "held: it finishes this cycle, then waits"
    )
    assert (found["step"].cordoned_by, found["step"].held) == ("brupop", "tests")
    assert found["late"].phase is Phase.STUCK
    assert found["late"].why == (
        "stuck: not RebootedIntoUpdate after 50 min (stuckAfter 45m): StagedAndPerformedUpdate -> RebootedIntoUpdate"
    )
    assert found["late"].stuck is not None
    assert found["failed"].phase is Phase.FAILED
    assert found["failed"].why == (
        "update to 1.1.0 failed (crash count 1); back to Idle, then back-off until 12:02 UTC (in 2 min)"
    )


@pytest.mark.parametrize(
    ("who", "note"),
    [
        ("admin", "; cordoned by an administrator (brupop leaves that cordon in place)"),
        ("brupop", "; still cordoned by brupop (its agent uncordons an idle node)"),
        (None, "; cordoned, not by brupop"),
    ],
)
def test_idle_nodes_say_who_cordoned_them(who: str | None, note: str) -> None:
    annotations = {} if who is None else {CORDON_ANNOTATION: who}
    found = lines(
        snapshot([node("n", annotations=annotations, unschedulable=True)], [shadow("n", current="1.1.0")])
    )
    assert found["n"].why == "up to date" + note
    assert found["n"].cordoned_by == (who or "unknown")


def test_a_node_behind_the_fleet_whose_host_offers_nothing_is_waiting_for_its_wave() -> None:
    found = lines(
        snapshot(
            [node("a"), node("b"), node("c")],
            [
                shadow("a", current="1.2.0", target="1.2.0"),
                shadow("b", target="1.0.0"),
                shadow("c", current="x", target="x"),
            ],
        )
    )
    assert (found["a"].phase, found["a"].why) == (Phase.UP_TO_DATE, "up to date")
    assert (found["b"].phase, found["b"].why) == (
        Phase.NO_UPDATE_OFFERED,
        "host offers no update yet (Bottlerocket update waves; 1.2.0 is out)",
    )


def test_the_controllers_own_verdict_shows_when_nothing_else_holds_the_node() -> None:
    verdict = '{"reason": "GateBlocked", "message": "blocked: alert KubeNodeNotReady firing", "since": "%s"}'
    annotations = {c.WAITING_ANNOTATION: verdict % ts(NOW - timedelta(minutes=4))}
    found = lines(
        snapshot(
            [node("g"), node("h", annotations={c.HOLD_ANNOTATION: "x"})],
            [
                shadow("g", annotations=annotations),
                shadow("h", annotations=annotations),
            ],
        )
    )
    assert (found["g"].phase, found["g"].why) == (
        Phase.WAITING,
        "blocked: alert KubeNodeNotReady firing (since 4 min ago)",
    )
    assert found["g"].controller is not None
    assert found["g"].controller.reason == "GateBlocked"
    assert found["h"].reason is not None
    assert found["h"].reason.code is Code.HELD, "what the cluster says comes first"


def test_a_retry_waives_exactly_the_failure_it_names() -> None:
    failed = NOW - timedelta(minutes=1)
    waived = shadow("a", crashes=2, failed_at=failed, annotations={c.RETRY_ANNOTATION: ts(failed)})
    stale = shadow(
        "b", crashes=2, failed_at=failed, annotations={c.RETRY_ANNOTATION: ts(failed - timedelta(hours=1))}
    )
    assert retry_waived(waived)
    assert not retry_waived(stale)
    assert not retry_waived(shadow("c"))
    found = lines(snapshot([node("a"), node("b")], [waived, stale]))
    assert (found["a"].phase, found["a"].retry_requested) == (Phase.STARTING, True)
    assert found["a"].why == "starts on the controller's next pass (back-off waived by kubectl brupop retry)"
    assert found["b"].reason is not None
    assert found["b"].reason.code is Code.BACKING_OFF


def test_halts_count_until_resumed_at_or_the_budget_is_gone() -> None:
    since = NOW - timedelta(minutes=30)
    halt = {"since": ts(since), "failedNodes": ["x"], "message": "spent"}
    budget = {"maxFailures": 1, "window": "1h"}
    policies = [
        policy("halted", failureBudget=budget, status={"halted": halt}),
        policy(
            "resumed",
            failureBudget=budget,
            status={"halted": halt},
            annotations={c.RESUMED_AT_ANNOTATION: ts(since)},
        ),
        policy("no-budget", status={"halted": halt}),
    ]
    nodes = [node(name, labels={"pool": name}) for name in ("halted", "resumed", "no-budget")]
    found = lines(snapshot(nodes, [shadow(n.name) for n in nodes], policies))
    assert found["halted"].reason is not None
    assert found["halted"].reason.code is Code.HALTED
    assert found["resumed"].phase is Phase.STARTING
    assert found["no-budget"].phase is Phase.STARTING


def test_pools_count_their_nodes_and_estimate_the_rest_from_history() -> None:
    took = history(
        ("Succeeded", "1.1.0", timedelta(hours=2), timedelta(minutes=10)),
        ("Failed", "1.1.0", timedelta(hours=1), timedelta(minutes=1)),
    )
    more = history(("Succeeded", "1.1.0", timedelta(hours=3), timedelta(minutes=20)))
    nodes = [node(f"w{i}", labels={"pool": "w"}) for i in range(5)]
    shadows = [
        shadow("w0", current="1.1.0", annotations={c.HISTORY_ANNOTATION: took}),
        shadow("w1", current="1.1.0", annotations={c.HISTORY_ANNOTATION: more}),
        shadow("w2", spec="StagedAndPerformedUpdate", since=NOW),
        shadow("w3"),
        shadow("w4"),
    ]
    done = run(snapshot(nodes, shadows, [policy("w", maxConcurrent=2)]))
    (pool,) = [p for p in done.pools if p.name == "w"]
    assert (pool.status.selected, pool.status.up_to_date, pool.status.updating, pool.status.limit) == (
        5,
        2,
        1,
        "2",
    )
    assert (pool.per_node, pool.observed) == (timedelta(minutes=15), 2)
    assert (pool.eta, pool.eta_note) == (NOW + timedelta(minutes=30), "3 left in 2 waves")
    assert [p.name for p in done.pools] == ["w"], "an empty default pool is left out once policies exist"
    assert {line.node: line.last_cycle.outcome.value for line in done.nodes if line.last_cycle} == {
        "w0": "Failed",
        "w1": "Succeeded",
    }


@pytest.mark.parametrize(
    ("spec", "note"),
    [
        ({"paused": True}, "none while paused"),
        ({"maxConcurrent": 0}, "its limit is 0: nothing starts"),
        ({"schedule": {"cron": "* * * 1 1 * 2025"}}, "none while invalid"),
    ],
)
def test_no_eta_when_nothing_can_start(spec: dict[str, object], note: str) -> None:
    took = history(("Succeeded", "1.1.0", timedelta(hours=2), timedelta(minutes=10)))
    snap = snapshot(
        [node("a", labels={"pool": "p"})],
        [shadow("a", annotations={c.HISTORY_ANNOTATION: took})],
        [policy("p", **spec)],
    )
    (pool,) = run(snap).pools
    assert (pool.eta, pool.eta_note) == (None, note)


def test_the_eta_starts_when_the_window_opens() -> None:
    took = history(("Succeeded", "1.1.0", timedelta(hours=2), timedelta(minutes=10)))
    window = {"cron": "* * 3 * * * *", "timeZone": "Europe/Berlin"}
    snap = snapshot(
        [node("a", labels={"pool": "p"})],
        [shadow("a", annotations={c.HISTORY_ANNOTATION: took})],
        [policy("p", schedule=window)],
    )
    (pool,) = run(snap).pools
    assert pool.status.state is PolicyState.ACTIVE
    opens = NOW.replace(day=6, hour=2)  # 03:00 in Berlin
    assert (pool.eta, pool.eta_note) == (opens + timedelta(minutes=10), "1 left, 1 at a time")
    done = snapshot([node("a")], [shadow("a", current="1.1.0")])
    assert run(done).pools[0].eta_note == "done"


def test_notes_say_what_the_report_could_not_know_or_what_looks_wrong() -> None:
    bad = shadow("a", annotations={c.WAITING_ANNOTATION: "{", c.HISTORY_ANNOTATION: '{"cycles": 3}'})
    policies = [
        policy(c.PAUSE_ALL_POLICY, nodeSelector={}, priority=-1000, paused=True),
        policy("late"),
        policy("zone", schedule={"timeZone": "Mars/Olympus"}),
        policy("resume", annotations={c.RESUMED_AT_ANNOTATION: "yesterday"}),
    ]
    notes = run(snapshot([node("a")], [bad], policies, env={"MAX_CONCURRENT_UPDATE": "many"})).notes
    assert notes[0] == "the controller's MAX_CONCURRENT_UPDATE='many' is not valid; it cannot run"
    assert notes[1].startswith("brs-a: annotation brupop.bottlerocket.aws/waiting does not read (")
    assert notes[2].startswith("brs-a: annotation brupop.bottlerocket.aws/history does not read (")
    assert notes[3].startswith(
        "policy resume: brupop.bottlerocket.aws/resumed-at='yesterday' is not an RFC 3339"
    )
    assert notes[4].startswith("policy zone: spec.schedule.timeZone: 'Mars/Olympus' is not a time zone this")
    assert notes[5] == (
        "brupop-pause-all is in place but late, resume, zone not paused (created after `kubectl brupop pause`?); "
        "`kubectl brupop pause` pauses them too"
    )
    without = run(snapshot([node("a")], [shadow("a")], served=False)).notes
    assert without == (
        "the UpdatePolicy CRD is not installed: only the controller's settings apply (upgrade the CRD chart, "
        "charts/bottlerocket-shadow, to use policies)",
    )


def test_the_controllers_settings_come_from_its_deployment_or_the_charts_defaults() -> None:
    unknown, notes = controller_defaults(ControllerFacts(None, "no Deployment"), now=NOW)
    assert (unknown.max_concurrent, unknown.schedule.expression.text, unknown.schedule.zone.key) == (
        1,
        "* * * * * * *",
        "UTC",
    )
    assert notes == ["no Deployment"]
    legacy, notes = controller_defaults(
        ControllerFacts(
            {"MAX_CONCURRENT_UPDATE": "3", "UPDATE_WINDOW_START": "1:0:0", "UPDATE_WINDOW_STOP": "2:0:0"}
        ),
        now=NOW,
    )
    assert (legacy.max_concurrent, legacy.schedule.expression.text, notes) == (3, "* * 1-2 * * * *", [])
    broken, notes = controller_defaults(
        ControllerFacts({"MAX_CONCURRENT_UPDATE": "1", "SCHEDULER_TIMEZONE": "Mars"}), now=NOW
    )
    assert broken.schedule.zone.key == "UTC"
    assert notes == [
        "the controller's schedule is not valid (SCHEDULER_TIMEZONE='Mars': not a known IANA time zone name "
        "(e.g. UTC, Europe/Paris)); it cannot run"
    ]


@pytest.mark.parametrize(
    ("step", "code", "message", "phase"),
    [
        ("MonitoringUpdate", "Verifying", "verifying: waiting for workloads web (2/3 ready)", "Verifying"),
        ("MonitoringUpdate", "Soaking", "soaking until 12:30 UTC, the gates still checked", "Verifying"),
        ("StagedAndPerformedUpdate", "GateBlocked", "blocked: alert KubeNodeNotReady firing", "Waiting"),
    ],
)
def test_a_node_held_at_a_checkpoint_says_why_not_updating_or_stuck(
    step: str, code: str, message: str, phase: str
) -> None:
    """The controller holds a node at a checkpoint (a gate before its cordon; verification and soak once
    updated) and says so in the waiting annotation; the step's own deadline does not apply to a held
    node."""
    said = {"reason": code, "message": message, "since": ts(NOW - timedelta(minutes=5))}
    found = lines(
        snapshot(
            [node("soak", labels={"pool": "p"}, unschedulable=False)],
            [
                shadow(
                    "soak",
                    current="1.1.0",
                    spec=step,
                    state=step,
                    since=NOW - timedelta(minutes=50),
                    annotations={c.WAITING_ANNOTATION: json.dumps(said)},
                )
            ],
            [policy("p", stuckAfter="45m")],
        )
    )["soak"]
    assert (found.phase.value, found.stuck) == (phase, None)
    assert found.why == f"{message} (since 5 min ago)"
    assert found.controller is not None
    assert found.controller.reason == code
