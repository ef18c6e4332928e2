"""Giving freed memory back to the operating system (`brupop.kube.memory`), which the apiserver does after
every large conversion review and the controller once its caches sync: it must stay cheap to call."""

import subprocess

import pytest

from brupop.kube.memory import malloc_trim, release_freed_memory


def test_releasing_memory_runs_no_other_program(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[object] = []

    def popen(*args: object, **kwargs: object) -> None:
        started.append(args[0] if args else kwargs.get("args"))
        raise OSError("no programs here")

    monkeypatch.setattr(subprocess, "Popen", popen)
    release_freed_memory()
    release_freed_memory()
    assert started == []


def test_glibc_s_malloc_trim_is_found() -> None:
    """Here, as in the image (Debian's glibc), the trim is there to call: without it the freed pages of a
    large list or review stay resident."""
    assert malloc_trim() is not None
