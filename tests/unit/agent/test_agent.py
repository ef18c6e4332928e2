"""The agent's reconcile passes against a simulated host on a real Unix socket and an in-memory apiserver.

The test plays the controller (it writes the shadow's spec) and the watches (it feeds the agent's informers
the current shadow and Node before every pass). Every host command the simulator accepts and every
apiserver call lands, in order, in one journal, so a test states exactly what a pass did. To restart the
agent, the test drops it and builds a new one with fresh state and a fresh host connection, as a new pod
would.
"""

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from brupop.agent.agent import Agent, AgentOptions, RetryLaterError
from brupop.agent.apiclient import ApiserverClient, ApiserverError
from brupop.agent.host import HostAccessError, HostClient, HostUnavailableError
from brupop.kube.client import KubeClient
from brupop.kube.config import KubeConfig
from brupop.kube.events import Regarding
from brupop.models.constants import (
    NAMESPACE,
    UPDATER_INTERFACE_LABEL,
    UPDATER_INTERFACE_VERSION,
    shadow_name,
)
from brupop.models.host import CommandType, UpdateState
from brupop.models.shadow import BottlerocketShadow, ShadowSpec, ShadowState, ShadowStatus
from brupop.models.timestamp import Timestamp
from brupop.policy.drain import CORDON_ANNOTATION, CORDONED_BY_ADMIN, CORDONED_BY_BRUPOP
from integ.hostsim.fleet import Fleet
from integ.hostsim.host import SimulatedHost, Timings
from integ.kubetools import eventually

S = ShadowState
Obj = dict[str, Any]
SCALE = 0.001  # host seconds -> real seconds: a 20 s prepare takes 20 ms, a reboot 10 ms
OLD, NEW = "1.20.3", "1.21.0"
NODE = "n1"
NOW = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
OPTIONS = AgentOptions(update_check_interval=3600.0, reboot_timeout=5.0)
CYCLE = (S.IDLE, S.STAGED_AND_PERFORMED_UPDATE, S.REBOOTED_INTO_UPDATE, S.MONITORING_UPDATE, S.IDLE)
# What one agent does for one whole update, from a node without a shadow back to Idle on the new version.
CLEAN_CYCLE = [
    "api:create_shadow",
    "host:refresh-updates",
    "api:update_status Idle",
    "host:prepare-update",
    "host:activate-update",
    "api:update_status StagedAndPerformedUpdate",
    "api:cordon_and_drain",
    "host:reboot",
    "api:uncordon",
    "api:update_status RebootedIntoUpdate",
    "api:uncordon",
    "api:update_status MonitoringUpdate",
    "api:uncordon",
    "api:update_status Idle",
]

DRAIN_AND_REBOOT = ["api:cordon_and_drain", "host:reboot"]
BACK_ON_THE_UPDATE = ["api:uncordon", "api:update_status RebootedIntoUpdate"]


class AgentKilledError(Exception):
    """The agent's process died right after the call that raised this took effect."""


