"""Which Nodes brupop manages, from their labels: those that opted in
(`bottlerocket.aws/updater-interface-version=2.0.0`) and those still in an update cycle (the in-cycle label
the controller sets before a node starts and removes once it is settled and uncordoned). A node whose
opt-in label is removed mid-cycle stays managed until its cycle is over: it keeps its agent (the DaemonSet
selects either label) and its agent may re-create its shadow; after that, nobody creates one for it.
"""

from __future__ import annotations

from collections.abc import Mapping

from brupop.models.constants import IN_CYCLE_LABEL, UPDATER_INTERFACE_LABEL, UPDATER_INTERFACE_VERSION


def opted_in(labels: Mapping[str, str]) -> bool:
    return labels.get(UPDATER_INTERFACE_LABEL) == UPDATER_INTERFACE_VERSION


def in_cycle(labels: Mapping[str, str]) -> bool:
    return IN_CYCLE_LABEL in labels


def managed(node: Mapping[str, object]) -> bool:
    """Whether brupop manages this Node object (a Kubernetes Node as JSON)."""
    meta = node.get("metadata")
    labels = meta.get("labels") if isinstance(meta, Mapping) else None
    if not isinstance(labels, Mapping):
        return False
    return opted_in(labels) or in_cycle(labels)
