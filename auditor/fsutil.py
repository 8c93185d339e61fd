"""Owner-only folders and files: what auditor creates (sessions, reports, caches, its home with
the CA key and the device locks) is readable by its owner only, whatever the umask. Files are
written whole: under a temporary name, then renamed."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


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


def private_dir(path: Path | str) -> Path:
    """``path`` made owner-only (0700), with every folder this creates on the way
    (:func:`private_mkdirs`); unlike that, ``path`` itself is made 0700 even if it existed."""
    path = private_mkdirs(path)
    os.chmod(path, 0o700)
    return path


@contextlib.contextmanager
def replacing(path: Path, mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """A fresh owner-only (0600) file under a temporary name in ``path``'s folder, renamed to
    ``path`` once the block ends. On any way out before (an error, a full disk, Ctrl-C) the
    temporary file is removed and ``path`` is left as it was. A failed write is raised as an
    OSError that names ``path``. The temporary name is unique (``.<name>.<random>.tmp``), so
    two writers of one file never write into each other's."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)  # mkstemp's mode already; said here, as it is the point
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not exc.filename and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise


def write_private(path: Path, data: str | bytes) -> None:
    """``data`` (text as UTF-8) written whole into the owner-only file ``path``."""
    with replacing(path) as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)


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
