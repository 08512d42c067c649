"""Handing the heap a worker freed back to the operating system.

design: a research task's agents allocate on several threads at once; when they finish,
glibc keeps the freed pages mapped (they show as the worker's RSS) until something asks for
them back. A worker with no task left running asks once, with malloc_trim (a few ms, GIL
released), so the memory of finished research does not sit in every worker (issue 19).
Elsewhere than glibc this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim() -> ctypes._CFuncPtr | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def trim() -> bool:
    """Return freed heap pages to the OS; True when glibc released something."""
    release = _malloc_trim()
    if release is None:
        return False
    return bool(release(0))
