"""`duringUpdate` marks: the labels, annotations and taints a node carries for the length of its update
cycle (e.g. `karpenter.sh/do-not-disrupt: "true"`, so an autoscaler leaves it alone while it reboots).

brupop never touches a mark an administrator set. It adds only marks the node does not carry yet, and
records what it added (key and value) in the node's `brupop.bottlerocket.aws/during-update` annotation, in
the same write. When the cycle ends it removes only what the record names and only while the node still
carries the recorded value; a mark someone changed or removed meanwhile is theirs from then on. A mark
the node's policy stops asking for mid-cycle (the policy was edited, or the node moved to another pool,
e.g. one a stop-everything policy of higher priority makes) stays until the cycle ends: a rebooting node
is exactly what `karpenter.sh/do-not-disrupt` protects. A new value asked for mid-cycle replaces
brupop's own. A record that cannot be read is treated as empty: a mark may then be left
behind, but nobody else's is ever removed.

`change` is the whole decision: given what the policy wants, whether the node is in its cycle and the
node's current labels, annotations and taints, it returns a merge patch (None removes) and, when taints
change, the node's whole new taint list (a merge patch replaces lists), ready for one write.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from brupop.models.constants import DURING_UPDATE_ANNOTATION
from brupop.models.policy import DuringUpdate, Taint
from brupop.models.wire import WireError

NOTHING = DuringUpdate()


@dataclass(frozen=True, slots=True)
class MarksChange:
    labels: dict[str, str | None] = field(default_factory=dict)
    annotations: dict[str, str | None] = field(default_factory=dict)
    """Merge-patch values (None removes), the record annotation included."""
    taints: list[dict[str, Any]] | None = None
    """The node's whole new `spec.taints`, or None when they stay as they are."""

    @property
    def empty(self) -> bool:
        return not self.labels and not self.annotations and self.taints is None


def read_record(annotations: Mapping[str, str]) -> DuringUpdate:
    """What brupop recorded it added to the node."""
    text = annotations.get(DURING_UPDATE_ANNOTATION)
    if text is None:
        return NOTHING
    try:
        return DuringUpdate.from_json(text)
    except WireError:
        return NOTHING


def _plan_map(
    wanted: Mapping[str, str], current: Mapping[str, str], recorded: Mapping[str, str], *, keep: bool
) -> tuple[dict[str, str | None], dict[str, str]]:
    """The patch for one map of marks, and what brupop owns after it (`keep`: in a cycle, brupop's marks no
    longer wanted stay until it ends)."""
    patch: dict[str, str | None] = {}
    owned: dict[str, str] = {}
    for key, value in wanted.items():
        have = current.get(key)
        if key in recorded:
            if have == recorded[key]:  # still as brupop left it: brupop's
                owned[key] = value
                if have != value:
                    patch[key] = value
        elif have is None:
            patch[key] = value
            owned[key] = value
    for key, value in recorded.items():
        if key not in wanted and current.get(key) == value:
            if keep:
                owned[key] = value
            else:
                patch[key] = None
    return patch, owned


def _value(taint: Mapping[str, Any]) -> str | None:
    return taint.get("value") or None


def _node_taint(taint: Taint) -> dict[str, Any]:
    return {"key": taint.key, "effect": taint.effect.value} | ({"value": taint.value} if taint.value else {})


def _plan_taints(
    wanted: Sequence[Taint], current: Sequence[Mapping[str, Any]], recorded: Sequence[Taint], *, keep: bool
) -> tuple[list[dict[str, Any]] | None, list[Taint]]:
    """The node's new taint list (None: unchanged), and the taints brupop owns after it."""
    by_id = {(t.get("key"), t.get("effect")): i for i, t in enumerate(current)}
    was = {(t.key, t.effect.value): t for t in recorded}
    new: list[dict[str, Any] | None] = [dict(t) for t in current]
    owned: list[Taint] = []
    changed = False
    for taint in wanted:
        ident = (taint.key, taint.effect.value)
        index = by_id.get(ident)
        if ident in was:
            if index is not None and _value(current[index]) == (was[ident].value or None):
                owned.append(taint)
                if _value(current[index]) != (taint.value or None):
                    new[index], changed = _node_taint(taint), True
        elif index is None:
            new.append(_node_taint(taint))
            owned.append(taint)
            changed = True
    wanted_ids = {(t.key, t.effect.value) for t in wanted}
    for ident, taint in was.items():
        index = by_id.get(ident)
        if ident not in wanted_ids and index is not None and _value(current[index]) == (taint.value or None):
            if keep:
                owned.append(taint)
            else:
                new[index], changed = None, True
    return ([t for t in new if t is not None] if changed else None), owned


def change(
    wanted: DuringUpdate | None,
    *,
    in_cycle: bool,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    taints: Sequence[Mapping[str, Any]],
) -> MarksChange:
    """What to write so the node carries exactly brupop's marks for its state (none outside a cycle)."""
    want = wanted if in_cycle and wanted is not None else NOTHING
    recorded = read_record(annotations)
    label_patch, owned_labels = _plan_map(want.labels, labels, recorded.labels, keep=in_cycle)
    annotation_patch, owned_annotations = _plan_map(
        want.annotations, annotations, recorded.annotations, keep=in_cycle
    )
    new_taints, owned_taints = _plan_taints(want.taints, taints, recorded.taints, keep=in_cycle)
    owned = DuringUpdate(labels=owned_labels, annotations=owned_annotations, taints=owned_taints)
    record = None if owned == NOTHING else json.dumps(owned.to_wire(), sort_keys=True, separators=(",", ":"))
    if annotations.get(DURING_UPDATE_ANNOTATION) != record:
        annotation_patch[DURING_UPDATE_ANNOTATION] = record
    return MarksChange(labels=label_patch, annotations=annotation_patch, taints=new_taints)
