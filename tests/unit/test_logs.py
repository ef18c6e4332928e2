import io
import json

import pytest
import structlog

from brupop.logs import LoggingConfigError, configure


def emit(env: dict[str, str]) -> str:
    out = io.StringIO()
    configure(env, stream=out)
    log = structlog.get_logger()
    log.debug("hidden-unless-debug")
    log.info("hello", node="n1")
    return out.getvalue()


def test_json_lines_by_default_off_a_terminal() -> None:
    lines = emit({}).splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert (record["event"], record["node"], record["level"]) == ("hello", "n1", "info")
    assert record["timestamp"].endswith("Z")


def test_console_format_and_level_directives() -> None:
    text = emit(
        {
            "LOGGING_FORMATTER": "pretty",
            "LOGGING_ANSI_ENABLED": "false",
            "TRACING_FILTER_DIRECTIVE": "agent=info,debug",
        }
    )
    assert "hidden-unless-debug" in text
    assert "hello" in text
    assert "node=n1" in text
    assert not text.lstrip().startswith("{")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LOGGING_FORMATTER": "xml"}, "LOGGING_FORMATTER='xml': expected json, pretty, full or compact"),
        ({"TRACING_FILTER_DIRECTIVE": "loud"}, "TRACING_FILTER_DIRECTIVE='loud': unknown level 'loud'"),
    ],
)
def test_bad_values_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(LoggingConfigError) as info:
        configure(env, stream=io.StringIO())
    assert str(info.value).startswith(message)
