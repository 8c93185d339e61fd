"""Reading hostile archives: names, member types, sizes, and streams that expand too far."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from auditor.evidence import EvidenceError
from auditor.evidence.archive import ArchiveLimits, UnsafeArchiveError, check_name, iter_members


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
    got = [(m.name, b"".join(m.chunks())) for m in iter_members(path)]
    assert got == [("x/1", b"one"), ("x/2", b"two" * 1000)]


def test_total_size_bound_stops_a_bomb(tmp_path: Path) -> None:
    # 10 members of 1 MB zeros: tiny compressed, refused once the sum passes the bound
    path = _tar(tmp_path / "bomb.tar.gz", [(f"z{i}", bytes(1_000_000)) for i in range(10)])
    assert path.stat().st_size < 100_000
    with pytest.raises(UnsafeArchiveError, match="more than 3000000"):
        for m in iter_members(path, ArchiveLimits(max_total_size=3_000_000)):
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
    with pytest.raises(UnsafeArchiveError, match="a PAX header of 2000"):
        list(iter_members(path, ArchiveLimits(max_header=1_000_000)))


def test_damaged_archives(tmp_path: Path) -> None:
    path = _tar(tmp_path / "a.tar.gz", [("x", os.urandom(40_000))])
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(path.read_bytes()[:20_000])
    with pytest.raises(EvidenceError):
        for m in iter_members(cut):
            b"".join(m.chunks())
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(EvidenceError, match="not a readable tar archive"):
        list(iter_members(tmp_path / "empty"))
    with pytest.raises(EvidenceError, match="cannot open"):
        list(iter_members(tmp_path / "missing.tar"))
    os.mkfifo(tmp_path / "fifo")  # would wait for a writer forever
    with pytest.raises(EvidenceError, match="not a regular file"):
        list(iter_members(tmp_path / "fifo"))
    with pytest.raises(EvidenceError, match="not a regular file"):
        list(iter_members(tmp_path))


# A subprocess reads a bundle of one member behind a PAX header of nearly 4 MiB, then runs
# verify --reanalyze and unbundle on a bundle of many such members, and reports its peak
# memory after each.
_MEASURE = """
import json, sys
from auditor.cli import main

def peak():
    with open("/proc/self/status") as fh:
        return next(int(x.split()[1]) * 1024 for x in fh if x.startswith("VmHWM:"))

codes, peaks = [], []
for args in (["verify", sys.argv[1]], ["verify", sys.argv[2], "--reanalyze"],
             ["unbundle", sys.argv[2], "--out", sys.argv[3]]):
    try:
        main(args)
    except SystemExit as exc:
        codes.append(exc.code)
    peaks.append(peak())
