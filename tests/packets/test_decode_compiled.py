"""The compiled header decoder (``auditor/packets/_decode.c``) against the numpy reference
(``Decoder._decode_numpy``): every column of every batch, the warnings and counts (keys in the
same order) and the decoder's table of PCAPdroid apps, on the real captures, on generated
captures of every link type and kind of damage (cut at every length), and on hostile input.
``payload_head`` is compared over its meaningful bytes (the first ``min(payload_len, 16)``);
the compiled decoder leaves zeros after them."""

from __future__ import annotations

import dataclasses
import io
import os
import random
import shutil
import struct
from collections import Counter
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.packets import decode as D
from auditor.packets.pcapfile import HEAD, CaptureReader, PcapError, RecordBatch
from tests.fuzz.helpers import mutated
from tests.packets import test_linktypes as linktypes
from tests.packets.helpers import (
    SHARED_CAPTURES,
    epb,
    ether,
    idb,
    ipv4,
    ipv6,
    null,
    pcap,
    pcapdroid_trailer,
    shb,
    sll,
    sll2,
    tcp,
    udp,
)
from tests.packets.test_scan import walk

try:
    from auditor.packets import _decode as compiled
except ImportError:  # not built: the tests that need it skip
    compiled = None  # type: ignore[assignment]
built = pytest.mark.skipif(compiled is None, reason="the compiled decoder is not built")

COLUMNS = (
    "ip_version",
    "src_hi",
    "src_lo",
    "dst_hi",
    "dst_lo",
    "proto",
    "sport",
    "dport",
    "tcp_flags",
    "l4_off",
    "payload_off",
    "payload_len",
    "ip_bytes",
    "flowable",
    "uid",
    "app",
)
LINKS = (0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 105, 127, 239, 149, 258)
VARIABLE_LINKS = (105, 127, 239, 149, 258)  # framed by tests/packets/test_linktypes.py
FAST = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(autouse=True)
def _both_decoders(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled decoder for ``_decode_compiled``, even where AUDITOR_PURE_PYTHON_SCAN
    keeps ``decode`` on the numpy code."""
    if compiled is not None:
        monkeypatch.setattr(D, "_compiled", compiled)


def test_the_compiled_decoder_is_built_where_there_is_a_compiler() -> None:
    """Without it decoding is several times slower; a silent fallback would hide that."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler here")
    if os.environ.get("AUDITOR_PURE_PYTHON_SCAN"):
        assert D.DECODER == "numpy"
    else:
        assert D.DECODER == "compiled"
        assert compiled is not None


# -------------------------------------------------------------------------------- compare


def _where(rb: RecordBatch, i: int) -> str:
    d, c = int(rb.data[i]), int(rb.caplen[i])
    return f"row {i} (link {int(rb.link_type[i])}, caplen {c}): {bytes(rb.raw[d : d + c]).hex()}"


def assert_same_batch(x: D.PacketBatch, y: D.PacketBatch, zeros: bool = True) -> None:
    """Numpy's ``x`` and the compiled ``y`` of one batch are the same (``zeros``: and ``y``
    has zeros past the meaningful bytes of ``payload_head``)."""
    rb = x.records
    for name in COLUMNS:
        a, b = getattr(x, name), getattr(y, name)
        assert (a.dtype, a.shape) == (b.dtype, b.shape), name
        bad = np.flatnonzero(a != b)
        assert not bad.size, f"{name}: {a[bad[0]]} != {b[bad[0]]} at {_where(rb, int(bad[0]))}"
    assert x.payload_head.shape == y.payload_head.shape == (len(rb), D.PAYLOAD_HEAD)
    meaningful = np.arange(D.PAYLOAD_HEAD) < np.minimum(x.payload_len, D.PAYLOAD_HEAD)[:, None]
    theirs = y.payload_head if zeros else np.where(meaningful, y.payload_head, 0)
    bad = np.flatnonzero((np.where(meaningful, x.payload_head, 0) != theirs).any(axis=1))
    assert not bad.size, f"payload_head at {_where(rb, int(bad[0]))}"
    assert list(x.warnings.items()) == list(y.warnings.items())
    assert list(x.counts.items()) == list(y.counts.items())


@dataclasses.dataclass
class Seen:
    """What the two decoders agreed on, summed over a capture."""

    warnings: Counter[str] = dataclasses.field(default_factory=Counter)
    counts: Counter[str] = dataclasses.field(default_factory=Counter)
    apps: list[str] = dataclasses.field(default_factory=list)
    batches: int = 0


def assert_same(data: bytes, chunk: int = 4096, python_walk: bool = False) -> Seen:
    """Read ``data`` in chunks of ``chunk`` bytes; both decoders agree on every batch."""
    seen = Seen()
    numpy_decoder, compiled_decoder = D.Decoder(), D.Decoder()
    with walk(not python_walk):
        try:
            reader = CaptureReader(io.BytesIO(data), chunk_size=chunk)
        except PcapError:
            return seen
        for rb in reader:
            x = numpy_decoder._decode_numpy(rb)
            y = compiled_decoder._decode_compiled(rb)
            assert_same_batch(x, y)
            seen.warnings.update(x.warnings)
            seen.counts.update(x.counts)
            seen.batches += 1
    assert numpy_decoder.apps == compiled_decoder.apps
    seen.apps = compiled_decoder.apps
    return seen


def as_pcapng(records: Sequence[tuple[int, bytes] | tuple[int, bytes, int]], link: int) -> bytes:
    """The records in Enhanced Packet Blocks: past each one's data come padding, its block
    length and the next block, where a pcap record's head row has zeros."""
    out = shb("<") + idb("<", link)
    for rec in records:
        orig = rec[2] if len(rec) == 3 else None
        out += epb("<", 0, rec[0], rec[1], orig=orig)
    return out


def pcap_records(data: bytes) -> tuple[int, list[tuple[int, bytes, int]]]:
    """The link type and records of a little-endian pcap file."""
    (link,) = struct.unpack_from("<I", data, 20)
    out, pos = [], 24
    while pos + 16 <= len(data):
        sec, frac, incl, orig = struct.unpack_from("<IIII", data, pos)
        out.append((sec * 1_000_000_000 + frac * 1000, data[pos + 16 : pos + 16 + incl], orig))
        pos += 16 + incl
    return link, out


def check_everywhere(
    records: Sequence[tuple[int, bytes] | tuple[int, bytes, int]], link: int
) -> Seen:
    """Both decoders agree on the records as pcap and as pcapng, in small and large chunks
    and with either record walk; returns what was seen in the pcap read in one chunk."""
    data = pcap(records, link)
    seen = assert_same(data, 1 << 20)
    assert_same(data, 4096)
    assert_same(data, 4096, python_walk=True)
    ng = as_pcapng(records, link)
    assert_same(ng, 1 << 20)
    assert_same(ng, 4096, python_walk=True)
    return seen


# ----------------------------------------------------------------------- generated frames


def _frag6(offset: int, more: int, nh: int = 17) -> bytes:
    return bytes([nh, 0]) + struct.pack("!HI", (offset << 3) | more, 7)


