"""Record-level readers: pcap in both byte orders and resolutions, pcapng blocks and options,
bounded chunks, and what damaged or foreign input does."""

from __future__ import annotations

import io
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from auditor.packets.pcapfile import (
    MAX_RECORD,
    CaptureReader,
    PcapError,
    RecordBatch,
)
from tests.packets.helpers import (
    custom,
    epb,
    idb,
    isb,
    nrb,
    obsolete_pb,
    pcap,
    shb,
    spb,
)

T0 = 1_700_000_000_123_456_789  # ns


def _records(
    data: bytes, **kw: int
) -> tuple[CaptureReader, list[tuple[int, bytes, int, int, int]]]:
    """(ts_ns, data, wirelen, link type, interface) of every packet, in file order."""
    reader = CaptureReader(io.BytesIO(data), **kw)
    out = []
    for b in reader:
        for i in range(len(b)):
            start = int(b.data[i])
            out.append(
                (
                    int(b.ts_ns[i]),
                    bytes(b.raw[start : start + int(b.caplen[i])]),
                    int(b.wirelen[i]),
                    int(b.link_type[i]),
                    int(b.iface[i]),
                )
            )
    return reader, out


PAYLOADS = [bytes([i]) * (20 + 37 * i) for i in range(12)]


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_byte_orders_and_resolutions(big_endian: bool, nano: bool) -> None:
    recs = [(T0 + i * 1_000_001_001, p) for i, p in enumerate(PAYLOADS)]
    data = pcap(recs, link=228, big_endian=big_endian, nano=nano)
    reader, got = _records(data)
    assert reader.format == "pcap"
    assert reader.link_types == (228,)
    assert [g[1] for g in got] == PAYLOADS
    expect = [t if nano else t - t % 1000 for t, _ in recs]
    assert [g[0] for g in got] == expect
    assert {g[3] for g in got} == {228}
    assert reader.warnings == {}


def test_pcap_original_length_and_snaplen_cut() -> None:
    data = pcap([(T0, b"abcd", 1500)])
    _, got = _records(data)
    assert got[0][1:3] == (b"abcd", 1500)


