"""Give the memory freed after an informer's first list back to the operating system.

Parsing a large list (thousands of objects) briefly holds megabytes of JSON and dicts; once they are freed,
glibc keeps the pages unless asked to trim. One `malloc_trim` after the caches sync brings the resident size
back to what the process really uses. A no-op where glibc is not the allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc


def release_freed_memory() -> None:
    gc.collect()
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)
