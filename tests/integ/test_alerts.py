"""The chart's PrometheusRule under the real promtool (`promtool test rules`, built from the Prometheus Go
module): the rules as the real `helm template` renders them, fed with series shaped as the programs export
them (with the `namespace` label a ServiceMonitor's scrape adds), fire when they should, say what they
should, and stay quiet otherwise. No cluster needed.

promtool compares annotations exactly: the expected `summary` is written out (it is templated), the static
`description` is taken from the rendered rule."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from brupop.models.constants import NAMESPACE
from integ.build import prometheus_binaries
from integ.helm import OPERATOR_CHART, OPERATOR_RELEASE, find, render

pytestmark = pytest.mark.integration
Obj = dict[str, Any]
HERE = f'namespace="{NAMESPACE}"'
ELSEWHERE = 'namespace="other-brupop"'
# Shorter than the defaults, so a test's series stay short.
SETTINGS = {
    "failedWindow": "1h",
    "stalledFor": "30m",
    "downFor": "10m",
    "stuckFor": "5m",
    "windowLookback": "3h",
}


@functools.cache
def rule_groups() -> list[Obj]:
    values = {"prometheus": {"prometheusRule": {"enabled": True, **SETTINGS}}}
    objects = render(OPERATOR_CHART, release=OPERATOR_RELEASE, values=[values])
    groups: list[Obj] = find(objects, "PrometheusRule", "brupop")["spec"]["groups"]
    return groups


def alert(name: str, summary: str, *, severity: str = "warning", **labels: str) -> Obj:
    """Alert `name` firing as promtool expects it: its labels, the `summary` and the rule's description."""
    (rule,) = (r for group in rule_groups() for r in group["rules"] if r.get("alert") == name)
    return {
        "exp_labels": {"severity": severity, **labels},
        "exp_annotations": {"summary": summary, "description": rule["annotations"]["description"]},
    }


def promtool(tmp_path: Path, name: str, series: dict[str, str], expected: dict[str, list[Obj]]) -> None:
    """`promtool test rules` of the rules on `series` (one sample a minute): alert `name` fires as `expected`
    at each evaluation time (the alerts firing then), or the test fails with promtool's words."""
    checks = [{"alertname": name, "eval_time": at, "exp_alerts": alerts} for at, alerts in expected.items()]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups()}))
    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": name, "values": values} for name, values in series.items()],
                "alert_rule_test": checks,
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test))
    result = subprocess.run(
        [str(prometheus_binaries() / "promtool"), "test", "rules", "test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_here() -> None:
    names = {r["alert"] for group in rule_groups() for r in group["rules"]}
    assert names == {
        "BrupopNodeStuck",
        "BrupopPolicyHalted",
        "BrupopUpdateFailed",
        "BrupopUpdateWindowMissed",
        "BrupopUpdatesStalled",
        "BrupopControllerDown",
    }


def test_a_node_stuck_for_a_while_alerts_until_it_moves_on(tmp_path: Path) -> None:
    stuck = alert("BrupopNodeStuck", "2 Bottlerocket node(s) stuck in an update step")
    promtool(
        tmp_path,
        "BrupopNodeStuck",
        {
            f"brupop_nodes_stuck{{{HERE}, pod='controller-a'}}": "0x5 2x20 0x10",
            f"brupop_nodes_stuck{{{ELSEWHERE}, pod='controller-b'}}": "3x40",  # another brupop's
        },
        {
            "4m": [],
            "9m": [],  # not for 5m yet
            "15m": [stuck],
            "30m": [],
        },
    )


def test_a_halted_policy_alerts_by_name_until_it_is_resumed(tmp_path: Path) -> None:
    halted = alert(
        "BrupopPolicyHalted",
        "Update policy canary halted: its failure budget is spent",
        policy="canary",
    )
    promtool(
        tmp_path,
        "BrupopPolicyHalted",
        {
            f"brupop_policy_halted{{{HERE}, policy='canary'}}": "0x2 1x10 0x5",
            f"brupop_policy_halted{{{HERE}, policy='(environment)'}}": "0x20",
        },
        {
            "1m": [],
            "5m": [halted],
            "15m": [],
        },
    )


def test_a_failed_update_alerts_for_the_failed_window(tmp_path: Path) -> None:
    failed = alert("BrupopUpdateFailed", "A Bottlerocket node update failed")
    promtool(
        tmp_path,
        "BrupopUpdateFailed",
        {f"brupop_updates_failed_total{{{HERE}, pod='controller-a'}}": "0x10 1x80"},
        {
            "5m": [],
            "15m": [failed],
            "80m": [],  # over an hour ago
        },
    )


def test_a_window_that_closed_while_nodes_waited_and_none_started_alerts(tmp_path: Path) -> None:
    """Three pools share a window open from minute 60 to 180: `weekend`'s nodes waited through it and none
    started (the alert, for an hour after the close), `busy` started one early in the window (seen by the
    3 h lookback), `done` had nobody waiting."""
    missed = alert(
        "BrupopUpdateWindowMissed",
        "The update window of weekend closed while nodes waited and none started",
        policy="weekend",
    )
    window = "0x59 1x120 0x300"
    series = {}
    for pool, waiting, updating in (
        ("weekend", "3x480", "0x480"),
        ("busy", "3x480", "0x90 1x30 0x360"),
        ("done", "0x480", "0x480"),
    ):
        labels = f"{HERE}, pod='controller-a', policy='{pool}'"
        series[f"brupop_policy_window_open{{{labels}}}"] = window
        series[f"brupop_policy_nodes{{{labels}, phase='Waiting'}}"] = waiting
        series[f"brupop_policy_nodes{{{labels}, phase='Updating'}}"] = updating
    promtool(
        tmp_path,
        "BrupopUpdateWindowMissed",
        series,
        {
            "30m": [],  # never opened
            "170m": [],  # still open
            "190m": [missed],
            "235m": [missed],
            "245m": [],  # an hour on
        },
    )


def test_nodes_updating_with_none_completing_alert_as_stalled(tmp_path: Path) -> None:
    stalled = alert(
        "BrupopUpdatesStalled", "Bottlerocket nodes have been updating for 30m without one completing"
    )
    promtool(
        tmp_path,
        "BrupopUpdatesStalled",
        {
            f"brupop_nodes_updating{{{HERE}, pod='controller-a'}}": "1x120",
            f"brupop_updates_completed_total{{{HERE}, pod='controller-a'}}": "0x40 1x80",
        },
        {
            "20m": [],
            "38m": [stalled],
            "50m": [],  # one completed
        },
    )


def test_a_controller_not_scraped_alerts_as_down(tmp_path: Path) -> None:
    down = alert("BrupopControllerDown", "No brupop controller has been scraped for 10m", severity="critical")
    promtool(
        tmp_path,
        "BrupopControllerDown",
        {f"up{{{HERE}, service='brupop-controller-server', pod='controller-a'}}": "1x5 0x30"},
        {
            "5m": [],
            "20m": [down],
        },
    )