def _ext(nh: int, size: int) -> bytes:
    """An extension header of ``size`` bytes (8k) whose next header is ``nh``."""
    return bytes([nh, size // 8 - 1]) + bytes(size - 2)


def _ah(nh: int, words: int = 4) -> bytes:
    return bytes([nh, words - 2]) + bytes(4 * words - 2)


@cache
def l3_packets() -> list[bytes]:
    """IP packets (and a few that only claim to be) with every feature the decoder reads."""
    body = udp(1000, 53, b"A" * 40)
    t = tcp(40000, 443, b"hello, tls", flags=0x18)
    out = [
        ipv4("10.0.0.2", "93.184.216.34", 6, t),
        ipv4("10.0.0.2", "93.184.216.34", 6, tcp(1, 2, b"", flags=0x02)),
        ipv4("10.0.0.2", "10.0.0.1", 6, tcp(1, 2, b"opts", options=bytes(40), flags=0x11)),
        ipv4("1.2.3.4", "5.6.7.8", 6, tcp(1, 2, b"data", options=bytes(12)), options=bytes(8)),
        ipv4("1.2.3.4", "5.6.7.8", 17, udp(5, 6, b"x" * 90), options=bytes(40)),  # IHL 15
        ipv4("10.0.0.2", "8.8.8.8", 17, udp(5353, 53, b"q" * 33)),
        ipv4("10.0.0.2", "8.8.8.8", 17, udp(5353, 53, b"")),
        ipv4("10.0.0.2", "8.8.8.8", 1, b"\x08\x00" + bytes(30)),  # ICMP
        ipv4("10.0.0.2", "8.8.8.8", 0, b""),
        ipv4("10.0.0.1", "10.0.0.2", 17, body[:24], frag=0x2000),  # first fragment
        ipv4("10.0.0.1", "10.0.0.2", 17, body[24:], frag=3),  # a later one
        ipv4("10.0.0.1", "10.0.0.2", 17, body[8:16], frag=0x2000 | 1),  # a middle one
        ipv4("10.0.0.1", "10.0.0.2", 6, t, frag=0x8000),  # the reserved bit: not a fragment
        ipv4("10.0.0.1", "10.0.0.2", 6, t, total=0),  # segmentation offload
        ipv4("10.0.0.1", "10.0.0.2", 6, t, total=12),  # shorter than its header
        ipv4("10.0.0.1", "10.0.0.2", 6, t, total=20 + 12),  # TCP header past the datagram
        ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2, b"z" * 20), total=20 + 8 + 5),  # padded
        ipv4("10.0.0.1", "10.0.0.2", 6, t, total=1500),  # longer than captured
        ipv4("10.0.0.1", "10.0.0.2", 6, t[:12] + b"\x20" + t[13:]),  # TCP data offset 8
        ipv4("10.0.0.1", "10.0.0.2", 6, t[:12] + b"\x51" + b"\xff" + t[14:]),  # NS + all flags
        ipv4("10.0.0.1", "10.0.0.2", 6, t[:12] + b"\xf0" + t[13:]),  # data offset 60
        b"\x55" + ipv4("10.0.0.1", "10.0.0.2", 6, t)[1:],  # version 5
        b"\x43" + ipv4("10.0.0.1", "10.0.0.2", 6, t)[1:],  # IHL 3
        b"\x60" + ipv4("10.0.0.1", "10.0.0.2", 6, t)[1:],  # version 6 behind IPv4
        ipv6("2001:db8::2", "2001:db8::1", 17, udp(5353, 53, b"v6 payload")),
        ipv6("2001:db8::2", "2001:db8::1", 6, t),
        ipv6("fe80::1", "ff02::1", 58, b"\x87\x00" + bytes(22)),  # ICMPv6
        ipv6("::1", "::2", 59, b""),  # no next header
        ipv6("::1", "::2", 0, t, ext=_ext(60, 8) + _ext(6, 208)),  # past the head window
        ipv6("::1", "::2", 43, body, ext=_ext(135, 24) + _ext(17, 16)),  # routing, mobility
        ipv6("::1", "::2", 51, t, ext=_ah(6)),  # authentication header
        ipv6("::1", "::2", 51, t, ext=_ah(60, 6) + _ext(6, 8)),
        ipv6("::1", "::2", 44, body[:24], ext=_frag6(0, 1)),  # first fragment
        ipv6("::1", "::2", 44, body[24:], ext=_frag6(3, 0)),  # a later one
        ipv6("::1", "::2", 44, body[8:16], ext=_frag6(1, 1)),  # a middle one
        ipv6("::1", "::2", 44, body, ext=_frag6(0, 0)),  # atomic: offset 0, no more
        ipv6("::1", "::2", 44, _ext(17, 8) + body, ext=_frag6(0, 1, 60)),
        ipv6("::1", "::2", 44, _ext(17, 16) + body, ext=_frag6(5, 0, 60)),
        ipv6("::1", "::2", 0, body, ext=b"".join(_ext(0, 8) for _ in range(7)) + _ext(17, 8)),
        ipv6("::1", "::2", 0, body, ext=b"".join(_ext(0, 8) for _ in range(8)) + _ext(17, 8)),
        ipv6("::1", "::2", 0, t, ext=bytes([6, 255]) + bytes(14)),  # runs past the datagram
        ipv6("::1", "::2", 0, b"\x06\x05"),  # extension header cut
        ipv6("::1", "::2", 17, udp(1, 2, b"jumbo"))[:4] + b"\x00\x00"
        + ipv6("::1", "::2", 17, udp(1, 2, b"jumbo"))[6:],  # payload length 0
        ipv6("::1", "::2", 17, udp(1, 2, b"j"))[:4] + b"\x00\x03"
        + ipv6("::1", "::2", 17, udp(1, 2, b"j"))[6:],  # UDP header past the datagram
        b"\x45" + ipv6("::1", "::2", 6, t)[1:],  # version 4 behind IPv6
        b"",
    ]  # fmt: skip
    return out


def _ethertype(l3: bytes) -> int:
    return 0x86DD if l3[:1] and l3[0] >> 4 == 6 else 0x0800


def framed(link: int, l3: bytes, variant: int = 0) -> bytes:
    """``l3`` behind the link header of ``link``; ``variant`` picks among its forms."""
    if link in VARIABLE_LINKS:
        return linktypes.framed(link, l3, variant)
    et = _ethertype(l3)
    fam6 = (10, 23, 24, 28, 30)[variant % 5]
    if link == 1:
        vlans = ((), (10,), (10, 20))[variant % 3]
        return ether(l3, et, vlans)
    if link == 0:
        return null(l3, 2 if et == 0x0800 else fam6, "<>"[variant % 2])
    if link == 108:
        return null(l3, 2 if et == 0x0800 else fam6, ">")
    if link == 113:
        return sll(l3, et)
    if link == 276:
        return sll2(l3, et)
    return l3  # raw


