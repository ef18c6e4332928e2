"""The Helm charts rendered by the real helm binary (built from its Go module): both pass `helm lint`, the
checked-in one-file manifest is their defaults, a values file renders what it says (read from the rendered
objects), and bad values are refused with the value named. No cluster needed."""

from pathlib import Path
from typing import Any

import pytest

from brupop.controller.main import LEASE_NAME
from brupop.deploy import AGENT_SA, APISERVER_SA, CONTROLLER_SA
from brupop.models.constants import CRD_NAME, NAMESPACE
from brupop.notify.events import Event
from brupop.notify.payloads import SinkKind
from brupop.notify.settings import NotifySettings
from integ.helm import (
    CRD_CHART,
    MANIFEST,
    OPERATOR_CHART,
    HelmError,
    chart_objects,
    find,
    lint,
    render,
    render_manifest,
    template,
)

pytestmark = pytest.mark.integration
Obj = dict[str, Any]
WORKLOADS = {"agent": "DaemonSet", "apiserver": "Deployment", "controller": "Deployment"}
NAMES = {
    "agent": "brupop-agent",
    "apiserver": "brupop-apiserver",
    "controller": "brupop-controller-deployment",
}
CLUSTER_SCOPED = {
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "PriorityClass",
    "UpdatePolicy",
}

# Everything an installation commonly changes, each set to something other than its default.
CUSTOM: Obj = {
    "namespace": "ops",
    "image": {
        "repository": "registry.example.com/platform/brupop",
        "tag": "0.1.0-rc1",
        "pullPolicy": "Always",
        "pullSecrets": ["regcred"],
    },
    "logging": {"formatter": "pretty", "level": "debug"},
    "podLabels": {"team": "platform"},
    "podAnnotations": {"owner": "platform@example.com"},
    "controller": {
        "maxConcurrentUpdate": "unlimited",
        "schedulerCronExpression": "0 0 3 * * Sat *",
        "schedulerTimezone": "Europe/Paris",
        "metricsPort": 9090,
        "resources": {"requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
        "tolerations": [{"key": "dedicated", "value": "ops", "effect": "NoSchedule"}],
        "nodeSelector": {"pool": "system"},
        "podLabels": {"tier": "control"},
        "service": {"annotations": {"example.com/scrape": "yes"}},
        "extraEnv": [{"name": "EXTRA_SETTING", "value": "1"}],
    },
    "apiserver": {
        "replicas": 2,
        "internalPort": 9443,
        "drainTimeoutSeconds": 600,
        "resources": {"requests": {"cpu": "50m", "memory": "80Mi"}, "limits": {"memory": "300Mi"}},
        "tolerations": [{"key": "apiserver-only", "operator": "Exists"}],
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"brupop.bottlerocket.aws/component": "apiserver"}},
            }
        ],
        "priorityClassName": "system-cluster-critical",
        "service": {"port": 8443, "annotations": {"example.com/internal": "true"}},
        "podDisruptionBudget": {"maxUnavailable": 2},
    },
    "agent": {
        "excludeFromLbWaitTimeInSec": 30,
        "updateCheckIntervalSeconds": 600,
        "logLevel": "warn",
        "resources": {
            "requests": {"cpu": "2m", "memory": "16Mi"},
            "limits": {"cpu": "20m", "memory": "48Mi"},
        },
        "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}],
        "podAnnotations": {"owner": "nodes@example.com"},
    },
    "prometheus": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    },
    "policies": [{"name": "weekends", "spec": {"nodeSelector": {}, "maxConcurrent": "10%"}}],
}


def pod_spec(objects: list[Obj], component: str) -> Obj:
    spec: Obj = find(objects, WORKLOADS[component], NAMES[component])["spec"]["template"]["spec"]
    return spec


def container(objects: list[Obj], component: str) -> Obj:
    (only,) = pod_spec(objects, component)["containers"]
    return only  # type: ignore[no-any-return]


def env(objects: list[Obj], component: str) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(objects, component)["env"]}


