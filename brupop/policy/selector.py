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


def _requirement_text(requirement: LabelSelectorRequirement) -> str:
    match requirement.operator:
        case SelectorOperator.IN:
            return f"{requirement.key} in ({','.join(requirement.values)})"
        case SelectorOperator.NOT_IN:
            return f"{requirement.key} notin ({','.join(requirement.values)})"
        case SelectorOperator.EXISTS:
            return requirement.key
        case SelectorOperator.DOES_NOT_EXIST:
            return f"!{requirement.key}"


def selector_text(selector: LabelSelector) -> str:
    """The selector as `kubectl get -l` takes it: `app=backup,tier in (a,b),canary,!legacy`."""
    parts = [f"{key}={value}" for key, value in sorted(selector.match_labels.items())]
    parts += [_requirement_text(requirement) for requirement in selector.match_expressions]
    return ",".join(parts) or "(everything)"
