"""The user's cache folder and its files: where auditor keeps what it can rebuild (the compiled
lookup index, the IP tables, the packet flow cache), owner-only.

``$AUDITOR_CACHE_DIR``, else ``$XDG_CACHE_HOME/auditor``, else ``~/.cache/auditor``. A cached
file is read only when it and its folder belong to the user and nobody else may write them
(0600 / 0700); it is written through a temporary name, so a reader never sees half of it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Protocol

from auditor.fsutil import private_mkdirs, replacing

log = logging.getLogger(__name__)

CACHE_ENV = "AUDITOR_CACHE_DIR"


def cache_dir() -> Path:
    """``$AUDITOR_CACHE_DIR``, else ``$XDG_CACHE_HOME/auditor``, else ``~/.cache/auditor``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "auditor"


class _Hash(Protocol):
    def update(self, data: bytes, /) -> None: ...


def add_file_stats(h: _Hash, paths: Iterable[Path], *, missing_ok: bool = False) -> None:
    """Feed ``h`` each file's path, size and modification time (as make decides what to
    rebuild): what names a cache entry after the files it was built from. A file that cannot
    be read raises :class:`OSError`, unless ``missing_ok``."""
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            if missing_ok:
                continue
            raise
        h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())


def _private_enough(path: Path, want: int) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    return st.st_uid == os.geteuid() and st.st_mode & 0o777 & ~want == 0


def owner_only(path: Path, what: str) -> bool:
    """A cached file may be read: it and its folder belong to the user and nobody else may
    write them (0600 / 0700). A file that is there but fails this is a warning."""
    if _private_enough(path.parent, 0o700) and _private_enough(path, 0o600):
        return True
    if path.exists():
        log.warning("%s: not owner-only; the %s is rebuilt", path, what)
    return False


def write_cache_file(
    path: Path, write: Callable[[IO[bytes]], None], *, stale: str, what: str
) -> None:
    """Write a cache file owner-only in an owner-only folder, through a temporary name (so a
    reader never sees half of it); then remove the older files matching ``stale`` and
    temporary files a writer killed before its rename left (older than an hour). A folder
    others may write, a read-only home or a full disk: a warning, and nothing is kept."""
    folder = path.parent
    try:
        private_mkdirs(folder)  # every folder it makes, parents too, 0700
        if not _private_enough(folder, 0o700):
            log.warning("%s: not owner-only; the %s is not kept", folder, what)
            return
        with replacing(path) as fh:
            write(fh)
        for old in folder.glob(stale):
            if old != path:
                old.unlink(missing_ok=True)
        for left in folder.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                if time.time() - left.stat().st_mtime > 3600:
                    left.unlink()
    except OSError as exc:  # lookups still work, only slower
        log.warning("%s: %s not written: %s", folder, what, exc.strerror or exc)
