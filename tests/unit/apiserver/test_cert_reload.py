"""A renewed serving certificate is picked up live: new connections get it, a connection opened before the
renewal keeps working. A real TLS server on 127.0.0.1 with certificates from a throw-away CA."""

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from brupop.apiserver.server import reload_certificates
from integ.pki import CertificateAuthority


def issue(ca: CertificateAuthority, directory: Path, common_name: str) -> None:
    ca.issue(directory, "tls", common_name=common_name, dns=("localhost",), ips=("127.0.0.1",), server=True)


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while line := await reader.readline():
        writer.write(line)
        await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def reloading(certs: Path) -> AsyncIterator[tuple[int, asyncio.Task[None]]]:
    """An echo server on the pair in `certs`, with the reload watcher checking every 10 ms; yields the
    server's port and the watcher."""
    cert, key = certs / "tls.crt", certs / "tls.key"
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    watcher = asyncio.create_task(reload_certificates(context, cert, key, every=0.01))
    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=context)
    try:
        yield int(server.sockets[0].getsockname()[1]), watcher
    finally:
        server.close()
        watcher.cancel()


async def connect(port: int, ca_file: Path) -> tuple[str, asyncio.StreamReader, asyncio.StreamWriter]:
    """A client connection; returns the common name of the certificate the server presented."""
    client = ssl.create_default_context(cafile=str(ca_file))
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="localhost")
    peer = writer.get_extra_info("peercert")
    subject = dict(item[0] for item in peer["subject"])
    return str(subject["commonName"]), reader, writer


async def presented(port: int, ca_file: Path) -> str:
    name, _, writer = await connect(port, ca_file)
    writer.close()
    return name


async def until_presented(port: int, ca_file: Path, wanted: str) -> str:
    """The name new connections get, once it is `wanted` (bounded: the watcher checks every 10 ms)."""
    for _ in range(500):
        name = await presented(port, ca_file)
        if name == wanted:
            break
        await asyncio.sleep(0.01)
    return name


async def round_trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, text: str) -> str:
    writer.write(f"{text}\n".encode())
    await writer.drain()
    return (await reader.readline()).decode().strip()


@pytest.fixture
def tls(tmp_path: Path) -> tuple[CertificateAuthority, Path]:
    ca = CertificateAuthority.create(tmp_path)
    (tmp_path / "certs").mkdir()
    issue(ca, tmp_path / "certs", "first")
    return ca, tmp_path


async def test_a_renewed_certificate_is_served_and_open_connections_survive(
    tls: tuple[CertificateAuthority, Path],
) -> None:
    ca, root = tls
    async with reloading(root / "certs") as (port, _):
        name, reader, writer = await connect(port, root / "ca.crt")
        assert name == "first"
        issue(ca, root / "certs", "renewed")  # what cert-manager does to the mounted Secret
        assert await until_presented(port, root / "ca.crt", "renewed") == "renewed"
        assert await round_trip(reader, writer, "still here") == "still here"
        writer.close()


async def test_a_half_written_pair_is_retried_not_fatal(tls: tuple[CertificateAuthority, Path]) -> None:
    ca, root = tls
    async with reloading(root / "certs") as (port, watcher):
        (root / "certs" / "tls.crt").write_text("-----BEGIN CERTIFICATE-----\ntruncated")  # mid-rotation
        for _ in range(5):  # a few checks see the broken pair and keep the old certificate
            assert await presented(port, root / "ca.crt") == "first"
            await asyncio.sleep(0.02)
        assert not watcher.done()
        issue(ca, root / "certs", "renewed")
        assert await until_presented(port, root / "ca.crt", "renewed") == "renewed"
