"""The simulator is as strict as a Bottlerocket host where a kinder one hid bugs: the socket's owner, group
and mode, an API that keeps answering while the host shuts down, a boot ID that changes at each boot,
faults that a test (or another process) sets while the host runs, and answers that match the reference's
examples byte for byte."""

import asyncio
import json
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from brupop.models.constants import HOST_API_SOCKET_GROUP
from integ.hostsim.control import host_state, set_faults
from integ.hostsim.fleet import Fleet
from integ.hostsim.host import SimulatedHost, Timings
from integ.kubetools import eventually

SCALE = 0.002  # host seconds -> real seconds
OLD, NEW = "1.20.3", "1.21.0"
VARIANT, ARCH = "aws-k8s-1.29", "x86_64"


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    fleet = Fleet(tmp_path / "hosts", time_scale=SCALE, timings=Timings(reboot=10, shutdown=10))
    fleet.repository.offer(NEW, variant=VARIANT, arch=ARCH)
    yield fleet
    await fleet.stop()


def client(path: Path) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(path)), base_url="http://localhost")


async def settled(http: httpx.AsyncClient) -> httpx.Response:
    async def unlocked() -> httpx.Response | None:
        answer = await http.get("/updates/status")
        return None if answer.status_code == 423 else answer

    return await eventually(unlocked, within=5, what="the update lock to be released")


async def ready_to_reboot(http: httpx.AsyncClient) -> None:
    for action in ("refresh-updates", "prepare-update", "activate-update"):
        assert (await http.post(f"/actions/{action}")).status_code == 204
        assert (await settled(http)).status_code == 200


async def down(host: SimulatedHost) -> None:
    async def is_down() -> bool:
        return not host.up.is_set()

    await eventually(is_down, within=5, what=f"{host.name} to go down")


async def booted(host: SimulatedHost, boots: int) -> None:
    async def is_back() -> bool:
        return host.up.is_set() and host.boots == boots

    await eventually(is_back, within=5, what=f"{host.name} to be back from boot {boots}")


# --- the socket, as Bottlerocket's API server makes it ------------------------------------------------


async def test_the_socket_is_owned_by_root_and_group_274_with_mode_0660(fleet: Fleet) -> None:
    await fleet.add("h", version=OLD)
    socket = os.stat(fleet.socket("h"))
    assert stat.S_ISSOCK(socket.st_mode)
    assert (socket.st_uid, socket.st_gid, stat.S_IMODE(socket.st_mode)) == (0, HOST_API_SOCKET_GROUP, 0o660)
    directory = os.stat(fleet.socket("h").parent)
    assert directory.st_mode & stat.S_IXOTH  # anyone may reach the socket; only root and 274 may connect


async def test_the_socket_is_made_again_the_same_way_after_a_reboot(fleet: Fleet) -> None:
    host = await fleet.add("h", version=OLD)
    async with client(fleet.socket("h")) as http:
        assert (await http.post("/actions/reboot")).status_code == 204
    await booted(host, 1)
    socket = os.stat(fleet.socket("h"))
    assert (socket.st_uid, socket.st_gid, stat.S_IMODE(socket.st_mode)) == (0, HOST_API_SOCKET_GROUP, 0o660)


def test_the_simulator_run_as_non_root_fails_with_one_line_saying_why(tmp_path: Path) -> None:
    tmp_path.chmod(0o777)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "integ.unprivileged",
            "--uid",
            "65532",
            "--gid",
            "65532",
            "-m",
            "integ.hostsim",
            "--socket",
            str(tmp_path / "api.sock"),
            "--version",
            OLD,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done
    assert done.stderr.count("\n") == 1, done.stderr
    assert "root" in done.stderr
    assert "274" in done.stderr
    assert not (tmp_path / "api.sock").exists()


# --- reboots: a shutdown that takes time, a boot ID per boot --------------------------------------------


