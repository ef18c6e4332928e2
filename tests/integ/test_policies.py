"""The controller follows UpdatePolicies (issue 16) on the real control plane: the policy CRD and the RBAC
from the charts, the controller as its own process (`brupop controller`, as its pod runs it) under its own
service account, and test agents that do what each spec asks at once (or fail, or wait, when told to). One
test per control: pause and resume, a failure budget, a blackout, two pools each with its own limit, a held
node, duringUpdate marks, an invalid policy, and the environment alone (with and without the policy CRD)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from brupop.deploy import CONTROLLER_SA
from brupop.kube.client import EVENTS, NODES, ApiError, KubeClient, Resource
from brupop.models import constants as c
from brupop.models.shadow import BottlerocketShadow, ShadowState
from brupop.models.timestamp import Timestamp
from integ.cluster import ClusterState, free_port
from integ.fleet import Watcher, create_fleet, prepare, set_status, shadows
from integ.kubetools import CRDS, eventually, in_background, install_crd, nonempty, policy_crd, watch_events
from integ.operator import install_rbac, service_account_token, stop_process, token_kubeconfig

S = ShadowState
Obj = dict[str, Any]
POOL = "fleet-test.example.com/pool"
MARK = "fleet-test.example.com/updating"
DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"
POLICIES = Resource(c.API_GROUP, c.POLICY_VERSION, c.POLICY_PLURAL, namespaced=False)


# --- the world: nodes in pools, policies, the controller's process, agents --------------------------------


async def install_policy_crd(kube: KubeClient) -> None:
    await install_crd(kube, policy_crd())


async def delete_policies(kube: KubeClient) -> None:
    with contextlib.suppress(ApiError):  # the CRD may be missing
        items, _ = await kube.list(POLICIES)
        for item in items:
            with contextlib.suppress(ApiError):
                await kube.delete(POLICIES, item["metadata"]["name"])


@contextlib.asynccontextmanager
async def world(kube: KubeClient, pools: Mapping[str | None, list[str]]) -> AsyncIterator[None]:
    """Nodes with shadows offering 1.1.0, each labelled with its pool (None: no pool label, so no policy
    selects it); no policy left from earlier tests. Everything made here is gone afterwards."""
    await prepare(kube)
    await install_policy_crd(kube)
    await delete_policies(kube)
    names = [name for members in pools.values() for name in members]
    try:
        for pool, members in pools.items():
            await create_fleet(kube, members)
            for name in members if pool is not None else ():
                await kube.merge_patch(NODES, name, {"metadata": {"labels": {POOL: pool}}})
        yield
    finally:
        await delete_policies(kube)
        for name in names:
            with contextlib.suppress(ApiError):
                await kube.delete(NODES, name)


def policy(name: str, pool: str, **spec: Any) -> Obj:
    return {
        "apiVersion": c.API_VERSION_POLICY,
        "kind": c.POLICY_KIND,
        "metadata": {"name": name},
        "spec": {"nodeSelector": {"matchLabels": {POOL: pool}}, **spec},
    }


@dataclass
class Controller:
    process: asyncio.subprocess.Process
    port: int
    log: Path

    async def metric(self, name: str, **labels: str) -> float | None:
        """A sample's value on the controller's /metrics (None while absent)."""
        async with httpx.AsyncClient() as http:
            try:
                text = (await http.get(f"http://127.0.0.1:{self.port}/metrics")).text
            except httpx.TransportError:
                return None
        wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
        series = f"{name}{{{wanted}}}" if labels else name
        for line in text.splitlines():
            if line.rsplit(" ", 1)[0] == series:
                return float(line.rsplit(" ", 1)[1])
        return None


@contextlib.asynccontextmanager
async def controller(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path, env: Mapping[str, str]
) -> AsyncIterator[Controller]:
    """`brupop controller` in its own process, as the controller's service account under the chart's RBAC,
    once it reconciles; SIGTERM when done."""
    await install_rbac(kube)
    token = await service_account_token(kube, CONTROLLER_SA)
    kubeconfig = token_kubeconfig(cluster, tmp_path / "controller.kubeconfig", token)
    port = free_port()
    log = tmp_path / "controller.log"
    variables = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": os.pathsep.join(path for path in sys.path if path),  # the code under test
        "KUBECONFIG": str(kubeconfig),
        "BRUPOP_NAMESPACE": c.NAMESPACE,
        "POD_NAME": f"policy-test-{port}",
        "CONTROLLER_INTERNAL_PORT": str(port),
        "CONTROLLER_BIND_ADDRESS": "127.0.0.1",
        "LOGGING_FORMATTER": "json",
        **env,
    }
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "brupop", "controller", env=variables, stdout=out, stderr=out
        )
    running = Controller(process, port, log)
    try:
        await eventually(lambda: _reconciling(running), within=60, what="the controller to lead")
        yield running
    finally:
        await stop_process(process, grace=10)


async def _reconciling(running: Controller) -> bool:
    if running.process.returncode is not None:
        raise AssertionError(f"the controller exited: {running.log.read_text()[-3000:]}")
    return '"event": "leading: reconciling"' in running.log.read_text()


@dataclass
class Agents(Watcher):
    """The test agents (`integ.fleet.Watcher`), which also record each start, report ErrorReset for the
    nodes in `failing` when asked to stage, and leave the nodes in `stalled` where they are until released."""

    failing: set[str] = field(default_factory=set)
    stalled: set[str] = field(default_factory=set)
    starts: list[str] = field(default_factory=list)

    def _observe(self, shadow: BottlerocketShadow) -> None:
        before = self.latest.get(shadow.name)
        staging = shadow.spec.state is S.STAGED_AND_PERFORMED_UPDATE
        if staging and (before is None or before.spec.state is not S.STAGED_AND_PERFORMED_UPDATE):
            self.starts.append(_node(shadow))
        super()._observe(shadow)

    async def _act(self, shadow: BottlerocketShadow) -> None:
        node, status = _node(shadow), shadow.status
        if node in self.stalled or status is None:
            return
        if node in self.failing and shadow.spec.state is S.STAGED_AND_PERFORMED_UPDATE:
            if status.current_state is S.IDLE:
                failed = Timestamp.from_datetime(datetime.now(UTC))
                report = replace(
                    status,
                    current_state=S.ERROR_RESET,
                    crash_count=status.crash_count + 1,
                    state_transition_failure_timestamp=failed,
                )
                await set_status(self.kube, node, report)
            return
        await super()._act(shadow)

    async def release(self, *nodes: str) -> None:
        self.stalled -= set(nodes)
        for shadow in list(self.latest.values()):
            await self._act(shadow)


def _node(shadow: BottlerocketShadow) -> str:
    return shadow.name.removeprefix(c.SHADOW_NAME_PREFIX)


@contextlib.asynccontextmanager
async def agents(kube: KubeClient, prefix: str, **options: Any) -> AsyncIterator[Agents]:
    running = Agents(kube, prefix, **options)
    async with in_background(running.run()):
        yield running


# --- what the cluster shows --------------------------------------------------------------------------------


async def status_of(kube: KubeClient, name: str) -> Obj:
    return (await kube.get(POLICIES, name)).get("status") or {}


async def status_where(kube: KubeClient, name: str, **wanted: Any) -> Obj | None:
    """The policy's status once every `wanted` field has the given value."""
    found = await status_of(kube, name)
    return found if all(found.get(key) == value for key, value in wanted.items()) else None


