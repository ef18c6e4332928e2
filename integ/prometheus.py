"""A real Prometheus for tests and scenarios (built from its Go module by `integ.build`), and a test
exporter whose series a test sets and clears.

`start_prometheus` writes a configuration that scrapes the given targets and evaluates alert rules every
second (a test waits seconds, not minutes, for an alert to fire or resolve), starts the server on a free
loopback port (HTTPS with a certificate of the given CA, when asked), and returns once `/-/ready` answers.
Alerts are rules on the exporter's `brupop_test_alert{alert="<name>"}` series: `exporter.fire(name)`
makes the alert `name` fire at the next scrape and evaluation, `exporter.clear(name)` resolves it.

Every server records its PID under `.integ/prometheus/` and is stopped on exit from the context manager;
the next start stops what a killed test run left behind, so no Prometheus outlives its tests for long.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from integ.build import prometheus_binaries
from integ.cluster import REPO, free_port
from integ.pki import CertificateAuthority

PIDS = REPO / ".integ" / "prometheus"
ALERT_METRIC = "brupop_test_alert"
INTERVAL = "1s"


class PrometheusError(RuntimeError):
    pass


class TestExporter:
    """Gauges on an HTTP endpoint (127.0.0.1, a free port) that a test sets, for Prometheus to scrape."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._gauges: dict[str, Gauge] = {}
        self._server, self._thread = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        self.address = f"127.0.0.1:{self._server.server_port}"

    def _gauge(self, metric: str, labels: Sequence[str]) -> Gauge:
        if metric not in self._gauges:
            self._gauges[metric] = Gauge(metric, f"set by tests: {metric}", labels, registry=self.registry)
        return self._gauges[metric]

    def set(self, metric: str, value: float, **labels: str) -> None:
        """Expose `metric{labels} value` (a metric keeps the label names it was first set with)."""
        gauge = self._gauge(metric, sorted(labels))
        (gauge.labels(**labels) if labels else gauge).set(value)

    def remove(self, metric: str, **labels: str) -> None:
        """Stop exposing the series (Prometheus marks it stale at the next scrape)."""
        gauge = self._gauges.get(metric)
        if gauge is not None:
            with contextlib.suppress(KeyError):
                gauge.remove(*(labels[name] for name in sorted(labels)))

    def fire(self, alert: str) -> None:
        self.set(ALERT_METRIC, 1, alert=alert)

    def clear(self, alert: str) -> None:
        self.remove(ALERT_METRIC, alert=alert)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@dataclass(frozen=True)
class TestAlert:
    """An alert rule on the exporter's `brupop_test_alert{alert=name}`."""

    __test__ = False  # not a pytest test class

    name: str
    severity: str = "critical"
    pending_for: str = "0s"

    def rule(self) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": f'{ALERT_METRIC}{{alert="{self.name}"}} > 0',
            "for": self.pending_for,
            "labels": {"severity": self.severity},
            "annotations": {"summary": f"test alert {self.name}"},
        }


@dataclass(frozen=True)
class ScrapeTarget:
    job: str
    address: str
    """host:port"""
    scheme: str = "http"
    ca_file: str | None = None


@dataclass
class PrometheusServer:
    url: str
    directory: Path
    process: subprocess.Popen[bytes]
    ca_file: str | None = None
    """The CA that signed its certificate (HTTPS only)."""
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.directory / "prometheus.log"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def config(targets: Sequence[ScrapeTarget], rule_file: Path) -> dict[str, Any]:
    scrape_configs = []
    for target in targets:
        job: dict[str, Any] = {
            "job_name": target.job,
            "scheme": target.scheme,
            "static_configs": [{"targets": [target.address]}],
        }
        if target.ca_file is not None:
            job["tls_config"] = {"ca_file": target.ca_file}
        scrape_configs.append(job)
    return {
        "global": {"scrape_interval": INTERVAL, "scrape_timeout": INTERVAL, "evaluation_interval": INTERVAL},
        "rule_files": [str(rule_file)],
        "scrape_configs": scrape_configs,
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _ours(pid: int, binary: Path) -> bool:
    """Whether `pid` still runs our prometheus binary (a PID can be reused)."""
    try:
        return Path(f"/proc/{pid}/exe").resolve() == binary.resolve()
    except OSError:
        return False


def stop_leftovers(binary: Path) -> None:
    """Stop the servers a killed test run left behind (recorded PIDs still running `binary`)."""
    for record in PIDS.glob("*") if PIDS.is_dir() else ():
        with contextlib.suppress(ValueError, OSError):
            pid = int(record.name)
            if _alive(pid) and _ours(pid, binary):
                os.killpg(pid, signal.SIGKILL)
        record.unlink(missing_ok=True)


def stop(server: PrometheusServer) -> None:
    """Stop the server (SIGTERM, SIGKILL after 10 s); stopping a stopped server does nothing."""
    process = server.process
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    (PIDS / str(process.pid)).unlink(missing_ok=True)


def _wait_ready(server: PrometheusServer, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    verify = ssl.create_default_context(cafile=str(server.ca_file)) if server.ca_file else True
    with httpx.Client(verify=verify, timeout=2) as http:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise PrometheusError(
                    f"prometheus exited with {server.process.returncode}:\n{server.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if http.get(f"{server.url}/-/ready").status_code == 200:
                    return
            time.sleep(0.1)
    raise PrometheusError(f"prometheus was not ready within {timeout:.0f}s:\n{server.log_tail()}")


@contextlib.contextmanager
def start_prometheus(
    *,
    targets: Sequence[ScrapeTarget] = (),
    alerts: Sequence[TestAlert] = (),
    tls: CertificateAuthority | None = None,
    extra_rules: Mapping[str, Any] | None = None,
    timeout: float = 60.0,
) -> Iterator[PrometheusServer]:
    """A running Prometheus scraping `targets` with `alerts` (and `extra_rules`, a rule group) loaded."""
    binary = prometheus_binaries() / "prometheus"
    stop_leftovers(binary)
    directory = Path(tempfile.mkdtemp(prefix="brupop-prometheus-"))
    groups = [{"name": "brupop-test-alerts", "rules": [alert.rule() for alert in alerts]}]
    if extra_rules:
        groups.append(dict(extra_rules))
    rule_file = directory / "rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": groups}))
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config(targets, rule_file)))
    port = free_port()
    args = [
        str(binary),
        f"--config.file={directory / 'prometheus.yml'}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    scheme, ca_file = "http", None
    if tls is not None:
        cert, key = tls.issue(
            directory, "prometheus", common_name="prometheus", ips=("127.0.0.1",), server=True
        )
        web = {"tls_server_config": {"cert_file": str(cert), "key_file": str(key)}}
        (directory / "web.yml").write_text(yaml.safe_dump(web))
        args.append(f"--web.config.file={directory / 'web.yml'}")
        scheme, ca_file = "https", str(tls.cert_file)
    with (directory / "prometheus.log").open("ab") as log:
        process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    PIDS.mkdir(parents=True, exist_ok=True)
    (PIDS / str(process.pid)).touch()
    server = PrometheusServer(
        url=f"{scheme}://127.0.0.1:{port}", directory=directory, process=process, ca_file=ca_file
    )
    try:
        _wait_ready(server, timeout=timeout)
        yield server
    finally:
        stop(server)
        shutil.rmtree(directory, ignore_errors=True)
