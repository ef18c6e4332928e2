"""The simulator against the host API reference: routes, codes, messages, the lock, the state table,
waves and version-lock, reboots and faults, all over a real Unix socket."""

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from brupop.models.host import CommandStatus, CommandType, UpdateState, UpdateStatus
from integ.hostsim.fleet import Fleet
from integ.hostsim.host import STATUS_LOCKED, SimulatedHost, Timings

SCALE = 0.002  # a 20 s prepare takes 40 ms
OLD, NEW = "1.20.3", "1.21.0"


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    fleet = Fleet(tmp_path, time_scale=SCALE, timings=Timings(reboot=10))
    fleet.repository.offer(NEW, variant="aws-k8s-1.29", arch="x86_64")
    fleet.repository.offer(OLD, variant="aws-k8s-1.29", arch="x86_64")
    yield fleet
    await fleet.stop()


def client(fleet: Fleet, name: str = "h") -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(uds=str(fleet.socket(name))), base_url="http://localhost"
    )


async def settle(http: httpx.AsyncClient) -> httpx.Response:
    """Wait for the background command to finish, the way clients do: until the status is not 423."""
    for _ in range(500):
        answer = await http.get("/updates/status")
        if answer.status_code != 423:
            return answer
        await asyncio.sleep(0.005)
    raise AssertionError("the lock was never released")


async def run(http: httpx.AsyncClient, action: str) -> UpdateStatus:
    answer = await http.post(f"/actions/{action}")
    assert answer.status_code == 204, answer.text
    assert answer.content == b""
    return UpdateStatus.from_json((await settle(http)).content)


async def test_status_is_absent_until_the_first_command(fleet: Fleet) -> None:
    await fleet.add("h", version=OLD)
    async with client(fleet) as http:
        answer = await http.get("/updates/status")
        assert (answer.status_code, answer.text) == (
            404,
            "Update status is uninitialized, refresh-updates to initialize it",
        )
        assert answer.headers["content-type"].startswith("text/plain")


async def test_a_rejected_first_command_still_initializes_the_status(fleet: Fleet) -> None:
    await fleet.add("h", version=OLD)
    async with client(fleet) as http:
        answer = await http.post("/actions/activate-update")
        assert (answer.status_code, answer.text) == (
            409,
            "Update action not allowed according to update state",
        )
        status = UpdateStatus.from_json((await http.get("/updates/status")).content)
        assert status.update_state is UpdateState.IDLE
        assert status.most_recent_command is None
        assert status.active_partition is not None
        assert status.active_partition.image is not None
        assert status.active_partition.image.version == OLD


async def test_the_whole_cycle_follows_the_state_table(fleet: Fleet) -> None:
    host = await fleet.add("h", version=OLD)
    async with client(fleet) as http:
        refreshed = await run(http, "refresh-updates")
        assert refreshed.update_state is UpdateState.AVAILABLE
        assert refreshed.available_updates == [NEW, OLD]
        assert refreshed.chosen_version == NEW
        command = refreshed.most_recent_command
        assert command is not None
        assert (command.cmd_type, command.cmd_status, command.exit_status, command.stderr) == (
            CommandType.REFRESH,
            CommandStatus.SUCCESS,
            0,
            "",
        )
        staged = await run(http, "prepare-update")
        assert (staged.update_state, staged.staged_version) == (UpdateState.STAGED, NEW)
        assert staged.staging_partition is not None
        assert not staged.staging_partition.next_to_boot
        restaged = await run(http, "prepare-update")  # prepare is allowed from Staged too
        assert restaged.update_state is UpdateState.STAGED
        ready = await run(http, "activate-update")
        assert ready.update_state is UpdateState.READY
        assert ready.staging_partition is not None
        assert ready.staging_partition.next_to_boot
        assert ready.active_partition is not None
        assert not ready.active_partition.next_to_boot
        still_ready = await run(http, "refresh-updates")  # refresh leaves Staged/Ready alone
        assert still_ready.update_state is UpdateState.READY
        back = await run(http, "deactivate-update")
        assert back.update_state is UpdateState.STAGED
        assert back.most_recent_command is not None
        assert back.most_recent_command.cmd_type is CommandType.DEACTIVATE
        assert (await run(http, "activate-update")).update_state is UpdateState.READY
        assert (await http.post("/actions/reboot")).status_code == 204
    await asyncio.wait_for(_back(host), 5)
    async with client(fleet) as http:
        assert json.loads((await http.get("/os")).content)["version_id"] == NEW
        assert (await http.get("/updates/status")).status_code == 404  # wiped on boot
    assert host.boots == 1


async def _back(host: SimulatedHost) -> None:
    await asyncio.sleep(0)
    while not host.up.is_set() or host.boots == 0:
        await host.up.wait()
        await asyncio.sleep(0.001)


