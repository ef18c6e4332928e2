"""A brupop program run as its pod's container would run it: `python -m brupop <program>` in a process of its
own, with the environment the installed chart gives that pod (read from a real pod object, which the
Deployment and DaemonSet controllers created from the chart's templates), downward-API references resolved
as the kubelet resolves them. Tests change only what the local test world must: the kubeconfig (the pod's
identity), loopback ports and addresses, and paths the chart mounts (certificates, tokens, the host socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from integ.operator import stop_process

# The pod fields the downward API offers to an environment variable, by fieldPath.
_FIELDS = {
    "metadata.name": ("metadata", "name"),
    "metadata.namespace": ("metadata", "namespace"),
    "metadata.uid": ("metadata", "uid"),
    "spec.nodeName": ("spec", "nodeName"),
    "spec.serviceAccountName": ("spec", "serviceAccountName"),
}


def container_env(pod: Mapping[str, Any], container: str = "brupop") -> dict[str, str]:
    """The environment of `container` in `pod`: literal values and downward-API field references."""
    (spec,) = (c for c in pod["spec"]["containers"] if c["name"] == container)
    env: dict[str, str] = {}
    for var in spec.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
            continue
        path = var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        if path not in _FIELDS:
            known = ", ".join(sorted(_FIELDS))
            raise ValueError(f"{var['name']}: only literal values and fields {known} are resolved: {var}")
        section, field = _FIELDS[path]
        env[var["name"]] = str(pod[section][field])
    return env


@contextlib.asynccontextmanager
async def pod_program(
    pod: Mapping[str, Any], *, overrides: Mapping[str, str], log: Path, grace: float = 35.0
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run the pod's program (its container's args) with its environment plus `overrides`; stopped with
    SIGTERM (then SIGKILL after `grace` seconds) on exit. Output goes to `log`."""
    (spec,) = (c for c in pod["spec"]["containers"] if c["name"] == "brupop")
    env = {"PATH": os.environ.get("PATH", ""), **container_env(pod), **overrides}
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "brupop", *spec["args"], env=env, stdout=out, stderr=out
        )
    try:
        yield process
    finally:
        await stop_process(process, grace=grace)
