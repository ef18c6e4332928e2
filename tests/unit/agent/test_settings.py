"""The agent's settings: where the apiserver is (its URL, or the Service in the agent's own namespace) and
the paths and numbers tests and installations change."""

from pathlib import Path

import pytest

from brupop.agent.settings import AgentSettings
from brupop.settings import SettingsError

NODE = {"MY_NODE_NAME": "n1"}


def test_an_explicit_apiserver_url_needs_no_service_port(tmp_path: Path) -> None:
    settings = AgentSettings.from_env(
        {**NODE, "BRUPOP_APISERVER_URL": "https://127.0.0.1:9443/"}, namespace_file=tmp_path / "none"
    )
    assert settings.apiserver_url_in("anywhere") == "https://127.0.0.1:9443"


def test_without_a_url_the_service_port_is_required(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="APISERVER_SERVICE_PORT is not set"):
        AgentSettings.from_env(NODE, namespace_file=tmp_path / "none")


@pytest.mark.parametrize(
    ("env", "namespace_file", "expected"),
    [
        ({"BRUPOP_NAMESPACE": "from-env"}, "from-file", "from-env"),  # the downward API
        ({}, "from-file", "from-file"),  # the service account's namespace file
        ({}, None, None),  # neither: the kubeconfig's namespace (main.run)
    ],
    ids=["env", "service-account-file", "kubeconfig"],
)
def test_the_namespace_is_the_pods_own(
    tmp_path: Path, env: dict[str, str], namespace_file: str | None, expected: str | None
) -> None:
    path = tmp_path / "namespace"
    if namespace_file is not None:
        path.write_text(f"{namespace_file}\n")
    settings = AgentSettings.from_env({**NODE, "APISERVER_SERVICE_PORT": "443", **env}, namespace_file=path)
    assert settings.namespace == expected
    assert (
        settings.apiserver_url_in(settings.namespace or "from-kubeconfig")
        == f"https://brupop-apiserver.{expected or 'from-kubeconfig'}.svc.cluster.local:443"
    )


def test_an_unreadable_namespace_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read the service account's namespace"):
        AgentSettings.from_env({**NODE, "APISERVER_SERVICE_PORT": "443"}, namespace_file=tmp_path)


def test_paths_and_numbers_have_defaults_and_can_be_changed(tmp_path: Path) -> None:
    base = {**NODE, "APISERVER_SERVICE_PORT": "443"}
    defaults = AgentSettings.from_env(base, namespace_file=tmp_path / "none")
    assert (str(defaults.boot_id_file), defaults.apiserver_retry, defaults.health_port) == (
        "/proc/sys/kernel/random/boot_id",
        60.0,
        8080,
    )
    custom = AgentSettings.from_env(
        {
            **base,
            "BRUPOP_BOOT_ID_FILE": str(tmp_path / "boot_id"),
            "BRUPOP_APISERVER_RETRY_SECONDS": "120",
            "AGENT_INTERNAL_PORT": "9090",
        },
        namespace_file=tmp_path / "none",
    )
    assert (custom.boot_id_file, custom.apiserver_retry, custom.health_port) == (
        tmp_path / "boot_id",
        120.0,
        9090,
    )
    with pytest.raises(SettingsError, match="BRUPOP_APISERVER_RETRY_SECONDS='soon'"):
        AgentSettings.from_env(
            {**base, "BRUPOP_APISERVER_RETRY_SECONDS": "soon"}, namespace_file=tmp_path / "none"
        )


def test_a_namespace_that_is_not_a_dns_label_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="BRUPOP_NAMESPACE='Brupop/x': expected a Kubernetes namespace"):
        AgentSettings.from_env(
            {**NODE, "APISERVER_SERVICE_PORT": "443", "BRUPOP_NAMESPACE": "Brupop/x"},
            namespace_file=tmp_path / "none",
        )
