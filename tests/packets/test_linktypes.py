"""Link types beyond Ethernet: NULL/LOOP in every form, radiotap and 802.11, NFLOG, PKTAP.

Real captures (``tests/data/pcap``, see PROVENANCE.md there) are read and compared with tshark
(packets per 5-tuple), and every frame a capture holds is accounted for: read as IP, counted
as not IP, or counted as a warning; never dropped without a trace. The frame builders at the
top serve the differential tests of ``test_decode_compiled.py`` too.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from auditor.packets import decode as D
from auditor.packets import read_capture
from tests.packets.helpers import ether, ipv4, ipv6, null, pcap, tcp, udp

DATA = Path(__file__).resolve().parents[1] / "data" / "pcap"
TSHARK = shutil.which("tshark")

# ----------------------------------------------------------------------------- builders


def _ethertype(l3: bytes) -> int:
    return 0x86DD if l3[:1] and l3[0] >> 4 == 6 else 0x0800


SNAP = bytes.fromhex("aaaa03000000")


def wlan(l3: bytes, variant: int = 0, fc: bytes | None = None) -> bytes:
    """``l3`` in an 802.11 data frame with LLC/SNAP; ``variant``: plain data to the AP, QoS
    data, QoS with four addresses and HT control, data from the AP (bridge-tunnel OUI)."""
    addrs = bytes(range(1, 19))
    snap = SNAP + struct.pack("!H", _ethertype(l3))
    v = variant % 4
    if fc is not None:
        return fc + b"\x00\x00" + addrs + b"\x10\x00" + snap + l3
    if v == 0:
        return b"\x08\x01\x00\x00" + addrs + b"\x10\x00" + snap + l3
    if v == 1:
        return b"\x88\x01\x00\x00" + addrs + b"\x10\x00" + b"\x05\x00" + snap + l3
    if v == 2:
        return (
            b"\x88\x83\x00\x00" + addrs + b"\x10\x00" + bytes(range(30, 36)) + b"\x00\x00"
            + b"\x0c\x00\x00\x00" + snap + l3
        )  # fmt: skip
    return b"\x08\x02\x00\x00" + addrs + b"\x10\x00" + SNAP[:5] + b"\xf8" + snap[6:] + l3


def radiotap(frame: bytes, variant: int = 0) -> bytes:
    """``frame`` behind a radiotap header: no fields; Flags with an FCS after the frame;
    TSFT and Flags with FCS and padding after the 802.11 header; two presence bitmaps."""
    v = variant % 4
    if v == 0:
        return struct.pack("<BBHI", 0, 0, 8, 0) + frame
    if v == 1:
        return struct.pack("<BBHIBB", 0, 0, 10, 0x2, 0x10, 0) + frame + b"\xfc\x5c\x00\x01"
    if v == 2:
        # TSFT at 8 (8-aligned), Flags at 16; a 26-byte QoS header is padded to 28
        hdr = struct.pack("<BBHIQBB", 0, 0, 18, 0x3, 12345, 0x30, 0)
        if len(frame) > 26 and frame[0] & 0x8C == 0x88 and frame[1] & 0x83 == 0x01:
            frame = frame[:26] + b"\x00\x00" + frame[26:]
        return hdr + frame + b"\x01\x02\x03\x04"
    return struct.pack("<BBHIIBB", 0, 0, 14, 0x80000002, 0x0, 0x00, 0) + frame


def nflog(l3: bytes, variant: int = 0, family: int | None = None) -> bytes:
    """``l3`` as Linux NFLOG logs it: header, some TLVs, then NFULA_PAYLOAD (9); the TLVs in
    little-endian (x86 hosts) or big-endian byte order."""
    o = "<>"[variant % 2]
    fam = family if family is not None else (2 if _ethertype(l3) == 0x0800 else 10)

    def tlv(kind: int, value: bytes) -> bytes:
        raw = struct.pack(o + "HH", 4 + len(value), kind) + value
        return raw + bytes(-len(raw) % 4)

    prefix = b"auditor-test\x00" * (variant % 3)
    body = tlv(1, b"\x08\x00\x03\x00") + tlv(10, prefix) + tlv(4, b"\x00\x00\x00\x02")
    return struct.pack("!BBH", fam, 0, 0) + body + tlv(9, l3)


def pktap(frame: bytes, inner: int = 1, record: int = 1, length: int = 108) -> bytes:
    """``frame`` behind Apple's PKTAP header (little-endian)."""
    head = struct.pack("<III24sIIIII20sIHHI20s", length, record, inner, b"en0", 0, 2, 14, 0,
                       321, b"curl", 0, 6, 0, 321, b"curl")  # fmt: skip
    return head + bytes(max(length - len(head), 0)) + frame


