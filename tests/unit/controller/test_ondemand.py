"""Informers that run only while wanted: started on the first want, listed afresh on each start, stopped
(cache dropped, task ended) when no longer wanted, and nothing known while not listed."""

from typing import Any

from brupop.controller.ondemand import OnDemandInformer
from brupop.kube.informer import Informer
from tests.unit.controller.pokes import Pokes
from tests.unit.controller.sources import Source

Obj = dict[str, Any]


async def test_an_informer_runs_only_while_wanted_and_lists_afresh_each_time() -> None:
    source = Source([{"metadata": {"name": "a", "resourceVersion": "1"}}])
    source.release.clear()
    changes = Pokes()
    made: list[Informer] = []

    def make() -> Informer:
        made.append(Informer(source, name="pods", on_change=changes))
        return made[-1]

    cache = OnDemandInformer(make)
    assert cache.items() is None
    assert not cache.running
    cache.want(False)
    assert made == []
    cache.want(True)
    cache.want(True)  # still the one informer
    assert cache.running
    await source.seen.until(lambda: source.lists == 1)
    assert cache.items() is None  # not listed yet: nothing is known
    source.release.set()
    await changes.until(lambda: cache.items() is not None)
    assert cache.items() == [{"metadata": {"name": "a", "resourceVersion": "1"}}]
    assert changes.count == 1
    await source.seen.until(lambda: source.watching == 1)
    cache.want(False)
    assert not cache.running
    assert cache.items() is None
    await source.seen.until(lambda: source.watching == 0)  # its task ended
    cache.want(True)
    await changes.until(lambda: cache.items() is not None)
    assert len(made) == 2
    assert source.lists == 2
    await cache.aclose()
    assert not cache.running
    assert source.watching == 0
