"""The agent's apiserver client follows a renewed CA (cert-manager rotates it in the mounted secret): a real
TLS server on 127.0.0.1 switches to a certificate of a new CA, and the CA file is rewritten; the client
picks the new CA up after its first TLS failure (or at its check interval), and a request already under
way on the old connection is not disturbed."""

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog

from brupop.agent.apiclient import ApiserverClient
from integ.pki import CertificateAuthority

SLOW = "/bottlerocket-node-resource/cordon-and-drain"


@dataclass
class Apiserver:
    """Answers 200 `{}` to every request and closes the connection (so each request does a handshake);
    a drain waits until `release` is set."""

    context: ssl.SSLContext
    release: asyncio.Event = field(default_factory=asyncio.Event)
    draining: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            head = await reader.readuntil(b"\r\n\r\n")
            if f"POST {SLOW} ".encode() in head:
                self.draining.set()
                await self.release.wait()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
            await writer.drain()
        writer.close()


def authority(directory: Path, name: str) -> CertificateAuthority:
    directory.mkdir()
    ca = CertificateAuthority.create(directory, name=name)
    ca.issue(directory, "tls", common_name="brupop-apiserver", ips=("127.0.0.1",), server=True)
    return ca


@contextlib.asynccontextmanager
async def serving(certs: Path) -> AsyncIterator[Apiserver]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(certs / "tls.crt"), str(certs / "tls.key"))
    apiserver = Apiserver(context)
    server = await asyncio.start_server(apiserver.handle, "127.0.0.1", 0, ssl=context)
    apiserver.port = int(server.sockets[0].getsockname()[1])
    try:
        yield apiserver
    finally:
        apiserver.release.set()
        server.close()


def rotate(apiserver: Apiserver, certs: Path, ca_file: Path) -> None:
    """What cert-manager and the kubelet do: a certificate of the new CA, and the new CA in the secret."""
    apiserver.context.load_cert_chain(str(certs / "tls.crt"), str(certs / "tls.key"))
    ca_file.write_bytes((certs / "ca.crt").read_bytes())


@pytest.fixture
def logs() -> Any:
    with structlog.testing.capture_logs() as entries:
        yield entries


@contextlib.asynccontextmanager
async def client(tmp_path: Path, port: int, ca_file: Path, **options: Any) -> AsyncIterator[ApiserverClient]:
    token = tmp_path / "token"
    token.write_text("token")
    api = ApiserverClient(
        base_url=f"https://127.0.0.1:{port}", node_name="n1", token_file=token, ca_file=ca_file, **options
    )
    try:
        yield api
    finally:
        await api.close()


async def test_a_renewed_ca_is_taken_up_after_the_first_tls_failure(
    tmp_path: Path, logs: list[MutableMapping[str, Any]]
) -> None:
    old = authority(tmp_path / "old", "ca-1")
    authority(tmp_path / "new", "ca-2")
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(old.cert_file.read_bytes())
    async with serving(tmp_path / "old") as apiserver, client(tmp_path, apiserver.port, ca_file) as api:
        await api.uncordon()
        rotate(apiserver, tmp_path / "new", ca_file)
        await api.uncordon()  # a TLS failure, the CA read again, and the retry succeeds
    assert [e["event"] for e in logs if e["event"].startswith("loaded")] == ["loaded a renewed apiserver CA"]


async def test_a_request_under_way_keeps_its_connection_while_the_ca_is_renewed(tmp_path: Path) -> None:
    authority(tmp_path / "old", "ca-1")
    authority(tmp_path / "new", "ca-2")
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes((tmp_path / "old" / "ca.crt").read_bytes())
    async with serving(tmp_path / "old") as apiserver, client(tmp_path, apiserver.port, ca_file) as api:
        drain = asyncio.create_task(api.cordon_and_drain())
        await asyncio.wait_for(apiserver.draining.wait(), 5)
        rotate(apiserver, tmp_path / "new", ca_file)
        await api.uncordon()  # on a new client with the new CA
        apiserver.release.set()
        await asyncio.wait_for(drain, 5)  # answered on the old connection


async def test_the_ca_file_is_read_again_at_the_check_interval_not_on_every_call(
    tmp_path: Path, logs: list[MutableMapping[str, Any]]
) -> None:
    old, new = authority(tmp_path / "old", "ca-1"), authority(tmp_path / "new", "ca-2")
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(old.cert_file.read_bytes())
    now = [0.0]
    async with (
        serving(tmp_path / "old") as apiserver,
        client(tmp_path, apiserver.port, ca_file, ca_check_interval=60.0, clock=lambda: now[0]) as api,
    ):
        # A bundle of both CAs, as during a rotation: nothing fails, so only the interval brings it in.
        ca_file.write_bytes(old.cert_file.read_bytes() + new.cert_file.read_bytes())
        now[0] = 59.0
        await api.uncordon()
        assert not [e for e in logs if e["event"] == "loaded a renewed apiserver CA"]
        now[0] = 60.0
        await api.uncordon()
        assert [e for e in logs if e["event"] == "loaded a renewed apiserver CA"]
        renewed = tmp_path / "new"
        apiserver.context.load_cert_chain(str(renewed / "tls.crt"), str(renewed / "tls.key"))
        await api.uncordon()  # already trusted: no failure, no reload
    assert len([e for e in logs if e["event"] == "loaded a renewed apiserver CA"]) == 1