class Journal:
    """Everything the host accepted and the apiserver did, in order; can kill the agent after event N."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.kill_after: int | None = None

    def record(self, event: str) -> bool:
        """True when the agent must die now."""
        self.events.append(event)
        return len(self.events) - 1 == self.kill_after

    def mark(self) -> int:
        return len(self.events)

    def since(self, mark: int) -> list[str]:
        return self.events[mark:]


class FakeApiserver(ApiserverClient):
    """The brupop apiserver and the cluster objects it writes (this node's shadow and Node), in memory.

    It replaces every call the agent makes, so it builds no HTTP client (and loads no CA bundle)."""

    def __init__(self, journal: Journal) -> None:  # no super().__init__(): nothing here speaks HTTP
        self.node_name = NODE
        self.node_uid = ""
        self.journal = journal
        self.failing: dict[str, str] = {}
        """Calls that fail, with the apiserver's message."""
        self.shadow: Obj | None = None
        self.node: Obj = {
            "metadata": {
                "name": NODE,
                "uid": f"uid-{NODE}",
                "resourceVersion": "1",
                "annotations": {},
                "labels": {UPDATER_INTERFACE_LABEL: UPDATER_INTERFACE_VERSION},  # the DaemonSet's nodes
            },
            "spec": {},
        }
        self._revision = 1

    @property
    def status(self) -> ShadowStatus | None:
        return None if self.shadow is None else BottlerocketShadow.from_wire(self.shadow).status

    @property
    def cordoned(self) -> bool:
        return bool(self.node["spec"].get("unschedulable"))

    def write(self, obj: Obj) -> None:
        self._revision += 1
        obj["metadata"]["resourceVersion"] = str(self._revision)

    def want(self, state: ShadowState, version: str | None) -> None:
        """The controller's part."""
        assert self.shadow is not None
        spec = ShadowSpec(state=state, version=version).to_wire()
        if self.shadow["spec"] != spec:
            self.shadow["spec"] = spec
            self.write(self.shadow)

    def set_status(self, **changes: Any) -> None:
        """Put the node somewhere in its cycle without walking there."""
        assert self.status is not None
        self.shadow_status(replace(self.status, **changes))

    def shadow_status(self, status: ShadowStatus) -> None:
        assert self.shadow is not None
        self.shadow["status"] = status.to_wire()
        self.write(self.shadow)

    def cordon(self, by: str) -> None:
        self.node["spec"]["unschedulable"] = True
        self.node["metadata"]["annotations"][CORDON_ANNOTATION] = by
        self.write(self.node)

    def _done(self, call: str, detail: str = "") -> None:
        if call in self.failing:
            raise ApiserverError(f"{call}: 500 {self.failing[call]}", status=500)
        if self.journal.record(f"api:{call}{detail}"):
            raise AgentKilledError(call)

    async def create_shadow(self) -> None:
        assert self.node_uid == f"uid-{NODE}"
        if self.shadow is None:
            self.shadow = BottlerocketShadow(
                metadata={
                    "name": shadow_name(NODE),
                    "namespace": NAMESPACE,
                    "uid": f"shadow-uid-{self._revision}",
                }
            ).to_wire()
            self.write(self.shadow)
        self._done("create_shadow")

    async def update_status(self, status: ShadowStatus) -> None:
        if "update_status" not in self.failing:
            self.shadow_status(status)
        self._done("update_status", f" {status.current_state.value}")

    async def cordon_and_drain(self) -> None:
        if "cordon_and_drain" not in self.failing:
            self.cordon(CORDONED_BY_BRUPOP)
        self._done("cordon_and_drain")

    async def uncordon(self) -> None:
        if self.node["metadata"]["annotations"].get(CORDON_ANNOTATION) == CORDONED_BY_BRUPOP:
            self.node["spec"]["unschedulable"] = False
            del self.node["metadata"]["annotations"][CORDON_ANNOTATION]
            self.write(self.node)
        self._done("uncordon")

    async def exclude_from_lb(self) -> None:
        self._done("exclude_from_lb")

    async def remove_exclusion_from_lb(self) -> None:
        self._done("remove_exclusion_from_lb")


class Told:
    """The agent's Events (what `kubectl describe` shows): kind, reason, type and note of each, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, str]] = []
        self.uids: set[tuple[str, str | None]] = set()

    def record(self, regarding: Regarding, *, reason: str, note: str, warning: bool = False) -> None:
        self.events.append((regarding.kind, reason, "Warning" if warning else "Normal", note))
        self.uids.add((regarding.kind, regarding.uid))

    async def run(self) -> None:
        await asyncio.Event().wait()

    def on(self, kind: str) -> list[tuple[str, str, str]]:
        return [(reason, type_, note) for k, reason, type_, note in self.events if k == kind]


def offline(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"the agent must not reach the cluster here: {request.method} {request.url}")


Sleep = Callable[[float], Awaitable[None]]


class Pauses:
    """The agent's back-off sleeps, held until the test releases them one by one."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._asleep = asyncio.Event()
        self._wake = asyncio.Event()

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)
        self._asleep.set()
        await self._wake.wait()
        self._wake.clear()

    async def next(self) -> float:
        """Wait until the agent sleeps its next back-off; its delay."""
        await asyncio.wait_for(self._asleep.wait(), 5)
        self._asleep.clear()
        return self.delays[-1]

    def release(self) -> None:
        self._wake.set()