async def test_the_api_keeps_answering_while_the_host_shuts_down(tmp_path: Path) -> None:
    # 1 s to go down, then down for 1 s (long enough for `down` to see it).
    fleet = Fleet(tmp_path, time_scale=SCALE, timings=Timings(reboot=500, shutdown=500))
    fleet.repository.offer(NEW, variant=VARIANT, arch=ARCH)
    host = await fleet.add("h", version=OLD)
    try:
        async with client(fleet.socket("h")) as http:
            await ready_to_reboot(http)
            assert (await http.post("/actions/reboot")).status_code == 204
            # Stopping services: still the old version, the update still Ready and next to boot.
            assert json.loads((await http.get("/os")).content)["version_id"] == OLD
            status = json.loads((await http.get("/updates/status")).content)
            assert status["update_state"] == "Ready"
            assert status["staging_partition"]["next_to_boot"] is True
            assert (await http.post("/actions/reboot")).status_code == 204  # asked again: already going
        await down(host)
        assert host.boots == 0
        async with client(fleet.socket("h")) as http:
            with pytest.raises(httpx.TransportError):
                await http.get("/os")
        await booted(host, 1)
        assert host.version == NEW
    finally:
        await fleet.stop()


async def test_each_boot_has_a_new_boot_id_in_a_file_anyone_may_read(fleet: Fleet) -> None:
    host = await fleet.add("h", version=OLD)
    path = fleet.boot_id_file("h")
    first = path.read_text().strip()
    assert str(uuid.UUID(first)) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    for boots in (1, 2):
        async with client(fleet.socket("h")) as http:
            assert (await http.post("/actions/reboot")).status_code == 204
        await booted(host, boots)
    third = path.read_text().strip()
    assert third != first
    assert host.boot_id == third


async def test_a_slow_shutdown_is_a_fault_that_outlasts_the_usual_one(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, time_scale=SCALE, timings=Timings(reboot=10, shutdown=0))  # usually at once
    host = await fleet.add("h", version=OLD)
    host.faults.slow_shutdown = 500  # 1 s
    try:
        async with client(fleet.socket("h")) as http:
            assert (await http.post("/actions/reboot")).status_code == 204
            assert (await http.get("/os")).status_code == 200
        await booted(host, 1)
    finally:
        await fleet.stop()


# --- faults on demand --------------------------------------------------------------------------------


async def test_any_route_can_answer_500(fleet: Fleet) -> None:
    host = await fleet.add("h", version=OLD)
    async with client(fleet.socket("h")) as http:
        host.faults.route_errors["/updates/status"] = "Update dispatcher failed"
        answer = await http.get("/updates/status")
        assert (answer.status_code, answer.text) == (500, "Update dispatcher failed")
        assert (await http.get("/os")).status_code == 200
        host.faults.route_errors.clear()
        assert (await http.get("/updates/status")).status_code == 404


async def test_a_connection_can_be_reset_in_the_middle_of_a_response(fleet: Fleet) -> None:
    host = await fleet.add("h", version=OLD)
    host.faults.resets.add("/os")
    async with client(fleet.socket("h")) as http:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await http.get("/os")
        host.faults.resets.clear()
        assert (await http.get("/os")).status_code == 200


def control(fleet: Fleet, method: str, path: str, body: object = None) -> tuple[int, object]:
    """Another process (curl) speaking to the fleet's control socket."""
    command = ["curl", "-sS", "--unix-socket", str(fleet.control_socket), "-X", method]
    if body is not None:
        command += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
    out = subprocess.run(
        [*command, f"http://localhost{path}", "-w", "\n%{http_code}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    text, code = out.rsplit("\n", 1)
    try:
        return int(code), json.loads(text)
    except ValueError:
        return int(code), text


async def test_faults_are_set_from_another_process_through_the_control_socket(fleet: Fleet) -> None:
    host = await fleet.add("h", version=OLD)
    code, state = await asyncio.to_thread(control, fleet, "GET", "/hosts/h")
    assert code == 200
    assert state == {
        "name": "h",
        "version": OLD,
        "up": True,
        "boots": 0,
        "boot_id": host.boot_id,
        "faults": host.faults.to_json(),
    }
    changes = {
        "rolls_back": True,
        "route_errors": {"/os": "Unable to get OS release data"},
        "failing": {"prepare": [1, "no space left on device"]},
        "slow_shutdown": 90,
    }
    code, faults = await asyncio.to_thread(control, fleet, "PATCH", "/hosts/h/faults", changes)
    assert code == 200
    assert faults == host.faults.to_json()
    assert host.faults.rolls_back
    assert host.faults.slow_shutdown == 90
    async with client(fleet.socket("h")) as http:
        assert (await http.get("/os")).status_code == 500
    code, _ = await asyncio.to_thread(control, fleet, "PATCH", "/hosts/h/faults", {"route_errors": {}})
    assert code == 200
    async with client(fleet.socket("h")) as http:
        assert (await http.get("/os")).status_code == 200


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"rolls_back": "yes"}, "rolls_back"),
        ({"no_such_fault": True}, "no_such_fault"),
        ({"failing": {"reboot": [1, "x"]}}, "reboot"),
        ({"slow_shutdown": -1}, "slow_shutdown"),
        ({"resets": "/os"}, "resets"),
        ([1, 2], "object"),
    ],
)
async def test_a_bad_fault_is_refused_and_changes_nothing(fleet: Fleet, body: object, error: str) -> None:
    host = await fleet.add("h", version=OLD)
    before = host.faults.to_json()
    code, answer = await asyncio.to_thread(control, fleet, "PATCH", "/hosts/h/faults", body)
    assert code == 400
    assert error in str(answer)
    assert host.faults.to_json() == before


