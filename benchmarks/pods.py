"""The environment a program's pod gives it (its tokens, kubeconfig, sockets), for benchmarks that start
brupop's programs as processes of their own on the local control plane."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from brupop.deploy import CONTROLLER_SA
from brupop.kube.client import KubeClient
from integ.cluster import ClusterState, free_port
from integ.hostsim.fleet import Fleet
from integ.kubetools import pod_bound_token
from integ.operator import agent_token, service_account_token, token_kubeconfig


async def controller_env(state: ClusterState, kube: KubeClient, directory: Path) -> dict[str, str]:
    """The controller's variables under its service account (MAX_CONCURRENT_UPDATE=2: issue 20's scenario)."""
    token = await service_account_token(kube, CONTROLLER_SA)
    return {
        "KUBECONFIG": str(token_kubeconfig(state, directory / "controller.kubeconfig", token)),
        "CONTROLLER_INTERNAL_PORT": str(free_port()),
        "CONTROLLER_BIND_ADDRESS": "127.0.0.1",
        "POD_NAME": "brupop-controller-0",
        "MAX_CONCURRENT_UPDATE": "2",
    }


async def agent_env(
    state: ClusterState,
    kube: KubeClient,
    directory: Path,
    pod: dict[str, Any],
    hosts: Fleet,
    apiserver: str,
    ca: Path,
) -> dict[str, str]:
    """The agent's variables for the node `pod` runs on: its pod's tokens (for the kube-apiserver and for
    brupop's apiserver), its simulated host's socket and boot ID, the apiserver's URL and CA."""
    node = str(pod["spec"]["nodeName"])
    token = directory / f"agent-{node}.token"
    token.write_text(await agent_token(kube, pod))
    kubeconfig = token_kubeconfig(
        state, directory / f"agent-{node}.kubeconfig", await pod_bound_token(kube, pod, audiences=[])
    )
    return {
        "KUBECONFIG": str(kubeconfig),
        "MY_NODE_NAME": node,
        "BRUPOP_APISERVER_URL": apiserver,
        "BRUPOP_HOST_SOCKET": str(hosts.socket(node)),
        "BRUPOP_BOOT_ID_FILE": str(hosts.boot_id_file(node)),
        "AGENT_INTERNAL_PORT": str(free_port()),
        "BRUPOP_TOKEN_FILE": str(token),
        "BRUPOP_CA_FILE": str(ca),
    }