class Rig:
    """One node: its simulated host, the fake apiserver, and the current agent."""

    def __init__(self, fleet: Fleet, host: SimulatedHost) -> None:
        self.fleet = fleet
        self.host = host
        self.journal = Journal()
        self.api = FakeApiserver(self.journal)
        self.kube = KubeClient(
            KubeConfig(server="https://kube.invalid"), transport=httpx.MockTransport(offline)
        )
        self.options = OPTIONS
        self.told = Told()
        self._pass: asyncio.Task[None] | None = None
        self._killed = False
        self.restarts = 0
        self._spy_on_host()
        self.agent = self._new_agent()

    def _spy_on_host(self) -> None:
        handle = self.host.handle

        def spy(method: str, target: str) -> Any:
            answer = handle(method, target)
            if (
                method == "POST"
                and answer.status == 204
                and self.journal.record(f"host:{target.rsplit('/')[-1]}")
            ):
                self._kill()
            return answer

        self.host.handle = spy  # type: ignore[method-assign]

    def _kill(self) -> None:
        """The agent dies while waiting for the host's answer (the host carries on regardless)."""
        assert self._pass is not None
        self._killed = True
        self._pass.cancel()

    def _new_agent(self, *, socket: Path | None = None, sleep: Sleep = asyncio.sleep) -> Agent:
        host = HostClient(
            socket or self.fleet.socket(NODE),
            boot_id_file=self.fleet.boot_id_file(NODE),
            command_timeout=5.0,
            lock_patience=5.0,
        )
        return Agent(
            node_name=NODE,
            namespace=NAMESPACE,
            kube=self.kube,
            host=host,
            api=self.api,
            options=self.options,
            clock=lambda: NOW,
            sleep=sleep,
            events=self.told,
        )

    async def restart(
        self, options: AgentOptions | None = None, *, socket: Path | None = None, sleep: Sleep = asyncio.sleep
    ) -> None:
        """A new agent process: no memory of what the last one did or reported."""
        await self.agent.host.close()
        self.restarts += 1
        self.options = options or self.options
        self.agent = self._new_agent(socket=socket, sleep=sleep)

    @contextlib.asynccontextmanager
    async def looping(self, *, socket: Path | None = None) -> AsyncIterator["Pauses"]:
        """A new agent running its own loop (its watches stand still: `feed` moves them), whose back-off
        sleeps the test controls."""
        pauses = Pauses()
        await self.restart(socket=socket, sleep=pauses.sleep)
        self.feed()
        for informer in (self.agent.shadow_informer, self.agent.node_informer):
            informer.ready.set()
            informer.run = asyncio.Event().wait  # type: ignore[method-assign]
        task = asyncio.create_task(self.agent.run())
        try:
            yield pauses
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        await self.agent.host.close()
        await self.kube.close()

    def feed(self) -> None:
        """What the agent's watches would have delivered by now."""
        if self.api.shadow is not None:
            self.agent.shadow_informer.assume(copy.deepcopy(self.api.shadow))
        else:
            self.agent.shadow_informer.forget(f"{NAMESPACE}/{shadow_name(NODE)}")
        self.agent.node_informer.assume(copy.deepcopy(self.api.node))

    async def reconcile(self, *, feed: bool = True) -> None:
        """One pass of the current agent; if the journal kills it, the next pass is a new agent's."""
        if feed:
            self.feed()
        self._pass = asyncio.create_task(self.agent.reconcile_once())
        try:
            await self._pass
        except AgentKilledError:
            await self.restart()
        except asyncio.CancelledError:
            if not self._killed:
                raise
            self._killed = False
            await self.restart()

    def want(self, state: ShadowState, version: str | None = None) -> None:
        self.api.want(state, version or (None if state is S.IDLE else NEW))

    async def step(self, state: ShadowState, version: str | None = None) -> ShadowStatus:
        """The controller asks for `state`; one pass of the agent; what the agent reported."""
        self.want(state, version)
        await self.reconcile()
        assert self.api.status is not None
        return self.api.status

    async def reach(self, state: ShadowState) -> ShadowStatus:
        """The controller asks for `state` and the agent works (and retries, as its run loop would) until
        it reports it."""
        for _ in range(6):
            if self.api.shadow is not None:
                self.want(state)
            status = self.api.status
            if status is not None and status.current_state is state:
                return status
            try:
                await self.reconcile()
            except HostUnavailableError:  # rebooting: wait for the host as the run loop's back-off would
                await eventually(self._answering, within=5.0, what="the host to answer again")
        raise AssertionError(f"never reached {state.value}; the agent did {self.journal.events}")

    async def _answering(self) -> bool:
        try:
            await self.agent.host.os_version()
        except HostUnavailableError:
            return False
        return True

    async def walk(self, states: tuple[ShadowState, ...]) -> None:
        for state in states:
            await self.reach(state)


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    # Down the moment it accepts a reboot (a slow shutdown is a fault the tests that need it set).
    fleet = Fleet(tmp_path / "hosts", time_scale=SCALE, timings=Timings(reboot=10, shutdown=0))
    fleet.repository.offer(NEW, variant="aws-k8s-1.29", arch="x86_64")
    yield fleet
    await fleet.stop()


@pytest.fixture
async def fresh(fleet: Fleet) -> AsyncIterator[Rig]:
    """A node whose agent has not run yet: no shadow."""
    rig = Rig(fleet, await fleet.add(NODE, version=OLD))
    yield rig
    await rig.close()


@pytest.fixture
async def rig(fresh: Rig) -> Rig:
    """A node whose agent created its shadow and reported Idle with the update on offer."""
    await fresh.reach(S.IDLE)
    return fresh


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    with structlog.testing.capture_logs() as entries:
        yield entries


def step_failure(logs: list[MutableMapping[str, Any]]) -> str:
    failures = [entry["error"] for entry in logs if entry["event"] == "update step failed"]
    assert len(failures) == 1, failures
    return str(failures[0])


def failed(previous: ShadowStatus, *, on: str = OLD) -> ShadowStatus:
    """What the agent reports after a failed step."""
    return replace(
        previous,
        current_state=S.ERROR_RESET,
        current_version=on,
        crash_count=previous.crash_count + 1,
        state_transition_failure_timestamp=Timestamp.from_datetime(NOW),
    )


