"""The leadership monitor, judged on hand-made request logs (no cluster needed): a spec write counts
against its writer when another replica's acquisition or its own release was answered before the write
arrived, or when its last renewal was sent more than a lease duration before."""

import json

from integ.faultproxy import Exchange
from integ.monitors import Timeline, leadership_violations

LEASE = "/apis/coordination.k8s.io/v1/namespaces/brupop/leases/leader"
SPEC = "/apis/brupop.bottlerocket.aws/v2/namespaces/brupop/bottlerocketshadows/brs-a"


def lease(client: str, holder: str | None, at: float, *, duration: int = 15, status: int = 200) -> Exchange:
    body = {
        "metadata": {"name": "leader"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration},
    }
    return Exchange(client, "PUT", LEASE, {}, json.dumps(body).encode(), at, at + 0.01, status)


def write(client: str, at: float, *, status: int = 200, path: str = SPEC) -> Exchange:
    return Exchange(client, "PATCH", path, {}, b"{}", at, at + 0.01, status)


def judge(*log: Exchange) -> list[str]:
    return leadership_violations(log, lease="leader", timeline=Timeline(started=0.0))


def test_writes_within_the_holders_term_pass() -> None:
    assert (
        judge(
            lease("brupop-controller-0", "brupop-controller-0", 1.0),
            write("brupop-controller-0", 2.0),
            lease("brupop-controller-0", "brupop-controller-0", 10.0),
            write("brupop-controller-0", 24.0),
        )
        == []
    )


def test_a_write_after_another_replica_took_the_lease_is_caught() -> None:
    [found] = judge(
        lease("brupop-controller-0", "brupop-controller-0", 1.0),
        lease("brupop-controller-1", "brupop-controller-1", 17.0),
        write("brupop-controller-0", 15.5),  # in its own term: fine
        write("brupop-controller-0", 17.5),
    )
    assert found.startswith(
        "brupop-controller-0 PATCH brs-a at 17.50s while the Lease was held by brupop-controller-1"
    )


def test_a_write_after_the_own_lease_ran_out_is_caught() -> None:
    [found] = judge(
        lease("brupop-controller-0", "brupop-controller-0", 1.0), write("brupop-controller-0", 16.5)
    )
    assert "0.50s after its lease ran out" in found


def test_a_write_after_releasing_is_caught_and_refused_writes_do_not_count() -> None:
    log = [
        lease("brupop-controller-0", "brupop-controller-0", 1.0),
        lease("brupop-controller-0", None, 5.0),
        write("brupop-controller-0", 6.0),
        write("brupop-controller-0", 7.0, status=409),
        lease("brupop-controller-1", "brupop-controller-1", 8.0, status=409),  # lost the race: not a term
    ]
    [found] = judge(*log)
    assert "while the Lease was released by brupop-controller-0" in found


def test_status_writes_and_agents_are_not_spec_writes() -> None:
    assert judge(write("brupop-controller-0", 1.0, path=SPEC + "/status"), write("brupop-agent-x", 1.0)) == []
