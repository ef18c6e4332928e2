"""`kubectl brupop` against the real control plane, as its own process (the installed `kubectl-brupop`
script, and once through kubectl's own plugin discovery): the words and the JSON of `status` in every
situation the cluster alone can produce (held, paused, halted, back-off, window closed, blackout, no free
slot, host offers no update, up to date, nothing in the way), the writes (pause/resume all and one,
hold/release, retry) with their Events naming who did it, `--watch` following a change, and the errors:
a user without the rights (refused before anything changes), brupop's CRDs missing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from brupop.kube.client import DEPLOYMENTS, EVENTS, NODES, SERVICE_ACCOUNTS, SHADOWS, ApiError, KubeClient
from brupop.models import constants as c
from brupop.models.crd import update_policy_crd
from brupop.models.timestamp import Timestamp
from brupop.plugin.cluster import POLICIES, REPORTER
from integ.build import build
from integ.cluster import ClusterState
from integ.fleet import prepare
from integ.helm import OPERATOR_CHART, OPERATOR_RELEASE, render
from integ.kubetools import BRUPOP_LABELS, CRDS, crd_for_local_use, create_nodes, eventually, install_crd
from integ.operator import apply, token_kubeconfig

PLUGIN = Path(sys.executable).parent / "kubectl-brupop"
POOL = "plugin-test.example.com/pool"
ADMIN = "kubernetes-admin"
Obj = dict[str, Any]


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


async def plugin(cluster: ClusterState, *args: str, kubeconfig: str | None = None) -> Ran:
    process = await asyncio.create_subprocess_exec(
        str(PLUGIN),
        "--kubeconfig",
        kubeconfig or cluster.kubeconfig,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


async def status(cluster: ClusterState, *args: str) -> tuple[dict[str, Obj], dict[str, Obj], str]:
    """The JSON's nodes and policies by name, and the text."""
    as_json = await plugin(cluster, "status", "-o", "json", *args)
    assert as_json.code == 0, as_json.err
    text = await plugin(cluster, "status", *args)
    assert text.code == 0, text.err
    document = as_json.json()
    assert document["kind"] == "BrupopStatus"
    return (
        {n["node"]: n for n in document["nodes"]},
        {p["name"]: p for p in document["policies"]},
        text.out,
    )


def line_of(text: str, node: str) -> str:
    nodes = text.split("\n\n")[0]  # the node table comes first
    (line,) = [line for line in nodes.splitlines() if line.split(" ", 1)[0] == node]
    return line


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def policy(name: str, spec: Obj) -> Obj:
    return {
        "apiVersion": c.API_VERSION_POLICY,
        "kind": c.POLICY_KIND,
        "metadata": {"name": name},
        "spec": spec,
    }


async def make_shadow(
    kube: KubeClient,
    node: Obj,
    *,
    current: str = "1.0.0",
    target: str = "1.1.0",
    state: str = "Idle",
    spec: Obj | None = None,
    crashes: int = 0,
    failed_at: datetime | None = None,
) -> Obj:
    meta = node["metadata"]
    body: Obj = {
        "apiVersion": c.API_VERSION_V2,
        "kind": c.KIND,
        "metadata": {
            "name": c.shadow_name(meta["name"]),
            "namespace": c.NAMESPACE,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": meta["name"], "uid": meta["uid"]}
            ],
        },
        "spec": spec or {"state": "Idle"},
    }
    await kube.create(SHADOWS, body, namespace=c.NAMESPACE)
    status = {
        "current_version": current,
        "target_version": target,
        "current_state": state,
        "crash_count": crashes,
        "state_transition_failure_timestamp": Timestamp.from_datetime(failed_at).text if failed_at else None,
    }
    return await kube.merge_patch(
        SHADOWS, body["metadata"]["name"], {"status": status}, namespace=c.NAMESPACE, subresource="status"
    )


async def controller_deployment(kube: KubeClient, **controller: Any) -> None:
    """The chart's controller Deployment, scaled to 0: the settings the plugin reads, no pod."""
    objects = render(
        OPERATOR_CHART, release=OPERATOR_RELEASE, values=[{"controller": {"replicas": 0, **controller}}]
    )
    (deployment,) = [
        o for o in objects if o["kind"] == "Deployment" and "controller" in o["metadata"]["name"]
    ]
    name = deployment["metadata"]["name"]
    try:
        await kube.create(DEPLOYMENTS, deployment, namespace=c.NAMESPACE)
    except ApiError as err:
        if not err.conflict:
            raise
        await kube.delete(DEPLOYMENTS, name, namespace=c.NAMESPACE)
        await eventually(lambda: _absent(kube, name), what=f"the old Deployment {name} gone")
        await kube.create(DEPLOYMENTS, deployment, namespace=c.NAMESPACE)


async def _absent(kube: KubeClient, name: str) -> bool:
    try:
        await kube.get(DEPLOYMENTS, name, namespace=c.NAMESPACE)
    except ApiError as err:
        return err.not_found
    return False


@contextlib.asynccontextmanager
async def world(
    kube: KubeClient, names: Iterable[str], *, labels: Mapping[str, Mapping[str, str]] | None = None
) -> AsyncIterator[dict[str, Obj]]:
    """brupop's CRDs, a clean namespace, the controller's Deployment, and opted-in nodes; everything the test
    made (nodes, policies) is gone afterwards."""
    await prepare(kube)
    await install_crd(kube, update_policy_crd())
    await controller_deployment(kube, maxConcurrentUpdate="unlimited")
    labels = labels or {}
    created = {}
    try:
        for name in names:
            (node,) = await create_nodes(kube, [name], labels={**BRUPOP_LABELS, **labels.get(name, {})})
            created[name] = node
        yield created
    finally:
        for name in created:
            with contextlib.suppress(ApiError):
                await kube.delete(NODES, name)
        items, _ = await kube.list(POLICIES)
        for item in items:
            with contextlib.suppress(ApiError):
                await kube.delete(POLICIES, item["metadata"]["name"])


async def events_about(kube: KubeClient, name: str, *, namespace: str) -> list[Obj]:
    """The plugin's Events about the object `name`."""
    items, _ = await kube.list(EVENTS, namespace=namespace)
    return [
        e
        for e in items
        if (e.get("regarding") or {}).get("name") == name and e.get("reportingController") == REPORTER
    ]