def host_state(host: SimulatedHost) -> tuple[UpdateState, str | None] | None:
    status = host.update_status()
    return None if status is None else (status.update_state, status.staged_version)


# --- the happy path, one transition at a time ---------------------------------------------------------


async def test_a_new_node_creates_its_shadow_and_nothing_else(fresh: Rig) -> None:
    await fresh.reconcile()
    assert fresh.journal.events == ["api:create_shadow"]
    assert fresh.api.node_uid == f"uid-{NODE}"
    assert fresh.host.update_status() is None  # no command reached the host


@pytest.mark.parametrize(
    "labels",
    [{}, {UPDATER_INTERFACE_LABEL: "1.0.0"}],
    ids=["no-label", "other-version"],
)
async def test_a_node_that_left_brupop_gets_no_new_shadow(fresh: Rig, labels: dict[str, str]) -> None:
    """The controller deleted the shadow of a node that left brupop on purpose; its agent, about to go with
    the DaemonSet's pod, must not create it again (that starts a create/delete fight)."""
    fresh.api.node["metadata"]["labels"] = labels
    await fresh.reconcile()
    assert fresh.journal.events == []


@pytest.mark.parametrize(("offered", "target"), [(True, NEW), (False, OLD)], ids=["update", "none"])
async def test_a_shadow_without_status_reports_idle_targeting_the_hosts_choice(
    fresh: Rig, offered: bool, target: str
) -> None:
    if not offered:
        fresh.fleet.repository.withdraw(NEW)
    await fresh.reconcile()
    await fresh.reconcile()
    assert fresh.journal.events == ["api:create_shadow", "host:refresh-updates", "api:update_status Idle"]
    assert fresh.api.status == ShadowStatus(
        current_version=OLD, target_version=target, current_state=S.IDLE, crash_count=0
    )


async def test_an_idle_agent_checks_for_updates_once_per_interval_even_when_none_is_offered(
    fresh: Rig,
) -> None:
    fresh.fleet.repository.withdraw(NEW)
    await fresh.reconcile()
    await fresh.reconcile()
    mark = fresh.journal.mark()
    for _ in range(3):  # Node heartbeats wake it; the interval (an hour here) has not passed
        await fresh.reconcile()
    assert fresh.journal.since(mark) == []


async def test_staging_prepares_and_activates_without_rebooting(rig: Rig) -> None:
    mark = rig.journal.mark()
    status = await rig.step(S.STAGED_AND_PERFORMED_UPDATE)
    assert rig.journal.since(mark) == [
        "host:prepare-update",
        "host:activate-update",
        "api:update_status StagedAndPerformedUpdate",
    ]
    assert (status.current_state, status.current_version) == (S.STAGED_AND_PERFORMED_UPDATE, OLD)
    assert host_state(rig.host) == (UpdateState.READY, NEW)
    assert (rig.host.version, rig.host.boots) == (OLD, 0)


async def test_rebooting_drains_reboots_into_the_update_and_uncordons(rig: Rig) -> None:
    await rig.reach(S.STAGED_AND_PERFORMED_UPDATE)
    mark = rig.journal.mark()
    status = await rig.step(S.REBOOTED_INTO_UPDATE)
    assert rig.journal.since(mark) == DRAIN_AND_REBOOT + BACK_ON_THE_UPDATE
    assert (status.current_state, status.current_version) == (S.REBOOTED_INTO_UPDATE, NEW)
    assert (rig.host.version, rig.host.boots) == (NEW, 1)
    assert not rig.api.cordoned


async def test_the_load_balancer_exclusion_wraps_the_reboot(rig: Rig) -> None:
    await rig.reach(S.STAGED_AND_PERFORMED_UPDATE)
    await rig.restart(replace(OPTIONS, exclude_from_lb_wait=0.001))
    mark = rig.journal.mark()
    await rig.step(S.REBOOTED_INTO_UPDATE)
    assert rig.journal.since(mark) == [
        "api:exclude_from_lb",
        "api:cordon_and_drain",
        "host:reboot",
        "api:remove_exclusion_from_lb",
        "api:uncordon",
        "api:update_status RebootedIntoUpdate",
    ]


async def test_monitoring_confirms_the_version_and_uncordons(rig: Rig) -> None:
    await rig.walk((S.STAGED_AND_PERFORMED_UPDATE, S.REBOOTED_INTO_UPDATE))
    mark = rig.journal.mark()
    status = await rig.step(S.MONITORING_UPDATE)
    assert rig.journal.since(mark) == ["api:uncordon", "api:update_status MonitoringUpdate"]
    assert (status.current_state, status.current_version) == (S.MONITORING_UPDATE, NEW)


