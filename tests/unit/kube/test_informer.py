import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog
import structlog.testing

from brupop.kube.client import ApiError, ApiUnavailableError
from brupop.kube.informer import Informer, OptionalResource, object_key
from brupop.kube.retry import Backoff

Obj = dict[str, Any]


def obj(name: str, version: str, namespace: str | None = "ns", **extra: Any) -> Obj:
    meta: dict[str, Any] = {"name": name, "resourceVersion": version}
    if namespace:
        meta["namespace"] = namespace
    return {"metadata": meta, **extra}


class Source:
    """Scripted list and watch answers: each watch pops the next script (a list of events or an error)."""

    def __init__(self, lists: list[tuple[list[Obj], str]], watches: list[Any]) -> None:
        self.lists = lists
        self.watches = watches
        self.watched_from: list[str] = []
        self.list_calls = 0
        self.done = asyncio.Event()

    async def list(self) -> tuple[list[Obj], str]:
        self.list_calls += 1
        return self.lists.pop(0)

    async def watch(self, resource_version: str) -> AsyncIterator[tuple[str, Obj]]:
        self.watched_from.append(resource_version)
        if not self.watches:
            self.done.set()
            await asyncio.Event().wait()
        script = self.watches.pop(0)
        if isinstance(script, Exception):
            raise script
        for event in script:
            yield event


