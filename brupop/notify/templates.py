"""Message templates: `string.Template` text over the notice's fixed fields (`$node`, `${to_version}`,
`$$` for a dollar sign). No expressions, loops or attribute access: a template can only place fields, so
it cannot fail or run anything at send time. A template naming an unknown field, or with a `$` that starts
no field, is refused when it is read (`parse`), i.e. when the controller starts.

Each destination escapes the values for its format (Slack's mrkdwn treats `<`, `>` and `&` as markup), not
the template's own text, so an operator can still write a Slack link `<https://runbook|runbook>`.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from brupop.notify.events import FIELDS, Event


class TemplateError(ValueError):
    """A template that cannot be used; the message names the problem and the fields there are."""


DEFAULTS: Final[Mapping[Event, str]] = {
    Event.ROLLOUT_STARTED: "Rollout to Bottlerocket $to_version started in pool $policy ($total nodes)",
    Event.NODE_STARTED: "Node $node: updating from $from_version to $to_version (pool $policy)",
    Event.NODE_FAILED: "Node $node: update to $to_version failed: $reason",
    Event.NODE_DONE: "Node $node now runs $to_version ($done/$total done in pool $policy)",
    Event.POLICY_HALTED: "Pool $policy halted: $reason",
    Event.POLICY_RESUMED: "Pool $policy resumed: $reason",
    Event.ROLLOUT_DONE: "Rollout to $to_version in pool $policy done: $done/$total nodes on it",
    Event.NODE_STUCK: "Node $node is stuck: $reason",
    Event.GATE_BLOCKED: "Node $node is held back by a health gate: $reason",
}


@dataclass(frozen=True, slots=True)
class MessageTemplate:
    text: str
    _template: string.Template

    def render(self, values: Mapping[str, object], *, escape: Callable[[str], str] = str) -> str:
        """The message; a value that is None is left empty."""
        return self._template.substitute(
            {name: escape("" if value is None else str(value)) for name, value in values.items()}
        )


def _known() -> str:
    return ", ".join(f"${name}" for name in FIELDS)


def parse(text: str) -> MessageTemplate:
    template = string.Template(text)
    if not template.is_valid():
        raise TemplateError(
            f"{text!r} has a $ that starts no field: write $name or ${{name}} for a field ({_known()}) "
            "and $$ for a dollar sign"
        )
    unknown = [name for name in template.get_identifiers() if name not in FIELDS]
    if unknown:
        raise TemplateError(f"{text!r} names unknown field ${unknown[0]}; the fields are {_known()}")
    return MessageTemplate(text, template)


DEFAULT_TEMPLATES: Final[Mapping[Event, MessageTemplate]] = {
    event: parse(text) for event, text in DEFAULTS.items()
}
