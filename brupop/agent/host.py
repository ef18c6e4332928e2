"""The host's update API over its Unix socket (`/run/api.sock`), with httpx: no `apiclient` subprocess.

Commands are asynchronous on the host: a POST answers 204 at once and the work holds the update lock,
during which every read and command answers 423. `run` sends a command and waits until
`most_recent_command` shows a new entry of that type, backing off between reads, within a deadline.

Not reaching the API is never the host's answer, so never a failed update step (`HostUnreachableError`):
a refused or missing socket is `HostUnavailableError` (the host is rebooting, or not there); a socket the
agent may not use (EACCES/EPERM: Bottlerocket's is root:274, mode 0660) or a path that is not a socket is
`HostAccessError`, a configuration error whose message says what to fix.

After a reboot is accepted the host may keep answering for a while (it stops its services first);
`wait_for_boot` tells "not down yet" from "booted" by the kernel's boot ID and by the update status,
which every boot loses (it lives on a tmpfs) and which shows the update Ready and next to boot until then.
"""

from __future__ import annotations

import asyncio
import errno
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from brupop.agent.causes import causes
from brupop.models.constants import HOST_API_SOCKET_GROUP
from brupop.models.host import Command, CommandType, OsInfo, UpdateState, UpdateStatus
from brupop.models.wire import WireError

BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
"""The kernel's ID of the current boot; a container reads the host's."""

ACTIONS = {
    CommandType.REFRESH: "/actions/refresh-updates",
    CommandType.PREPARE: "/actions/prepare-update",
    CommandType.ACTIVATE: "/actions/activate-update",
    CommandType.DEACTIVATE: "/actions/deactivate-update",
}


@dataclass(frozen=True, slots=True)
class PollPace:
    """How often to look at a background command (or a rebooting host): after `share` of the time it has
    taken so far, within `floor`..`cap`. It is then never noticed more than `share` (and `cap`) late.
    Each look costs the agent about 1.5 ms of CPU."""

    share: float
    floor: float
    cap: float

    def delay(self, started: float) -> float:
        return min(max((time.monotonic() - started) * self.share, self.floor), self.cap)


EAGER = PollPace(share=0.02, floor=0.02, cap=0.5)
"""For update steps and the reboot, where every late second delays the rollout: seen at most 2% and half
a second late (a 20 s prepare is read about 200 times, 0.3 s of CPU; a ten-minute download about 1,400
times). At 5% and up to 2 s, a node's prepare and reboot were seen up to 2.8 s late at time scale 1, where
a makespan of 1.10x the ideal leaves 5.2 s per wave for everything (issue 20)."""
RELAXED = PollPace(share=0.5, floor=0.1, cap=2.0)
"""For the idle update check, which nobody waits for (about 8 looks for a 1 s command)."""


class HostError(Exception):
    """The host refused a request or answered something unusable; the message is the host's."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class HostUnreachableError(HostError):
    """The request never reached the host's API: not an answer from the host."""


class HostUnavailableError(HostUnreachableError):
    """Nothing answers on the socket (rebooting, or no host API)."""


class HostAccessError(HostUnreachableError):
    """The agent may not use the socket: a configuration error (the message says what to fix), never a
    rebooting host."""