async def run_until_done(informer: Informer, source: Source) -> None:
    task = asyncio.create_task(informer.run())
    await asyncio.wait_for(source.done.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


NO_WAIT = Backoff(base=0.0, cap=0.0)


async def test_list_then_watch_with_bookmarks_and_deletes() -> None:
    source = Source(
        lists=[([obj("a", "1"), obj("b", "2")], "10")],
        watches=[
            [
                ("ADDED", obj("c", "11")),
                ("BOOKMARK", obj("", "15", namespace=None)),
                ("DELETED", obj("a", "16")),
            ],
            [("MODIFIED", obj("b", "17", spec={"x": 1}))],
        ],
    )
    changes = []
    informer = Informer(source, name="t", on_change=lambda: changes.append(1), backoff=NO_WAIT)
    await run_until_done(informer, source)
    assert informer.ready.is_set()
    assert sorted(object_key(o) for o in informer.items()) == ["ns/b", "ns/c"]
    assert informer.get("ns/b") == obj("b", "17", spec={"x": 1})
    assert source.watched_from == ["10", "16", "17"]
    assert len(changes) == 4  # list, ADDED, DELETED, MODIFIED (bookmarks change nothing)


async def test_gone_relists_and_other_errors_back_off_then_resume() -> None:
    source = Source(
        lists=[([obj("a", "1")], "5"), ([obj("z", "30")], "30")],
        watches=[
            RuntimeError("connection reset"),
            [("ERROR", {"code": 410, "message": "too old resource version"})],
        ],
    )
    informer = Informer(source, name="t", backoff=NO_WAIT)
    await run_until_done(informer, source)
    assert source.watched_from == ["5", "5", "30"]
    assert source.list_calls == 2
    assert [object_key(o) for o in informer.items()] == ["ns/z"]


class TimedSource(Source):
    """Notes, on the loop's clock, when each watch began."""

    def __init__(self, lists: list[tuple[list[Obj], str]], watches: list[Any]) -> None:
        super().__init__(lists, watches)
        self.watch_times: list[float] = []

    def watch(self, resource_version: str) -> AsyncIterator[tuple[str, Obj]]:
        self.watch_times.append(asyncio.get_running_loop().time())
        return super().watch(resource_version)


async def test_a_refusal_with_retry_after_is_waited_out_before_the_next_try() -> None:
    """A 429 (or 503) that says Retry-After: the informer waits at least that long, even when its own
    back-off would retry at once."""
    busy = ApiError(429, "TooManyRequests", "slow down", retry_after=0.3)
    source = TimedSource(lists=[([], "5")], watches=[busy, ApiUnavailableError("connection refused"), []])
    informer = Informer(source, name="t", backoff=NO_WAIT)
    await run_until_done(informer, source)
    first, second = source.watch_times[:2]
    assert second - first >= 0.3


async def test_an_error_event_that_is_not_410_keeps_the_resource_version() -> None:
    source = Source(lists=[([], "5")], watches=[[("ERROR", {"code": 500, "message": "boom"})]])
    informer = Informer(source, name="t", backoff=NO_WAIT)
    await run_until_done(informer, source)
    assert source.watched_from == ["5", "5"]


async def test_an_empty_watch_counts_as_a_failure() -> None:
    source = Source(lists=[([], "5"), ([], "6")], watches=[[], [], [], [], []])
    informer = Informer(source, name="t", backoff=NO_WAIT)
    await run_until_done(informer, source)
    assert source.watched_from == ["5", "5", "5", "5", "6", "6"]  # four failures in a row: list afresh


async def test_assumed_writes_hide_older_events_until_a_newer_one_arrives() -> None:
    source = Source(lists=[([obj("a", "1", spec={"v": 0})], "1")], watches=[])
    informer = Informer(source, name="t", backoff=NO_WAIT)
    task = asyncio.create_task(informer.run())
    await asyncio.wait_for(source.done.wait(), 5)
    informer.assume(obj("a", "3", spec={"v": 2}))
    assert not informer._apply("MODIFIED", obj("a", "2", spec={"v": 1}))
    assert informer.get("ns/a") == obj("a", "3", spec={"v": 2})
    assert not informer._apply("MODIFIED", obj("a", "3", spec={"v": 2}))  # our write coming back: no news
    assert informer._apply("MODIFIED", obj("a", "4", spec={"v": 3}))
    assert informer.get("ns/a") == obj("a", "4", spec={"v": 3})
    task.cancel()


def test_an_assumption_older_than_the_cache_is_dropped() -> None:
    informer = Informer(Source([], []), name="t")
    informer._apply("ADDED", obj("a", "7", spec={"v": 7}))
    informer.assume(obj("a", "5", spec={"v": 5}))
    assert informer.get("ns/a") == obj("a", "7", spec={"v": 7})
    assert informer._apply("MODIFIED", obj("a", "8"))


def test_opaque_resource_versions_need_the_exact_event() -> None:
    informer = Informer(Source([], []), name="t")
    informer.assume(obj("a", "xyz", spec={"v": 1}))
    assert not informer._apply("MODIFIED", obj("a", "abc", spec={"v": 0}))
    assert informer.get("ns/a") == obj("a", "xyz", spec={"v": 1})
    informer._apply("MODIFIED", obj("a", "xyz", spec={"v": 1}))
    assert informer._apply("MODIFIED", obj("a", "abc", spec={"v": 2}))


def test_forget_and_transform() -> None:
    informer = Informer(Source([], []), name="t", transform=lambda o: {"metadata": o["metadata"]})
    informer.assume(obj("a", "1", spec={"big": "x" * 100}))
    assert informer.get("ns/a") == {"metadata": {"name": "a", "resourceVersion": "1", "namespace": "ns"}}
    assert len(informer) == 1
    informer.forget("ns/a")
    assert informer.get("ns/a") is None
    assert object_key(obj("node", "1", namespace=None)) == "node"


def test_a_change_the_transform_drops_wakes_nobody_but_is_stored() -> None:
    def trim(o: Obj) -> Obj:
        return {"metadata": o["metadata"], "spec": o.get("spec")}

    informer = Informer(Source([], []), name="t", transform=trim)
    assert informer._apply("ADDED", obj("n", "1", spec={"unschedulable": False}, status={"beat": 1}))
    assert not informer._apply("MODIFIED", obj("n", "2", spec={"unschedulable": False}, status={"beat": 2}))
    assert informer.get("ns/n") == {
        "metadata": {"name": "n", "resourceVersion": "2", "namespace": "ns"},
        "spec": {"unschedulable": False},
    }
    assert informer._apply("MODIFIED", obj("n", "3", spec={"unschedulable": True}, status={"beat": 2}))


def test_backoff_has_full_jitter_under_a_cap() -> None:
    backoff = Backoff(base=1.0, cap=8.0)
    assert all(
        0 <= backoff.delay(attempt) <= min(8.0, 2**attempt) for attempt in range(10) for _ in range(20)
    )


class Unserved:
    """A source whose first lists answer 404 (the CRD is not installed), then serve one object."""

    def __init__(self, refusals: int, error: ApiError) -> None:
        self.refusals = refusals
        self.error = error
        self.lists = 0
        self.served = asyncio.Event()
        self.refused_thrice = asyncio.Event()

    async def list(self) -> tuple[list[Obj], str]:
        self.lists += 1
        if self.lists >= 3:
            self.refused_thrice.set()
        if self.lists <= self.refusals:
            raise self.error
        return [obj("p", "5", namespace=None)], "5"

    async def watch(self, resource_version: str) -> AsyncIterator[tuple[str, Obj]]:
        self.served.set()
        await asyncio.Event().wait()
        yield "BOOKMARK", obj("", resource_version)


async def test_a_resource_not_served_counts_as_none_and_is_listed_again_until_it_is() -> None:
    source = Unserved(2, ApiError(404, "NotFound", "the server could not find the requested resource"))
    changes = []
    informer = Informer(
        OptionalResource(source, name="t", rule="list t", recheck=0.01),
        name="t",
        on_change=lambda: changes.append(1),
        backoff=NO_WAIT,
    )
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.ready.wait(), 5)
        await asyncio.wait_for(source.served.wait(), 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert source.lists == 3
    assert [object_key(o) for o in informer.items()] == ["p"]
    assert len(changes) == 3  # each list, the empty ones too


async def test_a_refused_list_is_not_taken_as_none_and_says_which_rbac_rule_is_missing() -> None:
    """Old manifests, new image: a ClusterRole without updatepolicies. Not reconciling (fail closed), and
    one error line naming the rule to grant."""
    source = Unserved(10, ApiError(403, "Forbidden", "cannot list updatepolicies"))
    rule = "list and watch updatepolicies.brupop.bottlerocket.aws"
    informer = Informer(OptionalResource(source, name="t", rule=rule), name="t", backoff=NO_WAIT)
    with structlog.testing.capture_logs() as entries:
        task = asyncio.create_task(informer.run())
        try:
            await asyncio.wait_for(source.refused_thrice.wait(), 5)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert not informer.ready.is_set()
    refused = [e for e in entries if e.get("missing_rbac_rule") == rule]
    assert len(refused) == 1, entries
    assert refused[0]["log_level"] == "error"
    assert "nothing is reconciled" in refused[0]["event"]
