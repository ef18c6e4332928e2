"""Where the Kubernetes API is and how to authenticate: from a kubeconfig file, or in-cluster from the
pod's service account. Bearer tokens are read from their file on every request (projected tokens rotate).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeConfigError(ValueError):
    """The configuration is missing or unusable; the message says what and where."""


@dataclass(frozen=True)
class KubeConfig:
    server: str
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    token: str | None = None
    token_file: Path | None = None
    namespace: str = "default"
    insecure: bool = False
    _keep: Any = field(default=None, repr=False, compare=False)
    """Holds the temporary directory of inline kubeconfig data alive as long as this config."""

    def bearer_token(self) -> str | None:
        if self.token_file is not None:
            try:
                return self.token_file.read_text().strip()
            except OSError as err:
                raise KubeConfigError(
                    f"cannot read the service account token {self.token_file}: {err}"
                ) from None
        return self.token

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.client_cert is not None:
            context.load_cert_chain(str(self.client_cert), str(self.client_key) if self.client_key else None)
        return context

    @classmethod
    def in_cluster(
        cls, env: Mapping[str, str] | None = None, *, directory: Path = SERVICE_ACCOUNT_DIR
    ) -> KubeConfig:
        env = os.environ if env is None else env
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise KubeConfigError(
                "not in a cluster: KUBERNETES_SERVICE_HOST is not set and KUBECONFIG is unset"
            )
        token = directory / "token"
        if not token.is_file():
            raise KubeConfigError(f"in-cluster configuration needs the service account token at {token}")
        namespace_file = directory / "namespace"
        namespace = namespace_file.read_text().strip() if namespace_file.is_file() else "default"
        address = f"[{host}]" if ":" in host else host
        return cls(
            server=f"https://{address}:{port}",
            ca_file=directory / "ca.crt",
            token_file=token,
            namespace=namespace,
        )

    @classmethod
    def from_kubeconfig(cls, path: Path, *, context: str | None = None) -> KubeConfig:
        try:
            document = _parse(path.read_text())
        except (OSError, ValueError) as err:
            raise KubeConfigError(f"cannot read kubeconfig {path}: {err}") from None
        if not isinstance(document, dict):
            raise KubeConfigError(f"kubeconfig {path} is not a YAML mapping")
        name = context or document.get("current-context")
        ctx = _named(document, "contexts", name, path).get("context") or {}
        cluster = _named(document, "clusters", ctx.get("cluster"), path).get("cluster") or {}
        user = _named(document, "users", ctx.get("user"), path).get("user") or {}
        if not cluster.get("server"):
            raise KubeConfigError(f"kubeconfig {path}: cluster {ctx.get('cluster')!r} has no server")
        scratch = tempfile.TemporaryDirectory(prefix="brupop-kubeconfig-")

        def file_of(entry: Mapping[str, Any], key: str) -> Path | None:
            if entry.get(f"{key}-data"):
                target = Path(scratch.name) / key
                target.write_bytes(base64.b64decode(entry[f"{key}-data"]))
                target.chmod(0o600)
                return target
            if entry.get(key):
                return (path.parent / str(entry[key])).resolve()
            return None

        return cls(
            server=str(cluster["server"]).rstrip("/"),
            ca_file=file_of(cluster, "certificate-authority"),
            client_cert=file_of(user, "client-certificate"),
            client_key=file_of(user, "client-key"),
            token=user.get("token"),
            token_file=(path.parent / user["tokenFile"]).resolve() if user.get("tokenFile") else None,
            namespace=ctx.get("namespace") or "default",
            insecure=bool(cluster.get("insecure-skip-tls-verify")),
            _keep=scratch,
        )

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None) -> KubeConfig:
        """KUBECONFIG (its first file) when set, else the in-cluster service account."""
        env = os.environ if env is None else env
        kubeconfig = env.get("KUBECONFIG")
        if kubeconfig:
            return cls.from_kubeconfig(Path(kubeconfig.split(os.pathsep)[0]))
        return cls.in_cluster(env)


def _parse(text: str) -> Any:
    """A kubeconfig document. JSON (which is also YAML) is read without importing yaml, which costs a
    program about 1.5 MiB: in-cluster programs never need it, and tools may write kubeconfigs as JSON."""
    if text.lstrip().startswith("{"):
        with contextlib.suppress(ValueError):
            return json.loads(text)
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(str(err)) from None


def _named(document: Mapping[str, Any], section: str, name: object, path: Path) -> Mapping[str, Any]:
    for entry in document.get(section) or ():
        if isinstance(entry, Mapping) and entry.get("name") == name:
            return entry
    raise KubeConfigError(f"kubeconfig {path}: no entry named {name!r} in {section}")
