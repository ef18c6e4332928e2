import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
import respx
from prometheus_client import CollectorRegistry

from brupop.notify.events import Event, Notice
from brupop.notify.payloads import SinkKind
from brupop.notify.sender import Notifier, backoff_delay, retry_after_seconds
from brupop.notify.settings import NotifySettings, SecretUrl, SinkSettings
from tests.unit.notify.clock import AT

HOOK = "https://hooks.example.com/services/T/B/token"
CHAT = "https://chat.example.com/hooks/token"


def settings(**changes: object) -> NotifySettings:
    base = NotifySettings(
        sinks=(
            SinkSettings(SinkKind.WEBHOOK, SecretUrl(HOOK), frozenset({Event.NODE_FAILED})),
            SinkSettings(SinkKind.SLACK, SecretUrl(CHAT), frozenset(Event)),
        ),
        attempts=3,
        backoff=0.001,
        max_backoff=0.01,
        timeout=1.0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def notice(event: Event, node: str) -> Notice:
    return Notice(event=event, at=AT, node=node, to_version="1.20.0", reason="boom")


def count(registry: CollectorRegistry, sink: str, outcome: str) -> float | None:
    return registry.get_sample_value("brupop_notifications_total", {"sink": sink, "outcome": outcome})


@pytest.fixture
async def running() -> AsyncIterator[tuple[Notifier, CollectorRegistry]]:
    registry = CollectorRegistry()
    notifier = Notifier(settings(), registry=registry, jitter=lambda: 0.5)
    task = asyncio.create_task(notifier.run())
    yield notifier, registry
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def settle(notifier: Notifier) -> None:
    async with asyncio.timeout(10):
        await notifier.settled()


@respx.mock
async def test_each_destination_gets_the_events_it_subscribed_to_in_order(
    running: tuple[Notifier, CollectorRegistry],
) -> None:
    notifier, registry = running
    hook = respx.post(HOOK).respond(200)
    chat = respx.post(CHAT).respond(200, text="ok")
    notifier.notify(notice(Event.NODE_STARTED, "a"))
    notifier.notify(notice(Event.NODE_FAILED, "a"))
    notifier.notify(notice(Event.NODE_DONE, "b"))
    await settle(notifier)
    assert [json.loads(c.request.content)["event"] for c in hook.calls] == ["node-failed"]
    assert hook.calls[0].request.headers["Content-Type"] == "application/json"
    assert [json.loads(c.request.content)["text"] for c in chat.calls] == [
        "Node a: updating from  to 1.20.0 (pool )",
        "Node a: update to 1.20.0 failed: boom",
        "Node b now runs 1.20.0 (/ done in pool )",
    ]
    assert (count(registry, "webhook", "sent"), count(registry, "slack", "sent")) == (1, 3)
    assert count(registry, "slack", "failed") == 0


@respx.mock
async def test_server_errors_are_retried_until_one_succeeds(
    running: tuple[Notifier, CollectorRegistry],
) -> None:
    notifier, registry = running
    hook = respx.post(HOOK).mock(side_effect=[httpx.Response(503), httpx.Response(429), httpx.Response(204)])
    notifier.notify(notice(Event.NODE_FAILED, "a"))
    await settle(notifier)
    assert hook.call_count == 3
    assert count(registry, "webhook", "sent") == 1
    assert registry.get_sample_value("brupop_notification_retries_total", {"sink": "webhook"}) == 2


@respx.mock
async def test_a_refusal_is_final_and_a_dead_receiver_fails_after_its_attempts(
    running: tuple[Notifier, CollectorRegistry],
) -> None:
    notifier, registry = running
    hook = respx.post(HOOK).respond(404, text="no_service")
    chat = respx.post(CHAT).mock(side_effect=httpx.ConnectError("refused"))
    notifier.notify(notice(Event.NODE_FAILED, "a"))
    await settle(notifier)
    assert hook.call_count == 1
    assert chat.call_count == 3
    assert (count(registry, "webhook", "failed"), count(registry, "slack", "failed")) == (1, 1)
    assert registry.get_sample_value("brupop_notification_retries_total", {"sink": "slack"}) == 2


@respx.mock
async def test_redirects_are_not_followed() -> None:
    registry = CollectorRegistry()
    notifier = Notifier(settings(), registry=registry)
    respx.post(HOOK).respond(302, headers={"Location": "https://elsewhere.example.com/"})
    elsewhere = respx.post("https://elsewhere.example.com/").respond(200)
    notifier.notify(notice(Event.NODE_FAILED, "a"))
    task = asyncio.create_task(notifier.run())
    await settle(notifier)
    task.cancel()
    assert not elsewhere.called
    assert count(registry, "webhook", "failed") == 1


@respx.mock
async def test_a_full_queue_drops_the_oldest_and_counts_it() -> None:
    registry = CollectorRegistry()
    notifier = Notifier(settings(queue_size=2), registry=registry)
    chat = respx.post(CHAT).respond(200)
    respx.post(HOOK).respond(200)
    for node in "abcde":
        notifier.notify(notice(Event.NODE_DONE, node))
    assert registry.get_sample_value("brupop_notification_queue_length", {"sink": "slack"}) == 2
    task = asyncio.create_task(notifier.run())
    await settle(notifier)
    task.cancel()
    assert [json.loads(c.request.content)["text"][:6] for c in chat.calls] == ["Node d", "Node e"]
    assert (count(registry, "slack", "dropped"), count(registry, "slack", "sent")) == (3, 2)
    assert registry.get_sample_value("brupop_notification_queue_length", {"sink": "slack"}) == 0


@pytest.mark.parametrize(
    ("attempt", "jitter", "retry_after", "delay"),
    [
        (1, 0.0, 0.0, 0.5),  # half of the first step at the least
        (1, 1.0, 0.0, 1.0),  # all of it at the most
        (3, 0.5, 0.0, 3.0),  # doubling: 4 s, jittered to 3/4
        (9, 1.0, 0.0, 60.0),  # capped
        (1, 0.0, 7.0, 7.0),  # never sooner than the receiver asked
        (1, 0.0, 600.0, 60.0),  # but within the cap
    ],
)
def test_back_off_doubles_is_jittered_and_honours_retry_after(
    attempt: int, jitter: float, retry_after: float, delay: float
) -> None:
    got = backoff_delay(attempt, first=1.0, cap=60.0, jitter=jitter, retry_after=retry_after)
    assert got == pytest.approx(delay)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [(None, 0.0), ("7", 7.0), ("1.5", 1.5), ("-3", 0.0), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
def test_retry_after_is_read_in_seconds(header: str | None, seconds: float) -> None:
    assert retry_after_seconds(header) == seconds


async def test_without_destinations_notify_does_nothing_and_run_returns() -> None:
    notifier = Notifier(NotifySettings(), registry=CollectorRegistry())
    notifier.notify(notice(Event.NODE_FAILED, "a"))
    await notifier.run()
    await settle(notifier)


async def test_an_unexpected_error_fails_one_notice_and_the_queue_goes_on() -> None:
    calls: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content)["node"])
        if len(calls) == 1:
            raise RuntimeError("a bug below httpx")
        return httpx.Response(200)

    registry = CollectorRegistry()
    only_hook = settings(sinks=settings().sinks[:1])
    notifier = Notifier(only_hook, registry=registry, transport=httpx.MockTransport(answer))
    notifier.notify(notice(Event.NODE_FAILED, "a"))
    notifier.notify(notice(Event.NODE_FAILED, "b"))
    task = asyncio.create_task(notifier.run())
    await settle(notifier)
    task.cancel()
    assert calls == ["a", "b"]
    assert (count(registry, "webhook", "failed"), count(registry, "webhook", "sent")) == (1, 1)
