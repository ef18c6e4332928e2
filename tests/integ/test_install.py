"""The install manifest on the real API server: every object passes a server-side dry run (cert-manager's
CRDs installed first, from its Go module), `kubectl delete -f` removes what `kubectl apply -f` created, and
each component's identity may do exactly what the program calls, not the dangerous rest."""

import subprocess
from pathlib import Path

import pytest
import yaml

from brupop.deploy import AGENT_SA, APISERVER_SA, CONTROLLER_SA
from brupop.kube.client import KubeClient, Resource
from brupop.models.constants import NAMESPACE
from integ import certmanager
from integ.build import build
from integ.cluster import ClusterState
from integ.kubetools import ensure_namespace
from integ.operator import install_rbac

MANIFEST = Path(__file__).resolve().parents[2] / "manifests" / "bottlerocket-update-operator.yaml"
REVIEWS = Resource("authorization.k8s.io", "v1", "subjectaccessreviews", namespaced=False)
BRS = "brupop.bottlerocket.aws"

# (group, resource, subresource, verb, namespaced) each program calls.
CALLS = {
    AGENT_SA: [
        (BRS, "bottlerocketshadows", "", "list", True),
        (BRS, "bottlerocketshadows", "", "watch", True),
        ("", "nodes", "", "list", False),
        ("", "nodes", "", "watch", False),
    ],
    APISERVER_SA: [
        ("authentication.k8s.io", "tokenreviews", "", "create", False),
        ("", "pods", "", "list", True),
        ("", "pods", "", "watch", True),
        ("", "pods", "", "list", False),  # the drain lists a node's pods in every namespace
        ("", "pods", "eviction", "create", False),
        ("", "nodes", "", "get", False),
        ("", "nodes", "", "patch", False),
        (BRS, "bottlerocketshadows", "", "create", True),
        (BRS, "bottlerocketshadows", "", "get", True),
        (BRS, "bottlerocketshadows", "status", "patch", True),
        ("events.k8s.io", "events", "", "create", True),
    ],
    CONTROLLER_SA: [
        (BRS, "bottlerocketshadows", "", "list", True),
        (BRS, "bottlerocketshadows", "", "watch", True),
        (BRS, "bottlerocketshadows", "", "patch", True),
        (BRS, "bottlerocketshadows", "", "delete", True),
        ("", "nodes", "", "list", False),
        ("", "nodes", "", "watch", False),
        ("events.k8s.io", "events", "", "create", True),
        ("coordination.k8s.io", "leases", "", "create", True),
    ],
}
DANGEROUS = {
    AGENT_SA: [
        ("", "nodes", "", "patch", False),
        ("", "pods", "eviction", "create", False),
        (BRS, "bottlerocketshadows", "", "patch", True),
        (BRS, "bottlerocketshadows", "", "create", True),
        (BRS, "bottlerocketshadows", "status", "patch", True),
        ("authentication.k8s.io", "tokenreviews", "", "create", False),
        ("", "secrets", "", "get", True),
    ],
    APISERVER_SA: [
        ("", "nodes", "", "delete", False),
        ("", "pods", "", "delete", False),
        (BRS, "bottlerocketshadows", "", "delete", True),
        ("", "secrets", "", "list", True),
    ],
    CONTROLLER_SA: [
        ("", "pods", "eviction", "create", False),
        ("", "nodes", "", "patch", False),
        ("authentication.k8s.io", "tokenreviews", "", "create", False),
        (BRS, "bottlerocketshadows", "status", "patch", True),
        ("coordination.k8s.io", "leases", "", "create", False),  # only in its own namespace
        ("", "secrets", "", "get", True),
    ],
}


async def allowed(kube: KubeClient, account: str, call: tuple[str, str, str, str, bool]) -> bool:
    group, resource, subresource, verb, namespaced = call
    attributes = {"group": group, "resource": resource, "subresource": subresource, "verb": verb}
    if namespaced:
        attributes["namespace"] = NAMESPACE
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": f"system:serviceaccount:{NAMESPACE}:{account}",
            "groups": [
                "system:serviceaccounts",
                f"system:serviceaccounts:{NAMESPACE}",
                "system:authenticated",
            ],
            "resourceAttributes": attributes,
        },
    }
    return bool((await kube.create(REVIEWS, review))["status"].get("allowed"))


@pytest.mark.integration
async def test_rbac_matrix(kube: KubeClient) -> None:
    await ensure_namespace(kube, NAMESPACE)
    await install_rbac(kube)
    for account, calls in CALLS.items():
        for call in calls:
            assert await allowed(kube, account, call), (account, call)
    for account, calls in DANGEROUS.items():
        for call in calls:
            assert not await allowed(kube, account, call), (account, call)


def kubectl(cluster: ClusterState, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(build() / "kubectl"), "--kubeconfig", cluster.kubeconfig, *args], capture_output=True, text=True
    )


@pytest.mark.integration
async def test_the_manifest_applies_and_deletes_cleanly(cluster: ClusterState, kube: KubeClient) -> None:
    assert len(await certmanager.install(kube)) == 6
    objects = [o for o in yaml.safe_load_all(MANIFEST.read_text()) if o]
    # A fresh install: nothing of brupop's in the cluster (earlier tests created some of it through the API).
    cleared = kubectl(
        cluster, "delete", "-f", str(MANIFEST), "--ignore-not-found", "--wait=true", "--timeout=120s"
    )
    assert cleared.returncode == 0, cleared.stderr
    # Namespaced objects can only be dry-run in a namespace that exists: create it, then dry-run everything.
    await ensure_namespace(kube, NAMESPACE)
    dry = kubectl(cluster, "apply", "--dry-run=server", "-f", str(MANIFEST))
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("(server dry run)") == len(objects)

    applied = kubectl(cluster, "apply", "-f", str(MANIFEST))
    assert applied.returncode == 0, applied.stderr
    deleted = kubectl(cluster, "delete", "-f", str(MANIFEST), "--wait=true", "--timeout=120s")
    assert deleted.returncode == 0, deleted.stderr
    left = kubectl(cluster, "get", "-f", str(MANIFEST), "--ignore-not-found", "-o", "name")
    assert left.stdout.strip() == "", left.stdout