async def done(kube: KubeClient, nodes: Iterable[str]) -> bool:
    """Every node updated to 1.1.0, settled (spec reset) and out of its cycle (no in-cycle label)."""
    for name in nodes:
        (found,) = await shadows(kube, name)
        status = found.status
        if not (status and status.current_version == "1.1.0" and status.current_state is S.IDLE):
            return False
        if found.spec.state is not S.IDLE or found.spec.version is not None:
            return False
        if c.IN_CYCLE_LABEL in ((await kube.get(NODES, name))["metadata"].get("labels") or {}):
            return False
    return True


async def settled(kube: KubeClient, nodes: Iterable[str]) -> bool:
    """Every node idle (spec and status), whatever its version."""
    for name in nodes:
        (found,) = await shadows(kube, name)
        if found.status is None or found.status.current_state is not S.IDLE or found.spec.state is not S.IDLE:
            return False
    return True


async def events(kube: KubeClient, reason: str, about: str) -> list[Obj]:
    """The controller's Events with `reason` about the object named `about` (Events about cluster-scoped
    objects, Nodes and UpdatePolicies, are in `default`)."""
    items, _ = await kube.list(EVENTS, namespace="default")
    return [
        e
        for e in items
        if e.get("reason") == reason
        and (e.get("regarding") or {}).get("name") == about
        and e.get("reportingController") == "brupop.bottlerocket.aws/controller"
    ]


