"""The agent's configuration: the Rust brupop's variables, plus paths that tests can point elsewhere."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from brupop.settings import SettingsError, optional, port, required, seconds

TOKEN_FILE = Path("/var/run/secrets/tokens/bottlerocket-agent-service-account-token")
CA_FILE = Path("/etc/brupop-tls-keys/ca.crt")
HOST_SOCKET = Path("/run/api.sock")


@dataclass(frozen=True, slots=True)
class AgentSettings:
    node_name: str
    apiserver_url: str
    exclude_from_lb_wait: float
    """EXCLUDE_FROM_LB_WAIT_TIME_IN_SEC: 0 turns the load-balancer exclusion off."""
    update_check_interval: float
    """UPDATE_CHECK_INTERVAL_SECONDS: how often the host looks for a new version (default 120, as brupop)."""
    host_socket: Path
    token_file: Path
    ca_file: Path
    namespace: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AgentSettings:
        node = required(env, "MY_NODE_NAME", hint="the node this agent runs on (downward API spec.nodeName)")
        service_port = port(env, "APISERVER_SERVICE_PORT")
        namespace = optional(env, "BRUPOP_NAMESPACE")
        service = f"brupop-apiserver.{namespace or 'brupop-bottlerocket-aws'}.svc.cluster.local"
        default_url = f"https://{service}:{service_port}"
        url = optional(env, "BRUPOP_APISERVER_URL") or default_url
        if not url.startswith(("https://", "http://")):
            raise SettingsError(f"BRUPOP_APISERVER_URL={url!r}: expected an https:// URL")
        return cls(
            node_name=node,
            apiserver_url=url.rstrip("/"),
            exclude_from_lb_wait=seconds(env, "EXCLUDE_FROM_LB_WAIT_TIME_IN_SEC", default=0.0),
            update_check_interval=seconds(env, "UPDATE_CHECK_INTERVAL_SECONDS", default=120.0, minimum=1.0),
            host_socket=Path(optional(env, "BRUPOP_HOST_SOCKET") or HOST_SOCKET),
            token_file=Path(optional(env, "BRUPOP_TOKEN_FILE") or TOKEN_FILE),
            ca_file=Path(optional(env, "BRUPOP_CA_FILE") or CA_FILE),
            namespace=namespace,
        )