async def test_idle_after_monitoring_resets_the_crash_count(rig: Rig) -> None:
    await rig.walk((S.STAGED_AND_PERFORMED_UPDATE, S.REBOOTED_INTO_UPDATE, S.MONITORING_UPDATE))
    rig.api.set_status(crash_count=2, state_transition_failure_timestamp=Timestamp.from_datetime(NOW))
    status = await rig.step(S.IDLE)
    assert status == ShadowStatus(
        current_version=NEW, target_version=NEW, current_state=S.IDLE, crash_count=0
    )


async def test_a_whole_cycle_makes_each_transition_once_and_then_rests(fresh: Rig) -> None:
    await fresh.walk(CYCLE)
    assert fresh.journal.events == CLEAN_CYCLE
    mark = fresh.journal.mark()
    await fresh.reconcile()
    assert fresh.journal.since(mark) == []


async def test_a_whole_cycle_tells_its_story_on_the_node_and_on_its_shadow(fresh: Rig) -> None:
    """Issue 18: with the apiserver's Cordoned, Drained and Uncordoned, `kubectl describe node` (and
    `describe brs`) tells the story of an update: staged, rebooting, back on the new version, done."""
    await fresh.walk(CYCLE)
    story = [
        (
            "UpdateStaged",
            "Normal",
            f"Bottlerocket {NEW} is staged and activated: the node boots it at its next reboot",
        ),
        ("Rebooting", "Normal", f"brupop reboots the node into Bottlerocket {NEW}"),
        ("Rebooted", "Normal", f"the node is back, running Bottlerocket {NEW}"),
        ("UpdateSucceeded", "Normal", f"the node's update to Bottlerocket {NEW} is complete"),
    ]
    assert fresh.told.on("Node") == story
    assert fresh.told.on("BottlerocketShadow") == story
    assert fresh.api.shadow is not None
    shadow_uid = fresh.api.shadow["metadata"]["uid"]
    assert fresh.told.uids == {("Node", f"uid-{NODE}"), ("BottlerocketShadow", shadow_uid)}


async def test_a_stale_watch_does_not_make_the_agent_redo_a_step(rig: Rig) -> None:
    await rig.step(S.STAGED_AND_PERFORMED_UPDATE)
    mark = rig.journal.mark()
    await rig.reconcile(feed=False)  # the shadow in the cache still says Idle
    assert rig.journal.since(mark) == []


# --- failures ----------------------------------------------------------------------------------------


async def test_a_failing_prepare_is_reported_as_error_reset(
    rig: Rig, logs: list[MutableMapping[str, Any]]
) -> None:
    rig.api.set_status(crash_count=2)
    before = rig.api.status
    assert before is not None
    rig.host.faults.failing[CommandType.PREPARE] = (1, "no space left on device")
    status = await rig.step(S.STAGED_AND_PERFORMED_UPDATE)
    assert status == failed(before)
    assert status.crash_count == 3
    assert step_failure(logs) == "prepare failed on the host (exit status 1): no space left on device"


async def test_an_update_the_host_does_not_offer_is_reported_as_error_reset(
    rig: Rig, logs: list[MutableMapping[str, Any]]
) -> None:
    before = rig.api.status
    assert before is not None
    status = await rig.step(S.STAGED_AND_PERFORMED_UPDATE, version="9.9.9")
    assert status == failed(before)
    assert step_failure(logs) == f"the host offers {NEW}, not 9.9.9"


async def test_a_rolled_back_reboot_is_reported_as_error_reset(
    rig: Rig, logs: list[MutableMapping[str, Any]]
) -> None:
    staged = await rig.reach(S.STAGED_AND_PERFORMED_UPDATE)
    rig.host.faults.rolls_back = True
    status = await rig.step(S.REBOOTED_INTO_UPDATE)
    assert status == failed(staged)
    assert (rig.host.version, rig.host.boots) == (OLD, 1)
    assert step_failure(logs) == f"the host came back on {OLD} after rebooting into {NEW}: rolled back"
    failure = (
        "UpdateFailed",
        "Warning",
        f"the update to Bottlerocket {NEW} failed at RebootedIntoUpdate (failure 1): the host came back on "
        f"{OLD} after rebooting into {NEW}: rolled back",
    )
    assert rig.told.on("Node")[-2:] == [
        ("Rebooting", "Normal", f"brupop reboots the node into Bottlerocket {NEW}"),
        failure,
    ]
    assert rig.told.on("BottlerocketShadow")[-1] == failure


async def test_a_refused_reboot_is_reported_as_error_reset(
    rig: Rig, logs: list[MutableMapping[str, Any]]
) -> None:
    staged = await rig.reach(S.STAGED_AND_PERFORMED_UPDATE)
    rig.host.faults.reboot_error = "inhibited"
    status = await rig.step(S.REBOOTED_INTO_UPDATE)
    assert status == failed(staged)
    assert rig.host.boots == 0
    assert "Failed to reboot, exit code: 1, stderr: inhibited" in step_failure(logs)


