"""One node's agent, as an object (one process can run a whole simulated fleet of them).

Each pass is level-based: it looks at the shadow, the Node and the host as they are now and does what the
wanted state needs, so an agent restarted at any line carries on from where things stand:

- StagedAndPerformedUpdate: refresh if the host's choice is unknown, prepare (unless already staged), then
  activate; workloads keep running.
- RebootedIntoUpdate: if the host already runs the wanted version (after the reboot), remove the load
  balancer exclusion and uncordon, and only then report. Otherwise exclude from load balancers and wait
  (if configured), cordon and drain through the apiserver, reboot, and wait for the host to boot: a host
  that still answers after accepting the reboot is shutting down, not back (`HostClient.wait_for_boot`),
  and is waited for up to `reboot_timeout`. A host that boots on another version has rolled back: an
  error, reported as such. An agent restarted while its host shuts down finds the update still Ready and
  next to boot, so it drains (a no-op by then) and asks for the reboot again, and waits in the same way.
- MonitoringUpdate: check the version again and uncordon defensively.
- Idle after ErrorReset (or an abandoned update): undo the exclusion and the cordon, and deactivate an
  update the host activated but nobody wants any more.

A failed step is reported once, as ErrorReset with crash_count + 1 and the failure time; the agent then
waits for the controller to send the node back to Idle. A step that fails while the node already reports
ErrorReset (the Idle step undoing a cycle) is on record already: it is retried after a back-off and not
counted again. Trouble reaching the host or the apiserver is retried with back-off too; a back-off is not
cut short by watch events. A host socket the agent may not use is a configuration error, never a reboot or
a failed step: logged with its fix at each (slow) retry, and the agent is not ready meanwhile.

Each step only the agent sees is told as an Event on the Node and on the shadow (`brupop.agent.story`),
after it is reported; telling never holds a step.

What the agent last reported is remembered with the identity of the shadow it read (UID and
resourceVersion), to cover the moment before the watch shows the write; a shadow deleted and created
again is a new object and gets a fresh status.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import structlog

from brupop.agent import story
from brupop.agent.apiclient import ApiserverClient, ApiserverError
from brupop.agent.host import (
    EAGER,
    RELAXED,
    HostAccessError,
    HostClient,
    HostError,
    HostUnreachableError,
    PollPace,
)
from brupop.kube.client import NODES, SHADOWS, KubeClient
from brupop.kube.events import EventRecorder
from brupop.kube.informer import Informer
from brupop.kube.retry import Backoff
from brupop.models.constants import IN_CYCLE_LABEL, UPDATER_INTERFACE_LABEL, shadow_name
from brupop.models.host import CommandStatus, CommandType, UpdateState, UpdateStatus
from brupop.models.shadow import BottlerocketShadow, ShadowSpec, ShadowState, ShadowStatus
from brupop.models.timestamp import Timestamp
from brupop.models.wire import WireError
from brupop.policy.drain import CORDON_ANNOTATION, CORDONED_BY_BRUPOP
from brupop.policy.membership import managed

log = structlog.get_logger("brupop.agent")
S = ShadowState
Obj = dict[str, Any]


FAILED_CHECK_RETRY = 10.0
"""Seconds before a failed update check is tried again (instead of the whole interval)."""
RETRY_BACKOFF = Backoff(base=0.2, cap=30.0)


class StepError(Exception):
    """An update step failed; reported as ErrorReset."""


class RetryLaterError(Exception):
    """The pass could not finish, and nothing is to be reported: try again after a back-off."""


@dataclass(frozen=True, slots=True)
class AgentOptions:
    exclude_from_lb_wait: float = 0.0
    update_check_interval: float = 120.0
    reboot_timeout: float = 1800.0
    """How long a host that accepted a reboot may take to boot again, its shutdown included."""
    refused_reboot_grace: float = 180.0
    """How long a host that refused a reboot is watched for a boot before the refusal is a failed step (a
    host already shutting down, as after an agent restart mid-shutdown, may refuse a second reboot)."""
    misconfigured_retry: float = 30.0
    """Seconds between attempts while the host socket cannot be used (a configuration error)."""
    backoff: Backoff = RETRY_BACKOFF
    """Between attempts of a pass that failed (host or apiserver trouble, a step failing again)."""


@dataclass(frozen=True, slots=True)
class _Report:
    """A status written for one version of the shadow (UID and resourceVersion of the object read)."""

    uid: object
    resource_version: object
    status: ShadowStatus


_MANAGED_LABELS = (UPDATER_INTERFACE_LABEL, IN_CYCLE_LABEL)


def trim_node(node: Obj) -> Obj:
    meta = node.get("metadata") or {}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k == CORDON_ANNOTATION}
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k in _MANAGED_LABELS}
    return {
        "metadata": {
            "name": meta.get("name"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "annotations": annotations,
            "labels": labels,
        },
        "spec": {"unschedulable": bool((node.get("spec") or {}).get("unschedulable"))},
    }


class Agent:
    def __init__(
        self,
        *,
        node_name: str,
        namespace: str,
        kube: KubeClient,
        host: HostClient,
        api: ApiserverClient,
        options: AgentOptions | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        events: story.Recorder | None = None,
    ) -> None:
        self.node_name = node_name
        self.namespace = namespace
        self.events = events or EventRecorder(kube, controller=story.REPORTER, instance=node_name)
        self._shadow_uid: str | None = None
        self.host = host
        self.api = api
        self.options = options or AgentOptions()
        self._clock = clock
        self._sleep = sleep
        self._wake = asyncio.Event()
        self._next_refresh = 0.0
        self._target: str | None = None
        self._reported: _Report | None = None
        self.problem: str | None = None
        """What keeps the agent from working that only a change of its configuration can fix."""
        self.log = log.bind(node=node_name)
        self.shadow_informer = Informer(
            kube.list_watch(
                SHADOWS, namespace=namespace, field_selector=f"metadata.name={shadow_name(node_name)}"
            ),
            name=f"shadow/{node_name}",
            on_change=self.poke,
        )
        self.node_informer = Informer(
            kube.list_watch(NODES, field_selector=f"metadata.name={node_name}"),
            name=f"node/{node_name}",
            transform=trim_node,
            on_change=self.poke,
        )

    def poke(self) -> None:
        self._wake.set()

    @property
    def ready(self) -> bool:
        """Watching its shadow and Node, and nothing misconfigured."""
        return self.shadow_informer.ready.is_set() and self.node_informer.ready.is_set() and not self.problem

    async def run(self) -> None:
        """Until cancelled: act on every change of the shadow or the Node, and refresh the host's update
        check every `update_check_interval` seconds."""
        tasks = [
            asyncio.create_task(self.shadow_informer.run()),
            asyncio.create_task(self.node_informer.run()),
            asyncio.create_task(self.events.run()),
        ]
        try:
            await self.shadow_informer.ready.wait()
            await self.node_informer.ready.wait()
            failures = 0
            while True:
                self._wake.clear()
                try:
                    await self.reconcile_once()
                except HostAccessError as err:
                    self.problem = str(err)
                    retry = self.options.misconfigured_retry
                    self.log.error(
                        "cannot use the host API: fix the agent's configuration",
                        error=str(err),
                        retry_in=retry,
                    )
                    await self._sleep(retry)
                    continue
                except (HostError, ApiserverError, RetryLaterError) as err:
                    self.problem = None
                    failures += 1
                    delay = self.options.backoff.delay(failures)
                    self.log.warning("will retry", error=str(err), retry_in=round(delay, 2))
                    await self._sleep(delay)  # a back-off is not cut short by watch events
                    continue
                self.problem = None
                failures = 0
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(self._next_refresh - time.monotonic(), 0.5)):
                        await self._wake.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _shadow(self) -> BottlerocketShadow | None:
        objects = self.shadow_informer.items()
        if not objects:
            return None
        try:
            shadow = BottlerocketShadow.from_wire(objects[0])
        except WireError as err:
            raise ApiserverError(f"my BottlerocketShadow is invalid: {err}") from None
        reported = self._reported
        if (
            reported is not None
            and (reported.uid, reported.resource_version) == _identity(shadow)
            and shadow.status != reported.status
        ):
            shadow = replace(shadow, status=reported.status)  # the watch has not shown our write yet
        return shadow

    async def _report(self, shadow: BottlerocketShadow, status: ShadowStatus) -> None:
        await self.api.update_status(status)
        self._reported = _Report(*_identity(shadow), status=status)

    def _tell(self, told: story.Told) -> None:
        story.tell(
            self.events,
            told,
            node=self.node_name,
            node_uid=self.api.node_uid or None,
            namespace=self.namespace,
            shadow_uid=self._shadow_uid,
        )

    async def reconcile_once(self) -> None:
        nodes = self.node_informer.items()
        if not nodes:
            raise ApiserverError(f"node {self.node_name} is not visible yet")
        self.api.node_uid = str(nodes[0]["metadata"]["uid"])
        shadow = self._shadow()
        if shadow is None:
            if not managed(nodes[0]):
                # The node left brupop and its cycle is over: the controller deleted the shadow on purpose
                # and this pod is about to go; creating it again would only fight the controller.
                self.log.info("not creating a BottlerocketShadow: brupop no longer manages this node")
                return
            self.log.info("creating my BottlerocketShadow")
            await self.api.create_shadow()
            return
        uid = shadow.metadata.get("uid")
        self._shadow_uid = str(uid) if uid else None
        running = await self.host.os_version()
        status, spec = shadow.status, shadow.spec
        if status is None:
            target = await self._refresh_target(running, force=True)
            await self._report(
                shadow,
                ShadowStatus(
                    current_version=running, target_version=target, current_state=S.IDLE, crash_count=0
                ),
            )
            return
        if spec.state is status.current_state:
            await self._settled(shadow, status, running)
            return
        if status.current_state is S.ERROR_RESET and spec.state is not S.IDLE:
            return  # already reported: the controller sends it back to Idle (a retry would inflate crashes)
        self.log.info(
            "step", wanted=spec.state.value, current=status.current_state.value, version=spec.version
        )
        try:
            await self._step(spec, status, running)
        except StepError as err:
            if status.current_state is S.ERROR_RESET:  # undoing a failed cycle: that failure is on record
                raise RetryLaterError(f"{spec.state.value} after ErrorReset failed again: {err}") from None
            self.log.error("update step failed", wanted=spec.state.value, error=str(err))
            failed = replace(
                status,
                current_state=S.ERROR_RESET,
                current_version=await self.host.os_version(),
                crash_count=status.crash_count + 1,
                state_transition_failure_timestamp=Timestamp.from_datetime(self._clock()),
            )
            await self._report(shadow, failed)
            self._tell(
                story.failed(
                    step=spec.state, version=spec.version, failures=failed.crash_count, error=str(err)
                )
            )
            return
        reached: dict[str, Any] = {
            "current_state": spec.state,
            "current_version": await self.host.os_version(),
        }
        if spec.state is S.IDLE and status.current_state is S.MONITORING_UPDATE:
            reached.update(crash_count=0, state_transition_failure_timestamp=None)  # a full cycle succeeded
        await self._report(shadow, replace(status, **reached))
        told = _reached(spec, status.current_state, reached["current_version"])
        if told is not None:
            self._tell(told)

    async def _settled(self, shadow: BottlerocketShadow, status: ShadowStatus, running: str) -> None:
        """Nothing to do for the controller's goal: keep the host tidy and the report current."""
        spec = shadow.spec
        if spec.state is S.IDLE:
            host = await self.host.status()
            if host is not None and host.update_state is UpdateState.READY:
                self.log.info("deactivating an update nobody wants", staged=host.staged_version)
                await self._command(CommandType.DEACTIVATE)
            node = self.node_informer.items()[0]
            if (node["metadata"].get("annotations") or {}).get(CORDON_ANNOTATION) == CORDONED_BY_BRUPOP:
                await self.api.uncordon()  # never leave a node cordoned by brupop once it is idle
        target = await self._refresh_target(running) if spec.state is S.IDLE else status.target_version
        fresh = replace(status, current_version=running, target_version=target)
        if fresh != status:
            await self._report(shadow, fresh)

    async def _refresh_target(self, running: str, *, force: bool = False) -> str:
        """The version the host would update to (its chosen update, None when nothing is on offer),
        checked at most once per interval: an idle agent wakes on every Node heartbeat."""
        if force or time.monotonic() >= self._next_refresh:
            self._next_refresh = time.monotonic() + self.options.update_check_interval
            try:
                await self._command(CommandType.REFRESH, pace=RELAXED)
                host = await self.host.status()
                self._target = host.chosen_version if host is not None else None
            except HostAccessError:
                raise
            except (HostError, StepError) as err:
                retry = min(self.options.update_check_interval, FAILED_CHECK_RETRY)
                self._next_refresh = time.monotonic() + retry
                self.log.warning("update check failed", error=str(err), retry_in=retry)
        return self._target or running

    async def _command(self, command: CommandType, *, pace: PollPace = EAGER) -> UpdateStatus:
        try:
            done = await self.host.run(command, pace=pace)
        except HostUnreachableError:
            raise
        except HostError as err:
            raise StepError(f"{command.value}: {err}") from None
        if done.cmd_status is not CommandStatus.SUCCESS:
            raise StepError(
                f"{command.value} failed on the host (exit status {done.exit_status}): {done.stderr or ''}"
            )
        status = await self.host.status()
        if status is None:
            raise StepError(f"{command.value}: the host lost its update status")
        return status

    async def _step(self, spec: ShadowSpec, status: ShadowStatus, running: str) -> None:
        if spec.state is S.STAGED_AND_PERFORMED_UPDATE:
            await self._stage(_wanted(spec))
        elif spec.state is S.REBOOTED_INTO_UPDATE:
            await self._reboot_into(_wanted(spec), running)
        elif spec.state is S.MONITORING_UPDATE:
            if running != spec.version:
                raise StepError(f"the host runs {running}, not {spec.version}")
            await self._release_node()
        elif spec.state is S.IDLE:
            await self._release_node()
            host = await self.host.status()
            if host is not None and host.update_state is UpdateState.READY:
                await self._command(CommandType.DEACTIVATE)
        else:
            raise StepError(f"the controller asked for {spec.state.value}, which is only ever a status")

    async def _stage(self, version: str) -> None:
        host = await self.host.status()
        if host is not None and host.update_state is UpdateState.READY and host.staged_version == version:
            return
        if host is None or host.chosen_version != version or host.update_state is UpdateState.IDLE:
            host = await self._command(CommandType.REFRESH)
        if host.update_state is UpdateState.READY:  # another version activated: take it back first
            host = await self._command(CommandType.DEACTIVATE)
        if not (host.update_state is UpdateState.STAGED and host.staged_version == version):
            if host.chosen_version != version:
                raise StepError(f"the host offers {host.chosen_version or 'no update'}, not {version}")
            host = await self._command(CommandType.PREPARE)
        await self._command(CommandType.ACTIVATE)

    async def _reboot_into(self, version: str, running: str) -> None:
        if running == version:  # a new agent finds the host booted (and reports it once it is released)
            self._tell(story.rebooted(version))
            await self._release_node()
            return
        host = await self.host.status()
        if host is not None and host.update_state is UpdateState.STAGED and host.staged_version == version:
            host = await self._command(CommandType.ACTIVATE)
        if host is None or host.update_state is not UpdateState.READY or host.staged_version != version:
            found = (
                "no update status"
                if host is None
                else f"{host.update_state.value} with {host.staged_version}"
            )
            raise StepError(
                f"the host runs {running} and has {found}, not {version} ready to boot: "
                "the update was rolled back or lost"
            )
        if self.options.exclude_from_lb_wait > 0:
            await self.api.exclude_from_lb()
            await asyncio.sleep(self.options.exclude_from_lb_wait)
        try:
            await self.api.cordon_and_drain()
        except ApiserverError as err:
            raise StepError(f"cordon and drain failed: {err}") from None
        self.log.info("rebooting into the update", version=version)
        self._tell(story.rebooting(version))
        boot = self.host.boot_id()
        try:
            await self.host.reboot()
        except HostUnreachableError:
            raise
        except HostError as err:
            # Refused: an inhibitor (a failed step), or a host already going down (this agent was restarted
            # during the shutdown it had asked for, and systemd will not start another). Only a host that
            # does not boot within the grace is a failed step; ErrorReset would uncordon and deactivate the
            # update on a host about to boot it.
            grace = min(self.options.refused_reboot_grace, self.options.reboot_timeout)
            booted = await self.host.wait_for_boot(since=boot, pending=version, within=grace)
            if booted is None:
                raise StepError(f"reboot: {err}") from None
        else:
            timeout = self.options.reboot_timeout
            booted = await self.host.wait_for_boot(since=boot, pending=version, within=timeout)
            if booted is None:
                raise StepError(f"the host accepted the reboot but did not boot again within {timeout:g}s")
        if booted != version:
            raise StepError(f"the host came back on {booted} after rebooting into {version}: rolled back")
        self._tell(story.rebooted(version))
        await self._release_node()

    async def _release_node(self) -> None:
        if self.options.exclude_from_lb_wait > 0:
            await self.api.remove_exclusion_from_lb()
        await self.api.uncordon()


def _identity(shadow: BottlerocketShadow) -> tuple[object, object]:
    return shadow.metadata.get("uid"), shadow.metadata.get("resourceVersion")


def _reached(spec: ShadowSpec, before: ShadowState, running: str) -> story.Told | None:
    """What people are told when the node reached `spec.state` from `before`."""
    if spec.state is S.STAGED_AND_PERFORMED_UPDATE and spec.version is not None:
        return story.staged(spec.version)
    if spec.state is S.IDLE and before is S.MONITORING_UPDATE:
        return story.succeeded(running)
    return None


def _wanted(spec: ShadowSpec) -> str:
    if spec.version is None:
        raise StepError(f"the controller asked for {spec.state.value} without a version")
    return spec.version
