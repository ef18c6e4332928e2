"""Bottlerocket versions: semver strings, validated with the semver.org pattern the CRD also carries."""

from typing import Annotated, Final

from brupop.models.wire import Pattern

_IDENT = r"(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
SEMVER_PATTERN: Final = (
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    rf"(?:-({_IDENT}(?:\.{_IDENT})*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)

Version = Annotated[str, Pattern(SEMVER_PATTERN)]
"""A semver string such as `1.20.3` (no leading `v`)."""
