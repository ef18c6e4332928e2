"""Drain a node: evict its pods through the Eviction API (so PodDisruptionBudgets are respected) and wait,
by watching the node's pods, until each one is gone. Bounded: after `time_limit` seconds the drain fails
with the pods still there and the PDBs that refused them, instead of blocking forever like the Rust
brupop (#650).

Which pods: the ones on the node when the drain begins (it begins after the cordon, so every pod bound
before the cordon is among them) that `brupop.policy.drain.must_leave` does not keep. A pod bound to the
node later is evicted only when it does not tolerate the cordon: then a scheduler bound it before it saw
the cordon, and it would die in the reboot without its eviction. One that tolerates the cordon was put on
the cordoned node on purpose (a replacement of a pod just evicted, from a workload with `tolerations:
[{operator: Exists}]`): evicting it would only bring the next one, in a loop, so it is left running and
reported. Late pods that do not tolerate the cordon are evicted however many come (a scheduler whose cache
missed the cordon, as after a kube-apiserver restart, binds each replacement back to the node; a
PodDisruptionBudget may cover them): an owner's first `LATE_EVICTIONS_PER_OWNER` at once, each later one
after a back-off, so a controller that sets `spec.nodeName` itself and ignores the cordon fails the drain
at its time limit instead of being rebooted over. Once late pods have come, the drain ends only after
`Pace.quiet` seconds in which no late pod came and no pod went: the next may be a moment behind the last
one's deletion. A StatefulSet makes a pod's successor, under the same name, only once it is gone, and a
scheduler that missed the cordon may bind it here: so when a StatefulSet's pod has gone, the drain ends
only once that successor is bound (elsewhere; bound here it is a late pod, evicted), or after `Pace.quiet`
seconds without one (the StatefulSet scaled down, or the successor cannot be scheduled yet). Waiting for
the successor instead of a fixed quiet took 4-5 s off every wave with a StatefulSet's pod (issue 20).

A pod is decided about once (by UID), however often the watch and the listings show it, except when a
listing misses a pod the drain waits for: the listing may be older than the watch's news, so the pod is
decided about again if it shows up once more.

How fast: at most `concurrency` evictions in flight and `rate` per second overall; the same pod is tried
again no sooner than a second later (longer with jittered back-off, or when the server asks for longer).

Answers (see `brupop.policy.drain.read_eviction`): evicted, gone, retried (a PDB refusal, throttling, a
server or transport error), waited for (a namespace being deleted: the namespace controller deletes its
pods, an eviction never succeeds), or refused for good (several PDBs matching one pod, an invalid request,
and no permission once it has lasted `Pace.denials_settle` seconds: a kube-apiserver that has just started
denies until its authorizer has caught up): a refusal for good fails the drain, naming the pod and the
answer.

Evictions refused for long are reported while they last (`Notice`): the pod, the answer, the PDBs. One
case is recognised: a PDB that counts the pod as disrupted (`status.disruptedPods`) while the pod lives
on without a deletionTimestamp: an eviction whose pod deletion was lost (the kube-apiserver charges the PDB
before it deletes the pod, and a client that goes away mid-request can cancel the delete). The budget is
held until the disruption controller expires the entry, two minutes after it was written; the drain says
so, names both, and tries the pod again as the entry expires.

A repeated drain starts over from the node's current pods, so it continues where an interrupted one stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

import structlog

from brupop.kube.informer import resource_version
from brupop.kube.retry import Backoff
from brupop.policy.drain import (
    Eviction,
    Outcome,
    controller_kind,
    is_terminating,
    must_leave,
    owner_key,
    pod_key,
    tolerates_cordon,
)

log = structlog.get_logger("brupop.drain")

Obj = dict[str, Any]
LATE_EVICTIONS_PER_OWNER: Final = 3
"""Pods of one owner bound to the node after the drain began that are evicted at once; each later one
waits a back-off (at least `Pace.min_retry`) before its eviction."""
QUIET_WHAT: Final = "the node to be quiet (no pod bound to it or gone from it for a while)"
DISRUPTION_EXPIRY: Final = timedelta(minutes=2)
"""How long the disruption controller keeps a `disruptedPods` entry whose pod was not deleted."""


@dataclass(frozen=True, slots=True)
class Pace:
    """How fast a drain goes and when it speaks up."""

    concurrency: int = 5
    """Evictions in flight at once."""
    rate: float = 10.0
    """Evictions started per second, overall."""
    min_retry: float = 1.0
    """Seconds at least between two tries of one pod."""
    report_after: float = 30.0
    """Seconds a pod's evictions are refused before the drain says so; then again every `report_every`."""
    report_every: float = 300.0
    stale_after: float = 5.0
    """Age a `disruptedPods` entry of a living pod must have to count as a lost eviction rather than
    another client's eviction in flight."""
    denials_settle: float = 10.0
    """Seconds a pod's evictions must be denied (403 Forbidden) before the drain fails on it: a
    kube-apiserver that has just (re)started denies until its authorizer has caught up."""
    quiet: float = 5.0
    """Seconds without a pod bound to the node that a drain which saw late pods waits before it ends; also
    the longest it waits for a StatefulSet pod's successor to be bound."""
    successor_poll: float = 0.1
    """Seconds between the first two looks for a StatefulSet pod's successor; each later gap is 1.5 times
    the one before, up to `successor_poll_cap` (a successor is bound within a second or so, but one that
    stays pending would otherwise cost ten GETs a second for the whole `quiet`)."""
    successor_poll_cap: float = 0.5


