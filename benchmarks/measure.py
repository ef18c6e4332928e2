"""What the benchmarks share: reading a process's resident memory and CPU time, and summarising latencies."""

from __future__ import annotations

import os
import statistics
from pathlib import Path


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
