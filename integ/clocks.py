"""Clocks that differ, as across a real fleet's machines: a brupop program's wall clock set ahead or behind
the cluster's, its monotonic clock untouched.

A program's wall clock is offset with libfaketime (`LD_PRELOAD`, `FAKETIME="+45s"`,
`FAKETIME_DONT_FAKE_MONOTONIC=1`): `time.time()`, `datetime.now()` and the timestamps it writes are its
own, as on a node whose clock drifted; the kube-apiserver, etcd and the controller manager keep the
machine's. The library comes from Debian's package (pinned below), fetched once with `apt-get download`
and unpacked into `~/.cache/brupop-integ`; each run copies it into its shared directory, so a program that
starts as the image's user can load it from anywhere.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from integ.build import CACHE, BuildError

PACKAGE = "libfaketime"
VERSION = "0.9.10-2.1"
LIBRARY = "libfaketime.so.1"


def faketime_library(*, log: TextIO | None = sys.stderr) -> Path:
    """libfaketime's shared library, from the pinned Debian package (fetched on first use); what it did is
    told to `log` (when given)."""
    directory = CACHE / f"{PACKAGE}-{VERSION}"
    library = directory / LIBRARY
    if library.is_file():
        if log is not None:
            print(f"{PACKAGE}: cached in {directory}", file=log)
        return library
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise BuildError(f"{PACKAGE} {VERSION} comes from Debian's packages: apt-get and dpkg-deb are needed")
    with tempfile.TemporaryDirectory(prefix="brupop-faketime-") as work:
        fetched = subprocess.run(
            ["apt-get", "download", f"{PACKAGE}={VERSION}"], cwd=work, capture_output=True, text=True
        )
        debs = list(Path(work).glob(f"{PACKAGE}_*.deb"))
        if fetched.returncode != 0 or not debs:
            why = fetched.stderr.strip()[-2000:]
            raise BuildError(f"apt-get download {PACKAGE}={VERSION} failed:\n{why}")
        unpacked = Path(work) / "root"
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], check=True)
        found = next(unpacked.rglob(f"faketime/{LIBRARY}"), None)
        if found is None:
            raise BuildError(f"{debs[0].name} holds no {LIBRARY}")
        directory.mkdir(parents=True, exist_ok=True)
        partial = library.with_name(LIBRARY + ".partial")
        shutil.copyfile(found, partial)
        partial.rename(library)
    if log is not None:
        print(f"{PACKAGE} {VERSION}: unpacked into {directory}", file=log)
    return library


def offset_env(seconds: float, library: Path) -> dict[str, str]:
    """The environment that sets a program's wall clock `seconds` off the machine's (none for 0)."""
    if not seconds:
        return {}
    return {
        "LD_PRELOAD": str(library),
        "FAKETIME": f"{seconds:+.3f}s",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


@dataclass(frozen=True)
class Clocks:
    """The wall-clock offsets of a run's programs, in seconds: the agents' by node, and the controller and
    apiserver replicas' by start (replica n gets `controllers[n % len]`), so two replicas, and a
    replacement, may disagree."""

    nodes: tuple[tuple[str, float], ...] = ()
    """(node, offset) pairs."""
    controllers: tuple[float, ...] = ()
    apiservers: tuple[float, ...] = ()
    library: Path | None = None
    """libfaketime, where the run's programs can read it; needed when any offset is not 0."""

    @property
    def skewed(self) -> bool:
        return any(s for _, s in self.nodes) or any(self.controllers) or any(self.apiservers)

    def agent(self, node: str) -> dict[str, str]:
        return self._env(dict(self.nodes).get(node, 0.0))

    def controller(self, start: int) -> dict[str, str]:
        return self._env(_nth(self.controllers, start))

    def apiserver(self, start: int) -> dict[str, str]:
        return self._env(_nth(self.apiservers, start))

    def controller_offset(self, start: int) -> float:
        return _nth(self.controllers, start)

    def _env(self, seconds: float) -> dict[str, str]:
        if not seconds:
            return {}
        if self.library is None:
            raise RuntimeError("a clock offset needs libfaketime (Clocks.library)")
        return offset_env(seconds, self.library)

    def describe(self) -> str:
        parts = [f"{node} {s:+.0f}s" for node, s in sorted(self.nodes) if s]
        parts += [f"controller-{i} {s:+.1f}s" for i, s in enumerate(self.controllers) if s]
        parts += [f"apiserver-{i} {s:+.0f}s" for i, s in enumerate(self.apiservers) if s]
        return ", ".join(parts)


def _nth(offsets: tuple[float, ...], start: int) -> float:
    return offsets[start % len(offsets)] if offsets else 0.0
