"""Pausing Python's cyclic garbage collector around work that makes millions of long-lived
objects without cycles (a capture read's rows and strings, an analysis's endpoint rows): each
full collection would walk them all again. Reference counting still frees garbage at once,
and the collector resumes after, as it was."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The collector off inside the block, back as it was after (also on an exception)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
