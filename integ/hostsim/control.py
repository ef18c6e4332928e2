"""The fleet's control socket: how a test, or a harness in another process, sees each simulated host and
sets its faults while it runs (the host API itself stays exactly Bottlerocket's).

HTTP/1.1 with JSON bodies on `<fleet directory>/control.sock` (owner root, mode 0600); it stays up while
hosts reboot:

- `GET /hosts/NAME`: `{"name", "version", "up", "boots", "boot_id", "faults"}`
- `PATCH /hosts/NAME/faults` with an object of the fields to change (see `Faults`), e.g.
  `{"rolls_back": true, "route_errors": {"/updates/status": "Update dispatcher failed"},
  "failing": {"prepare": [1, "no space left"]}, "slow_shutdown": 90, "resets": ["/os"]}`: answers the
  host's faults after the change; a bad field is a 400 naming it, and changes nothing.

From a shell: `curl --unix-socket DIR/control.sock -X PATCH -d '{"never_returns": true}'
http://localhost/hosts/host-0/faults`; from Python, `host_state` and `set_faults` below.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from integ.hostsim.host import Response, SimulatedHost
from integ.hostsim.server import serve_http

if TYPE_CHECKING:
    import httpx


def _json(status: int, data: object) -> Response:
    return Response(status, json.dumps(data).encode(), "application/json")


def _state(host: SimulatedHost) -> dict[str, Any]:
    return {
        "name": host.name,
        "version": host.version,
        "up": host.up.is_set(),
        "boots": host.boots,
        "boot_id": host.boot_id,
        "faults": host.faults.to_json(),
    }


class ControlServer:
    def __init__(self, hosts: Mapping[str, SimulatedHost], path: Path) -> None:
        self.hosts = hosts
        self.path = path
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(
            lambda reader, writer: serve_http(reader, writer, self.handle), path=str(self.path)
        )
        self.path.chmod(0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self.path.unlink(missing_ok=True)

    def handle(self, method: str, target: str, body: bytes) -> Response:
        parts = target.partition("?")[0].strip("/").split("/")
        if len(parts) not in (2, 3) or parts[0] != "hosts" or parts[2:] not in ([], ["faults"]):
            return _json(404, {"error": f"no such route: {target}"})
        host = self.hosts.get(parts[1])
        if host is None:
            return _json(404, {"error": f"no host named {parts[1]!r}"})
        if parts[2:] == []:
            return _json(200, _state(host)) if method == "GET" else _json(405, {"error": "GET only"})
        if method == "GET":
            return _json(200, host.faults.to_json())
        if method != "PATCH":
            return _json(405, {"error": "GET or PATCH"})
        try:
            host.faults.update(json.loads(body))
        except ValueError as err:  # bad JSON included
            return _json(400, {"error": str(err)})
        return _json(200, host.faults.to_json())


def _client(control_socket: Path) -> httpx.AsyncClient:
    import httpx  # only the clients need it: a fleet of a thousand hosts runs without (8 MiB)

    return httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(uds=str(control_socket)), base_url="http://localhost"
    )


async def host_state(control_socket: Path, name: str) -> dict[str, Any]:
    """What the simulator knows about host `name` (version, up, boots, boot ID, faults)."""
    async with _client(control_socket) as http:
        answer = await http.get(f"/hosts/{name}")
    answer.raise_for_status()
    state: dict[str, Any] = answer.json()
    return state


async def set_faults(control_socket: Path, name: str, **changes: object) -> dict[str, Any]:
    """Change some of host `name`'s faults (the JSON form, e.g. `failing={"prepare": [1, "boom"]}`);
    returns them all. A bad value raises httpx.HTTPStatusError with the simulator's reason."""
    async with _client(control_socket) as http:
        answer = await http.patch(f"/hosts/{name}/faults", json=changes)
    answer.raise_for_status()
    faults: dict[str, Any] = answer.json()
    return faults