async def test_an_unknown_host_or_route_on_the_control_socket_is_404(fleet: Fleet) -> None:
    await fleet.add("h", version=OLD)
    assert (await asyncio.to_thread(control, fleet, "GET", "/hosts/nope"))[0] == 404
    assert (await asyncio.to_thread(control, fleet, "GET", "/elsewhere"))[0] == 404


async def test_a_host_that_never_comes_back(fleet: Fleet) -> None:
    host = await fleet.add("h", version=OLD)
    await asyncio.to_thread(control, fleet, "PATCH", "/hosts/h/faults", {"never_returns": True})
    async with client(fleet.socket("h")) as http:
        assert (await http.post("/actions/reboot")).status_code == 204
    await down(host)
    code, state = await asyncio.to_thread(control, fleet, "GET", "/hosts/h")  # the control socket stays
    assert (code, state["up"]) == (200, False)  # type: ignore[index]
    assert not fleet.socket("h").exists()


# --- the reference's examples, byte for byte ---------------------------------------------------------

# bottlerocket-host-api.md §2 "Example after a successful refresh", sent compact by the server.
REFERENCE_STATUS = (
    '{"update_state":"Available","available_updates":["1.21.0","1.20.3","1.20.2"],'
    '"chosen_update":{"arch":"x86_64","version":"1.21.0","variant":"aws-k8s-1.29"},'
    '"active_partition":{"image":{"arch":"x86_64","version":"1.20.3","variant":"aws-k8s-1.29"},'
    '"next_to_boot":true},"staging_partition":null,'
    '"most_recent_command":{"cmd_type":"refresh","cmd_status":"Success",'
    '"timestamp":"2024-10-24T17:02:03.620424496Z","exit_status":0,"stderr":""}}'
)
# §1.4, GET /os
REFERENCE_OS = (
    '{"pretty_name":"Bottlerocket OS 1.20.3 (aws-k8s-1.29)","variant_id":"aws-k8s-1.29",'
    '"version_id":"1.20.3","build_id":"abcdef12","arch":"x86_64"}'
)


async def test_the_answers_match_the_reference_examples_byte_for_byte(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, time_scale=SCALE)
    for version in ("1.21.0", "1.20.3", "1.20.2"):
        fleet.repository.offer(version, variant=VARIANT, arch=ARCH)
    finished = datetime(2024, 10, 24, 17, 2, 3, tzinfo=UTC)
    nanos = int(finished.timestamp()) * 1_000_000_000 + 620_424_496
    await fleet.add("h", version="1.20.3", build_id="abcdef12", nanos=lambda: nanos)
    try:
        async with client(fleet.socket("h")) as http:
            assert (await http.get("/os")).content.decode() == REFERENCE_OS
            assert (await http.post("/actions/refresh-updates")).status_code == 204
            answer = await settled(http)
            assert answer.headers["content-type"] == "application/json"
            assert answer.content.decode() == REFERENCE_STATUS
    finally:
        await fleet.stop()


async def test_the_control_client_for_python_harnesses(fleet: Fleet) -> None:
    host = await fleet.add("h", version=OLD)
    faults = await set_faults(fleet.control_socket, "h", resets=["/os"], slow_prepare=100)
    assert (faults["resets"], faults["slow_prepare"]) == (["/os"], 100.0)
    assert host.faults.resets == {"/os"}
    state = await host_state(fleet.control_socket, "h")
    assert (state["version"], state["boot_id"]) == (OLD, host.boot_id)
    with pytest.raises(httpx.HTTPStatusError) as refused:
        await set_faults(fleet.control_socket, "h", never_returns="soon")
    assert "never_returns must be true or false" in refused.value.response.text
