"""Where a read writes what it keeps on disk (see :mod:`auditor.packets.spill`), what a full
disk there is said as, and letting the pages of files mapped from there go: its own module,
with no import beyond numpy, for the name worker's pipe and the DNS records too."""

from __future__ import annotations

import errno
import mmap
import os
import tempfile
from typing import Final

import numpy as np

#: Where the files go: ``AUDITOR_SPILL_DIR`` when set, else the system's temporary folder
SPILL_DIR_ENV: Final = "AUDITOR_SPILL_DIR"


def spill_dir() -> str | None:
    return os.environ.get(SPILL_DIR_ENV) or None


#: What a write that failed for want of room tells (the same as the CLI's disk-full line)
DISK_FULL_ERRNOS: Final = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


class SpillFull(OSError):
    """A read's temporary tables could not be written for want of room: an OSError of the
    same errno, naming the folder (``filename``), with ``advice`` on what to do."""

    def __init__(self, cause: OSError) -> None:
        folder = spill_dir() or tempfile.gettempdir()
        super().__init__(cause.errno, cause.strerror or str(cause), folder)
        self.advice = f"a long capture's tables go there; {SPILL_DIR_ENV} names another folder"


def spill_full(exc: OSError) -> OSError:
    """``exc`` as a :class:`SpillFull` when it is a full disk (or a size limit or quota),
    else itself."""
    if isinstance(exc, SpillFull) or exc.errno not in DISK_FULL_ERRNOS:
        return exc
    return SpillFull(exc)


def drop_pages(*arrays: object) -> None:
    """Let the pages of the files these arrays are mapped from go from this process's memory
    (``madvise(MADV_DONTNEED)``): a read-only map reads them again from the file when next
    used, and a shared map written to keeps what was written in the file. Arrays of memory of
    their own are left alone; views find the map they view."""
    for a in arrays:
        base = a
        while isinstance(base, (np.ndarray, memoryview)):
            base = base.base if isinstance(base, np.ndarray) else base.obj
        if isinstance(base, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
            base.madvise(mmap.MADV_DONTNEED)
