"""Update policies for tests: good ones the API server and the reader must accept, and bad ones both must
refuse, each with the field the refusal must name (as the API server prints it) and a fragment of the
message. The unit tests check the reader against this table, the integration tests the real API server, so
the two cannot disagree unnoticed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

README = Path(__file__).resolve().parent.parent / "README.md"

GOOD: dict[str, dict[str, Any]] = {
    "everything": {"nodeSelector": {}},
    "weekend-workers": {
        "nodeSelector": {
            "matchLabels": {"example.com/pool": "workers"},
            "matchExpressions": [
                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a", "b"]},
                {"key": "example.com/canary", "operator": "DoesNotExist"},
            ],
        },
        "priority": 10,
        "maxConcurrent": "10%",
        "schedule": {"cron": "* * 2-4 * * Sat,Sun *", "timeZone": "Europe/Berlin"},
    },
    "freeze": {
        "nodeSelector": {},
        "schedule": {
            "blackouts": [
                {"start": "2025-12-20", "end": "2026-01-04", "reason": "year-end change freeze"},
                {"start": "2026-02-01T18:00", "end": "2026-02-01T22:30:00"},
                {"start": "2026-03-01T10:00", "end": "2026-03-01"},
                {"start": "0002-01-01", "end": "9998-12-31T23:59:59", "reason": "the furthest accepted"},
            ]
        },
    },
    "karpenter": {
        "nodeSelector": {"matchExpressions": [{"key": "karpenter.sh/nodepool", "operator": "Exists"}]},
        "maxConcurrent": 2,
        "paused": False,
        "failureBudget": {"maxFailures": 2, "window": "1h"},
        "stuckAfter": "45m",
        "duringUpdate": {
            "annotations": {"karpenter.sh/do-not-disrupt": "true"},
            "labels": {"example.com/updating": "true"},
            "taints": [{"key": "example.com/updating", "effect": "PreferNoSchedule"}],
        },
    },
    "stop-everything": {"nodeSelector": {}, "paused": True, "priority": 1000},
    "unlimited-shorthand": {"nodeSelector": {}, "maxConcurrent": "unlimited", "schedule": {"cron": "@daily"}},
    "percent-budget": {"nodeSelector": {}, "failureBudget": {"maxFailures": "5%", "window": "24h"}},
    "gates": {
        "nodeSelector": {},
        "gates": {
            "prometheus": {
                "url": "https://prometheus.monitoring.svc:9091/prom",
                "query": 'ALERTS{alertstate="firing",severity="critical"}',
                "bearerTokenFile": "/var/run/secrets/prometheus/token",
                "caFile": "/etc/brupop/prometheus-ca.crt",
                "timeout": "5s",
                "failOpen": True,
            },
            "pods": [
                {"selector": {"matchLabels": {"app": "backup"}}, "scope": "Node"},
                {
                    "selector": {
                        "matchExpressions": [{"key": "example.com/maintenance", "operator": "Exists"}]
                    }
                },
            ],
            "cluster": {"maxUnhealthyNodes": "10%"},
        },
    },
    "gates-count": {"nodeSelector": {}, "gates": {"cluster": {"maxUnhealthyNodes": 0}}},
    "verification": {
        "nodeSelector": {},
        "verification": {
            "timeout": "15m",
            "workloads": True,
            "workloadTolerance": "10%",
            "prometheus": {
                "url": "http://prometheus-operated.monitoring:9090",
                "query": 'sum(rate(http_requests_total{code=~"5.."}[5m]))',
                "expect": "< 0.05",
            },
            "soak": "5m",
        },
    },
    "verification-defaults": {"nodeSelector": {}, "verification": {}},
    "verification-expect-present": {
        "nodeSelector": {},
        "verification": {
            "workloads": False,
            "workloadTolerance": 1,
            "prometheus": {"url": "http://p:9090", "query": "up", "expect": "NonEmpty"},
        },
    },
}


def readme_examples() -> dict[str, dict[str, Any]]:
    """The UpdatePolicy examples of the README, by name, so what users copy is tested like the rest."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.DOTALL)
    found = [yaml.safe_load(block) for block in blocks]
    return {
        f"readme-{doc['metadata']['name']}": doc["spec"] for doc in found if doc.get("kind") == "UpdatePolicy"
    }


GOOD.update(readme_examples())


@dataclass(frozen=True)
class Bad:
    spec: dict[str, Any]
    field: str
    """The path the API server names, e.g. spec.schedule.blackouts[0].end."""
    fragment: str
    """Part of the message both the API server and the reader give."""
    same_message: bool = True
    """Whether the reader's message is the API server's (CEL rules); schema checks word it differently."""

    @property
    def dotted(self) -> str:
        """The reader's name for the same place: spec.schedule.blackouts.0.end."""
        return re.sub(r"\[(\d+)\]", r".\1", self.field)


def _with(**fields: Any) -> dict[str, Any]:
    return {"nodeSelector": {}, **fields}