class HostClient:
    def __init__(
        self,
        socket: Path,
        *,
        boot_id_file: Path = BOOT_ID_FILE,
        command_timeout: float = 900.0,
        lock_patience: float = 120.0,
    ) -> None:
        self.socket = socket
        self.boot_id_file = boot_id_file
        self._http = httpx.AsyncClient(
            # Plain HTTP over a local socket: no TLS context, so no CA bundle is loaded (time and memory).
            transport=httpx.AsyncHTTPTransport(uds=str(socket), verify=False),
            base_url="http://localhost",
            headers={"Content-Type": "application/json"},
            timeout=30.0,
        )
        self.command_timeout = command_timeout
        self.lock_patience = lock_patience

    async def close(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str) -> httpx.Response:
        """One request, retrying while the update lock is held (423), within `lock_patience`."""
        deadline = time.monotonic() + self.lock_patience
        delay = 0.02
        while True:
            try:
                answer = await self._http.request(method, path)
            except httpx.TransportError as err:
                raise self._unreachable(err) from None
            if answer.status_code != 423 or time.monotonic() > deadline:
                return answer
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def os_version(self) -> str:
        answer = await self._request("GET", "/os")
        if answer.status_code != 200:
            raise HostError(f"GET /os: {answer.status_code} {answer.text}", status=answer.status_code)
        try:
            return OsInfo.from_json(answer.content).version_id
        except WireError as err:
            raise HostError(f"GET /os answered an unexpected body: {err}") from None

    async def status(self) -> UpdateStatus | None:
        """The update status; None before the first command after a boot (404)."""
        return _update_status(await self._request("GET", "/updates/status"))

    async def run(self, command: CommandType, *, pace: PollPace = EAGER) -> Command:
        """Send `command` and wait for it to finish; the returned Command says whether it succeeded."""
        before = await self.status()
        baseline = before.most_recent_command if before is not None else None
        path = ACTIONS[command]
        answer = await self._request("POST", path)
        if answer.status_code != 204:
            raise HostError(f"POST {path}: {answer.status_code} {answer.text}", status=answer.status_code)
        started = time.monotonic()
        deadline = started + self.command_timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(pace.delay(started))
            try:
                answer = await self._http.get("/updates/status")
            except httpx.TransportError as err:
                raise self._unreachable(err) from None
            if answer.status_code == 423:
                continue
            status = _update_status(answer)
            done = status.most_recent_command if status is not None else None
            if done is not None and done.cmd_type is command and done != baseline:
                return done
        raise HostError(f"{command.value} did not finish within {self.command_timeout:g}s")

    async def reboot(self) -> None:
        try:
            answer = await self._http.post("/actions/reboot")
        except httpx.ConnectError as err:
            raise self._unreachable(err) from None  # never sent
        except httpx.TransportError:
            return  # the host went down while answering: that is a reboot
        if answer.status_code not in (200, 204):
            raise HostError(
                f"POST /actions/reboot: {answer.status_code} {answer.text}", status=answer.status_code
            )

    def boot_id(self) -> str | None:
        """The current boot's ID, or None when the file cannot be read."""
        try:
            return self.boot_id_file.read_text().strip() or None
        except OSError:
            return None

    async def wait_for_boot(self, *, since: str | None, pending: str, within: float) -> str | None:
        """After the host accepted a reboot into `pending` (staged, Ready and next to boot), taken during
        boot `since`: wait until it has booted and answers, and return the version it runs; None when it
        has not within `within` seconds. Until then it is shutting down (its API may well still answer:
        the old version, the update still pending) or down."""
        started = time.monotonic()
        while time.monotonic() < started + within:
            try:
                if await self._booted(since, pending):
                    return await self.os_version()
            except HostAccessError:
                raise
            except HostError:
                pass  # down, or answering oddly while it goes down
            await asyncio.sleep(EAGER.delay(started))
        return None

    async def _booted(self, since: str | None, pending: str) -> bool:
        now = self.boot_id()
        if since is not None and now is not None:
            return now != since  # the kernel's word; a status read while services stop may look like anything
        status = await self.status()  # without a boot ID: a booted host has lost it, or holds a new one
        return not (
            status is not None
            and status.update_state is UpdateState.READY
            and status.staged_version == pending
            and status.staging_partition is not None
            and status.staging_partition.next_to_boot
        )

    def _unreachable(self, err: httpx.TransportError) -> HostUnreachableError:
        """What a failed request means: a configuration error, or a host that is not there."""
        cause = _os_error(err)
        if cause is not None and cause.errno in (errno.EACCES, errno.EPERM):
            return HostAccessError(
                f"the agent may not use the host API socket {self.socket}: {cause.strerror} "
                f"({errno.errorcode[cause.errno]}). Bottlerocket makes it root:{HOST_API_SOCKET_GROUP} mode "
                f"0660: run the agent with group {HOST_API_SOCKET_GROUP} (pod securityContext "
                f"supplementalGroups: [{HOST_API_SOCKET_GROUP}]) or as root"
            )
        if cause is not None and cause.errno in (errno.ECONNREFUSED, errno.ENOTSOCK):
            kind = _file_kind(self.socket)
            if kind not in (None, "socket"):
                return HostAccessError(
                    f"the host API socket path {self.socket} is not a socket but a {kind}: mount the "
                    "host's /run/api.sock there (hostPath of type Socket), or fix BRUPOP_HOST_SOCKET"
                )
        return HostUnavailableError(f"host API unreachable: {str(err) or type(err).__name__}")


def _os_error(err: BaseException) -> OSError | None:
    """The operating system's error under a transport error, if any."""
    return next((c for c in causes(err) if isinstance(c, OSError) and c.errno is not None), None)


def _file_kind(path: Path) -> str | None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISSOCK(mode):
        return "socket"
    return "directory" if stat.S_ISDIR(mode) else "regular file" if stat.S_ISREG(mode) else "special file"


def _update_status(answer: httpx.Response) -> UpdateStatus | None:
    """A `GET /updates/status` answer (other than 423): None for 404, else the parsed status."""
    if answer.status_code == 404:
        return None
    if answer.status_code != 200:
        raise HostError(f"GET /updates/status: {answer.status_code} {answer.text}", status=answer.status_code)
    try:
        return UpdateStatus.from_json(answer.content)
    except WireError as err:
        raise HostError(f"GET /updates/status answered an unexpected body: {err}") from None
