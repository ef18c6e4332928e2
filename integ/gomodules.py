"""Files that a pinned Go module ships (e.g. a project's CRDs), fetched through the module proxy into the
build's module cache, so the real API server can check objects of kinds brupop does not own."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from integ.build import go_env


def module_dir(module: str, version: str) -> Path:
    """The module's files, read-only, in the module cache (downloaded on first use)."""
    with tempfile.TemporaryDirectory() as scratch:
        answer = subprocess.run(
            ["go", "mod", "download", "-json", f"{module}@{version}"],
            cwd=scratch,
            env={**go_env(), "GOFLAGS": "-mod=mod"},
            capture_output=True,
            text=True,
            check=True,
        )
    return Path(json.loads(answer.stdout)["Dir"])
