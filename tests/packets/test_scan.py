"""The compiled record walk (``auditor/packets/_scan.c``) against the Python walk of
``pcapfile``: the same records, columns and warnings, whatever the input and however it is cut
into chunks and read pieces. The hypothesis version of this runs in ``tests/fuzz``."""

from __future__ import annotations

import io
import os
import shutil
import struct
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from auditor.packets import pcapfile
from auditor.packets.pcapfile import HEAD, CaptureReader, PcapError
from tests.packets.helpers import block, ether, idb, ipv4, pcap, shb, udp

try:
    from auditor.packets import _scan as scan
except ImportError:  # not built: the tests that need it skip
    scan = None
built = pytest.mark.skipif(scan is None, reason="the compiled walk is not built")


def test_the_compiled_walk_is_built_where_there_is_a_compiler() -> None:
    """Without it the reader is several times slower; a silent fallback would hide that."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler here")
    if os.environ.get("AUDITOR_PURE_PYTHON_SCAN"):
        assert pcapfile.SCANNER == "python"
    else:
        assert pcapfile.SCANNER == "compiled"


@contextmanager
def walk(compiled: bool, piece: int | None = None) -> Iterator[None]:
    saved, saved_piece = pcapfile._compiled, pcapfile.PIECE
    pcapfile._compiled = scan if compiled else None
    if piece is not None:
        pcapfile.PIECE = piece  # type: ignore[misc]
    try:
        yield
    finally:
        pcapfile._compiled, pcapfile.PIECE = saved, saved_piece  # type: ignore[misc]


def records(data: bytes, chunk: int, compiled: bool, piece: int | None = None) -> dict[str, object]:
    """Everything the reader gives for ``data``, read with one walk or the other."""
    with walk(compiled, piece):
        try:
            reader = CaptureReader(io.BytesIO(data), chunk_size=chunk)
        except PcapError as exc:
            return {"error": str(exc)}
        cols: dict[str, list[np.ndarray]] = {
            k: [] for k in ("at", "caplen", "wirelen", "ts", "iface", "link", "head")
        }
        for rb in reader:
            cols["at"].append(rb.offset + rb.data)
            cols["caplen"].append(rb.caplen)
            cols["wirelen"].append(rb.wirelen)
            cols["ts"].append(rb.ts_ns)
            cols["iface"].append(rb.iface)
            cols["link"].append(rb.link_type)
            # bytes past caplen are not the packet's: only the packet's are compared
            mask = np.arange(HEAD) < np.minimum(rb.caplen, HEAD)[:, None]
            cols["head"].append(np.where(mask, rb.head, 0))
    out: dict[str, object] = {k: (np.concatenate(v).tolist() if v else []) for k, v in cols.items()}
    out["warnings"] = dict(reader.warnings)
    out["packets"] = reader.packets
    return out


def assert_same(data: bytes, chunk: int = 4096, piece: int | None = None) -> dict[str, object]:
    fast = records(data, chunk, True, piece)
    slow = records(data, chunk, False, piece)
    assert fast == slow
    return fast


def _frames(n: int) -> list[tuple[int, bytes]]:
    out = []
    for i in range(n):
        payload = bytes([i % 251]) * (i * 37 % 700)
        out.append(
            (
                1_700_000_000_000_000_000 + i * 1_000_003,
                ether(ipv4("10.0.0.2", "10.0.0.9", 17, udp(4000 + i, 53, payload))),
            )
        )
    return out


@built
@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("nano", [False, True])
@pytest.mark.parametrize("chunk,piece", [(4096, None), (4096, 100), (65536, 333), (1 << 20, 4096)])
def test_pcap_records_agree(big_endian: bool, nano: bool, chunk: int, piece: int | None) -> None:
    data = pcap(_frames(300), big_endian=big_endian, nano=nano)
    got = assert_same(data, chunk, piece)
    assert got["packets"] == 300 and not got["warnings"]
    assert got["caplen"] == [len(f) for _, f in _frames(300)]


@built
def test_heads_are_zero_past_the_captured_length() -> None:
    """Both walks: a short record's head does not show the next record's bytes."""
    data = pcap([(1, b"\xaa" * 5), (2, b"\xbb" * 300)])
    for compiled in (True, False):
        with walk(compiled):
            (rb,) = list(CaptureReader(io.BytesIO(data)))
        assert rb.head[0, :5].tolist() == [0xAA] * 5
        assert not rb.head[0, 5:].any()
        assert rb.head[1].tolist() == [0xBB] * HEAD


@built
@pytest.mark.parametrize(
    "tail",
    [
        b"",
        b"\x01\x02\x03",  # a record header cut short
        struct.pack("<IIII", 0, 0, 100, 100) + b"x" * 10,  # a record cut short
        struct.pack("<IIII", 0, 0, 2**31, 2**31),  # too large
        struct.pack("<IIII", 0, 0, 0, 0) * 3,  # empty records
        struct.pack("<IIII", 0, 0, 10, 5) + b"y" * 10,  # caplen above wirelen
    ],
)
def test_damage_is_counted_alike(tail: bytes) -> None:
    assert_same(pcap(_frames(40)) + tail, 4096, 64)


@built
def test_pcapng_agrees_across_sections_and_block_kinds() -> None:
    body = b""
    for order in ("<", ">"):
        body += shb(order) + idb(order, 1)
        for i, (_, frame) in enumerate(_frames(50)):
            kind = (6, 3, 2, 4, 5)[i % 5]
            if kind == 6:
                content = struct.pack(order + "IIIII", 0, 0, i, len(frame), len(frame))
            elif kind == 3:
                content = struct.pack(order + "I", len(frame))
            elif kind == 2:
                content = struct.pack(order + "HHIIII", 0, 0, 0, i, len(frame), len(frame))
            else:
                content = b""
            pad = b"\0" * (-len(frame) % 4) if kind in (6, 3, 2) else b""
            body += block(order, kind, content + (frame + pad if kind in (6, 3, 2) else b""))
    got = assert_same(body, 4096, 128)
    assert isinstance(got["packets"], int) and got["packets"] > 50


@built
def test_real_captures_agree(shared_captures: Path) -> None:
    files = sorted(p for p in shared_captures.iterdir() if p.suffix in (".pcap", ".pcapng"))
    assert files
    for path in files:
        data = path.read_bytes()
        for chunk, piece in ((4096, 1000), (1 << 20, None)):
            assert_same(data, chunk, piece)


@built
def test_direct_calls_match_the_python_walk() -> None:
    data = bytearray(pcap(_frames(64))) + bytearray(pcapfile.PAD)
    end = len(data) - pcapfile.PAD
    for pos in (24, 25, 100):
        for cut in (end, end - 1, end - 500, pos):
            want: array[int] = array("q")
            stop = pcapfile._scan_pcap(data, pos, cut, want, struct.Struct("<I").unpack_from)
            pos2, data_col, *_ = scan.pcap_records(data, pos, cut, False, 1000, HEAD)
            assert pos2 == stop
            assert np.frombuffer(data_col, np.int64).tolist() == [o + 16 for o in want]


@built
def test_pcapng_records_copy_what_a_gather_reads() -> None:
    """The rows and trailing lengths copied during the walk are the bytes a gather reads."""
    body = shb("<") + idb("<", 1)
    for i, (_, frame) in enumerate(_frames(30)):
        content = struct.pack("<IIIII", 0, 0, i, len(frame), len(frame))
        body += block("<", 6, content + frame + b"\0" * (-len(frame) % 4))
    data = bytearray(body) + bytearray(pcapfile.PAD)
    start = len(shb("<") + idb("<", 1))
    packed, stop, rows, trailers = scan.pcapng_records(data, start, len(body), False, 28 + HEAD)
    assert (packed, stop) == scan.scan_pcapng(data, start, len(body), False)
    offs = np.frombuffer(packed, np.int64)
    assert len(offs) == 30 and stop == len(body)
    buf = np.frombuffer(data, np.uint8)
    want = pcapfile.window(buf, offs, 28 + HEAD)
    assert np.frombuffer(rows, np.uint8).reshape(30, -1).tolist() == want.tolist()
    lengths = [struct.unpack_from("<I", data, o + 4)[0] for o in offs.tolist()]
    got = np.frombuffer(trailers, np.int64).tolist()
    assert got == [
        struct.unpack_from("<I", data, o + n - 4)[0]
        for o, n in zip(offs.tolist(), lengths, strict=True)
    ]
    assert got == lengths


@built
@pytest.mark.parametrize(
    "args",
    [
        (-1, 10),  # before the buffer
        (10, 5),  # end before pos
        (0, 10**6),  # past the buffer
    ],
)
def test_ranges_outside_the_buffer_are_refused(args: tuple[int, int]) -> None:
    buf = bytearray(100)
    with pytest.raises(ValueError):
        scan.scan_pcapng(buf, *args, False)
    with pytest.raises(ValueError):
        scan.pcap_records(buf, *args, False, 1000, HEAD)
    with pytest.raises(ValueError):
        scan.pcapng_records(buf, *args, False, 28 + HEAD)


@built
def test_lengths_that_point_past_the_end_stop_the_walk() -> None:
    buf = bytearray(struct.pack("<IIII", 0, 0, 0xFFFFFFFF, 0) + b"\0" * 64)
    stop, data_col, *_ = scan.pcap_records(buf, 0, len(buf), False, 1000, HEAD)
    assert (bytes(data_col), stop) == (b"", 0)
    block_buf = bytearray(struct.pack("<II", 6, 0xFFFFFFFC) + b"\0" * 64)
    assert scan.scan_pcapng(block_buf, 0, len(block_buf), False) == (b"", 0)
