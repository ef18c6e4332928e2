"""The kube-apiserver's audit log on the local cluster: `enable` restarts it with a policy that records
requests at the Metadata level (who, verb, object; no bodies) as JSON lines in `<cluster dir>/audit.log`.

The benchmarks count every request with it (`benchmarks/audit.py`); the chaos campaign records only the
pods' deletions and evictions (`POD_DELETIONS`), so that a PodDisruptionBudget breach names who took each
of the budget's pods away (`deletions`): brupop's apiserver through the Eviction API, or a Kubernetes
controller (the taint manager, the StatefulSet controller, the pod garbage collector), or kwok.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Collection
from datetime import datetime
from pathlib import Path
from typing import Final

from integ.cluster import ClusterState, restart_component

_POLICY: Final = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
"""
EVERYTHING: Final = _POLICY + "  - level: Metadata\n"
POD_DELETIONS: Final = _POLICY + (
    "  - level: Metadata\n"
    "    verbs: [create, delete, deletecollection]\n"
    '    resources: [{group: "", resources: [pods/eviction]}]\n'
    "  - level: Metadata\n"
    "    verbs: [delete, deletecollection]\n"
    '    resources: [{group: "", resources: [pods]}]\n'
    "  - level: None\n"
)
LOG_NAME: Final = "audit.log"


def enable(state: ClusterState, *, policy: str = EVERYTHING) -> Path:
    """Restart the kube-apiserver with audit logging on (once); returns the log's path."""
    directory = Path(state.directory)
    (directory / "audit-policy.yaml").write_text(policy)
    log = directory / LOG_NAME
    command = state.commands["kube-apiserver"]
    if not any(arg.startswith("--audit-log-path=") for arg in command):
        command += [
            f"--audit-policy-file={directory / 'audit-policy.yaml'}",
            f"--audit-log-path={log}",
            "--audit-log-format=json",
        ]
        restart_component(state, "kube-apiserver", sig=signal.SIGTERM)
    return log


def deletions(
    log: Path, *, namespace: str, since: datetime, pods: Collection[str] | None = None
) -> list[str]:
    """Each deletion or eviction of a pod of `namespace` (of `pods`, when given) received since `since`:
    when, which, how, by whom, the answer."""
    found = []
    try:
        lines = log.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            event = json.loads(line)
            ref = event.get("objectRef") or {}
            at = datetime.fromisoformat(str(event["requestReceivedTimestamp"]).replace("Z", "+00:00"))
        except (ValueError, KeyError, AttributeError):
            continue
        if (
            ref.get("namespace") != namespace
            or (pods is not None and ref.get("name") not in pods)
            or at < since
        ):
            continue
        what = "evicted" if ref.get("subresource") == "eviction" else str(event.get("verb"))
        who = (event.get("user") or {}).get("username")
        code = (event.get("responseStatus") or {}).get("code")
        found.append(f"{at:%H:%M:%S.%f}"[:-3] + f" {ref['name']} {what} by {who}: {code}")
    return found