def non_ip(link: int) -> list[bytes]:
    """Frames of ``link`` that are not IP."""
    if link in VARIABLE_LINKS:
        return linktypes.non_ip(link)
    arp = bytes(28)
    if link == 1:
        return [
            bytes.fromhex("ffffffffffff02000000000a0806") + arp,
            ether(arp, 0x0000),
            ether(arp, 0x88CC, (5,)),
            bytes.fromhex("02000000000a02000000000b") + b"\x91\x00\x00\x01" * 3 + b"\x08\x00"
            + ipv4("1.1.1.1", "2.2.2.2", 17, udp(1, 2, b"")),  # three tags
            bytes.fromhex("02000000000a02000000000b") + b"\x81\x00\x00\x05\x86\xdd"
            + ipv6("::1", "::2", 17, udp(1, 2, b"tagged")),
        ]  # fmt: skip
    if link in (0, 108):
        v4 = ipv4("1.1.1.1", "2.2.2.2", 17, udp(1, 2, b""))
        families = (0, 7, 0xFFFF, 0x10000, 0x10002, 0x0800FFFF)
        return [null(v4, f, o) for f in families for o in "<>"]
    if link in (113, 276):
        wrap = sll if link == 113 else sll2
        return [wrap(arp, 0x0806), wrap(arp, 0x0004), wrap(arp, 0xFFFF)]
    return [b"\x20" + bytes(30), b"\xf0" * 40]


def trailer_frames() -> list[bytes]:
    """Ethernet frames with PCAPdroid's trailer (and some that only look like they have one)."""
    out = []
    apps = ["com.example.app", "", "a-very-long-package-name-cut", "com.example.app", "org.x"]
    for i, app in enumerate(apps):
        l3 = ipv4("10.215.173.1", "142.250.1.1", 6, tcp(50000 + i, 443, b"x" * i))
        pad = bytes(-(14 + len(l3)) % 4)
        out.append(ether(l3, vlans=(7,) * (i % 2)) + pad + pcapdroid_trailer(10_000 + i, app))
    six = ipv6("fd00::1", "2001:db8::1", 17, udp(1, 53, b"v6"))
    out.append(ether(six, 0x86DD) + pcapdroid_trailer(-1, "com.six"))
    raw = pcapdroid_trailer(1, "x")
    out.append(ether(ipv4("1.1.1.1", "2.2.2.2", 17, udp(1, 2, b""))) + b"\x02" + raw[1:])  # bad
    # names that differ only after their NUL: two apps, shown alike
    base = ether(ipv4("1.1.1.1", "2.2.2.2", 17, udp(1, 2, b"")))
    out.append(base + struct.pack("!Ii", 0x01072021, 5) + b"a\x00x" + bytes(17) + bytes(4))
    out.append(base + struct.pack("!Ii", 0x01072021, 5) + b"a\x00y" + bytes(17) + bytes(4))
    out.append(ether(ipv4("1.1.1.1", "2.2.2.2", 6, tcp(1, 2, b"z"), total=0)) + raw)  # unseen
    out.append(ether(ipv4("1.1.1.1", "2.2.2.2", 6, tcp(1, 2, b"z"), total=9)) + raw)  # seen
    return out


def every_cut(frames: Sequence[bytes]) -> list[tuple[int, bytes, int]]:
    """Each frame cut at every length, as snaplen cuts it (original length kept)."""
    return [(k, f[:k], len(f)) for f in frames for k in range(len(f) + 1)]


# ------------------------------------------------------------------------------- the tests


@built
@pytest.mark.parametrize("link", LINKS)
def test_every_link_type(link: int) -> None:
    frames = [framed(link, p, v) for v in range(3) for p in l3_packets()] + non_ip(link)
    records = [(i, f) for i, f in enumerate(frames)]
    seen = check_everywhere(records, link)
    assert bool(seen.counts["ipv4"]) == (link != 229)  # 228, 229: one version only
    assert bool(seen.counts["ipv6"]) == (link != 228)
    assert seen.counts["tcp"] and seen.counts["udp"] and seen.warnings


@built
@pytest.mark.parametrize("link", LINKS)
def test_every_cut_of_every_frame(link: int) -> None:
    picks = [0, 3, 4, 17, 23, 27, 28, 29, 33, 35, 37]
    frames = [framed(link, l3_packets()[k], k) for k in picks] + non_ip(link)[:2]
    check_everywhere(every_cut(frames), link)