@pytest.mark.integration
async def test_status_says_why_each_node_waits_in_words_and_json(
    cluster: ClusterState, kube: KubeClient
) -> None:
    now = datetime.now(UTC)
    pools = {
        "plg-paused": "paused",
        "plg-halted": "halted",
        "plg-window": "window",
        "plg-blackout": "blackout",
        "plg-slot-1": "slots",
        "plg-slot-2": "slots",
    }
    loose = ["plg-held", "plg-backoff", "plg-waves", "plg-start", "plg-current"]
    labels = {name: {POOL: pool} for name, pool in pools.items()}
    async with world(kube, [*pools, *loose], labels=labels) as nodes:
        opens_hour = (now + timedelta(hours=3)).hour
        today = now.date()
        specs: dict[str, Obj] = {
            "paused": {"paused": True},
            "halted": {"failureBudget": {"maxFailures": 1, "window": "1h"}},
            "window": {"schedule": {"cron": f"* * {opens_hour} * * * *", "timeZone": "UTC"}},
            "blackout": {
                "schedule": {
                    "blackouts": [
                        {
                            "start": str(today - timedelta(days=1)),
                            "end": str(today + timedelta(days=1)),
                            "reason": "change freeze",
                        }
                    ]
                }
            },
            "slots": {"maxConcurrent": 1},
        }
        for name, spec in specs.items():
            await kube.create(
                POLICIES, policy(f"plg-{name}", {"nodeSelector": {"matchLabels": {POOL: name}}, **spec})
            )
        halted_since = now - timedelta(minutes=10)
        halt = {
            "since": Timestamp.from_datetime(halted_since).text,
            "failedNodes": ["plg-gone"],
            "message": "1 failed update within 1h spent the failure budget",
        }
        await kube.merge_patch(
            POLICIES, "plg-halted", {"status": {"state": "Halted", "halted": halt}}, subresource="status"
        )
        await kube.merge_patch(
            NODES, "plg-held", {"metadata": {"annotations": {c.HOLD_ANNOTATION: "kernel debugging"}}}
        )
        failed_at = now - timedelta(minutes=1)
        started = Timestamp.from_datetime(now - timedelta(minutes=2)).text
        for name, node in nodes.items():
            extra: dict[str, Any] = {}
            if name == "plg-slot-1":
                extra = {
                    "spec": {
                        "state": "StagedAndPerformedUpdate",
                        "state_transition_timestamp": started,
                        "version": "1.1.0",
                    }
                }
            elif name == "plg-backoff":
                extra = {"crashes": 2, "failed_at": failed_at}
            elif name == "plg-waves":
                extra = {"target": "1.0.0"}
            elif name == "plg-current":
                extra = {"current": "1.1.0", "target": "1.1.0"}
            await make_shadow(kube, node, **extra)

        rows, policies, text = await status(cluster)

        def says(node: str, phase: str, code: str | None, words: str) -> Obj:
            row = rows[node]
            assert (row["phase"], (row["reason"] or {}).get("code")) == (phase, code), row
            assert re.fullmatch(words, row["why"]), row["why"]
            assert line_of(text, node).endswith(row["why"])
            return row

        says(
            "plg-paused",
            "Waiting",
            "Paused",
            re.escape("paused by policy plg-paused (resume: kubectl brupop resume plg-paused)"),
        )
        halted = says(
            "plg-halted",
            "Waiting",
            "Halted",
            r"policy plg-halted halted (9|10) min ago after failures on plg-gone "
            r"\(resume: kubectl brupop resume plg-halted\)",
        )
        assert halted["reason"]["since"] == iso(halted_since)
        opens = (now + timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
        window = says(
            "plg-window",
            "Waiting",
            "WindowClosed",
            rf"waiting for the window, opens (\w{{3}} )?{opens:%H}:00 UTC \(in (2 h \d+ min|3 h)\)",
        )
        assert window["reason"]["opens"] == iso(opens)
        ends = datetime.combine(today + timedelta(days=2), datetime.min.time(), UTC)
        blackout = says(
            "plg-blackout",
            "Waiting",
            "BlackedOut",
            rf"blackout \(change freeze\) until {ends:%a} 00:00 UTC \(in 1 d( \d+ h)?\)",
        )
        assert (blackout["reason"]["until"], blackout["reason"]["reason"]) == (iso(ends), "change freeze")
        says(
            "plg-slot-1",
            "Updating",
            None,
            r"updating to 1\.1\.0: Idle -> StagedAndPerformedUpdate, step began 2 min ago",
        )
        slot = says("plg-slot-2", "Waiting", "NoFreeSlot", re.escape("no free slot (1/1 updating)"))
        assert (slot["reason"]["inCycle"], slot["reason"]["limit"]) == (1, 1)
        says(
            "plg-held",
            "Waiting",
            "Held",
            re.escape("held by annotation: kernel debugging (release: kubectl brupop release plg-held)"),
        )
        retry = failed_at + timedelta(minutes=5)
        backoff = says(
            "plg-backoff",
            "Waiting",
            "BackingOff",
            rf"back-off until (\w{{3}} )?{retry:%H:%M} UTC \(in [34] min\) after 2 failed updates "
            r"\(skip it: kubectl brupop retry plg-backoff\)",
        )
        assert backoff["reason"]["until"] == iso(retry)
        says(
            "plg-waves",
            "NoUpdateOffered",
            None,
            re.escape("host offers no update yet (Bottlerocket update waves; 1.1.0 is out)"),
        )
        says("plg-start", "Starting", None, re.escape("starts on the controller's next pass"))
        says("plg-current", "UpToDate", None, "up to date")

        assert {name: p["status"]["state"] for name, p in policies.items() if name.startswith("plg-")} == {
            "plg-paused": "Paused",
            "plg-halted": "Halted",
            "plg-window": "Active",
            "plg-blackout": "Active",
            "plg-slots": "Active",
        }
        slots = policies["plg-slots"]["status"]
        assert (slots["selected"], slots["upToDate"], slots["updating"], slots["limit"]) == (2, 0, 1, "1")
        assert policies["plg-window"]["status"]["window"] == "Closed"
        assert policies["plg-blackout"]["status"]["window"] == "Blackout"
        env = policies["(environment)"]
        assert env["status"]["limit"] == "unlimited"
        assert env["etaNote"] == "no completed update observed yet"
        assert re.search(
            r"^plg-slots\s+Active\s+0/2\s+1\s+0\s+0\s+1\s+Open\s+-\s+no completed update", text, re.M
        ), text


@pytest.mark.integration
async def test_the_controllers_history_gives_time_per_node_and_an_eta(
    cluster: ClusterState, kube: KubeClient
) -> None:
    now = datetime.now(UTC)
    names = ["plg-e1", "plg-e2", "plg-e3"]
    async with world(kube, names, labels={name: {POOL: "eta"} for name in names}) as nodes:
        await kube.create(
            POLICIES, policy("plg-eta", {"nodeSelector": {"matchLabels": {POOL: "eta"}}, "maxConcurrent": 1})
        )
        for index, node in enumerate(nodes.values()):
            await make_shadow(kube, node, current="1.1.0" if index == 0 else "1.0.0", target="1.1.0")
        cycle = {
            "from": "1.0.0",
            "to": "1.1.0",
            "start": Timestamp.from_datetime(now - timedelta(minutes=30)).text,
            "end": Timestamp.from_datetime(now - timedelta(minutes=18)).text,
            "outcome": "Succeeded",
            "reason": "",
        }
        history = json.dumps({"cycles": [cycle]})
        await kube.merge_patch(
            SHADOWS,
            "brs-plg-e1",
            {"metadata": {"annotations": {c.HISTORY_ANNOTATION: history}}},
            namespace=c.NAMESPACE,
        )
        rows, policies, text = await status(cluster)
        # Recorded before cycles named their pool: the JSON says null.
        assert rows["plg-e1"]["lastCycle"] == {**cycle, "pool": None}
        assert re.search(r"^plg-e1 .* Succeeded 1\.1\.0 18 min ago \(12 min\)\s+up to date$", text, re.M), (
            text
        )
        pool = policies["plg-eta"]
        assert (pool["perNodeSeconds"], pool["observedCycles"]) == (720.0, 1)
        eta = datetime.fromisoformat(pool["eta"].replace("Z", "+00:00"))
        assert timedelta(minutes=23) < eta - now <= timedelta(minutes=25), (
            "2 nodes left, 1 at a time, 12 min each"
        )
        assert pool["etaNote"] == "2 left in 2 waves"
        assert re.search(r"^plg-eta\s+Active\s+1/3\s.* \(in 2[34] min\); 2 left in 2 waves$", text, re.M), (
            text
        )


@pytest.mark.integration
async def test_pause_and_resume_everything_leave_policies_paused_on_purpose_alone(
    cluster: ClusterState, kube: KubeClient
) -> None:
    async with world(
        kube, ["plg-a", "plg-b", "plg-c"], labels={"plg-a": {POOL: "a"}, "plg-b": {POOL: "b"}}
    ) as nodes:
        for node in nodes.values():
            await make_shadow(kube, node)
        await kube.create(POLICIES, policy("plg-a", {"nodeSelector": {"matchLabels": {POOL: "a"}}}))
        await kube.create(
            POLICIES, policy("plg-b", {"nodeSelector": {"matchLabels": {POOL: "b"}}, "paused": True})
        )

        paused = await plugin(cluster, "pause")
        assert paused.code == 0, paused.err
        assert paused.out.strip() == (
            "paused: brupop-pause-all (created, for the nodes no other policy selects), plg-a. "
            "Nodes already in an update cycle finish it; nothing new starts until `kubectl brupop resume`."
        )
        created = await kube.get(POLICIES, c.PAUSE_ALL_POLICY)
        assert created["spec"] == {"nodeSelector": {}, "priority": -1000, "paused": True}
        assert (await kube.get(POLICIES, "plg-a"))["spec"]["paused"] is True
        rows, _, _ = await status(cluster)
        assert rows["plg-a"]["why"] == "paused by policy plg-a (resume: kubectl brupop resume plg-a)"
        assert rows["plg-c"]["why"] == "paused by `kubectl brupop pause` (resume: kubectl brupop resume)"
        assert rows["plg-c"]["policy"] == c.PAUSE_ALL_POLICY
        again = await plugin(cluster, "pause")
        assert again.out.strip() == "everything was already paused; nothing changed"

        async def recorded() -> list[Obj]:
            return await events_about(kube, c.PAUSE_ALL_POLICY, namespace="default")

        (event,) = await eventually(recorded, what="the pause Event")
        assert (event["reason"], event["regarding"]["kind"]) == ("Paused", "UpdatePolicy")
        assert event["note"].startswith(f"{ADMIN} paused all updates (kubectl brupop pause)")

        resumed = await plugin(cluster, "resume")
        assert resumed.code == 0, resumed.err
        assert resumed.out.strip() == (
            "resumed: brupop-pause-all (deleted), plg-a. Still stopped: plg-b is paused by its spec "
            "(kubectl brupop resume plg-b)."
        )
        assert (await kube.get(POLICIES, "plg-a"))["spec"]["paused"] is False
        assert c.PAUSED_BY_ANNOTATION not in (
            (await kube.get(POLICIES, "plg-a"))["metadata"].get("annotations") or {}
        )
        assert (await kube.get(POLICIES, "plg-b"))["spec"]["paused"] is True
        with pytest.raises(ApiError) as gone:
            await kube.get(POLICIES, c.PAUSE_ALL_POLICY)
        assert gone.value.not_found

        one = await plugin(cluster, "resume", "plg-b")
        assert one.out.strip() == "resumed policy plg-b: unpaused."
        rows, _, _ = await status(cluster)
        assert {rows[n]["phase"] for n in nodes} == {"Starting"}


@pytest.mark.integration
async def test_resume_clears_a_halt_and_pause_of_one_policy(cluster: ClusterState, kube: KubeClient) -> None:
    async with world(kube, ["plg-h"], labels={"plg-h": {POOL: "h"}}) as nodes:
        await make_shadow(kube, nodes["plg-h"])
        spec = {
            "nodeSelector": {"matchLabels": {POOL: "h"}},
            "failureBudget": {"maxFailures": 1, "window": "1h"},
        }
        await kube.create(POLICIES, policy("plg-h", spec))
        since = datetime.now(UTC) - timedelta(minutes=3)
        halt = {"since": Timestamp.from_datetime(since).text, "failedNodes": ["x"], "message": "spent"}
        await kube.merge_patch(
            POLICIES, "plg-h", {"status": {"state": "Halted", "halted": halt}}, subresource="status"
        )
        rows, _, _ = await status(cluster)
        assert rows["plg-h"]["reason"]["code"] == "Halted"

        resumed = await plugin(cluster, "resume", "plg-h")
        assert resumed.code == 0, resumed.err
        assert re.fullmatch(r"resumed policy plg-h: its halt of 3 min ago cleared\.\n", resumed.out), (
            resumed.out
        )
        annotations = (await kube.get(POLICIES, "plg-h"))["metadata"]["annotations"]
        assert Timestamp.parse(annotations[c.RESUMED_AT_ANNOTATION]).instant >= since
        rows, _, _ = await status(cluster)
        assert rows["plg-h"]["phase"] == "Starting", (
            "the halt the controller recorded is cleared by resumed-at"
        )

        paused = await plugin(cluster, "pause", "plg-h")
        assert (
            paused.out.strip()
            == "paused policy plg-h: nodes in an update cycle finish it; nothing new starts in its pool."
        )
        assert (
            await plugin(cluster, "pause", "plg-h")
        ).out.strip() == "policy plg-h is already paused; nothing changed"
        missing = await plugin(cluster, "pause", "plg-nothing")
        assert (missing.code, missing.err.strip()) == (
            1,
            "kubectl brupop pause: there is no UpdatePolicy plg-nothing "
            "(kubectl get updatepolicies lists them)",
        )


@pytest.mark.integration
async def test_hold_release_and_retry_write_their_annotation_and_an_event(
    cluster: ClusterState, kube: KubeClient
) -> None:
    async with world(kube, ["plg-x", "plg-y"]) as nodes:
        failed = datetime.now(UTC) - timedelta(minutes=1)
        await make_shadow(kube, nodes["plg-x"])
        shadow = await make_shadow(kube, nodes["plg-y"], crashes=1, failed_at=failed)

        held = await plugin(cluster, "hold", "plg-x", "--reason", "kernel debugging, ticket 4711")
        assert held.code == 0, held.err
        assert held.out.startswith("held node plg-x: kernel debugging, ticket 4711.")
        node = await kube.get(NODES, "plg-x")
        assert node["metadata"]["annotations"][c.HOLD_ANNOTATION] == "kernel debugging, ticket 4711"
        rows, _, _ = await status(cluster)
        assert rows["plg-x"]["reason"] == {
            "code": "Held",
            "reason": "kernel debugging, ticket 4711",
            "message": "held by annotation: kernel debugging, ticket 4711",
        }

        async def noted() -> list[Obj]:
            return await events_about(kube, "plg-x", namespace="default")

        (event,) = await eventually(noted, what="the hold Event")
        assert event["regarding"]["kind"] == "Node"
        assert event["regarding"]["uid"] == node["metadata"]["uid"]
        assert (
            event["note"] == f"{ADMIN} held node plg-x (kubectl brupop hold): kernel debugging, ticket 4711"
        )

        released = await plugin(cluster, "release", "plg-x")
        assert released.out.strip() == "released node plg-x: it may start an update again."
        assert c.HOLD_ANNOTATION not in (
            (await kube.get(NODES, "plg-x"))["metadata"].get("annotations") or {}
        )
        await eventually(lambda: _count(noted, 2), what="the release Event")
        assert (
            await plugin(cluster, "release", "plg-x")
        ).out.strip() == "node plg-x is not held; nothing changed"
        default = await plugin(cluster, "hold", "plg-x")
        assert default.out.startswith(f"held node plg-x: held by {ADMIN} with kubectl brupop.")

        rows, _, _ = await status(cluster)
        assert rows["plg-y"]["reason"]["code"] == "BackingOff"
        retried = await plugin(cluster, "retry", "plg-y")
        assert retried.code == 0, retried.err
        failure = shadow["status"]["state_transition_failure_timestamp"]
        assert retried.out.strip() == (
            f"retry of node plg-y requested: the back-off after its failure at {failure} is waived "
            "(a later failure backs off again)."
        )
        annotations = (await kube.get(SHADOWS, "brs-plg-y", namespace=c.NAMESPACE))["metadata"]["annotations"]
        assert annotations[c.RETRY_ANNOTATION] == failure
        rows, _, _ = await status(cluster)
        assert (rows["plg-y"]["phase"], rows["plg-y"]["why"], rows["plg-y"]["retryRequested"]) == (
            "Starting",
            "starts on the controller's next pass (back-off waived by kubectl brupop retry)",
            True,
        )

        async def retry_event() -> list[Obj]:
            return await events_about(kube, "brs-plg-y", namespace=c.NAMESPACE)

        (event,) = await eventually(retry_event, what="the retry Event")
        assert (event["reason"], event["regarding"]["kind"]) == ("RetryRequested", c.KIND)
        assert event["note"].startswith(f"{ADMIN} waived node plg-y's back-off until ")
        nothing = await plugin(cluster, "retry", "plg-x")
        assert (nothing.code, nothing.err.strip()) == (
            1,
            "kubectl brupop retry: node plg-x has no failed update to retry",
        )
        stranger = await plugin(cluster, "hold", "plg-nobody")
        assert (stranger.code, stranger.err.strip()) == (
            1,
            "kubectl brupop hold: there is no node plg-nobody",
        )


async def _count(check: Any, wanted: int) -> bool:
    return len(await check()) == wanted


async def service_account(kube: KubeClient, name: str, *, rules: list[Obj] | None) -> str:
    """A service account (with `rules` in a ClusterRole bound to it, or no rights at all) and its token."""
    body = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": c.NAMESPACE},
    }
    with contextlib.suppress(ApiError):
        await kube.create(SERVICE_ACCOUNTS, body, namespace=c.NAMESPACE)
    if rules is not None:
        role = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": rules,
        }
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": c.NAMESPACE}],
        }
        await apply(kube, [role, binding])
    answer = await kube.create(
        SERVICE_ACCOUNTS,
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        },
        namespace=c.NAMESPACE,
        name=name,
        subresource="token",
    )
    return str(answer["status"]["token"])