print(json.dumps({"peaks": peaks, "codes": codes}))
"""


def _header_bomb(path: Path, members: int, header: int) -> Path:
    with gzip.GzipFile(path, "wb", compresslevel=1, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for i in range(members):
                ti = tarfile.TarInfo(f"captures/S/m{i}")
                ti.pax_headers = {"comment": "x" * header}
                tf.addfile(ti, io.BytesIO(b""))
    return path


def test_a_bundle_of_huge_headers(tmp_path: Path) -> None:
    """The issue's bundle: a PAX header of nearly 4 MiB before every member. Refused with one
    clear line at the first, without holding any (tarfile kept them all: 4 GB for 4 MB)."""
    members, header = 20, 4 * 1024 * 1024 - 1024
    one = _header_bomb(tmp_path / "one.tar.gz", 1, header)
    bomb = _header_bomb(tmp_path / "headers.tar.gz", members, header)
    assert bomb.stat().st_size < 1024 * 1024
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(one), str(bomb), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["codes"] == [1, 1, 1]
    errors = [x for x in proc.stderr.strip().splitlines() if x.startswith("error: ")]
    assert len(errors) == 3, proc.stderr
    for line in errors:
        assert "a PAX header of 41932" in line and "more than 8192" in line, line
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))
    # 80 MiB of headers in the big one: reading it takes no more than reading the first
    grown = got["peaks"][2] - got["peaks"][0]
    assert grown < header, f"{grown >> 20} MiB more than for one header"


def test_a_global_header_is_refused(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(
        fileobj=raw, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "all"}
    ) as tf:
        ti = tarfile.TarInfo("a")
        tf.addfile(ti, io.BytesIO(b""))
    path = tmp_path / "g.tar"
    path.write_bytes(raw.getvalue())
    with pytest.raises(UnsafeArchiveError, match="global PAX header"):
        list(iter_members(path))


def test_a_pax_length_of_thousands_of_digits(tmp_path: Path) -> None:
    """int() refuses over 4300 digits with ValueError, which tarfile lets through; and
    tarfile's search of a PAX header takes quadratic time on a run of digits."""
    record = b"9" * 5000 + b" comment=x\n"
    head = tarfile.TarInfo("././@PaxHeader")
    head.type = tarfile.XHDTYPE
    head.size = len(record)
    body = tarfile.TarInfo("a")
    data = (
        head.tobuf(tarfile.USTAR_FORMAT)
        + record
        + bytes(-len(record) % 512)
        + body.tobuf(tarfile.USTAR_FORMAT)
        + bytes(1024)
    )
    path = tmp_path / "digits.tar"
    path.write_bytes(data)
    with pytest.raises(EvidenceError, match="a run of more than 200 digits"):
        list(iter_members(path))


@pytest.mark.parametrize("digits", [16_000, 4_000])
def test_pax_headers_that_take_tarfile_hours(tmp_path: Path, digits: int) -> None:
    """CVE-2024-6232: tarfile (Python before 3.12.6) searches a PAX header with regular
    expressions that backtrack on digits; 16 KB of them took 3 s, 64 KB 35 s, 4 MiB days.
    Such headers are refused before tarfile looks at them."""
    record = b"1" * digits
    head = tarfile.TarInfo("././@PaxHeader")
    head.type = tarfile.XHDTYPE
    head.size = len(record)
    data = head.tobuf(tarfile.USTAR_FORMAT) + record + bytes(-len(record) % 512)
    path = tmp_path / "digits.tar"
    path.write_bytes(data + tarfile.TarInfo("a").tobuf(tarfile.USTAR_FORMAT) + bytes(1024))
    with pytest.raises(UnsafeArchiveError, match="PAX header"):
        list(iter_members(path))


def test_headers_bounded_in_total(tmp_path: Path) -> None:
    """Every header within bounds, but more header bytes a member than a bundle needs."""
    names = ["/".join(["d" * 200, "e" * 200, f"{i:0200d}"]) for i in range(40)]
    path = _tar(tmp_path / "long.tar", [(n, b"x") for n in names], gz=False)
    with pytest.raises(UnsafeArchiveError, match="headers of its first"):
        list(iter_members(path, ArchiveLimits(max_header_total=16 * 1024)))
    assert len(list(iter_members(path))) == 40


@pytest.mark.parametrize(
    "name,why",
    [
        ("a/" + "n" * 256, "longer than a file name may be"),
        ("a/" + "é" * 128, "longer than a file name may be"),  # 256 bytes in UTF-8
        ("/".join(["d" * 200] * 21), "longer than a path may be"),
        ("a/\x1b[2Jb", "control character"),
        ("a/\udc80", "not UTF-8"),
    ],
)
def test_names_a_file_system_cannot_take(name: str, why: str) -> None:
    with pytest.raises(UnsafeArchiveError, match=why) as err:
        check_name(name)
    assert len(str(err.value)) < 400 and "\x1b" not in str(err.value)


def test_names_at_the_limits_are_taken() -> None:
    assert check_name("a/" + "n" * 255)
    assert check_name("/".join(["d" * 200] * 20))  # 4019 bytes