def framed(link: int, l3: bytes, variant: int = 0) -> bytes:
    """``l3`` behind a link header of one of the link types of this module."""
    if link == 105:
        return wlan(l3, variant)
    if link == 127:
        return radiotap(wlan(l3, variant), variant // 4 + variant)
    if link == 239:
        return nflog(l3, variant)
    inner = (1, 0, 12)[variant % 3]
    if inner == 1:
        return pktap(ether(l3, _ethertype(l3)), 1)
    if inner == 0:
        return pktap(null(l3, 2 if _ethertype(l3) == 0x0800 else 30), 0)
    return pktap(l3, 12)


def non_ip(link: int) -> list[bytes]:
    """Frames of ``link`` that hold no IP the decoder reads, one of each kind."""
    v4 = ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2, b"x"))
    if link in (105, 127):
        wrap = radiotap if link == 127 else (lambda f, v=0: f)
        frames = [
            b"\x80\x00\x00\x00" + bytes(20) + bytes(12),  # beacon
            b"\xd4\x00\x00\x00" + bytes(6),  # ACK
            b"\x48\x01\x00\x00" + bytes(20),  # null function
            b"\x88\x41\x00\x00" + bytes(20) + b"\x00\x00" + bytes(8) + v4,  # protected
            b"\x88\x01\x00\x00" + bytes(20) + b"\x80\x00" + SNAP + b"\x08\x00" + v4,  # A-MSDU
            wlan(bytes(28), fc=b"\x08\x01")[:24] + b"\x42\x42\x03" + bytes(20),  # STP
            wlan(bytes(28), fc=b"\x08\x01")[:30] + b"\x08\x06" + bytes(28),  # ARP
            b"\x09\x01\x00\x00" + bytes(40),  # version 1
            b"\x0c\x00\x00\x00" + bytes(40),  # extension frame
        ]
        out = [wrap(f) for f in frames]
        if link == 127:
            out += [
                b"\x01\x00\x08\x00" + bytes(4) + frames[0],  # version 1
                b"\x00\x00\x04\x00" + bytes(4) + frames[0],  # shorter than 8
                struct.pack("<BBHI", 0, 0, 12, 0x80000000) + struct.pack("<I", 0x80000000)
                + frames[0],  # a second bitmap that says a third follows, past the header
                struct.pack("<BBHI", 0, 0, 8, 0x2) + frames[0],  # Flags past the header
                struct.pack("<BBH", 0, 0, 8 + 16 * 4) + b"\xff\xff\xff\xff" * 16 + frames[0],
            ]  # fmt: skip
        return out
    if link == 239:
        return [
            nflog(v4, family=7),
            struct.pack("!BBH", 2, 0, 0) + struct.pack("<HH", 8, 1) + bytes(4),  # no payload
            struct.pack("!BBH", 2, 0, 0) + struct.pack("<HH", 2, 1) + bytes(12),  # bad TLV
            struct.pack("!BBH", 2, 0, 0) + struct.pack("<HH", 4, 1) * 70 + v4,  # too many
        ]
    return [
        pktap(ether(v4), length=100),  # header shorter than the structure
        pktap(ether(v4), record=0),
        pktap(ether(v4), record=5),
        pktap(v4, inner=147),
        pktap(ether(bytes(28), 0x0806)),
    ]


def frames_of(link: int) -> list[bytes]:
    t = tcp(40000, 443, b"hello")
    packets = [
        ipv4("192.0.2.1", "198.51.100.7", 6, t),
        ipv6("2001:db8::1", "2001:db8::2", 17, udp(5353, 53, b"q")),
    ]
    return [framed(link, p, v) for v in range(12) for p in packets] + non_ip(link)


# --------------------------------------------------------------------- generated frames


@pytest.mark.parametrize("link", [105, 127, 239, 149, 258])
def test_every_frame_is_accounted_for(link: int, tmp_path: Path) -> None:
    frames = frames_of(link)
    path = tmp_path / "f.pcap"
    path.write_bytes(pcap(list(enumerate(frames)), link))
    r = read_capture(path)
    ip = r.counts["ipv4"] + r.counts["ipv6"]
    assert ip == 24
    kinds = {k: v for k, v in r.warnings.items()} | {
        k: v for k, v in r.counts.items() if k.startswith(("wlan-", "pktap-", "ethertype-"))
    }
    assert ip + sum(kinds.values()) == len(frames) == r.counts["packets"], kinds
    assert set(r.packets["sport"]) >= {40000, 5353}


