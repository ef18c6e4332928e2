"""The install manifest (`manifests/bottlerocket-update-operator.yaml`) as data: one function per object,
every name and number in one place. `brupop.manifests` renders it; a unit test fails when the checked-in
file drifts from this code.

Differences from the Rust brupop's manifest, on purpose: the CRD's CA injection names a Certificate that
exists (`brupop-apiserver-certificate`); the controller runs 2 replicas behind a Lease (a namespaced Role,
not cluster-wide rights); the agent needs no `/bin/apiclient` mount (it speaks HTTP to the host socket);
the agent role is read-only, the controller cannot evict pods, and only the apiserver may create
TokenReviews (through `system:auth-delegator`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from brupop.models import constants as c
from brupop.models.crd import custom_resource_definition

Obj = dict[str, Any]

AGENT_SA = "brupop-agent-service-account"
APISERVER_SA = "brupop-apiserver-service-account"
CONTROLLER_SA = "brupop-controller-service-account"
ROOT_CA_SECRET = "brupop-root-ca-secret"
CLIENT_CERTIFICATE = "brupop-apiserver-client-certificate"
TLS_DIR = "/etc/brupop-tls-keys"
TOKEN_DIR = "/var/run/secrets/tokens"
TOKEN_FILE = "bottlerocket-agent-service-account-token"
HOST_SOCKET = "/run/api.sock"
CONTROLLER_LEASE = "brupop-controller-leader"
PRIORITY_CLASS = "brupop-controller-high-priority"


@dataclass(frozen=True, slots=True)
class Options:
    """What an installation commonly changes (see README: "Configuration")."""

    namespace: str = c.NAMESPACE
    image: str = "brupop:0.1.0"
    max_concurrent_update: str = "1"
    scheduler_cron_expression: str = "* * * * * * *"
    scheduler_timezone: str = "UTC"
    exclude_from_lb_wait_time_in_sec: str = "0"
    apiserver_internal_port: int = 8443
    apiserver_service_port: int = c.APISERVER_SERVICE_PORT
    agent_internal_port: int = 8080
    controller_metrics_port: int = 8080
    drain_timeout_seconds: int = 1800


# Shown as comments above each variable in the rendered YAML.
ENV_COMMENTS: Mapping[str, str] = {
    "MAX_CONCURRENT_UPDATE": "How many nodes may update at once: a non-negative integer, or unlimited.",
    "SCHEDULER_CRON_EXPRESSION": (
        "When updates may start: sec min hour day-of-month month day-of-week [year] (day-of-week 1-7, "
        "Sunday = 1). A window (every second of some hours) or a one-shot trigger; see README."
    ),
    "SCHEDULER_TIMEZONE": "IANA time zone the schedule is read in (default UTC).",
    "APISERVER_SERVICE_PORT": "Port of the brupop-apiserver Service that the agent calls.",
    "APISERVER_INTERNAL_PORT": "HTTPS port of the apiserver inside its pod; the Service maps its port to it.",
    "EXCLUDE_FROM_LB_WAIT_TIME_IN_SEC": (
        "Seconds between excluding a node from external load balancers and draining it (0 turns it off)."
    ),
    "DRAIN_TIMEOUT": "Seconds a drain may take before it fails, naming the pods and PDBs that blocked it.",
    "CONTROLLER_INTERNAL_PORT": "Port of the controller's metrics and health endpoints.",
    "AGENT_INTERNAL_PORT": "Port of the agent's readiness endpoint (/readyz).",
    "BRUPOP_NAMESPACE": "The namespace the program runs in (the apiserver Service is found there).",
}


def _labels(component: str) -> dict[str, str]:
    return {
        c.COMPONENT_LABEL: component,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "brupop",
        "app.kubernetes.io/part-of": "brupop",
    }


def _meta(name: str, component: str, namespace: str | None = None) -> Obj:
    meta: Obj = {"name": name, "labels": _labels(component)}
    if namespace:
        meta["namespace"] = namespace
    return meta


def _env(**values: str) -> list[Obj]:
    return [{"name": name, "value": value} for name, value in values.items()]


NODE_NAME_ENV = {"name": "MY_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
NAMESPACE_ENV = {"name": "BRUPOP_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
LOGGING_ENV = _env(LOGGING_FORMATTER="json", LOGGING_ANSI_ENABLED="false", TRACING_FILTER_DIRECTIVE="info")
LINUX_AND_ARCH = [
    {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
    {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]},
]
RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def namespace(o: Options) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": o.namespace, "labels": _labels("namespace")},
    }


def service_accounts(o: Options) -> list[Obj]:
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(name, component, o.namespace)}
        for name, component in (
            (AGENT_SA, c.AGENT_COMPONENT),
            (APISERVER_SA, c.APISERVER_COMPONENT),
            (CONTROLLER_SA, c.CONTROLLER_COMPONENT),
        )
    ]


def _rule(groups: list[str], resources: list[str], verbs: list[str]) -> Obj:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


SHADOWS = [c.PLURAL]
SHADOW_STATUS = [f"{c.PLURAL}/status"]

# What each program really calls; the RBAC matrix integration test checks both directions.
AGENT_RULES = [
    _rule([""], ["nodes"], ["get", "list", "watch"]),
    _rule([c.API_GROUP], SHADOWS + SHADOW_STATUS, ["get", "list", "watch"]),
]
APISERVER_RULES = [
    _rule([c.API_GROUP], SHADOWS, ["create", "get", "list", "watch"]),
    _rule([c.API_GROUP], SHADOW_STATUS, ["get", "patch"]),
    _rule([""], ["pods"], ["get", "list", "watch"]),
    _rule([""], ["pods/eviction"], ["create"]),
    _rule([""], ["nodes"], ["get", "list", "watch", "patch"]),
    _rule(["", "events.k8s.io"], ["events"], ["create", "patch"]),
]
CONTROLLER_RULES = [
    _rule([c.API_GROUP], SHADOWS, ["get", "list", "watch", "patch", "delete"]),
    _rule([c.API_GROUP], SHADOW_STATUS, ["get", "list", "watch"]),
    _rule([""], ["nodes"], ["get", "list", "watch"]),
    _rule(["", "events.k8s.io"], ["events"], ["create", "patch"]),
]
CONTROLLER_LEASE_RULES = [
    _rule(["coordination.k8s.io"], ["leases"], ["create"]),
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": [CONTROLLER_LEASE],
        "verbs": ["get", "update"],
    },
]


def rbac(o: Options) -> list[Obj]:
    objects: list[Obj] = []
    for role, sa, component, rules in (
        ("brupop-agent-role", AGENT_SA, c.AGENT_COMPONENT, AGENT_RULES),
        ("brupop-apiserver-role", APISERVER_SA, c.APISERVER_COMPONENT, APISERVER_RULES),
        ("brupop-controller-role", CONTROLLER_SA, c.CONTROLLER_COMPONENT, CONTROLLER_RULES),
    ):
        objects.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": _meta(role, component),
                "rules": rules,
            }
        )
        objects.append(
            _binding("ClusterRoleBinding", f"{role}-binding", "ClusterRole", role, sa, component, o)
        )
    objects.append(
        _binding(
            "ClusterRoleBinding",
            "brupop-apiserver-auth-delegator-role-binding",
            "ClusterRole",
            "system:auth-delegator",
            APISERVER_SA,
            c.APISERVER_COMPONENT,
            o,
        )
    )
    objects.append(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta("brupop-controller-leader-election", c.CONTROLLER_COMPONENT, o.namespace),
            "rules": CONTROLLER_LEASE_RULES,
        }
    )
    objects.append(
        _binding(
            "RoleBinding",
            "brupop-controller-leader-election",
            "Role",
            "brupop-controller-leader-election",
            CONTROLLER_SA,
            c.CONTROLLER_COMPONENT,
            o,
            namespaced=True,
        )
    )
    return objects


def _binding(
    kind: str,
    name: str,
    role_kind: str,
    role: str,
    sa: str,
    component: str,
    o: Options,
    *,
    namespaced: bool = False,
) -> Obj:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": _meta(name, component, o.namespace if namespaced else None),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": o.namespace}],
    }


def certificates(o: Options) -> list[Obj]:
    dns = [
        f"*.{o.namespace}.svc.cluster.local",
        f"*.{o.namespace}.svc",
        f"{c.APISERVER_SERVICE_NAME}.{o.namespace}.svc",
    ]

    def cert(name: str, spec: Obj) -> Obj:
        return {
            "apiVersion": "cert-manager.io/v1",
            "kind": "Certificate",
            "metadata": _meta(name, "certificates", o.namespace),
            "spec": spec,
        }

    def issuer(name: str, spec: Obj) -> Obj:
        return {
            "apiVersion": "cert-manager.io/v1",
            "kind": "Issuer",
            "metadata": _meta(name, "certificates", o.namespace),
            "spec": spec,
        }

    key = {"algorithm": "RSA", "encoding": "PKCS8", "size": 2048}
    leaf = {
        "dnsNames": dns,
        "privateKey": key,
        "issuerRef": {"name": "brupop-root-certificate-issuer", "kind": "Issuer"},
    }
    return [
        issuer("selfsigned-issuer", {"selfSigned": {}}),
        cert(
            "brupop-selfsigned-ca",
            {
                "isCA": True,
                "commonName": "brupop-selfsigned-ca",
                "secretName": ROOT_CA_SECRET,
                "privateKey": key,
                "issuerRef": {"name": "selfsigned-issuer", "kind": "Issuer"},
            },
        ),
        issuer("brupop-root-certificate-issuer", {"ca": {"secretName": ROOT_CA_SECRET}}),
        cert(
            c.APISERVER_CERTIFICATE,
            {
                "secretName": c.APISERVER_CERTIFICATE,
                "usages": ["server auth", "key encipherment", "digital signature"],
                **leaf,
            },
        ),
        cert(
            CLIENT_CERTIFICATE,
            {
                "secretName": CLIENT_CERTIFICATE,
                "usages": ["client auth", "key encipherment", "digital signature"],
                **leaf,
            },
        ),
    ]


def _pod_meta(component: str, *, scrape_port: int | None = None) -> Obj:
    meta: Obj = {"labels": {c.COMPONENT_LABEL: component}}
    if scrape_port:
        meta["annotations"] = {"prometheus.io/scrape": "true", "prometheus.io/port": str(scrape_port)}
    return meta


def _resources(
    *, cpu_request: str, memory_request: str, memory_limit: str, cpu_limit: str | None = None
) -> Obj:
    limits = {"memory": memory_limit}
    if cpu_limit:
        limits["cpu"] = cpu_limit
    return {"requests": {"cpu": cpu_request, "memory": memory_request}, "limits": limits}


def agent_daemonset(o: Options) -> Obj:
    selector = {c.COMPONENT_LABEL: c.AGENT_COMPONENT}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": _meta("brupop-agent", c.AGENT_COMPONENT, o.namespace),
        "spec": {
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": _pod_meta(c.AGENT_COMPONENT),
                "spec": {
                    "serviceAccountName": AGENT_SA,
                    "automountServiceAccountToken": True,
                    # Bottlerocket's /run/api.sock is root:274, mode 0660; the image's user needs the group.
                    "securityContext": {"supplementalGroups": [c.HOST_API_SOCKET_GROUP]},
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [
                                    {
                                        "matchExpressions": [
                                            *LINUX_AND_ARCH,
                                            {
                                                "key": c.UPDATER_INTERFACE_LABEL,
                                                "operator": "In",
                                                "values": [c.UPDATER_INTERFACE_VERSION],
                                            },
                                        ]
                                    }
                                ]
                            }
                        }
                    },
                    "containers": [
                        {
                            "name": "brupop",
                            "image": o.image,
                            "args": ["agent"],
                            "env": [
                                NODE_NAME_ENV,
                                NAMESPACE_ENV,
                                *_env(APISERVER_SERVICE_PORT=str(o.apiserver_service_port)),
                                *_env(EXCLUDE_FROM_LB_WAIT_TIME_IN_SEC=o.exclude_from_lb_wait_time_in_sec),
                                *_env(AGENT_INTERNAL_PORT=str(o.agent_internal_port)),
                                *LOGGING_ENV,
                            ],
                            "ports": [{"name": "health", "containerPort": o.agent_internal_port}],
                            "readinessProbe": {"httpGet": {"path": "/readyz", "port": o.agent_internal_port}},
                            "resources": _resources(
                                cpu_request="5m", memory_request="8Mi", cpu_limit="10m", memory_limit="50Mi"
                            ),
                            "securityContext": {
                                **RESTRICTED,
                                "seLinuxOptions": {
                                    "user": "system_u",
                                    "role": "system_r",
                                    "type": "super_t",
                                    "level": "s0",
                                },
                            },
                            "volumeMounts": [
                                {"name": "bottlerocket-api-socket", "mountPath": HOST_SOCKET},
                                {"name": "bottlerocket-agent-service-account-token", "mountPath": TOKEN_DIR},
                                {
                                    "name": "bottlerocket-apiserver-root-ca",
                                    "mountPath": TLS_DIR,
                                    "readOnly": True,
                                },
                            ],
                        }
                    ],
                    "volumes": [
                        {
                            "name": "bottlerocket-api-socket",
                            "hostPath": {"path": HOST_SOCKET, "type": "Socket"},
                        },
                        {
                            "name": "bottlerocket-agent-service-account-token",
                            "projected": {
                                "sources": [
                                    {
                                        "serviceAccountToken": {
                                            "path": TOKEN_FILE,
                                            "audience": c.TOKEN_AUDIENCE,
                                            "expirationSeconds": 3600,
                                        }
                                    }
                                ]
                            },
                        },
                        {
                            "name": "bottlerocket-apiserver-root-ca",
                            "secret": {"secretName": CLIENT_CERTIFICATE, "optional": False},
                        },
                    ],
                },
            },
        },
    }


def apiserver(o: Options) -> list[Obj]:
    selector = {c.COMPONENT_LABEL: c.APISERVER_COMPONENT}
    probe = {
        "httpGet": {"path": "/ping", "port": o.apiserver_internal_port, "scheme": "HTTPS"},
        "initialDelaySeconds": 5,
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(c.APISERVER_SERVICE_NAME, c.APISERVER_COMPONENT, o.namespace),
        "spec": {
            "replicas": 3,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "33%"}},
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": _pod_meta(c.APISERVER_COMPONENT, scrape_port=o.apiserver_internal_port),
                "spec": {
                    "serviceAccountName": APISERVER_SA,
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [{"matchExpressions": LINUX_AND_ARCH}]
                            }
                        },
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 1,
                                    "podAffinityTerm": {
                                        "topologyKey": "kubernetes.io/hostname",
                                        "labelSelector": {"matchLabels": selector},
                                    },
                                }
                            ]
                        },
                    },
                    "containers": [
                        {
                            "name": "brupop",
                            "image": o.image,
                            "args": ["apiserver"],
                            "env": [
                                *_env(APISERVER_INTERNAL_PORT=str(o.apiserver_internal_port)),
                                *_env(DRAIN_TIMEOUT=str(o.drain_timeout_seconds)),
                                *LOGGING_ENV,
                            ],
                            "ports": [{"name": "https", "containerPort": o.apiserver_internal_port}],
                            "livenessProbe": probe,
                            "readinessProbe": probe,
                            "resources": _resources(
                                cpu_request="10m", memory_request="40Mi", memory_limit="256Mi"
                            ),
                            "securityContext": RESTRICTED,
                            "volumeMounts": [
                                {"name": "bottlerocket-tls-keys", "mountPath": TLS_DIR, "readOnly": True}
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "bottlerocket-tls-keys", "secret": {"secretName": c.APISERVER_CERTIFICATE}}
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(c.APISERVER_SERVICE_NAME, c.APISERVER_COMPONENT, o.namespace),
        "spec": {
            "selector": selector,
            "ports": [
                {"name": "https", "port": o.apiserver_service_port, "targetPort": o.apiserver_internal_port}
            ],
        },
    }
    return [deployment, service]


def controller(o: Options) -> list[Obj]:
    selector = {c.COMPONENT_LABEL: c.CONTROLLER_COMPONENT}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta("brupop-controller-deployment", c.CONTROLLER_COMPONENT, o.namespace),
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": _pod_meta(c.CONTROLLER_COMPONENT, scrape_port=o.controller_metrics_port),
                "spec": {
                    "serviceAccountName": CONTROLLER_SA,
                    "priorityClassName": PRIORITY_CLASS,
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [{"matchExpressions": LINUX_AND_ARCH}]
                            }
                        }
                    },
                    "containers": [
                        {
                            "name": "brupop",
                            "image": o.image,
                            "args": ["controller"],
                            "env": [
                                NODE_NAME_ENV,
                                {
                                    "name": "POD_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                },
                                *_env(MAX_CONCURRENT_UPDATE=o.max_concurrent_update),
                                *_env(SCHEDULER_CRON_EXPRESSION=o.scheduler_cron_expression),
                                *_env(SCHEDULER_TIMEZONE=o.scheduler_timezone),
                                *_env(CONTROLLER_INTERNAL_PORT=str(o.controller_metrics_port)),
                                *LOGGING_ENV,
                            ],
                            "ports": [{"name": "metrics", "containerPort": o.controller_metrics_port}],
                            "livenessProbe": {
                                "httpGet": {"path": "/healthz", "port": o.controller_metrics_port}
                            },
                            "readinessProbe": {
                                "httpGet": {"path": "/readyz", "port": o.controller_metrics_port}
                            },
                            "resources": _resources(
                                cpu_request="10m", memory_request="40Mi", memory_limit="256Mi"
                            ),
                            "securityContext": RESTRICTED,
                        }
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            **_meta("brupop-controller-server", c.CONTROLLER_COMPONENT, o.namespace),
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(o.controller_metrics_port),
            },
        },
        "spec": {
            "selector": selector,
            "ports": [{"name": "main", "port": 80, "targetPort": o.controller_metrics_port}],
        },
    }
    priority = {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": _meta(PRIORITY_CLASS, c.CONTROLLER_COMPONENT),
        "value": 1000000,
        "preemptionPolicy": "Never",
        "globalDefault": False,
        "description": "The brupop controller: high, but below the system-critical classes.",
    }
    return [priority, deployment, service]


def manifest(o: Options | None = None) -> list[Mapping[str, Any]]:
    """Every object, in an order `kubectl apply` can create them in."""
    o = o or Options()
    return [
        namespace(o),
        custom_resource_definition(namespace=o.namespace, service_port=o.apiserver_service_port),
        *service_accounts(o),
        *rbac(o),
        *certificates(o),
        agent_daemonset(o),
        *apiserver(o),
        *controller(o),
    ]
