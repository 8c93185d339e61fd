"""Giving the C heap's free pages back to the system between the stages of a long read.

glibc's malloc keeps what is freed for reuse, and grows its heap for an allocation that none
of its free chunks fits: after a stage that made and freed many mid-sized arrays (numpy
allocates those from the heap once glibc's own threshold for mapping them apart has grown),
the next stage's arrays are placed above the holes, and the process's memory is the sum of
both. ``malloc_trim(0)`` gives back every whole free page, the holes included, so that the
peak is what is in use. Elsewhere than glibc (musl, macOS) it does nothing."""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable


@functools.cache
def _trim() -> Callable[[int], int] | None:
    try:
        fn = ctypes.CDLL(None).malloc_trim  # this process's C library, if it has one
    except (OSError, AttributeError):  # no glibc
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def trim_heap() -> bool:
    """Give the heap's free pages back; True if glibc gave any back (a few milliseconds)."""
    fn = _trim()
    return bool(fn(0)) if fn is not None else False
