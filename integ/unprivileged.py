"""Run a Python program as another user and groups, as a container runtime starts a pod's process
(`runAsUser`, `runAsGroup`, `supplementalGroups`): `python -m integ.unprivileged --uid 65532 --gid 65532
--groups 274 -m brupop agent` (or `-c CODE`, or `--script PATH`: a console script).

With `--service-account DIR` and `--read-only-root` it also sees the filesystem as the chart's container
does, in a mount namespace of its own: DIR (its token, ca.crt, namespace) read-only at the in-cluster path
`/var/run/secrets/kubernetes.io/serviceaccount` (on a fresh tmpfs over /run, so the machine's /run is
neither seen nor changed), and the root filesystem read-only (`readOnlyRootFilesystem: true`; /dev/shm,
/proc and /sys are mounts of their own, as in a container).

`subprocess` with `user=`/`extra_groups=` would need an interpreter and standard library that user can
read, and a test machine's Python often lives under a 0700 home (pyenv in /root). So this starts as root,
sets the groups and the group, and drops the user: real and effective uid become the target, so every file
the program opens (the host socket, its token, its CA) is checked as that user with those groups. Root is
kept only as the saved uid, and taken back for the moment an import reads a module's code (a module's
top-level code runs as the target user; only extension modules load as root).
Only root can do this; anyone else gets one line saying why, and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.abc
import importlib.machinery
import os
import re
import runpy
import shutil
import sys
import tempfile
import types
from collections.abc import Iterator, Sequence
from pathlib import Path


class _Privileges:
    """Root for the duration of an import (nested imports included), the target user otherwise."""

    def __init__(self, uid: int) -> None:
        self.uid = uid
        self.depth = 0

    @contextlib.contextmanager
    def root(self) -> Iterator[None]:
        if self.depth == 0:
            os.seteuid(0)
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if self.depth == 0:
                os.seteuid(self.uid)


_PYTHON_CODE_LOADERS = (importlib.machinery.SourceFileLoader, importlib.machinery.SourcelessFileLoader)


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader, privileges: _Privileges) -> None:
        self._inner = inner
        self._privileges = privileges

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        with self._privileges.root():
            return self._inner.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        if isinstance(self._inner, _PYTHON_CODE_LOADERS):
            # Root only to read the code; the module's top-level code runs as the target user, so a file
            # it opens at import is checked as in the pod.
            with self._privileges.root():
                code = self._inner.get_code(module.__name__)
            if code is None:
                raise ImportError(f"no code for module {module.__name__}", name=module.__name__)
            exec(code, module.__dict__)
            return
        with self._privileges.root():  # an extension module: loading it is reading a library file
            self._inner.exec_module(module)

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


class _ImportAsRoot(importlib.abc.MetaPathFinder):
    def __init__(self, privileges: _Privileges) -> None:
        self._privileges = privileges

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        with self._privileges.root():
            for finder in sys.meta_path:
                find = getattr(finder, "find_spec", None)
                if finder is self or find is None:
                    continue
                spec: importlib.machinery.ModuleSpec | None = find(fullname, path, target)
                if spec is not None:
                    if spec.loader is not None:
                        spec.loader = _Loader(spec.loader, self._privileges)
                    return spec
        return None


SERVICE_ACCOUNT_PATH = Path("/var/run/secrets/kubernetes.io/serviceaccount")
"""Where the kubelet mounts a pod's service account (Kubernetes' in-cluster configuration reads it)."""

_MS_RDONLY, _MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18


def _mount(source: str | None, target: Path, fstype: str | None, flags: int, data: str | None = None) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    encoded = [value.encode() if value is not None else None for value in (source, str(target), fstype, data)]
    if libc.mount(encoded[0], encoded[1], encoded[2], ctypes.c_ulong(flags), encoded[3]) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"mount {target}: {os.strerror(error)}")


def isolate(*, service_account: Path | None, read_only_root: bool) -> None:
    """Give this (root) process the container's view of the filesystem; see the module docstring."""
    os.unshare(os.CLONE_NEWNS)
    _mount(None, Path("/"), None, _MS_REC | _MS_PRIVATE)  # nothing done here reaches the machine's mounts
    run_tmpfs = None
    if service_account is not None:
        run = run_tmpfs = Path("/var/run").resolve()  # /run where /var/run is its symlink
        _mount("pod", run, "tmpfs", 0, "mode=0755")
        target = run / SERVICE_ACCOUNT_PATH.relative_to("/var/run")
        target.mkdir(parents=True)
        _mount(str(service_account), target, None, _MS_BIND)
        _mount(None, target, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY)
        _mount(None, run, None, _MS_REMOUNT | _MS_RDONLY)
    if read_only_root:
        for point in _mount_points():
            if point == run_tmpfs or any(point.is_relative_to(k) for k in _KERNEL_MOUNTS):
                continue
            kept = os.statvfs(point).f_flag & _KEPT_FLAGS  # what a bind remount would otherwise clear
            _mount(None, point, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY | kept)