VIEWER = [
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [c.API_GROUP], "resources": [c.PLURAL, c.POLICY_PLURAL], "verbs": ["get", "list", "watch"]},
]


@pytest.mark.integration
async def test_a_user_without_rights_is_told_which_verb_on_which_resource(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path
) -> None:
    async with world(kube, ["plg-r"]) as nodes:
        await make_shadow(kube, nodes["plg-r"])
        nobody = token_kubeconfig(
            cluster, tmp_path / "nobody", await service_account(kube, "plugin-nobody", rules=None)
        )
        refused = await plugin(cluster, "status", kubeconfig=str(nobody))
        assert refused.code == 1
        user = f"system:serviceaccount:{c.NAMESPACE}:plugin-nobody"
        assert refused.err.strip() == (
            f"kubectl brupop status: you ({user}) may not list bottlerocketshadows (API group "
            f"brupop.bottlerocket.aws, in namespace {c.NAMESPACE}): ask your cluster administrator for that "
            "right (check with `kubectl auth can-i list bottlerocketshadows.brupop.bottlerocket.aws "
            f"-n {c.NAMESPACE}`)"
        )

        viewer = token_kubeconfig(
            cluster, tmp_path / "viewer", await service_account(kube, "plugin-viewer", rules=VIEWER)
        )
        seen = await plugin(cluster, "status", "-o", "json", kubeconfig=str(viewer))
        assert seen.code == 0, seen.err
        assert any(
            "may not get deployments/brupop-controller-deployment" in note for note in seen.json()["notes"]
        )
        assert {n["node"]: n["phase"] for n in seen.json()["nodes"]}["plg-r"] == "Starting"
        hold = await plugin(cluster, "hold", "plg-r", kubeconfig=str(viewer))
        assert (hold.code, hold.err.strip()) == (
            1,
            f"kubectl brupop hold: you (system:serviceaccount:{c.NAMESPACE}:plugin-viewer) may not patch "
            "nodes/plg-r (API group core, cluster-wide): ask your cluster administrator for that right "
            "(check with `kubectl auth can-i patch nodes`)",
        )
        assert c.HOLD_ANNOTATION not in (
            (await kube.get(NODES, "plg-r"))["metadata"].get("annotations") or {}
        )
        pause = await plugin(cluster, "pause", kubeconfig=str(viewer))
        assert pause.code == 1
        assert "may not patch updatepolicies (API group brupop.bottlerocket.aws, cluster-wide)" in pause.err
        items, _ = await kube.list(POLICIES)
        assert items == [], "nothing was created or paused"


