"""Per-node holds: the annotation `brupop.bottlerocket.aws/hold` on a Node keeps it out of new update
cycles without removing its opt-in label (so its agent keeps running and reporting). A node already in a
cycle finishes it. Any value holds the node and is shown as the reason, e.g.
`kubectl annotate node ip-10-0-1-7 brupop.bottlerocket.aws/hold="kernel debugging, ticket 4711"`, except
`false` (any case), which is the same as no annotation, so tools that can only set values can release.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from brupop.models.constants import HOLD_ANNOTATION

NO_REASON: Final = "no reason given"


def hold_reason(annotations: Mapping[str, str]) -> str | None:
    """Why the node is held, or None when it is not."""
    value = annotations.get(HOLD_ANNOTATION)
    if value is None or value.strip().lower() == "false":
        return None
    return value.strip() or NO_REASON
