"""Facts about the cluster's health that the health gates judge (`brupop.policy.gates`): what a Prometheus
query returned or why it could not be answered, and what the controller's informers know of Nodes, Pods
and workloads. Plain data, no decisions and no I/O: `brupop.observe` produces the Prometheus facts,
the controller builds the Kubernetes ones from the objects its informers cache (`node_health`,
`pod_fact`, `workload_fact`), and the gates decide.

A query that could not be answered is a fact too, never an exception: Prometheus unreachable, too slow,
an HTTP error, a PromQL error with Prometheus's own message, an answer that is not what the HTTP API
documents, or a query never sent (its token or CA file unreadable). Each says in words what happened
(`describe`), for the reasons people read.

Reading Kubernetes objects is forgiving per object: one that lacks what a fact needs gives None, so one
odd object is left out of the facts instead of stopping every gate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, ClassVar, Final

from brupop.models.policy import duration_text
from brupop.models.timestamp import Timestamp
from brupop.models.wire import MaxSize, Range, Wire

# --- Prometheus ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One series of an instant vector at the evaluation time."""

    labels: Mapping[str, str]
    value: float | None
    """None for a native histogram sample, which has no single value."""


@dataclass(frozen=True, slots=True)
class Vector:
    samples: tuple[Sample, ...]


@dataclass(frozen=True, slots=True)
class Series:
    """One series of a range vector: its points as (unix time, value)."""

    labels: Mapping[str, str]
    points: tuple[tuple[float, float | None], ...]


@dataclass(frozen=True, slots=True)
class Matrix:
    series: tuple[Series, ...]


@dataclass(frozen=True, slots=True)
class Scalar:
    value: float


@dataclass(frozen=True, slots=True)
class String:
    value: str


Result = Vector | Matrix | Scalar | String


@dataclass(frozen=True, slots=True)
class Answer:
    """Prometheus answered `query`, asked at `at` (the asker's clock)."""

    query: str
    at: datetime
    result: Result
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Explained:
    """A failure told in words: what happened (`WORDS`), and why."""

    WORDS: ClassVar[str] = ""
    url: str
    reason: str

    def describe(self) -> str:
        return f"{self.WORDS}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Unreachable(_Explained):
    """No answer: the connection failed (refused, no such host, TLS refused, reset)."""

    WORDS: ClassVar[str] = "Prometheus unreachable"


@dataclass(frozen=True, slots=True)
class TimedOut:
    """No answer within the timeout."""

    url: str
    after: timedelta

    def describe(self) -> str:
        return f"Prometheus did not answer within {duration_text(self.after)}"


@dataclass(frozen=True, slots=True)
class HttpError:
    """An HTTP error status without a Prometheus error body (e.g. a proxy's 502, a 401 or 403)."""

    url: str
    status: int
    body: str = ""
    """The start of the body, for the reason shown."""

    def describe(self) -> str:
        return f"Prometheus answered HTTP {self.status}" + (f": {self.body}" if self.body else "")


@dataclass(frozen=True, slots=True)
class QueryError:
    """Prometheus refused or failed the query (`status: error`), e.g. a PromQL parse error."""

    url: str
    error_type: str
    """Prometheus's errorType: bad_data, execution, timeout, canceled, internal, unavailable, ..."""
    message: str

    def describe(self) -> str:
        return f"Prometheus query error ({self.error_type}): {self.message}"


@dataclass(frozen=True, slots=True)
class BadAnswer(_Explained):
    """An answer that is not what the Prometheus HTTP API documents (not JSON, fields missing, ...)."""

    WORDS: ClassVar[str] = "Prometheus gave an answer brupop cannot read"


@dataclass(frozen=True, slots=True)
class NotSent(_Explained):
    """The query was not sent: what the asker needs for it is missing (its bearer token or CA file)."""

    WORDS: ClassVar[str] = "Prometheus not queried"


QueryFailure = Unreachable | TimedOut | HttpError | QueryError | BadAnswer | NotSent
Outcome = Answer | QueryFailure


# --- Kubernetes ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeHealth:
    """What the cluster gate and verification need of a Node."""

    name: str
    ready: bool
    """The Ready condition is True (False, Unknown or missing: not ready)."""
    unschedulable: bool
    annotations: Mapping[str, str] = field(default_factory=dict)
    """Who cordoned it is recorded here (brupop.policy.drain.CORDON_ANNOTATION)."""


@dataclass(frozen=True, slots=True, order=True, kw_only=True)
class WorkloadRef(Wire):
    """A workload by identity: kind (Deployment, StatefulSet, DaemonSet, ReplicaSet), namespace, name."""

    kind: Annotated[str, MaxSize(63)]
    namespace: Annotated[str, MaxSize(63)]
    name: Annotated[str, MaxSize(253)]

    def __str__(self) -> str:
        return f"{self.kind.lower()} {self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class OwnerRef:
    """An object's controlling owner (its ownerReference with controller: true), in its namespace."""

    kind: str
    name: str


@dataclass(frozen=True, slots=True)
class PodFact:
    namespace: str
    name: str
    node: str | None
    """spec.nodeName (None while unscheduled)."""
    labels: Mapping[str, str]
    phase: str
    owner: OwnerRef | None

    @property
    def finished(self) -> bool:
        """Succeeded or Failed: it runs no more (a finished Job's pod)."""
        return self.phase in ("Succeeded", "Failed")