async def plugin_status(cluster: ClusterState) -> Obj:
    """`kubectl brupop status -o json`, as its own process."""
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "kubectl-brupop"),
        "--kubeconfig",
        cluster.kubeconfig,
        "status",
        "-o",
        "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return json.loads(out)  # type: ignore[no-any-return]


async def _equals(value: Any, wanted: Any) -> bool:
    return await value == wanted


def names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(count)]


# --- the controls ------------------------------------------------------------------------------------------


@pytest.mark.integration
async def test_pause_stops_new_starts_and_resume_continues(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path
) -> None:
    nodes = names("pz", 6)
    async with (
        world(kube, {"pause": nodes}),
        agents(kube, "pz-", stalled=set(nodes)) as fleet,
    ):
        await kube.create(POLICIES, policy("fleet-pause", "pause", maxConcurrent=2))
        async with controller(cluster, kube, tmp_path, {"MAX_CONCURRENT_UPDATE": "1"}):
            await eventually(lambda: _equals(_count(fleet.starts), 2), what="two nodes to start")
            paused = await kube.merge_patch(POLICIES, "fleet-pause", {"spec": {"paused": True}})
            generation = paused["metadata"]["generation"]
            await eventually(
                lambda: status_where(kube, "fleet-pause", state="Paused", observedGeneration=generation),
                what="the controller to see the pause",
            )
            before = list(fleet.starts)
            # The two nodes in their cycle finish it; then the controller, paused, starts nobody.
            await fleet.release(*nodes)
            await eventually(
                lambda: status_where(kube, "fleet-pause", upToDate=2, updating=0, state="Paused"),
                what="the two nodes to finish while paused",
            )
            assert fleet.starts == before
            assert await settled(kube, nodes)
            await kube.merge_patch(POLICIES, "fleet-pause", {"spec": {"paused": False}})
            await eventually(lambda: done(kube, nodes), within=60, what="the rest to update once resumed")
    assert sorted(fleet.starts) == nodes
    assert fleet.peak == 2


async def _count(items: list[str]) -> int:
    return len(items)