def test_the_agent_is_probed_for_readiness_where_it_serves_it() -> None:
    objects = chart_objects()
    agent = container(objects, "agent")
    assert agent["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert agent["ports"] == [{"name": "health", "containerPort": 8080}]
    assert env(objects, "agent")["AGENT_INTERNAL_PORT"] == "8080"
    custom = render(OPERATOR_CHART, release="brupop", values=[{"agent": {"healthPort": 9090}}])
    assert container(custom, "agent")["ports"] == [{"name": "health", "containerPort": 9090}]
    assert env(custom, "agent")["AGENT_INTERNAL_PORT"] == "9090"


def test_both_charts_pass_helm_lint() -> None:
    for chart in (CRD_CHART, OPERATOR_CHART):
        assert "0 chart(s) failed" in lint(chart)
    assert "0 chart(s) failed" in lint(OPERATOR_CHART, values=[CUSTOM])
    assert "0 chart(s) failed" in lint(CRD_CHART, values=[{"namespace": "ops", "keep": False}])


def test_the_checked_in_manifest_is_the_charts_defaults() -> None:
    assert MANIFEST.read_text() == render_manifest(), "stale: run `python -m integ.helm manifest`"


def test_the_defaults() -> None:
    objects = chart_objects()
    for obj in objects:
        assert obj["metadata"].get("namespace") == (None if obj["kind"] in CLUSTER_SCOPED else NAMESPACE)
    agent = pod_spec(objects, "agent")
    assert agent["securityContext"]["supplementalGroups"] == [274]
    assert agent["serviceAccountName"] == AGENT_SA
    assert pod_spec(objects, "apiserver")["serviceAccountName"] == APISERVER_SA
    assert pod_spec(objects, "controller")["serviceAccountName"] == CONTROLLER_SA
    for component in WORKLOADS:
        assert env(objects, component)["BRUPOP_NAMESPACE"] == {
            "fieldRef": {"fieldPath": "metadata.namespace"}
        }
        assert container(objects, component)["image"] == "ghcr.io/brupop/brupop-python:0.1.0"
    terms = agent["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    # Opted-in nodes, or nodes still in an update cycle (terms are ORed): the agent stays to finish it.
    opted_in, in_cycle = (t["matchExpressions"] for t in terms["nodeSelectorTerms"])
    linux_and_arch = {"kubernetes.io/os": ["linux"], "kubernetes.io/arch": ["amd64", "arm64"]}
    assert {e["key"]: e["values"] for e in opted_in} == {
        **linux_and_arch,
        "bottlerocket.aws/updater-interface-version": ["2.0.0"],
    }
    assert {e["key"]: e.get("values") for e in in_cycle} == {
        **linux_and_arch,
        "brupop.bottlerocket.aws/in-update-cycle": None,
    }
    assert in_cycle[-1]["operator"] == "Exists"
    assert container(objects, "agent")["resources"]["limits"] == {"cpu": "10m", "memory": "50Mi"}
    assert env(objects, "controller")["MAX_CONCURRENT_UPDATE"] == "1"
    assert env(objects, "controller")["SCHEDULER_CRON_EXPRESSION"] == "* * * * * * *"
    assert find(objects, "PodDisruptionBudget", "brupop-apiserver")["spec"]["maxUnavailable"] == 1
    kinds = {o["kind"] for o in objects}
    assert not kinds & {"ServiceMonitor", "PrometheusRule", "UpdatePolicy"}
    crd = find(objects, "CustomResourceDefinition", CRD_NAME)
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_the_controller_may_take_the_lease_it_campaigns_for() -> None:
    role = find(chart_objects(), "Role", "brupop-controller-leader-election")
    assert [r["resourceNames"] for r in role["rules"] if "resourceNames" in r] == [[LEASE_NAME]]


def test_a_values_file_renders_what_it_says() -> None:
    objects = render(OPERATOR_CHART, release="brupop", namespace="default", values=[CUSTOM])
    crd = find(render(CRD_CHART, release="brupop-crd", namespace="ops"), "CustomResourceDefinition", CRD_NAME)

    # The namespace: every namespaced object, every subject, the CRD chart's webhook and CA injection.
    for obj in objects:
        assert obj["metadata"].get("namespace") == (None if obj["kind"] in CLUSTER_SCOPED else "ops"), obj
        for subject in obj.get("subjects", []):
            if subject["kind"] == "ServiceAccount":
                assert subject["namespace"] == "ops"
    assert crd["spec"]["conversion"]["webhook"]["clientConfig"]["service"]["namespace"] == "ops"
    assert (
        crd["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == "ops/brupop-apiserver-certificate"
    )
    certificate = find(objects, "Certificate", "brupop-apiserver-certificate")
    assert "brupop-apiserver.ops.svc" in certificate["spec"]["dnsNames"]

    # The image, in all three.
    for component in WORKLOADS:
        assert container(objects, component)["image"] == "registry.example.com/platform/brupop:0.1.0-rc1"
        assert container(objects, component)["imagePullPolicy"] == "Always"
        assert pod_spec(objects, component)["imagePullSecrets"] == [{"name": "regcred"}]

    # Resources and placement, each on the component it names and only there.
    for component in WORKLOADS:
        assert container(objects, component)["resources"] == CUSTOM[component]["resources"]
        spec = pod_spec(objects, component)
        assert spec.get("tolerations") == CUSTOM[component]["tolerations"]
        assert spec.get("topologySpreadConstraints") == CUSTOM[component].get("topologySpreadConstraints")
    assert pod_spec(objects, "controller")["nodeSelector"] == {"pool": "system"}
    assert "nodeSelector" not in pod_spec(objects, "agent")
    assert pod_spec(objects, "apiserver")["priorityClassName"] == "system-cluster-critical"
    assert "priorityClassName" not in pod_spec(objects, "agent")
    assert pod_spec(objects, "controller")["priorityClassName"] == "brupop-controller-high-priority"
    anti = pod_spec(objects, "apiserver")["affinity"]["podAntiAffinity"]
    assert anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["topologyKey"] == (
        "kubernetes.io/hostname"
    )

    # Schedule, concurrency, ports and the other variables.
    controller = env(objects, "controller")
    assert controller["MAX_CONCURRENT_UPDATE"] == "unlimited"
    assert controller["SCHEDULER_CRON_EXPRESSION"] == "0 0 3 * * Sat *"
    assert controller["SCHEDULER_TIMEZONE"] == "Europe/Paris"
    assert controller["CONTROLLER_INTERNAL_PORT"] == "9090"
    assert controller["EXTRA_SETTING"] == "1"
    assert controller["TRACING_FILTER_DIRECTIVE"] == "debug"
    assert controller["LOGGING_FORMATTER"] == "pretty"
    apiserver = env(objects, "apiserver")
    assert (apiserver["APISERVER_INTERNAL_PORT"], apiserver["DRAIN_TIMEOUT"]) == ("9443", "600")
    agent = env(objects, "agent")
    assert agent["APISERVER_SERVICE_PORT"] == "8443"
    assert agent["EXCLUDE_FROM_LB_WAIT_TIME_IN_SEC"] == "30"
    assert agent["UPDATE_CHECK_INTERVAL_SECONDS"] == "600"
    assert agent["TRACING_FILTER_DIRECTIVE"] == "warn"
    assert container(objects, "apiserver")["ports"] == [{"name": "https", "containerPort": 9443}]
    service = find(objects, "Service", "brupop-apiserver")
    assert service["spec"]["ports"] == [{"name": "https", "port": 8443, "targetPort": "https"}]
    assert service["metadata"]["annotations"] == {"example.com/internal": "true"}
    assert find(objects, "Deployment", "brupop-apiserver")["spec"]["replicas"] == 2
    assert find(objects, "PodDisruptionBudget", "brupop-apiserver")["spec"]["maxUnavailable"] == 2

    # Labels and annotations on the pods (global first, the component's after) and the Services.
    controller_pod = find(objects, "Deployment", NAMES["controller"])["spec"]["template"]["metadata"]
    assert controller_pod["labels"] == {
        "brupop.bottlerocket.aws/component": "brupop-controller",
        "team": "platform",
        "tier": "control",
    }
    assert controller_pod["annotations"]["prometheus.io/port"] == "9090"
    agent_pod = find(objects, "DaemonSet", NAMES["agent"])["spec"]["template"]["metadata"]
    assert agent_pod["annotations"] == {"owner": "nodes@example.com"}
    assert find(objects, "Service", "brupop-controller-server")["metadata"]["annotations"] == {
        "example.com/scrape": "yes",
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9090",
    }

    # Monitoring and policies, when asked for.
    monitor = find(objects, "ServiceMonitor", "brupop-apiserver")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["tlsConfig"]["serverName"] == "brupop-apiserver.ops.svc"
    assert find(objects, "ServiceMonitor", "brupop-controller")["spec"]["endpoints"][0]["port"] == "main"
    rules = find(objects, "PrometheusRule", "brupop")  # what the alerts do: tests/integ/test_alerts.py
    assert (rules["metadata"]["namespace"], rules["metadata"]["labels"]["release"]) == (
        "ops",
        "kube-prometheus-stack",
    )
    assert all('namespace="ops"' in r["expr"] for r in rules["spec"]["groups"][0]["rules"])
    policy = find(objects, "UpdatePolicy", "weekends")
    assert (policy["apiVersion"], policy["spec"]) == (
        "brupop.bottlerocket.aws/v1alpha1",
        {"nodeSelector": {}, "maxConcurrent": "10%"},
    )


def test_the_deprecated_window_is_rendered_only_without_a_cron_expression() -> None:
    window = {"schedulerCronExpression": "", "updateWindowStart": "21:00:00", "updateWindowStop": "4:00:00"}
    controller = env(render(OPERATOR_CHART, release="b", values=[{"controller": window}]), "controller")
    assert (controller["UPDATE_WINDOW_START"], controller["UPDATE_WINDOW_STOP"]) == ("21:00:00", "4:00:00")
    assert "SCHEDULER_CRON_EXPRESSION" not in controller


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_concurrent_updates": "3"}, "additional properties 'max_concurrent_updates' not allowed"),
        ({"controller": {"maxConcurrentUpdate": "lots"}}, "/controller/maxConcurrentUpdate"),
        ({"controller": {"maxConcurrentUpdate": -1}}, "/controller/maxConcurrentUpdate"),
        ({"apiserver": {"internalPort": 70000}}, "/apiserver/internalPort"),
        ({"logging": {"formatter": "xml"}}, "/logging/formatter"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"controller": {"updateWindowStart": "21:00:00"}}, "controller.updateWindowStart is set alone"),
        (
            {"controller": {"updateWindowStart": "21:00:00", "updateWindowStop": "04:00:00"}},
            "would be ignored next to controller.schedulerCronExpression",
        ),
        (
            {"agent": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}}}},
            "narrow where the agent runs with agent.nodeSelector",
        ),
        ({"policies": [{"name": "p"}]}, "missing property 'spec'"),
    ],
)
def test_bad_values_are_refused_naming_the_value(values: Obj, message: str) -> None:
    with pytest.raises(HelmError, match="failed") as refused:
        template(OPERATOR_CHART, release="brupop", values=[values])
    assert message in str(refused.value)