@dataclass(frozen=True, slots=True, kw_only=True)
class Readiness(Wire):
    ready: Annotated[int, Range(0, 2**31 - 1, "int32")]
    desired: Annotated[int, Range(0, 2**31 - 1, "int32")]

    def __str__(self) -> str:
        return f"{self.ready}/{self.desired} ready"


@dataclass(frozen=True, slots=True)
class WorkloadFact:
    ref: WorkloadRef
    readiness: Readiness
    owner: OwnerRef | None
    """A ReplicaSet's Deployment, for example."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotEntry(Wire):
    workload: WorkloadRef
    readiness: Readiness


SNAPSHOT_LIMIT: Final = 256
"""Workloads a snapshot keeps at most (a node runs at most 250 pods even at the largest max-pods): so the
annotation that stores it stays far below what an object's annotations may hold (256 KiB), at about 400
bytes per entry at worst."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkloadSnapshot(Wire):
    """The readiness of the workloads that had pods on a node, taken before it was cordoned, in a form that
    can be stored (JSON) so a controller restart between cordon and verification loses nothing. It keeps
    the first `SNAPSHOT_LIMIT` workloads by identity and counts the others (`left_out`: not checked)."""

    taken_at: Timestamp = field(metadata={"key": "takenAt"})
    entries: Annotated[list[SnapshotEntry], MaxSize(SNAPSHOT_LIMIT)] = field(default_factory=list)
    left_out: Annotated[int, Range(0, 2**31 - 1, "int32")] = field(default=0, metadata={"key": "leftOut"})

    @classmethod
    def of(cls, readiness: Mapping[WorkloadRef, Readiness], *, taken_at: datetime) -> WorkloadSnapshot:
        kept = sorted(readiness)[:SNAPSHOT_LIMIT]
        return cls(
            taken_at=Timestamp.from_datetime(taken_at),
            entries=[SnapshotEntry(workload=ref, readiness=readiness[ref]) for ref in kept],
            left_out=len(readiness) - len(kept),
        )

    def readiness(self) -> dict[WorkloadRef, Readiness]:
        return {entry.workload: entry.readiness for entry in self.entries}


WORKLOAD_KINDS: Final = ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet")
"""The workloads whose readiness verification follows (their apps/v1 status fields are known)."""


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _strings(value: object) -> dict[str, str]:
    return {str(k): str(v) for k, v in _mapping(value).items()}


def _count(value: object) -> int:
    """A replica count as Kubernetes writes it; absent (Kubernetes omits zeros) or odd values are 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _name(metadata: Mapping[str, Any], key: str) -> str | None:
    value = metadata.get(key)
    return value if isinstance(value, str) and value else None


def controller_of(metadata: Mapping[str, Any]) -> OwnerRef | None:
    """The ownerReference marked `controller: true`, if any."""
    references = metadata.get("ownerReferences")
    for ref in references if isinstance(references, list) else ():
        ref = _mapping(ref)
        kind, name = ref.get("kind"), ref.get("name")
        if ref.get("controller") is True and isinstance(kind, str) and isinstance(name, str):
            return OwnerRef(kind=kind, name=name)
    return None


def node_health(obj: Mapping[str, Any]) -> NodeHealth | None:
    metadata = _mapping(obj.get("metadata"))
    name = _name(metadata, "name")
    if name is None:
        return None
    conditions = _mapping(obj.get("status")).get("conditions")
    ready = any(
        _mapping(c).get("type") == "Ready" and _mapping(c).get("status") == "True"
        for c in (conditions if isinstance(conditions, list) else ())
    )
    return NodeHealth(
        name=name,
        ready=ready,
        unschedulable=_mapping(obj.get("spec")).get("unschedulable") is True,
        annotations=_strings(metadata.get("annotations")),
    )


def pod_fact(obj: Mapping[str, Any]) -> PodFact | None:
    metadata = _mapping(obj.get("metadata"))
    namespace, name = _name(metadata, "namespace"), _name(metadata, "name")
    if namespace is None or name is None:
        return None
    node = _mapping(obj.get("spec")).get("nodeName")
    phase = _mapping(obj.get("status")).get("phase")
    return PodFact(
        namespace=namespace,
        name=name,
        node=node if isinstance(node, str) and node else None,
        labels=_strings(metadata.get("labels")),
        phase=phase if isinstance(phase, str) else "Unknown",
        owner=controller_of(metadata),
    )


def workload_fact(obj: Mapping[str, Any]) -> WorkloadFact | None:
    """A Deployment, ReplicaSet, StatefulSet or DaemonSet's readiness: desired is what its spec asks for
    (a DaemonSet: the nodes it should run on), ready its ready pods."""
    kind = obj.get("kind")
    metadata = _mapping(obj.get("metadata"))
    namespace, name = _name(metadata, "namespace"), _name(metadata, "name")
    if kind not in WORKLOAD_KINDS or namespace is None or name is None:
        return None
    status = _mapping(obj.get("status"))
    if kind == "DaemonSet":
        readiness = Readiness(
            ready=_count(status.get("numberReady")), desired=_count(status.get("desiredNumberScheduled"))
        )
    else:
        # spec.replicas defaults to 1 when left out.
        replicas = _mapping(obj.get("spec")).get("replicas", 1)
        readiness = Readiness(ready=_count(status.get("readyReplicas")), desired=_count(replicas))
    return WorkloadFact(
        ref=WorkloadRef(kind=str(kind), namespace=namespace, name=name),
        readiness=readiness,
        owner=controller_of(metadata),
    )