@pytest.mark.integration
async def test_a_failure_budget_of_two_halts_the_pool_until_an_operator_resumes_it(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path
) -> None:
    nodes = names("bg", 5)
    budget = {"maxFailures": 2, "window": "1h"}
    async with world(kube, {"budget": nodes}), agents(kube, "bg-", failing={"bg-0", "bg-1"}) as fleet:
        await kube.create(POLICIES, policy("fleet-budget", "budget", maxConcurrent=1, failureBudget=budget))
        async with controller(cluster, kube, tmp_path, {"MAX_CONCURRENT_UPDATE": "1"}) as running:
            halted = await eventually(
                lambda: status_where(kube, "fleet-budget", state="Halted"), what="the pool to halt"
            )
            assert halted["halted"]["failedNodes"] == ["bg-0", "bg-1"]
            assert [f["node"] for f in halted["failures"]] == ["bg-0", "bg-1"]
            condition = {k["type"]: k for k in halted["conditions"]}["Halted"]
            assert (condition["status"], condition["reason"]) == ("True", "FailureBudgetSpent")
            assert c.RESUMED_AT_ANNOTATION in condition["message"]  # how to resume
            # Both failed nodes go back to Idle and wait out their back-off; nothing else starts.
            await eventually(
                lambda: status_where(kube, "fleet-budget", state="Halted", failed=2, updating=0),
                what="the failed nodes back to Idle",
            )
            assert fleet.starts == ["bg-0", "bg-1"]
            (event,) = await eventually(
                lambda: nonempty(events(kube, "PolicyHalted", "fleet-budget")),
                what="a PolicyHalted Event",
            )
            assert event["type"] == "Warning"
            assert event["regarding"]["kind"] == c.POLICY_KIND
            assert await running.metric("brupop_policy_halted", policy="fleet-budget") == 1.0
            # `kubectl brupop status` reads the same halt from the status the controller wrote.
            shown = await plugin_status(cluster)
            nodes_shown = {row["node"]: row for row in shown["nodes"]}
            assert nodes_shown["bg-2"]["reason"]["code"] == "Halted"
            (pool_shown,) = [p for p in shown["policies"] if p["name"] == "fleet-budget"]
            assert pool_shown["status"]["state"] == "Halted"
            # An operator clears the halt: the rest of the pool updates.
            resumed = Timestamp.from_datetime(datetime.now(UTC)).text
            annotation = {"metadata": {"annotations": {c.RESUMED_AT_ANNOTATION: resumed}}}
            await kube.merge_patch(POLICIES, "fleet-budget", annotation)
            await eventually(lambda: done(kube, nodes[2:]), within=60, what="the rest to update once resumed")
            after = await status_of(kube, "fleet-budget")
            assert (after["state"], after.get("halted")) == ("Active", None)
            assert await events(kube, "PolicyResumed", "fleet-budget")
            assert await running.metric("brupop_policy_halted", policy="fleet-budget") == 0.0
    assert fleet.starts[:2] == ["bg-0", "bg-1"]
    assert sorted(fleet.starts[2:]) == nodes[2:]


@pytest.mark.integration
async def test_a_blackout_covering_now_holds_every_node_of_its_pool(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path
) -> None:
    nodes = names("bk", 3)
    today = datetime.now(UTC).date()
    freeze = {
        "start": str(today - timedelta(days=1)),
        "end": str(today + timedelta(days=1)),
        "reason": "freeze",
    }
    schedule = {"timeZone": "UTC", "blackouts": [freeze]}
    async with world(kube, {"blackout": nodes, None: ["bk-free"]}), agents(kube, "bk-") as fleet:
        await kube.create(
            POLICIES, policy("fleet-blackout", "blackout", maxConcurrent="unlimited", schedule=schedule)
        )
        async with controller(cluster, kube, tmp_path, {"MAX_CONCURRENT_UPDATE": "1"}):
            # The controller runs (a node no policy selects updates) but the blacked-out pool waits.
            await eventually(lambda: done(kube, ["bk-free"]), within=60, what="the unselected node to update")
            shown = await eventually(
                lambda: status_where(kube, "fleet-blackout", window="Blackout", selected=3),
                what="the policy's status to show the blackout",
            )
            opens = Timestamp.parse(shown["nextOpening"]).instant
            assert opens == datetime.combine(today + timedelta(days=2), datetime.min.time(), UTC)
            assert fleet.starts == ["bk-free"]
            await kube.merge_patch(POLICIES, "fleet-blackout", {"spec": {"schedule": {"blackouts": []}}})
            await eventually(
                lambda: done(kube, nodes), within=60, what="the pool to update after the blackout"
            )


@pytest.mark.integration
async def test_the_furthest_blackout_the_api_server_accepts_affects_only_its_pool(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path
) -> None:
    """'Until further notice' in a zone behind UTC: 9998-12-31 local ends in year 9999 UTC. A 9999 date,
    which overflowed and crash-looped the controller, is refused (tests/policy_cases.py)."""
    freeze = {"start": "2026-01-01", "end": "9998-12-31", "reason": "until further notice"}
    schedule = {"timeZone": "Pacific/Pago_Pago", "blackouts": [freeze]}
    async with world(kube, {"frozen": ["rf-0"], None: ["rf-free"]}), agents(kube, "rf-") as fleet:
        created = await kube.create(POLICIES, policy("fleet-frozen", "frozen", schedule=schedule))
        assert created["spec"]["schedule"]["blackouts"] == [freeze]
        async with controller(cluster, kube, tmp_path, {"MAX_CONCURRENT_UPDATE": "1"}) as running:

            async def free_done() -> bool:
                if running.process.returncode is not None:
                    raise AssertionError(f"the controller exited: {running.log.read_text()[-1500:]}")
                return await done(kube, ["rf-free"])

            await eventually(free_done, within=60, what="the unselected node to update")
            await eventually(
                lambda: status_where(kube, "fleet-frozen", window="Blackout", selected=1),
                what="the policy's status to show the blackout",
            )
            assert fleet.starts == ["rf-free"]


