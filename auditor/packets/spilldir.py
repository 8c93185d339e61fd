"""Where a read writes what it keeps on disk (see :mod:`auditor.packets.spill`): its own
module, with no heavy imports, for the name worker's pipe too."""

from __future__ import annotations

import errno
import os
import tempfile
from typing import Final

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
