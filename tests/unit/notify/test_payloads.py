from brupop.notify.events import Event, Notice
from brupop.notify.payloads import SLACK_SECTION_LIMIT, SinkKind, payload
from brupop.notify.templates import DEFAULT_TEMPLATES, parse
from tests.unit.notify.clock import AT

FAILED = Notice(
    event=Event.NODE_FAILED,
    at=AT,
    node="ip-10-0-1-7",
    policy="workers",
    from_version="1.19.0",
    to_version="1.20.0",
    reason="host rolled back to 1.19.0",
)


def test_the_webhook_gets_the_text_and_every_field_by_a_stable_key() -> None:
    body = payload(SinkKind.WEBHOOK, FAILED, DEFAULT_TEMPLATES[Event.NODE_FAILED], cluster="prod-eu")
    assert body == {
        "source": "brupop",
        "text": "Node ip-10-0-1-7: update to 1.20.0 failed: host rolled back to 1.19.0",
        "event": "node-failed",
        "at": "2026-03-07T14:05:09Z",
        "cluster": "prod-eu",
        "node": "ip-10-0-1-7",
        "policy": "workers",
        "fromVersion": "1.19.0",
        "toVersion": "1.20.0",
        "reason": "host rolled back to 1.19.0",
        "done": None,
        "total": None,
    }


def test_slack_gets_text_a_section_and_a_context_line() -> None:
    body = payload(SinkKind.SLACK, FAILED, DEFAULT_TEMPLATES[Event.NODE_FAILED], cluster="prod-eu")
    text = "Node ip-10-0-1-7: update to 1.20.0 failed: host rolled back to 1.19.0"
    assert body == {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": "brupop · cluster prod-eu · node-failed · node ip-10-0-1-7"}
                ],
            },
        ],
    }


def test_slack_context_leaves_out_what_the_notice_lacks_and_long_text_is_cut() -> None:
    notice = Notice(event=Event.POLICY_HALTED, at=AT, policy="<all>", reason="x" * 5000)
    body = payload(SinkKind.SLACK, notice, parse("$policy: $reason"), cluster=None)
    assert body["blocks"][1]["elements"][0]["text"] == "brupop · policy-halted"
    section = body["blocks"][0]["text"]["text"]
    assert len(section) == SLACK_SECTION_LIMIT
    assert section.startswith("&lt;all&gt;: xxx")
    assert section.endswith("x…")
    assert body["text"] == section