@pytest.mark.integration
async def test_two_pools_each_stay_within_their_own_limit_at_the_same_time(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path
) -> None:
    counted, shared = names("pc", 6), names("pp", 7)
    async with (
        world(kube, {"count": counted, "percent": shared}),
        agents(kube, "pc-") as by_count,
        agents(kube, "pp-") as by_percent,
        agents(kube, "p", agents=False) as both,  # only watches both pools: the two above answer
    ):
        await kube.create(POLICIES, policy("fleet-count", "count", maxConcurrent=2))
        await kube.create(POLICIES, policy("fleet-percent", "percent", maxConcurrent="30%"))  # 3 of 7
        async with controller(cluster, kube, tmp_path, {"MAX_CONCURRENT_UPDATE": "1"}):
            await eventually(lambda: done(kube, counted + shared), within=90, what="both pools updated")
        limits = [(await status_of(kube, name)).get("limit") for name in ("fleet-count", "fleet-percent")]
    assert (by_count.peak, by_percent.peak, both.peak) == (2, 3, 5)
    assert limits == ["2", "3"]


@pytest.mark.integration
async def test_a_held_node_is_skipped_and_reported_until_released(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path
) -> None:
    nodes = names("hd", 3)
    async with world(kube, {"held": nodes}), agents(kube, "hd-") as fleet:
        hold = {"metadata": {"annotations": {c.HOLD_ANNOTATION: "kernel debugging"}}}
        await kube.merge_patch(NODES, "hd-1", hold)
        await kube.create(POLICIES, policy("fleet-held", "held", maxConcurrent="unlimited"))
        async with controller(cluster, kube, tmp_path, {"MAX_CONCURRENT_UPDATE": "1"}):
            await eventually(lambda: done(kube, ["hd-0", "hd-2"]), within=60, what="the others to update")
            await eventually(
                lambda: status_where(kube, "fleet-held", held=1, upToDate=2), what="the hold in the status"
            )
            (event,) = await eventually(
                lambda: nonempty(events(kube, "NodeHeld", "hd-1")),
                what="a NodeHeld Event",
            )
            assert "kernel debugging" in event["note"]
            assert event["regarding"]["kind"] == "Node"
            assert "hd-1" not in fleet.starts
            await kube.merge_patch(NODES, "hd-1", {"metadata": {"annotations": {c.HOLD_ANNOTATION: None}}})
            await eventually(lambda: done(kube, ["hd-1"]), within=60, what="the released node to update")


@dataclass
class MarksMonitor:
    """On every watch event of the nodes `names`: brupop's marks are there exactly while the node carries
    the in-cycle label; an administrator's annotation `kept` on a node stays as it was."""

    kube: KubeClient
    names: set[str]
    kept: Mapping[str, str]
    marked: set[str] = field(default_factory=set)
    violations: list[str] = field(default_factory=list)

    async def run(self) -> None:
        async for _, node in watch_events(self.kube, NODES):
            name = node["metadata"]["name"]
            if name in self.names:
                self._check(name, node)

    def _check(self, name: str, node: Obj) -> None:
        meta = node["metadata"]
        labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
        taints = {
            (t["key"], t.get("value"), t["effect"]) for t in (node.get("spec") or {}).get("taints") or ()
        }
        cycle = c.IN_CYCLE_LABEL in labels
        marks = {
            "label": labels.get(MARK) == "true",
            "taint": (MARK, "true", "PreferNoSchedule") in taints,
            "record": c.DURING_UPDATE_ANNOTATION in annotations,
        }
        if name in self.kept:
            if annotations.get(DO_NOT_DISRUPT) != self.kept[name]:
                self.violations.append(f"{name}: the administrator's {DO_NOT_DISRUPT} changed: {annotations}")
        else:
            marks["annotation"] = annotations.get(DO_NOT_DISRUPT) == "true"
        wrong = [mark for mark, present in marks.items() if present is not cycle]
        if wrong:
            self.violations.append(f"{name} (in cycle: {cycle}): {', '.join(wrong)} not as the cycle says")
        if cycle:
            self.marked.add(name)


