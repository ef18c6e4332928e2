"""brupop programs as processes (integ/processes.py), without a cluster: each starts through the console
script from its pod's directory (so `ps` names the pod), a SIGKILL is an exit the harness asked for, and
an exit on its own is kept as unexpected."""

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from integ.clocks import faketime_library, offset_env
from integ.kubetools import until
from integ.processes import REPO, BrupopProcess
from integ.unprivileged import command, remove, shared_directory


def unreachable_kubeconfig(directory: Path) -> Path:
    """A kubeconfig naming an API server nobody serves: an agent started with it runs, retrying."""
    kubeconfig = directory / "kubeconfig"
    kubeconfig.write_text(
        '{"current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],'
        ' "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:9"}}],'
        ' "users": [{"name": "u", "user": {"token": "t"}}]}'
    )
    return kubeconfig


async def test_an_exit_on_its_own_is_unexpected_and_logged(tmp_path: Path) -> None:
    process = BrupopProcess(
        pod="brupop-controller-x", program="controller", env={}, directory=tmp_path / "pod"
    )
    exits = []
    process.on_exit = exits.append
    await process.start()
    await process.wait()
    [exit] = process.unexpected()
    assert exits == [exit]
    assert exit.code == 2
    assert exit.describe() == "brupop-controller-x exited with code 2 on its own"
    assert "MAX_CONCURRENT_UPDATE" in process.tail()


async def test_a_sigkill_is_asked_for_and_ps_names_the_pod(tmp_path: Path) -> None:
    kubeconfig = unreachable_kubeconfig(tmp_path)
    env = {"KUBECONFIG": str(kubeconfig), "MY_NODE_NAME": "n", "APISERVER_SERVICE_PORT": "443"}
    process = BrupopProcess(pod="brupop-agent-abcde", program="agent", env=env, directory=tmp_path / "pod")
    await process.start()
    try:
        await until(lambda: process.running, what="the agent to run")
        ps = await asyncio.create_subprocess_exec(
            "ps", "-ww", "-o", "args=", "-p", str(process.pid), stdout=asyncio.subprocess.PIPE
        )
        out, _ = await ps.communicate()
        assert f"{tmp_path}/pod/brupop agent" in out.decode()
    finally:
        await process.kill()
    [exit] = process.exits
    assert exit.asked
    assert exit.code == -9
    assert process.unexpected() == []
    assert exit.describe() == "brupop-agent-abcde exited with signal SIGKILL"


def _alive(pid: int) -> bool:
    """Running (a zombie is not: it has exited and waits for its parent, here init)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


_REUSING_HARNESS = """
import asyncio, atexit, os, subprocess, sys
from pathlib import Path

bystander = []

def check() -> None:  # registered first: runs after _kill_leftovers
    code = bystander[0].wait(timeout=10)
    print("bystander exit", code, flush=True)

atexit.register(check)
from integ.processes import _LIVE, BrupopProcess, stop_on_sigterm  # registers _kill_leftovers

def reuse() -> None:  # registered last: runs first, after the harness's cleanup
    pid = agent[0]
    print("agent pid in _LIVE", pid in _LIVE, flush=True)
    while Path(f"/proc/{pid}").exists():  # the agent gone (reaped) ...
        with __import__("contextlib").suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))  # ... and its pid reused
    bystander.append(subprocess.Popen(["sleep", "30"]))
    print("bystander pid == agent pid", bystander[0].pid == pid, flush=True)

atexit.register(reuse)
agent = []

async def main() -> None:
    env = {"KUBECONFIG": sys.argv[2], "MY_NODE_NAME": "n", "APISERVER_SERVICE_PORT": "443"}
    process = BrupopProcess(pod="brupop-agent-left", program="agent", env=env, directory=Path(sys.argv[1]))
    await process.start()
    agent.append(process.pid)
    try:
        print(process.pid, flush=True)
        await asyncio.Event().wait()
    finally:  # the harness's own cleanup, as Agents.stop does it
        await process.terminate(grace=10)

