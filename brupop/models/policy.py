"""The UpdatePolicy resource (`brupop.bottlerocket.aws/v1alpha1`, cluster-scoped): which opted-in nodes
form a pool, how many of them may update at once, when, what stops the pool, and what marks a node carries
while it updates. The controller writes `status`; people write `spec`.

The spec is Kubernetes-style (camelCase, absent means "not set", nulls pruned), unlike the shadow's
snake_case Rust wire names. Each field's type and constraints are what the API server checks: patterns,
sizes and enums in the OpenAPI schema, and CEL rules (`Rule`) where a check spans fields or needs parsing,
each with the Python twin the reader runs, so a policy the API server refuses the reader refuses with the
same message. What CEL cannot check (an unknown time zone, a cron expression that never fires) is the
controller's pure check (`brupop.policy.pools`), reported in status, with the pool treated as paused.

Sizes are bounded everywhere a CEL rule reads a value: the API server estimates each rule's worst cost from
them and refuses a CRD whose rules could cost too much.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final, Literal

from brupop.models.constants import API_VERSION_POLICY, BRUPOP_PREFIX, POLICY_KIND, UPDATER_INTERFACE_LABEL
from brupop.models.timestamp import Timestamp
from brupop.models.wire import (
    Extra,
    Keys,
    MaxSize,
    Pattern,
    Range,
    Rule,
    Wire,
    annotations_of,
    cel_quote,
    described,
)

# Kubernetes' qualified name (label and annotation keys, taint keys): an optional DNS subdomain prefix and
# `/`, then a name of at most 63 characters. `[.]` rather than an escaped dot, so the same text is a
# Python regex, an RE2 regex and a CEL string without escaping.
_DNS_LABEL: Final = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_NAME: Final = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
QUALIFIED_NAME: Final = rf"({_DNS_LABEL}([.]{_DNS_LABEL})*/)?{_NAME}"
LABEL_VALUE: Final = r"(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?"
MAX_KEY: Final = 317  # a 253-character prefix, `/`, a 63-character name
TIME_ZONE: Final = r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*"

# Patterns are anchored: the schema's `pattern`, like RE2's match, finds a match anywhere in the value.
LabelKey = Annotated[str, MaxSize(MAX_KEY), Pattern(f"^{QUALIFIED_NAME}$")]
LabelValue = Annotated[str, MaxSize(63), Pattern(f"^{LABEL_VALUE}$")]
_KEY_WORDS: Final = "a qualified name such as example.com/pool or pool"


PERCENT: Final = r"(100|[1-9]?[0-9])%"
"""0% to 100%, written the one way (no leading zeros)."""
POSITIVE_PERCENT: Final = r"(100|[1-9][0-9]?)%"
MAX_COUNT: Final = 100_000


def _count_or_percent(value: int | str, *, low: int, percent: str) -> bool:
    if isinstance(value, int):
        return low <= value <= MAX_COUNT
    return re.fullmatch(percent, value) is not None


def _count_or_percent_cel(*, low: int, percent: str, words: str = "") -> str:
    """A CEL rule for an int-or-string: a count from `low`, or a percentage matching `percent` (or `words`,
    a CEL condition a string may meet instead)."""
    text = f"self.matches({cel_quote('^' + percent + '$')})"
    return f"type(self) == int ? self >= {low} && self <= {MAX_COUNT} : " + (
        f"{words} || {text}" if words else text
    )


MAX_CONCURRENT_RULE: Final = Rule(
    cel=_count_or_percent_cel(low=0, percent=PERCENT, words="self == 'unlimited'"),
    message='must be a count (0 or more, e.g. 3), a percentage of the pool (0% to 100%, e.g. "10%") '
    'or "unlimited"',
    check=lambda value: value == "unlimited" or _count_or_percent(value, low=0, percent=PERCENT),
)
MAX_FAILURES_RULE: Final = Rule(
    cel=_count_or_percent_cel(low=1, percent=POSITIVE_PERCENT),
    message='must be a count (1 or more, e.g. 2) or a percentage of the pool (1% to 100%, e.g. "10%")',
    check=lambda value: _count_or_percent(value, low=1, percent=POSITIVE_PERCENT),
)
COUNT_OR_PERCENT_RULE: Final = Rule(
    cel=_count_or_percent_cel(low=0, percent=PERCENT),
    message='must be a count (0 or more, e.g. 1) or a percentage (0% to 100%, e.g. "10%")',
    check=lambda value: _count_or_percent(value, low=0, percent=PERCENT),
)

# Durations: whole hours, minutes and seconds, in that order (`90s`, `30m`, `1h30m`), more than zero. A
# subset of Go's durations, which Kubernetes users know from other APIs.
DURATION: Final = r"([0-9]{1,5}h)?([0-9]{1,5}m)?([0-9]{1,5}s)?"
DURATION_RULE: Final = Rule(
    cel=f"self.matches({cel_quote('^' + DURATION + '$')}) && self.matches('[1-9]')",
    message="must be a positive duration in hours, minutes and seconds, e.g. 90s, 30m or 1h30m",
    check=lambda value: re.fullmatch(DURATION, value) is not None and re.search("[1-9]", value) is not None,
)


def bounded_duration_rule(at_most: str) -> Rule:
    """DURATION_RULE with an upper bound (CEL's `duration()` reads the same notation, a subset of Go's)."""
    return Rule(
        cel=f"{DURATION_RULE.cel} && duration(self) <= duration('{at_most}')",
        message=f"must be a positive duration of at most {at_most} in hours, minutes and seconds, "
        "e.g. 10s or 1m",
        check=lambda value: DURATION_RULE.check(value) and duration(value) <= duration(at_most),
    )


def duration(text: str) -> timedelta:
    """A duration the schema accepted (`1h30m`) as a timedelta."""
    match = re.fullmatch(DURATION, text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as 90s, 30m or 1h30m")
    hours, minutes, seconds = (int(part[:-1]) if part else 0 for part in match.groups())
    return timedelta(hours=hours, minutes=minutes, seconds=seconds)


def duration_text(span: timedelta) -> str:
    """A timedelta in the same notation (`1h30m`, `45s`; whole seconds)."""
    seconds = int(span.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = "".join(
        f"{value}{unit}" for value, unit in ((hours, "h"), (minutes, "m"), (seconds, "s")) if value
    )
    return text or "0s"


# A local date (`2025-12-24`) or date and time (`2025-12-24T18:00`, `2025-12-24T18:00:00`), in the policy's
# time zone. CEL has no local-time type: it completes the text to a full date-time and parses it as UTC,
# which refuses what is not a real date (February 30th) as Python's parser does.
# Years 0002 to 9998 only: a blackout's end date plus its day, or any local time in a zone up to a day off
# UTC, then stays within the years 0001-9999 of Python and CEL ("until further notice": 9998-12-31).
LOCAL_YEAR: Final = (
    r"(000[2-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])"
)
LOCAL_TIME: Final = LOCAL_YEAR + r"-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2})?)?"


def _cel_complete(value: str, *, day_end: str) -> str:
    """A CEL expression completing the local time `value` to `YYYY-MM-DDTHH:MM:SS`; a bare date gets the
    time `day_end` (00:00:00 for a start; 24:00:00 for an end, which sorts after every time of that day)."""
    return f"(size({value}) == 10 ? {value} + 'T{day_end}' : size({value}) == 16 ? {value} + ':00' : {value})"


def local_time(text: str, *, end: bool = False) -> datetime:
    """A naive local datetime; a bare date is the start of that day, or, as an `end`, the start of the next
    (a blackout ending on a date lasts through that day)."""
    if re.fullmatch(LOCAL_TIME, text) is None:
        raise ValueError(
            f"{text!r} is not a date (2025-12-24) or a date and time (2025-12-24T18:00) "
            "in the years 0002 to 9998"
        )
    moment = datetime.fromisoformat(text)
    return moment + timedelta(days=1) if end and len(text) == 10 else moment


def _is_local_time(text: str) -> bool:
    try:
        local_time(text)
    except ValueError:
        return False
    return True


LOCAL_TIME_RULE: Final = Rule(
    cel=(
        f"self.matches({cel_quote('^' + LOCAL_TIME + '$')}) && "
        f"timestamp({_cel_complete('self', day_end='00:00:00')} + 'Z') >= timestamp('0001-01-01T00:00:00Z')"
    ),
    message="must be a real date (2025-12-24) or local date and time "
    "(2025-12-24T18:00 or 2025-12-24T18:00:00), in the years 0002 to 9998",
    check=_is_local_time,
)


def _brupop_free(keys: dict[str, Any]) -> bool:
    return not any(key.startswith(BRUPOP_PREFIX) or key == UPDATER_INTERFACE_LABEL for key in keys)


NOT_BRUPOPS: Final = Rule(
    cel=f"self.all(k, !k.startsWith('{BRUPOP_PREFIX}') && k != '{UPDATER_INTERFACE_LABEL}')",
    message=f"keys under {BRUPOP_PREFIX} and the opt-in label {UPDATER_INTERFACE_LABEL} are brupop's own",
    check=_brupop_free,
)


class SelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelSelectorRequirement(Wire):
    """One requirement on a label, as in a Kubernetes LabelSelector."""

    NULLABLE: ClassVar[bool] = False
    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)",
            message="In and NotIn need at least one value; Exists and DoesNotExist take none",
            check=lambda r: (r.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN)) == bool(r.values),
            field="values",
        ),
    )

    key: LabelKey = described("The label key.")
    operator: SelectorOperator = described("In, NotIn, Exists or DoesNotExist.")
    values: Annotated[list[LabelValue], MaxSize(64)] = described(
        "The values for In and NotIn; empty for Exists and DoesNotExist.", default_factory=list
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelSelector(Wire):
    """A Kubernetes label selector: every matchLabels entry and every matchExpressions requirement must
    hold (an empty selector selects everything)."""

    NULLABLE: ClassVar[bool] = False

    match_labels: Annotated[dict[str, LabelValue], MaxSize(32), Keys(QUALIFIED_NAME, _KEY_WORDS)] = described(
        "Labels that must be there with exactly these values.", key="matchLabels", default_factory=dict
    )
    match_expressions: Annotated[list[LabelSelectorRequirement], MaxSize(32)] = described(
        "Requirements on the labels.", key="matchExpressions", default_factory=list
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Blackout(Wire):
    """A period in which nothing new starts (e.g. a change freeze), in the schedule's time zone: from
    `start` (a date means 00:00 that day) until `end` (a date means through that whole day; a date and
    time is the first moment after the blackout)."""

    NULLABLE: ClassVar[bool] = False
    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel=(
                f"{_cel_complete('self.end', day_end='24:00:00')} > "
                f"{_cel_complete('self.start', day_end='00:00:00')}"
            ),
            message="end must be after start",
            check=lambda b: (
                not (_is_local_time(b.start) and _is_local_time(b.end))
                or local_time(b.end, end=True) > local_time(b.start)
            ),
            field="end",
        ),
    )

    start: Annotated[str, MaxSize(19), LOCAL_TIME_RULE] = described(
        "First day (2025-12-20) or moment (2025-12-20T18:00) of the blackout, local time."
    )
    end: Annotated[str, MaxSize(19), LOCAL_TIME_RULE] = described(
        "Last day (2026-01-04, included) or the moment the blackout ends (2026-01-05T06:00), local time."
    )
    reason: Annotated[str, MaxSize(256)] | None = described("Why (shown to operators).", default=None)


# The shorthands brupop's cron syntax accepts (brupop.policy.cron.SHORTHANDS; a unit test keeps them equal).
CRON_SHORTHANDS: Final = ("@yearly", "@monthly", "@weekly", "@daily", "@hourly")
CRON_SHAPE: Final = r" *(" + "|".join(CRON_SHORTHANDS) + r"|[^ ]+( +[^ ]+){5,6}) *"
CRON_RULE: Final = Rule(
    cel=f"self.matches({cel_quote('^' + CRON_SHAPE + '$')})",
    message="must have 6 or 7 fields separated by spaces (sec min hour day-of-month month day-of-week "
    "[year]) or be one of " + ", ".join(CRON_SHORTHANDS),
    check=lambda text: re.fullmatch(CRON_SHAPE, text) is not None,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicySchedule(Wire):
    """When updates may start. Leaving out `cron` or `timeZone` keeps the controller's setting
    (SCHEDULER_CRON_EXPRESSION, SCHEDULER_TIMEZONE)."""

    NULLABLE: ClassVar[bool] = False

    cron: Annotated[str, MaxSize(128), CRON_RULE] | None = described(
        "A window or trigger in brupop's cron syntax, e.g. '* * 2-4 * * Sat,Sun *' (weekends 02:00-04:59).",
        default=None,
    )
    time_zone: Annotated[str, MaxSize(64), Pattern(f"^{TIME_ZONE}$")] | None = described(
        "The IANA time zone of `cron` and `blackouts`, e.g. Europe/Berlin.", key="timeZone", default=None
    )
    blackouts: Annotated[list[Blackout], MaxSize(64)] = described(
        "Periods in which nothing new starts, whatever `cron` says.", default_factory=list
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class FailureBudget(Wire):
    """How many failed node updates the pool tolerates within a sliding window before it halts itself.
    Nothing new starts in a halted pool until an operator clears the halt (the resumed-at annotation)."""

    NULLABLE: ClassVar[bool] = False

    max_failures: Annotated[int | str, MAX_FAILURES_RULE] = described(
        "The failure that halts the pool: its count (2: the second failure halts) or a percentage of the "
        "pool, rounded up.",
        key="maxFailures",
    )
    window: Annotated[str, MaxSize(20), DURATION_RULE] = described(
        "How far back failures count, e.g. 1h or 24h."
    )


class TaintEffect(StrEnum):
    """NoExecute is left out on purpose: it evicts pods without respecting PodDisruptionBudgets."""

    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"


@dataclass(frozen=True, slots=True, kw_only=True)
class Taint(Wire):
    """A taint put on the node for the length of its update cycle."""

    NULLABLE: ClassVar[bool] = False

    key: LabelKey = described("The taint key.")
    value: LabelValue | None = described("The taint value.", default=None)
    effect: TaintEffect = described("NoSchedule or PreferNoSchedule.")


UNIQUE_TAINTS: Final = Rule(
    cel="self.all(t, self.exists_one(u, u.key == t.key && u.effect == t.effect))",
    message="each key and effect may appear only once",
    check=lambda taints: len({(t.key, t.effect) for t in taints}) == len(taints),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class DuringUpdate(Wire):
    """Marks a node carries for the length of its update cycle (from the start to back on Idle), e.g. the
    annotation karpenter.sh/do-not-disrupt: "true". brupop adds only what the node does not already carry,
    and removes only what it added: a label, annotation or taint an administrator set is never touched."""

    NULLABLE: ClassVar[bool] = False

    labels: Annotated[dict[str, LabelValue], MaxSize(16), Keys(QUALIFIED_NAME, _KEY_WORDS), NOT_BRUPOPS] = (
        described("Labels to add.", default_factory=dict)
    )
    annotations: Annotated[
        dict[str, Annotated[str, MaxSize(4096)]], MaxSize(16), Keys(QUALIFIED_NAME, _KEY_WORDS), NOT_BRUPOPS
    ] = described("Annotations to add.", default_factory=dict)
    taints: Annotated[list[Taint], MaxSize(8), UNIQUE_TAINTS] = described(
        "Taints to add (NoSchedule or PreferNoSchedule).", default_factory=list
    )


# Where Prometheus is: a base URL (scheme, host, optional port and path prefix; the HTTP API is under
# <url>/api/v1), files the controller reads (a mounted token, a CA bundle) as absolute paths.
PROMETHEUS_URL: Final = r"https?://[^\s/?#]+(/[^\s?#]*)?"
FILE_PATH: Final = r"(/[^/]+)+"
NOT_BLANK: Final = r"[\s\S]*\S[\s\S]*"
_NUMBER: Final = r"[-+]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][-+]?[0-9]+)?"
COMPARISON: Final = rf"(<|<=|>|>=|==|!=) ?{_NUMBER}"
EXPECT_EMPTY: Final = "Empty"
EXPECT_NON_EMPTY: Final = "NonEmpty"
EXPECT_RULE: Final = Rule(
    cel=(
        f"self == '{EXPECT_EMPTY}' || self == '{EXPECT_NON_EMPTY}' || "
        f"self.matches({cel_quote('^' + COMPARISON + '$')})"
    ),
    message=f"must be {EXPECT_EMPTY}, {EXPECT_NON_EMPTY} or a comparison every sample must pass, "
    "e.g. '< 0.05' or '== 1'",
    check=lambda text: text in (EXPECT_EMPTY, EXPECT_NON_EMPTY) or re.fullmatch(COMPARISON, text) is not None,
)
MAX_PROMETHEUS_TIMEOUT: Final = "5m"


@dataclass(frozen=True, slots=True, kw_only=True)
class PrometheusSource(Wire):
    """A Prometheus server (or anything serving its HTTP API: Thanos, Mimir, VictoriaMetrics) the
    controller queries."""

    NULLABLE: ClassVar[bool] = False

    url: Annotated[str, MaxSize(2048), Pattern(f"^{PROMETHEUS_URL}$")] = described(
        "The server's base URL, e.g. http://prometheus-operated.monitoring:9090 (the API is under /api/v1)."
    )
    bearer_token_file: Annotated[str, MaxSize(1024), Pattern(f"^{FILE_PATH}$")] | None = described(
        "A file in the controller's pod holding a bearer token, read again for every query (tokens rotate).",
        key="bearerTokenFile",
        default=None,
    )
    ca_file: Annotated[str, MaxSize(1024), Pattern(f"^{FILE_PATH}$")] | None = described(
        "A file in the controller's pod holding the CA certificates that sign the server's (PEM).",
        key="caFile",
        default=None,
    )
    timeout: Annotated[str, MaxSize(20), bounded_duration_rule(MAX_PROMETHEUS_TIMEOUT)] = described(
        f"How long one query may take (at most {MAX_PROMETHEUS_TIMEOUT}). Default: 10s.", default="10s"
    )
    fail_open: bool = described(
        "What an unavailable Prometheus (unreachable, too slow, an HTTP 5xx) means: false (the default) "
        "blocks, true lets updates go on. A query Prometheus refuses always blocks.",
        key="failOpen",
        default=False,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PrometheusGate(PrometheusSource):
    """Blocks while a PromQL query returns any series, e.g. ALERTS{alertstate="firing",severity="critical"}
    (as kured's alert filter does)."""

    query: Annotated[str, MaxSize(4096), Pattern(f"^{NOT_BLANK}$")] = described(
        "An instant query whose result is empty while the cluster is healthy."
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthQuery(PrometheusSource):
    """A PromQL query a node's update must satisfy before its slot frees."""

    query: Annotated[str, MaxSize(4096), Pattern(f"^{NOT_BLANK}$")] = described(
        'An instant query, e.g. sum(rate(http_requests_total{code=~"5.."}[5m])).'
    )
    expect: Annotated[str, MaxSize(64), EXPECT_RULE] = described(
        f"{EXPECT_EMPTY} (the default: no series), {EXPECT_NON_EMPTY} (at least one series), or a comparison "
        "(<, <=, >, >=, ==, != and a number, e.g. '< 0.05') that a non-empty result must pass in every "
        "sample.",
        default=EXPECT_EMPTY,
    )


class PodScope(StrEnum):
    CLUSTER = "Cluster"
    NODE = "Node"


@dataclass(frozen=True, slots=True, kw_only=True)
class PodGate(Wire):
    """Blocks while pods matching a label selector exist (pending or running; finished pods do not count),
    anywhere in the cluster or on the node about to update, as kured's blocking pod selector does."""

    NULLABLE: ClassVar[bool] = False
    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel=(
                "(has(self.selector.matchLabels) && size(self.selector.matchLabels) > 0) || "
                "(has(self.selector.matchExpressions) && size(self.selector.matchExpressions) > 0)"
            ),
            message="an empty selector would match every pod: name the pods that block",
            check=lambda gate: bool(gate.selector.match_labels or gate.selector.match_expressions),
            field="selector",
        ),
    )

    selector: LabelSelector = described("The pods that block, in every namespace.")
    scope: PodScope = described(
        "Cluster (the default): such a pod anywhere blocks every node; Node: only the node it runs on.",
        default=PodScope.CLUSTER,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterGate(Wire):
    """Blocks while too many of the cluster's nodes are unhealthy: NotReady, or unschedulable for a reason
    that is not brupop's. Nodes in brupop's own update cycle do not count."""

    NULLABLE: ClassVar[bool] = False

    max_unhealthy_nodes: Annotated[int | str, COUNT_OR_PERCENT_RULE] = described(
        "The most unhealthy nodes that still let updates start: a count (0: any unhealthy node blocks) or "
        'a percentage of all the cluster\'s nodes ("10%": more than 10% blocks).',
        key="maxUnhealthyNodes",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Gates(Wire):
    """Checked before a node's update starts (before it is cordoned) and again while it waits: while any
    gate blocks, no node of the pool starts; nodes already updating finish."""

    NULLABLE: ClassVar[bool] = False

    prometheus: PrometheusGate | None = described(
        "Block while a PromQL query returns anything.", default=None
    )
    pods: Annotated[list[PodGate], MaxSize(8)] = described(
        "Block while matching pods exist.", default_factory=list
    )
    cluster: ClusterGate | None = described("Block while too many nodes are unhealthy.", default=None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Verification(Wire):
    """What a node's update must show before its slot frees and the next node may start: the Node is
    Ready, the workloads that had pods on it are as ready as before it was drained (within
    `workloadTolerance`), and the health query gives what it expects; then, for `soak`, that all of it
    (and the Prometheus and cluster gates) still holds. A node that does not pass within `timeout`, or
    fails during the soak, has failed its update (ErrorReset with the reason; the failure budget counts
    it)."""

    NULLABLE: ClassVar[bool] = False

    timeout: Annotated[str, MaxSize(20), DURATION_RULE] = described(
        "How long after the node is back on the new version it has to pass. Default: 10m.", default="10m"
    )
    workloads: bool = described(
        "Whether the workloads (Deployments, StatefulSets, DaemonSets, ReplicaSets) that had pods on the "
        "node must be back to their readiness before the drain. Default: true.",
        default=True,
    )
    workload_tolerance: Annotated[int | str, COUNT_OR_PERCENT_RULE] = described(
        "How many fewer ready replicas than before each workload may have: a count, or a percentage of "
        "its desired replicas (rounded down). Default: 0.",
        key="workloadTolerance",
        default=0,
    )
    prometheus: HealthQuery | None = described("A PromQL health query.", default=None)
    soak: Annotated[str, MaxSize(20), DURATION_RULE] | None = described(
        "How long everything must keep holding once it first does, e.g. 5m.", default=None
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdatePolicySpec(Wire):
    """What the policy asks for. Fields left out take the controller's settings (the environment)."""

    NULLABLE: ClassVar[bool] = False

    node_selector: LabelSelector = described(
        "The opted-in nodes of this policy's pool; a node several policies select belongs to the one with "
        "the highest priority, then a paused one, then the first name in alphabetical order.",
        key="nodeSelector",
    )
    priority: Annotated[int, Range(-1000, 1000, "int32")] = described(
        "Decides overlaps: the higher wins.", default=0
    )
    max_concurrent: Annotated[int | str, MAX_CONCURRENT_RULE] | None = described(
        "Nodes of the pool in an update cycle at once: a count, a percentage of the pool (rounded up, as "
        'Kubernetes rounds maxUnavailable) or "unlimited". Default: MAX_CONCURRENT_UPDATE.',
        key="maxConcurrent",
        default=None,
    )
    schedule: PolicySchedule | None = described("When updates may start.", default=None)
    paused: bool = described(
        "Nothing new starts while true; nodes already in a cycle finish it.", default=False
    )
    failure_budget: FailureBudget | None = described(
        "Halt the pool after too many failed updates.", key="failureBudget", default=None
    )
    stuck_after: Annotated[str, MaxSize(20), DURATION_RULE] | None = described(
        "How long a node may stay in one state of its cycle before it is reported stuck (and counts as a "
        "failure), e.g. 45m.",
        key="stuckAfter",
        default=None,
    )
    during_update: DuringUpdate | None = described(
        "Labels, annotations and taints a node carries while it updates.", key="duringUpdate", default=None
    )
    gates: Gates | None = described(
        "Health gates checked before each node starts: none by default.", default=None
    )
    verification: Verification | None = described(
        "Checks each updated node must pass before the next starts. Default: none (a node is done when "
        "it runs the new version).",
        default=None,
    )


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class Condition(Wire):
    """A Kubernetes-style condition (metav1.Condition)."""

    type: Annotated[str, MaxSize(316)] = described("Paused, Halted, Valid, Overlapping, Stuck.")
    status: ConditionStatus = described("True, False or Unknown.")
    reason: Annotated[str, MaxSize(1024)] = described("A CamelCase word for programs.")
    message: Annotated[str, MaxSize(32768)] = described("What it means, for people.", default="")
    last_transition_time: Timestamp = described("When `status` last changed.", key="lastTransitionTime")
    observed_generation: int | None = described(
        "The policy generation the condition was computed from.", key="observedGeneration", default=None
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure(Wire):
    """One failed node update the failure budget counts."""

    node: str = described("The node.")
    at: Timestamp = described("When it failed (or was found stuck).")
    reason: str = described("What failed.", default="")
    cycle: Timestamp | None = described(
        "The start of the node's update cycle it failed in: a cycle counts once however it failed.",
        default=None,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Halt(Wire):
    """Why and since when the pool is halted."""

    since: Timestamp = described("When the failure budget was spent.")
    failed_nodes: list[str] = described("The nodes whose failures spent it.", key="failedNodes")
    message: str = described("What happened and how to resume.")


class GateKind(StrEnum):
    """A pre-disruption gate, by its key under `spec.gates`."""

    PROMETHEUS = "prometheus"
    PODS = "pods"
    CLUSTER = "cluster"


@dataclass(frozen=True, slots=True, kw_only=True)
class BlockedGate(Wire):
    """A health gate that keeps nodes of the pool from starting."""

    gate: GateKind = described("prometheus, pods or cluster.")
    message: str = described("Why, e.g. alert KubeNodeNotReady firing.")
    since: Timestamp = described("Since when the gate has blocked without a break.")
    nodes: list[str] = described(
        "The nodes it blocks, for a gate scoped to the node; empty: every node of the pool.",
        default_factory=list,
    )


class PolicyState(StrEnum):
    ACTIVE = "Active"
    PAUSED = "Paused"
    HALTED = "Halted"
    INVALID = "Invalid"


class WindowState(StrEnum):
    OPEN = "Open"
    CLOSED = "Closed"
    BLACKOUT = "Blackout"


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdatePolicyStatus(Wire):
    """What the controller last found for the policy's pool."""

    observed_generation: int | None = described(
        "The generation of the spec this status describes.", key="observedGeneration", default=None
    )
    state: PolicyState | None = described("Active, Paused, Halted or Invalid.", default=None)
    selected: int = described("Nodes in the pool.", default=0)
    up_to_date: int = described("Nodes with no update on offer.", key="upToDate", default=0)
    updating: int = described("Nodes in an update cycle.", default=0)
    failed: int = described("Nodes whose last update failed.", default=0)
    held: int = described("Nodes held by the hold annotation.", default=0)
    limit: str | None = described("The pool's concurrency limit now (a count or unlimited).", default=None)
    window: WindowState | None = described("Open, Closed or Blackout.", default=None)
    next_opening: Timestamp | None = described(
        "When the window next opens (when it is not open).", key="nextOpening", default=None
    )
    halted: Halt | None = described("Set while the failure budget is spent.", default=None)
    failures: list[Failure] = described(
        "The failures the budget counts now (newest last).", default_factory=list
    )
    overlapped: int = described(
        "Nodes this policy selects that belong to another policy (higher priority; at equal priority a "
        "paused one, then the earlier name).",
        default=0,
    )
    blocked_by: list[BlockedGate] = described(
        "The health gates that block new starts now.", key="blockedBy", default_factory=list
    )
    verifying: int = described("Updated nodes being verified or soaking.", default=0)
    conditions: list[Condition] = described("Kubernetes-style conditions.", default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdatePolicy(Wire):
    """A whole UpdatePolicy object. `metadata` is kept as the cluster sent it."""

    EXTRA: ClassVar[Extra] = "ignore"

    api_version: Literal["brupop.bottlerocket.aws/v1alpha1"] = field(
        default=API_VERSION_POLICY, metadata={"key": "apiVersion"}
    )
    kind: Literal["UpdatePolicy"] = POLICY_KIND
    metadata: dict[str, Any] = field(default_factory=dict)
    spec: UpdatePolicySpec
    status: UpdatePolicyStatus | None = None

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def generation(self) -> int | None:
        value = self.metadata.get("generation")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def annotations(self) -> dict[str, str]:
        return annotations_of(self.metadata)
