"""Give the memory freed after an informer's first list back to the operating system.

Parsing a large list (thousands of objects) briefly holds megabytes of JSON and dicts; once they are freed,
glibc keeps the pages unless asked to trim. One `malloc_trim` after the caches sync brings the resident size
back to what the process really uses. A no-op where glibc is not the allocator.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable
from functools import cache


@cache
def malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, looked up once among the symbols the process has loaded (the interpreter
    links the C library). `ctypes.util.find_library("c")` ran `ldconfig -p` (and, failing that, the C
    compiler and the linker) on every call: a fork of the whole process and about 4 ms each time, after
    every large conversion review."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


def release_freed_memory() -> None:
    gc.collect()
    trim = malloc_trim()
    if trim is not None:
        trim(0)
