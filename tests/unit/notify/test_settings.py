from pathlib import Path

import pytest

from brupop.notify.events import DEFAULT_EVENTS, Event
from brupop.notify.payloads import SinkKind
from brupop.notify.settings import NotifySettings, SecretUrl
from brupop.notify.templates import DEFAULTS
from brupop.settings import SettingsError

SLACK = "https://hooks.slack.com/services/T000/B000/s3cr3tT0ken"


def test_nothing_set_means_no_destination_and_the_defaults() -> None:
    settings = NotifySettings.from_env({"PATH": "/bin"})
    assert settings.sinks == ()
    assert {event: t.text for event, t in settings.templates.items()} == DEFAULTS
    assert (settings.queue_size, settings.timeout, settings.attempts, settings.cluster) == (256, 5.0, 5, None)


def test_urls_come_from_a_file_or_the_variable_and_events_filter_per_destination(tmp_path: Path) -> None:
    secret = tmp_path / "url"
    secret.write_text(SLACK + "\n")
    settings = NotifySettings.from_env(
        {
            "NOTIFY_SLACK_WEBHOOK_URL_FILE": str(secret),
            "NOTIFY_WEBHOOK_URL": "http://receiver.ops:8080/brupop",
            "NOTIFY_EVENTS": "node-failed, policy-halted",
            "NOTIFY_SLACK_EVENTS": "all",
            "NOTIFY_TEMPLATE_NODE_FAILED": "$node: $reason",
            "NOTIFY_TEMPLATE_NODE_DONE": "  ",
            "NOTIFY_CLUSTER_NAME": "prod-eu",
            "NOTIFY_QUEUE_SIZE": "10",
            "NOTIFY_TIMEOUT_SECONDS": "2.5",
            "NOTIFY_ATTEMPTS": "3",
        }
    )
    webhook, slack = settings.sinks
    assert (webhook.kind, webhook.url.value) == (SinkKind.WEBHOOK, "http://receiver.ops:8080/brupop")
    assert webhook.events == {Event.NODE_FAILED, Event.POLICY_HALTED}
    assert (slack.kind, slack.url.value, slack.events) == (SinkKind.SLACK, SLACK, set(Event))
    assert settings.templates[Event.NODE_FAILED].text == "$node: $reason"
    assert settings.templates[Event.NODE_DONE].text == DEFAULTS[Event.NODE_DONE]
    assert (settings.cluster, settings.queue_size, settings.timeout, settings.attempts) == (
        "prod-eu",
        10,
        2.5,
        3,
    )


def test_the_default_events() -> None:
    (sink,) = NotifySettings.from_env({"NOTIFY_WEBHOOK_URL": "https://example.com/x"}).sinks
    assert sink.events == DEFAULT_EVENTS


def test_a_secret_url_never_shows_its_path() -> None:
    url = SecretUrl(SLACK)
    for shown in (str(url), repr(url), repr(NotifySettings.from_env({"NOTIFY_SLACK_WEBHOOK_URL": SLACK}))):
        assert "s3cr3t" not in shown
    assert str(url) == "https://hooks.slack.com/…"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"NOTIFY_WEBHOOK_URL": "x", "NOTIFY_WEBHOOK_URL_FILE": "/y"},
            "NOTIFY_WEBHOOK_URL and NOTIFY_WEBHOOK_URL_FILE are both set: set one",
        ),
        (
            {"NOTIFY_SLACK_WEBHOOK_URL": "hooks.slack.com/services/s3cr3t"},
            "NOTIFY_SLACK_WEBHOOK_URL: not an http:// or https:// URL with a host (the value is not shown)",
        ),
        (
            {"NOTIFY_SLACK_WEBHOOK_URL": "https://[s3cr3t/"},
            "NOTIFY_SLACK_WEBHOOK_URL: not an http:// or https:// URL with a host (the value is not shown)",
        ),
        (
            {"NOTIFY_SLACK_WEBHOOK_URL_FILE": "/nonexistent/url"},
            "NOTIFY_SLACK_WEBHOOK_URL_FILE=/nonexistent/url: cannot read the file: No such file or directory",
        ),
        (
            {"NOTIFY_EVENTS": "node-failed,node-exploded"},
            "NOTIFY_EVENTS='node-failed,node-exploded': 'node-exploded' is not an event; "
            "use 'all' or some of rollout-started, node-started,",
        ),
        (
            {"NOTIFY_TEMPLATE_NODE_FAILED": "$nodename failed"},
            "NOTIFY_TEMPLATE_NODE_FAILED: '$nodename failed' names unknown field $nodename; the fields are",
        ),
        (
            {"NOTIFY_TEMPLATE_NODE_EXPLODED": "$node"},
            "NOTIFY_TEMPLATE_NODE_EXPLODED: no such event; the template variables are "
            "NOTIFY_TEMPLATE_ROLLOUT_STARTED,",
        ),
        (
            {"NOTIFY_SLACK_URL": SLACK},
            "NOTIFY_SLACK_URL is not a notification setting; they are NOTIFY_ATTEMPTS,",
        ),
        ({"NOTIFY_QUEUE_SIZE": "0"}, "NOTIFY_QUEUE_SIZE='0': expected a whole number from 1 to 100000"),
        ({"NOTIFY_ATTEMPTS": "ten"}, "NOTIFY_ATTEMPTS='ten': expected a whole number from 1 to 20"),
        ({"NOTIFY_TIMEOUT_SECONDS": "0"}, "NOTIFY_TIMEOUT_SECONDS='0': expected a number of seconds >= 0.1"),
    ],
)
def test_bad_settings_are_one_line_naming_the_variable_and_never_the_url(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        NotifySettings.from_env(env)
    assert str(refused.value).startswith(message)
    assert "s3cr3t" not in str(refused.value)
