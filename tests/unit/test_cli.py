from pathlib import Path

import pytest

from brupop.agent.settings import AgentSettings
from brupop.apiserver.settings import ApiserverSettings
from brupop.cli import main
from brupop.settings import SettingsError

BASE = {"MY_NODE_NAME": "n1", "APISERVER_SERVICE_PORT": "443"}


@pytest.mark.parametrize(
    ("program", "env", "line"),
    [
        ("agent", {}, "brupop agent: MY_NODE_NAME is not set"),
        (
            "agent",
            {**BASE, "APISERVER_SERVICE_PORT": "https"},
            "brupop agent: APISERVER_SERVICE_PORT='https'",
        ),
        ("controller", {"MAX_CONCURRENT_UPDATE": "x"}, "brupop controller: MAX_CONCURRENT_UPDATE='x'"),
        (
            "controller",
            {"MAX_CONCURRENT_UPDATE": "1", "SCHEDULER_CRON_EXPRESSION": "0 0 0 30 2 * *"},
            "brupop controller: SCHEDULER_CRON_EXPRESSION='0 0 0 30 2 * *': never fires",
        ),
        ("apiserver", {"APISERVER_INTERNAL_PORT": "0"}, "brupop apiserver: APISERVER_INTERNAL_PORT='0'"),
        (
            "apiserver",
            {"APISERVER_INTERNAL_PORT": "8443", "LOGGING_FORMATTER": "xml"},
            "brupop apiserver: LOGGING_FORMATTER",
        ),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(
    program: str,
    env: dict[str, str],
    line: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in (
        "MY_NODE_NAME",
        "APISERVER_SERVICE_PORT",
        "MAX_CONCURRENT_UPDATE",
        "SCHEDULER_CRON_EXPRESSION",
        "APISERVER_INTERNAL_PORT",
        "LOGGING_FORMATTER",
        "KUBECONFIG",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main([program]) == 2
    err = capsys.readouterr().err
    assert err.startswith(line)
    assert err.count("\n") == 1


def test_agent_settings_defaults_and_overrides(tmp_path: Path) -> None:
    defaults = AgentSettings.from_env(BASE, namespace_file=tmp_path / "no-namespace-file")
    assert (
        defaults.apiserver_url_in("brupop-bottlerocket-aws")
        == "https://brupop-apiserver.brupop-bottlerocket-aws.svc.cluster.local:443"
    )
    assert (defaults.exclude_from_lb_wait, defaults.update_check_interval) == (0.0, 120.0)
    assert str(defaults.host_socket) == "/run/api.sock"
    custom = AgentSettings.from_env(
        {
            **BASE,
            "BRUPOP_APISERVER_URL": "https://127.0.0.1:9443/",
            "BRUPOP_HOST_SOCKET": str(tmp_path),
            "EXCLUDE_FROM_LB_WAIT_TIME_IN_SEC": "30",
            "UPDATE_CHECK_INTERVAL_SECONDS": "5",
        }
    )
    assert (custom.apiserver_url_in("x"), custom.exclude_from_lb_wait, custom.update_check_interval) == (
        "https://127.0.0.1:9443",
        30.0,
        5.0,
    )
    with pytest.raises(SettingsError, match="BRUPOP_APISERVER_URL='ftp://x': expected an https:// URL"):
        AgentSettings.from_env({**BASE, "BRUPOP_APISERVER_URL": "ftp://x"})
    with pytest.raises(
        SettingsError, match="UPDATE_CHECK_INTERVAL_SECONDS='0': expected a number of seconds >= 1"
    ):
        AgentSettings.from_env({**BASE, "UPDATE_CHECK_INTERVAL_SECONDS": "0"})


def test_apiserver_settings() -> None:
    v4 = ApiserverSettings.from_env(
        {"APISERVER_INTERNAL_PORT": "8443", "KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    )
    v6 = ApiserverSettings.from_env({"APISERVER_INTERNAL_PORT": "8443", "KUBERNETES_SERVICE_HOST": "fd00::1"})
    assert (v4.bind, v6.bind, v4.drain_seconds) == ("0.0.0.0", "::", 1800.0)
    with pytest.raises(SettingsError, match="DRAIN_TIMEOUT='soon'"):
        ApiserverSettings.from_env({"APISERVER_INTERNAL_PORT": "8443", "DRAIN_TIMEOUT": "soon"})
