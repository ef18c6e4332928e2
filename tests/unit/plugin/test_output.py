import json
from datetime import timedelta

import yaml

from brupop.models import constants as c
from brupop.plugin.output import as_json, as_text, as_yaml, table
from brupop.plugin.report import report
from tests.unit.plugin.fleet import NOW, history, node, policy, shadow, snapshot


def fleet() -> object:
    took = history(("Succeeded", "1.1.0", timedelta(hours=1), timedelta(minutes=12)))
    return report(
        snapshot(
            [
                node("a", labels={"pool": "w"}),
                node("b", labels={"pool": "w"}, annotations={c.HOLD_ANNOTATION: "x"}),
            ],
            [shadow("a", current="1.1.0", annotations={c.HISTORY_ANNOTATION: took}), shadow("b")],
            [policy("w")],
        ),
        now=NOW,
    )


def test_json_has_stable_keys_the_structured_reason_and_the_pool_status_as_the_controller_writes_it() -> None:
    document = json.loads(as_json(fleet()))  # type: ignore[arg-type]
    assert (document["kind"], document["version"], document["time"], document["namespace"]) == (
        "BrupopStatus",
        1,
        "2026-03-05T12:00:00Z",
        c.NAMESPACE,
    )
    a, b = document["nodes"]
    assert a["lastCycle"]["outcome"] == "Succeeded"
    assert set(a) == {
        "node",
        "policy",
        "phase",
        "why",
        "state",
        "targetState",
        "version",
        "target",
        "reason",
        "controllerVerdict",
        "stuck",
        "stepSince",
        "cordonedBy",
        "held",
        "retryRequested",
        "lastCycle",
    }
    assert b["reason"] == {"code": "Held", "reason": "x", "message": "held by annotation: x"}
    (pool,) = document["policies"]
    assert pool["status"]["selected"] == 2
    assert pool["status"]["held"] == 1
    assert (pool["perNodeSeconds"], pool["eta"], pool["etaNote"], pool["timeZone"]) == (
        720.0,
        "2026-03-05T12:12:00Z",
        "1 left, 1 at a time",
        "UTC",
    )
    assert yaml.safe_load(as_yaml(fleet())) == document  # type: ignore[arg-type]


def test_text_is_two_tables_with_the_last_update_when_there_is_history() -> None:
    text = as_text(fleet())  # type: ignore[arg-type]
    assert text == (
        "NODE  POLICY  STATE  VERSION  TARGET  LAST UPDATE                          STATUS\n"
        "a     w       Idle   1.1.0    1.1.0   Succeeded 1.1.0 48 min ago (12 min)  up to date\n"
        "b     w       Idle   1.0.0    1.1.0   -                                    held by annotation: x (release: kubectl brupop release b)\n"
        "\n"
        "POLICY  STATE   DONE  UPDATING  FAILED  HELD  LIMIT      WINDOW  PER NODE  ETA\n"
        "w       Active  1/2   0         0       1     unlimited  Open    12 min    12:12 UTC (in 12 min); 1 left, 1 at a time\n"
    )


def test_an_empty_fleet_and_notes() -> None:
    text = as_text(report(snapshot([], [], served=False), now=NOW))
    assert text.startswith(f"No nodes are opted in to brupop (namespace {c.NAMESPACE}).\n\nPOLICY")
    assert text.endswith(
        "Notes:\n  - the UpdatePolicy CRD is not installed: only the controller's settings apply "
        "(upgrade the CRD chart, charts/bottlerocket-shadow, to use policies)\n"
    )


def test_tables_pad_columns_and_trim_line_ends() -> None:
    assert table(["A", "LONGER"], [["xyz", ""], ["", "b"]]) == "A    LONGER\nxyz\n     b"
