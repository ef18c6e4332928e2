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
