"""Finding the user's cluster as kubectl does: `--kubeconfig FILE`, else every file of `KUBECONFIG`
(merged: the first file that names a context, cluster or user wins, and the first `current-context`),
else `~/.kube/config`, else the pod's service account; `--context` picks another context than the
current one. The result is `brupop.kube.config.KubeConfig`, brupop's own.

Users with `exec` credentials (`aws eks get-token`, `gke-gcloud-auth-plugin`, kubelogin) get a token from
the command, as kubectl runs it (ExecCredential, `client.authentication.k8s.io/v1` or `v1beta1`), kept in
a private file that `refresh()` rewrites before it expires, so a long `--watch` keeps working. Client
certificates from an exec plugin and the removed `auth-provider` mechanism are refused with a clear line.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import yaml

from brupop.kube.config import KubeConfig, KubeConfigError
from brupop.models.timestamp import Timestamp

DEFAULT_PATH: Final = Path("~/.kube/config")
EXEC_TIMEOUT: Final = 120.0
_FILE_KEYS: Final = ("certificate-authority", "client-certificate", "client-key", "tokenFile")


@dataclass
class ExecCredential:
    """A token from a kubeconfig user's `exec` command, written to a file KubeConfig reads per request."""

    spec: Mapping[str, Any]
    base: Path
    """The directory of the kubeconfig that names the command (relative commands are relative to it)."""
    user: str
    path: Path
    expires: datetime | None = None

    def refresh(self) -> None:
        token, self.expires = run_exec(self.spec, base=self.base, user=self.user)
        self.path.write_text(token)
        self.path.chmod(0o600)

    @property
    def refresh_at(self) -> datetime | None:
        """A minute before the token expires (None: it does not)."""
        return None if self.expires is None else self.expires - timedelta(minutes=1)


@dataclass
class Connection:
    config: KubeConfig
    where: str
    """Which context of which kubeconfig, for messages."""
    credential: ExecCredential | None = None
    _scratch: Any = field(default=None, repr=False)


def _load(path: Path) -> Mapping[str, Any]:
    try:
        document = yaml.safe_load(path.read_text())  # JSON is YAML too
    except (OSError, yaml.YAMLError) as err:
        raise KubeConfigError(f"cannot read kubeconfig {path}: {err}") from None
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise KubeConfigError(f"kubeconfig {path} is not a YAML mapping")
    return document


def kubeconfig_paths(explicit: str | None, env: Mapping[str, str]) -> list[Path]:
    if explicit:
        return [Path(explicit).expanduser()]
    listed = [Path(p).expanduser() for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
    if listed:
        found = [p for p in listed if p.exists()]  # kubectl skips missing files of the list
        if not found:
            raise KubeConfigError(f"none of the KUBECONFIG files exists: {', '.join(map(str, listed))}")
        return found
    default = Path(env.get("HOME", "~")) / ".kube" / "config" if "HOME" in env else DEFAULT_PATH.expanduser()
    return [default] if default.exists() else []


@dataclass(frozen=True, slots=True)
class _Entry:
    value: Mapping[str, Any]
    source: Path


def _entries(documents: Sequence[tuple[Path, Mapping[str, Any]]], section: str) -> dict[str, _Entry]:
    found: dict[str, _Entry] = {}
    for path, document in documents:
        for item in document.get(section) or ():
            if isinstance(item, Mapping) and isinstance(item.get("name"), str):
                found.setdefault(item["name"], _Entry(item, path))
    return found


def _absolute(entry: _Entry, key: str) -> dict[str, Any]:
    """The entry's `key` mapping with file references made absolute (relative to the entry's own file)."""
    inner = dict(entry.value.get(key) or {})
    for name in _FILE_KEYS:
        if isinstance(inner.get(name), str):
            inner[name] = str((entry.source.parent / inner[name]).resolve())
    return {"name": entry.value["name"], key: inner}


def connect(*, kubeconfig: str | None, context: str | None, env: Mapping[str, str]) -> Connection:
    paths = kubeconfig_paths(kubeconfig, env)
    if not paths:
        if env.get("KUBERNETES_SERVICE_HOST"):
            return Connection(KubeConfig.in_cluster(env), "in-cluster service account")
        raise KubeConfigError("no kubeconfig: pass --kubeconfig, set KUBECONFIG, or create ~/.kube/config")
    documents = [(path, _load(path)) for path in paths]
    shown = ", ".join(map(str, paths))
    contexts = _entries(documents, "contexts")
    name = context or next(
        (str(d["current-context"]) for _, d in documents if d.get("current-context")), None
    )
    known = ", ".join(contexts) or "none"
    if name is None:
        raise KubeConfigError(f"kubeconfig {shown} has no current context: pass --context (one of {known})")
    if name not in contexts:
        raise KubeConfigError(f"kubeconfig {shown} has no context {name!r} (it has {known})")
    chosen = contexts[name]
    inner = chosen.value.get("context") or {}
    cluster = _entries(documents, "clusters").get(str(inner.get("cluster")))
    user = _entries(documents, "users").get(str(inner.get("user")))
    if cluster is None:
        raise KubeConfigError(
            f"kubeconfig {shown}: context {name!r} names no known cluster ({inner.get('cluster')!r})"
        )
    user_spec = (user.value.get("user") or {}) if user is not None else {}
    if user is not None and user_spec.get("auth-provider"):
        raise KubeConfigError(
            f"kubeconfig user {user.value['name']!r} uses auth-provider, which Kubernetes removed; use its "
            "exec credential plugin instead (e.g. gke-gcloud-auth-plugin, kubelogin)"
        )
    scratch = tempfile.TemporaryDirectory(prefix="kubectl-brupop-")
    user_name = str(inner.get("user") or "")
    merged = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": name,
        "contexts": [{"name": name, "context": {**inner, "user": user_name}}],
        "clusters": [_absolute(cluster, "cluster")],
        # A context without a known user connects without credentials, as kubectl does.
        "users": [_absolute(user, "user") if user is not None else {"name": user_name, "user": {}}],
    }
    credential = None
    if user is not None and "exec" in user_spec:
        credential = ExecCredential(
            spec=user_spec["exec"],
            base=user.source.parent,
            user=user.value["name"],
            path=Path(scratch.name) / "token",
        )
        credential.refresh()
        merged["users"] = [{"name": user.value["name"], "user": {"tokenFile": str(credential.path)}}]
    path = Path(scratch.name) / "config.json"
    path.write_text(json.dumps(merged))
    path.chmod(0o600)
    try:
        config = KubeConfig.from_kubeconfig(path, context=name)
    finally:
        path.unlink()
    where = f"context {name} of kubeconfig {chosen.source}"
    return Connection(config, where, credential, scratch)