def test_pcap_link_type_masks_fcs_bits() -> None:
    data = bytearray(pcap([(T0, b"x" * 20)], link=1))
    struct.pack_into("<I", data, 20, 0x10000000 | 1)  # FCS flag bits above the link type
    reader, _ = _records(bytes(data))
    assert reader.link_types == (1,)


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_blocks_options_and_comments(order: str) -> None:
    o = order
    data = (
        shb(o, comment="a section")
        + idb(o, 1, snaplen=96, name="wlan0", comment="wifi")
        + idb(o, 276, tsresol=9, tsoffset=10)  # nanoseconds, offset by 10 s
        + idb(o, 101, tsresol=0x80 | 20)  # 2^-20 s
        + nrb(o)
        + epb(o, 0, (T0 // 1000), b"first", comment="hello packet")
        + custom(o)
        + epb(o, 1, T0, b"second-sll2", orig=400)
        + isb(o, 0)
        + obsolete_pb(o, 0, T0 // 1000 + 5, b"third-obsolete")
        + spb(o, b"fourth-simple")
        + epb(o, 2, (T0 // 1_000_000_000) << 20 | (1 << 19), b"fifth-raw")
    )
    reader, got = _records(data)
    assert reader.format == "pcapng"
    assert [g[1] for g in got] == [
        b"first",
        b"second-sll2",
        b"third-obsolete",
        b"fourth-simple",
        b"fifth-raw",
    ]
    ts = [g[0] for g in got]
    assert ts[0] == T0 - T0 % 1000
    assert ts[1] == T0 + 10_000_000_000
    assert ts[2] == T0 - T0 % 1000 + 5000
    assert ts[3] == ts[2]  # a Simple Packet Block takes the previous packet's time
    assert ts[4] == (T0 // 1_000_000_000) * 1_000_000_000 + 500_000_000
    assert [g[3] for g in got] == [1, 276, 1, 1, 101]
    assert [g[4] for g in got] == [0, 1, 0, 0, 2]
    assert got[1][2] == 400
    assert [i.name for i in reader.interfaces] == ["wlan0", "", ""]
    assert [(c.where, c.index, c.text) for c in reader.comments] == [
        ("section", 0, "a section"),
        ("interface", 0, "wifi"),
        ("packet", 0, "hello packet"),
    ]
    assert reader.warnings == {"pcapng-spb-no-timestamp": 1}


def test_pcapng_simple_packet_block_is_cut_to_the_snaplen() -> None:
    data = shb() + idb("<", 101, snaplen=8) + spb("<", b"0123456789abcdef")
    _, got = _records(data)
    assert got[0][1:3] == (b"01234567", 16)


def test_pcapng_sections_change_byte_order_and_interfaces() -> None:
    first = shb("<") + idb("<", 1) + epb("<", 0, 1, b"le-packet")
    second = shb(">") + idb(">", 113) + idb(">", 0) + epb(">", 1, 2, b"be-packet")
    reader, got = _records(first + second)
    assert [(g[1], g[3], g[4]) for g in got] == [(b"le-packet", 1, 0), (b"be-packet", 0, 2)]
    assert [(i.index, i.section, i.link_type) for i in reader.interfaces] == [
        (0, 0, 1),
        (1, 1, 113),
        (2, 1, 0),
    ]
    assert reader.link_types == (0, 1, 113)


def test_scapy_written_pcapng_and_pcap_read_back(tmp_path: Path) -> None:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import PcapNgWriter, wrpcap

    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # no ARP lookup
    pkts = [eth / IP(dst=f"10.0.0.{i}") / UDP(dport=1000 + i) / (b"x" * i) for i in range(5)]
    for i, p in enumerate(pkts):
        p.time = 1_700_000_000 + i / 4
    wrpcap(str(tmp_path / "a.pcap"), pkts)
    with PcapNgWriter(str(tmp_path / "a.pcapng")) as w:
        for p in pkts:
            w.write(p)
    for name in ("a.pcap", "a.pcapng"):
        reader, got = _records((tmp_path / name).read_bytes())
        assert [g[1] for g in got] == [bytes(p) for p in pkts]
        assert [g[0] for g in got] == [
            1_700_000_000_000_000_000 + i * 250_000_000 for i in range(5)
        ]
        assert reader.link_types == (1,)


# ------------------------------------------------------------------------- chunked reading


def _big_capture(n: int = 3000) -> tuple[bytes, list[bytes]]:
    rng = np.random.default_rng(1)
    payloads = [
        bytes(rng.integers(0, 256, int(k), dtype=np.uint8)) for k in rng.integers(0, 3000, n)
    ]
    return pcap([(T0 + i, p) for i, p in enumerate(payloads)], link=101), payloads


@pytest.mark.parametrize("chunk", [4096, 10_000, 1 << 20])
def test_chunking_gives_the_same_records(chunk: int) -> None:
    data, payloads = _big_capture()
    reader, got = _records(data, chunk_size=chunk)
    assert [g[1] for g in got] == payloads
    assert [g[0] for g in got] == [(T0 + i) // 1000 * 1000 for i in range(len(payloads))]
    assert reader.warnings.get("empty-record", 0) == sum(1 for p in payloads if not p)


def test_file_offsets_of_packet_data() -> None:
    data, payloads = _big_capture(500)
    for b in CaptureReader(io.BytesIO(data), chunk_size=4096):
        for i in range(len(b)):
            at = b.offset + int(b.data[i])
            assert data[at : at + int(b.caplen[i])] == payloads[b.first + i]


def test_a_record_larger_than_the_chunk_is_read_whole() -> None:
    big = bytes(range(256)) * 100  # 25.6 kB
    data = pcap([(T0, b"a"), (T0, big), (T0, b"b")], link=101)
    _, got = _records(data, chunk_size=4096)
    assert [g[1] for g in got] == [b"a", big, b"b"]


def test_batches_kept_by_the_caller_stay_intact() -> None:
    data, payloads = _big_capture(800)
    batches: list[RecordBatch] = list(CaptureReader(io.BytesIO(data), chunk_size=4096))
    assert len(batches) > 10
    got = [
        bytes(b.raw[int(b.data[i]) : int(b.data[i] + b.caplen[i])])
        for b in batches
        for i in range(len(b))
    ]
    assert got == payloads


def test_memory_stays_bounded_by_the_chunk(tmp_path: Path) -> None:
    data, _ = _big_capture(20_000)  # about 30 MB
    path = tmp_path / "big.pcap"
    path.write_bytes(data)
    del data
    tracemalloc.start()
    try:
        n = 0
        with open(path, "rb") as fh:
            for batch in CaptureReader(fh, chunk_size=1 << 20):
                n += len(batch)
                del batch
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 20_000
    assert peak < 8 << 20, (
        f"peak {peak / 2**20:.1f} MiB while reading {path.stat().st_size >> 20} MiB"
    )


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"not a capture at all, just text", "not a pcap"),
        (b"\xd4\xc3\xb2\xa1\x02\x00", "truncated pcap file header"),
        (b"\x34\xcd\xb2\xa1" + bytes(20), "Kuznetsov"),
        (b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00", "truncated pcapng"),
        (b"\x0a\x0d\x0d\x0a" + bytes(24), "byte-order magic"),
    ],
)
def test_not_a_capture_raises_pcap_error(data: bytes, message: str) -> None:
    with pytest.raises(PcapError, match=message):
        CaptureReader(io.BytesIO(data))


def test_pcap_error_is_an_auditor_error() -> None:
    from auditor.errors import AuditorError

    assert issubclass(PcapError, AuditorError)


def test_truncated_mid_record_keeps_what_came_before() -> None:
    data = pcap([(T0, b"one"), (T0, b"two"), (T0, b"three-is-long")], link=101)
    for cut in (len(data) - 5, len(data) - 13 - 8):  # in the data, in the record header
        reader, got = _records(data[:cut])
        assert [g[1] for g in got] == [b"one", b"two"]
        assert reader.warnings == {"truncated-record": 1}


def test_huge_record_stops_with_a_warning() -> None:
    data = bytearray(pcap([(T0, b"ok"), (T0, b"bad"), (T0, b"never")], link=101))
    struct.pack_into("<I", data, 24 + 16 + 2 + 8, MAX_RECORD + 1)
    reader, got = _records(bytes(data))
    assert [g[1] for g in got] == [b"ok"]
    assert reader.warnings == {"record-too-large": 1}


def test_zero_length_records_and_caplen_above_wirelen_are_counted() -> None:
    data = pcap([(T0, b""), (T0, b"abc", 2), (T0, b"fine")], link=101)
    reader, got = _records(data)
    assert [g[1] for g in got] == [b"", b"abc", b"fine"]
    assert reader.warnings == {"empty-record": 1, "caplen-exceeds-wirelen": 1}


def test_pcapng_damage_is_counted() -> None:
    o = "<"
    good = shb(o) + idb(o, 101) + epb(o, 0, 1, b"good")
    mismatch = bytearray(epb(o, 0, 2, b"mismatch"))
    struct.pack_into("<I", mismatch, len(mismatch) - 4, 999)
    over = bytearray(epb(o, 0, 3, b"over"))
    struct.pack_into("<I", over, 20, 64)  # captured length past the block
    unknown_iface = epb(o, 7, 4, b"where")
    odd = struct.pack("<II", 0x00000042, 16) + b"????" + struct.pack("<I", 16)
    bad_length = struct.pack("<II", 6, 13) + bytes(16)  # a length no block can have
    data = (
        good + bytes(mismatch) + bytes(over) + unknown_iface + odd + epb(o, 0, 5, b"x") + bad_length
    )
    reader, got = _records(data)
    assert [g[1] for g in got][:2] == [b"good", b"mismatch"]
    assert got[2][1].startswith(b"over")
    assert got[3][3] == -1  # no such interface
    assert [g[1] for g in got][4] == b"x"
    assert reader.warnings == {
        "pcapng-block-length-mismatch": 1,
        "pcapng-caplen-exceeds-block": 1,
        "pcapng-unknown-interface": 1,
        "pcapng-unknown-block": 1,
        "pcapng-bad-block": 1,
    }


def test_pcapng_truncated_block() -> None:
    data = shb() + idb("<", 101) + epb("<", 0, 1, b"whole") + epb("<", 0, 2, b"cut off here")
    reader, got = _records(data[:-10])
    assert [g[1] for g in got] == [b"whole"]
    assert reader.warnings == {"truncated-record": 1}


def test_pcapng_timestamp_out_of_range() -> None:
    data = shb() + idb("<", 101, tsresol=3) + epb("<", 0, (1 << 63) + 5, b"far")
    reader, got = _records(data)
    assert got[0][0] == 0
    assert reader.warnings == {"timestamp-out-of-range": 1}


def test_real_captures_read_without_warnings_but_the_invalid_one(shared_captures: Path) -> None:
    for path in sorted(shared_captures.glob("*.pcap")):
        with open(path, "rb") as fh:
            reader = CaptureReader(fh)
            n = sum(len(b) for b in reader)
        assert n > 0, path.name
        assert reader.warnings == {}, path.name  # damage there is in the packets, not records


# -------------------------------------------------------------------- many sections


def _sections_capture() -> tuple[bytes, list[tuple[int, int]]]:
    """Sections in one byte order, then the other, each with its own interfaces (link types,
    clocks); packets in each. Returns the file and (interface, link type) per packet."""
    out = b""
    want: list[tuple[int, int]] = []
    first = 0
    for s in range(40):
        o = ">" if 20 <= s < 25 else "<"
        links = [(1, 101, 0)[s % 3]] + ([113] if s % 4 == 0 else [])
        out += shb(o)
        for k, link in enumerate(links):
            out += idb(o, link, tsresol=(6, 9, 0x80 | 20)[(s + k) % 3], tsoffset=s % 5 or None)
        for k in range(len(links)):
            out += epb(o, k, 1_700_000_000 * (s + 1) + k, b"\x45" + bytes(27))
            want.append((first + k, links[k]))
        first += len(links)
    return out, want


def test_many_sections_in_one_batch_keep_their_interfaces() -> None:
    data, want = _sections_capture()
    reader, got = _records(data)
    assert [(g[4], g[3]) for g in got] == want
    assert len(reader.interfaces) == want[-1][0] + 1
    assert reader.warnings == {}
    # batches span sections of one byte order (a batch per section cost what a batch costs)
    assert len(list(CaptureReader(io.BytesIO(data)))) <= 3


def test_many_sections_match_tshark(tmp_path: Path) -> None:
    """Interface and timestamp of every packet, as tshark reads them."""
    import shutil
    import subprocess

    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed")
    data, _ = _sections_capture()
    path = tmp_path / "sections.pcapng"
    path.write_bytes(data)
    out = subprocess.run(
        [tshark, "-r", str(path), "-T", "fields", "-e", "frame.interface_id",
         "-e", "frame.time_epoch"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    theirs = []
    for line in out.splitlines():
        iface, epoch = line.split("\t")
        whole, _, frac = epoch.partition(".")
        theirs.append((int(iface), int(whole) * 10**9 + int(frac.ljust(9, "0")[:9])))
    reader, got = _records(data)
    firsts: dict[int, int] = {}
    for i in reader.interfaces:
        firsts.setdefault(i.section, i.index)
    # tshark 4.0 numbers interfaces within their section
    ours = [(g[4] - firsts[reader.interfaces[g[4]].section], g[0]) for g in got]
    assert [o[0] for o in ours] == [t[0] for t in theirs]
    # tshark prints 9 digits; binary fractions (2**-20 s) round differently by a few ns
    assert all(abs(o[1] - t[1]) <= 1000 for o, t in zip(ours, theirs, strict=True))


def test_packets_of_a_file_without_interfaces_are_counted() -> None:
    """No IDB at all: the interface table is empty, not indexed (a fuzzed file found it)."""
    data = shb("<") + epb("<", 0, 1, b"\x45" + bytes(27)) + spb("<", b"\x45" + bytes(27))
    reader, got = _records(data)
    assert [(g[3], g[4]) for g in got] == [(-1, -1), (-1, -1)]
    assert reader.warnings["pcapng-unknown-interface"] == 1


def test_the_buffer_is_let_go_at_the_end_but_not_a_batch_still_held() -> None:
    data, payloads = _big_capture(500)
    reader = CaptureReader(io.BytesIO(data), chunk_size=1 << 20)
    it = iter(reader)
    batches = [next(it)]
    assert len(reader._chunks.raw) > len(data) // 2  # one buffer holds the file
    batches += it  # read to the end: the reader lets go of its buffer by itself
    assert len(reader._chunks.raw) < 4096
    for b in batches:  # the batches kept keep their bytes
        for i in range(len(b)):
            at = int(b.data[i])
            assert bytes(b.raw[at : at + int(b.caplen[i])]) == payloads[b.first + i]
