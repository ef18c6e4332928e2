"""Notification settings, from the controller's environment, read once at start-up.

- `NOTIFY_WEBHOOK_URL_FILE` or `NOTIFY_WEBHOOK_URL`: a generic JSON webhook, as a file holding the URL (a
  mounted Secret) or the URL itself (an env var from a Secret's key); `NOTIFY_SLACK_WEBHOOK_URL_FILE` or
  `NOTIFY_SLACK_WEBHOOK_URL`: a Slack-compatible incoming webhook, the same two ways.
- `NOTIFY_EVENTS`: the events every destination gets (comma-separated, or `all`; default `DEFAULT_EVENTS`);
  `NOTIFY_WEBHOOK_EVENTS`, `NOTIFY_SLACK_EVENTS`: the same for one destination, instead.
- `NOTIFY_TEMPLATE_<EVENT>`: one event's message, e.g. `NOTIFY_TEMPLATE_NODE_FAILED='$node: $reason'`.
- `NOTIFY_CLUSTER_NAME`: the cluster's name in messages (`$cluster`, Slack's context line, the webhook's
  `cluster`).
- `NOTIFY_QUEUE_SIZE` (256): notices waiting per destination before the oldest is dropped;
  `NOTIFY_TIMEOUT_SECONDS` (5): one attempt's limit; `NOTIFY_ATTEMPTS` (5): attempts per notice.

The URLs carry tokens (a Slack webhook URL is its own credential): they are kept in `SecretUrl`, which
shows only scheme and host, and no message or log line ever contains one. A bad setting raises
`SettingsError` naming the variable (and never quoting a URL).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from brupop.notify.events import DEFAULT_EVENTS, Event
from brupop.notify.payloads import SinkKind
from brupop.notify.templates import DEFAULT_TEMPLATES, MessageTemplate, TemplateError, parse
from brupop.settings import SettingsError, optional, seconds

PREFIX: Final = "NOTIFY_"
TEMPLATE_PREFIX: Final = "NOTIFY_TEMPLATE_"
_URL_VARIABLES: Final = {SinkKind.WEBHOOK: "NOTIFY_WEBHOOK_URL", SinkKind.SLACK: "NOTIFY_SLACK_WEBHOOK_URL"}
_EVENT_VARIABLES: Final = {SinkKind.WEBHOOK: "NOTIFY_WEBHOOK_EVENTS", SinkKind.SLACK: "NOTIFY_SLACK_EVENTS"}
_OTHER: Final = frozenset(
    {
        "NOTIFY_EVENTS",
        "NOTIFY_CLUSTER_NAME",
        "NOTIFY_QUEUE_SIZE",
        "NOTIFY_TIMEOUT_SECONDS",
        "NOTIFY_ATTEMPTS",
    }
)
KNOWN: Final = frozenset(
    {
        *_OTHER,
        *_EVENT_VARIABLES.values(),
        *_URL_VARIABLES.values(),
        *(f"{name}_FILE" for name in _URL_VARIABLES.values()),
    }
)


@dataclass(frozen=True, slots=True)
class SecretUrl:
    """A URL that is a credential: its repr and str show only where it points."""

    value: str = field(repr=False)

    def redacted(self) -> str:
        parts = urlsplit(self.value)
        return f"{parts.scheme}://{parts.hostname}/…"

    def __str__(self) -> str:
        return self.redacted()

    def __repr__(self) -> str:
        return f"SecretUrl({self.redacted()})"


@dataclass(frozen=True, slots=True)
class SinkSettings:
    kind: SinkKind
    url: SecretUrl
    events: frozenset[Event]


@dataclass(frozen=True, slots=True)
class NotifySettings:
    sinks: tuple[SinkSettings, ...] = ()
    templates: Mapping[Event, MessageTemplate] = field(default_factory=lambda: dict(DEFAULT_TEMPLATES))
    cluster: str | None = None
    queue_size: int = 256
    timeout: float = 5.0
    attempts: int = 5
    backoff: float = 1.0
    """The first retry's delay (seconds); each further one doubles, jittered, up to `max_backoff`."""
    max_backoff: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> NotifySettings:
        for name in env:
            if name.startswith(PREFIX) and name not in KNOWN and not name.startswith(TEMPLATE_PREFIX):
                raise SettingsError(
                    f"{name} is not a notification setting; they are {', '.join(sorted(KNOWN))} and "
                    f"{TEMPLATE_PREFIX}<EVENT>"
                )
        default_events = _events(env, "NOTIFY_EVENTS", DEFAULT_EVENTS)
        sinks = []
        for kind, variable in _URL_VARIABLES.items():
            url = _url(env, variable)
            if url is not None:
                sinks.append(SinkSettings(kind, url, _events(env, _EVENT_VARIABLES[kind], default_events)))
        return cls(
            sinks=tuple(sinks),
            templates=_templates(env),
            cluster=optional(env, "NOTIFY_CLUSTER_NAME"),
            queue_size=_count(env, "NOTIFY_QUEUE_SIZE", default=256, low=1, high=100_000),
            timeout=seconds(env, "NOTIFY_TIMEOUT_SECONDS", default=5.0, minimum=0.1),
            attempts=_count(env, "NOTIFY_ATTEMPTS", default=5, low=1, high=20),
        )