class PodApi(Protocol):
    async def list_pods(self, node: str) -> tuple[list[Obj], str]:
        """The pods bound to `node`, and the list's resourceVersion."""
        ...

    def watch_pods(self, node: str, resource_version: str) -> AsyncIterator[tuple[str, Obj]]: ...

    async def evict(self, namespace: str, name: str, uid: str) -> Eviction:
        """The API server's answer to an eviction; raises only when no answer came (worth retrying)."""
        ...

    async def disrupted_pods(self, namespace: str, pdb: str) -> Mapping[str, str]:
        """The PDB's `status.disruptedPods`: pod name -> when it was counted (RFC 3339)."""
        ...

    async def get_pod(self, namespace: str, name: str) -> Obj | None:
        """The pod of that name wherever it is bound, or None when there is none."""
        ...


@dataclass(frozen=True, slots=True)
class Notice:
    """Something an operator should hear about while a drain runs (the apiserver logs it, records a
    Warning Event on the Node and counts it)."""

    reason: str
    """`EvictionRefused`, `StaleDisruption` or `LeftRunning`."""
    pod: str
    message: str
    pdbs: tuple[str, ...] = ()


class DrainError(Exception):
    """A drain that did not finish; `remaining` are the pods still there."""

    def __init__(self, message: str, *, node: str, remaining: list[str], pdbs: list[str]) -> None:
        super().__init__(message)
        self.node = node
        self.remaining = remaining
        self.pdbs = pdbs


class DrainTimeoutError(DrainError):
    def __init__(
        self, node: str, remaining: list[str], pdbs: list[str], seconds: float, answers: str, late: int
    ) -> None:
        blocked = f"; blocked by PodDisruptionBudget(s) {', '.join(pdbs)}" if pdbs else ""
        last = f"; last answers: {answers}" if answers else ""
        bound = (
            f"; {late} pod(s) not tolerating the cordon were bound to the node after its cordon (a scheduler "
            "or controller that ignores it)"
            if late
            else ""
        )
        left = (
            f"with {len(remaining)} pod(s) left: {', '.join(remaining)}"
            if remaining
            else f"waiting for {QUIET_WHAT}"
        )
        super().__init__(
            f"drain of node {node} timed out after {seconds:g}s {left}{blocked}{last}{bound}",
            node=node,
            remaining=remaining,
            pdbs=pdbs,
        )


