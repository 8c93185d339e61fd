"""Reading hostile archives: names, member types, sizes, and streams that expand too far."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from auditor.evidence import EvidenceError
from auditor.evidence.archive import Limits, UnsafeArchiveError, check_name, iter_members


def _tar(path: Path, members: list[tuple[str, bytes]], gz: bool = True) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    path.write_bytes(gzip.compress(raw.getvalue()) if gz else raw.getvalue())
    return path


@pytest.mark.parametrize("name", ["a", "a/b.json", "captures/S-1/bodies/x.zst", "..a", "a..b"])
def test_safe_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "/a", "../a", "a/../../b", "a/./b", "./a", "a//b", "a/", "a\\..\\b", "a\x00b"]
)
def test_unsafe_names(name: str) -> None:
    with pytest.raises(UnsafeArchiveError):
        check_name(name)


@pytest.mark.parametrize("gz", [True, False])
def test_reads_members_in_order(tmp_path: Path, gz: bool) -> None:
    path = _tar(tmp_path / "a.tar", [("x/1", b"one"), ("x/2", b"two" * 1000)], gz)
    got = [(m.name, m.read_all(10_000)) for m in iter_members(path)]
    assert got == [("x/1", b"one"), ("x/2", b"two" * 1000)]


def test_total_size_bound_stops_a_bomb(tmp_path: Path) -> None:
    # 10 members of 1 MB zeros: tiny compressed, refused once the sum passes the bound
    path = _tar(tmp_path / "bomb.tar.gz", [(f"z{i}", bytes(1_000_000)) for i in range(10)])
    assert path.stat().st_size < 100_000
    with pytest.raises(UnsafeArchiveError, match="more than 3000000"):
        for m in iter_members(path, Limits(max_total_size=3_000_000)):
            for _ in m.chunks():
                pass


def test_stream_bound_stops_a_header_bomb(tmp_path: Path) -> None:
    # a PAX header that claims (and holds) far more than any header needs
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("a")
        ti.pax_headers = {"comment": "x" * 2_000_000}
        tf.addfile(ti, io.BytesIO(b""))
    path = tmp_path / "hdr.tar.gz"
    path.write_bytes(gzip.compress(raw.getvalue()))
    with pytest.raises(UnsafeArchiveError, match="exceeds"):
        list(iter_members(path, Limits(max_header=1_000_000)))


def test_damaged_archives(tmp_path: Path) -> None:
    path = _tar(tmp_path / "a.tar.gz", [("x", os.urandom(40_000))])
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(path.read_bytes()[:20_000])
    with pytest.raises(EvidenceError):
        for m in iter_members(cut):
            m.read_all(1_000_000)
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(EvidenceError, match="not a readable tar archive"):
        list(iter_members(tmp_path / "empty"))
    with pytest.raises(EvidenceError, match="cannot open"):
        list(iter_members(tmp_path / "missing.tar"))
