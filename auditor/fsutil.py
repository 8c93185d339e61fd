"""Owner-only folders: what auditor creates (sessions, reports, its home with the CA key and
the device locks) is readable by its owner only, whatever the umask."""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path


def private_mkdirs(path: Path | str) -> Path:
    """Create ``path`` and any missing parents with mode 0700 (the umask does not widen or
    narrow it). Folders that already exist are left as they are."""
    path = Path(path)
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue  # made by someone else meanwhile: not ours to change
        os.chmod(d, 0o700)  # mkdir's mode is filtered by the umask
    return path


def open_regular(path: Path) -> io.BufferedReader:
    """``path`` opened for reading in binary, if it is a regular file (through a link or not);
    a FIFO or a device, which would block or never end, raises OSError without blocking."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