@pytest.mark.integration
async def test_missing_crds_are_named_with_how_to_install_them(
    cluster: ClusterState, kube: KubeClient
) -> None:
    async with world(kube, ["plg-m"]) as nodes:
        await make_shadow(kube, nodes["plg-m"])
        try:
            await kube.delete(CRDS, c.POLICY_CRD_NAME)
            await _gone(cluster, kube, c.API_VERSION_POLICY)
            rows, _, text = await status(cluster)
            assert rows["plg-m"]["phase"] == "Starting"
            assert "the UpdatePolicy CRD is not installed: only the controller's settings apply" in text
            paused = await plugin(cluster, "pause")
            assert (paused.code, paused.err.strip()) == (
                1,
                f"kubectl brupop pause: this needs the UpdatePolicy CRD ({c.POLICY_CRD_NAME}), which this "
                "cluster lacks: upgrade brupop's CRD chart "
                "(helm upgrade brupop-crd charts/bottlerocket-shadow)",
            )

            await kube.delete(CRDS, c.CRD_NAME)
            await _gone(cluster, kube, c.API_VERSION_V2)
            missing = await plugin(cluster, "status")
            assert missing.code == 1
            assert missing.err.strip() == (
                "kubectl brupop status: brupop is not installed in this cluster (context brupop-integ of "
                f"kubeconfig {cluster.kubeconfig}): the CustomResourceDefinitions {c.CRD_NAME} and "
                f"{c.POLICY_CRD_NAME} are missing; install brupop with helm install brupop-crd "
                f"charts/bottlerocket-shadow -n {c.NAMESPACE} --create-namespace && helm install brupop "
                f"charts/bottlerocket-update-operator -n {c.NAMESPACE} "
                "(README: Install)"
            )
        finally:
            await install_crd(kube, crd_for_local_use())
            await install_crd(kube, update_policy_crd())


