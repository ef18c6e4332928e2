"""Kubernetes Events recorded in the background, so `kubectl get events` and `kubectl describe node` say what
brupop did to a node, in order.

They are created through the core API (`v1`), with `eventTime` and the reporting controller as
`events.k8s.io/v1` has them, and also `firstTimestamp`, `lastTimestamp`, `count` and `source`, which
`events.k8s.io/v1` refuses on create: `kubectl describe` (v1.34) sorts Events by `lastTimestamp` alone, so
without it an update's steps were listed in any order. (`lastTimestamp` has whole seconds: steps within one
second may still show in any order; `kubectl events` sorts by `eventTime`.)

Recording never blocks or fails the step it describes: `record` only queues the Event (a bounded queue; a
full one drops it with a log line), and one task sends them, each bounded in time. Repeats are held back: one
Event per (object, reason, note) per `repeat_after` seconds, and at most `burst` Normal and `burst` Warning
Events in any `per` seconds, so a drain that keeps being refused reports itself without flooding the API
server, and a pass that starts many nodes (Normal) cannot crowd out the one Warning that says a policy halted.
A note is cut to the 1,024 bytes (not characters) the API server accepts. `flush` lets a process that stops
send what it queued last, within a bound.

Events about cluster-scoped objects (Nodes) go to the `default` namespace, where the kubelet files its own.
`kubectl describe` finds an object's Events by its UID; a caller that does not know it (the apiserver acting
for a node knows the Node's, not the shadow's) names the resource to look it up in, and the sender does the
lookup, so the step never waits for it. A failed lookup sends the Event without the UID.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import structlog

from brupop.kube.client import CORE_EVENTS, SHADOWS, KubeClient, Resource
from brupop.kube.leader import micro_time
from brupop.models.constants import API_VERSION_V2, KIND, shadow_name

log = structlog.get_logger("brupop.events")

NODE_EVENTS_NAMESPACE: Final = "default"
SEND_TIMEOUT: Final = 5.0
MESSAGE_BYTES: Final = 1024
"""The longest `message` the API server accepts, in bytes of UTF-8."""


@dataclass(frozen=True, slots=True)
class Regarding:
    """The object an Event is about."""

    api_version: str
    kind: str
    name: str
    uid: str | None = None
    namespace: str | None = None
    lookup: Resource | None = None
    """Where the sender finds the UID when it is None."""

    @classmethod
    def node(cls, name: str, uid: str | None = None) -> Regarding:
        return cls("v1", "Node", name, uid)

    @classmethod
    def shadow(cls, node: str, *, namespace: str, uid: str | None = None) -> Regarding:
        """The BottlerocketShadow of `node`."""
        return cls(API_VERSION_V2, KIND, shadow_name(node), uid, namespace, lookup=SHADOWS)


class EventRecorder:
    def __init__(
        self,
        kube: KubeClient,
        *,
        controller: str,
        instance: str,
        queue_size: int = 100,
        repeat_after: float = 60.0,
        burst: int = 20,
        per: float = 10.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._kube = kube
        self._controller = controller
        self._instance = instance
        self._queue: asyncio.Queue[tuple[dict[str, Any], Regarding]] = asyncio.Queue(queue_size)
        self._repeat_after = repeat_after
        self._burst = burst
        self._per = per
        self._clock = clock
        self._last: dict[tuple[str, str, str, str], float] = {}
        self._recent: dict[bool, deque[float]] = {False: deque(), True: deque()}
        """Warning or not -> when the latest Events of that type were queued."""

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    def record(
        self,
        regarding: Regarding,
        *,
        reason: str,
        note: str,
        action: str | None = None,
        warning: bool = False,
    ) -> None:
        """Queue an Event; returns at once (see the module docstring for what is held back)."""
        now = self._now()
        key = (regarding.kind, regarding.name, reason, note)
        last = self._last.get(key)
        if last is not None and now - last < self._repeat_after:
            return
        recent = self._recent[warning]
        while recent and now - recent[0] >= self._per:
            recent.popleft()
        if len(recent) >= self._burst:
            log.info("event held back (too many)", regarding=regarding.name, reason=reason)
            return
        if len(self._last) > 4096:
            self._last = {k: t for k, t in self._last.items() if now - t < self._repeat_after}
        namespace = regarding.namespace or NODE_EVENTS_NAMESPACE
        moment = datetime.now(UTC)
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{regarding.name}-", "namespace": namespace},  # not ".": validated
            "involvedObject": {
                k: v
                for k, v in {
                    "apiVersion": regarding.api_version,
                    "kind": regarding.kind,
                    "name": regarding.name,
                    "uid": regarding.uid,
                    "namespace": regarding.namespace,
                }.items()
                if v
            },
            "reason": reason,
            "message": note.encode()[:MESSAGE_BYTES].decode(errors="ignore"),
            "type": "Warning" if warning else "Normal",
            "action": action or reason,
            "eventTime": micro_time(moment),
            "firstTimestamp": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastTimestamp": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "count": 1,
            "source": {"component": self._controller},
            "reportingComponent": self._controller,
            "reportingInstance": self._instance,
        }
        try:
            self._queue.put_nowait((event, regarding))
        except asyncio.QueueFull:
            log.warning("event dropped (queue full)", regarding=regarding.name, reason=reason)
            return
        self._last[key] = now
        recent.append(now)

    async def run(self) -> None:
        """Send queued Events until cancelled; a failure drops the Event with a log line."""
        while True:
            event, regarding = await self._queue.get()
            try:
                await self._send(event, regarding)
            finally:
                self._queue.task_done()

    async def flush(self, within: float) -> None:
        """Wait, at most `within` seconds, until every queued Event has been sent or dropped (while `run`
        runs)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._queue.join()

    async def _send(self, event: dict[str, Any], regarding: Regarding) -> None:
        if regarding.uid is None and regarding.lookup is not None:
            await self._find_uid(event, regarding, regarding.lookup)
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                await self._kube.create(CORE_EVENTS, event, namespace=event["metadata"]["namespace"])
        except Exception as err:
            log.warning(
                "event not recorded",
                regarding=regarding.name,
                reason=event["reason"],
                error=str(err) or type(err).__name__,
            )

    async def _find_uid(self, event: dict[str, Any], regarding: Regarding, lookup: Resource) -> None:
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                found = await self._kube.get(lookup, regarding.name, namespace=regarding.namespace)
        except Exception as err:  # the sender must go on: the Event is sent without the UID
            error = str(err) or type(err).__name__
            log.info("event without the object's UID", regarding=regarding.name, error=error)
            return
        uid = (found.get("metadata") or {}).get("uid")
        if uid:
            event["involvedObject"]["uid"] = str(uid)
