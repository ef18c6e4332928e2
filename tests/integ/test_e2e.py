"""A whole simulated fleet updated end to end (see integ/e2e.py for what is real and what is checked)."""

from pathlib import Path

import pytest

from brupop.kube.client import KubeClient
from integ.cluster import ClusterState
from integ.e2e import Options, clean, run_happy_path


@pytest.mark.integration
async def test_happy_path_six_nodes_two_at_a_time(
    cluster: ClusterState, kube: KubeClient, tmp_path: Path
) -> None:
    await clean(kube)
    report = await run_happy_path(cluster, kube, tmp_path, Options(nodes=6, concurrency=2, time_scale=0.05))
    print(report)
    assert "overhead ratio" in report
