"""Kubernetes label selectors on node labels: every matchLabels entry and every matchExpressions
requirement must hold, as `metav1.LabelSelectorAsSelector` reads them (an empty selector matches every
node; NotIn and DoesNotExist also match a node without the label)."""

from __future__ import annotations

from collections.abc import Mapping

from brupop.models.policy import LabelSelector, LabelSelectorRequirement, SelectorOperator


def _holds(requirement: LabelSelectorRequirement, labels: Mapping[str, str]) -> bool:
    present = requirement.key in labels
    match requirement.operator:
        case SelectorOperator.IN:
            return present and labels[requirement.key] in requirement.values
        case SelectorOperator.NOT_IN:
            return not present or labels[requirement.key] not in requirement.values
        case SelectorOperator.EXISTS:
            return present
        case SelectorOperator.DOES_NOT_EXIST:
            return not present


def matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.match_labels.items()) and all(
        _holds(requirement, labels) for requirement in selector.match_expressions
    )
