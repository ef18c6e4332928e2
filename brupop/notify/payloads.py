"""What each kind of destination receives.

- A generic webhook gets one JSON object per notice: the rendered `text` and every field by a stable
  camelCase key (null where the event has none), so a receiver can route on `event` without parsing text.
- Slack (and what speaks its incoming-webhook format: Mattermost, Rocket.Chat, Discord's `/slack` URL)
  gets `text` (the notification's fallback) and `blocks`: the message as a section, and a context line
  naming brupop, the cluster, the event and the node. Values are escaped for mrkdwn; a section's text is
  cut at Slack's 3,000-character limit.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final

from brupop.notify.events import Notice
from brupop.notify.templates import MessageTemplate

SLACK_SECTION_LIMIT: Final = 3000


class SinkKind(StrEnum):
    WEBHOOK = "webhook"
    SLACK = "slack"


def slack_escape(text: str) -> str:
    """Slack's three control characters in mrkdwn (its documented escaping)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def webhook_payload(notice: Notice, template: MessageTemplate, *, cluster: str | None) -> dict[str, Any]:
    values = notice.fields(cluster=cluster)
    return {
        "source": "brupop",
        "text": template.render(values),
        **{_camel(name): value for name, value in values.items()},
    }


def slack_payload(notice: Notice, template: MessageTemplate, *, cluster: str | None) -> dict[str, Any]:
    values = notice.fields(cluster=cluster)
    text = _cut(template.render(values, escape=slack_escape), SLACK_SECTION_LIMIT)
    context = ["brupop"]
    if cluster is not None:
        context.append(f"cluster {cluster}")
    context.append(notice.event.value)
    if notice.node is not None:
        context.append(f"node {notice.node}")
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": slack_escape(" · ".join(context))}],
            },
        ],
    }


def payload(
    kind: SinkKind, notice: Notice, template: MessageTemplate, *, cluster: str | None
) -> dict[str, Any]:
    build = slack_payload if kind is SinkKind.SLACK else webhook_payload
    return build(notice, template, cluster=cluster)
