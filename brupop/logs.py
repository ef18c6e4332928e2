"""Logging for all three programs: structlog, JSON lines in the cluster, readable lines on a terminal.

The Rust brupop's variables still work: `LOGGING_FORMATTER` (`json`; `pretty`, `full` and `compact` give
the console format), `LOGGING_ANSI_ENABLED` (colours on the console format) and `TRACING_FILTER_DIRECTIVE`
(the global level; per-module directives such as `agent=debug` are accepted and ignored). Without
`LOGGING_FORMATTER` the format follows the stream: console on a TTY, JSON otherwise.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog

_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "off": logging.CRITICAL + 10,
}
_CONSOLE_FORMATS = {"pretty", "full", "compact"}


class LoggingConfigError(ValueError):
    pass


def _level(directive: str) -> int:
    for part in directive.split(","):
        token = part.strip().lower()
        if token and "=" not in token:
            if token not in _LEVELS:
                raise LoggingConfigError(
                    f"TRACING_FILTER_DIRECTIVE={directive!r}: unknown level {token!r}; "
                    f"expected one of {', '.join(sorted(_LEVELS))}"
                )
            return _LEVELS[token]
    return logging.INFO


def configure(env: Mapping[str, str], *, stream: TextIO | None = None) -> None:
    """Set up structlog from the environment; raises LoggingConfigError on a bad value."""
    out = stream or sys.stderr
    level = _level(env.get("TRACING_FILTER_DIRECTIVE", "info"))
    fmt = env.get("LOGGING_FORMATTER", "").strip().lower()
    if fmt and fmt != "json" and fmt not in _CONSOLE_FORMATS:
        raise LoggingConfigError(f"LOGGING_FORMATTER={fmt!r}: expected json, pretty, full or compact")
    console = fmt in _CONSOLE_FORMATS or (not fmt and out.isatty())
    colors = env.get("LOGGING_ANSI_ENABLED", "true" if out.isatty() else "false").strip().lower() == "true"
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=colors) if console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
