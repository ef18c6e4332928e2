"""The controller's notifications on the real control plane: `brupop controller` as its own process under
the chart's RBAC (as in `test_policies`), a pool of nodes whose test agents do what each spec asks (one
fails), and a local receiver (`integ.receiver`, a real HTTP server) as the webhook. The rollout is told in
order; a receiver that never answers, and one that refuses every connection, delay nothing and end in
counted failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from brupop.kube.client import KubeClient
from integ.cluster import ClusterState
from integ.kubetools import eventually
from integ.receiver import Receiver, receiving, refusing
from tests.integ.test_policies import POLICIES, agents, controller, done, names, policy, settled, world

pytestmark = pytest.mark.integration


async def told(hook: Receiver, event: str) -> bool:
    return any(request.json()["event"] == event for request in hook.requests)


async def test_the_controller_tells_a_rollout_with_one_failure_in_order(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path
) -> None:
    nodes = names("nt", 3)
    async with (
        receiving() as hook,
        world(kube, {"notify": nodes}),
        agents(kube, "nt-", failing={"nt-0"}),
    ):
        await kube.create(POLICIES, policy("notify-test", "notify", maxConcurrent=1))
        env = {
            "MAX_CONCURRENT_UPDATE": "1",
            "NOTIFY_WEBHOOK_URL": hook.url,
            "NOTIFY_EVENTS": "all",
            "NOTIFY_CLUSTER_NAME": "integ",
        }
        async with controller(cluster, kube, tmp_path, env):
            await eventually(lambda: done(kube, nodes[1:]), within=90, what="the other nodes to update")
            await eventually(lambda: told(hook, "rollout-done"), within=30, what="the rollout told done")
    payloads: list[dict[str, Any]] = [request.json() for request in hook.requests]
    assert [(p["event"], p["node"]) for p in payloads] == [
        ("rollout-started", None),
        ("node-started", "nt-0"),
        ("node-failed", "nt-0"),
        ("node-started", "nt-1"),
        ("node-done", "nt-1"),
        ("node-started", "nt-2"),
        ("node-done", "nt-2"),
        ("rollout-done", None),
    ]
    assert {p["policy"] for p in payloads} == {"notify-test"}
    assert {p["cluster"] for p in payloads} == {"integ"}
    started, failed, finished = payloads[0], payloads[2], payloads[-1]
    assert (started["toVersion"], started["total"]) == ("1.1.0", 3)
    assert started["text"] == "Rollout to Bottlerocket 1.1.0 started in pool notify-test (3 nodes)"
    assert (failed["fromVersion"], failed["toVersion"]) == ("1.0.0", "1.1.0")
    assert failed["reason"], "the failure's reason, as the history tells it"
    assert (finished["done"], finished["total"]) == (2, 3)
    assert {request.path for request in hook.requests} == {"/hook"}


async def test_receivers_that_never_answer_or_refuse_delay_nothing(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path
) -> None:
    nodes = names("nu", 2)
    with refusing() as refused:
        async with (
            receiving(lambda _: None) as hanging,  # holds each request open, never answers
            world(kube, {"unreachable": nodes}),
            agents(kube, "nu-"),
        ):
            await kube.create(POLICIES, policy("notify-unreachable", "unreachable", maxConcurrent=1))
            env = {
                "MAX_CONCURRENT_UPDATE": "1",
                "NOTIFY_WEBHOOK_URL": hanging.url,
                "NOTIFY_SLACK_WEBHOOK_URL": refused,
                "NOTIFY_EVENTS": "all",
                "NOTIFY_TIMEOUT_SECONDS": "3600",
                "NOTIFY_ATTEMPTS": "2",
            }
            async with controller(cluster, kube, tmp_path, env) as running:
                await eventually(lambda: done(kube, nodes), within=90, what="the rollout to go through")
                await eventually(lambda: settled(kube, nodes), what="the nodes to settle")
                # The whole rollout went through while the webhook's first notice still waits for an answer.
                assert (len(hanging.requests), hanging.answered) == (1, 0)
                assert hanging.requests[0].json()["event"] == "rollout-started"

                async def slack_failed() -> bool:
                    failed = await running.metric(
                        "brupop_notifications_total", sink="slack", outcome="failed"
                    )
                    return failed is not None and failed >= 1

                await eventually(slack_failed, within=60, what="the refused notices counted as failed")
                assert await running.metric("brupop_notification_retries_total", sink="slack") >= 1  # type: ignore[operator]
                assert await running.metric("brupop_notifications_total", sink="webhook", outcome="sent") == 0
