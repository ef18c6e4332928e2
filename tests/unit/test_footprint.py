"""What each program loads as it starts: nothing it never uses (issue 20: memory at rest). Every module
costs resident memory for as long as the process lives (pydantic and FastAPI cost the apiserver 15 MiB,
argparse every program 0.4 MiB), so each program is started as `brupop PROGRAM` is, in a fresh
interpreter, up to its settings (which fail here for want of configuration, after the imports)."""

import subprocess
import sys

import pytest

PROBE = """
import atexit, sys
watched = {watched!r}
atexit.register(lambda: print(",".join(sorted(m for m in watched if m in sys.modules))))
import brupop.cli
sys.exit(brupop.cli.main([{program!r}]))
"""

NEVER = {
    "agent": ("argparse", "fastapi", "pydantic", "starlette", "uvicorn", "prometheus_client", "yaml"),
    "controller": ("argparse", "fastapi", "pydantic", "starlette", "uvicorn", "yaml"),
    "apiserver": ("argparse", "fastapi", "pydantic", "yaml"),
}


@pytest.mark.parametrize("program", sorted(NEVER))
def test_a_program_loads_nothing_it_never_uses(program: str) -> None:
    probe = PROBE.format(watched=NEVER[program], program=program)
    started = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env={"PATH": ""}, timeout=60
    )
    assert started.returncode == 2, started.stderr  # its settings are missing: it stopped there
    assert started.stdout.strip() == "", f"brupop {program} imported {started.stdout.strip()}"