@built
def test_the_generated_captures_reach_every_warning() -> None:
    """The frames above are damaged in every way the decoder counts (else the tests that use
    them would compare less than they claim)."""
    warnings: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for link in LINKS:
        frames = [framed(link, p, v) for v in range(3) for p in l3_packets()] + non_ip(link)
        seen = assert_same(pcap(every_cut(frames[::7]) + [(0, f) for f in frames], link))
        warnings.update(seen.warnings)
        counts.update(seen.counts)
    assert set(warnings) == {
        "truncated-link-header",
        "truncated-ip-header",
        "bad-ip-version",
        "bad-ip-header-length",
        "bad-ip-length",
        "ip-length-zero",
        "ip-fragment",
        "truncated-l4-header",
        "bad-tcp-header",
        "cut-by-snaplen",
        "pktap-unknown-link-type-147",
        *(k for k, warn in D.LINK_KINDS if warn),
    }
    assert {"non-ip", "ethertype-0x0806", "other-ip", "udp"} <= set(counts)
    assert {k for k, warn in D.LINK_KINDS if not warn} <= set(counts)


def damaged_frames() -> list[tuple[int, bytes]]:
    """Ethernet and raw frames that each give one kind of warning or count."""
    t = tcp(1, 2, b"z")
    v4 = ipv4("10.0.0.1", "10.0.0.2", 6, t)
    v6 = ipv6("::1", "::2", 6, t)
    return [
        (1, ether(v4)[:20]),  # truncated-ip-header (IPv4)
        (1, ether(v6, 0x86DD)[:40]),  # truncated-ip-header (IPv6)
        (1, ether(ipv6("::1", "::2", 0, b"\x06\x05"), 0x86DD)),  # truncated-ip-header (ext)
        (1, ether(b"\x55" + v4[1:])),  # bad-ip-version (IPv4)
        (1, ether(b"\x45" + v6[1:], 0x86DD)),  # bad-ip-version (IPv6)
        (101, b"\x20" + bytes(30)),  # bad-ip-version (raw)
        (1, ether(b"\x43" + v4[1:])),  # bad-ip-header-length
        (1, ether(v4[:2] + b"\x00\x05" + v4[4:])),  # bad-ip-length
        (1, ether(v4[:2] + b"\x00\x00" + v4[4:])),  # ip-length-zero (IPv4)
        (1, ether(v6[:4] + b"\x00\x00" + v6[6:], 0x86DD)),  # ip-length-zero (IPv6)
        (1, ether(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2, b""), frag=3))),  # ip-fragment
        (1, ether(v4)[: 14 + 20 + 10]),  # truncated-l4-header, cut-by-snaplen
        (1, ether(ipv4("10.0.0.1", "10.0.0.2", 6, t[:12] + b"\x20" + t[13:]))),  # bad-tcp
        (1, b"\x00" * 10),  # truncated-link-header
        (1, ether(bytes(28), 0x0806)),  # non-ip
        (0, null(v4, 7)),  # null-header-unknown
        (147, v4),  # unknown-link-type-147
        (1, ether(ipv4("10.0.0.1", "10.0.0.2", 1, b""))),  # other-ip
        (1, ether(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2, b"")))),  # udp
        (1, ether(v4)),  # tcp
    ]


@built
def test_warnings_and_counts_keep_their_order() -> None:
    """Any two damaged frames, in either order, in one batch: the keys come in the same
    order (a Counter keeps the order keys were added in, and reports may show it)."""
    frames = damaged_frames()
    out_of = shb("<") + b"".join(idb("<", link) for link in (1, 101, 0, 147))
    iface = {1: 0, 101: 1, 0: 2, 147: 3}
    for a in frames:
        for b in frames:
            blocks = [epb("<", iface[link], 0, frame) for link, frame in (a, b)]
            assert_same(out_of + b"".join(blocks))


@built
def test_pcapdroid_trailers_and_the_app_table_across_batches() -> None:
    frames = trailer_frames()
    seen = check_everywhere([(i, f) for i, f in enumerate(frames)], 1)
    assert seen.apps == ["com.example.app", "", "a-very-long-package-", "org.x", "com.six",
                         "a", "a", "x"]  # fmt: skip
    # batches that meet the apps in another order than the table has them
    rng = random.Random(3)
    many = [rng.choice(frames) for _ in range(600)]
    for chunk in (4096, 8192, 1 << 20):
        got = assert_same(pcap([(i, f) for i, f in enumerate(many)], 1), chunk)
        assert len(got.apps) == 8
    assert assert_same(pcap([(i, f) for i, f in enumerate(many)], 1), 4096).batches > 5


