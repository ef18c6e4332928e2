"""The real `brupop apiserver` process with bad configuration: one line naming the variable, exit code 2,
before it says it serves (issue 14 item 22). No cluster is needed: every check comes before the first
Kubernetes call, so the kubeconfig points at a port where nothing listens."""

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from integ.pki import CertificateAuthority


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tls")
    ca = CertificateAuthority.create(directory)
    ca.issue(directory, "tls", common_name="brupop-apiserver", ips=("127.0.0.1",), server=True)
    return directory


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kube") / "config.json"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
    }
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def apiserver(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "brupop", "apiserver"],
        env={"PATH": os.environ.get("PATH", ""), "LOGGING_FORMATTER": "json", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("changes", "line"),
    [
        ({"APISERVER_TLS_DIR": "/nonexistent"}, "APISERVER_TLS_DIR='/nonexistent': cannot load tls.crt"),
        ({"APISERVER_TLS_DIR": "{empty}"}, "APISERVER_TLS_DIR='{empty}': cannot load tls.crt"),
        ({"APISERVER_INTERNAL_PORT": "²"}, "APISERVER_INTERNAL_PORT='²': expected a TCP port number"),
        ({"APISERVER_INTERNAL_PORT": "٨٤٤٣"}, "APISERVER_INTERNAL_PORT='٨٤٤٣': expected a TCP port number"),
        ({"APISERVER_BIND_ADDRESS": "nowhere"}, "APISERVER_BIND_ADDRESS='nowhere': expected an IP address"),
        (
            {"APISERVER_BIND_ADDRESS": "192.0.2.1"},
            "APISERVER_BIND_ADDRESS='192.0.2.1': cannot listen on 192.0.2.1 port {port}:",
        ),
        (
            {"APISERVER_INTERNAL_PORT": "{busy}"},
            "APISERVER_INTERNAL_PORT='{busy}': cannot listen on 127.0.0.1 port {busy}:",
        ),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(
    tls_dir: Path,
    kubeconfig: Path,
    busy_port: int,
    tmp_path: Path,
    changes: dict[str, str],
    line: str,
) -> None:
    with socket.socket() as probe:  # a port that is free now
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    names = {"empty": str(tmp_path), "busy": str(busy_port), "port": str(free)}
    env = {
        "KUBECONFIG": str(kubeconfig),
        "APISERVER_INTERNAL_PORT": str(free),
        "APISERVER_BIND_ADDRESS": "127.0.0.1",
        "APISERVER_TLS_DIR": str(tls_dir),
        **{name: value.format(**names) for name, value in changes.items()},
    }
    done = apiserver(env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"brupop apiserver: {line.format(**names)}"), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "serving" not in done.stdout + done.stderr
