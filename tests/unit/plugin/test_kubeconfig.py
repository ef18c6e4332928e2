import json
import sys
from pathlib import Path
from typing import Any

import pytest

from brupop.kube.config import KubeConfigError
from brupop.plugin.kubeconfig import connect


def write(path: Path, document: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def cluster(name: str = "c", server: str = "https://k8s.example.com:6443", **more: Any) -> dict[str, Any]:
    return {"name": name, "cluster": {"server": server, **more}}


def context(name: str, cluster: str = "c", user: str = "u") -> dict[str, Any]:
    return {"name": name, "context": {"cluster": cluster, "user": user, "namespace": "ignored"}}


def test_one_file_with_its_current_context_and_relative_files(tmp_path: Path) -> None:
    path = write(
        tmp_path / "kube" / "config",
        {
            "current-context": "main",
            "contexts": [context("main"), context("other", cluster="c2")],
            "clusters": [cluster(**{"certificate-authority": "ca.crt"}), cluster("c2", "https://other:443")],
            "users": [{"name": "u", "user": {"token": "t0ken"}}],
        },
    )
    found = connect(kubeconfig=str(path), context=None, env={})
    assert (found.config.server, found.config.ca_file, found.config.bearer_token()) == (
        "https://k8s.example.com:6443",
        tmp_path / "kube" / "ca.crt",
        "t0ken",
    )
    assert found.where == f"context main of kubeconfig {path}"
    assert connect(kubeconfig=str(path), context="other", env={}).config.server == "https://other:443"


def test_kubeconfig_files_merge_as_kubectl_merges_them(tmp_path: Path) -> None:
    first = write(tmp_path / "a" / "config", {"current-context": "main", "contexts": [context("main")]})
    second = write(
        tmp_path / "b" / "config",
        {
            "current-context": "ignored",
            "contexts": [context("main", cluster="nope")],
            "clusters": [cluster(**{"certificate-authority": "ca.crt"})],
            "users": [{"name": "u", "user": {"client-certificate": "u.crt", "client-key": "u.key"}}],
        },
    )
    env = {"KUBECONFIG": f"{tmp_path / 'missing'}:{first}:{second}"}
    found = connect(kubeconfig=None, context=None, env=env)
    assert found.config.ca_file == tmp_path / "b" / "ca.crt", "paths are relative to the file that names them"
    assert (found.config.client_cert, found.config.client_key) == (
        tmp_path / "b" / "u.crt",
        tmp_path / "b" / "u.key",
    )
    assert found.where == f"context main of kubeconfig {first}"


def test_the_default_file_is_used_when_nothing_names_one(tmp_path: Path) -> None:
    write(
        tmp_path / ".kube" / "config",
        {"current-context": "x", "contexts": [context("x")], "clusters": [cluster()]},
    )
    assert (
        connect(kubeconfig=None, context=None, env={"HOME": str(tmp_path)}).config.server
        == "https://k8s.example.com:6443"
    )


@pytest.mark.parametrize(
    ("document", "context_name", "message"),
    [
        (
            {"contexts": [context("a"), context("b")]},
            None,
            "has no current context: pass --context (one of a, b)",
        ),
        ({"current-context": "a", "contexts": [context("a")]}, "z", "has no context 'z' (it has a)"),
        (
            {"current-context": "a", "contexts": [context("a")]},
            None,
            "context 'a' names no known cluster ('c')",
        ),
        (
            {
                "current-context": "a",
                "contexts": [context("a")],
                "clusters": [cluster()],
                "users": [{"name": "u", "user": {"auth-provider": {"name": "gcp"}}}],
            },
            None,
            "kubeconfig user 'u' uses auth-provider, which Kubernetes removed; use its exec credential plugin",
        ),
    ],
)
def test_unusable_kubeconfigs_say_what_is_wrong(
    tmp_path: Path, document: dict[str, Any], context_name: str | None, message: str
) -> None:
    path = write(tmp_path / "config", document)
    with pytest.raises(KubeConfigError) as refused:
        connect(kubeconfig=str(path), context=context_name, env={})
    assert message in str(refused.value)


def test_without_any_kubeconfig(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError) as refused:
        connect(kubeconfig=None, context=None, env={"HOME": str(tmp_path)})
    assert str(refused.value) == "no kubeconfig: pass --kubeconfig, set KUBECONFIG, or create ~/.kube/config"
    with pytest.raises(KubeConfigError) as listed:
        connect(kubeconfig=None, context=None, env={"KUBECONFIG": str(tmp_path / "nope")})
    assert str(listed.value) == f"none of the KUBECONFIG files exists: {tmp_path / 'nope'}"
    with pytest.raises(KubeConfigError) as pod:
        connect(
            kubeconfig=None, context=None, env={"HOME": str(tmp_path), "KUBERNETES_SERVICE_HOST": "10.0.0.1"}
        )
    assert "in-cluster configuration needs the service account token" in str(pod.value)
    (tmp_path / "bad").write_text("{not: yaml: at all")
    with pytest.raises(KubeConfigError) as bad:
        connect(kubeconfig=str(tmp_path / "bad"), context=None, env={})
    assert str(bad.value).startswith(f"cannot read kubeconfig {tmp_path / 'bad'}:")


PLUGIN = """#!{python}
import json, os, sys
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
count = {count!r}
with open(count, "a") as runs:
    runs.write("x")
token = os.environ["TOKEN_PREFIX"] + "-" + str(len(open(count).read())) + "-" + str(info["spec"]["interactive"])
print(json.dumps({{"apiVersion": info["apiVersion"], "kind": "ExecCredential",
                   "status": {{"token": token, "expirationTimestamp": "2030-01-01T00:00:00Z"}}}}))
"""


def exec_config(tmp_path: Path, exec_spec: dict[str, Any]) -> Path:
    return write(
        tmp_path / "kube" / "config",
        {
            "current-context": "a",
            "contexts": [context("a")],
            "clusters": [cluster()],
            "users": [{"name": "u", "user": {"exec": exec_spec}}],
        },
    )


def test_exec_credentials_give_a_token_that_refreshes(tmp_path: Path) -> None:
    script = tmp_path / "kube" / "bin" / "token"
    script.parent.mkdir(parents=True)
    script.write_text(PLUGIN.format(python=sys.executable, count=str(tmp_path / "count")))
    script.chmod(0o700)
    path = exec_config(
        tmp_path,
        {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "bin/token",
            "env": [{"name": "TOKEN_PREFIX", "value": "eks"}],
            "interactiveMode": "Never",
        },
    )
    found = connect(kubeconfig=str(path), context=None, env={})
    assert found.config.bearer_token() == "eks-1-False"
    assert found.credential is not None
    assert found.credential.refresh_at is not None
    assert found.credential.refresh_at.isoformat() == "2029-12-31T23:59:00+00:00"
    found.credential.refresh()
    assert found.config.bearer_token() == "eks-2-False", "KubeConfig reads the refreshed file on each request"


@pytest.mark.parametrize(
    ("exec_spec", "message"),
    [
        (
            {"command": "no-such-credential-helper-x", "installHint": "Install it."},
            "needs 'no-such-credential-helper-x' for credentials, which is not on PATH. Install it.",
        ),
        ({"command": sys.executable, "args": ["-c", "import sys; sys.exit(3)"]}, "failed (exit 3)"),
        ({"command": sys.executable, "args": ["-c", "print('hello')"]}, "printed no ExecCredential"),
        (
            {"command": sys.executable, "args": ["-c", "print('{\"status\": {}}')"]},
            "gave no token (client certificates",
        ),
        ({"command": sys.executable, "interactiveMode": "Always"}, "its exec plugin needs a terminal"),
        ({}, "exec has no command"),
    ],
)
def test_exec_plugins_that_cannot_help_are_named(
    tmp_path: Path, exec_spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(KubeConfigError) as refused:
        connect(kubeconfig=str(exec_config(tmp_path, exec_spec)), context=None, env={})
    assert str(refused.value).startswith("kubeconfig user 'u'")
    assert message in str(refused.value)