@built
def test_mixed_and_unknown_link_types_in_one_batch() -> None:
    """pcapng interfaces of every link type, unknown ones (147, and an interface no block
    described) and empty records, interleaved."""
    links = [*LINKS, 147, 1, 65535]
    out = shb("<") + b"".join(idb("<", link) for link in links)
    rng = random.Random(7)
    for i in range(800):
        k = rng.randrange(len(links) + 1)  # len(links): no such interface
        link = links[k] if k < len(links) else 1
        pool = [framed(link, p, i) for p in l3_packets()] + non_ip(link) + [b""]
        frame = rng.choice(pool)
        out += epb("<", k, i, frame[: rng.choice([len(frame), rng.randrange(len(frame) + 1)])])
    for chunk in (4096, 1 << 20):
        seen = assert_same(out, chunk)
        assert seen.warnings["unknown-link-type-147"] and seen.warnings["unknown-link-type--1"]


@built
def test_the_real_captures(shared_captures: Path) -> None:
    paths = sorted(p for p in shared_captures.iterdir() if p.suffix in (".pcap", ".pcapng"))
    assert paths
    for path in paths:
        data = path.read_bytes()
        for chunk in (4096, 1 << 20):
            seen = assert_same(data, chunk)
            assert seen.counts["packets"] > 0
        assert_same(data, 1 << 20, python_walk=True)
        if data[:4] == b"\xd4\xc3\xb2\xa1":
            link, records = pcap_records(data)
            assert_same(as_pcapng(records, link), 1 << 20)


def _with_junk(rb: RecordBatch, rng: random.Random) -> RecordBatch:
    """``rb`` with random bytes wherever they are not a packet's: between and after the
    packets in the chunk, and past each packet's caplen in ``head``."""
    raw = bytearray(rng.randbytes(len(rb.raw)))
    for d, c in zip(rb.data.tolist(), rb.caplen.tolist(), strict=True):
        raw[d : d + c] = rb.raw[d : d + c]
    junk = np.frombuffer(rng.randbytes(rb.head.size), np.uint8).reshape(rb.head.shape)
    inside = np.arange(HEAD) < np.minimum(rb.caplen, HEAD)[:, None]
    head = np.where(inside, rb.head, junk).astype(np.uint8)
    return dataclasses.replace(rb, raw=raw, buf=np.frombuffer(raw, np.uint8), head=head)


def _junk_agrees(data: bytes, seed: int) -> None:
    rng = random.Random(seed)
    with walk(True):
        try:
            batches = list(CaptureReader(io.BytesIO(data), chunk_size=4096))
        except PcapError:
            return
    for rb in batches:
        bad = _with_junk(rb, rng)
        want = D.Decoder()._decode_numpy(rb)
        assert_same_batch(want, D.Decoder()._decode_numpy(bad), zeros=False)
        assert_same_batch(want, D.Decoder()._decode_compiled(bad))


@built
def test_no_result_depends_on_bytes_past_caplen() -> None:
    """The numpy code reads some bytes past a packet's caplen (a 14-byte window for an
    8-byte UDP header, 16 payload bytes of a shorter payload, the link header of a record
    too short for it); none of them changes a result but the meaningless bytes of
    ``payload_head``. The compiled decoder never reads them from the chunk."""
    for link in LINKS:
        frames = [framed(link, p, v) for v in range(2) for p in l3_packets()] + non_ip(link)
        _junk_agrees(pcap(every_cut(frames[::5]) + [(0, f) for f in frames], link), link)
    _junk_agrees(pcap([(i, f) for i, f in enumerate(trailer_frames())], 1), 1)


@built
def test_payload_head_is_zero_past_the_payload() -> None:
    frames = [framed(1, p) for p in l3_packets()]
    data = pcap([(i, f + b"\xee" * 40) for i, f in enumerate(frames)], 1)  # padding after
    for rb in CaptureReader(io.BytesIO(data)):
        pb = D.Decoder()._decode_compiled(rb)
        past = np.arange(D.PAYLOAD_HEAD) >= np.minimum(pb.payload_len, D.PAYLOAD_HEAD)[:, None]
        assert not pb.payload_head[past].any()
        assert pb.payload_len.max() > D.PAYLOAD_HEAD
        for i in np.flatnonzero(pb.payload_len).tolist():
            assert bytes(pb.payload_head[i]).startswith(pb.payload(i)[: D.PAYLOAD_HEAD])


@built
def test_decode_uses_the_compiled_decoder_unless_told_not_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = pcap([(0, framed(1, l3_packets()[0]))], 1)
    (rb,) = list(CaptureReader(io.BytesIO(data)))
    calls: list[str] = []
    for name in ("_decode_numpy", "_decode_compiled"):
        real = getattr(D.Decoder, name)

        def spy(self: D.Decoder, rb: RecordBatch, real: Any = real, name: str = name) -> Any:
            calls.append(name)
            return real(self, rb)

        monkeypatch.setattr(D.Decoder, name, spy)
    D.Decoder().decode(rb)
    monkeypatch.setattr(D, "_compiled", None)
    D.Decoder().decode(rb)
    assert calls == ["_decode_compiled", "_decode_numpy"]


