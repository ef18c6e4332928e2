"""The verifier: what post-update verification needs from the caches, and the verdicts it gives from them.

The decisions are `brupop.policy.checkpoints`' (the snapshot before a cordon, the verdict after an
update); this module asks the caches for what they need and hands them what the caches hold, so a pass
never waits for I/O:
- the Pod and workload caches (`brupop.controller.workloads`) run while some policy verifies workloads
  (the default of `verification`), so a node arriving at its cordon finds them listed;
- a policy's health query is asked (`brupop.controller.queries`) only while one of its nodes is being
  verified, and only an outcome asked since the node came back counts: an answer from before its reboot
  says nothing about the node now.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from brupop.controller.queries import PrometheusQueries, Query
from brupop.controller.workloads import ClusterWorkloads
from brupop.models.health import NodeHealth, Readiness, WorkloadRef
from brupop.models.shadow import BottlerocketShadow
from brupop.models.verifying import VerificationRecord
from brupop.policy.checkpoints import FailUpdate, Finish, Hold, after_update, step_start
from brupop.policy.gates import Block
from brupop.policy.pools import Pool

OWNER = "verification"


class Verifier:
    def __init__(self, *, queries: PrometheusQueries, workloads: ClusterWorkloads) -> None:
        self._queries = queries
        self._workloads = workloads

    def need(self, pools: Mapping[str, Pool], verifying: Mapping[str, Sequence[str]]) -> None:
        """Declare this pass's needs. `verifying`: pool -> its nodes at the checkpoint after their update."""
        verified = [pool.verification for pool in pools.values() if pool.verification is not None]
        watched = any(verification.workloads for verification in verified)
        self._workloads.need(OWNER, pods=watched, workloads=watched)
        self._queries.want(
            OWNER,
            (
                Query.of(pool.verification.prometheus)
                for name, pool in pools.items()
                if pool.verification is not None
                and pool.verification.prometheus is not None
                and verifying.get(name)
            ),
        )

    def snapshot(self, node: str) -> dict[WorkloadRef, Readiness] | None:
        """The readiness of the workloads with pods on `node` now (None: not known yet)."""
        return self._workloads.snapshot(node)

    def after_update(
        self,
        pool: Pool,
        shadow: BottlerocketShadow,
        record: VerificationRecord | None,
        *,
        node: NodeHealth | None,
        gates: Sequence[Block],
        now: datetime,
    ) -> Hold | Finish | FailUpdate:
        """The verdict on a node at the checkpoint after its update. `gates`: its pool's gate blocks now."""
        verification = pool.verification
        health = None
        if verification is not None and verification.prometheus is not None:
            query = Query.of(verification.prometheus)
            health = self._queries.outcome(query, since=step_start(shadow, now))
        workloads = self._workloads.readiness() if verification is not None and verification.workloads else {}
        return after_update(
            verification, shadow, record, node=node, workloads=workloads, health=health, gates=gates, now=now
        )