async def _gone(cluster: ClusterState, kube: KubeClient, version: str) -> None:
    async def not_served() -> bool:
        try:
            await kube.request("GET", f"/apis/{version}")
        except ApiError as err:
            return err.not_found
        return False

    await eventually(not_served, within=60, what=f"{version} no longer served")


@pytest.mark.integration
async def test_watch_redraws_on_a_change_and_kubectl_finds_the_plugin(
    cluster: ClusterState, kube: KubeClient
) -> None:
    async with world(kube, ["plg-w"]) as nodes:
        await make_shadow(kube, nodes["plg-w"])
        process = await asyncio.create_subprocess_exec(
            str(PLUGIN),
            "--kubeconfig",
            cluster.kubeconfig,
            "status",
            "--watch",
            "-o",
            "json",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=2**22,
        )
        try:
            assert process.stdout is not None

            async def phase_of_w() -> str:
                async with asyncio.timeout(30):
                    line = await process.stdout.readline()  # type: ignore[union-attr]
                document = json.loads(line)
                return str({n["node"]: n["phase"] for n in document["nodes"]}["plg-w"])

            assert await phase_of_w() == "Starting"
            await kube.merge_patch(
                NODES, "plg-w", {"metadata": {"annotations": {c.HOLD_ANNOTATION: "watch me"}}}
            )
            async with asyncio.timeout(30):
                while await phase_of_w() != "Waiting":
                    pass
        finally:
            process.terminate()
            await process.wait()

        kubectl = await asyncio.create_subprocess_exec(
            str(build() / "kubectl"),
            "brupop",
            "status",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={
                **os.environ,
                "KUBECONFIG": cluster.kubeconfig,
                "PATH": f"{PLUGIN.parent}{os.pathsep}{os.environ.get('PATH', '')}",
            },
        )
        out, err = await kubectl.communicate()
        assert kubectl.returncode == 0, err.decode()
        assert "held by annotation: watch me (release: kubectl brupop release plg-w)" in line_of(
            out.decode(), "plg-w"
        )


