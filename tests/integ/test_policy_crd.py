"""The UpdatePolicy CRD on the real API server: it installs (its CEL rules within the cost budget), accepts
every good policy and keeps each field as written, refuses each bad one with a message naming the field
(the same message the reader gives where the check is a CEL rule), keeps status behind its subresource,
and `kubectl get` shows the printer columns."""

import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from brupop.kube.client import ApiError, KubeClient, Resource
from brupop.models import constants as c
from brupop.models.crd import update_policy_crd
from brupop.models.policy import Failure, UpdatePolicy, UpdatePolicyStatus
from brupop.models.timestamp import Timestamp
from brupop.models.wire import WireError
from brupop.policy.admission import PoolPass
from brupop.policy.budget import BudgetState, account
from brupop.policy.policy_status import Member, policy_status
from brupop.policy.pools import Defaults, read_policy, resolve
from brupop.policy.schedule import schedule_from_settings
from integ.build import build
from integ.cluster import ClusterState
from integ.kubetools import install_crd
from tests.policy_cases import BAD, GOOD

POLICIES = Resource(c.API_GROUP, c.POLICY_VERSION, c.POLICY_PLURAL, namespaced=False)
# What kubectl sends: unknown fields are refused rather than pruned with a warning.
STRICT = {"fieldValidation": "Strict"}


def policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": c.API_VERSION_POLICY,
        "kind": c.POLICY_KIND,
        "metadata": {"name": name},
        "spec": spec,
    }


@pytest.fixture
async def crd(kube: KubeClient) -> None:
    await install_crd(kube, update_policy_crd())


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(GOOD))
async def test_good_policies_are_stored_as_written(kube: KubeClient, crd: None, name: str) -> None:
    created = await kube.request("POST", POLICIES.path(), params=STRICT, body=policy(name, GOOD[name]))
    try:
        assert created["spec"] == GOOD[name]
        assert UpdatePolicy.from_wire(created).spec == UpdatePolicy.from_wire({"spec": GOOD[name]}).spec
    finally:
        await kube.delete(POLICIES, name)


@pytest.mark.integration
@pytest.mark.parametrize("case", sorted(BAD))
async def test_bad_policies_are_refused_naming_the_field(kube: KubeClient, crd: None, case: str) -> None:
    bad = BAD[case]
    with pytest.raises(ApiError) as refused:
        await kube.request(
            "POST", POLICIES.path(), params={**STRICT, "dryRun": "All"}, body=policy(case, bad.spec)
        )
    assert refused.value.status in (400, 422), refused.value
    assert bad.field in refused.value.message, refused.value.message
    assert bad.fragment in refused.value.message, refused.value.message
    with pytest.raises(WireError) as read:
        UpdatePolicy.from_wire({"spec": bad.spec})
    assert read.value.location == bad.dotted
    if bad.same_message:
        assert f"{bad.field}: Invalid value: " in refused.value.message
        assert read.value.message in refused.value.message


def kubectl(cluster: ClusterState, *args: str) -> str:
    done = subprocess.run(
        [str(build() / "kubectl"), "--kubeconfig", cluster.kubeconfig, *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def computed_status() -> dict[str, Any]:
    """A status as the controller will write it: a halted pool with failures and conditions."""
    now = datetime.now(UTC)
    env = Defaults(
        max_concurrent=2,
        schedule=schedule_from_settings(
            cron_expression="* * 2-4 * * * *", window_start=None, window_stop=None, timezone=None, now=now
        )[0],
    )
    pool = resolve(read_policy(policy("columns", GOOD["karpenter"])), env, now=now)
    failures = [
        Failure(node=n, at=Timestamp.from_datetime(now - timedelta(minutes=1)), reason="boom")
        for n in ("a", "b")
    ]
    budget = account(
        pool.budget,
        pool="columns",
        previous=BudgetState(),
        observed=failures,
        pool_size=4,
        resumed=None,
        now=now,
    )
    passed = PoolPass(
        pool="columns",
        size=4,
        limit=2,
        in_cycle=1,
        started=(),
        window_open=False,
        blackout=None,
        next_opening=now + timedelta(hours=3),
    )
    members = {"a": Member.FAILED, "b": Member.FAILED, "c": Member.UPDATING, "d": Member.UP_TO_DATE}
    status = policy_status(
        pool,
        passed=passed,
        members=members,
        held=["d"],
        budget=budget,
        overlaps=(),
        stuck=(),
        previous=None,
        now=now,
    )
    return status.to_wire()


@pytest.mark.integration
async def test_status_is_a_subresource_and_kubectl_shows_the_columns(
    kube: KubeClient, crd: None, cluster: ClusterState
) -> None:
    name = "columns"
    await kube.create(POLICIES, policy(name, GOOD["karpenter"]))
    try:
        ignored = await kube.merge_patch(POLICIES, name, {"status": {"selected": 99}})
        assert "status" not in ignored  # the main resource ignores status
        status = computed_status()
        written = await kube.merge_patch(POLICIES, name, {"status": status}, subresource="status")
        stored = UpdatePolicy.from_wire(written).status
        assert stored == UpdatePolicyStatus.from_wire(status)
        table = kubectl(cluster, "get", "brup", name, "-o", "wide").splitlines()
        assert table[0].split() == [
            "NAME",
            "STATE",
            "SELECTED",
            "UP-TO-DATE",
            "UPDATING",
            "FAILED",
            "HELD",
            "LIMIT",
            "WINDOW",
            "NEXT-OPENING",
            "AGE",
        ]
        assert table[1].split()[:9] == [name, "Halted", "4", "1", "1", "2", "1", "2", "Closed"]
    finally:
        await kube.delete(POLICIES, name)
