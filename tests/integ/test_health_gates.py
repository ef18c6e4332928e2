"""Health gates and post-update verification end to end (issue 17) on the real control plane with the real
Prometheus: the controller as its own process under the chart's RBAC (`tests.integ.test_policies`), test
agents that do what each spec asks, kwok running the pods. A firing critical alert blocks every new cordon
until it clears while in-flight nodes finish; a blocking pod holds the rollout while it exists; a node whose
workload does not come back fails verification, which the failure budget counts (a budget of 1 halts the
pool); a soak shows between nodes; a Prometheus that is down blocks with its reason (fail closed), and one
configured to fail open does not."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from brupop.kube.client import DEPLOYMENTS, NODES, PODS, ApiError, KubeClient
from brupop.models import constants as c
from brupop.models.progress import History, Waiting
from brupop.models.shadow import BottlerocketShadow, ShadowState
from brupop.models.verifying import VerificationRecord
from integ.cluster import ClusterState
from integ.fleet import shadows
from integ.kubetools import ensure_namespace, eventually, in_background, nonempty
from integ.prometheus import PrometheusServer, TestExporter, stop
from tests.integ.test_policies import (
    POLICIES,
    Agents,
    Controller,
    controller,
    done,
    events,
    names,
    plugin_status,
    policy,
    status_where,
    world,
)

S = ShadowState
Obj = dict[str, Any]
CRITICAL = 'ALERTS{alertstate="firing",severity="critical"}'
NAMESPACE = "health-gates"
WEB_LABEL = "health-test.example.com/web"


@dataclass
class Steps(Agents):
    """Test agents that also keep the nodes in `before_reboot` from reporting RebootedIntoUpdate until
    released, and call `on_reboot` for a node as it reports it (what the new version does to the node)."""

    before_reboot: set[str] = field(default_factory=set)
    on_reboot: Mapping[str, Any] = field(default_factory=dict)

    async def _act(self, shadow: BottlerocketShadow) -> None:
        node = shadow.name.removeprefix(c.SHADOW_NAME_PREFIX)
        status = shadow.status
        rebooting = shadow.spec.state is S.REBOOTED_INTO_UPDATE and status is not None
        if rebooting and status is not None and status.current_state is not S.REBOOTED_INTO_UPDATE:
            if node in self.before_reboot:
                return
            if node in self.on_reboot:
                await self.on_reboot[node]()
        await super()._act(shadow)

    async def release_reboot(self, *nodes: str) -> None:
        self.before_reboot -= set(nodes)
        await self.release()


@contextlib.asynccontextmanager
async def steps(kube: KubeClient, prefix: str, **options: Any) -> AsyncIterator[Steps]:
    running = Steps(kube, prefix, **options)
    async with in_background(running.run()):
        yield running


async def shadow_of(kube: KubeClient, node: str) -> BottlerocketShadow:
    (found,) = await shadows(kube, node)
    return found


async def waiting_of(kube: KubeClient, node: str) -> Waiting | None:
    text = (await shadow_of(kube, node)).annotations.get(c.WAITING_ANNOTATION)
    return None if text is None else Waiting.from_json(text)


async def blocked_by(kube: KubeClient, name: str, gate: str, saying: str) -> Obj | None:
    """The policy's status once it shows `gate` blocking with a message containing `saying` (at first a
    gate blocks because its facts are not known yet)."""
    status = (await kube.get(POLICIES, name)).get("status") or {}
    found = (b for b in status.get("blockedBy") or () if b["gate"] == gate and saying in b["message"])
    return next(found, None)


async def metrics_text(running: Controller) -> str:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"http://127.0.0.1:{running.port}/metrics")).text


@pytest.mark.integration
async def test_a_firing_critical_alert_blocks_every_new_cordon_until_it_clears_in_flight_nodes_finish(
    cluster: ClusterState,
    kube: KubeClient,
    tmp_path: Path,
    exporter: TestExporter,
    prometheus: PrometheusServer,
) -> None:
    nodes = names("hg", 4)
    gates = {"prometheus": {"url": prometheus.url, "query": CRITICAL}}
    async with (
        world(kube, {"alert": nodes}),
        steps(kube, "hg-", stalled={"hg-1"}, before_reboot={"hg-0"}) as fleet,
    ):
        await kube.create(POLICIES, policy("health-alert", "alert", maxConcurrent=2, gates=gates))
        async with controller(cluster, kube, tmp_path, {"MAX_CONCURRENT_UPDATE": "1"}) as running:

            async def cordoned_and_staged() -> bool:
                first, second = await shadow_of(kube, "hg-0"), await shadow_of(kube, "hg-1")
                return (first.spec.state, second.spec.state) == (
                    S.REBOOTED_INTO_UPDATE,
                    S.STAGED_AND_PERFORMED_UPDATE,
                )

            await eventually(cordoned_and_staged, within=60, what="hg-0 past its cordon, hg-1 staging")
            exporter.fire("BrupopTestCritical")
            block = await eventually(
                lambda: blocked_by(kube, "health-alert", "prometheus", "BrupopTestCritical"),
                within=60,
                what="the alert to block",
            )
            assert block["message"] == f"alert BrupopTestCritical firing (query {CRITICAL})"
            assert await running.metric("brupop_gate_blocked", policy="health-alert", gate="prometheus")
            # hg-1 staged its update: the gate holds it before its cordon.
            await fleet.release("hg-1")

            async def held_staged() -> Waiting | None:
                said = await waiting_of(kube, "hg-1")
                return said if said is not None and said.reason == "GateBlocked" else None

            said = await eventually(held_staged, within=60, what="hg-1 held before its cordon")
            assert "alert BrupopTestCritical firing" in said.message
            # hg-0 was past its cordon when the alert fired: it finishes.
            await fleet.release_reboot("hg-0")
            await eventually(lambda: done(kube, ["hg-0"]), within=60, what="the in-flight node to finish")
            assert (await shadow_of(kube, "hg-1")).spec.state is S.STAGED_AND_PERFORMED_UPDATE
            assert sorted(fleet.starts) == ["hg-0", "hg-1"]  # nobody new started
            shown = {row["node"]: row for row in (await plugin_status(cluster))["nodes"]}
            assert "alert BrupopTestCritical firing" in shown["hg-2"]["why"], shown["hg-2"]
            gate_events = await events(kube, "GateBlocked", "health-alert")
            alerted = [e for e in gate_events if "BrupopTestCritical" in e["note"]]
            assert len(alerted) == 1, gate_events  # once, however many passes it blocked
            exporter.clear("BrupopTestCritical")
            await eventually(lambda: done(kube, nodes), within=90, what="the rollout to go on once it clears")
    assert sorted(fleet.starts) == nodes
    assert fleet.peak == 2


@pytest.mark.integration
async def test_a_blocking_pod_holds_the_rollout_while_it_exists(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path
) -> None:
    nodes = names("hp", 2)
    await ensure_namespace(kube, NAMESPACE)
    backup = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "backup-0", "labels": {"app": "backup"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}], "nodeName": "hp-1"},
    }
    gates = {"pods": [{"selector": {"matchLabels": {"app": "backup"}}}]}
    async with world(kube, {"pods": nodes}), steps(kube, "hp-") as fleet:
        await kube.create(PODS, backup, namespace=NAMESPACE)
        try:
            await kube.create(POLICIES, policy("health-pods", "pods", maxConcurrent=2, gates=gates))
            async with controller(cluster, kube, tmp_path, {"MAX_CONCURRENT_UPDATE": "1"}) as running:
                # The health metrics are there from the start, before anything blocked or was verified.
                text = await metrics_text(running)
                assert "# HELP brupop_gate_blocked " in text
                assert "# HELP brupop_verifications_total " in text
                block = await eventually(
                    lambda: blocked_by(kube, "health-pods", "pods", "backup-0"),
                    within=60,
                    what="the pod to block",
                )
                assert block["message"].startswith(f"pod {NAMESPACE}/backup-0 matches the blocking selector")
                assert sorted(block["nodes"]) == nodes
                assert fleet.starts == []
                await kube.delete(PODS, "backup-0", namespace=NAMESPACE, options={"gracePeriodSeconds": 0})
                await eventually(
                    lambda: done(kube, nodes), within=60, what="the rollout once the pod is gone"
                )
        finally:
            with contextlib.suppress(ApiError):
                await kube.delete(PODS, "backup-0", namespace=NAMESPACE, options={"gracePeriodSeconds": 0})
    assert sorted(fleet.starts) == nodes


def web() -> Obj:
    labels = {"app": "web"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"nodeSelector": {WEB_LABEL: "ok"}, "containers": [{"name": "c", "image": "nginx"}]},
            },
        },
    }


@pytest.mark.integration
async def test_a_workload_that_does_not_come_back_fails_verification_and_a_budget_of_one_halts_the_pool(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path
) -> None:
    nodes = names("hv", 3)
    await ensure_namespace(kube, NAMESPACE)

    async def broken() -> None:
        """What the bad release does: hv-0 no longer runs web (its label goes, its pod is gone)."""
        await kube.merge_patch(NODES, "hv-0", {"metadata": {"labels": {WEB_LABEL: None}}})
        await kube.request("DELETE", PODS.path(namespace=NAMESPACE), params={"gracePeriodSeconds": "0"})

    verification = {"timeout": "15s"}
    budget = {"maxFailures": 1, "window": "1h"}
    async with world(kube, {"verify": nodes}), steps(kube, "hv-", on_reboot={"hv-0": broken}) as fleet:
        await kube.merge_patch(NODES, "hv-0", {"metadata": {"labels": {WEB_LABEL: "ok"}}})
        await kube.create(DEPLOYMENTS, web(), namespace=NAMESPACE)
        try:

            async def web_ready() -> bool:
                found = await kube.get(DEPLOYMENTS, "web", namespace=NAMESPACE)
                return (found.get("status") or {}).get("readyReplicas") == 1

            await eventually(web_ready, within=60, what="web ready on hv-0")
            spec = {"maxConcurrent": 1, "verification": verification, "failureBudget": budget}
            await kube.create(POLICIES, policy("health-verify", "verify", **spec))
            async with controller(cluster, kube, tmp_path, {"MAX_CONCURRENT_UPDATE": "1"}) as running:
                halted = await eventually(
                    lambda: status_where(kube, "health-verify", state="Halted"),
                    within=90,
                    what="the failed verification to halt the pool",
                )
                assert halted["halted"]["failedNodes"] == ["hv-0"]
                [failure] = halted["failures"]
                assert failure["reason"].startswith("verification failed: not verified within 15s: ")
                assert f"deployment {NAMESPACE}/web 0/1 ready, 1 before the update" in failure["reason"]
                record = VerificationRecord.from_json(
                    (await shadow_of(kube, "hv-0")).annotations[c.VERIFICATION_ANNOTATION]
                )
                assert record.outcome is not None
                assert record.outcome.value == "Failed"
                await eventually(  # on the Node, sent after the pass
                    lambda: nonempty(events(kube, "VerificationFailed", "hv-0")),
                    what="a VerificationFailed Event",
                )
                assert (
                    await running.metric(
                        "brupop_verifications_total", policy="health-verify", outcome="Failed"
                    )
                    == 1
                )
                # The failed node's cycle ended (it runs the new version); nobody else started.
                await eventually(lambda: done(kube, ["hv-0"]), within=60, what="hv-0 out of its cycle")
                assert fleet.starts == ["hv-0"]
                history = History.from_json((await shadow_of(kube, "hv-0")).annotations[c.HISTORY_ANNOTATION])
                assert history.cycles[-1].reason.startswith("verification failed: ")
        finally:
            with contextlib.suppress(ApiError):
                await kube.delete(DEPLOYMENTS, "web", namespace=NAMESPACE)


@pytest.mark.integration
async def test_a_soak_of_s_seconds_shows_between_nodes(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path
) -> None:
    nodes = names("hs", 2)
    soak = 8
    async with world(kube, {"soak": nodes}), steps(kube, "hs-") as fleet:
        spec = {"maxConcurrent": 1, "verification": {"workloads": False, "soak": f"{soak}s"}}
        await kube.create(POLICIES, policy("health-soak", "soak", **spec))
        async with controller(cluster, kube, tmp_path, {"MAX_CONCURRENT_UPDATE": "1"}) as running:
            await eventually(lambda: done(kube, nodes), within=90, what="both nodes through their soak")
            first, second = await shadow_of(kube, "hs-0"), await shadow_of(kube, "hs-1")
            record = VerificationRecord.from_json(first.annotations[c.VERIFICATION_ANNOTATION])
            assert record.verified_at is not None
            assert record.ended_at is not None
            [cycle] = History.from_json(second.annotations[c.HISTORY_ANNOTATION]).cycles
            # The timeline: hs-0 verified, soaked S seconds, ended; only then did hs-1 start.
            assert (record.ended_at.instant - record.verified_at.instant).total_seconds() >= soak
            assert cycle.start.instant >= record.ended_at.instant
            assert (
                await running.metric("brupop_verifications_total", policy="health-soak", outcome="Passed")
                == 2
            )
    assert fleet.starts == nodes


@pytest.mark.integration
async def test_prometheus_down_blocks_with_a_clear_reason_and_fail_open_does_not(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path, prometheus: PrometheusServer
) -> None:
    stop(prometheus)
    closed = {"prometheus": {"url": prometheus.url, "query": CRITICAL}}
    opened = {"prometheus": {"url": prometheus.url, "query": CRITICAL, "failOpen": True}}
    async with world(kube, {"closed": ["hd-0"], "open": ["hd-1"]}), steps(kube, "hd-") as fleet:
        await kube.create(POLICIES, policy("health-closed", "closed", gates=closed))
        await kube.create(POLICIES, policy("health-open", "open", gates=opened))
        async with controller(cluster, kube, tmp_path, {"MAX_CONCURRENT_UPDATE": "1"}):
            await eventually(lambda: done(kube, ["hd-1"]), within=60, what="the fail-open pool to update")

            async def refused() -> Waiting | None:
                said = await waiting_of(kube, "hd-0")
                return said if said is not None and "unreachable" in said.message else None

            said = await eventually(refused, within=60, what="the fail-closed node to say why it waits")
            assert said.message == (
                "blocked by the prometheus gate: Prometheus unreachable: connection refused (fail closed)"
            )
            assert fleet.starts == ["hd-1"]
