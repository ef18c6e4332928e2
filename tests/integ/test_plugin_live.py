"""`kubectl brupop` (its own process) against a running controller on the real control plane: the reasons
only the controller writes (each node's history of cycles, a health gate's verdict in the `waiting`
annotation), and `pause`, `resume`, `hold`, `release` and `retry` taking effect on the controller's next
passes, each leaving its Event. The controller runs as `brupop controller` under the chart's RBAC (as in
`test_policies`), the gate's verdict from a real pods gate."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from brupop.kube.client import PODS, SHADOWS, ApiError, KubeClient
from brupop.models import constants as c
from brupop.models.timestamp import Timestamp
from integ.cluster import ClusterState
from integ.kubetools import ensure_namespace, eventually
from tests.integ.test_plugin import ADMIN, events_about, plugin, status
from tests.integ.test_policies import POLICIES, agents, controller, done, names, policy, settled, world

pytestmark = pytest.mark.integration
GATE_NAMESPACE = "plugin-gates"


async def test_status_shows_the_history_the_running_controller_wrote(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path
) -> None:
    nodes = names("ph", 2)
    async with world(kube, {"history": nodes}), agents(kube, "ph-", failing={"ph-0"}):
        await kube.create(POLICIES, policy("plugin-history", "history", maxConcurrent=1))
        async with controller(cluster, kube, tmp_path, {"MAX_CONCURRENT_UPDATE": "1"}):
            await eventually(lambda: done(kube, ["ph-1"]), within=90, what="ph-1 to update")
            await eventually(lambda: settled(kube, nodes), what="both nodes out of their cycles")

            async def both_told() -> dict[str, dict[str, Any]] | None:
                rows, _, _ = await status(cluster)
                return rows if all(rows[n].get("lastCycle") for n in nodes) else None

            rows = await eventually(both_told, what="both cycles in the history")
            _, policies, text = await status(cluster)
    failed, succeeded = rows["ph-0"]["lastCycle"], rows["ph-1"]["lastCycle"]
    assert (failed["from"], failed["to"], failed["outcome"]) == ("1.0.0", "1.1.0", "Failed")
    assert failed["reason"]
    assert (succeeded["outcome"], succeeded["reason"]) == ("Succeeded", "")
    assert policies["plugin-history"]["observedCycles"] == 1  # the successful one gives the time per node
    line = next(line for line in text.splitlines() if line.startswith("ph-0 "))
    assert "Failed 1.1.0" in line, text
    assert rows["ph-0"]["reason"]["code"] == "BackingOff"


async def test_pause_hold_release_resume_and_retry_take_effect_on_the_running_controller(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path
) -> None:
    nodes = names("pc", 3)
    async with world(kube, {"controls": nodes}), agents(kube, "pc-", failing={"pc-2"}) as fleet:
        await kube.create(POLICIES, policy("plugin-controls", "controls", maxConcurrent=1))
        paused = await plugin(cluster, "pause", "plugin-controls")
        assert paused.code == 0, paused.err
        held = await plugin(cluster, "hold", "pc-0", "--reason", "debugging")
        assert held.code == 0, held.err
        async with controller(cluster, kube, tmp_path, {"MAX_CONCURRENT_UPDATE": "1"}):

            async def paused_status() -> bool:
                shown = (await kube.get(POLICIES, "plugin-controls")).get("status") or {}
                return shown.get("state") == "Paused"

            await eventually(paused_status, what="the controller to see the pause")
            assert fleet.starts == []  # paused: nothing starts
            resumed = await plugin(cluster, "resume", "plugin-controls")
            assert resumed.code == 0, resumed.err
            await eventually(lambda: done(kube, ["pc-1"]), within=90, what="pc-1 to update once resumed")
            await eventually(lambda: settled(kube, ["pc-2"]), within=60, what="pc-2 to fail and settle")
            assert fleet.starts == ["pc-1", "pc-2"]  # pc-0 is held
            rows, _, _ = await status(cluster)
            assert rows["pc-0"]["reason"]["code"] == "Held"
            assert rows["pc-2"]["reason"]["code"] == "BackingOff"

            released = await plugin(cluster, "release", "pc-0")
            assert released.code == 0, released.err
            await eventually(lambda: done(kube, ["pc-0"]), within=90, what="pc-0 to update once released")
            # pc-2 would wait out its back-off (minutes); a retry starts it on the next pass.
            fleet.failing.discard("pc-2")
            retried = await plugin(cluster, "retry", "pc-2")
            assert retried.code == 0, retried.err
            await eventually(lambda: done(kube, ["pc-2"]), within=90, what="pc-2 to update once retried")
    assert fleet.starts == ["pc-1", "pc-2", "pc-0", "pc-2"]

    async def reasons(name: str, namespace: str = "default") -> list[str]:
        return [e["reason"] for e in await events_about(kube, name, namespace=namespace)]

    assert {"Paused", "Resumed"} <= set(await reasons("plugin-controls"))
    assert {"Held", "Released"} <= set(await reasons("pc-0"))
    assert "RetryRequested" in await reasons("brs-pc-2", c.NAMESPACE)
    for event in await events_about(kube, "pc-0", namespace="default"):
        assert event["note"].startswith(ADMIN)


async def test_status_shows_the_gate_verdict_the_controller_wrote(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path
) -> None:
    """The running controller's pods gate blocks the node while a pod its selector matches exists; the
    plugin says so, as the controller wrote it in the waiting annotation."""
    await ensure_namespace(kube, GATE_NAMESPACE)
    backup = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "backup-0", "labels": {"app": "backup"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    gates = {"pods": [{"selector": {"matchLabels": {"app": "backup"}}}]}
    async with world(kube, {"gated": ["pg-0"]}):
        await kube.create(PODS, backup, namespace=GATE_NAMESPACE)
        try:
            await kube.create(POLICIES, policy("plugin-gated", "gated", gates=gates))
            async with controller(cluster, kube, tmp_path, {"MAX_CONCURRENT_UPDATE": "1"}):

                async def written() -> bool:
                    found = await kube.get(SHADOWS, "brs-pg-0", namespace=c.NAMESPACE)
                    return c.WAITING_ANNOTATION in (found["metadata"].get("annotations") or {})

                await eventually(written, within=60, what="the waiting annotation")
                rows, _, text = await status(cluster)
        finally:
            with contextlib.suppress(ApiError):
                await kube.delete(
                    PODS, "backup-0", namespace=GATE_NAMESPACE, options={"gracePeriodSeconds": 0}
                )
    row = rows["pg-0"]
    verdict = row["controllerVerdict"]
    assert (row["phase"], row["reason"]) == ("Waiting", None)  # only the controller could tell
    blocked = f"blocked by the pods gate: pod {GATE_NAMESPACE}/backup-0 matches the blocking selector"
    assert verdict["reason"] == "GateBlocked"
    assert verdict["message"].startswith(blocked), verdict
    assert Timestamp.parse(verdict["since"]).instant <= datetime.now(UTC)
    assert row["why"].startswith(blocked), row
    line = next(line for line in text.splitlines() if line.startswith("pg-0 "))
    assert blocked in line, text