def _url(env: Mapping[str, str], variable: str) -> SecretUrl | None:
    direct, path = optional(env, variable), optional(env, f"{variable}_FILE")
    if direct is not None and path is not None:
        raise SettingsError(f"{variable} and {variable}_FILE are both set: set one")
    where = variable
    if path is not None:
        where = f"{variable}_FILE={path}"
        try:
            direct = Path(path).read_text().strip()
        except OSError as err:
            raise SettingsError(f"{where}: cannot read the file: {err.strerror}") from None
    if direct is None:
        return None
    try:
        parts = urlsplit(direct)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:
        valid = False
    if not valid:
        # Never quote the value: it may be a credential that is merely mistyped.
        raise SettingsError(f"{where}: not an http:// or https:// URL with a host (the value is not shown)")
    return SecretUrl(direct)


def _events(env: Mapping[str, str], variable: str, default: frozenset[Event]) -> frozenset[Event]:
    raw = optional(env, variable)
    if raw is None:
        return default
    names = [part.strip() for part in raw.split(",") if part.strip()]
    if names == ["all"]:
        return frozenset(Event)
    known = {event.value: event for event in Event}
    for name in names:
        if name not in known:
            raise SettingsError(
                f"{variable}={raw!r}: {name!r} is not an event; use 'all' or some of {', '.join(known)}"
            )
    return frozenset(known[name] for name in names)


def _templates(env: Mapping[str, str]) -> dict[Event, MessageTemplate]:
    by_setting = {event.setting: event for event in Event}
    templates = dict(DEFAULT_TEMPLATES)
    for name, text in env.items():
        if not name.startswith(TEMPLATE_PREFIX) or not text.strip():  # blank: unset, as elsewhere
            continue
        event = by_setting.get(name.removeprefix(TEMPLATE_PREFIX))
        if event is None:
            raise SettingsError(
                f"{name}: no such event; the template variables are "
                + ", ".join(f"{TEMPLATE_PREFIX}{setting}" for setting in by_setting)
            )
        try:
            templates[event] = parse(text)
        except TemplateError as err:
            raise SettingsError(f"{name}: {err}") from None
    return templates


def _count(env: Mapping[str, str], variable: str, *, default: int, low: int, high: int) -> int:
    raw = optional(env, variable)
    if raw is None:
        return default
    value = raw.strip()
    if value.isascii() and value.isdigit() and low <= int(value) <= high:
        return int(value)
    raise SettingsError(f"{variable}={raw!r}: expected a whole number from {low} to {high}")