class EvictionRefusedError(DrainError):
    """The API server refused a pod's eviction for good (it would refuse every retry)."""

    def __init__(self, node: str, pod: str, answer: Eviction, remaining: list[str]) -> None:
        super().__init__(
            f"drain of node {node} failed: the eviction of {pod} was refused ({answer.name}): "
            f"{answer.message}",
            node=node,
            remaining=remaining,
            pdbs=sorted(answer.pdbs),
        )
        self.pod = pod
        self.answer = answer


@dataclass(frozen=True, slots=True)
class DrainResult:
    evicted: int
    """Pods that had to leave and are gone."""
    left_running: list[str]
    """Pods bound after the drain began that tolerate the cordon, left running."""


class _Pacer:
    """At most `rate` starts per second overall: each caller waits for the next free slot."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = 0.0

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        slot = max(loop.time(), self._next)
        self._next = slot + self._interval
        await asyncio.sleep(slot - loop.time())


@dataclass
class _Target:
    """A pod that must go: its UID, the latest answer about it, since when it has been refused."""

    uid: str
    pod: Obj
    answer: Eviction | None = None
    refused_since: float | None = None
    denied_since: float | None = None
    """Since when every answer has been a denial (403 Forbidden)."""
    reported_at: float | None = None
    reported_disruption: str | None = None
    disruptions_seen: dict[str, tuple[str, float]] = field(default_factory=dict)
    """PDB -> the `disruptedPods` entry for this pod it last showed, and when (our monotonic clock) the drain
    first saw that entry."""
    waiting: bool = False
    """No more evictions: the pod is deleted by someone else (its namespace is terminating)."""


@dataclass
class _Drain:
    api: PodApi
    node: str
    notify: Callable[[Notice], None]
    pace: Pace
    retry: Backoff
    targets: dict[str, _Target] = field(default_factory=dict)
    """Pod key -> the pod we wait to disappear."""
    seen: set[str] = field(default_factory=set)
    """UIDs of every pod decided about (to evict, to leave, or kept by must_leave)."""
    late: dict[str, int] = field(default_factory=dict)
    """Owner -> late pods to evict."""
    stirred: float | None = None
    """When a late pod last came, or a pod went after one had come: loop time; the drain ends no sooner
    than `Pace.quiet` after it."""
    successors: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    """StatefulSet pods gone, by key: the wait for each one's successor to be bound; the drain ends only
    once none is left."""
    left_running: list[str] = field(default_factory=list)
    departed: set[str] = field(default_factory=set)
    """UIDs of the pods that had to leave and are gone."""
    refusal: EvictionRefusedError | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.pace.concurrency)
        self.pacer = _Pacer(self.pace.rate)

    # Which pods must go.
    def begin(self, pods: list[Obj]) -> None:
        for pod in pods:
            self.seen.add(_uid(pod))
            if not must_leave(pod):
                self._add(pod)

    def arrived(self, pod: Obj) -> None:
        """A pod bound to the node after the drain began."""
        uid = _uid(pod)
        if uid in self.seen:
            return
        self.seen.add(uid)
        if must_leave(pod):
            return
        key = pod_key(pod)
        if tolerates_cordon(pod):
            self._leave(key, "it tolerates the cordon and was bound to the node after the drain began")
            return
        owner = owner_key(pod)
        earlier = self.late.get(owner, 0)
        self.late[owner] = earlier + 1
        self._stir()
        log.info("a pod was bound to the cordoned node; evicting it too", node=self.node, pod=key)
        beyond = earlier - LATE_EVICTIONS_PER_OWNER
        self._add(pod, after=0.0 if beyond < 0 else max(self.pace.min_retry, self.retry.delay(beyond)))

    def _leave(self, key: str, why: str) -> None:
        self.left_running.append(key)
        log.warning("pod left running on the drained node", node=self.node, pod=key, why=why)
        self.notify(Notice("LeftRunning", key, f"pod {key} is left running on node {self.node}: {why}"))

    def _stir(self) -> None:
        self.stirred = asyncio.get_running_loop().time()

    def quiet_left(self) -> float:
        """Seconds until the node has been quiet for `Pace.quiet` (see `stirred`; 0 when it never stirred)."""
        if self.stirred is None:
            return 0.0
        return max(0.0, self.stirred + self.pace.quiet - asyncio.get_running_loop().time())

    def _add(self, pod: Obj, *, after: float = 0.0) -> None:
        key, uid = pod_key(pod), _uid(pod)
        self.targets[key] = _Target(uid=uid, pod=pod)
        self.departed.discard(uid)
        if not is_terminating(pod):
            task = asyncio.create_task(self._evict(key, uid, after))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def gone(self, key: str, uid: str | None = None) -> None:
        target = self.targets.get(key)
        if target is not None and (uid is None or target.uid == uid):
            del self.targets[key]
            self.departed.add(target.uid)
            if self.late:
                self._stir()
            elif controller_kind(target.pod) == "StatefulSet":  # its successor comes once it is gone
                self._await_successor(key, target.uid)
        if not self.targets:
            self.done.set()

    def _await_successor(self, key: str, uid: str) -> None:
        earlier = self.successors.get(key)
        if earlier is not None:
            earlier.cancel()
        task = asyncio.create_task(self._successor(key, uid))
        self.successors[key] = task
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _successor(self, key: str, uid: str) -> None:
        """Look for the pod under `key`'s name that is not `uid` until it is bound, within `Pace.quiet`:
        bound here, it is a late pod."""
        namespace, name = key.split("/", 1)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.pace.quiet
        gap = self.pace.successor_poll
        try:
            while loop.time() < deadline:
                try:
                    async with asyncio.timeout(deadline - loop.time()):
                        pod = await self.api.get_pod(namespace, name)
                except TimeoutError:
                    return  # the wait is over: what the transport did not answer in time is not waited for
                except Exception as err:  # an answer missed: look again, the wait is bounded anyway
                    log.info("cannot read a StatefulSet pod's successor", pod=key, error=str(err))
                    pod = None
                bound = (pod.get("spec") or {}).get("nodeName") if pod is not None else None
                if pod is not None and bound and _uid(pod) != uid:
                    if bound == self.node:
                        self.arrived(pod)
                    return
                await asyncio.sleep(gap)
                gap = min(gap * 1.5, self.pace.successor_poll_cap)
        finally:
            if self.successors.get(key) is asyncio.current_task():
                del self.successors[key]
            if not self.targets and not self.successors:
                self.done.set()

    async def settled(self) -> None:
        """Until no StatefulSet pod's successor is awaited and the node has been quiet (see `stirred`)."""
        while self.successors:
            await asyncio.wait(list(self.successors.values()))
        await asyncio.sleep(self.quiet_left())

    def forget_missing(self, current: list[Obj]) -> None:
        present = {pod_key(p): _uid(p) for p in current}
        for key, target in list(self.targets.items()):
            if present.get(key) != target.uid:
                self.gone(key)
                self.seen.discard(target.uid)  # the listing may be older than the watch: decide again
        for pod in current:
            self.arrived(pod)

    # Evicting one pod.
    async def _evict(self, key: str, uid: str, after: float) -> None:
        """Evict the pod `key` with `uid` until it is gone (a pod replaced under its name is another's)."""
        await asyncio.sleep(after)
        attempt = 0
        while (target := self.targets.get(key)) is not None and target.uid == uid and not target.waiting:
            async with self.slots:
                await self.pacer.wait()
                meta = target.pod["metadata"]
                try:
                    answer = await self.api.evict(meta["namespace"], meta["name"], target.uid)
                except Exception as err:  # no answer: the API server is restarting, the network is down
                    answer = Eviction.unreachable(str(err))
            delay = await self._answered(key, target, answer, attempt)
            if delay is None:
                return
            await asyncio.sleep(delay)
            attempt += 1

    async def _answered(self, key: str, target: _Target, answer: Eviction, attempt: int) -> float | None:
        """Act on an answer; the seconds until the next try, or None when trying is over."""
        target.answer = answer
        match answer.outcome:
            case Outcome.EVICTED:
                target.refused_since = None
                return None  # the watch sees the pod go
            case Outcome.GONE:
                self.gone(key, target.uid)
                return None
            case Outcome.WAIT:
                target.waiting = True
                log.info("waiting for the pod to be deleted", node=self.node, pod=key, answer=answer.name)
                return None
            case Outcome.REFUSED:
                self._refused(key, answer)
                return None
        loop = asyncio.get_running_loop()
        now = loop.time()
        if target.refused_since is None:
            target.refused_since = now
        if answer.outcome is not Outcome.DENIED:
            target.denied_since = None
        elif target.denied_since is None:
            target.denied_since = now
        elif now - target.denied_since >= self.pace.denials_settle:
            self._refused(key, answer)
            return None
        delay: float = max(self.pace.min_retry, self.retry.delay(attempt), answer.retry_after)
        expires_in = await self._stale_disruption(key, target, answer)
        if expires_in is not None:
            return max(self.pace.min_retry, min(delay, expires_in))
        refused_for = now - target.refused_since
        due = target.reported_at is None or now - target.reported_at >= self.pace.report_every
        if refused_for >= self.pace.report_after and due:
            target.reported_at = now
            pdbs = f" (PodDisruptionBudget {', '.join(sorted(answer.pdbs))})" if answer.pdbs else ""
            message = (
                f"the eviction of pod {key} has been refused for {refused_for:.0f}s{pdbs}: "
                f"{answer.name}: {answer.message}"
            )
            log.warning(
                "evictions keep being refused",
                node=self.node,
                pod=key,
                answer=answer.name,
                pdbs=sorted(answer.pdbs),
            )
            self.notify(Notice("EvictionRefused", key, message, tuple(sorted(answer.pdbs))))
        return delay

    def _refused(self, key: str, answer: Eviction) -> None:
        """A refusal for good: the drain ends with it (the first one, when several pods are refused)."""
        if self.refusal is None:
            self.refusal = EvictionRefusedError(self.node, key, answer, sorted(self.targets))
        self.done.set()

    async def _stale_disruption(self, key: str, target: _Target, answer: Eviction) -> float | None:
        """When a PDB that refused `key` counts it as disrupted although it lives on (an eviction whose
        delete was lost): report it once per entry and return the seconds until the entry expires.

        An entry's age is how long this drain has seen it, on its own monotonic clock: its time was written
        by the kube-apiserver's clock, which may differ from ours by more than `Pace.stale_after` (a clock
        ahead took another client's eviction in flight for a lost one; one behind hid a lost one)."""
        if not answer.pdbs or is_terminating(target.pod):
            return None
        meta = target.pod["metadata"]
        mono = asyncio.get_running_loop().time()
        for pdb in sorted(answer.pdbs):
            try:
                disrupted = await self.api.disrupted_pods(meta["namespace"], pdb)
            except Exception as err:
                log.info("cannot read the PodDisruptionBudget", pdb=pdb, error=str(err))
                continue
            since = disrupted.get(meta["name"])
            counted = _instant(since)
            if since is None or counted is None:
                target.disruptions_seen.pop(pdb, None)
                continue
            seen = target.disruptions_seen.get(pdb)
            if seen is None or seen[0] != since:
                seen = target.disruptions_seen[pdb] = (since, mono)
            if mono - seen[1] < self.pace.stale_after:
                continue
            expires = counted + DISRUPTION_EXPIRY
            if since != target.reported_disruption:
                target.reported_disruption = since
                target.reported_at = mono
                message = (
                    f"PodDisruptionBudget {meta['namespace']}/{pdb} has counted pod {key} as disrupted since "
                    f"{since}, but the pod was never deleted (an eviction whose delete was lost, e.g. when "
                    "an apiserver replica died mid-eviction); the budget stays used until the disruption "
                    f"controller expires the entry at {expires.isoformat(timespec='seconds')}, and the "
                    "drain tries the pod again then"
                )
                log.warning(
                    "a lost eviction holds the PodDisruptionBudget",
                    node=self.node,
                    pod=key,
                    pdb=pdb,
                    since=since,
                )
                self.notify(Notice("StaleDisruption", key, message, (pdb,)))
            # By our clock, and at the latest the expiry after we first saw it (our clock may lag theirs).
            by_clock = (expires - datetime.now(UTC)).total_seconds()
            by_sight = seen[1] + DISRUPTION_EXPIRY.total_seconds() - mono
            return max(min(by_clock, by_sight), 0.0) + 0.5
        return None

    # Watching the node's pods.
    async def watch(self, version: str) -> None:
        since, failures = version, 0
        while True:
            try:
                heard = False
                async for kind, pod in self.api.watch_pods(self.node, since):
                    heard = True
                    since = resource_version(pod) or since
                    key, uid = pod_key(pod), _uid(pod)
                    target = self.targets.get(key)
                    if kind == "DELETED":
                        self.gone(key, uid)
                    elif kind in ("ADDED", "MODIFIED"):
                        if target is not None and target.uid != uid:
                            self.gone(key)  # replaced under the same name (StatefulSet): the old pod is gone
                        elif target is not None:
                            target.pod = pod
                        self.arrived(pod)
                # The stream ended (server-side timeout): catch up from a fresh list, then watch again. One
                # that ended with no event is paced like a failure: a server or proxy that closes watches at
                # once would otherwise make this a loop of list and watch calls.
                if heard:
                    failures = 0
                else:
                    await asyncio.sleep(self.retry.delay(failures))
                    failures += 1
                current, since = await self.api.list_pods(self.node)
                self.forget_missing(current)
            except Exception as err:
                log.warning("watching pods failed; retrying", node=self.node, error=str(err))
                await asyncio.sleep(self.retry.delay(failures))
                failures += 1
                with contextlib.suppress(Exception):
                    current, since = await self.api.list_pods(self.node)
                    self.forget_missing(current)


