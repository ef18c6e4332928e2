"""The local control plane, once per test session (built or taken from the cache first)."""

from collections.abc import AsyncIterator, Iterator

import pytest

from brupop.kube.client import KubeClient
from integ.build import build
from integ.cluster import ClusterState, LocalCluster, down
from integ.kubetools import admin


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterState]:
    state = LocalCluster(bins=build()).up()
    try:
        yield state
    finally:
        down()


@pytest.fixture
async def kube(cluster: ClusterState) -> AsyncIterator[KubeClient]:
    async with admin(cluster) as client:
        yield client
