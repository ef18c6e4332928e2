"""Whole simulated fleets updated end to end, one scenario each (see integ/e2e.py for what is real, what is
checked continuously and what is checked at the end)."""

from pathlib import Path

import pytest

from brupop.kube.client import KubeClient
from integ.cluster import ClusterState
from integ.e2e import Options, run_scenario
from integ.scenarios import SCENARIOS
from integ.workloads import clean


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_scenario(name: str, cluster: ClusterState, kube: KubeClient, tmp_path: Path) -> None:
    """run_scenario raises InvariantBrokenError, with the timeline, on the first rule broken."""
    await clean(kube)
    report = await run_scenario(
        cluster, kube, tmp_path, Options(nodes=6, concurrency=2, time_scale=0.05), SCENARIOS[name]
    )
    print(f"{name}: {SCENARIOS[name].description}\n{report}")
