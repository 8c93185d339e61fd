"""Compressed inputs: mitmproxy's .zhar, gzipped HARs, gzip/zstd packet captures, by magic."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import pytest
import zstandard

import auditor.imports.session as import_session
from auditor.evidence.verify import verify_session
from auditor.imports import (
    Compression,
    ImportFileError,
    ImportFormat,
    compression,
    decompress_bounded,
    decompressed_head,
    detect_format,
)
from auditor.imports.session import import_files
from auditor.records import HttpRecord
from auditor.session import Session

ROOT = Path(__file__).resolve().parents[2]
ZHAR = ROOT / "tests" / "data" / "har" / "compressed.zhar"
SAMPLES = Path(__file__).parent / "samples"


def _sessions(out: Path) -> list[Path]:
    return sorted(out.iterdir()) if out.exists() else []


def _urls(session: Path) -> list[str]:
    return [r.url for r in Session(session).records() if isinstance(r, HttpRecord)]


# ------------------------------------------------------------------------------------- HAR


def test_mitmproxy_zhar_is_imported_as_the_har_it_holds(tmp_path: Path) -> None:
    data = ZHAR.read_bytes()
    assert compression(data) is Compression.ZLIB and detect_format(data) is ImportFormat.HAR
    # the reference: the standard library's zlib and json, not auditor's reader
    entries = json.loads(zlib.decompress(data))["log"]["entries"]
    res = import_files([ZHAR], tmp_path)
    assert res.status == "complete" and verify_session(res.session).ok
    (f,) = res.files
    assert f["compression"] == "zlib" and f["format"] == "har"
    assert f["size"] == len(data)  # the original, compressed, is what was kept and hashed
    assert (res.session / "original" / ZHAR.name).read_bytes() == data
    assert _urls(res.session) == [e["request"]["url"] for e in entries]


def test_gzipped_har_gives_the_same_records_as_the_plain_one(tmp_path: Path) -> None:
    plain = SAMPLES / "chrome.har"
    packed = tmp_path / "chrome.har.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    a = import_files([plain], tmp_path / "a")
    b = import_files([packed], tmp_path / "b")
    assert b.files[0]["compression"] == "gzip"
    assert _urls(b.session) == _urls(a.session) and _urls(a.session)
    assert b.files[0]["counts"] == a.files[0]["counts"]


def test_a_zhar_bomb_is_refused_before_it_fills_the_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(import_session, "MAX_DECOMPRESSED_HAR", 1024 * 1024)
    bomb = tmp_path / "bomb.zhar"
    bomb.write_bytes(zlib.compress(b'{"log": {"entries": [' + b" " * (16 * 1024 * 1024), 9))
    assert bomb.stat().st_size < 64 * 1024
    with pytest.raises(ImportFileError, match=r"bomb\.zhar: decompresses to more than 1048576"):
        import_files([bomb], tmp_path / "out")
    assert _sessions(tmp_path / "out") == []


def test_decompression_stops_at_the_limit() -> None:
    data = zstandard.ZstdCompressor().compress(b"x" * (4 * 1024 * 1024))
    with pytest.raises(ImportFileError, match="more than 100000 bytes"):
        decompress_bounded(data, 100_000, "z")
    assert decompress_bounded(data, 4 * 1024 * 1024, "z") == b"x" * (4 * 1024 * 1024)


def test_a_truncated_zhar_is_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    cut = tmp_path / "cut.zhar"
    cut.write_bytes(ZHAR.read_bytes()[:900])
    with pytest.raises(ImportFileError, match=r"cut\.zhar: zlib data is damaged after \d+"):
        import_files([cut], tmp_path / "out")
    assert _sessions(tmp_path / "out") == []


def test_compressed_flow_files_and_unknown_content_are_refused(tmp_path: Path) -> None:
    flows = tmp_path / "flows.mitm.gz"
    flows.write_bytes(gzip.compress((ROOT / "tests/data/mitm/websocket.mitm").read_bytes()))
    with pytest.raises(ImportFileError, match="gzip-compressed mitmproxy flow file"):
        import_files([flows], tmp_path / "out")
    junk = tmp_path / "junk.gz"
    junk.write_bytes(gzip.compress(b"\x89PNG\r\n\x1a\n" * 10))
    with pytest.raises(ImportFileError, match=r"unknown format \(gzip-compressed data"):
        import_files([junk], tmp_path / "out")
    assert _sessions(tmp_path / "out") == []


# ---------------------------------------------------------------------------- captures


def test_decompressed_head_of_a_cut_stream_gives_what_it_can() -> None:
    data = gzip.compress(bytes(range(256)) * 1000)
    assert decompressed_head(data[:200])  # cut deep inside: still some bytes
    assert decompressed_head(data, 10) == bytes(range(10))
    assert decompressed_head(b"plain") == b"plain"


@pytest.mark.parametrize(
    ("name", "pack", "kind"),
    [
        ("pcapdroid_metadata.pcap", gzip.compress, "gzip"),
        ("quicmitm_capture.pcap", lambda d: zstandard.ZstdCompressor().compress(d), "zstd"),
    ],
)
def test_compressed_capture_imports_like_the_plain_one(
    shared_captures: Path, tmp_path: Path, name: str, pack: object, kind: str
) -> None:
    plain = shared_captures / name
    packed = tmp_path / f"{name}.{'gz' if kind == 'gzip' else 'zst'}"
    packed.write_bytes(pack(plain.read_bytes()))  # type: ignore[operator]
    head = packed.read_bytes()[: 1024 * 1024]
    assert detect_format(head) is ImportFormat.PCAP
    a = import_files([plain], tmp_path / "a")
    b = import_files([packed], tmp_path / "b")
    assert b.files[0]["compression"] == kind
    assert b.files[0]["counts"] == a.files[0]["counts"] and a.files[0]["counts"]["packets"]
    assert (
        b.manifest["capture"]["import"]["first_ts"] == a.manifest["capture"]["import"]["first_ts"]
    )
    assert verify_session(b.session).ok


def test_a_cut_compressed_capture_keeps_the_packets_before_the_cut(
    shared_captures: Path, tmp_path: Path
) -> None:
    data = gzip.compress((shared_captures / "pcapdroid_metadata.pcap").read_bytes())
    cut = tmp_path / "cut.pcap.gz"
    cut.write_bytes(data[: len(data) // 2])
    res = import_files([cut], tmp_path / "out")
    assert 0 < res.files[0]["counts"]["packets"] < 193
    assert any("damaged" in w and "compressed-stream-truncated" in w for w in res.warnings), (
        res.warnings
    )


def test_the_analyser_reads_a_compressed_capture_from_the_session(
    shared_captures: Path, tmp_path: Path
) -> None:
    from auditor.analysis.engine import analyze

    plain = shared_captures / "pcapdroid_metadata.pcap"
    packed = tmp_path / "metadata.pcap.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    a = analyze([import_files([plain], tmp_path / "a").session])
    b = analyze([import_files([packed], tmp_path / "b").session])
    assert len(b.flows) == len(a.flows) > 0
    assert sorted(b.flows["server_ip"]) == sorted(a.flows["server_ip"])


def test_a_cut_zstd_capture_is_reported_damaged(shared_captures: Path, tmp_path: Path) -> None:
    """zstd says nothing when a stream stops inside a frame: the capture reader's own frame
    walk must see it, so the import reads the file through the reader, not around it."""

    plain = (shared_captures / "pcapdroid_metadata.pcap").read_bytes()
    zc = zstandard.ZstdCompressor()
    # frames of 8 KiB, as a streaming writer flushes them: the head decompresses whole
    data = b"".join(zc.compress(plain[i : i + 8192]) for i in range(0, len(plain), 8192))
    cut = tmp_path / "cut.pcap.zst"
    cut.write_bytes(data[: len(data) // 2])
    res = import_files([cut], tmp_path / "out")
    assert res.files[0]["counts"]["packets"] < 193
    assert any("compressed-stream-truncated" in w for w in res.warnings), res.warnings
