"""The apiserver's configuration from its environment."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from brupop.settings import SettingsError, optional, port, seconds

DEFAULT_TLS_DIR = Path("/etc/brupop-tls-keys")


@dataclass(frozen=True, slots=True)
class ApiserverSettings:
    port: int
    """APISERVER_INTERNAL_PORT: the HTTPS port (required, as in the Rust brupop)."""
    bind: str
    """All IPv6 addresses when the cluster's service host is IPv6, else all IPv4 (APISERVER_BIND_ADDRESS)."""
    tls_dir: Path
    """Holds tls.crt and tls.key (APISERVER_TLS_DIR, default /etc/brupop-tls-keys)."""
    drain_seconds: float
    """DRAIN_TIMEOUT: how long a cordon-and-drain call may take (default 30 minutes)."""
    namespace: str | None
    """BRUPOP_NAMESPACE, else the pod's own namespace."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ApiserverSettings:
        service_host = env.get("KUBERNETES_SERVICE_HOST", "")
        return cls(
            port=port(env, "APISERVER_INTERNAL_PORT"),
            bind=_address(env, "APISERVER_BIND_ADDRESS") or ("::" if ":" in service_host else "0.0.0.0"),
            tls_dir=Path(optional(env, "APISERVER_TLS_DIR") or DEFAULT_TLS_DIR),
            drain_seconds=seconds(env, "DRAIN_TIMEOUT", default=1800.0, minimum=1.0),
            namespace=optional(env, "BRUPOP_NAMESPACE"),
        )


def _address(env: Mapping[str, str], name: str) -> str | None:
    raw = optional(env, name)
    if raw is None:
        return None
    try:
        return str(ipaddress.ip_address(raw.strip()))
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected an IP address (e.g. 0.0.0.0 or ::)") from None
