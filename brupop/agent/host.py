"""The host's update API over its Unix socket (`/run/api.sock`), with httpx: no `apiclient` subprocess.

Commands are asynchronous on the host: a POST answers 204 at once and the work holds the update lock,
during which every read and command answers 423. `run` sends a command and waits until
`most_recent_command` shows a new entry of that type, backing off between reads, within a deadline.
A refused or missing socket is `HostUnavailableError` (the host is rebooting, or not there).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from brupop.models.host import Command, CommandType, OsInfo, UpdateStatus
from brupop.models.wire import WireError

ACTIONS = {
    CommandType.REFRESH: "/actions/refresh-updates",
    CommandType.PREPARE: "/actions/prepare-update",
    CommandType.ACTIVATE: "/actions/activate-update",
    CommandType.DEACTIVATE: "/actions/deactivate-update",
}


@dataclass(frozen=True, slots=True)
class PollPace:
    """How often to look at a background command: after `share` of the time it has taken so far, within
    `floor`..2 s. It is then never noticed more than `share` late, and a ten-minute download is read a
    few hundred times, not thousands. Each look costs the agent about 1.5 ms of CPU."""

    share: float
    floor: float

    def delay(self, started: float) -> float:
        return min(max((time.monotonic() - started) * self.share, self.floor), 2.0)


EAGER = PollPace(share=0.05, floor=0.01)
"""For update steps, where every late second delays the rollout (about 50 looks for a 1 s command)."""
RELAXED = PollPace(share=0.5, floor=0.1)
"""For the idle update check, which nobody waits for (about 8 looks for a 1 s command)."""


class HostError(Exception):
    """The host refused a request or answered something unusable; the message is the host's."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class HostUnavailableError(HostError):
    """Nothing answers on the socket (rebooting, or no host API)."""


class HostClient:
    def __init__(self, socket: Path, *, command_timeout: float = 900.0, lock_patience: float = 120.0) -> None:
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
                raise _unreachable(err) from None
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
                raise _unreachable(err) from None
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
        except httpx.TransportError:
            return  # the host went down while answering: that is a reboot
        if answer.status_code not in (200, 204):
            raise HostError(
                f"POST /actions/reboot: {answer.status_code} {answer.text}", status=answer.status_code
            )

    async def wait_until_back(self, *, went_down: float, within: float) -> str:
        """After a reboot request: wait for the API to go away (up to `went_down` seconds) and come back;
        returns the version the host booted."""
        started = time.monotonic()
        deadline = started + within
        down_by = started + went_down
        seen_down = False
        while time.monotonic() < deadline:
            try:
                version = await self.os_version()
                if seen_down or time.monotonic() > down_by:
                    return version
            except HostUnavailableError:
                seen_down = True
            await asyncio.sleep(EAGER.delay(started))
        raise HostError(f"the host did not come back within {within:g}s of the reboot")


def _unreachable(err: httpx.TransportError) -> HostUnavailableError:
    return HostUnavailableError(f"host API unreachable: {str(err) or type(err).__name__}")


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