@pytest.mark.parametrize(
    ("state_actions", "action", "code"),
    [
        ([], "prepare-update", 409),  # Idle
        (["refresh-updates"], "activate-update", 409),  # Available
        (["refresh-updates"], "deactivate-update", 409),
        (["refresh-updates", "prepare-update"], "deactivate-update", 409),  # Staged
        (["refresh-updates", "prepare-update", "activate-update"], "activate-update", 409),  # Ready
        (["refresh-updates", "prepare-update", "activate-update"], "prepare-update", 409),
    ],
)
async def test_disallowed_pairs_get_409(
    fleet: Fleet, state_actions: list[str], action: str, code: int
) -> None:
    await fleet.add("h", version=OLD)
    async with client(fleet) as http:
        for step in state_actions:
            await run(http, step)
        before = (await http.get("/updates/status")).content
        assert (await http.post(f"/actions/{action}")).status_code == code
        if state_actions:
            assert (await http.get("/updates/status")).content == before


async def test_the_lock_makes_everything_423_while_a_command_runs(fleet: Fleet) -> None:
    host = await fleet.add("h", version=OLD)
    host.faults.slow_prepare = 100  # 0.2 s at this scale
    async with client(fleet) as http:
        await run(http, "refresh-updates")
        assert (await http.post("/actions/prepare-update")).status_code == 204
        locked = await http.get("/updates/status")
        assert (locked.status_code, locked.text) == (423, host_locked_text())
        for action in ("refresh-updates", "prepare-update", "activate-update", "deactivate-update"):
            answer = await http.post(f"/actions/{action}")
            assert (answer.status_code, answer.text) == (423, "Update lock held")  # lock before state
        assert (await http.get("/os")).status_code == 200  # /os takes no lock
        finished = UpdateStatus.from_json((await settle(http)).content)
        assert finished.update_state is UpdateState.STAGED


def host_locked_text() -> str:
    return STATUS_LOCKED


@pytest.mark.parametrize("command", ["refresh", "prepare", "activate", "deactivate"])
async def test_background_failures_are_reported_and_keep_the_state(fleet: Fleet, command: str) -> None:
    host = await fleet.add("h", version=OLD)
    steps = {
        "refresh": [],
        "prepare": ["refresh-updates"],
        "activate": ["refresh-updates", "prepare-update"],
        "deactivate": ["refresh-updates", "prepare-update", "activate-update"],
    }[command]
    async with client(fleet) as http:
        for step in steps:
            await run(http, step)
        current = await http.get("/updates/status")
        before = UpdateStatus.from_json(current.content).update_state if steps else UpdateState.IDLE
        host.faults.failing[CommandType(command)] = (-9, "updog: killed")
        action = {
            "refresh": "refresh-updates",
            "prepare": "prepare-update",
            "activate": "activate-update",
            "deactivate": "deactivate-update",
        }[command]
        after = await run(http, action)
        assert after.most_recent_command is not None
        assert (after.most_recent_command.cmd_status, after.most_recent_command.exit_status) == (
            CommandStatus.FAILED,
            -9,
        )
        assert after.most_recent_command.stderr == "updog: killed"
        expected = UpdateState.IDLE if command == "refresh" else before
        assert after.update_state is expected


async def test_the_chosen_update_vanishing_gives_404(fleet: Fleet) -> None:
    host = await fleet.add("h", version=OLD)
    async with client(fleet) as http:
        await run(http, "refresh-updates")
        host.faults.chosen_vanishes = True
        answer = await http.post("/actions/prepare-update")
        assert (answer.status_code, answer.text) == (404, "Previously chosen Update no longer exists")


async def test_reboot_faults(fleet: Fleet) -> None:
    host = await fleet.add("h", version=OLD)
    host.faults.reboot_error = "inhibited"
    async with client(fleet) as http:
        answer = await http.post("/actions/reboot")
        assert answer.status_code == 500
        assert answer.text == "Failed to reboot, exit code: 1, stderr: inhibited"


async def test_rollback_and_a_host_that_never_returns(fleet: Fleet) -> None:
    rolled = await fleet.add("r", version=OLD)
    lost = await fleet.add("l", version=OLD)
    rolled.faults.rolls_back = True
    lost.faults.never_returns = True
    for name in ("r", "l"):
        async with client(fleet, name) as http:
            for step in ("refresh-updates", "prepare-update", "activate-update"):
                await run(http, step)
            assert (await http.post("/actions/reboot")).status_code == 204
    await asyncio.wait_for(_back(rolled), 5)
    assert rolled.version == OLD
    async with client(fleet, "r") as http:
        assert json.loads((await http.get("/os")).content)["version_id"] == OLD
    assert not fleet.socket("l").exists()
    async with client(fleet, "l") as http:
        with pytest.raises(httpx.TransportError):
            await http.get("/os")