_KERNEL_MOUNTS = (Path("/proc"), Path("/sys"), Path("/dev"))
"""A container's own mounts that stay as they are (/dev/shm is writable in a pod too)."""
_KEPT_FLAGS = 2 | 4 | 8  # nosuid, nodev, noexec: the same bits in statvfs's f_flag and in mount's flags


def _mount_points() -> list[Path]:
    """Every mount point of this mount namespace (field 5 of /proc/self/mountinfo, with
    its octal escapes undone)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        escaped = line.split()[4]
        points.append(Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), escaped)))
    return points


def become(uid: int, gid: int, groups: Sequence[int]) -> None:
    """Turn this (root) process into `uid`:`gid` with supplementary `groups`; see the module docstring."""
    os.setgroups(list(groups))
    os.setresgid(gid, gid, gid)
    privileges = _Privileges(uid)
    sys.meta_path.insert(0, _ImportAsRoot(privileges))
    os.setresuid(uid, uid, 0)


def needs_root(what: str) -> str | None:
    """Why `what` cannot run here (None when it can): only root can start a process as another user."""
    if os.geteuid() == 0:
        return None
    return (
        f"{what} needs root: the tests start the agent as the image's user with the DaemonSet's groups, "
        f"and make the host socket root:274 as on Bottlerocket; this runs as uid {os.geteuid()}. "
        "Run the tests as root, as CI does"
    )


def command(
    *,
    uid: int,
    gid: int,
    groups: Sequence[int],
    program: Sequence[str],
    service_account: Path | None = None,
    read_only_root: bool = False,
) -> list[str]:
    """The command line that runs `python PROGRAM...` (`-m MODULE ARGS...`, `-c CODE ARGS...` or
    `--script PATH ARGS...`) as `uid`:`gid` with supplementary `groups` (and the mounts the options ask)."""
    return [
        sys.executable,
        "-m",
        "integ.unprivileged",
        "--uid",
        str(uid),
        "--gid",
        str(gid),
        *(["--groups", ",".join(map(str, groups))] if groups else []),
        *(["--service-account", str(service_account)] if service_account is not None else []),
        *(["--read-only-root"] if read_only_root else []),
        *program,
    ]


def shared_directory(prefix: str) -> Path:
    """A new directory under the system's temporary directory that any user may enter (mode 0755), for
    the files an unprivileged process reads: sockets, tokens, certificates. Remove it with `remove`."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m integ.unprivileged",
        usage="%(prog)s --uid UID --gid GID [--groups G,G] [--service-account DIR] [--read-only-root] "
        "(-m MODULE | -c CODE | --script PATH) [ARGS...]",
        description=__doc__,
    )
    parser.add_argument("--uid", type=int, required=True)
    parser.add_argument("--gid", type=int, required=True)
    parser.add_argument("--groups", default="", help="supplementary group IDs, comma-separated")
    parser.add_argument(
        "--service-account", type=Path, help="mounted read-only at " + str(SERVICE_ACCOUNT_PATH)
    )
    parser.add_argument("--read-only-root", action="store_true", help="the root filesystem read-only")
    # Everything after -m MODULE, -c CODE or --script PATH belongs to the program, as with python itself.
    split = next((i for i, arg in enumerate(argv) if arg in ("-m", "-c", "--script")), None)
    if split is None or split + 1 >= len(argv):
        parser.error("give -m MODULE, -c CODE or --script PATH")
    options = parser.parse_args(argv[:split])
    kind, target, args = argv[split], argv[split + 1], argv[split + 2 :]
    try:
        groups = [int(g) for g in options.groups.split(",") if g.strip()]
    except ValueError:
        parser.error(f"--groups {options.groups!r}: expected comma-separated group IDs")
    refusal = needs_root("python -m integ.unprivileged")
    if refusal is not None:
        print(refusal, file=sys.stderr)
        return 2
    code = None
    script = kind == "--script"
    if kind != "-m":
        # A console script is code like a module's: read as root (its venv may be under a 0700 home), run
        # as the target user. So is -c's, which needs no reading.
        name = target if script else "<-c>"
        try:
            code = compile(Path(target).read_bytes() if script else target, name, "exec")
        except (OSError, SyntaxError) as error:
            print(f"python -m integ.unprivileged: cannot run {name}: {error}", file=sys.stderr)
            return 2
    if options.service_account is not None or options.read_only_root:
        try:
            isolate(service_account=options.service_account, read_only_root=options.read_only_root)
        except OSError as error:
            print(f"python -m integ.unprivileged: cannot isolate the program: {error}", file=sys.stderr)
            return 2
    become(options.uid, options.gid, groups)
    if code is None:
        sys.argv = [target, *args]
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        sys.argv = [target if script else "-c", *args]
        exec(code, {"__name__": "__main__"} | ({"__file__": target} if script else {}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