def test_null_and_loop_headers_in_every_form(tmp_path: Path) -> None:
    """AF_INET and each BSD's AF_INET6 in either byte order, the ethertypes, and headers that
    are neither (a warning each)."""
    v4 = ipv4("192.0.2.1", "198.51.100.7", 17, udp(1, 2, b""))
    v6 = ipv6("2001:db8::1", "2001:db8::2", 17, udp(1, 2, b""))
    good = [null(v4, 2, o) for o in "<>"]
    good += [null(v6, f, o) for f in (24, 28, 30) for o in "<>"]
    good += [null(v4, 0x0800, o) for o in "<>"] + [null(v6, 0x86DD, o) for o in "<>"]
    bad = [null(v4, 7), null(v4, 0x0806, ">"), null(v4, 0x12345678)]
    path = tmp_path / "null.pcap"
    path.write_bytes(pcap(list(enumerate(good + bad)), 0))
    r = read_capture(path)
    assert r.counts["ipv4"] + r.counts["ipv6"] == len(good)
    assert r.warnings["null-header-unknown"] == len(bad)
    loop = [null(v4, 2, ">"), null(v6, 30, ">"), null(v4, 0x0800, ">"), null(v4, 2, "<")]
    path.write_bytes(pcap(list(enumerate(loop)), 108))
    r = read_capture(path)
    assert (r.counts["ipv4"], r.counts["ipv6"], r.warnings["null-header-unknown"]) == (2, 1, 1)


def test_link_kinds_name_the_same_frames_in_both_decoders() -> None:
    compiled = pytest.importorskip("auditor.packets._decode")
    assert tuple(k for k, _ in D.LINK_KINDS) == compiled.LINK_KINDS


# ------------------------------------------------------------------ real captures, tshark


def _tshark_tuples(path: Path) -> Counter[tuple[str, str, int, int]]:
    assert TSHARK is not None
    out = subprocess.run(
        [TSHARK, "-n", "-r", str(path), "-T", "fields", "-E", "separator=,",
         "-e", "ip.src", "-e", "ipv6.src", "-e", "ip.dst", "-e", "ipv6.dst",
         "-e", "tcp.srcport", "-e", "udp.srcport", "-e", "tcp.dstport", "-e", "udp.dstport",
         "-Y", "(ip || ipv6) && !icmp && !icmpv6"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    found: Counter[tuple[str, str, int, int]] = Counter()
    for line in out.splitlines():
        f = line.split(",")
        # tunnelled packets list every layer: the outer one is first
        src = (f[0] or f[1]).split(";")[0]
        dst = (f[2] or f[3]).split(";")[0]
        sport = int((f[4] or f[5] or "0").split(";")[0])
        dport = int((f[6] or f[7] or "0").split(";")[0])
        found[(src, dst, sport, dport)] += 1
    return found


def _auditor_tuples(path: Path) -> Counter[tuple[str, str, int, int]]:
    p = read_capture(path).packets
    p = p[(p["ip_version"] > 0) & ~p["proto"].isin([1, 58])]
    return Counter(
        zip(p["src"].astype(str), p["dst"].astype(str), p["sport"].tolist(), p["dport"].tolist(),
            strict=True)
    )  # fmt: skip


REAL = sorted(p.name for p in DATA.glob("*.pcap")) if DATA.is_dir() else []
MERGECAP = shutil.which("mergecap")


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real captures of every link type one after the other in one pcapng (an interface
    per file, so mixed link types in one batch), for one tshark run instead of one per file
    (each costs a second)."""
    if TSHARK is None or MERGECAP is None:
        pytest.skip("tshark or mergecap is not installed")
    out = tmp_path_factory.mktemp("linktypes") / "all.pcapng"
    paths = [str(DATA / n) for n in REAL]
    subprocess.run([MERGECAP, "-a", "-F", "pcapng", "-w", str(out), *paths], check=True)
    return out


def test_real_captures_match_tshark(merged: Path) -> None:
    """Packets per 5-tuple (addresses, ports), over the real captures of every link type."""
    ours, theirs = _auditor_tuples(merged), _tshark_tuples(merged)
    assert ours == theirs
    assert read_capture(merged).counts["packets"] == sum(
        read_capture(DATA / n).counts["packets"] for n in REAL
    )


@pytest.mark.parametrize("name", REAL)
def test_real_capture_frames_are_all_accounted_for(name: str) -> None:
    """Each frame is read as IP, counted as not IP, or counted as unreadable."""
    r = read_capture(DATA / name, keep_packets=True)
    p = r.packets
    link_warnings = sum(v for k, v in r.warnings.items() if k in dict(D.LINK_KINDS) or "link" in k)
    assert r.counts["packets"] == len(p) > 0
    assert int((p["ip_version"] == 0).sum()) == r.counts["non-ip"] + link_warnings
