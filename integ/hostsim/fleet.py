"""Many simulated hosts in one process, each on its own socket, with one shared update repository."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from integ.hostsim.host import SimulatedHost, Timings
from integ.hostsim.repository import Repository
from integ.hostsim.server import HostServer


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

    def socket(self, name: str) -> Path:
        return self.directory / name / "api.sock"

    async def add(
        self, name: str, *, version: str, socket: Path | None = None, **options: object
    ) -> SimulatedHost:
        host = SimulatedHost(
            name,
            version=version,
            repository=self.repository,
            time_scale=self.time_scale,
            timings=Timings(**vars(self.timings)) if self.timings else None,
            **options,  # type: ignore[arg-type]
        )
        server = HostServer(host, socket or self.socket(name))
        await server.start()
        self._servers[name] = server
        return host

    def __getitem__(self, name: str) -> SimulatedHost:
        return self._servers[name].host

    def __iter__(self) -> Iterator[SimulatedHost]:
        return (server.host for server in self._servers.values())

    def __len__(self) -> int:
        return len(self._servers)

    async def stop(self) -> None:
        for server in self._servers.values():
            await server.stop()
        self._servers.clear()
