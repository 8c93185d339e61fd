"""The cache folder's helpers: what names an entry after the files it was built from."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from auditor.cachedir import add_file_stats


def _digest(paths: list[Path], **kw: bool) -> str:
    h = hashlib.sha256()
    add_file_stats(h, paths, **kw)
    return h.hexdigest()


def test_a_changed_size_or_time_changes_the_digest(tmp_path: Path) -> None:
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("x = 1\n")
    b.write_text("y = 2\n")
    before = _digest([a, b])
    assert _digest([a, b]) == before
    st = a.stat()
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    touched = _digest([a, b])
    assert touched != before
    sb = b.stat()
    b.write_text("y = 22\n")  # a byte longer, its time put back: only the size tells
    os.utime(b, ns=(sb.st_atime_ns, sb.st_mtime_ns))
    assert _digest([a, b]) != touched
    assert _digest([b, a]) != _digest([a, b])  # the order is the caller's, and it counts


def test_a_missing_file_raises_unless_allowed(tmp_path: Path) -> None:
    there = tmp_path / "there.py"
    there.write_text("")
    gone = tmp_path / "gone.py"
    with pytest.raises(FileNotFoundError):
        _digest([there, gone])
    assert _digest([there, gone], missing_ok=True) == _digest([there])
