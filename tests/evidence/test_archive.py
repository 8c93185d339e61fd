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


# A subprocess runs verify, verify --reanalyze and unbundle on a bundle whose members each sit
# behind a PAX header of nearly 4 MiB (the most one header may be), and reports its peak memory.
_MEASURE = """
import json, sys
from auditor.cli import main

def status(field):
    with open("/proc/self/status") as fh:
        return next(int(x.split()[1]) * 1024 for x in fh if x.startswith(field))

base = status("VmRSS:")
codes = []
for args in (["verify", sys.argv[1]], ["verify", sys.argv[1], "--reanalyze"],
             ["unbundle", sys.argv[1], "--out", sys.argv[2]]):
    try:
        main(args)
    except SystemExit as exc:
        codes.append(exc.code)
print(json.dumps({"base": base, "peak": status("VmHWM:"), "codes": codes}))
"""


def test_headers_are_bounded_in_total(tmp_path: Path) -> None:
    """Each header is under the 4 MiB a single header may take, but together they are far
    more than any bundle needs: refused with one clear line, without holding them."""
    members, header = 32, 4 * 1024 * 1024 - 1024
    bomb = tmp_path / "headers.tar.gz"
    with gzip.GzipFile(bomb, "wb", compresslevel=1, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for i in range(members):
                ti = tarfile.TarInfo(f"captures/S/m{i}")
                ti.pax_headers = {"comment": "x" * header}
                tf.addfile(ti, io.BytesIO(b""))
    assert bomb.stat().st_size < 2 * 1024 * 1024
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(bomb), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["codes"] == [1, 1, 1]
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 3, proc.stderr
    for line in errors:
        assert line.startswith("error: ") and "headers of its first" in line, line
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))
    # the headers add up to 128 MiB; read one at a time, and let go, they take ~30 MiB at
    # most (a 4 MiB header is copied a few times while tarfile parses it)
    grown = got["peak"] - got["base"]
    assert grown < members * header / 2.5, f"grew {grown >> 20} MiB"


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
    """int() refuses over 4300 digits with ValueError, which tarfile lets through."""
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
    with pytest.raises(EvidenceError, match=r"not a readable tar archive|damaged archive"):
        list(iter_members(path))


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
