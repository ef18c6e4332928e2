"""Counting Kubernetes API requests where they arrive: the kube-apiserver's audit log.

`enable` (`integ/audit.py`) restarts the local cluster's kube-apiserver with an audit policy that records
every request at the Metadata level (who, verb, resource; no bodies), as JSON lines. `requests`
reads it back: one entry per request (its audit ID; a watch logs when its response starts and when it
ends), by the program that sent it, known by its user (each brupop program has a service account of its
own; agents authenticate with their pods' bound tokens, as the same account).
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from brupop.deploy import AGENT_SA, APISERVER_SA, CONTROLLER_SA
from brupop.models.constants import NAMESPACE
from integ.audit import enable

__all__ = ["by_call", "by_program", "enable", "requests"]

PROGRAMS: Mapping[str, str] = {
    f"system:serviceaccount:{NAMESPACE}:{CONTROLLER_SA}": "controller",
    f"system:serviceaccount:{NAMESPACE}:{APISERVER_SA}": "apiserver",
    f"system:serviceaccount:{NAMESPACE}:{AGENT_SA}": "agent",
}


@dataclass(frozen=True)
class Request:
    at: datetime
    program: str
    verb: str
    resource: str


def _entries(log: Path) -> Iterator[Request]:
    seen: set[str] = set()
    with log.open(errors="replace") as lines:
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            program = PROGRAMS.get(str((event.get("user") or {}).get("username")))
            if program is None or event.get("auditID") in seen:
                continue
            seen.add(event["auditID"])
            ref = event.get("objectRef") or {}
            resource = "/".join(p for p in (ref.get("resource"), ref.get("subresource")) if p)
            at = datetime.fromisoformat(str(event["requestReceivedTimestamp"]).replace("Z", "+00:00"))
            yield Request(at, program, str(event.get("verb")), resource or str(event.get("requestURI")))


def requests(log: Path, *, since: datetime, until: datetime) -> list[Request]:
    """The brupop programs' requests received in [since, until)."""
    return [r for r in _entries(log) if since <= r.at < until]


def by_program(found: list[Request]) -> collections.Counter[str]:
    return collections.Counter(r.program for r in found)


def by_call(found: list[Request], program: str) -> collections.Counter[str]:
    return collections.Counter(f"{r.verb} {r.resource}" for r in found if r.program == program)
