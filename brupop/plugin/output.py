"""How a report is shown: two tables for people (nodes, then policies, then notes), or one JSON / YAML
document for scripts, whose keys stay stable: each node's `phase` and structured `reason` (`code` and its
fields, e.g. `until`) next to the words, each pool's status exactly as the controller would write it."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from brupop.models.policy import UpdatePolicyStatus
from brupop.models.progress import Cycle
from brupop.plugin.report import NodeLine, PoolLine, Report
from brupop.plugin.words import moment, relative, span
from brupop.policy.admission import Reason

FORMAT_VERSION = 1


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _plain(value: object) -> Any:
    """A reason's or verdict's field as JSON."""
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def reason_json(reason: Reason) -> dict[str, Any]:
    fields = {_camel(f.name): _plain(getattr(reason, f.name)) for f in dataclasses.fields(reason)}
    return {"code": reason.code.value, **fields, "message": reason.message()}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def node_json(line: NodeLine) -> dict[str, Any]:
    return {
        "node": line.node,
        "policy": line.pool,
        "phase": line.phase.value,
        "why": line.why,
        "state": _plain(line.state),
        "targetState": _plain(line.target_state),
        "version": line.version,
        "target": line.target,
        "reason": reason_json(line.reason) if line.reason is not None else None,
        "controllerVerdict": line.controller.to_wire() if line.controller is not None else None,
        "stuck": None
        if line.stuck is None
        else {"headingTo": line.stuck.heading_to.value, "since": iso(line.stuck.since)},
        "stepSince": iso(line.step_since) if line.step_since is not None else None,
        "cordonedBy": line.cordoned_by,
        "held": line.held,
        "retryRequested": line.retry_requested,
        "lastCycle": line.last_cycle.to_wire() if line.last_cycle is not None else None,
    }


def pool_json(line: PoolLine) -> dict[str, Any]:
    return {
        "name": line.name,
        "status": line.status.to_wire(),
        "timeZone": line.zone.key,
        "perNodeSeconds": line.per_node.total_seconds() if line.per_node is not None else None,
        "observedCycles": line.observed,
        "eta": iso(line.eta) if line.eta is not None else None,
        "etaNote": line.eta_note,
    }


def document(report: Report) -> dict[str, Any]:
    return {
        "kind": "BrupopStatus",
        "version": FORMAT_VERSION,
        "time": iso(report.at),
        "namespace": report.namespace,
        "nodes": [node_json(line) for line in report.nodes],
        "policies": [pool_json(line) for line in report.pools],
        "notes": list(report.notes),
    }


def as_json(report: Report) -> str:
    return json.dumps(document(report), indent=2)


def as_yaml(report: Report) -> str:
    import yaml  # only for -o yaml

    return str(yaml.safe_dump(document(report), sort_keys=False, allow_unicode=True))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns as wide as their widest cell, two spaces apart, as kubectl prints them."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [headers, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def _last(cycle: Cycle | None, now: datetime) -> str:
    if cycle is None:
        return "-"
    took = span(cycle.end.instant - cycle.start.instant)
    return f"{cycle.outcome.value} {cycle.to_version} {relative(cycle.end.instant, now)} ({took})"


def _done(status: UpdatePolicyStatus) -> str:
    return f"{status.up_to_date}/{status.selected}"


def _eta(line: PoolLine, now: datetime) -> str:
    if line.eta is None:
        return line.eta_note
    return f"{moment(line.eta, line.zone, now)}; {line.eta_note}"


def as_text(report: Report) -> str:
    now = report.at
    with_history = any(line.last_cycle is not None for line in report.nodes)
    headers = [
        "NODE",
        "POLICY",
        "STATE",
        "VERSION",
        "TARGET",
        *(["LAST UPDATE"] if with_history else []),
        "STATUS",
    ]
    rows = [
        [
            line.node,
            line.pool or "-",
            line.state.value if line.state is not None else "-",
            line.version or "-",
            line.target or "-",
            *([_last(line.last_cycle, now)] if with_history else []),
            line.why,
        ]
        for line in report.nodes
    ]
    parts = [
        table(headers, rows) if rows else f"No nodes are opted in to brupop (namespace {report.namespace})."
    ]
    if report.pools:
        pool_rows = [
            [
                line.name,
                (line.status.state.value if line.status.state is not None else "-"),
                _done(line.status),
                str(line.status.updating),
                str(line.status.failed),
                str(line.status.held),
                line.status.limit or "-",
                line.status.window.value if line.status.window is not None else "-",
                span(line.per_node) if line.per_node is not None else "-",
                _eta(line, now),
            ]
            for line in report.pools
        ]
        headers = [
            "POLICY",
            "STATE",
            "DONE",
            "UPDATING",
            "FAILED",
            "HELD",
            "LIMIT",
            "WINDOW",
            "PER NODE",
            "ETA",
        ]
        parts.append(table(headers, pool_rows))
    if report.notes:
        parts.append("Notes:\n" + "\n".join(f"  - {note}" for note in report.notes))
    return "\n\n".join(parts) + "\n"
