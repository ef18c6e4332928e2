"""Notifications against a real local HTTP receiver: the sequence a rollout with one failure produces for
a generic webhook and a Slack destination (each with its own event filter, one answer a 500 that is
retried), and receivers that refuse, hang or fail: `notify()` returns before any of them answers, an
update step's loop keeps running, and each notice ends in its retries and a counted failure."""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from brupop.notify.events import Event, Notice
from brupop.notify.sender import Notifier
from brupop.notify.settings import NotifySettings
from integ.kubetools import eventually
from integ.receiver import Receiver, receiving, refusing

AT = datetime(2026, 3, 7, 2, 0, tzinfo=UTC)


def pool(
    event: Event, node: str | None = None, *, done: int | None = None, reason: str | None = None
) -> Notice:
    """A notice of pool `workers` (3 nodes) rolling out 1.20.0."""
    return Notice(
        event=event,
        at=AT,
        node=node,
        policy="workers",
        from_version=None if node is None else "1.19.0",
        to_version="1.20.0",
        reason=reason,
        done=done,
        total=3,
    )


def rollout_with_one_failure() -> list[Notice]:
    return [
        pool(Event.ROLLOUT_STARTED),
        pool(Event.NODE_STARTED, "a"),
        pool(Event.NODE_DONE, "a", done=1),
        pool(Event.NODE_STARTED, "b"),
        pool(Event.NODE_FAILED, "b", reason="the host booted back into 1.19.0"),
        pool(Event.NODE_STARTED, "c"),
        pool(Event.NODE_DONE, "c", done=2),
        pool(Event.ROLLOUT_DONE, done=2),
    ]


def count(registry: CollectorRegistry, sink: str, outcome: str) -> float:
    value = registry.get_sample_value("brupop_notifications_total", {"sink": sink, "outcome": outcome})
    return value or 0.0


@asynccontextmanager
async def notifier(settings: NotifySettings) -> AsyncIterator[tuple[Notifier, CollectorRegistry]]:
    registry = CollectorRegistry()
    running = Notifier(replace(settings, backoff=0.02, max_backoff=0.1), registry=registry)
    task = asyncio.create_task(running.run())
    try:
        yield running, registry
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.integration
async def test_a_rollout_with_one_failure_reaches_each_destination_as_filtered_and_in_order() -> None:
    async with (
        receiving() as hook,
        receiving(lambda number: 500 if number == 1 else 200) as chat,
    ):
        settings = NotifySettings.from_env(
            {
                "NOTIFY_WEBHOOK_URL": hook.url,
                "NOTIFY_SLACK_WEBHOOK_URL": chat.url,
                "NOTIFY_SLACK_EVENTS": "all",
                "NOTIFY_CLUSTER_NAME": "prod-eu",
                "NOTIFY_TEMPLATE_NODE_FAILED": ":x: *$node* failed to update to $to_version: $reason",
            }
        )
        async with notifier(settings) as (running, registry):
            for notice in rollout_with_one_failure():
                running.notify(notice)
            async with asyncio.timeout(30):
                await running.settled()

        assert [r.json()["event"] for r in hook.requests] == [
            "rollout-started",
            "node-failed",
            "rollout-done",
        ]
        assert [r.json()["text"] for r in hook.requests] == [
            "Rollout to Bottlerocket 1.20.0 started in pool workers (3 nodes)",
            ":x: *b* failed to update to 1.20.0: the host booted back into 1.19.0",
            "Rollout to 1.20.0 in pool workers done: 2/3 nodes on it",
        ]
        failed = hook.requests[1].json()
        assert (failed["cluster"], failed["node"], failed["fromVersion"], failed["done"]) == (
            "prod-eu",
            "b",
            "1.19.0",
            None,
        )
        assert {r.headers["content-type"] for r in hook.requests} == {"application/json"}

        texts = [r.json()["text"] for r in chat.requests]
        assert texts[1] == texts[2], "the 500 answer was retried with the same message"
        assert texts[:1] + texts[2:] == [
            "Rollout to Bottlerocket 1.20.0 started in pool workers (3 nodes)",
            "Node a: updating from 1.19.0 to 1.20.0 (pool workers)",
            "Node a now runs 1.20.0 (1/3 done in pool workers)",
            "Node b: updating from 1.19.0 to 1.20.0 (pool workers)",
            ":x: *b* failed to update to 1.20.0: the host booted back into 1.19.0",
            "Node c: updating from 1.19.0 to 1.20.0 (pool workers)",
            "Node c now runs 1.20.0 (2/3 done in pool workers)",
            "Rollout to 1.20.0 in pool workers done: 2/3 nodes on it",
        ]
        last = chat.requests[-1].json()
        assert last["blocks"][0] == {"type": "section", "text": {"type": "mrkdwn", "text": texts[-1]}}
        assert last["blocks"][1]["elements"][0]["text"] == "brupop · cluster prod-eu · rollout-done"
        assert (count(registry, "webhook", "sent"), count(registry, "slack", "sent")) == (3, 8)
        assert registry.get_sample_value("brupop_notification_retries_total", {"sink": "slack"}) == 1


@asynccontextmanager
async def refused() -> AsyncIterator[tuple[str, Receiver | None]]:
    with refusing() as url:
        yield url, None


@asynccontextmanager
async def answering(answer: Callable[[int], int | None]) -> AsyncIterator[tuple[str, Receiver | None]]:
    async with receiving(answer) as receiver:
        yield receiver.url, receiver


RECEIVERS: dict[str, Callable[[], AbstractAsyncContextManager[tuple[str, Receiver | None]]]] = {
    "refused": refused,
    "hanging": lambda: answering(lambda _: None),
    "500": lambda: answering(lambda _: 500),
}


@pytest.mark.integration
@pytest.mark.parametrize("kind", sorted(RECEIVERS))
async def test_an_unreachable_receiver_delays_nothing_and_ends_in_counted_failures(kind: str) -> None:
    async with RECEIVERS[kind]() as (url, receiver):
        settings = NotifySettings.from_env(
            {
                "NOTIFY_WEBHOOK_URL": url,
                "NOTIFY_EVENTS": "all",
                "NOTIFY_ATTEMPTS": "3",
                "NOTIFY_TIMEOUT_SECONDS": "0.3",
            }
        )
        async with notifier(settings) as (running, registry):
            steps = 0

            async def update_steps() -> None:  # what the controller does meanwhile
                nonlocal steps
                while True:
                    steps += 1
                    await asyncio.sleep(0)

            stepping = asyncio.create_task(update_steps())
            for notice in rollout_with_one_failure()[:3]:
                running.notify(notice)
            # notify() has returned for every notice, and no receiver has answered any of them.
            assert receiver is None or receiver.answered == 0
            started = steps

            async def all_failed() -> bool:
                return count(registry, "webhook", "failed") == 3

            await eventually(all_failed, within=30, what="three counted failures")
            assert steps > started + 100, "the loop kept running while the receiver failed"
            stepping.cancel()
            assert count(registry, "webhook", "sent") == 0
            assert registry.get_sample_value("brupop_notification_retries_total", {"sink": "webhook"}) == 6
            if receiver is not None:
                assert len(receiver.requests) == 9
                assert receiver.answered == (9 if kind == "500" else 0)
