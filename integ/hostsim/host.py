"""One simulated Bottlerocket host: its running version, partitions, update state machine (reference
§1.5), the exclusive update lock held while a command runs in the background, reboots, and faults.

`handle` answers one HTTP request with the real status codes and plain-text error messages. Durations
are in host seconds, multiplied by `time_scale` (0.01 turns a 20 s download into 0.2 s).

A reboot goes as on a real host: once accepted, the API keeps answering while services stop (`shutdown`
seconds: still the old version, the update still Ready and next to boot), then the host goes down (the
server closes the socket), boots the partition marked next (or falls back, with the `rolls_back` fault),
and comes back with a new boot ID and no update status (it lived on a tmpfs).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

from brupop.models.host import (
    Command,
    CommandStatus,
    CommandType,
    Partition,
    UpdateImage,
    UpdateState,
    UpdateStatus,
)
from brupop.models.timestamp import Timestamp
from integ.hostsim.repository import Repository

LOCK_HELD = "Update lock held"
STATUS_LOCKED = (
    "Unable to obtain shared lock for reading update status: Resource temporarily unavailable (os error 11)"
)
UNINITIALIZED = "Update status is uninitialized, refresh-updates to initialize it"
NOT_ALLOWED = "Update action not allowed according to update state"
NO_CHOSEN = "Previously chosen Update no longer exists"
NO_STAGED = "No update image applied to staging partition"

_ALLOWED = {
    CommandType.REFRESH: set(UpdateState),
    CommandType.PREPARE: {UpdateState.AVAILABLE, UpdateState.STAGED},
    CommandType.ACTIVATE: {UpdateState.STAGED},
    CommandType.DEACTIVATE: {UpdateState.READY},
}
ROUTES = {
    "/actions/refresh-updates": CommandType.REFRESH,
    "/actions/prepare-update": CommandType.PREPARE,
    "/actions/activate-update": CommandType.ACTIVATE,
    "/actions/deactivate-update": CommandType.DEACTIVATE,
}


@dataclass
class Timings:
    """Host seconds each step takes."""

    refresh: float = 1.0
    prepare: float = 20.0
    activate: float = 1.0
    deactivate: float = 1.0
    shutdown: float = 5.0
    """After an accepted reboot, while services stop: the API still answers."""
    reboot: float = 30.0
    """Down: nothing answers on the socket."""


@dataclass
class Faults:
    """What goes wrong on this host; set while it runs, by a test or through the fleet's control socket
    (`update` reads the JSON form, `to_json` writes it)."""

    failing: dict[CommandType, tuple[int, str]] = field(default_factory=dict)
    """Commands that fail in the background: exit status and stderr."""
    slow_prepare: float | None = None
    """Host seconds a prepare takes instead of the usual (a 423 storm for impatient clients)."""
    chosen_vanishes: bool = False
    """The chosen update disappears before prepare: 404."""
    reboot_error: str | None = None
    """Reboot answers 500 with this text."""
    never_returns: bool = False
    rolls_back: bool = False
    """The new image fails to boot: the host comes back on the old version."""
    slow_shutdown: float | None = None
    """Host seconds the API keeps answering after accepting a reboot, instead of the usual."""
    route_errors: dict[str, str] = field(default_factory=dict)
    """Paths (any method) that answer 500 with this text."""
    resets: set[str] = field(default_factory=set)
    """Paths whose answer is cut off halfway and the connection dropped (the request still takes effect)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "failing": {command.value: list(failure) for command, failure in self.failing.items()},
            "slow_prepare": self.slow_prepare,
            "chosen_vanishes": self.chosen_vanishes,
            "reboot_error": self.reboot_error,
            "never_returns": self.never_returns,
            "rolls_back": self.rolls_back,
            "slow_shutdown": self.slow_shutdown,
            "route_errors": dict(self.route_errors),
            "resets": sorted(self.resets),
        }

    def update(self, changes: object) -> None:
        """Apply the fields given in a JSON object (others stay); a bad value raises ValueError naming the
        field, and then nothing changes."""
        if not isinstance(changes, Mapping):
            raise ValueError("faults must be a JSON object of fields to change")
        known = {f.name for f in fields(self)}
        parsed: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"{name!r} is not a fault; known: {', '.join(sorted(known))}")
            parsed[name] = _FAULT_READERS[name](name, value)
        for name, value in parsed.items():
            setattr(self, name, value)


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, not {value!r}")
    return value