async def test_routes_methods_and_os_prefix(fleet: Fleet) -> None:
    await fleet.add("h", version=OLD)
    async with client(fleet) as http:
        assert (await http.get("/nope")).status_code == 404
        assert (await http.get("/actions/reboot")).status_code == 405
        assert (await http.post("/os")).status_code == 405
        assert json.loads((await http.get("/os?prefix=version")).content) == {"version_id": OLD}
        full = json.loads((await http.get("/os")).content)
        assert set(full) == {"pretty_name", "variant_id", "version_id", "build_id", "arch"}
        # apiclient sends Content-Type: application/json on every request, GET included.
        assert (
            await http.post("/actions/refresh-updates", headers={"Content-Type": "application/json"})
        ).status_code == 204


async def test_version_lock_and_downgrades(fleet: Fleet) -> None:
    pinned = await fleet.add("p", version=NEW, version_lock="v1.20.3")
    async with client(fleet, "p") as http:
        assert (await run(http, "refresh-updates")).chosen_version == OLD  # a pinned downgrade
    same = await fleet.add("s", version=OLD, version_lock="1.20.3")
    async with client(fleet, "s") as http:
        assert (await run(http, "refresh-updates")).update_state is UpdateState.IDLE  # already there
    fleet.repository.offer("1.22.0", variant="aws-k8s-1.29", arch="x86_64", max_version="1.21.5")
    pulled = await fleet.add("x", version="1.22.0")
    async with client(fleet, "x") as http:
        assert (await run(http, "refresh-updates")).chosen_version is None  # 1.22.0 is above its own max
    other_variant = await fleet.add("v", version=OLD, variant="aws-ecs-2")
    async with client(fleet, "v") as http:
        status = await run(http, "refresh-updates")
        assert (status.available_updates, status.update_state) == ([], UpdateState.IDLE)
    del pinned, same, pulled, other_variant


async def test_waves_follow_the_seed(fleet: Fleet) -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    fleet.repository.withdraw(NEW)
    fleet.repository.offer(
        NEW,
        variant="aws-k8s-1.29",
        arch="x86_64",
        waves=((0, start), (1024, start + timedelta(hours=10)), (2047, start + timedelta(hours=20))),
    )
    now = [start + timedelta(hours=5)]
    early = await fleet.add("e", version=OLD, seed=100, ignore_waves=False, clock=lambda: now[0])
    late = await fleet.add("l", version=OLD, seed=1500, ignore_waves=False, clock=lambda: now[0])
    eager = await fleet.add("g", version=OLD, seed=1500, ignore_waves=True, clock=lambda: now[0])
    expectations = {"e": NEW, "l": None, "g": NEW}
    for name, chosen in expectations.items():
        async with client(fleet, name) as http:
            assert (await run(http, "refresh-updates")).chosen_version == chosen, name
    now[0] = start + timedelta(hours=20)  # the last wave has started: everyone may update
    async with client(fleet, "l") as http:
        assert (await run(http, "refresh-updates")).chosen_version == NEW
    del early, late, eager


def test_curl_drives_a_host_with_the_reference_json(tmp_path: Path) -> None:
    socket = tmp_path / "api.sock"
    process = subprocess.Popen(
        [
            ".venv/bin/python",
            "-m",
            "integ.hostsim",
            "--socket",
            str(socket),
            "--version",
            OLD,
            "--offer",
            NEW,
            "--time-scale",
            "0.001",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        process.stdout.readline()  # "host: <socket>" once it listens

        def curl(method: str, path: str) -> str:
            return subprocess.run(
                [
                    "curl",
                    "-sS",
                    "--unix-socket",
                    str(socket),
                    "-X",
                    method,
                    f"http://localhost{path}",
                    "-w",
                    "\n%{http_code}",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout

        def settled() -> dict[str, object]:
            for _ in range(1000):
                body, code = curl("GET", "/updates/status").rsplit("\n", 1)
                if code == "200":
                    return json.loads(body)
            raise AssertionError("never settled")

        assert curl("POST", "/actions/refresh-updates").endswith("204")
        status = settled()
        assert list(status) == [
            "update_state",
            "available_updates",
            "chosen_update",
            "active_partition",
            "staging_partition",
            "most_recent_command",
        ]
        assert status["update_state"] == "Available"
        assert status["chosen_update"] == {"arch": "x86_64", "version": NEW, "variant": "aws-k8s-1.29"}
        assert curl("POST", "/actions/prepare-update").endswith("204")
        assert settled()["update_state"] == "Staged"
        assert curl("POST", "/actions/activate-update").endswith("204")
        ready = settled()
        assert ready["update_state"] == "Ready"
        assert ready["most_recent_command"]["cmd_type"] == "activate"  # type: ignore[index]
        assert ready["most_recent_command"]["cmd_status"] == "Success"  # type: ignore[index]
        assert curl("POST", "/actions/reboot").endswith("204")
    finally:
        process.terminate()
        process.wait(timeout=5)