async def test_a_failed_drain_is_reported_as_error_reset_without_rebooting(
    rig: Rig, logs: list[MutableMapping[str, Any]]
) -> None:
    staged = await rig.reach(S.STAGED_AND_PERFORMED_UPDATE)
    rig.api.failing["cordon_and_drain"] = "eviction blocked by a PodDisruptionBudget"
    status = await rig.step(S.REBOOTED_INTO_UPDATE)
    assert status == failed(staged)
    assert rig.host.boots == 0
    assert step_failure(logs).startswith("cordon and drain failed")


async def test_monitoring_on_the_wrong_version_is_reported_as_error_reset(
    rig: Rig, logs: list[MutableMapping[str, Any]]
) -> None:
    before = rig.api.status
    assert before is not None
    status = await rig.step(S.MONITORING_UPDATE)
    assert status == failed(before)
    assert step_failure(logs) == f"the host runs {OLD}, not {NEW}"


async def test_error_reset_waits_for_the_controller_to_send_it_back_to_idle(rig: Rig) -> None:
    await rig.reach(S.STAGED_AND_PERFORMED_UPDATE)
    rig.host.faults.rolls_back = True
    reported = await rig.step(S.REBOOTED_INTO_UPDATE)
    mark = rig.journal.mark()
    assert await rig.step(S.REBOOTED_INTO_UPDATE) == reported
    assert rig.journal.since(mark) == []


async def test_an_unreachable_host_is_retried_not_reported(rig: Rig) -> None:
    await rig.fleet.stop()
    rig.want(S.STAGED_AND_PERFORMED_UPDATE)
    mark = rig.journal.mark()
    with pytest.raises(HostUnavailableError):
        await rig.reconcile()
    assert rig.journal.since(mark) == []


async def test_an_invisible_node_is_an_apiserver_error(rig: Rig) -> None:
    await rig.restart()  # a new agent whose Node watch has delivered nothing yet
    with pytest.raises(ApiserverError, match=f"node {NODE} is not visible yet"):
        await rig.reconcile(feed=False)


# --- a slow shutdown is not a rollback ---------------------------------------------------------------


async def staged_on_a_slow_host(rig: Rig) -> int:
    """Staged, on a host whose API answers for 0.5 s after accepting a reboot; the journal's mark."""
    await rig.reach(S.STAGED_AND_PERFORMED_UPDATE)
    rig.host.faults.slow_shutdown = 500
    return rig.journal.mark()


def rebooted_into_the_update(rig: Rig, status: ShadowStatus) -> bool:
    return (status.current_state, status.current_version, status.crash_count, rig.host.boots) == (
        S.REBOOTED_INTO_UPDATE,
        NEW,
        0,
        1,
    )


async def test_a_host_still_answering_after_accepting_the_reboot_is_shutting_down_not_rolled_back(
    rig: Rig,
) -> None:
    mark = await staged_on_a_slow_host(rig)
    status = await rig.step(S.REBOOTED_INTO_UPDATE)
    assert rig.journal.since(mark) == DRAIN_AND_REBOOT + BACK_ON_THE_UPDATE
    assert rebooted_into_the_update(rig, status)


async def test_an_agent_restarted_while_its_host_shuts_down_waits_for_the_boot(rig: Rig) -> None:
    mark = await staged_on_a_slow_host(rig)
    rig.journal.kill_after = mark + 1  # SIGKILLed right after the host accepted the reboot
    rig.want(S.REBOOTED_INTO_UPDATE)
    await rig.reconcile()
    assert rig.restarts == 1
    assert rig.host.up.is_set()  # still going down
    status = await rig.step(S.REBOOTED_INTO_UPDATE)
    # The new agent cannot know that the reboot was sent: the update is still Ready and next to boot, so
    # it drains (nothing left to evict) and asks again; the host, already going down, takes it as said.
    assert rig.journal.since(mark) == DRAIN_AND_REBOOT + DRAIN_AND_REBOOT + BACK_ON_THE_UPDATE
    assert rebooted_into_the_update(rig, status)


async def test_a_host_going_down_that_refuses_the_second_reboot_is_waited_for_not_failed(rig: Rig) -> None:
    """The agent restarted during the shutdown asks for the reboot again; a host already going down may
    refuse it (systemd's shutdown is under way). That refusal is no failed step (ErrorReset would uncordon
    and deactivate the update on a host about to boot it): the agent waits for the boot."""
    mark = await staged_on_a_slow_host(rig)
    rig.journal.kill_after = mark + 1  # SIGKILLed right after the host accepted the reboot
    rig.want(S.REBOOTED_INTO_UPDATE)
    await rig.reconcile()
    assert rig.host.up.is_set()  # still going down
    rig.host.faults.reboot_error = (
        "Unable to start shutdown: Transaction for reboot.target/start is destructive"
    )
    status = await rig.step(S.REBOOTED_INTO_UPDATE)
    assert rebooted_into_the_update(rig, status)