def _host_seconds(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{name} must be null or a number of host seconds >= 0, not {value!r}")
    return float(value)


def _text_or_null(name: str, value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be null or a string, not {value!r}")
    return value


def _route_errors(name: str, value: object) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(f"{name} must be an object of path: error text, not {value!r}")
    return dict(value)


def _paths(name: str, value: object) -> set[str]:
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ValueError(f"{name} must be a list of paths, not {value!r}")
    return set(value)


def _failing(name: str, value: object) -> dict[CommandType, tuple[int, str]]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be an object of command: [exit status, stderr], not {value!r}")
    failing: dict[CommandType, tuple[int, str]] = {}
    for command, failure in value.items():
        try:
            kind = CommandType(command)
        except ValueError:
            raise ValueError(
                f"{name}: {command!r} is not a command; known: {', '.join(c.value for c in CommandType)}"
            ) from None
        if not (
            isinstance(failure, list)
            and len(failure) == 2
            and isinstance(failure[0], int)
            and not isinstance(failure[0], bool)
            and isinstance(failure[1], str)
        ):
            raise ValueError(f"{name}.{command} must be [exit status, stderr], not {failure!r}")
        failing[kind] = (failure[0], failure[1])
    return failing


_FAULT_READERS: dict[str, Callable[[str, object], Any]] = {
    "failing": _failing,
    "slow_prepare": _host_seconds,
    "chosen_vanishes": _flag,
    "reboot_error": _text_or_null,
    "never_returns": _flag,
    "rolls_back": _flag,
    "slow_shutdown": _host_seconds,
    "route_errors": _route_errors,
    "resets": _paths,
}


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    after: Callable[[], None] | None = None
    """Run once the response has been sent (a reboot's shutdown begins)."""
    cut: bool = False
    """Send only half of it, then drop the connection (the `resets` fault)."""


def _text(status: int, message: str) -> Response:
    return Response(status, message.encode())


class SimulatedHost:
    def __init__(
        self,
        name: str,
        *,
        version: str,
        repository: Repository,
        variant: str = "aws-k8s-1.29",
        arch: str = "x86_64",
        seed: int = 0,
        ignore_waves: bool = True,
        version_lock: str = "latest",
        build_id: str = "5a1b2c3d",
        timings: Timings | None = None,
        time_scale: float = 1.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        nanos: Callable[[], int] = time.time_ns,
    ) -> None:
        """`clock` is updog's (waves); `nanos` (Unix nanoseconds) stamps finished commands."""
        self.name = name
        self.version = version
        self.variant = variant
        self.arch = arch
        self.repository = repository
        self.seed = seed
        self.ignore_waves = ignore_waves
        self.version_lock = version_lock
        self.build_id = build_id
        self.timings = timings or Timings()
        self.time_scale = time_scale
        self.clock = clock
        self.nanos = nanos
        self.faults = Faults()
        self.boots = 0
        self.boot_id = str(uuid.uuid4())
        self.shutting_down = False
        self.on_reboot: Callable[[], None] = lambda: None
        """Called when a reboot is accepted (the server then runs the shutdown and the boot)."""
        self.up = asyncio.Event()
        self.up.set()
        self._busy: asyncio.Task[None] | None = None
        self._wipe()

    def _wipe(self) -> None:
        """The status lives on a tmpfs: gone after every boot."""
        self.status: dict[str, Any] | None = None
        self._staged: UpdateImage | None = None

    def _image(self, version: str) -> UpdateImage:
        return UpdateImage(arch=self.arch, version=version, variant=self.variant)

    def _initialize(self) -> dict[str, Any]:
        if self.status is None:
            self.status = {
                "update_state": UpdateState.IDLE,
                "available_updates": [],
                "chosen_update": None,
                "active_partition": Partition(image=self._image(self.version), next_to_boot=True),
                "staging_partition": None,
                "most_recent_command": None,
            }
        return self.status

    def update_status(self) -> UpdateStatus | None:
        return None if self.status is None else UpdateStatus(**self.status)

    @property
    def locked(self) -> bool:
        return self._busy is not None and not self._busy.done()

    @property
    def shutdown_seconds(self) -> float:
        """Real seconds the API keeps answering after it accepted a reboot."""
        shutdown = self.faults.slow_shutdown
        return (self.timings.shutdown if shutdown is None else shutdown) * self.time_scale

    def handle(self, method: str, target: str) -> Response:
        path = target.partition("?")[0]
        if path in self.faults.route_errors:
            return _text(500, self.faults.route_errors[path])
        answer = self._answer(method, target)
        return replace(answer, cut=True) if path in self.faults.resets else answer

    def _answer(self, method: str, target: str) -> Response:
        path, _, query = target.partition("?")
        if path == "/os":
            return self._os(query) if method == "GET" else _text(405, "Method Not Allowed")
        if path == "/updates/status":
            return self._read_status() if method == "GET" else _text(405, "Method Not Allowed")
        if path == "/actions/reboot":
            return self._reboot() if method == "POST" else _text(405, "Method Not Allowed")
        if path in ROUTES:
            return self._command(ROUTES[path]) if method == "POST" else _text(405, "Method Not Allowed")
        return _text(404, f"Not found: {path}")

    def _os(self, query: str) -> Response:
        data = {
            "pretty_name": f"Bottlerocket OS {self.version} ({self.variant})",
            "variant_id": self.variant,
            "version_id": self.version,
            "build_id": self.build_id,
            "arch": self.arch,
        }
        prefix = (
            dict(p.partition("=")[::2] for p in query.split("&") if p).get("prefix", "").removeprefix("os.")
        )
        if prefix:
            data = {k: v for k, v in data.items() if k.startswith(prefix)}
        return _json(data)

    def _read_status(self) -> Response:
        if self.locked:
            return _text(423, STATUS_LOCKED)
        status = self.update_status()
        if status is None:
            return _text(404, UNINITIALIZED)
        return _json(status.to_wire())

    def _command(self, command: CommandType) -> Response:
        if self.locked:
            return _text(423, LOCK_HELD)
        status = self._initialize()
        if status["update_state"] not in _ALLOWED[command]:
            return _text(409, NOT_ALLOWED)
        if command is CommandType.PREPARE and self.faults.chosen_vanishes:
            status["chosen_update"] = None
        if command is CommandType.PREPARE and status["chosen_update"] is None:
            return _text(404, NO_CHOSEN)
        if command in (CommandType.ACTIVATE, CommandType.DEACTIVATE) and status["staging_partition"] is None:
            return _text(404, NO_STAGED)
        duration = getattr(self.timings, command.value)
        if command is CommandType.PREPARE and self.faults.slow_prepare is not None:
            duration = self.faults.slow_prepare
        self._busy = asyncio.get_running_loop().create_task(self._finish(command, duration * self.time_scale))
        return Response(204)

    async def _finish(self, command: CommandType, seconds: float) -> None:
        await asyncio.sleep(seconds)
        status = self._initialize()
        failure = self.faults.failing.get(command)
        if failure is None:
            self._succeed(command, status)
        elif command is CommandType.REFRESH and status["update_state"] in (
            UpdateState.IDLE,
            UpdateState.AVAILABLE,
        ):
            status["update_state"] = UpdateState.IDLE
        exit_status, stderr = failure or (0, "")
        status["most_recent_command"] = Command(
            cmd_type=command,
            cmd_status=CommandStatus.FAILED if failure else CommandStatus.SUCCESS,
            timestamp=Timestamp.from_unix_nanos(self.nanos()),
            exit_status=exit_status,
            stderr=stderr,
        )

    def _succeed(self, command: CommandType, status: dict[str, Any]) -> None:
        state = status["update_state"]
        if command is CommandType.REFRESH:
            candidates = self.repository.applicable(
                variant=self.variant,
                arch=self.arch,
                seed=self.seed,
                ignore_waves=self.ignore_waves,
                now=self.clock(),
            )
            chosen = self.repository.choose(candidates, running=self.version, version_lock=self.version_lock)
            status["available_updates"] = [r.version for r in candidates]
            status["chosen_update"] = self._image(chosen.version) if chosen else None
            if state in (UpdateState.IDLE, UpdateState.AVAILABLE):
                status["update_state"] = UpdateState.AVAILABLE if chosen else UpdateState.IDLE
        elif command is CommandType.PREPARE:
            chosen = status["chosen_update"]
            status["staging_partition"] = Partition(image=chosen, next_to_boot=False)
            status["update_state"] = UpdateState.STAGED
        elif command is CommandType.ACTIVATE:
            status["staging_partition"] = replace(status["staging_partition"], next_to_boot=True)
            status["active_partition"] = replace(status["active_partition"], next_to_boot=False)
            status["update_state"] = UpdateState.READY
        else:
            status["staging_partition"] = replace(status["staging_partition"], next_to_boot=False)
            status["active_partition"] = replace(status["active_partition"], next_to_boot=True)
            status["update_state"] = UpdateState.STAGED

    def _reboot(self) -> Response:
        if self.faults.reboot_error is not None:
            return _text(500, f"Failed to reboot, exit code: 1, stderr: {self.faults.reboot_error}")
        if self.shutting_down:
            return Response(204)  # already on its way down
        self.shutting_down = True
        return Response(204, after=self.on_reboot)

    def go_down(self) -> None:
        """The end of the shutdown: boot whatever is marked to boot next (unless it fails to boot)."""
        self.shutting_down = False
        self.up.clear()
        if self._busy is not None:
            self._busy.cancel()
        staged = self.status["staging_partition"] if self.status else None
        if (
            staged is not None
            and staged.next_to_boot
            and staged.image is not None
            and not self.faults.rolls_back
        ):
            self.version = staged.image.version
        self._wipe()

    def come_back(self) -> None:
        self.boots += 1
        self.boot_id = str(uuid.uuid4())
        self.up.set()


def _json(data: Any) -> Response:
    return Response(200, json.dumps(data, separators=(",", ":")).encode(), "application/json")
