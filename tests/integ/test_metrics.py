"""Every metric the Grafana dashboard (`deploy/monitoring/grafana-dashboard.json`) and the chart's
PrometheusRule name is one the programs really export. The controller (`brupop controller`) and the
apiserver (`brupop apiserver`) each run as a process of their own against the real control plane, under
their service accounts and the chart's RBAC, and are scraped right after they start: a metric that gets
samples only after some event (a drain's answers, a failed update) must be registered at start, so its
`# TYPE` line is there already. Only brupop's own names (`brupop_*`) are checked; `up` and `ALERTS` are
Prometheus's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from brupop.deploy import CONTROLLER_SA
from brupop.kube.client import KubeClient
from brupop.models.constants import NAMESPACE
from integ.cluster import ClusterState, free_port
from integ.fleet import prepare
from integ.helm import OPERATOR_CHART, OPERATOR_RELEASE, REPO, find, render
from integ.kubetools import eventually
from integ.operator import (
    apiserver_process,
    install_rbac,
    service_account_token,
    stop_process,
    token_kubeconfig,
)

pytestmark = pytest.mark.integration
DASHBOARD = REPO / "deploy" / "monitoring" / "grafana-dashboard.json"
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}


def names_in(expressions: Iterable[str]) -> set[str]:
    return {name for expression in expressions for name in re.findall(r"\bbrupop_[a-z0-9_]+", expression)}


def dashboard_expressions() -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            found.extend(str(v) for k, v in node.items() if k == "expr")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(DASHBOARD.read_text()))
    return found


def rule_expressions() -> list[str]:
    values = {"prometheus": {"prometheusRule": {"enabled": True}}}
    objects = render(OPERATOR_CHART, release=OPERATOR_RELEASE, values=[values])
    groups = find(objects, "PrometheusRule", "brupop")["spec"]["groups"]
    return [str(rule["expr"]) for group in groups for rule in group["rules"]]


def exported(exposition: str) -> set[str]:
    """The names a query may use for what the exposition declares (a counter `x` is `x_total`, ...)."""
    names = set()
    for family in text_string_to_metric_families(exposition):
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


@contextlib.asynccontextmanager
async def controller_metrics(cluster: ClusterState, kube: KubeClient, directory: Path) -> AsyncIterator[str]:
    """`brupop controller` as its own process and service account; its /metrics once it answers."""
    await install_rbac(kube)
    token = await service_account_token(kube, CONTROLLER_SA)
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "KUBECONFIG": str(token_kubeconfig(cluster, directory / "controller.kubeconfig", token)),
        "BRUPOP_NAMESPACE": NAMESPACE,
        "POD_NAME": f"metrics-test-{port}",
        "MAX_CONCURRENT_UPDATE": "1",
        "CONTROLLER_INTERNAL_PORT": str(port),
        "CONTROLLER_BIND_ADDRESS": "127.0.0.1",
        "LOGGING_FORMATTER": "json",
    }
    log = directory / "controller.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "brupop", "controller", env=env, stdout=out, stderr=out
        )

    async def answered() -> str | None:
        assert process.returncode is None, log.read_text()[-3000:]
        async with httpx.AsyncClient() as http:
            try:
                answer = await http.get(f"http://127.0.0.1:{port}/metrics")
            except httpx.TransportError:
                return None
        return answer.text if answer.status_code == 200 else None

    try:
        yield await eventually(answered, what="the controller's /metrics")
    finally:
        await stop_process(process, grace=30)
    assert process.returncode == 0, log.read_text()[-3000:]


async def test_every_metric_the_dashboard_and_the_alerts_name_is_exported(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path
) -> None:
    await prepare(kube)
    async with (
        controller_metrics(cluster, kube, tmp_path) as from_controller,
        apiserver_process(cluster, kube, name="metrics-apiserver") as apiserver,
        apiserver.running.client() as http,
    ):
        from_apiserver = (await http.get("/metrics")).text
    available = exported(from_controller) | exported(from_apiserver)
    named = names_in(dashboard_expressions()) | names_in(rule_expressions())
    assert {"brupop_nodes_stuck", "brupop_apiserver_eviction_answers_total"} <= named
    assert {"brupop_gate_blocked", "brupop_nodes_verifying", "brupop_verifications_total"} <= named
    assert named - available == set()
