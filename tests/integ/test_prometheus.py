"""The real Prometheus of the test world, seen through `brupop.observe` and judged by the gates: it scrapes
the test exporter, an alert fires and clears, a PromQL error comes back in Prometheus's words, a stopped
server is unreachable (fail closed blocks, fail open does not), HTTPS is trusted only with the CA file, and
promtool accepts the rules the harness writes."""

import subprocess
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from brupop.models.health import Answer, QueryError, Unreachable, Vector
from brupop.models.policy import PrometheusGate
from brupop.observe.prometheus import PrometheusClient
from brupop.policy.gates import prometheus_block
from integ.build import prometheus_binaries
from integ.kubetools import eventually
from integ.pki import CertificateAuthority
from integ.prometheus import PrometheusServer, TestExporter, start_prometheus, stop

CRITICAL = 'ALERTS{alertstate="firing",severity="critical"}'


@pytest.fixture
async def client(prometheus: PrometheusServer) -> AsyncIterator[PrometheusClient]:
    # A fractional timeout: Prometheus must accept the `timeout` parameter as the client writes it.
    async with PrometheusClient(url=prometheus.url, timeout=timedelta(seconds=4.5)) as found:
        yield found


def gate(url: str, **fields: object) -> PrometheusGate:
    return PrometheusGate.from_wire({"url": url, "query": CRITICAL, **fields})


async def samples(client: PrometheusClient, query: str) -> Vector | None:
    """The query's vector when it is non-empty."""
    found = await client.query(query)
    assert isinstance(found, Answer), found
    assert isinstance(found.result, Vector)
    return found.result if found.result.samples else None


@pytest.mark.integration
async def test_prometheus_scrapes_the_test_exporter(exporter: TestExporter, client: PrometheusClient) -> None:
    exporter.set("brupop_test_health", 0.25, service="web")
    up = await eventually(lambda: samples(client, 'up{job="brupop-test"} == 1'), what="the exporter scraped")
    assert up.samples[0].labels["instance"] == exporter.address
    health = await eventually(lambda: samples(client, "brupop_test_health"), what="the exporter's series")
    assert [(s.labels["service"], s.value) for s in health.samples] == [("web", 0.25)]


@pytest.mark.integration
async def test_an_alert_fires_and_clears_and_the_gate_follows(
    exporter: TestExporter, prometheus: PrometheusServer, client: PrometheusClient
) -> None:
    critical = gate(prometheus.url)

    async def verdict() -> str | None:
        block = prometheus_block(critical, critical.query, await client.query(critical.query))
        return None if block is None else block.reason

    assert await verdict() is None
    exporter.fire("BrupopTestWarning")
    await eventually(lambda: samples(client, 'ALERTS{alertname="BrupopTestWarning"}'), what="the warning")
    assert await verdict() is None, "a warning is not critical"
    exporter.fire("BrupopTestCritical")
    reason = await eventually(verdict, what="the critical alert to fire")
    assert reason == f"alert BrupopTestCritical firing (query {CRITICAL})"
    exporter.clear("BrupopTestCritical")

    async def cleared() -> bool:
        return await verdict() is None

    await eventually(cleared, what="the critical alert to clear")


@pytest.mark.integration
async def test_a_promql_error_comes_back_in_prometheus_words(
    prometheus: PrometheusServer, client: PrometheusClient
) -> None:
    found = await client.query("sum(")
    assert isinstance(found, QueryError)
    assert found.error_type == "bad_data"
    assert "parse error" in found.message
    block = prometheus_block(gate(prometheus.url, failOpen=True), "sum(", found)
    assert block is not None, "a query Prometheus refuses blocks even when failing open"
    assert block.unknown
    assert block.reason.startswith("Prometheus query error (bad_data): ")


@pytest.mark.integration
async def test_a_stopped_prometheus_is_unreachable_and_blocks_unless_failing_open(
    prometheus: PrometheusServer, client: PrometheusClient
) -> None:
    assert isinstance(await client.query("up"), Answer)
    stop(prometheus)
    found = await client.query("up")
    assert found == Unreachable(url=prometheus.url, reason="connection refused")
    closed = prometheus_block(gate(prometheus.url), CRITICAL, found)
    assert closed is not None
    assert closed.reason == "Prometheus unreachable: connection refused (fail closed)"
    assert prometheus_block(gate(prometheus.url, failOpen=True), CRITICAL, found) is None


@pytest.mark.integration
async def test_https_is_trusted_only_with_the_ca_file(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path)
    with start_prometheus(tls=ca) as server:
        assert server.url.startswith("https://")
        async with PrometheusClient(
            url=server.url, timeout=timedelta(seconds=5), ca_file=server.ca_file
        ) as trusted:
            assert isinstance(await trusted.query("vector(1)"), Answer)
        async with PrometheusClient(url=server.url, timeout=timedelta(seconds=5)) as untrusted:
            found = await untrusted.query("vector(1)")
    assert isinstance(found, Unreachable)
    assert found.reason.startswith("TLS certificate not trusted")


@pytest.mark.integration
def test_promtool_accepts_the_harness_rules(prometheus: PrometheusServer) -> None:
    promtool = prometheus_binaries() / "promtool"
    done = subprocess.run(
        [str(promtool), "check", "config", str(prometheus.directory / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr
