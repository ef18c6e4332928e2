"""Many simulated hosts in one process, each on its own socket, with one shared update repository.

Host `NAME` lives in `DIR/NAME/`: its API socket `api.sock` (root:274, 0660, see `server`) and its
`boot_id` file (what the agent reads as `BRUPOP_BOOT_ID_FILE`). `DIR/control.sock` is the fleet's control
socket (see `control`), through which another process sees the hosts and sets their faults; a test in
this process may set `fleet[NAME].faults` directly.

Public interface: `socket(name)`, `boot_id_file(name)`, `control_socket`, `add`, `fleet[name]`, iteration,
`len`, `repository`, `stop`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from integ.hostsim.control import ControlServer
from integ.hostsim.host import SimulatedHost, Timings
from integ.hostsim.repository import Repository
from integ.hostsim.server import HostServer, reachable_directory, require_root


class Fleet:
    def __init__(
        self,
        directory: Path,
        *,
        repository: Repository | None = None,
        time_scale: float = 1.0,
        timings: Timings | None = None,
    ) -> None:
        self.directory = directory
        self.repository = repository or Repository()
        self.time_scale = time_scale
        self.timings = timings
        self._servers: dict[str, HostServer] = {}
        self._hosts: dict[str, SimulatedHost] = {}
        self._control = ControlServer(self._hosts, directory / "control.sock")

    @property
    def control_socket(self) -> Path:
        return self._control.path

    def socket(self, name: str) -> Path:
        return self.directory / name / "api.sock"

    def boot_id_file(self, name: str) -> Path:
        server = self._servers.get(name)
        return server.boot_id_file if server is not None else self.directory / name / "boot_id"

    async def add(
        self, name: str, *, version: str, socket: Path | None = None, **options: object
    ) -> SimulatedHost:
        """Start host `name` (at `socket`, with its boot ID beside it, when given)."""
        require_root()
        if not self._servers:
            reachable_directory(self.directory)
            await self._control.start()
        host = SimulatedHost(
            name,
            version=version,
            repository=self.repository,
            time_scale=self.time_scale,
            timings=Timings(**vars(self.timings)) if self.timings else None,
            **options,  # type: ignore[arg-type]
        )
        path = socket or self.socket(name)
        server = HostServer(host, path, boot_id_file=path.parent / "boot_id")
        await server.start()
        self._servers[name] = server
        self._hosts[name] = host
        return host

    def __getitem__(self, name: str) -> SimulatedHost:
        return self._hosts[name]

    def __iter__(self) -> Iterator[SimulatedHost]:
        return iter(list(self._hosts.values()))

    def __len__(self) -> int:
        return len(self._hosts)

    async def stop(self) -> None:
        for server in self._servers.values():
            await server.stop()
        self._servers.clear()
        self._hosts.clear()
        await self._control.stop()