@pytest.mark.integration
async def test_during_update_marks_are_there_exactly_while_a_node_is_in_its_cycle(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path
) -> None:
    nodes = names("du", 3)
    marks = {
        "labels": {MARK: "true"},
        "annotations": {DO_NOT_DISRUPT: "true"},
        "taints": [{"key": MARK, "value": "true", "effect": "PreferNoSchedule"}],
    }
    async with world(kube, {"marks": nodes}), agents(kube, "du-"):
        # An administrator marked du-0 already: brupop must leave that annotation alone.
        await kube.merge_patch(NODES, "du-0", {"metadata": {"annotations": {DO_NOT_DISRUPT: "true"}}})
        monitor = MarksMonitor(kube, set(nodes), kept={"du-0": "true"})
        watch = asyncio.create_task(monitor.run())
        try:
            await kube.create(POLICIES, policy("fleet-marks", "marks", maxConcurrent=1, duringUpdate=marks))
            async with controller(cluster, kube, tmp_path, {"MAX_CONCURRENT_UPDATE": "1"}):
                await eventually(lambda: done(kube, nodes), within=90, what="the pool to update")
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        final = {name: (await kube.get(NODES, name))["metadata"] for name in nodes}
    assert monitor.violations == []
    assert monitor.marked == set(nodes)
    assert final["du-0"]["annotations"][DO_NOT_DISRUPT] == "true"
    for meta in final.values():
        assert MARK not in (meta.get("labels") or {})
        assert c.DURING_UPDATE_ANNOTATION not in meta["annotations"]


@pytest.mark.integration
async def test_a_policy_the_controller_cannot_follow_is_invalid_and_starts_nothing(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path
) -> None:
    nodes = names("iv", 2)
    async with world(kube, {"invalid": nodes, None: ["iv-free"]}), agents(kube, "iv-") as fleet:
        schedule = {"timeZone": "Mars/Olympus_Mons"}  # a valid shape; no such zone
        await kube.create(POLICIES, policy("fleet-invalid", "invalid", schedule=schedule))
        async with controller(cluster, kube, tmp_path, {"MAX_CONCURRENT_UPDATE": "1"}):
            await eventually(lambda: done(kube, ["iv-free"]), within=60, what="the unselected node to update")
            shown = await eventually(
                lambda: status_where(kube, "fleet-invalid", state="Invalid", selected=2),
                what="the policy shown Invalid",
            )
            valid = {k["type"]: k for k in shown["conditions"]}["Valid"]
            assert valid["status"] == "False"
            assert "spec.schedule.timeZone" in valid["message"]
            assert fleet.starts == ["iv-free"]


@pytest.mark.integration
@pytest.mark.parametrize("crd", ["installed", "absent"])
async def test_the_environment_alone_behaves_as_before(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path, crd: str
) -> None:
    nodes = names(f"env-{crd}", 5)
    async with world(kube, {None: nodes}), agents(kube, f"env-{crd}-") as fleet:
        if crd == "absent":
            await kube.delete(CRDS, c.POLICY_CRD_NAME)
            await eventually(lambda: _crd_gone(kube), what="the UpdatePolicy CRD to be gone")
        async with controller(cluster, kube, tmp_path, {"MAX_CONCURRENT_UPDATE": "2"}) as running:
            await eventually(lambda: done(kube, nodes), within=90, what="every node updated")
            assert await running.metric("brupop_update_window_open") == 1.0
    assert fleet.peak == 2
    assert sorted(fleet.starts) == nodes


async def _crd_gone(kube: KubeClient) -> bool:
    try:
        await kube.get(CRDS, c.POLICY_CRD_NAME)
    except ApiError as err:
        return err.not_found
    return False
