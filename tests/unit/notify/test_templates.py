import pytest

from brupop.notify.events import FIELDS, Event, Notice
from brupop.notify.payloads import slack_escape
from brupop.notify.templates import DEFAULT_TEMPLATES, DEFAULTS, TemplateError, parse
from tests.unit.notify.clock import AT


def test_every_event_has_a_default_template_and_every_default_parses() -> None:
    assert set(DEFAULTS) == set(Event)
    assert {event: t.text for event, t in DEFAULT_TEMPLATES.items()} == DEFAULTS


def test_fields_are_placed_and_missing_ones_are_empty() -> None:
    notice = Notice(event=Event.NODE_FAILED, at=AT, node="ip-1", to_version="1.20.0", reason="rollback")
    rendered = parse("[$cluster] ${node}: $to_version $policy| $$5 at $at").render(
        notice.fields(cluster=None)
    )
    assert rendered == "[] ip-1: 1.20.0 | $5 at 2026-03-07T14:05:09Z"


def test_values_are_escaped_but_not_the_template_text() -> None:
    notice = Notice(event=Event.NODE_FAILED, at=AT, reason="a <b> & c")
    template = parse("<https://runbook.example|runbook>: $reason")
    assert template.render(notice.fields(cluster=None), escape=slack_escape) == (
        "<https://runbook.example|runbook>: a &lt;b&gt; &amp; c"
    )


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("node $nod failed", "names unknown field $nod; the fields are $event, $at,"),
        ("${to-version}", "has a $ that starts no field"),
        ("costs $5", "has a $ that starts no field"),
        ("${node.name}", "has a $ that starts no field"),
    ],
)
def test_bad_templates_are_refused_when_read(text: str, fragment: str) -> None:
    with pytest.raises(TemplateError) as refused:
        parse(text)
    assert fragment in str(refused.value)


def test_the_fields_are_exactly_the_notices() -> None:
    assert tuple(Notice(event=Event.NODE_DONE, at=AT).fields(cluster="c")) == FIELDS