def run_exec(spec: Mapping[str, Any], *, base: Path, user: str) -> tuple[str, datetime | None]:
    """Run a kubeconfig user's exec plugin; its token and when it expires."""
    command = str(spec.get("command") or "")
    if not command:
        raise KubeConfigError(f"kubeconfig user {user!r}: exec has no command")
    if os.sep in command:
        command = str((base / command).resolve())
    elif shutil.which(command) is None:
        hint = str(spec.get("installHint") or "")
        needs = f"kubeconfig user {user!r} needs {command!r} for credentials, which is not on PATH"
        raise KubeConfigError(f"{needs}. {hint}".strip())
    mode = spec.get("interactiveMode", "IfAvailable")
    interactive = mode != "Never" and sys.stdin.isatty()
    if mode == "Always" and not interactive:
        raise KubeConfigError(
            f"kubeconfig user {user!r}: its exec plugin needs a terminal (interactiveMode Always)"
        )
    version = str(spec.get("apiVersion") or "client.authentication.k8s.io/v1")
    info = {"apiVersion": version, "kind": "ExecCredential", "spec": {"interactive": interactive}}
    extra = {
        str(e["name"]): str(e.get("value", ""))
        for e in spec.get("env") or ()
        if isinstance(e, Mapping) and "name" in e
    }
    try:
        done = subprocess.run(
            [command, *map(str, spec.get("args") or ())],
            env={**os.environ, **extra, "KUBERNETES_EXEC_INFO": json.dumps(info)},
            stdin=None if interactive else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            timeout=EXEC_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise KubeConfigError(
            f"kubeconfig user {user!r}: its exec plugin {command!r} did not run: {err}"
        ) from None
    if done.returncode != 0:
        raise KubeConfigError(
            f"kubeconfig user {user!r}: its exec plugin {command!r} failed (exit {done.returncode})"
        )
    try:
        status = json.loads(done.stdout)["status"]
        token = status.get("token")
    except (ValueError, KeyError, TypeError, AttributeError):  # not JSON, or not an ExecCredential
        raise KubeConfigError(
            f"kubeconfig user {user!r}: its exec plugin {command!r} printed no ExecCredential"
        ) from None
    if not isinstance(token, str) or not token:
        raise KubeConfigError(
            f"kubeconfig user {user!r}: its exec plugin {command!r} gave no token (client certificates "
            "from exec plugins are not supported)"
        )
    expires = None
    with contextlib.suppress(ValueError, TypeError, KeyError):
        expires = Timestamp.parse(str(status["expirationTimestamp"])).instant
    return token, expires
