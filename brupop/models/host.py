"""The Bottlerocket host update API's wire format (`GET /updates/status`, `GET /os`), as the host really
sends it: snake_case keys (the published OpenAPI file is wrong there), versions as semver strings,
PascalCase states, lowercase command types, every key present with `null` for absent values.

Parsing is tolerant where the host may legitimately vary (null fields, a `deactivate` as the last command,
negative exit statuses for signals, unknown extra keys) and strict where the agent relies on a value, so a
malformed answer fails with a message naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

from brupop.models.timestamp import Timestamp
from brupop.models.version import Version
from brupop.models.wire import Extra, Wire


class UpdateState(StrEnum):
    IDLE = "Idle"
    AVAILABLE = "Available"
    STAGED = "Staged"
    READY = "Ready"


class CommandType(StrEnum):
    REFRESH = "refresh"
    PREPARE = "prepare"
    ACTIVATE = "activate"
    DEACTIVATE = "deactivate"


class CommandStatus(StrEnum):
    SUCCESS = "Success"
    FAILED = "Failed"
    UNKNOWN = "Unknown"


class _HostWire(Wire):
    __slots__ = ()
    EXTRA: ClassVar[Extra] = "ignore"


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateImage(_HostWire):
    arch: str
    version: Version
    variant: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Partition(_HostWire):
    image: UpdateImage | None = None
    next_to_boot: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Command(_HostWire):
    cmd_type: CommandType
    cmd_status: CommandStatus
    timestamp: Timestamp  # when the command finished
    exit_status: int | None = None
    stderr: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateStatus(_HostWire):
    update_state: UpdateState
    available_updates: list[Version] = field(default_factory=list)
    chosen_update: UpdateImage | None = None
    active_partition: Partition | None = None
    staging_partition: Partition | None = None
    most_recent_command: Command | None = None

    @property
    def staged_version(self) -> str | None:
        """The version written to the staging partition, if any."""
        staged = self.staging_partition
        return staged.image.version if staged is not None and staged.image is not None else None

    @property
    def chosen_version(self) -> str | None:
        return self.chosen_update.version if self.chosen_update is not None else None


@dataclass(frozen=True, slots=True, kw_only=True)
class OsInfo(_HostWire):
    """`GET /os`: os-release data; brupop needs only `version_id`."""

    version_id: Version
    pretty_name: str | None = None
    variant_id: str | None = None
    build_id: str | None = None
    arch: str | None = None
