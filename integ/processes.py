"""brupop programs as OS processes, the way their pods run them.

Each program starts through the `brupop` console script with the environment its manifest gives it, as the
user of the image, from a directory of its own that stands in for the pod (its kubeconfig, its token files,
its log). The console script is reached through a symlink in that directory, so `ps -o pid,ruser,args`
names every process by its pod: `.../pods/brupop-agent-e2e-3/brupop agent`.

A restart is what a crash is: SIGKILL, then a new process (`kill` + `start`); a graceful stop is SIGTERM
with a grace period, as the kubelet gives. An exit that nobody asked for is kept (`unexpected`) so the
run's monitors can fail the run on it. Whatever still runs when the harness exits is killed, and a harness
that calls `stop_on_sigterm` exits on SIGTERM as on Ctrl-C, so a stopped run leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from integ.unprivileged import command, needs_root

PASSED_ON = ("PATH", "LANG", "LC_ALL", "TZ")
"""The harness's variables a program inherits (nothing else leaks in: a pod has only its own)."""


@dataclass(frozen=True)
class RunAs:
    """The user a program runs as: the image's `USER 65532:65532`, plus the groups its pod spec adds."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()


IMAGE_USER = RunAs(65532, 65532)
"""The user of the brupop image (Containerfile)."""


REPO = Path(__file__).resolve().parent.parent


@functools.cache
def can_run_as(run_as: RunAs, python: str) -> bool:
    """Whether `python` starts as `run_as` at all: an interpreter installed under a directory that only
    its owner may enter (a pyenv under /root) cannot, and then it starts through `integ.unprivileged`."""
    try:
        probe = subprocess.run(
            [python, "-c", "import brupop"],
            user=run_as.uid,
            group=run_as.gid,
            extra_groups=list(run_as.groups),
            capture_output=True,
            timeout=30,
            check=False,
        )
    except OSError:
        return False
    return probe.returncode == 0


def owned_by(path: Path, run_as: RunAs | None, *, mode: int = 0o600) -> Path:
    """`path` readable by `run_as` only (as a Secret or projected token mounted into its pod)."""
    path.chmod(mode)
    if run_as is not None:
        os.chown(path, run_as.uid, run_as.gid)
    return path


@dataclass
class Exit:
    """One end of a process: who ended it and how."""

    pod: str
    code: int
    at: float
    asked: bool
    """True when the harness stopped or killed it."""

    def describe(self) -> str:
        how = f"signal {signal.Signals(-self.code).name}" if self.code < 0 else f"code {self.code}"
        return f"{self.pod} exited with {how}" + ("" if self.asked else " on its own")


class BrupopProcess:
    """One brupop program in its pod's directory; `start` may be called again after it ended."""

    def __init__(
        self,
        *,
        pod: str,
        program: str,
        env: Mapping[str, str],
        directory: Path,
        run_as: RunAs | None = None,
        python: str = sys.executable,
        service_account: Path | None = None,
        read_only_root: bool = False,
    ) -> None:
        self.pod = pod
        self.program = program
        self.env = dict(env)
        self.directory = directory
        if run_as is not None:
            refusal = needs_root(f"running {pod} as uid {run_as.uid}")
            if refusal is not None:
                raise RuntimeError(refusal)
        self.run_as = run_as
        """Who it runs as; the harness's user when None."""
        if (service_account is not None or read_only_root) and run_as is None:
            raise ValueError(f"{pod}: a container's mounts need a user to drop to (run_as)")
        self.service_account = service_account
        """The directory seen at the in-cluster service account path (`integ.unprivileged`), or None."""
        self.read_only_root = read_only_root
        self._python = python
        self.log = directory / "brupop.log"
        self.exits: list[Exit] = []
        self._script = Path(python).parent / "brupop"
        self._process: asyncio.subprocess.Process | None = None
        self._asked = False
        self._watch: asyncio.Task[None] | None = None
        self.on_exit: Callable[[Exit], None] | None = None
        """Called with every exit, asked for or not."""
        directory.mkdir(parents=True, exist_ok=True)
        if run_as is not None:
            os.chown(directory, run_as.uid, run_as.gid)

    @property
    def pid(self) -> int:
        """The process ID of its latest start."""
        if self._process is None:
            raise RuntimeError(f"{self.pod} was never started")
        return self._process.pid

    @property
    def user(self) -> str:
        who = self.run_as
        if who is None:
            return f"uid {os.getuid()}"
        return f"uid {who.uid} gid {who.gid}" + (
            f" groups {','.join(map(str, who.groups))}" if who.groups else ""
        )

    def became_its_user(self) -> bool:
        """Whether the running process's real uid is its user's (always, for the harness's user)."""
        if self.run_as is None or not self.running:
            return True
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("Uid:"):
                    return int(line.split()[1]) == self.run_as.uid
        return False

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.pod} is already running")
        await self.wait()  # the last exit recorded first, as asked or not, before a new start resets that
        link = self.directory / "brupop"
        if not link.is_symlink():
            link.symlink_to(self._script)
        env = {k: os.environ[k] for k in PASSED_ON if k in os.environ} | self.env
        argv = [str(link), self.program]
        user: dict[str, Any] = {}
        who = self.run_as
        mounts = self.service_account is not None or self.read_only_root
        if who is not None and not mounts and can_run_as(who, self._python):
            user = {"user": who.uid, "group": who.gid, "extra_groups": list(who.groups)}
        elif who is not None:  # mounts to make, or an interpreter out of the user's reach: drop once started
            if self._python != sys.executable:
                raise RuntimeError(
                    f"{self.pod}: only this interpreter can drop to uid {who.uid} once started"
                )
            program = ["--script", str(link), self.program]
            argv = command(
                uid=who.uid,
                gid=who.gid,
                groups=who.groups,
                program=program,
                service_account=self.service_account,
                read_only_root=self.read_only_root,
            )
            env["PYTHONPATH"] = str(REPO)
        with self.log.open("ab") as out:
            self._process = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                cwd=self.directory,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                **user,
            )
        self._asked = False
        _LIVE.add(self._process.pid)
        self._watch = asyncio.create_task(self._watch_exit(self._process))

    async def _watch_exit(self, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        _LIVE.discard(process.pid)
        exit = Exit(self.pod, code, time.monotonic(), self._asked)
        self.exits.append(exit)
        if self.on_exit is not None:
            self.on_exit(exit)

    async def kill(self) -> None:
        """SIGKILL (a crash: no cleanup runs) and wait until it is gone."""
        if self.running:
            self._asked = True
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()  # type: ignore[union-attr]
        await self.wait()

    def kill_now(self) -> None:
        """SIGKILL without waiting, from code that must not yield (the process runs no instruction more)."""
        if self.running:
            self._asked = True
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()  # type: ignore[union-attr]

    def terminate_now(self) -> int | None:
        """SIGTERM without waiting, from code that must not yield; the pid signalled (None: not running)."""
        if not self.running:
            return None
        self._asked = True
        with contextlib.suppress(ProcessLookupError):
            self._process.terminate()  # type: ignore[union-attr]
        return self.pid

    async def terminate(self, *, grace: float) -> bool:
        """SIGTERM, as the kubelet sends, and SIGKILL after `grace` seconds; True when it stopped in time."""
        if self.terminate_now() is None:
            return True
        try:
            async with asyncio.timeout(grace):
                await self.wait()
            return True
        except TimeoutError:
            await self.kill()
            return False

    async def wait(self) -> None:
        if self._watch is not None:
            await asyncio.shield(self._watch)

    def unexpected(self) -> list[Exit]:
        """Exits the harness did not ask for."""
        return [e for e in self.exits if not e.asked]

    def entries(self) -> list[dict[str, Any]]:
        """The JSON lines of its log so far (all of its runs)."""
        found = []
        with contextlib.suppress(FileNotFoundError):
            for line in self.log.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if isinstance(entry, dict):
                        found.append(entry)
        return found

    def logged(self, event: str, **fields: str) -> bool:
        """Whether its log has a line for `event` with these fields."""
        return any(
            e.get("event") == event and all(e.get(k) == v for k, v in fields.items()) for e in self.entries()
        )

    def logged_text(self, text: str) -> bool:
        """Whether `text` appears anywhere in its log (a traceback is not JSON)."""
        with contextlib.suppress(FileNotFoundError):
            return text in self.log.read_text(errors="replace")
        return False

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(FileNotFoundError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


_LIVE: set[int] = set()
"""PIDs of the programs started and not yet seen to exit, for `_kill_leftovers`."""


@atexit.register
def _kill_leftovers() -> None:
    """SIGKILL every program still running when the harness exits: each runs in a session of its own (as in
    its pod), so no signal to the harness reaches it, and an interrupted run used to leave them behind. Only
    a child still running is signalled: one that has exited, or was reaped while its watch was cancelled,
    may have its PID taken by another process."""
    for pid in sorted(_LIVE):
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                continue  # exited, not reaped yet: nothing to kill
        except ChildProcessError:
            continue  # not our child any more
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    _LIVE.clear()


def stop_on_sigterm() -> None:
    """Make SIGTERM stop this harness as Ctrl-C does: it raises SIGINT, whose default handler `asyncio.run`
    turns into cancelling the main task only, so `finally` blocks still wait for their programs to stop,
    and `atexit` runs; a run started in the background (`&`, which ignores SIGINT) behaves the same."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))
