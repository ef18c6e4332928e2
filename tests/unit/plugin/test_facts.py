from brupop.models import constants as c
from brupop.plugin.facts import controller_facts, node_facts, shadow_facts


def deployment(
    *env: dict[str, object], container: str = "brupop", env_from: bool = False
) -> dict[str, object]:
    spec: dict[str, object] = {"name": container, "env": list(env)}
    if env_from:
        spec["envFrom"] = [{"configMapRef": {"name": "x"}}]
    return {"spec": {"template": {"spec": {"containers": [spec]}}}}


def test_the_controllers_settings_are_read_from_its_container() -> None:
    facts = controller_facts(
        deployment(
            {"name": "MAX_CONCURRENT_UPDATE", "value": "3"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "SCHEDULER_TIMEZONE", "valueFrom": {"configMapKeyRef": {"name": "tz", "key": "tz"}}},
        ),
        namespace="ns",
    )
    assert facts.env == {"MAX_CONCURRENT_UPDATE": "3"}
    assert (
        facts.note
        == "the controller's SCHEDULER_TIMEZONE come from a ConfigMap or Secret, which status does not read"
    )
    assert controller_facts(deployment(env_from=True), namespace="ns").note == (
        "the controller's envFrom come from a ConfigMap or Secret, which status does not read"
    )


def test_a_missing_deployment_or_container_means_the_charts_defaults() -> None:
    missing = controller_facts(None, namespace="ns")
    assert missing.env is None
    assert missing.note is not None
    assert missing.note.startswith(
        "no Deployment brupop-controller-deployment in namespace ns (is brupop installed there?"
    )
    other = controller_facts(deployment(container="sidecar"), namespace="ns")
    assert other.env is None
    assert other.note == (
        "Deployment brupop-controller-deployment has no container brupop; assuming the chart's default settings"
    )


def test_nodes_and_shadows_are_read_defensively() -> None:
    bare = node_facts({"metadata": {"name": "n", "labels": None}, "spec": {"unschedulable": "yes"}})
    assert (bare.name, bare.labels, bare.unschedulable, bare.opted_in, bare.cordoned_by) == (
        "n",
        {},
        False,
        False,
        None,
    )
    broken = shadow_facts(
        {"metadata": {"name": "brs-x", "ownerReferences": [{"name": "node-x"}]}, "spec": {"state": "Nope"}}
    )
    assert (broken.node, broken.shadow) == ("node-x", None)
    assert broken.problem is not None
    assert broken.problem.startswith("spec.state:")
    orphan = shadow_facts({"metadata": {"name": "brs-y"}, "spec": {}, "status": 3})
    assert orphan.node == "y"
    assert c.SHADOW_NAME_PREFIX == "brs-"
