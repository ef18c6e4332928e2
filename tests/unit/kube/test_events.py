"""`EventRecorder` on a faked Kubernetes API (respx): Events about Nodes go to `default` through the core API
with the reporting controller and the timestamps kubectl sorts by, Events about shadows to theirs (UID looked
up in the background), repeats and floods are held back, and a failing API server loses the Event but never
the caller's step."""

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
import respx

from brupop.kube.client import KubeClient
from brupop.kube.config import KubeConfig
from brupop.kube.events import EventRecorder, Regarding

SERVER = "https://kube.test:6443"
EVENTS = f"{SERVER}/api/v1/namespaces/default/events"
NODE = Regarding.node("node-a", "0b7c3c5e-8d4e-4a53-9b5e-3f1c2d4e5f60")


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def kube() -> AsyncIterator[KubeClient]:
    async with KubeClient(
        KubeConfig(server=SERVER, token="t"), transport=httpx.AsyncHTTPTransport()
    ) as client:
        yield client


class Sink:
    """The events endpoint: keeps what it receives and answers in turn (the last answer repeats)."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.events: list[dict[str, object]] = []
        self.answers = list(answers) or [httpx.Response(201, json={})]
        self.arrived = asyncio.Event()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.events.append(json.loads(request.content))
        self.arrived.set()
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def received(self, count: int) -> list[dict[str, object]]:
        async with asyncio.timeout(5):
            while len(self.events) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.events


@respx.mock
async def test_an_event_carries_the_timestamps_kubectl_describe_sorts_by(kube: KubeClient) -> None:
    """kubectl describe (v1.34) orders Events by `lastTimestamp` alone; events.k8s.io/v1 may not set it, and
    without it `describe node` listed an update's steps in any order (the list's, by generated name)."""
    sink = Sink()
    respx.post(EVENTS).mock(side_effect=sink)
    recorder = EventRecorder(kube, controller="brupop.bottlerocket.aws/apiserver", instance="pod-1")
    task = asyncio.create_task(recorder.run())
    recorder.record(NODE, reason="Cordoned", note="brupop cordoned the node to update it")
    (event,) = await sink.received(1)
    task.cancel()
    assert (event["apiVersion"], event["kind"], event["count"]) == ("v1", "Event", 1)
    first, last, micro = (str(event[k]) for k in ("firstTimestamp", "lastTimestamp", "eventTime"))
    assert first == last == micro[:19] + "Z"  # seconds: metav1.Time
    assert event["source"] == {"component": "brupop.bottlerocket.aws/apiserver"}
    assert (event["reportingComponent"], event["reportingInstance"]) == (
        "brupop.bottlerocket.aws/apiserver",
        "pod-1",
    )
    assert event["involvedObject"] == {"apiVersion": "v1", "kind": "Node", "name": "node-a", "uid": NODE.uid}
    assert event["metadata"] == {"generateName": "node-a-", "namespace": "default"}
    assert (event["reason"], event["message"], event["action"], event["type"]) == (
        "Cordoned",
        "brupop cordoned the node to update it",
        "Cordoned",
        "Normal",
    )


@respx.mock
async def test_repeats_and_floods_are_held_back(kube: KubeClient) -> None:
    sink = Sink()
    respx.post(EVENTS).mock(side_effect=sink)
    clock = Clock()
    recorder = EventRecorder(
        kube, controller="c", instance="i", repeat_after=60, burst=3, per=10, clock=clock
    )
    for _ in range(5):
        recorder.record(NODE, reason="EvictionRefused", note="same", warning=True)
    clock.now = 61
    recorder.record(NODE, reason="EvictionRefused", note="same", warning=True)  # repeated after a while
    for i in range(5):
        recorder.record(NODE, reason="Other", note=str(i))  # Normal: a burst of its own, then held back
    for reason in ("Late", "Later", "Latest"):  # Warnings 2 and 3 of the window at 61 s, then held back
        recorder.record(NODE, reason=reason, note="w", warning=True)
    task = asyncio.create_task(recorder.run())
    events = await sink.received(7)
    await recorder.flush(5)
    task.cancel()
    assert [(e["reason"], e["message"], e["type"]) for e in events] == [
        ("EvictionRefused", "same", "Warning"),
        ("EvictionRefused", "same", "Warning"),  # a minute later; it opened a new 10 s window of 3
        ("Other", "0", "Normal"),
        ("Other", "1", "Normal"),
        ("Other", "2", "Normal"),
        ("Late", "w", "Warning"),  # Normal Events never crowd out a Warning (a policy halted)
        ("Later", "w", "Warning"),
    ]


@respx.mock
async def test_a_note_is_cut_to_the_bytes_the_api_server_accepts_and_flush_sends_what_is_queued(
    kube: KubeClient,
) -> None:
    sink = Sink()
    respx.post(EVENTS).mock(side_effect=sink)
    recorder = EventRecorder(kube, controller="c", instance="i")
    recorder.record(NODE, reason="NodeHeld", note="held: " + "débogage noyau " * 80)
    recorder.record(NODE, reason="Other", note="n")
    task = asyncio.create_task(recorder.run())
    await recorder.flush(5)  # returns once both are sent
    task.cancel()
    assert [e["reason"] for e in sink.events] == ["NodeHeld", "Other"]
    message = str(sink.events[0]["message"])
    assert len(message.encode()) <= 1024
    assert message.startswith("held: débogage noyau débogage")


@respx.mock
async def test_a_failing_api_server_loses_the_event_and_nothing_else(kube: KubeClient) -> None:
    sink = Sink(httpx.ConnectError("refused"), httpx.Response(500), httpx.Response(201, json={}))
    respx.post(EVENTS).mock(side_effect=sink)
    recorder = EventRecorder(kube, controller="c", instance="i", queue_size=2)
    for reason in ("One", "Two", "Three"):  # the third finds the queue full: dropped at once
        recorder.record(NODE, reason=reason, note="n")
    task = asyncio.create_task(recorder.run())
    await sink.received(2)
    recorder.record(NODE, reason="Four", note="n")
    events = await sink.received(3)
    task.cancel()
    assert [e["reason"] for e in events] == ["One", "Two", "Four"]


SHADOW_EVENTS = f"{SERVER}/api/v1/namespaces/brupop-bottlerocket-aws/events"
SHADOW = f"{SERVER}/apis/brupop.bottlerocket.aws/v2/namespaces/brupop-bottlerocket-aws/bottlerocketshadows"


@respx.mock
async def test_an_event_on_a_shadow_whose_uid_is_looked_up_in_the_background(kube: KubeClient) -> None:
    """`kubectl describe brs` finds Events by the object's UID: a caller that does not know it (the
    apiserver acting for a node) leaves the lookup to the sender, so the step never waits for it."""
    sink = Sink()
    respx.post(SHADOW_EVENTS).mock(side_effect=sink)
    lookup = respx.get(f"{SHADOW}/brs-node-a").mock(
        return_value=httpx.Response(200, json={"metadata": {"name": "brs-node-a", "uid": "shadow-uid"}})
    )
    recorder = EventRecorder(kube, controller="c", instance="i")
    recorder.record(
        Regarding.shadow("node-a", namespace="brupop-bottlerocket-aws"), reason="Cordoned", note="n"
    )
    assert not lookup.called  # record() returned before any call
    task = asyncio.create_task(recorder.run())
    (event,) = await sink.received(1)
    task.cancel()
    assert event["involvedObject"] == {
        "apiVersion": "brupop.bottlerocket.aws/v2",
        "kind": "BottlerocketShadow",
        "name": "brs-node-a",
        "namespace": "brupop-bottlerocket-aws",
        "uid": "shadow-uid",
    }
    assert event["metadata"] == {"generateName": "brs-node-a-", "namespace": "brupop-bottlerocket-aws"}


@respx.mock
async def test_a_shadow_event_whose_lookup_fails_is_sent_without_the_uid(kube: KubeClient) -> None:
    sink = Sink()
    respx.post(SHADOW_EVENTS).mock(side_effect=sink)
    respx.get(f"{SHADOW}/brs-node-a").mock(return_value=httpx.Response(404, json={"reason": "NotFound"}))
    recorder = EventRecorder(kube, controller="c", instance="i")
    known = Regarding.shadow("node-a", namespace="brupop-bottlerocket-aws", uid="known-uid")
    recorder.record(Regarding.shadow("node-a", namespace="brupop-bottlerocket-aws"), reason="A", note="n")
    recorder.record(known, reason="B", note="n")  # a known UID costs no lookup
    task = asyncio.create_task(recorder.run())
    events = await sink.received(2)
    task.cancel()
    assert [e["involvedObject"].get("uid") for e in events] == [None, "known-uid"]  # type: ignore[union-attr]
    assert respx.calls.call_count == 3
