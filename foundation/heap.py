"""Giving freed memory back to the system after a burst of media work.

glibc's malloc keeps what a thread frees in that thread's arena for its next
allocation, and returns an arena's memory to the system only from its top. A decoder's
or encoder's frames (1.4 MB each at 720p) freed in the middle of an arena stay
resident for good, one arena per web-server thread that ever did such work.
`malloc_trim(0)` hands every arena's free pages back (madvise), at the price of a walk
over the free lists (well under a millisecond for a few hundred kB of lists).
Elsewhere than glibc there is nothing to do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc (musl has no malloc_trim)
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def give_back() -> None:
    """Return the process's freed heap pages to the system (glibc), else nothing."""
    trim = _trim()
    if trim is not None:
        trim(0)
