"""kwok Stage objects (written for this project) that make fake nodes and pods behave like kubelets:
nodes become Ready and keep heartbeating, bound pods start Running, and deleted or evicted pods go away
a second later (kwok deletes them with a zero grace period)."""

from __future__ import annotations

from typing import Any

import yaml

_NODE_CONDITIONS = """\
conditions:
{{ range NodeConditions }}
- lastHeartbeatTime: {{ Now | Quote }}
  lastTransitionTime: {{ Now | Quote }}
  message: {{ .message | Quote }}
  reason: {{ .reason | Quote }}
  status: {{ .status | Quote }}
  type: {{ .type | Quote }}
{{ end }}
"""

_NODE_READY = (
    _NODE_CONDITIONS
    + """\
phase: Running
addresses:
- address: {{ NodeIP | Quote }}
  type: InternalIP
- address: {{ .metadata.name | Quote }}
  type: Hostname
allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
capacity: {cpu: "32", memory: 256Gi, pods: "110"}
nodeInfo:
  architecture: amd64
  operatingSystem: linux
  kubeletVersion: fake
  kubeProxyVersion: fake
  osImage: Bottlerocket OS (simulated)
  containerRuntimeVersion: fake
"""
)

_POD_RUNNING = """\
phase: Running
hostIP: {{ NodeIP | Quote }}
podIP: {{ PodIP | Quote }}
startTime: {{ Now | Quote }}
conditions:
- {type: Initialized, status: "True", lastTransitionTime: {{ Now | Quote }}}
- {type: PodScheduled, status: "True", lastTransitionTime: {{ Now | Quote }}}
- {type: ContainersReady, status: "True", lastTransitionTime: {{ Now | Quote }}}
- {type: Ready, status: "True", lastTransitionTime: {{ Now | Quote }}}
containerStatuses:
{{ range .spec.containers }}
- name: {{ .name | Quote }}
  image: {{ .image | Quote }}
  ready: true
  started: true
  restartCount: 0
  state:
    running:
      startedAt: {{ Now | Quote }}
{{ end }}
"""

_READY_STATUS = '.status.conditions.[] | select( .type == "Ready" ) | .status'


def _stage(
    name: str, kind: str, expressions: list[dict[str, Any]], next_: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Stage",
        "metadata": {"name": name},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": kind},
            "selector": {"matchExpressions": expressions},
            "next": next_,
            **extra,
        },
    }


STAGES = [
    _stage(
        "brupop-node-ready",
        "Node",
        [{"key": _READY_STATUS, "operator": "NotIn", "values": ["True"]}],
        {"statusTemplate": _NODE_READY},
    ),
    _stage(
        "brupop-node-heartbeat",
        "Node",
        [{"key": _READY_STATUS, "operator": "In", "values": ["True"]}],
        {"statusTemplate": _NODE_CONDITIONS},
        # Every 10-15 s, so that even with one heartbeat lost (a kube-apiserver restart) the next comes
        # within the node monitor's 50 s grace period: kwok (v0.8.0) sometimes never renews the Lease of a
        # node deleted and created again under the same name (as end-to-end runs sharing a cluster do),
        # and with heartbeats 60-90 s apart the node lifecycle controller found such nodes Unknown and
        # marked their pods not ready, which kwok never undoes (seen as PDB breaches nobody evicted for,
        # and as workloads that never came up).
        delay={"durationMilliseconds": 10000, "jitterDurationMilliseconds": 15000},
        immediateNextStage=True,
    ),
    _stage(
        "brupop-pod-running",
        "Pod",
        [
            {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
            {"key": ".spec.nodeName", "operator": "Exists"},
            {"key": ".status.phase", "operator": "In", "values": ["Pending"]},
        ],
        {"statusTemplate": _POD_RUNNING},
    ),
    _stage(
        "brupop-pod-delete",
        "Pod",
        [{"key": ".metadata.deletionTimestamp", "operator": "Exists"}],
        {"delete": True},
        # A kubelet takes a moment to stop containers. Without it the disruption controller may never see
        # the pod terminating, keeps it in the PDB's disruptedPods, and then counts a StatefulSet's
        # replacement (same name) as disrupted for two minutes, blocking every drain behind that PDB.
        delay={"durationMilliseconds": 1000},
    ),
]


def stages_yaml() -> str:
    return yaml.safe_dump_all(STAGES, sort_keys=False)
