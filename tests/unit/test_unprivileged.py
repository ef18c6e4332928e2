"""`integ.unprivileged`, which the tests use to run agents as the image's user: the program, its imports'
top-level code included, must get only what that user gets."""

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from integ.unprivileged import command, remove, shared_directory


@pytest.fixture
def shared() -> Iterator[Path]:
    path = shared_directory("brupop-test-unprivileged-")
    yield path
    remove(path)


def run_as_agent_user(code: str, *, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(uid=65532, gid=65532, groups=[274], program=["-c", code]),
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
    )


def test_a_module_reading_a_root_only_file_at_import_is_refused_as_in_the_pod(shared: Path) -> None:
    """The module's code is read with root's rights (the interpreter may live under a 0700 home), but its
    top-level code runs as the target user: a file only root may read stays unreadable."""
    secret = shared / "root-only"
    secret.write_text("x")
    secret.chmod(0o600)
    module = shared / "reads_at_import.py"
    module.write_text(f"open({str(secret)!r}).read()\n")
    module.chmod(0o644)
    done = run_as_agent_user(
        f"import sys; sys.path.insert(0, {str(shared)!r}); import reads_at_import", cwd=shared
    )
    assert done.returncode != 0
    assert "PermissionError" in done.stderr


def test_the_program_runs_as_the_user_and_groups_it_was_given(shared: Path) -> None:
    done = run_as_agent_user(
        "import os; print(os.getuid(), os.geteuid(), os.getgid(), os.getgroups())", cwd=shared
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["65532", "65532", "65532", "[274]"]
