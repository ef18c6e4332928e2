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


def test_a_console_script_out_of_the_users_reach_runs_as_the_user(shared: Path, tmp_path: Path) -> None:
    """A venv's console script under a 0700 home (the benchmark's runtime venv in ~/.cache) is read as
    root, like a module's code, and runs as the user with its own path as argv[0]."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    script = home / "brupop"
    script.write_text("import os, sys\nprint(os.getuid(), os.geteuid(), sys.argv, __file__)\n")
    done = subprocess.run(
        command(uid=65532, gid=65532, groups=[274], program=["--script", str(script), "agent"]),
        capture_output=True,
        text=True,
        cwd=shared,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["65532", "65532", f"['{script}',", "'agent']", str(script)]


def test_a_script_that_cannot_be_read_is_one_line_and_status_2(shared: Path) -> None:
    done = subprocess.run(
        command(uid=65532, gid=65532, groups=[], program=["--script", str(shared / "missing"), "agent"]),
        capture_output=True,
        text=True,
        cwd=shared,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"python -m integ.unprivileged: cannot run {shared / 'missing'}: "
        f"[Errno 2] No such file or directory: '{shared / 'missing'}'"
    ]


def test_an_isolated_program_sees_its_service_account_in_cluster_on_a_read_only_root(shared: Path) -> None:
    """As the chart's container (issue 15, review finding 8: programs reached the API through a kubeconfig
    on a writable root): the pod's token at the in-cluster path, read-only, and no file written anywhere;
    the machine's /run is neither seen nor changed."""
    volume = shared / "serviceaccount"
    volume.mkdir(mode=0o755)
    (volume / "token").write_text("pod-token")
    (volume / "token").chmod(0o644)
    code = """
import os
from pathlib import Path
sa = Path("/var/run/secrets/kubernetes.io/serviceaccount")
print((sa / "token").read_text())
for target in (sa / "new", Path(os.getcwd()) / "new", Path("/tmp/brupop-test-new"), Path("/dev/shm/x")):
    try:
        target.write_text("x")
        print("wrote", target)
    except OSError as err:
        print(err.strerror)
print(sorted(os.listdir("/run")))
Path("/dev/shm/x").unlink()
"""
    done = subprocess.run(
        command(
            uid=65532,
            gid=65532,
            groups=[],
            program=["-c", code],
            service_account=volume,
            read_only_root=True,
        ),
        capture_output=True,
        text=True,
        cwd=shared,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "pod-token",
        *["Read-only file system"] * 3,
        "wrote /dev/shm/x",  # as in a pod
        "['secrets']",
    ]
    assert sorted(p.name for p in volume.iterdir()) == ["token"]