def _prometheus_gate(**fields: Any) -> dict[str, Any]:
    """A policy with a prometheus gate, `fields` changed (None: left out)."""
    gate = {"url": "http://prometheus:9090", "query": "ALERTS", **fields}
    return _with(gates={"prometheus": {k: v for k, v in gate.items() if v is not None}})


BAD: dict[str, Bad] = {
    "no-selector": Bad({}, "spec.nodeSelector", "Required value", same_message=False),
    "label-key": Bad(
        {"nodeSelector": {"matchLabels": {"Bad Key": "x"}}},
        "spec.nodeSelector.matchLabels",
        "every key must be a qualified name",
    ),
    "label-value": Bad(
        {"nodeSelector": {"matchLabels": {"pool": "bad value!"}}},
        "spec.nodeSelector.matchLabels.pool",
        "match",
        same_message=False,
    ),
    "expression-key": Bad(
        {"nodeSelector": {"matchExpressions": [{"key": "-pool", "operator": "Exists"}]}},
        "spec.nodeSelector.matchExpressions[0].key",
        "match",
        same_message=False,
    ),
    "in-without-values": Bad(
        {"nodeSelector": {"matchExpressions": [{"key": "pool", "operator": "In"}]}},
        "spec.nodeSelector.matchExpressions[0].values",
        "In and NotIn need at least one value",
    ),
    "exists-with-values": Bad(
        {"nodeSelector": {"matchExpressions": [{"key": "pool", "operator": "Exists", "values": ["a"]}]}},
        "spec.nodeSelector.matchExpressions[0].values",
        "Exists and DoesNotExist take none",
    ),
    "unknown-operator": Bad(
        {"nodeSelector": {"matchExpressions": [{"key": "pool", "operator": "Near", "values": ["a"]}]}},
        "spec.nodeSelector.matchExpressions[0].operator",
        "Near",
        same_message=False,
    ),
    "percent-over-100": Bad(_with(maxConcurrent="150%"), "spec.maxConcurrent", "0% to 100%"),
    "negative-count": Bad(_with(maxConcurrent=-2), "spec.maxConcurrent", "0 or more"),
    "count-as-string": Bad(_with(maxConcurrent="3"), "spec.maxConcurrent", "must be a count"),
    "percent-leading-zero": Bad(_with(maxConcurrent="07%"), "spec.maxConcurrent", "must be a count"),
    "count-too-high": Bad(_with(maxConcurrent=100001), "spec.maxConcurrent", "must be a count"),
    "budget-leading-zero": Bad(
        _with(failureBudget={"maxFailures": "05%", "window": "1h"}),
        "spec.failureBudget.maxFailures",
        "1% to 100%",
    ),
    "priority-too-high": Bad(_with(priority=5000), "spec.priority", "1000", same_message=False),
    "paused-not-bool": Bad(_with(paused="yes"), "spec.paused", "boolean", same_message=False),
    "cron-fields": Bad(_with(schedule={"cron": "* * *"}), "spec.schedule.cron", "must have 6 or 7 fields"),
    "time-zone-shape": Bad(
        _with(schedule={"timeZone": "Europe/Ber lin"}), "spec.schedule.timeZone", "match", same_message=False
    ),
    "blackout-backwards": Bad(
        _with(schedule={"blackouts": [{"start": "2025-12-20", "end": "2025-12-19"}]}),
        "spec.schedule.blackouts[0].end",
        "end must be after start",
    ),
    "blackout-empty": Bad(
        _with(schedule={"blackouts": [{"start": "2025-12-20T10:00", "end": "2025-12-20T10:00:00"}]}),
        "spec.schedule.blackouts[0].end",
        "end must be after start",
    ),
    "blackout-not-a-date": Bad(
        _with(schedule={"blackouts": [{"start": "2025-02-30", "end": "2025-03-01"}]}),
        "spec.schedule.blackouts[0].start",
        "must be a real date",
    ),
    "blackout-past-9998": Bad(
        _with(schedule={"blackouts": [{"start": "2026-01-01", "end": "9999-12-31"}]}),
        "spec.schedule.blackouts[0].end",
        "in the years 0002 to 9998",
    ),
    "blackout-before-0002": Bad(
        _with(schedule={"blackouts": [{"start": "0001-01-01", "end": "2026-01-01"}]}),
        "spec.schedule.blackouts[0].start",
        "in the years 0002 to 9998",
    ),
    "blackout-words": Bad(
        _with(schedule={"blackouts": [{"start": "2025-03-01", "end": "tomorrow"}]}),
        "spec.schedule.blackouts[0].end",
        "must be a real date",
    ),
    "budget-zero": Bad(
        _with(failureBudget={"maxFailures": 0, "window": "1h"}),
        "spec.failureBudget.maxFailures",
        "1 or more",
    ),
    "budget-zero-percent": Bad(
        _with(failureBudget={"maxFailures": "0%", "window": "1h"}),
        "spec.failureBudget.maxFailures",
        "1% to 100%",
    ),
    "budget-window-zero": Bad(
        _with(failureBudget={"maxFailures": 1, "window": "0h0m"}),
        "spec.failureBudget.window",
        "positive duration",
    ),
    "budget-without-window": Bad(
        _with(failureBudget={"maxFailures": 1}), "spec.failureBudget.window", "Required", same_message=False
    ),
    "stuck-days": Bad(_with(stuckAfter="1d"), "spec.stuckAfter", "positive duration"),
    "during-update-brupop-label": Bad(
        _with(duringUpdate={"labels": {"brupop.bottlerocket.aws/x": "y"}}),
        "spec.duringUpdate.labels",
        "are brupop's own",
    ),
    "during-update-opt-in-label": Bad(
        _with(duringUpdate={"labels": {"bottlerocket.aws/updater-interface-version": "2.0.0"}}),
        "spec.duringUpdate.labels",
        "are brupop's own",
    ),
    "during-update-no-execute": Bad(
        _with(duringUpdate={"taints": [{"key": "a", "effect": "NoExecute"}]}),
        "spec.duringUpdate.taints[0].effect",
        "NoExecute",
        same_message=False,
    ),
    "during-update-twice": Bad(
        _with(
            duringUpdate={
                "taints": [
                    {"key": "a", "effect": "NoSchedule"},
                    {"key": "a", "effect": "NoSchedule", "value": "x"},
                ]
            }
        ),
        "spec.duringUpdate.taints",
        "each key and effect may appear only once",
    ),
    "unknown-field": Bad(_with(maxConcurent=1), "spec.maxConcurent", "unknown field", same_message=False),
    "gate-url-no-scheme": Bad(
        _prometheus_gate(url="prometheus:9090"), "spec.gates.prometheus.url", "match", same_message=False
    ),
    "gate-url-query-string": Bad(
        _prometheus_gate(url="http://p:9090/?x=1"), "spec.gates.prometheus.url", "match", same_message=False
    ),
    "gate-query-blank": Bad(
        _prometheus_gate(query="  "), "spec.gates.prometheus.query", "match", same_message=False
    ),
    "gate-query-missing": Bad(
        _prometheus_gate(query=None), "spec.gates.prometheus.query", "Required", same_message=False
    ),
    "gate-timeout-too-long": Bad(
        _prometheus_gate(timeout="10m"), "spec.gates.prometheus.timeout", "at most 5m"
    ),
    "gate-timeout-zero": Bad(_prometheus_gate(timeout="0s"), "spec.gates.prometheus.timeout", "positive"),
    "gate-token-relative": Bad(
        _prometheus_gate(bearerTokenFile="token"),
        "spec.gates.prometheus.bearerTokenFile",
        "match",
        same_message=False,
    ),
    "gate-fail-open-word": Bad(
        _prometheus_gate(failOpen="yes"), "spec.gates.prometheus.failOpen", "boolean", same_message=False
    ),
    "pods-empty-selector": Bad(
        _with(gates={"pods": [{"selector": {}}]}),
        "spec.gates.pods[0].selector",
        "an empty selector would match every pod",
    ),
    "pods-scope": Bad(
        _with(gates={"pods": [{"selector": {"matchLabels": {"a": "b"}}, "scope": "Namespace"}]}),
        "spec.gates.pods[0].scope",
        "Namespace",
        same_message=False,
    ),
    "cluster-over-100": Bad(
        _with(gates={"cluster": {"maxUnhealthyNodes": "150%"}}),
        "spec.gates.cluster.maxUnhealthyNodes",
        "0% to 100%",
    ),
    "cluster-negative": Bad(
        _with(gates={"cluster": {"maxUnhealthyNodes": -1}}),
        "spec.gates.cluster.maxUnhealthyNodes",
        "0 or more",
    ),
    "cluster-without-limit": Bad(
        _with(gates={"cluster": {}}), "spec.gates.cluster.maxUnhealthyNodes", "Required", same_message=False
    ),
    "expect-words": Bad(
        _with(verification={"prometheus": {"url": "http://p:9090", "query": "up", "expect": "about 1"}}),
        "spec.verification.prometheus.expect",
        "must be Empty, NonEmpty or a comparison",
    ),
    "expect-lowercase": Bad(
        _with(verification={"prometheus": {"url": "http://p:9090", "query": "up", "expect": "empty"}}),
        "spec.verification.prometheus.expect",
        "must be Empty, NonEmpty or a comparison",
    ),
    "tolerance-as-string": Bad(
        _with(verification={"workloadTolerance": "1"}),
        "spec.verification.workloadTolerance",
        "must be a count",
    ),
    "soak-words": Bad(_with(verification={"soak": "5 min"}), "spec.verification.soak", "positive duration"),
    "verification-timeout-days": Bad(
        _with(verification={"timeout": "1d"}), "spec.verification.timeout", "positive duration"
    ),
}