def _uid(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("uid", ""))


def _instant(text: object) -> datetime | None:
    """An RFC 3339 time as the API server writes it (`2024-05-01T10:00:00Z`), or None."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def drain(
    api: PodApi,
    node: str,
    *,
    time_limit: float,
    pace: Pace | None = None,
    backoff: Backoff | None = None,
    notify: Callable[[Notice], None] = lambda notice: None,
) -> DrainResult:
    """Evict every pod on `node` that must go and wait until they are gone (see the module docstring)."""
    work = _Drain(
        api=api,
        node=node,
        notify=notify,
        pace=pace or Pace(),
        retry=backoff or Backoff(base=1.0, cap=10.0),
    )
    pods, version = await api.list_pods(node)
    work.begin(pods)
    if not work.targets:
        log.info("drained", node=node, pods=0, left_running=work.left_running)
        return DrainResult(evicted=0, left_running=work.left_running)
    log.info("draining", node=node, pods=len(work.targets))
    watcher = asyncio.create_task(work.watch(version))
    try:
        async with asyncio.timeout(time_limit):
            while True:
                await work.done.wait()
                if work.refusal is not None:
                    break
                work.done.clear()
                # Nothing left to evict: once every StatefulSet successor is bound and the node is quiet
                # (`_Drain.settled`), a last listing finds a pod bound meanwhile that the watch has not
                # shown yet.
                await work.settled()
                current, _ = await api.list_pods(node)
                work.forget_missing(current)
                if not work.targets:
                    if not work.quiet_left() and not work.successors:
                        break
                    work.done.set()  # one came meanwhile and is gone already: wait out the quiet again
    except TimeoutError:
        remaining = sorted(work.targets)
        pdbs = sorted({pdb for t in work.targets.values() if t.answer for pdb in t.answer.pdbs})
        answers = ", ".join(
            f"{key}: {target.answer.name}" for key, target in sorted(work.targets.items()) if target.answer
        )
        late = sum(work.late.values())
        raise DrainTimeoutError(node, remaining, pdbs, time_limit, answers, late) from None
    finally:
        for task in (watcher, *work.tasks):
            task.cancel()
        await asyncio.gather(watcher, *work.tasks, return_exceptions=True)
    if work.refusal is not None:
        raise work.refusal
    evicted = len(work.departed)
    log.info("drained", node=node, pods=evicted, left_running=work.left_running)
    return DrainResult(evicted=evicted, left_running=work.left_running)