def test_notifications_render_what_the_controller_reads(tmp_path: Path) -> None:
    values = {
        "notifications": {
            "slack": {"secretName": "brupop-notify", "secretKey": "slack-url", "events": "all"},
            "clusterName": "prod-eu",
            "templates": {"node-failed": "$node failed: ${reason} ($$0 spent)"},
        }
    }
    objects = render(OPERATOR_CHART, release="b", values=[values])
    controller = env(objects, "controller")
    assert controller["NOTIFY_SLACK_WEBHOOK_URL_FILE"] == "/etc/brupop/notify/slack/url"
    assert "NOTIFY_WEBHOOK_URL_FILE" not in controller
    (mount,) = container(objects, "controller")["volumeMounts"]
    (volume,) = pod_spec(objects, "controller")["volumes"]
    assert (mount["name"], mount["mountPath"], mount["readOnly"]) == (
        "notify-slack",
        "/etc/brupop/notify/slack",
        True,
    )
    assert volume == {
        "name": "notify-slack",
        "secret": {"secretName": "brupop-notify", "items": [{"key": "slack-url", "path": "url"}]},
    }
    # What the container gets: the kubelet reads $$ as $ in a value (and leaves $name alone), and the
    # Secret's key is the mounted file.
    secret = tmp_path / "url"
    secret.write_text("https://hooks.example.com/services/T0/B0/x\n")
    seen = {
        name: str(value).replace("$$", "$")
        for name, value in controller.items()
        if name.startswith("NOTIFY_")
    }
    settings = NotifySettings.from_env({**seen, "NOTIFY_SLACK_WEBHOOK_URL_FILE": str(secret)})
    (slack,) = settings.sinks
    assert (slack.kind, slack.url.value, slack.events) == (
        SinkKind.SLACK,
        "https://hooks.example.com/services/T0/B0/x",
        frozenset(Event),
    )
    assert settings.templates[Event.NODE_FAILED].text == "$node failed: ${reason} ($$0 spent)"
    assert (settings.cluster, settings.queue_size, settings.timeout, settings.attempts) == (
        "prod-eu",
        256,
        5.0,
        5,
    )
    defaults = env(chart_objects(), "controller")
    assert NotifySettings.from_env({k: v for k, v in defaults.items() if k.startswith("NOTIFY_")}).sinks == ()
    assert "volumes" not in pod_spec(chart_objects(), "controller")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"notifications": {"events": "rollout-started,node-exploded"}}, "/notifications/events"),
        ({"notifications": {"templates": {"node-exploded": "$node"}}}, "/notifications/templates"),
        ({"notifications": {"slack": {"secretName": "Not_A_Name"}}}, "/notifications/slack/secretName"),
        ({"notifications": {"attempts": 0}}, "/notifications/attempts"),
    ],
)
def test_bad_notification_values_are_refused_naming_the_value(values: Obj, message: str) -> None:
    with pytest.raises(HelmError, match="failed") as refused:
        template(OPERATOR_CHART, release="brupop", values=[values])
    assert message in str(refused.value)


