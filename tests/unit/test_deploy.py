from pathlib import Path
from typing import Any

import yaml

from brupop import manifests
from brupop.deploy import Options, manifest

REPO = Path(__file__).resolve().parents[2]


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: dict(obj) for obj in manifest() if obj["kind"] == kind}


def rules_of(role: str) -> list[dict[str, Any]]:
    return by_kind("ClusterRole")[role]["rules"]


def allows(role: str, resource: str, verb: str) -> bool:
    return any(resource in rule["resources"] and verb in rule["verbs"] for rule in rules_of(role))


def test_every_object_is_named_and_namespaced_where_it_should_be() -> None:
    cluster_scoped = {
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "PriorityClass",
    }
    for obj in manifest():
        assert obj["apiVersion"]
        assert obj["metadata"]["name"]
        assert ("namespace" in obj["metadata"]) is (obj["kind"] not in cluster_scoped), obj["metadata"][
            "name"
        ]


def test_the_crd_injects_the_ca_of_a_certificate_the_manifest_creates() -> None:
    crd = by_kind("CustomResourceDefinition")["bottlerocketshadows.brupop.bottlerocket.aws"]
    namespace, name = crd["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].split("/")
    assert name in by_kind("Certificate")
    assert by_kind("Certificate")[name]["metadata"]["namespace"] == namespace


def test_least_privilege() -> None:
    assert not allows("brupop-agent-role", "nodes", "patch")
    assert not allows("brupop-agent-role", "pods/eviction", "create")
    assert not any(
        verb in rule["verbs"]
        for rule in rules_of("brupop-agent-role")
        for verb in ("create", "patch", "update")
    )
    assert not allows("brupop-controller-role", "pods/eviction", "create")
    assert allows("brupop-apiserver-role", "pods/eviction", "create")
    delegators = [
        b["subjects"][0]["name"]
        for b in by_kind("ClusterRoleBinding").values()
        if b["roleRef"]["name"] == "system:auth-delegator"
    ]
    assert delegators == ["brupop-apiserver-service-account"]


def test_agent_daemonset_placement_limits_and_mounts() -> None:
    agent = by_kind("DaemonSet")["brupop-agent"]["spec"]["template"]["spec"]
    terms = agent["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    expressions = {e["key"]: e["values"] for e in terms[0]["matchExpressions"]}
    assert expressions == {
        "kubernetes.io/os": ["linux"],
        "kubernetes.io/arch": ["amd64", "arm64"],
        "bottlerocket.aws/updater-interface-version": ["2.0.0"],
    }
    container = agent["containers"][0]
    assert container["resources"]["limits"] == {"cpu": "10m", "memory": "50Mi"}
    assert container["securityContext"]["seLinuxOptions"]["type"] == "super_t"
    token = agent["volumes"][1]["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == "brupop-apiserver"


def test_options_flow_into_the_objects() -> None:
    objects = manifest(Options(namespace="ops", max_concurrent_update="3", apiserver_internal_port=9443))
    assert {obj["metadata"].get("namespace", "ops") for obj in objects} == {"ops"}
    text = yaml.safe_dump_all(objects)
    assert "value: '3'" in text
    assert "containerPort: 9443" in text


def test_rendered_file_documents_the_configuration_variables() -> None:
    text = manifests.RENDERERS["bottlerocket-update-operator.yaml"]()
    assert "# How many nodes may update at once" in text
    assert "# IANA time zone the schedule is read in" in text
    assert list(yaml.safe_load_all(text)) == [dict(obj) for obj in manifest()]
    assert manifests.stale_files(REPO / "manifests") == []


def test_the_agent_pod_may_use_the_host_socket_and_knows_its_namespace() -> None:
    pod = by_kind("DaemonSet")["brupop-agent"]["spec"]["template"]["spec"]
    # Bottlerocket's /run/api.sock is root:274, mode 0660; the image runs as uid 65532 without root.
    assert pod["securityContext"] == {"supplementalGroups": [274]}
    container = pod["containers"][0]
    assert container["securityContext"]["runAsNonRoot"] is True
    env = {e["name"]: e for e in container["env"]}
    assert env["BRUPOP_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["AGENT_INTERNAL_PORT"]["value"] == "8080"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8080}
    assert container["ports"] == [{"name": "health", "containerPort": 8080}]
