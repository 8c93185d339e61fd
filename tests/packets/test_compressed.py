"""Compressed captures: gzip and zstd streams read as they are decompressed.

The zstd file is a real one (PcapPlusPlus's test suite, see tests/data/pcap/PROVENANCE.md);
the gzip ones are made here from the real captures there. tshark reads both kinds itself, so
what auditor reads is compared with it. Truncated and damaged streams give the packets before
the damage and a counted warning; memory stays bounded by the chunk size, whatever the
stream decompresses to.
"""

from __future__ import annotations

import gzip
import io
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest
import zstandard

from auditor.packets import read_capture
from auditor.packets.pcapfile import (
    CaptureReader,
    PcapError,
    compression_of,
    decompressed_head,
)
from tests.packets.helpers import ether, ipv4, pcap, udp
from tests.packets.test_linktypes import DATA, TSHARK, _auditor_tuples, _tshark_tuples

ZST = DATA / "pcapng-example.pcapng.zst"
PLAIN = DATA / "quic_handshake.pcap"

needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")


@pytest.fixture(scope="module")
def inner() -> bytes:
    """The pcapng inside the real zstd file."""
    return zstandard.ZstdDecompressor().stream_reader(ZST.open("rb")).read()


@pytest.fixture(scope="module")
def gz_pcapng(inner: bytes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gz") / "example.pcapng.gz"
    path.write_bytes(gzip.compress(inner))
    return path


@needs_tshark
def test_zstd_capture_matches_tshark() -> None:
    r = read_capture(ZST)
    assert r.format == "pcapng" and r.counts["packets"] == 159
    assert _auditor_tuples(ZST) == _tshark_tuples(ZST)


@needs_tshark
def test_gzip_pcapng_matches_tshark(gz_pcapng: Path) -> None:
    assert _auditor_tuples(gz_pcapng) == _tshark_tuples(gz_pcapng)


def test_compressed_reads_as_the_plain_file(tmp_path: Path, inner: bytes) -> None:
    """Told by magic, not by name: a gzip file named .pcap, a zstd one named .pcapng."""
    gz = tmp_path / "capture.pcap"
    gz.write_bytes(gzip.compress(PLAIN.read_bytes()))
    assert _auditor_tuples(gz) == _auditor_tuples(PLAIN)
    zs = tmp_path / "capture.pcapng"
    zs.write_bytes(zstandard.ZstdCompressor().compress(PLAIN.read_bytes()))
    assert _auditor_tuples(zs) == _auditor_tuples(PLAIN)
    with zs.open("rb") as fh:
        assert CaptureReader(fh).compression == "zstd"


def test_multi_member_gzip_and_multi_frame_zstd() -> None:
    raw = PLAIN.read_bytes()
    members = gzip.compress(raw[:3000]) + gzip.compress(raw[3000:])
    c = zstandard.ZstdCompressor(write_checksum=True)
    frames = b"".join(c.compress(raw[i : i + 700]) for i in range(0, len(raw), 700))
    want = read_capture(PLAIN).counts["packets"]
    for data in (members, frames):
        r = read_capture(io.BytesIO(data))
        assert r.counts["packets"] == want and not r.warnings


def _tuples_of(data: bytes) -> tuple[list[tuple[str, str, int, int]], Counter[str]]:
    r = read_capture(io.BytesIO(data))
    p = r.packets
    cols = (p["src"].astype(str), p["dst"].astype(str), p["sport"], p["dport"])
    return list(zip(*cols, strict=True)), r.warnings


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_truncated_stream_keeps_what_came_before(kind: str) -> None:
    raw = PLAIN.read_bytes()
    if kind == "gzip":
        data = gzip.compress(raw)
    else:  # small frames, so that a cut one leaves the ones before it readable
        c = zstandard.ZstdCompressor(write_checksum=True)
        data = b"".join(c.compress(raw[i : i + 1000]) for i in range(0, len(raw), 1000))
    whole, _ = _tuples_of(raw)
    for cut in (len(data) * 2 // 3, len(data) - 2):
        got, warnings = _tuples_of(data[:cut])
        assert warnings["compressed-stream-truncated"] == 1
        assert 0 < len(got) <= len(whole) and got == whole[: len(got)]


def test_corrupt_streams_are_counted_or_refused() -> None:
    raw = PLAIN.read_bytes()
    data = bytearray(gzip.compress(raw))
    data[len(data) // 2] ^= 0xFF
    try:
        got, warnings = _tuples_of(bytes(data))
    except PcapError:  # nothing came out before the damage
        pass
    else:
        assert warnings["compressed-stream-corrupt"] == 1
    junk = gzip.compress(raw) + b"not gzip at all"
    got, warnings = _tuples_of(junk)
    assert len(got) == read_capture(PLAIN).counts["packets"]
    assert warnings["compressed-stream-corrupt"] == 1
    with pytest.raises(PcapError, match="gzip-compressed, but not a pcap"):
        read_capture(io.BytesIO(gzip.compress(b"hello, this is text")))
    with pytest.raises(PcapError, match="zstd-compressed, but holds nothing"):
        read_capture(io.BytesIO(zstandard.ZstdCompressor().compress(raw)[:20]))


def test_a_stream_that_cannot_seek() -> None:
    class Pipe(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
            return self._data.readinto(b)

    raw = PLAIN.read_bytes()
    want = read_capture(PLAIN).counts["packets"]
    for data in (raw, gzip.compress(raw), zstandard.ZstdCompressor().compress(raw)):
        assert read_capture(Pipe(data)).counts["packets"] == want  # type: ignore[arg-type]
        buffered = io.BufferedReader(Pipe(data))  # peeked, not read
        assert read_capture(buffered).counts["packets"] == want


def test_decompressed_head(tmp_path: Path, gz_pcapng: Path) -> None:
    assert decompressed_head(ZST, 4) == b"\x0a\x0d\x0d\x0a"
    assert decompressed_head(gz_pcapng, 4) == b"\x0a\x0d\x0d\x0a"
    assert decompressed_head(PLAIN, 4) == PLAIN.read_bytes()[:4]
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gz_pcapng.read_bytes()[:40])
    assert gz_pcapng.read_bytes() != cut.read_bytes()
    assert len(decompressed_head(cut, 1 << 20)) < 1 << 20  # what there is, no error
    assert compression_of(b"\x1f\x8b\x08\x00") == "gzip"
    assert compression_of(ZST.read_bytes()[:4]) == "zstd"
    assert compression_of(PLAIN.read_bytes()[:4]) is None


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_memory_stays_bounded_by_the_chunk(kind: str) -> None:
    """A stream that decompresses to 24 MiB, read in 1 MiB chunks: the reader's peak stays a
    few chunks, not the decompressed size."""
    frame = ether(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 53, bytes(1400))))
    one = pcap([(i, frame) for i in range(1000)])
    body = one[24:] * 17  # ~24 MiB of records behind one header
    raw = one[:24] + body
    if kind == "gzip":
        data = gzip.compress(raw, compresslevel=1)
    else:
        data = zstandard.ZstdCompressor(level=1).compress(raw)
    assert len(data) < 2 << 20
    tracemalloc.start()
    try:
        n = sum(len(b) for b in CaptureReader(io.BytesIO(data), chunk_size=1 << 20))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 17_000
    assert peak < 8 << 20, peak
