"""The local control plane, once per test session (built or taken from the cache first); a real Prometheus
scraping a test exporter whose alerts a test fires and clears (`BrupopTestCritical`, `BrupopTestWarning`
with severity warning); after a test that stopped a component of the control plane, a wait until the rest
of it has caught up, so that the next test does not pay for the one before."""

from collections.abc import AsyncIterator, Iterator

import pytest

from brupop.kube.client import KubeClient
from integ.build import build
from integ.cluster import ClusterState, LocalCluster, caught_up, down
from integ.kubetools import admin
from integ.processes import stop_on_sigterm
from integ.prometheus import PrometheusServer, ScrapeTarget, TestAlert, TestExporter, start_prometheus

ALERTS = (TestAlert("BrupopTestCritical"), TestAlert("BrupopTestWarning", severity="warning"))


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterState]:
    state = LocalCluster(bins=build()).up()
    try:
        yield state
    finally:
        down()


@pytest.fixture(autouse=True)
def caught_up_after_stops(request: pytest.FixtureRequest) -> Iterator[None]:
    """A restarted kube-apiserver leaves the controller manager and the scheduler backing off for up to 30 s
    (integ.cluster.caught_up); an agent DaemonSet pod not there within 30 s failed a later test in CI."""
    if "cluster" not in request.fixturenames:
        yield
        return
    state: ClusterState = request.getfixturevalue("cluster")
    stops = state.stops
    yield
    if state.stops != stops:
        caught_up(state)


@pytest.fixture
async def kube(cluster: ClusterState) -> AsyncIterator[KubeClient]:
    async with admin(cluster) as client:
        yield client


@pytest.fixture
def exporter() -> Iterator[TestExporter]:
    found = TestExporter()
    try:
        yield found
    finally:
        found.close()


@pytest.fixture
def prometheus(exporter: TestExporter) -> Iterator[PrometheusServer]:
    with start_prometheus(targets=[ScrapeTarget("brupop-test", exporter.address)], alerts=ALERTS) as server:
        yield server


def pytest_configure(config: pytest.Config) -> None:
    stop_on_sigterm()  # a run stopped with SIGTERM stops its brupop programs too