# ------------------------------------------------------------------------------- hostile


@cache
def _seeds() -> list[bytes]:
    """Real captures (their first 48 KiB) and generated ones, pcap and pcapng."""
    seeds = []
    if SHARED_CAPTURES.is_dir():
        for p in sorted(SHARED_CAPTURES.iterdir()):
            if p.suffix in (".pcap", ".pcapng"):
                seeds.append(p.read_bytes()[: 48 * 1024])
    for link in (1, 101, 276, 0, 127, 239, 149):
        frames = [framed(link, p, i) for i, p in enumerate(l3_packets())]
        seeds.append(pcap([(i, f) for i, f in enumerate(frames + non_ip(link))], link))
    seeds.append(as_pcapng([(i, f) for i, f in enumerate(trailer_frames())], 1))
    return seeds


@st.composite
def _frames_capture(draw: st.DrawFn) -> bytes:
    """A valid pcap of frames of one link type: built frames, mutated, cut, or random."""
    link = draw(st.sampled_from([*LINKS, 147]))
    pool = [framed(link if link != 147 else 1, p, i) for i, p in enumerate(l3_packets())]
    pool += non_ip(link if link != 147 else 1) + trailer_frames()
    frame = st.one_of(mutated(pool, max_ops=4), st.binary(max_size=200), st.sampled_from(pool))
    frames = draw(st.lists(frame, max_size=30))
    records = []
    for i, f in enumerate(frames):
        cut = draw(st.one_of(st.none(), st.integers(0, len(f))))
        records.append((i, f[:cut] if cut is not None else f, len(f)))
    if draw(st.booleans()):
        return as_pcapng(records, link)
    return pcap(records, link)


@built
@FAST
@given(
    st.one_of(_frames_capture(), st.deferred(lambda: mutated(_seeds(), keep=24))),
    st.sampled_from([4096, 65536]),
)
def test_hostile_captures_agree(data: bytes, chunk: int) -> None:
    assert_same(data, chunk)


@built
@FAST
@given(_frames_capture(), st.integers(0, 2**32))
def test_hostile_frames_agree_with_junk_past_caplen(data: bytes, seed: int) -> None:
    _junk_agrees(data, seed)


# --------------------------------------------------------------------- direct calls


def _outputs(n: int) -> list[Any]:
    dtypes = {name: np.dtype(np.int32) for name in ("non_ip",)}
    sample = D.Decoder()._decode_numpy(_batch())
    out = []
    for name in compiled.OUTPUTS:
        dtype = dtypes.get(name) or getattr(sample, name).dtype
        shape = (n, compiled.PAYLOAD_HEAD) if name == "payload_head" else (n,)
        out.append(np.zeros(shape, dtype=dtype))
    return out


@cache
def _batch() -> RecordBatch:
    frames = [framed(1, p) for p in l3_packets()[:8]]
    (rb,) = list(CaptureReader(io.BytesIO(pcap([(i, f) for i, f in enumerate(frames)], 1))))
    # the Python walk gives columns that are views of its header table
    c = np.ascontiguousarray
    return dataclasses.replace(rb, data=c(rb.data), caplen=c(rb.caplen), head=c(rb.head))


def _args(**change: Any) -> list[Any]:
    rb = _batch()
    args: dict[str, Any] = {
        "buf": rb.buf,
        "data": rb.data,
        "caplen": rb.caplen,
        "link_type": rb.link_type,
        "head": rb.head,
        "out": _outputs(len(rb)),
    }
    args.update(change)
    return [*list(args.values())[:5], tuple(args["out"])]


@built
def test_direct_call_fills_what_decode_gives() -> None:
    rb = _batch()
    out = _outputs(len(rb))
    tallies, names = compiled.decode(*_args(out=out))
    assert len(tallies) == len(compiled.TALLIES) and names == []
    pb = D.Decoder()._decode_compiled(rb)
    for name, col in zip(compiled.OUTPUTS, out, strict=True):
        if name != "non_ip":
            assert np.array_equal(getattr(pb, name), col), name
    empty = np.zeros(0, np.int64)
    got = compiled.decode(rb.buf, empty, empty, np.zeros(0, np.int32),
                          np.zeros((0, HEAD), np.uint8), tuple(_outputs(0)))  # fmt: skip
    assert got == ((0,) * len(compiled.TALLIES), [])