EXEC = """#!{python}
import json, sys
print(json.dumps({{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
    "status": {{"token": {token!r}, "expirationTimestamp": "2099-01-01T00:00:00Z"}}}}))
"""


@pytest.mark.integration
async def test_exec_credentials_work_and_the_event_names_that_user(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path
) -> None:
    rules = [
        *VIEWER,
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["patch"]},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
    ]
    async with world(kube, ["plg-z"]) as nodes:
        await make_shadow(kube, nodes["plg-z"])
        token = await service_account(kube, "plugin-operator", rules=rules)
        script = tmp_path / "get-token"
        script.write_text(EXEC.format(python=sys.executable, token=token))
        script.chmod(0o700)
        base = json.loads(Path(token_kubeconfig(cluster, tmp_path / "base", "unused")).read_text())
        base["users"] = [
            {
                "name": "brupop",
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1",
                        "command": "./get-token",
                        "interactiveMode": "Never",
                    }
                },
            }
        ]
        config = tmp_path / "exec-kubeconfig"
        config.write_text(json.dumps(base))
        held = await plugin(cluster, "hold", "plg-z", kubeconfig=str(config))
        assert held.code == 0, held.err
        user = f"system:serviceaccount:{c.NAMESPACE}:plugin-operator"
        assert held.out.startswith(f"held node plg-z: held by {user} with kubectl brupop.")

        async def noted() -> list[Obj]:
            return await events_about(kube, "plg-z", namespace="default")

        (event,) = await eventually(noted, what="the hold Event")
        assert event["note"].startswith(f"{user} held node plg-z")
