"""An informer: a local cache of one kind of object, kept current by list + watch, calling back on change.

List once, then watch from the list's resourceVersion; bookmarks advance the resourceVersion; a 410 Gone
(expired resourceVersion) or a broken stream that cannot resume leads to a fresh list; errors back off
with full jitter up to a cap. `ready` is set after the first successful list.

`transform` trims objects on arrival (a Node carries image lists of tens of kilobytes; the controller
keeps only labels, UID and schedulability), so memory grows with what decisions need, not with Nodes.

`assume` makes our own writes visible at once: the object returned by a PATCH is put in the cache, and
watch events for that key older than it are ignored until one at least as new arrives. resourceVersions are
compared as integers when both are (etcd revisions, as every kube-apiserver serves them), else only equality
counts. A fresh list clears assumptions.

`OptionalResource` serves a resource that may not exist in the cluster (a CRD that an older install
lacks): a list answered 404 counts as an empty list, so the informer becomes ready, and the resource is
listed again every `recheck` seconds until it is served. A list refused (403: RBAC lacks the rule) is not
"none": it fails like any other (the informer stays unready), with one error line naming the rule to grant.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, Protocol

import structlog

from brupop.kube.retry import Backoff, wait_before_retry

log = structlog.get_logger("brupop.informer")

Obj = dict[str, Any]


class ResourceExpiredError(Exception):
    """The watch's resourceVersion is too old (410 Gone): only a fresh list can continue."""


class ListWatch(Protocol):
    async def list(self) -> tuple[list[Obj], str]:
        """Every object and the list's resourceVersion."""
        ...

    def watch(self, resource_version: str) -> AsyncIterator[tuple[str, Obj]]:
        """(type, object) events after `resource_version`; raises ResourceExpiredError on 410."""
        ...


def object_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    return f"{namespace}/{meta.get('name')}" if namespace else str(meta.get("name"))


def resource_version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


def _not_older(version: str, than: str) -> bool:
    if version.isdigit() and than.isdigit():
        return int(version) >= int(than)
    return version == than


def _without_version(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "resourceVersion"}
    return {**obj, "metadata": meta}


def _watch_error(status: Mapping[str, Any]) -> Exception:
    message = str(status.get("message", "watch error"))
    return ResourceExpiredError(message) if status.get("code") == 410 else RuntimeError(message)


ABSENT = "absent"
"""The resourceVersion `OptionalResource` gives the list of a resource that is not served."""


class OptionalResource:
    """A ListWatch of a resource the cluster may not serve: see the module docstring."""

    def __init__(self, source: ListWatch, *, name: str, rule: str, recheck: float = 60.0) -> None:
        self._source = source
        self._name = name
        self._rule = rule
        """The RBAC rule reading the resource needs, named in the error a refusal (403) gets."""
        self._recheck = recheck
        self._absent = False
        self._refused = False

    async def list(self) -> tuple[list[Obj], str]:
        try:
            objects, version = await self._source.list()
        except Exception as err:
            if getattr(err, "status", None) == 403 and not self._refused:
                log.error(
                    "forbidden: grant the missing RBAC rule (manifests older than the image?); "
                    "nothing is reconciled until then",
                    informer=self._name,
                    missing_rbac_rule=self._rule,
                    error=str(err),
                )
            self._refused = getattr(err, "status", None) == 403
            if not getattr(err, "not_found", False):
                raise
            if not self._absent:
                log.warning("not served by this cluster; taken as none", informer=self._name, error=str(err))
            self._absent = True
            return [], ABSENT
        if self._absent:
            log.info("served again", informer=self._name)
        self._absent = False
        self._refused = False
        return objects, version

    def watch(self, resource_version: str) -> AsyncIterator[tuple[str, Obj]]:
        if resource_version == ABSENT:
            return _ListAgain(self._recheck)
        return self._source.watch(resource_version)


class _ListAgain:
    """The watch of a resource that was not served: nothing, then (after a while) a fresh list."""

    def __init__(self, after: float) -> None:
        self._after = after

    def __aiter__(self) -> _ListAgain:
        return self

    async def __anext__(self) -> tuple[str, Obj]:
        await asyncio.sleep(self._after)
        raise ResourceExpiredError("not served at the last list: listing again")


class Informer:
    def __init__(
        self,
        source: ListWatch,
        *,
        name: str,
        transform: Callable[[Obj], Obj] = lambda obj: obj,
        on_change: Callable[[], None] = lambda: None,
        backoff: Backoff | None = None,
    ) -> None:
        self._source = source
        self._name = name
        self._transform = transform
        self._on_change = on_change
        self._backoff = backoff or Backoff()
        self._store: dict[str, Obj] = {}
        self._assumed: dict[str, str] = {}
        self.ready = asyncio.Event()

    def get(self, key: str) -> Obj | None:
        return self._store.get(key)

    def items(self) -> list[Obj]:
        return list(self._store.values())

    def __len__(self) -> int:
        return len(self._store)

    def assume(self, obj: Obj) -> None:
        """Cache the result of our own write now; see the module docstring."""
        key = object_key(obj)
        cached = self._store.get(key)
        written = resource_version(obj)
        if cached is not None and _not_older(resource_version(cached), written):
            return
        self._store[key] = self._transform(obj)
        self._assumed[key] = written

    def forget(self, key: str) -> None:
        """Our own delete: drop the object now (its DELETED event will find nothing)."""
        self._store.pop(key, None)
        self._assumed.pop(key, None)

    def _replace(self, objects: Iterable[Obj]) -> None:
        self._store = {object_key(obj): self._transform(obj) for obj in objects}
        self._assumed.clear()

    def _apply(self, kind: str, obj: Obj) -> bool:
        """Apply one watch event; False when it was ignored or changed nothing the transform keeps (a Node
        heartbeat, once trimmed, differs only in its resourceVersion: no reason to wake anyone)."""
        key = object_key(obj)
        expected = self._assumed.get(key)
        if kind == "DELETED":
            self._assumed.pop(key, None)
            return self._store.pop(key, None) is not None
        if expected is not None:
            if not _not_older(resource_version(obj), expected):
                return False
            del self._assumed[key]
        before, after = self._store.get(key), self._transform(obj)
        self._store[key] = after
        return before is None or _without_version(before) != _without_version(after)

    async def run(self) -> None:
        """Keep the cache current until cancelled."""
        failures = 0
        version: str | None = None
        while True:
            try:
                if version is None:
                    objects, version = await self._source.list()
                    self._replace(objects)
                    self.ready.set()
                    self._on_change()
                events = 0
                async for kind, obj in self._source.watch(version):
                    events += 1
                    failures = 0
                    if kind == "ERROR":
                        raise _watch_error(obj)
                    version = resource_version(obj) or version
                    if kind != "BOOKMARK" and self._apply(kind, obj):
                        self._on_change()
                if not events:
                    raise RuntimeError("watch ended without any event")
            except asyncio.CancelledError:
                raise
            except ResourceExpiredError:
                log.info("watch expired; listing again", informer=self._name)
                version = None
            except Exception as err:
                # A refusal the server qualified (429 or 503 with Retry-After) is waited out in full.
                retry_after = getattr(err, "retry_after", None)
                delay = wait_before_retry(self._backoff, failures, retry_after=retry_after)
                failures += 1
                log.warning(
                    "list/watch failed", informer=self._name, error=str(err), retry_in=round(delay, 2)
                )
                if failures % 4 == 0:  # a stream that keeps failing may need a fresh start
                    version = None
                await asyncio.sleep(delay)