def _bad_outputs() -> Iterator[tuple[str, list[Any]]]:
    n = len(_batch())
    for k, name in enumerate(compiled.OUTPUTS):
        good = _outputs(n)
        col = good[k]
        for label, bad in (
            ("short", col[:-1]),
            ("long", np.concatenate([col, col[:1]])),
            ("float", col.astype({1: np.int16, 2: np.float16, 4: np.float32,
                                  8: np.float64}[col.itemsize])),
            ("signedness", col.view(col.dtype.str.replace("u", "i") if "u" in col.dtype.str
                                    else col.dtype.str.replace("i", "u"))
             if col.dtype.kind in "iu" else col.astype(np.int8)),
            ("strided", np.repeat(col, 2, axis=0)[::2]),
            ("read-only", np.lib.stride_tricks.as_strided(col, writeable=False)),
            ("not a buffer", 3),
        ):  # fmt: skip
            yield f"{name} {label}", [*good[:k], bad, *good[k + 1 :]]


@built
def test_bad_outputs_raise_value_error() -> None:
    for label, out in _bad_outputs():
        with pytest.raises(ValueError):
            compiled.decode(*_args(out=out))
            pytest.fail(label)
    with pytest.raises(ValueError):
        compiled.decode(*_args(out=_outputs(len(_batch()))[:-1]))
    a = _args()
    with pytest.raises(TypeError):
        compiled.decode(a[0], a[1], a[2], a[3], a[4], list(a[5]))  # type: ignore[arg-type]


@built
def test_bad_inputs_raise_value_error() -> None:
    rb = _batch()
    n = len(rb)
    data, caplen = rb.data, rb.caplen
    end = len(rb.buf)
    cases: dict[str, dict[str, Any]] = {
        "buf not a buffer": {"buf": 7},
        "data of int32": {"data": data.astype(np.int32)},
        "data of float": {"data": data.astype(np.float64)},
        "caplen shorter than data": {"caplen": caplen[:-1]},
        "link_type of int64": {"link_type": rb.link_type.astype(np.int64)},
        "link_type longer": {"link_type": np.zeros(n + 1, np.int32)},
        "head rows": {"head": rb.head[:-1]},
        "head too narrow": {"head": rb.head[:, :63]},
        "head strided in a row": {"head": np.repeat(rb.head, 2, axis=1)[:, ::2]},
        "head flat": {"head": rb.head.ravel()},
        "head of int16": {"head": rb.head.astype(np.int16)},
        "negative data": {"data": np.where(np.arange(n) == 3, -1, data)},
        "negative caplen": {"caplen": np.where(np.arange(n) == 3, -5, caplen)},
        "data past buf": {"data": np.where(np.arange(n) == 3, end, data)},
        "caplen past buf": {"caplen": np.where(np.arange(n) == 3, end - data[3] + 1, caplen)},
        "huge caplen": {"caplen": np.where(np.arange(n) == 3, 2**62, caplen)},
        "huge data": {"data": np.where(np.arange(n) == 3, 2**63 - 1, data)},
    }
    for label, change in cases.items():
        with pytest.raises(ValueError):
            compiled.decode(*_args(**change))
            pytest.fail(label)
    # a strided head (as pcapng batches have) and a wider one are fine
    wide = np.zeros((n, 200), np.uint8)
    wide[:, :HEAD] = rb.head
    for head in (np.repeat(rb.head, 2, axis=0)[::2], wide, rb.head[::-1]):
        compiled.decode(*_args(head=head))
    # the whole buffer, to its last byte, is fine
    last = np.where(np.arange(n) == 3, end - caplen[3], data)
    compiled.decode(*_args(data=last))


@built
@FAST
@given(
    st.binary(max_size=400),
    st.lists(
        st.tuples(
            st.integers(-3, 420),
            st.integers(-3, 420),
            st.sampled_from([*LINKS, 147, -1]),
            st.binary(min_size=HEAD, max_size=HEAD),
        ),
        max_size=20,
    ),
)
def test_any_columns_decode_or_raise_value_error(
    buf: bytes, rows: list[tuple[int, int, int, bytes]]
) -> None:
    """Columns that no reader gives (head unlike the chunk, records anywhere) never crash."""
    n = len(rows)
    data = np.array([r[0] for r in rows], np.int64)
    caplen = np.array([r[1] for r in rows], np.int64)
    link = np.array([r[2] for r in rows], np.int32)
    head = np.frombuffer(b"".join(r[3] for r in rows), np.uint8).reshape(n, HEAD)
    inside = bool(((data >= 0) & (caplen >= 0) & (data + caplen <= len(buf))).all())
    try:
        compiled.decode(buf, data, caplen, link, head, tuple(_outputs(n)))
    except ValueError:
        assert not inside
    else:
        assert inside
