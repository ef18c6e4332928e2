"""Snapshots for the plugin's unit tests, as the cluster would send them, each test stating only what
matters to it."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from brupop.models import constants as c
from brupop.models.timestamp import Timestamp
from brupop.plugin.facts import ControllerFacts, NodeFacts, ShadowFacts, Snapshot, shadow_facts

NOW = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)  # a Thursday
OPTED_IN = {c.UPDATER_INTERFACE_LABEL: c.UPDATER_INTERFACE_VERSION}


def ts(moment: datetime) -> str:
    return Timestamp.from_datetime(moment).text


def node(
    name: str,
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    unschedulable: bool = False,
    opted_in: bool = True,
) -> NodeFacts:
    return NodeFacts(
        name, {**(OPTED_IN if opted_in else {}), **(labels or {})}, dict(annotations or {}), unschedulable
    )


def shadow_obj(
    name: str,
    *,
    current: str = "1.0.0",
    target: str = "1.1.0",
    state: str | None = "Idle",
    spec: str = "Idle",
    since: datetime | None = None,
    crashes: int = 0,
    failed_at: datetime | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": c.API_VERSION_V2,
        "kind": c.KIND,
        "metadata": {
            "name": f"brs-{name}",
            "namespace": c.NAMESPACE,
            "ownerReferences": [{"name": name}],
            "annotations": dict(annotations or {}),
        },
        "spec": {
            "state": spec,
            "state_transition_timestamp": ts(since) if since else None,
            "version": target if spec != "Idle" else None,
        },
    }
    if state is not None:
        obj["status"] = {
            "current_version": current,
            "target_version": target,
            "current_state": state,
            "crash_count": crashes,
            "state_transition_failure_timestamp": ts(failed_at) if failed_at else None,
        }
    return obj


def shadow(name: str, **options: Any) -> ShadowFacts:
    return shadow_facts(shadow_obj(name, **options))


def policy(
    name: str,
    *,
    status: Mapping[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": c.API_VERSION_POLICY,
        "kind": c.POLICY_KIND,
        "metadata": {"name": name, "annotations": dict(annotations or {})},
        "spec": {"nodeSelector": spec.pop("nodeSelector", {"matchLabels": {"pool": name}}), **spec},
    }
    if status is not None:
        obj["status"] = dict(status)
    return obj


def snapshot(
    nodes: Iterable[NodeFacts],
    shadows: Iterable[ShadowFacts],
    policies: Iterable[Mapping[str, Any]] = (),
    *,
    env: Mapping[str, str] | None = None,
    served: bool = True,
) -> Snapshot:
    return Snapshot(
        namespace=c.NAMESPACE,
        nodes={n.name: n for n in nodes},
        shadows=tuple(shadows),
        policies=tuple(policies),
        controller=ControllerFacts({"MAX_CONCURRENT_UPDATE": "unlimited"} if env is None else dict(env)),
        policies_served=served,
    )


def history(*cycles: tuple[str, str, timedelta, timedelta]) -> str:
    """Cycles as (outcome, to, started ago, took)."""
    return json.dumps(
        {
            "cycles": [
                {
                    "from": "1.0.0",
                    "to": to,
                    "start": ts(NOW - ago),
                    "end": ts(NOW - ago + took),
                    "outcome": outcome,
                }
                for outcome, to, ago, took in cycles
            ]
        }
    )
