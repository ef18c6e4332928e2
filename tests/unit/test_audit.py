"""Reading the kube-apiserver's audit log (integ/audit.py): a PDB breach names who took each pod away."""

import json
from datetime import UTC, datetime
from pathlib import Path

from integ.audit import deletions


def entry(name: str, *, at: str, user: str, subresource: str | None = None, code: int = 201) -> str:
    ref = {"resource": "pods", "namespace": "workloads", "name": name}
    if subresource:
        ref["subresource"] = subresource
    return json.dumps(
        {
            "auditID": f"{name}-{at}",
            "stage": "ResponseComplete",
            "verb": "create" if subresource else "delete",
            "user": {"username": user},
            "objectRef": ref,
            "responseStatus": {"code": code},
            "requestReceivedTimestamp": at,
        }
    )


def test_deletions_and_evictions_since_a_moment_name_who_asked(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    apiserver = "system:serviceaccount:brupop-bottlerocket-aws:brupop-apiserver-service-account"
    log.write_text(
        "\n".join(
            [
                entry("web-0", at="2026-12-02T02:16:40.000000Z", user=apiserver, subresource="eviction"),
                entry("web-1", at="2026-12-02T02:16:44.300000Z", user="system:serviceaccount:kube-system:x"),
                entry(
                    "web-2",
                    at="2026-12-02T02:16:44.400000Z",
                    user=apiserver,
                    subresource="eviction",
                    code=429,
                ),
                "not json",
                json.dumps({"objectRef": {"namespace": "other", "name": "web-1"}}),
            ]
        )
    )
    since = datetime(2026, 12, 2, 2, 16, 41, tzinfo=UTC)
    assert deletions(log, namespace="workloads", since=since) == [
        "02:16:44.300 web-1 delete by system:serviceaccount:kube-system:x: 201",
        f"02:16:44.400 web-2 evicted by {apiserver}: 429",
    ]
    assert deletions(log, namespace="workloads", since=since, pods={"web-2"}) == [
        f"02:16:44.400 web-2 evicted by {apiserver}: 429"
    ]
    assert deletions(tmp_path / "none.log", namespace="workloads", since=since) == []
