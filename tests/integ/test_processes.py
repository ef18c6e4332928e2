"""brupop programs as processes (integ/processes.py), without a cluster: each starts through the console
script from its pod's directory (so `ps` names the pod), a SIGKILL is an exit the harness asked for, and
an exit on its own is kept as unexpected."""

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

from integ.kubetools import until
from integ.processes import BrupopProcess


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
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        '{"current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],'
        ' "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:9"}}],'
        ' "users": [{"name": "u", "user": {"token": "t"}}]}'
    )
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


_HARNESS = """
import asyncio, sys
from pathlib import Path
from integ.processes import BrupopProcess, stop_on_sigterm

async def main() -> None:
    env = {"KUBECONFIG": sys.argv[2], "MY_NODE_NAME": "n", "APISERVER_SERVICE_PORT": "443"}
    process = BrupopProcess(pod="brupop-agent-left", program="agent", env=env, directory=Path(sys.argv[1]))
    await process.start()
    print(process.pid, flush=True)
    await asyncio.Event().wait()

stop_on_sigterm()
asyncio.run(main())
"""


async def test_a_harness_stopped_by_sigterm_leaves_no_brupop_process_behind(tmp_path: Path) -> None:
    """Each program runs in a session of its own (as in its pod), so a signal to the harness does not reach
    it: a campaign or a test run stopped with SIGTERM used to leave its agents, controllers and apiservers
    running, loading the machine for whatever ran next."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        '{"current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],'
        ' "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:9"}}],'
        ' "users": [{"name": "u", "user": {"token": "t"}}]}'
    )
    harness = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HARNESS, str(tmp_path / "pod"), str(kubeconfig), stdout=asyncio.subprocess.PIPE
    )
    assert harness.stdout is not None
    agent = int(await asyncio.wait_for(harness.stdout.readline(), timeout=30))
    try:
        assert _alive(agent)
        harness.terminate()
        assert await asyncio.wait_for(harness.wait(), timeout=30) != 0
        await until(lambda: not _alive(agent), within=10, what="the harness's agent to be gone")
    finally:
        with contextlib.suppress(ProcessLookupError):  # the test leaves nothing behind, whatever it found
            os.kill(agent, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Running (a zombie is not: it has exited and waits for its parent, here init)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