def test_the_controller_mounts_the_files_a_prometheus_gate_names() -> None:
    """A gate's `bearerTokenFile` and `caFile` are paths in the controller's pod: the chart mounts the
    Secrets or ConfigMaps they come from, next to the notifications' own."""
    ca = {"name": "prometheus-ca", "configMap": {"name": "prometheus-ca"}}
    token = {"name": "prometheus-token", "secret": {"secretName": "brupop-prometheus"}}
    mounts = [
        {"name": "prometheus-ca", "mountPath": "/etc/prometheus-ca", "readOnly": True},
        {"name": "prometheus-token", "mountPath": "/etc/prometheus-token", "readOnly": True},
    ]
    values = {
        "controller": {"extraVolumes": [ca, token], "extraVolumeMounts": mounts},
        "notifications": {"webhook": {"secretName": "brupop-notify"}},
    }
    objects = render(OPERATOR_CHART, release="b", values=[values])
    names = [m["name"] for m in container(objects, "controller")["volumeMounts"]]
    assert names == ["notify-webhook", "prometheus-ca", "prometheus-token"]
    assert container(objects, "controller")["volumeMounts"][1:] == mounts
    assert pod_spec(objects, "controller")["volumes"][1:] == [ca, token]
    alone = render(OPERATOR_CHART, release="b", values=[{"controller": {"extraVolumes": [ca]}}])
    assert pod_spec(alone, "controller")["volumes"] == [ca]
    assert "volumeMounts" not in container(alone, "controller")