stop_on_sigterm()
asyncio.run(main())
"""


async def test_a_sigterm_stopped_harness_kills_no_process_that_reuses_a_pid(tmp_path: Path) -> None:
    """In a PID namespace of its own (root): after SIGTERM, asyncio.run cancels every task at once, the
    `_watch_exit` tasks too, so the agent the cleanup stopped stays in `_LIVE`; its pid, reused, is
    SIGKILLed at exit."""
    kubeconfig = unreachable_kubeconfig(tmp_path)
    harness = await asyncio.create_subprocess_exec(
        "unshare",
        "-p",
        "-f",
        "--mount-proc",
        sys.executable,
        "-c",
        _REUSING_HARNESS,
        str(tmp_path / "pod"),
        str(kubeconfig),
        stdout=asyncio.subprocess.PIPE,
    )
    assert harness.stdout is not None
    await asyncio.wait_for(harness.stdout.readline(), timeout=30)
    [inner] = Path(f"/proc/{harness.pid}/task/{harness.pid}/children").read_text().split()
    os.kill(int(inner), signal.SIGTERM)  # the harness (pid 1 of the namespace), not unshare
    out, _ = await asyncio.wait_for(harness.communicate(), timeout=60)
    print(out.decode())
    assert "bystander pid == agent pid True" in out.decode()
    assert "bystander exit -9" not in out.decode()


_CLEANING_HARNESS = """
import asyncio, sys
from pathlib import Path
from integ.processes import BrupopProcess, stop_on_sigterm

async def main() -> None:
    env = {"KUBECONFIG": sys.argv[2], "MY_NODE_NAME": "n", "APISERVER_SERVICE_PORT": "443"}
    process = BrupopProcess(pod="brupop-agent-left", program="agent", env=env, directory=Path(sys.argv[1]))
    await process.start()
    try:
        print(process.pid, flush=True)
        await asyncio.Event().wait()
    finally:  # the harness's own cleanup, as Agents.stop does it
        try:
            print("stopped in time", await process.terminate(grace=10), flush=True)
        except BaseException as err:
            print("cleanup failed", repr(err), flush=True)
            raise

stop_on_sigterm()
asyncio.run(main())
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_a_harness_stopped_by_sigterm_cleans_up_as_on_ctrl_c(tmp_path: Path, sig: int) -> None:
    """Each program runs in a session of its own (as in its pod), so a signal to the harness does not reach
    it: a campaign or a test run stopped with SIGTERM used to leave its agents, controllers and apiservers
    running, loading the machine for whatever ran next. Now SIGTERM stops the harness as Ctrl-C does: its
    cleanup stops its programs, within their grace."""
    kubeconfig = unreachable_kubeconfig(tmp_path)
    harness = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CLEANING_HARNESS,
        str(tmp_path / "pod"),
        str(kubeconfig),
        stdout=asyncio.subprocess.PIPE,
    )
    assert harness.stdout is not None
    agent = int(await asyncio.wait_for(harness.stdout.readline(), timeout=30))
    try:
        harness.send_signal(sig)
        out, _ = await asyncio.wait_for(harness.communicate(), timeout=60)
        assert "stopped in time True" in out.decode(), out.decode()
        await until(lambda: not _alive(agent), within=10, what="the harness's agent to be gone")
    finally:
        with contextlib.suppress(ProcessLookupError):  # the test leaves nothing behind, whatever it found
            os.kill(agent, signal.SIGKILL)


CLOCKS = "import time; print(time.time(), time.clock_gettime(time.CLOCK_MONOTONIC))"


def test_a_program_with_its_clock_off_sees_its_own_wall_clock_and_the_machines_monotonic() -> None:
    """Chaos runs set programs' wall clocks off the machine's (integ/clocks.py): a program started as the
    image's user, as the agents are, reads the offset on its wall clock and none on its monotonic one."""
    shared = shared_directory("brupop-test-clocks-")
    try:
        library = Path(shutil.copy(faketime_library(), shared / "libfaketime.so.1"))
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), **offset_env(-90.0, library)}
        before = (time.time(), time.monotonic())
        done = subprocess.run(
            command(uid=65532, gid=65532, groups=[], program=["-c", CLOCKS]),
            env=env,
            cwd=shared,
            capture_output=True,
            text=True,
            check=True,
        )
        after = (time.time(), time.monotonic())
    finally:
        remove(shared)
    wall, monotonic = map(float, done.stdout.split())
    assert before[0] - 90 <= wall <= after[0] - 90
    assert before[1] <= monotonic <= after[1]
