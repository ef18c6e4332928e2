"""The cluster's objects reduced to the facts `status` needs, read defensively: an object that does not
read becomes a fact carrying its problem, so one bad object affects only its own line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from brupop.models.constants import (
    HISTORY_ANNOTATION,
    RETRY_ANNOTATION,
    SHADOW_NAME_PREFIX,
    UPDATER_INTERFACE_LABEL,
    UPDATER_INTERFACE_VERSION,
    WAITING_ANNOTATION,
)
from brupop.models.progress import Cycle, History, Waiting
from brupop.models.shadow import BottlerocketShadow
from brupop.models.wire import WireError
from brupop.policy.drain import CORDON_ANNOTATION
from brupop.policy.rollout import node_name_of

Obj = Mapping[str, Any]
CONTROLLER_DEPLOYMENT: Final = "brupop-controller-deployment"
CONTROLLER_CONTAINER: Final = "brupop"
SETTINGS: Final = (
    "MAX_CONCURRENT_UPDATE",
    "SCHEDULER_CRON_EXPRESSION",
    "SCHEDULER_TIMEZONE",
    "UPDATE_WINDOW_START",
    "UPDATE_WINDOW_STOP",
)
"""The controller variables that decide who may start (brupop.controller.settings)."""


def _strings(value: object) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, Mapping) else {}


def _metadata(obj: Obj) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


@dataclass(frozen=True, slots=True)
class NodeFacts:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    unschedulable: bool = False

    @property
    def opted_in(self) -> bool:
        return self.labels.get(UPDATER_INTERFACE_LABEL) == UPDATER_INTERFACE_VERSION

    @property
    def cordoned_by(self) -> str | None:
        """None when schedulable; else who cordoned it (brupop, admin, or unknown)."""
        if not self.unschedulable:
            return None
        return self.annotations.get(CORDON_ANNOTATION, "unknown")


def node_facts(obj: Obj) -> NodeFacts:
    meta = _metadata(obj)
    spec = obj.get("spec")
    return NodeFacts(
        name=str(meta.get("name", "")),
        labels=_strings(meta.get("labels")),
        annotations=_strings(meta.get("annotations")),
        unschedulable=isinstance(spec, Mapping) and spec.get("unschedulable") is True,
    )


@dataclass(frozen=True, slots=True)
class ShadowFacts:
    name: str
    node: str
    shadow: BottlerocketShadow | None
    """None when it does not read (`problem` says why)."""
    problem: str | None = None
    waiting: Waiting | None = None
    """The controller's own verdict (issue 18's annotation), when it wrote one."""
    history: tuple[Cycle, ...] = ()
    retry: str | None = None
    """The failure time whose back-off someone waived (`kubectl brupop retry`)."""
    notes: tuple[str, ...] = ()
    """Annotations that did not read."""

    @property
    def last_cycle(self) -> Cycle | None:
        return self.history[-1] if self.history else None


def shadow_facts(obj: Obj) -> ShadowFacts:
    meta = _metadata(obj)
    name = str(meta.get("name", ""))
    annotations = _strings(meta.get("annotations"))
    notes = []
    waiting = None
    if WAITING_ANNOTATION in annotations:
        try:
            waiting = Waiting.from_json(annotations[WAITING_ANNOTATION])
        except WireError as err:
            notes.append(f"{name}: annotation {WAITING_ANNOTATION} does not read ({err}); ignored")
    history: tuple[Cycle, ...] = ()
    if HISTORY_ANNOTATION in annotations:
        try:
            history = tuple(History.from_json(annotations[HISTORY_ANNOTATION]).cycles)
        except WireError as err:
            notes.append(f"{name}: annotation {HISTORY_ANNOTATION} does not read ({err}); ignored")
    try:
        shadow: BottlerocketShadow | None = BottlerocketShadow.from_wire(obj)
        problem = None
    except WireError as err:
        shadow, problem = None, str(err)
    owners = meta.get("ownerReferences")
    if shadow is not None:
        node = node_name_of(shadow)
    elif isinstance(owners, Sequence) and owners and isinstance(owners[0], Mapping) and owners[0].get("name"):
        node = str(owners[0]["name"])
    else:
        node = name.removeprefix(SHADOW_NAME_PREFIX)
    return ShadowFacts(
        name=name,
        node=node,
        shadow=shadow,
        problem=problem,
        waiting=waiting,
        history=history,
        retry=annotations.get(RETRY_ANNOTATION),
        notes=tuple(notes),
    )


@dataclass(frozen=True, slots=True)
class ControllerFacts:
    """The controller's settings as its Deployment sets them."""

    env: Mapping[str, str] | None
    """None: not known (then the chart's defaults are assumed); `note` says why."""
    note: str | None = None


def controller_facts(deployment: Obj | None, *, namespace: str) -> ControllerFacts:
    if deployment is None:
        return ControllerFacts(
            None,
            f"no Deployment {CONTROLLER_DEPLOYMENT} in namespace {namespace} (is brupop installed there? "
            "-n names its namespace); assuming the chart's default settings",
        )
    spec = deployment.get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or {}
    containers = [c for c in pod.get("containers") or () if isinstance(c, Mapping)]
    chosen = next((c for c in containers if c.get("name") == CONTROLLER_CONTAINER), None)
    if chosen is None:
        return ControllerFacts(
            None,
            f"Deployment {CONTROLLER_DEPLOYMENT} has no container {CONTROLLER_CONTAINER}; assuming the "
            "chart's default settings",
        )
    env: dict[str, str] = {}
    indirect = []
    for entry in chosen.get("env") or ():
        if not isinstance(entry, Mapping) or entry.get("name") not in SETTINGS:
            continue
        if "value" in entry:
            env[str(entry["name"])] = str(entry["value"])
        else:
            indirect.append(str(entry["name"]))
    note = None
    if indirect or chosen.get("envFrom"):
        unknown = ", ".join(indirect) if indirect else "envFrom"
        note = f"the controller's {unknown} come from a ConfigMap or Secret, which status does not read"
    return ControllerFacts(env, note)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything `status` reads, at one moment."""

    namespace: str
    nodes: Mapping[str, NodeFacts]
    """Every opted-in Node, and every other Node a shadow names."""
    shadows: tuple[ShadowFacts, ...]
    policies: tuple[Obj, ...]
    controller: ControllerFacts
    policies_served: bool = True
    """False when the UpdatePolicy CRD is not installed (an install from before policies)."""


def tracked(nodes: Mapping[str, NodeFacts], shadows: Sequence[ShadowFacts]) -> list[NodeFacts]:
    """The nodes brupop looks after: opted in, or still carrying a shadow."""
    named = {s.node for s in shadows}
    return [n for n in nodes.values() if n.opted_in or n.name in named]
