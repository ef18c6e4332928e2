"""Reading environment variables: the shared helpers behind each program's settings object
(`brupop.controller.settings`, `brupop.agent.settings`, `brupop.apiserver.settings`).

Every variable is parsed once, at start-up, into a frozen settings object. Names are the Rust brupop's.
A bad value raises `SettingsError` whose message is the single line the program prints before exiting:
the variable, the value, and what is accepted.
"""

from __future__ import annotations

from collections.abc import Mapping


class SettingsError(ValueError):
    """One actionable line: which variable, which value, what would be accepted."""


def optional(env: Mapping[str, str], name: str) -> str | None:
    """The variable's value, or None when unset or blank."""
    value = env.get(name)
    return value if value is not None and value.strip() else None


def required(env: Mapping[str, str], name: str, *, hint: str) -> str:
    value = optional(env, name)
    if value is None:
        raise SettingsError(f"{name} is not set: {hint}")
    return value


def port(env: Mapping[str, str], name: str, *, default: int | None = None) -> int:
    raw = optional(env, name)
    if raw is None:
        if default is None:
            raise SettingsError(f"{name} is not set: expected a TCP port number (1-65535)")
        return default
    digits = raw.strip()
    if (
        digits.isascii() and digits.isdigit() and 1 <= int(digits) <= 65535
    ):  # not '²' nor other scripts' digits
        return int(digits)
    raise SettingsError(f"{name}={raw!r}: expected a TCP port number (1-65535)")


def seconds(env: Mapping[str, str], name: str, *, default: float, minimum: float = 0.0) -> float:
    raw = optional(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= minimum or value == float("inf"):
        raise SettingsError(f"{name}={raw!r}: expected a number of seconds >= {minimum:g}")
    return value
