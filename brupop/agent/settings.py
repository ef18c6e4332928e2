"""The agent's configuration: the Rust brupop's variables, plus paths that tests can point elsewhere.

The apiserver is `BRUPOP_APISERVER_URL` when given, else the `brupop-apiserver` Service in the agent's own
namespace on `APISERVER_SERVICE_PORT`. That namespace is the pod's: `BRUPOP_NAMESPACE` (the DaemonSet sets
it from the downward API), else the service account's namespace file, else the kubeconfig's (which only
`main.run` knows, so `namespace` is None then).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from brupop.agent.host import BOOT_ID_FILE
from brupop.kube.config import SERVICE_ACCOUNT_DIR
from brupop.models.constants import APISERVER_SERVICE_NAME
from brupop.settings import SettingsError, optional, port, required, seconds

TOKEN_FILE = Path("/var/run/secrets/tokens/bottlerocket-agent-service-account-token")
CA_FILE = Path("/etc/brupop-tls-keys/ca.crt")
HOST_SOCKET = Path("/run/api.sock")
NAMESPACE_FILE = SERVICE_ACCOUNT_DIR / "namespace"
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@dataclass(frozen=True, slots=True)
class AgentSettings:
    node_name: str
    apiserver_url: str | None
    """BRUPOP_APISERVER_URL, without a trailing slash."""
    apiserver_service_port: int | None
    """APISERVER_SERVICE_PORT: required unless the URL is given."""
    exclude_from_lb_wait: float
    """EXCLUDE_FROM_LB_WAIT_TIME_IN_SEC: 0 turns the load-balancer exclusion off."""
    update_check_interval: float
    """UPDATE_CHECK_INTERVAL_SECONDS: how often the host looks for a new version (default 120, as brupop)."""
    apiserver_retry: float
    """BRUPOP_APISERVER_RETRY_SECONDS: how long failing apiserver calls are retried (default 60)."""
    health_port: int
    """AGENT_INTERNAL_PORT: the readiness endpoint's port (default 8080)."""
    host_socket: Path
    boot_id_file: Path
    token_file: Path
    ca_file: Path
    namespace: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, namespace_file: Path = NAMESPACE_FILE) -> AgentSettings:
        node = required(env, "MY_NODE_NAME", hint="the node this agent runs on (downward API spec.nodeName)")
        url = optional(env, "BRUPOP_APISERVER_URL")
        if url is not None and not url.startswith(("https://", "http://")):
            raise SettingsError(f"BRUPOP_APISERVER_URL={url!r}: expected an https:// URL")
        return cls(
            node_name=node,
            apiserver_url=url.rstrip("/") if url else None,
            apiserver_service_port=port(env, "APISERVER_SERVICE_PORT") if url is None else None,
            exclude_from_lb_wait=seconds(env, "EXCLUDE_FROM_LB_WAIT_TIME_IN_SEC", default=0.0),
            update_check_interval=seconds(env, "UPDATE_CHECK_INTERVAL_SECONDS", default=120.0, minimum=1.0),
            apiserver_retry=seconds(env, "BRUPOP_APISERVER_RETRY_SECONDS", default=60.0),
            health_port=port(env, "AGENT_INTERNAL_PORT", default=8080),
            host_socket=Path(optional(env, "BRUPOP_HOST_SOCKET") or HOST_SOCKET),
            boot_id_file=Path(optional(env, "BRUPOP_BOOT_ID_FILE") or BOOT_ID_FILE),
            token_file=Path(optional(env, "BRUPOP_TOKEN_FILE") or TOKEN_FILE),
            ca_file=Path(optional(env, "BRUPOP_CA_FILE") or CA_FILE),
            namespace=_valid_namespace(optional(env, "BRUPOP_NAMESPACE"), "BRUPOP_NAMESPACE")
            or _valid_namespace(_namespace_in(namespace_file), str(namespace_file)),
        )

    def apiserver_url_in(self, namespace: str) -> str:
        """The apiserver's URL, for an agent in `namespace`."""
        if self.apiserver_url is not None:
            return self.apiserver_url
        service = f"{APISERVER_SERVICE_NAME}.{namespace}.svc.cluster.local"
        return f"https://{service}:{self.apiserver_service_port}"


def _valid_namespace(name: str | None, source: str) -> str | None:
    if name is not None and not _NAMESPACE.fullmatch(name):
        raise SettingsError(f"{source}={name!r}: expected a Kubernetes namespace name (a DNS label)")
    return name


def _namespace_in(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None
    except OSError as err:
        raise SettingsError(f"cannot read the service account's namespace from {path}: {err}") from None
