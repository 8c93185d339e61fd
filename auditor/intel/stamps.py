"""In-process caches of what the knowledge base reads from files, kept with the stamp of
those files (each one's path, inode, modification time in ns and size, as make decides what
to rebuild) and read again once the stamp changes: a process that keeps running (the
campaign runner, a test session, a notebook) sees a file that was edited, replaced, added or
removed, as a new process would."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path

Stamp = tuple[tuple[str, int, int, int], ...]


def stamp(paths: Iterable[Path]) -> Stamp:
    """The stamp of ``paths``, in path order; a path that is gone is left out (so its going
    changes the stamp)."""
    out = []
    for p in sorted(set(paths)):
        try:
            st = p.stat()
        except OSError:
            continue
        out.append((str(p), st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


class StampedCache[T]:
    """One value built from the files ``files()`` lists, built again when their stamp is not
    the one it was built under. The stamp is taken before the build, so a file that changes
    while the value is built is read again on the next call. (Edits that keep a file's size,
    inode and modification time, all within one tick of the file system's clock, are not
    seen: make has the same blind spot.)"""

    def __init__(self, files: Callable[[], Iterable[Path]], build: Callable[[], T]) -> None:
        self._files = files
        self._build = build
        self._lock = threading.Lock()
        self._held: tuple[Stamp, T] | None = None

    def get(self) -> T:
        now = stamp(self._files())
        with self._lock:
            held = self._held
        if held is not None and held[0] == now:
            return held[1]
        value = self._build()
        with self._lock:
            self._held = (now, value)
        return value

    def clear(self) -> None:
        """Forget the value: the next :meth:`get` builds it."""
        with self._lock:
            self._held = None
