"""`integ.e2e.settled`: a converged fleet must stay converged for a while, monitors watching, before a run
ends (a controller that starts another cycle right after the rollout shows there, not after the run)."""

import asyncio

import pytest

from integ.e2e import SETTLE, settled
from integ.monitors import InvariantBrokenError


async def idle_monitor() -> None:
    await asyncio.Event().wait()


async def test_a_fleet_that_stays_converged_settles() -> None:
    monitor = asyncio.create_task(idle_monitor())
    asked: list[float] = []

    async def converged() -> bool:
        asked.append(asyncio.get_running_loop().time())
        return True

    started = asyncio.get_running_loop().time()
    await settled(converged, [monitor])
    assert asked
    assert asked[0] - started >= SETTLE * 0.99
    monitor.cancel()


async def test_a_fleet_that_moved_again_fails_the_run() -> None:
    monitor = asyncio.create_task(idle_monitor())

    async def converged() -> bool:
        return False

    with pytest.raises(InvariantBrokenError, match="did not stay converged") as raised:
        await settled(converged, [monitor])
    assert raised.value.kind == "settle"
    monitor.cancel()


async def test_a_monitor_that_breaks_while_settling_fails_the_run() -> None:
    async def breaks() -> None:
        raise InvariantBrokenError("3 nodes disrupted at once", kind="disruption")

    async def converged() -> bool:
        return True

    with pytest.raises(InvariantBrokenError, match="3 nodes disrupted") as raised:
        await settled(converged, [asyncio.create_task(breaks())])
    assert raised.value.kind == "disruption"
