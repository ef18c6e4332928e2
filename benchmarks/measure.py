"""What the benchmarks share: reading a process's resident memory and CPU time, and summarising latencies."""

from __future__ import annotations

import hashlib
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# One runtime virtualenv per checkout: it holds an editable install of the checkout that built it, so two
# clones sharing one would measure each other's code.
RUNTIME_VENV = (
    Path.home() / ".cache" / "brupop-bench" / f"runtime-venv-{hashlib.sha256(bytes(REPO)).hexdigest()[:12]}"
)


HARNESS_VENV = RUNTIME_VENV.with_name(RUNTIME_VENV.name.replace("runtime-venv", "harness-venv"))
HARNESS_EXTRAS = ("cryptography",)
"""What the test harness (integ) needs beyond brupop's runtime dependencies: its PKI."""


def runtime_python() -> str:
    """A Python with brupop and only its runtime dependencies, as in the container image, for the process a
    benchmark measures: the test extras (schemathesis brings rich, which structlog then imports) would add
    about 3 MiB to every figure. Built once under ~/.cache and rebuilt when pyproject.toml changes."""
    return _venv(RUNTIME_VENV, ())


def harness_python() -> str:
    """A Python for a benchmark that runs the test harness itself (which starts every program with its own
    interpreter): brupop's runtime dependencies and the harness's few extras, none of which a program
    imports."""
    return _venv(HARNESS_VENV, HARNESS_EXTRAS)


def _venv(directory: Path, extras: tuple[str, ...]) -> str:
    python = directory / "bin" / "python"
    stamp = directory / ".pyproject-sha256"
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes() + repr(extras).encode()).hexdigest()
    if not python.exists() or not stamp.exists() or stamp.read_text() != digest:
        what = "brupop's runtime dependencies" + (f" and {', '.join(extras)}" if extras else " only")
        print(f"creating {directory} ({what}) ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(directory)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-e", str(REPO), *extras], check=True)
        stamp.write_text(digest)
    # As the image does (compileall): a program measured must not compile brupop's sources as it starts,
    # which it would for every module edited since its bytecode was last written (PYTHONDONTWRITEBYTECODE
    # in the benchmarks' processes): that costs the controller about 1.4 MiB of resident memory for good.
    subprocess.run([str(python), "-m", "compileall", "-q", str(REPO / "brupop")], check=True)
    return str(python)


def load() -> str:
    """The machine's load average (1, 5, 15 minutes) and its processors, to print next to a figure."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def rss_mib(pid: int | str = "self", *, field: str = "VmRSS") -> float:
    """Resident memory (VmRSS), or another size field of /proc/PID/status: VmHWM (the peak so far),
    RssAnon, RssFile."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU time the process has used so far (/proc/PID/stat utime + stime; its children
    excluded), in seconds, at the kernel's clock-tick resolution (usually 10 ms)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5), after pid and comm
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def p50_p99_ms(seconds: list[float]) -> tuple[float, float]:
    ordered = sorted(seconds)
    return statistics.median(ordered) * 1000, ordered[max(int(len(ordered) * 0.99) - 1, 0)] * 1000