async def test_a_refused_reboot_on_a_host_that_stays_up_is_a_failed_step(
    rig: Rig, logs: list[MutableMapping[str, Any]]
) -> None:
    staged = await rig.reach(S.STAGED_AND_PERFORMED_UPDATE)
    await rig.restart(replace(OPTIONS, refused_reboot_grace=0.2))
    rig.host.faults.reboot_error = "Failed to reboot, exit code: 1, stderr: Operation inhibited"
    status = await rig.step(S.REBOOTED_INTO_UPDATE)
    assert status == failed(staged)
    assert step_failure(logs).startswith("reboot: POST /actions/reboot: 500 Failed to reboot")
    assert rig.host.boots == 0


async def test_a_host_that_accepts_the_reboot_but_never_goes_down_fails_after_the_reboot_timeout(
    rig: Rig, logs: list[MutableMapping[str, Any]]
) -> None:
    staged = await rig.reach(S.STAGED_AND_PERFORMED_UPDATE)
    await rig.restart(replace(OPTIONS, reboot_timeout=0.2))
    rig.host.faults.slow_shutdown = 10**6
    status = await rig.step(S.REBOOTED_INTO_UPDATE)
    assert status == failed(staged)
    assert step_failure(logs) == "the host accepted the reboot but did not boot again within 0.2s"


# --- configuration errors ----------------------------------------------------------------------------


async def test_a_host_socket_the_agent_may_not_use_is_a_configuration_error_not_a_failed_step(
    rig: Rig, tmp_path: Path
) -> None:
    staged = await rig.reach(S.STAGED_AND_PERFORMED_UPDATE)
    misconfigured = tmp_path / "api.sock"
    misconfigured.mkdir()  # a hostPath that is a directory, not the host's socket
    await rig.restart(socket=misconfigured)
    rig.want(S.REBOOTED_INTO_UPDATE)
    mark = rig.journal.mark()
    with pytest.raises(HostAccessError, match="is not a socket"):
        await rig.reconcile()
    assert rig.journal.since(mark) == []
    assert rig.api.status == staged
    assert rig.host.boots == 0


async def test_a_misconfigured_agent_says_so_at_each_slow_retry_is_not_ready_and_recovers(
    rig: Rig, tmp_path: Path, logs: list[MutableMapping[str, Any]]
) -> None:
    idle = rig.api.status
    path = tmp_path / "api.sock"
    path.mkdir()
    async with rig.looping(socket=path) as pauses:
        for _ in range(2):
            assert await pauses.next() == OPTIONS.misconfigured_retry
            assert not rig.agent.ready
            assert rig.agent.problem is not None
            assert "is not a socket" in rig.agent.problem
            pauses.release()
        await pauses.next()
        path.rmdir()
        path.symlink_to(rig.fleet.socket(NODE))  # the operator fixes the mount
        pauses.release()

        async def ready() -> bool:
            return rig.agent.ready

        await eventually(ready, within=5, what="the agent to be ready")
    problems = [entry for entry in logs if entry["log_level"] == "error"]
    assert len(problems) == 3, problems
    fix = "cannot use the host API: fix the agent's configuration"
    assert {entry["event"] for entry in problems} == {fix}
    assert all("is not a socket" in entry["error"] for entry in problems)
    assert rig.api.status == idle
    assert not any(entry["event"] == "update step failed" for entry in logs)


# --- failures back off -------------------------------------------------------------------------------


async def in_error_reset_with_a_failing_idle_step(rig: Rig) -> ShadowStatus:
    """A failed drain put the node in ErrorReset; undoing the cycle (deactivate) keeps failing."""
    await rig.reach(S.STAGED_AND_PERFORMED_UPDATE)
    rig.api.failing["cordon_and_drain"] = "drain timed out"
    reported = await rig.step(S.REBOOTED_INTO_UPDATE)
    assert (reported.current_state, reported.crash_count) == (S.ERROR_RESET, 1)
    del rig.api.failing["cordon_and_drain"]
    rig.host.faults.failing[CommandType.DEACTIVATE] = (1, "updog: cannot revert the boot flags")
    rig.want(S.IDLE)
    return reported


async def test_an_idle_step_that_keeps_failing_after_error_reset_is_not_counted_again(rig: Rig) -> None:
    reported = await in_error_reset_with_a_failing_idle_step(rig)
    mark = rig.journal.mark()
    for _ in range(5):
        with pytest.raises(RetryLaterError, match="deactivate failed on the host"):
            await rig.reconcile()
    assert rig.api.status == reported  # crash_count 1, as reported once
    assert "api:update_status ErrorReset" not in rig.journal.since(mark)
    del rig.host.faults.failing[CommandType.DEACTIVATE]
    status = await rig.step(S.IDLE)
    assert (status.current_state, status.crash_count) == (S.IDLE, 1)


