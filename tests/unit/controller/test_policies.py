"""The controller's memory of policies: each resolved once per generation and resume time (so a cron
expression stays the window or trigger it was first taken for), budgets from status until a pass kept
them, keyed by the object's UID."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from brupop.controller.policies import PolicyBook
from brupop.models import constants as c
from brupop.models.policy import UpdatePolicyStatus
from brupop.models.shadow import ShadowState
from brupop.models.timestamp import Timestamp
from brupop.policy.budget import BudgetState
from brupop.policy.pools import Defaults
from brupop.policy.schedule import ScheduleKind
from tests.factories import shadow
from tests.pools import window
from tests.unit.policy.test_rollout_pools import DEFAULTS, node, offering, run
from tests.unit.policy.test_rollout_pools import NOW as POLICY_NOW
from tests.unit.policy.test_rollout_pools import policy as rollout_policy

NOW = datetime(2025, 6, 1, 10, tzinfo=UTC)
BOOK_DEFAULTS = Defaults(max_concurrent=1, schedule=window("* * * * * * *", now=NOW))


def policy(generation: int = 1, uid: str = "u1", **metadata: object) -> dict[str, object]:
    return {
        "metadata": {"name": "web", "uid": uid, "generation": generation, **metadata},
        "spec": {"nodeSelector": {}, "schedule": {"cron": "0-1 0 11 * * * *"}},  # two seconds at 11:00
        "status": {"failures": [{"node": "n", "at": "2025-06-01T09:59:00Z"}]},
    }


def test_a_policy_is_resolved_once_per_generation_and_resume_time() -> None:
    book = PolicyBook(BOOK_DEFAULTS)
    first = book.assign([policy()], [], now=NOW).pools["web"]
    assert first.schedule is not None
    assert first.schedule.kind is ScheduleKind.WINDOW  # 11:00:00 and 11:00:01 are next
    later = NOW.replace(hour=11, microsecond=500_000)  # now only 11:00:01, then tomorrow: a trigger
    assert book.assign([policy()], [], now=later).pools["web"] is first
    edited = book.assign([policy(generation=2)], [], now=later).pools["web"]
    assert edited.schedule is not None
    assert edited.schedule.kind is ScheduleKind.TRIGGER
    resumed = {c.RESUMED_AT_ANNOTATION: Timestamp.from_datetime(later).text}
    again = book.assign([policy(generation=2, annotations=resumed)], [], now=later + timedelta(seconds=1))
    assert again.pools["web"].resumed_at == later


def test_a_status_that_does_not_read_never_makes_the_policy_unreadable() -> None:
    broken = {**policy(), "status": {"state": "Sideways"}}
    assert PolicyBook(BOOK_DEFAULTS).assign([broken], [], now=NOW).pools["web"].usable


def test_budgets_come_from_the_status_until_a_pass_keeps_them_for_the_same_object() -> None:
    book = PolicyBook(BOOK_DEFAULTS)
    book.assign([policy()], [], now=NOW)
    (shown,) = book.budgets()["web"].failures
    assert shown.node == "n"
    book.settle({"web": BudgetState()})
    assert book.budgets() == {"web": BudgetState()}
    book.assign([policy(uid="u2")], [], now=NOW)  # deleted and created again
    assert book.budgets()["web"].failures == (shown,)


def test_a_new_leader_counts_no_failure_again() -> None:
    """A budget's state written to the policy's status and read back by a new leader (PolicyBook): an
    ErrorReset failure and a stuck one, each once, the cycles they belong to kept."""
    spec = {"stuckAfter": "10m", "failureBudget": {"maxFailures": 3, "window": "1h"}}
    failed = offering("f0", crashes=1, failed_at=POLICY_NOW - timedelta(minutes=5))
    stuck = shadow("s0", spec=ShadowState.STAGED_AND_PERFORMED_UPDATE, spec_version="1.1.0")
    since = Timestamp.from_datetime(POLICY_NOW - timedelta(minutes=11))
    stuck = replace(stuck, spec=replace(stuck.spec, state_transition_timestamp=since))
    nodes = [node("f0", "b"), node("s0", "b")]
    first = run([failed, stuck], nodes, [rollout_policy("p", "b", **spec)])
    state = first.budgets["p"]
    assert len(state.failures) == 2
    status = UpdatePolicyStatus(failures=list(state.failures), halted=state.halt)
    stored = {**rollout_policy("p", "b", **spec), "status": status.to_wire()}
    stored["metadata"]["uid"] = "u1"
    book = PolicyBook(DEFAULTS)
    book.assign([stored], [], now=POLICY_NOW)
    restored = book.budgets()["p"]
    assert restored == BudgetState(failures=state.failures)
    later = POLICY_NOW + timedelta(minutes=1)
    second = run(
        [failed, stuck], nodes, [rollout_policy("p", "b", **spec)], budgets={"p": restored}, now=later
    )
    assert second.budgets["p"].failures == state.failures
