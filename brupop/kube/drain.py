"""Drain a node: evict its pods through the Eviction API (so PodDisruptionBudgets are respected) and wait,
by watching the node's pods, until each one is gone. Bounded: after `time_limit` seconds the drain fails
with the pods still there and the PDBs that refused them, instead of blocking forever like the Rust
brupop (#650).

Evictions run a few at a time. A 429 (a PDB forbids it now) is retried with jittered exponential back-off,
as is a 500 (the API server's answer when several PDBs match a pod) and any transport error; a 404 means
the pod is already gone. Which pods to evict is `brupop.policy.drain.must_leave`. A repeated drain simply
starts over from the node's current pods, so it continues where an interrupted one stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from brupop.kube.informer import Backoff, resource_version
from brupop.policy.drain import is_terminating, must_leave, pod_key

log = structlog.get_logger("brupop.drain")

Obj = dict[str, Any]
_PDB_NAME = re.compile(r"disruption budget (\S+)")


class EvictionBlockedError(Exception):
    """429: evicting now would violate a PodDisruptionBudget."""


class PodGoneError(Exception):
    """404: the pod no longer exists."""


class PodApi(Protocol):
    async def list_pods(self, node: str) -> tuple[list[Obj], str]:
        """The pods bound to `node`, and the list's resourceVersion."""
        ...

    def watch_pods(self, node: str, resource_version: str) -> AsyncIterator[tuple[str, Obj]]: ...

    async def evict(self, namespace: str, name: str, uid: str) -> None:
        """Raises EvictionBlockedError, PodGoneError, or another error worth retrying."""
        ...


class DrainTimeoutError(Exception):
    def __init__(self, node: str, remaining: list[str], pdbs: list[str], seconds: float) -> None:
        self.node = node
        self.remaining = remaining
        self.pdbs = pdbs
        blocked = f"; blocked by PodDisruptionBudget(s) {', '.join(pdbs)}" if pdbs else ""
        super().__init__(
            f"drain of node {node} timed out after {seconds:g}s with {len(remaining)} pod(s) left: "
            f"{', '.join(remaining)}{blocked}"
        )


@dataclass
class _Progress:
    remaining: dict[str, str]
    """Pod key -> the UID we wait to disappear."""
    pdbs: dict[str, set[str]] = field(default_factory=dict)
    """Pod key -> PDBs that refused its eviction."""
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def gone(self, key: str, uid: str | None = None) -> None:
        if key in self.remaining and (uid is None or self.remaining[key] == uid):
            del self.remaining[key]
            self.pdbs.pop(key, None)
        if not self.remaining:
            self.done.set()


def blocking_pdbs(message: str) -> set[str]:
    """PDB names from the API server's 429 message ("... The disruption budget web needs 2 healthy ...")."""
    return set(_PDB_NAME.findall(message))


async def drain(
    api: PodApi,
    node: str,
    *,
    time_limit: float,
    concurrency: int = 5,
    backoff: Backoff | None = None,
) -> int:
    """Evict every pod on `node` that must go and wait until they are gone; returns how many there were.

    Rounds repeat until a fresh listing shows nothing left to evict: a replacement pod that the scheduler
    bound to the node just before it saw the cordon is drained too.
    """
    retry = backoff or Backoff(base=1.0, cap=10.0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + time_limit
    total = 0
    while True:
        pods, version = await api.list_pods(node)
        targets = [p for p in pods if not must_leave(p)]
        if not targets:
            log.info("drained", node=node, pods=total)
            return total
        total += len(targets)
        await _drain_round(
            api,
            node,
            targets,
            version,
            time_left=max(deadline - loop.time(), 0.0),
            time_limit=time_limit,
            concurrency=concurrency,
            retry=retry,
        )


async def _drain_round(
    api: PodApi,
    node: str,
    targets: list[Obj],
    version: str,
    *,
    time_left: float,
    time_limit: float,
    concurrency: int,
    retry: Backoff,
) -> None:
    progress = _Progress(remaining={pod_key(p): str(p["metadata"].get("uid", "")) for p in targets})
    log.info("draining", node=node, pods=len(progress.remaining))
    slots = asyncio.Semaphore(concurrency)

    async def evict(pod: Obj) -> None:
        meta = pod["metadata"]
        key = pod_key(pod)
        attempt = 0
        async with slots:
            while key in progress.remaining:
                try:
                    await api.evict(meta["namespace"], meta["name"], str(meta.get("uid", "")))
                    return
                except PodGoneError:
                    progress.gone(key)
                    return
                except EvictionBlockedError as err:
                    progress.pdbs.setdefault(key, set()).update(blocking_pdbs(str(err)))
                except Exception as err:
                    log.warning("eviction failed; retrying", pod=key, error=str(err))
                await asyncio.sleep(retry.delay(attempt))
                attempt += 1

    def forget_missing(current: list[Obj]) -> None:
        present = {pod_key(p): str(p["metadata"].get("uid", "")) for p in current}
        for key, uid in list(progress.remaining.items()):
            if present.get(key) != uid:
                progress.gone(key)

    async def watch() -> None:
        since, failures = version, 0
        while True:
            try:
                async for kind, pod in api.watch_pods(node, since):
                    since = resource_version(pod) or since
                    uid = str(pod.get("metadata", {}).get("uid", ""))
                    key = pod_key(pod)
                    if kind == "DELETED":
                        progress.gone(key, uid)
                    elif kind in ("ADDED", "MODIFIED") and progress.remaining.get(key, uid) != uid:
                        progress.gone(key)  # replaced under the same name (StatefulSet): the old pod is gone
                # The stream ended (server-side timeout): catch up from a fresh list, then watch again.
                current, since = await api.list_pods(node)
                forget_missing(current)
                failures = 0
            except Exception as err:
                log.warning("watching pods failed; retrying", node=node, error=str(err))
                await asyncio.sleep(retry.delay(failures))
                failures += 1
                with contextlib.suppress(Exception):
                    current, since = await api.list_pods(node)
                    forget_missing(current)

    tasks = [asyncio.create_task(watch())]
    tasks += [asyncio.create_task(evict(p)) for p in targets if not is_terminating(p)]
    try:
        await asyncio.wait_for(progress.done.wait(), timeout=time_left)
    except TimeoutError:
        pdbs = sorted({name for names in progress.pdbs.values() for name in names})
        raise DrainTimeoutError(node, sorted(progress.remaining), pdbs, time_limit) from None
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
