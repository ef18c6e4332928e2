"""Names shared by every program and the manifests, kept identical to the Rust brupop's so that existing
clusters, dashboards and runbooks keep working."""

from typing import Final

API_GROUP: Final = "brupop.bottlerocket.aws"
KIND: Final = "BottlerocketShadow"
PLURAL: Final = "bottlerocketshadows"
SINGULAR: Final = "bottlerocketshadow"
SHORT_NAME: Final = "brs"
CRD_NAME: Final = f"{PLURAL}.{API_GROUP}"
API_VERSION_V1: Final = "brupop.bottlerocket.aws/v1"
API_VERSION_V2: Final = "brupop.bottlerocket.aws/v2"

NAMESPACE: Final = "brupop-bottlerocket-aws"

UPDATER_INTERFACE_LABEL: Final = "bottlerocket.aws/updater-interface-version"
UPDATER_INTERFACE_VERSION: Final = "2.0.0"
COMPONENT_LABEL: Final = "brupop.bottlerocket.aws/component"
AGENT_COMPONENT: Final = "agent"
APISERVER_COMPONENT: Final = "apiserver"
CONTROLLER_COMPONENT: Final = "brupop-controller"
EXCLUDE_FROM_LB_LABEL: Final = "node.kubernetes.io/exclude-from-external-load-balancers"
IN_CYCLE_LABEL: Final = f"{API_GROUP}/in-update-cycle"
"""On a Node from before its update starts until it is settled and uncordoned (value `true`); the agent
DaemonSet selects it too, so a node that leaves brupop mid-cycle keeps its agent until the cycle is over."""

APISERVER_SERVICE_NAME: Final = "brupop-apiserver"
APISERVER_SERVICE_PORT: Final = 443
APISERVER_CERTIFICATE: Final = "brupop-apiserver-certificate"
CONVERSION_WEBHOOK_PATH: Final = "/crdconvert"
TOKEN_AUDIENCE: Final = "brupop-apiserver"

HOST_API_SOCKET_GROUP: Final = 274
"""The group of Bottlerocket's `/run/api.sock` (its API server runs with `--socket-gid 274`; mode 0660):
the agent needs it as a supplementary group."""

SHADOW_NAME_PREFIX: Final = "brs-"


def shadow_name(node_name: str) -> str:
    """The BottlerocketShadow that tracks `node_name` (one per node, in the operator's namespace)."""
    return f"{SHADOW_NAME_PREFIX}{node_name}"


# The UpdatePolicy resource (cluster-scoped; see brupop/models/policy.py).
POLICY_KIND: Final = "UpdatePolicy"
POLICY_PLURAL: Final = "updatepolicies"
POLICY_SINGULAR: Final = "updatepolicy"
POLICY_SHORT_NAME: Final = "brup"
POLICY_VERSION: Final = "v1alpha1"
POLICY_CRD_NAME: Final = f"{POLICY_PLURAL}.{API_GROUP}"
API_VERSION_POLICY: Final = "brupop.bottlerocket.aws/v1alpha1"

BRUPOP_PREFIX: Final = f"{API_GROUP}/"
"""Labels and annotations under this prefix are brupop's own; policies may not ask to set them."""
HOLD_ANNOTATION: Final = f"{API_GROUP}/hold"
"""On a Node: keep it out of new update cycles (the value is the reason shown; `false` means not held)."""
RESUMED_AT_ANNOTATION: Final = f"{API_GROUP}/resumed-at"
"""On an UpdatePolicy: an RFC 3339 time; a failure-budget halt that began at or before it is cleared."""
DURING_UPDATE_ANNOTATION: Final = f"{API_GROUP}/during-update"
"""On a Node: what brupop added for the length of the node's cycle (JSON), so it removes only that."""

# What operators and the controller tell each other through annotations (issue 18).
WAITING_ANNOTATION: Final = f"{API_GROUP}/waiting"
"""On a shadow, written by the controller: why the node waits, when only the controller can know (a health
gate's verdict), as JSON (`brupop.models.progress.Waiting`)."""
HISTORY_ANNOTATION: Final = f"{API_GROUP}/history"
"""On a shadow, written by the controller: the node's last update cycles, as JSON
(`brupop.models.progress.History`)."""
CYCLE_ANNOTATION: Final = f"{API_GROUP}/cycle"
"""On a shadow, written by the controller for the length of a node's update cycle: where and when it began,
as JSON (`brupop.models.progress.CycleStart`), so the cycle's end can go into the history."""
RETRY_ANNOTATION: Final = f"{API_GROUP}/retry"
"""On a shadow, written by people (`kubectl brupop retry`): the failure time (the status's
`state_transition_failure_timestamp`, exactly) whose crash back-off is waived; a later failure backs off."""
PAUSED_BY_ANNOTATION: Final = f"{API_GROUP}/paused-by"
"""On an UpdatePolicy: who paused it with `kubectl brupop pause` (all), so `resume` (all) unpauses exactly
those, and leaves policies paused on purpose paused."""
PAUSE_ALL_POLICY: Final = "brupop-pause-all"
"""The UpdatePolicy `kubectl brupop pause` creates for the nodes no other policy selects (deleted by
`resume`)."""
VERIFICATION_ANNOTATION: Final = f"{API_GROUP}/verification"
"""On a shadow, written by the controller: the verification of the node's update in progress (its workload
snapshot, when its soak began, how it ended), as JSON (`brupop.models.verifying.VerificationRecord`)."""