async def test_failed_passes_back_off_and_watch_events_do_not_cut_the_back_off_short(rig: Rig) -> None:
    await in_error_reset_with_a_failing_idle_step(rig)
    mark = rig.journal.mark()
    async with rig.looping() as pauses:
        caps = []
        for attempt in range(1, 5):
            delay = await pauses.next()
            caps.append(min(OPTIONS.backoff.cap, OPTIONS.backoff.base * 2**attempt))
            assert 0 <= delay <= caps[-1]
            before = rig.journal.mark()
            for _ in range(3):
                rig.agent.poke()  # Node heartbeats, our own writes
                await asyncio.sleep(0)
            assert rig.journal.mark() == before  # still backing off
            pauses.release()
        assert caps == sorted(caps)
    assert "api:update_status ErrorReset" not in rig.journal.since(mark)


# --- the remembered report belongs to one shadow -----------------------------------------------------


async def test_a_shadow_deleted_and_created_again_gets_a_fresh_status(rig: Rig) -> None:
    reported = rig.api.status
    rig.api.shadow = None  # kubectl delete brs
    mark = rig.journal.mark()
    await rig.reconcile()
    await rig.reconcile()
    assert rig.journal.since(mark) == ["api:create_shadow", "host:refresh-updates", "api:update_status Idle"]
    assert rig.api.status == reported


# --- tidying up while Idle ---------------------------------------------------------------------------


async def abandoned_after_staging(rig: Rig) -> None:
    await rig.reach(S.STAGED_AND_PERFORMED_UPDATE)


async def abandoned_after_a_failed_drain(rig: Rig) -> None:
    await rig.reach(S.STAGED_AND_PERFORMED_UPDATE)
    rig.api.failing["cordon_and_drain"] = "drain timed out"
    assert (await rig.step(S.REBOOTED_INTO_UPDATE)).current_state is S.ERROR_RESET
    del rig.api.failing["cordon_and_drain"]


@pytest.mark.parametrize("abandon", [abandoned_after_staging, abandoned_after_a_failed_drain])
async def test_idle_deactivates_an_update_the_controller_abandoned(
    rig: Rig, abandon: Callable[[Rig], Awaitable[None]]
) -> None:
    await abandon(rig)
    before = rig.api.status
    assert before is not None
    mark = rig.journal.mark()
    status = await rig.step(S.IDLE)
    assert rig.journal.since(mark) == ["api:uncordon", "host:deactivate-update", "api:update_status Idle"]
    assert host_state(rig.host) == (UpdateState.STAGED, NEW)
    assert (status.current_state, status.crash_count) == (S.IDLE, before.crash_count)


async def test_a_settled_idle_node_deactivates_an_activation_nobody_wanted(rig: Rig) -> None:
    for command in (CommandType.PREPARE, CommandType.ACTIVATE):
        await rig.agent.host.run(command)  # someone else's doing, behind the agent's back
    mark = rig.journal.mark()
    await rig.reconcile()
    assert rig.journal.since(mark) == ["host:deactivate-update"]
    assert host_state(rig.host) == (UpdateState.STAGED, NEW)


@pytest.mark.parametrize(
    ("cordoned_by", "expected"), [(CORDONED_BY_BRUPOP, ["api:uncordon"]), (CORDONED_BY_ADMIN, [])]
)
async def test_an_idle_node_is_uncordoned_only_if_brupop_cordoned_it(
    rig: Rig, cordoned_by: str, expected: list[str]
) -> None:
    rig.api.cordon(cordoned_by)
    mark = rig.journal.mark()
    await rig.reconcile()
    assert rig.journal.since(mark) == expected
    assert rig.api.cordoned is (cordoned_by == CORDONED_BY_ADMIN)


# --- restarts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kill_after", range(len(CLEAN_CYCLE)), ids=[f"{i}-{e}" for i, e in enumerate(CLEAN_CYCLE)]
)
async def test_an_agent_killed_after_any_step_is_finished_by_the_next_one(
    fresh: Rig, kill_after: int
) -> None:
    fresh.journal.kill_after = kill_after
    await fresh.walk(CYCLE)
    await fresh.restart()  # and once more at the end: nothing left to do but look for updates
    mark = fresh.journal.mark()
    await fresh.reconcile()
    assert fresh.journal.since(mark) == ["host:refresh-updates"]

    assert fresh.restarts == 2  # the kill and the last restart
    events = fresh.journal.events
    assert events[: kill_after + 1] == CLEAN_CYCLE[: kill_after + 1]
    for once in ("host:prepare-update", "host:activate-update", "host:reboot"):
        assert events.count(once) == 1, events
    redrained = CLEAN_CYCLE[kill_after] == "api:cordon_and_drain"  # it cannot know the drain finished
    assert events.count("api:cordon_and_drain") == 1 + redrained, events
    assert fresh.api.status == ShadowStatus(
        current_version=NEW, target_version=NEW, current_state=S.IDLE, crash_count=0
    )
    assert (fresh.host.version, fresh.host.boots) == (NEW, 1)
    assert not fresh.api.cordoned
