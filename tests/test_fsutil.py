"""Tests of auditor.fsutil: owner-only folders and files, whatever the umask, written whole."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from auditor.fsutil import private_dir, private_mkdirs, replacing, write_private


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_private_mkdirs_makes_every_missing_folder_owner_only(
    tmp_path: Path, open_umask: None
) -> None:
    leaf = private_mkdirs(tmp_path / "a" / "b" / "c")
    assert [mode(d) for d in (tmp_path / "a", tmp_path / "a" / "b", leaf)] == [0o700] * 3


def test_private_mkdirs_leaves_an_existing_folder_but_private_dir_tightens_it(
    tmp_path: Path,
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    private_mkdirs(shared)
    assert mode(shared) == 0o755
    private_dir(shared)
    assert mode(shared) == 0o700


def test_write_private_is_owner_only_and_replaces(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "report.json"
    path.write_text("old")
    path.chmod(0o644)
    write_private(path, "new ✓")
    assert path.read_text(encoding="utf-8") == "new ✓"
    assert mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path: Path) -> None:
    path = tmp_path / "flows.csv"
    path.write_text("whole")
    with pytest.raises(RuntimeError), replacing(path, "w") as fh:
        fh.write("half")
        raise RuntimeError("disk full")
    assert path.read_text() == "whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flows.csv"]


def test_a_write_error_names_the_target(tmp_path: Path) -> None:
    missing = tmp_path / "gone" / "x.json"
    with pytest.raises(OSError) as exc:
        write_private(missing, b"x")
    assert str(tmp_path / "gone") in str(exc.value)
