"""Link layers and IPv4/IPv6/TCP/UDP headers, vectorised: every link type, VLAN tags, IP
options and IPv6 extension headers, fragments, damaged headers, PCAPdroid's trailer; checked
against scapy's dissection of the same bytes."""

from __future__ import annotations

import io
import random
import struct
from collections import Counter
from typing import Any

import numpy as np
import pytest

from auditor.packets import decode as D
from auditor.packets.flows import iter_packets
from auditor.packets.names import address_text
from tests.packets.helpers import (
    ether,
    ipv4,
    ipv6,
    null,
    pcap,
    pcapdroid_trailer,
    sll,
    sll2,
    tcp,
    udp,
)

T0 = 1_700_000_000_000_000_000


def _decode(
    frames: list[bytes], link: int, **kw: Any
) -> tuple[list[dict[str, Any]], Counter[str], Counter[str]]:
    data = pcap([(T0 + i, f) for i, f in enumerate(frames)], link=link)
    rows: list[dict[str, Any]] = []
    warnings: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for b in iter_packets(io.BytesIO(data), **kw):
        warnings.update(b.warnings)
        counts.update(b.counts)
        for i in range(len(b)):
            v = int(b.ip_version[i])
            rows.append(
                {
                    "version": v,
                    "src": address_text(v, int(b.src_hi[i]), int(b.src_lo[i])),
                    "dst": address_text(v, int(b.dst_hi[i]), int(b.dst_lo[i])),
                    "proto": int(b.proto[i]),
                    "sport": int(b.sport[i]),
                    "dport": int(b.dport[i]),
                    "flags": int(b.tcp_flags[i]),
                    "payload": b.payload(i),
                    "ip_bytes": int(b.ip_bytes[i]),
                    "flowable": bool(b.flowable[i]),
                    "uid": int(b.uid[i]),
                    "app": int(b.app[i]),
                }
            )
    return rows, warnings, counts


V4 = ipv4("10.0.0.2", "93.184.216.34", 6, tcp(40000, 443, b"hello", flags=0x18))
V6 = ipv6("2001:db8::2", "2001:db8::1", 17, udp(5353, 53, b"v6 payload"))


@pytest.mark.parametrize(
    ("link", "frame", "l3"),
    [
        (1, ether(V4), V4),
        (1, ether(V6, 0x86DD), V6),
        (1, ether(V4, vlans=[10]), V4),
        (1, ether(V6, 0x86DD, vlans=[10, 20]), V6),
        (101, V4, V4),
        (101, V6, V6),
        (12, V4, V4),
        (14, V6, V6),
        (228, V4, V4),
        (229, V6, V6),
        (113, sll(V4), V4),
        (113, sll(V6, 0x86DD), V6),
        (276, sll2(V4), V4),
        (276, sll2(V6, 0x86DD), V6),
        (0, null(V4, 2), V4),
        (0, null(V4, 2, ">"), V4),
        (0, null(V6, 10), V6),
        (0, null(V6, 30, ">"), V6),
        (0, null(V6, 24), V6),
        (0, null(V6, 28), V6),
        (108, null(V4, 2, ">"), V4),
        (108, null(V6, 24, ">"), V6),
    ],
)
def test_link_types(link: int, frame: bytes, l3: bytes) -> None:
    rows, warnings, _ = _decode([frame], link)
    (r,) = rows
    if l3 is V4:
        assert (r["version"], r["src"], r["dst"], r["proto"]) == (4, "10.0.0.2", "93.184.216.34", 6)
        assert (r["sport"], r["dport"], r["flags"], r["payload"]) == (40000, 443, 0x18, b"hello")
    else:
        assert (r["version"], r["src"], r["dst"], r["proto"]) == (
            6,
            "2001:db8::2",
            "2001:db8::1",
            17,
        )
        assert (r["sport"], r["dport"], r["payload"]) == (5353, 53, b"v6 payload")
    assert r["ip_bytes"] == len(l3)
    assert r["flowable"]
    assert warnings == {}


def test_ethernet_padding_is_not_payload() -> None:
    short = ipv4("10.0.0.2", "10.0.0.1", 6, tcp(1, 2, flags=0x10))
    rows, warnings, _ = _decode([ether(short) + bytes(6)], 1)
    assert rows[0]["payload"] == b""
    assert rows[0]["uid"] == -1
    assert warnings == {}


def test_non_ip_and_unknown_link_types_are_counted() -> None:
    arp = bytes.fromhex("ffffffffffff02000000000a0806") + bytes(28)
    rows, warnings, counts = _decode([arp], 1)
    assert rows[0]["version"] == 0 and not rows[0]["flowable"]
    assert counts["non-ip"] == 1 and counts["ethertype-0x0806"] == 1
    _, warnings, _ = _decode([b"\x00" * 40, b"\x01" * 40], 147)
    assert warnings == {"unknown-link-type-147": 2}
    _, warnings, _ = _decode([null(V4, 7)], 0)
    assert warnings == {"null-header-unknown": 1}  # neither IP nor an ethertype


def test_ipv4_options_and_tcp_options() -> None:
    p = ipv4("1.2.3.4", "5.6.7.8", 6, tcp(1, 2, b"data", options=bytes(12)), options=bytes(8))
    rows, _, _ = _decode([ether(p)], 1)
    assert rows[0]["payload"] == b"data"


def test_ipv6_extension_headers_past_the_head_window() -> None:
    hop = bytes([60, 0]) + bytes(6)  # hop-by-hop, 8 bytes, next: destination options
    dest = bytes([6, 25]) + bytes(206)  # destination options, 208 bytes, next: TCP
    p = ipv6("2001:db8::a", "2001:db8::b", 0, tcp(80, 8080, b"behind"), ext=hop + dest)
    rows, warnings, _ = _decode([ether(p, 0x86DD)], 1)
    assert (rows[0]["proto"], rows[0]["sport"], rows[0]["payload"]) == (6, 80, b"behind")
    assert warnings == {}


def test_fragments_first_keeps_ports_later_ones_are_counted() -> None:
    body = udp(1000, 53, b"A" * 40)
    first = ipv4("10.0.0.1", "10.0.0.2", 17, body[:24], frag=0x2000)
    later = ipv4("10.0.0.1", "10.0.0.2", 17, body[24:], frag=3)
    frag6 = lambda off, m: bytes([17, 0]) + struct.pack("!HI", (off << 3) | m, 7)  # noqa: E731
    first6 = ipv6("::1", "::2", 44, body[:24], ext=frag6(0, 1))
    later6 = ipv6("::1", "::2", 44, body[24:], ext=frag6(3, 0))
    rows, warnings, _ = _decode([ether(first), ether(later), ether(first6, 0x86DD),
                                 ether(later6, 0x86DD)], 1)  # fmt: skip
    assert [(r["sport"], r["flowable"]) for r in rows] == [(1000, True), (0, False)] * 2
    assert rows[0]["payload"] == b"A" * 16
    assert warnings == {"ip-fragment": 4}


@pytest.mark.parametrize("numpy_only", [False, True])
def test_a_later_ipv6_fragment_is_data_after_its_fragment_header(
    numpy_only: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the compiled decoder's differential tests: the fragment's data, here 4 bytes,
    was read as the destination-options header its fragment header names, and counted as a
    truncated header."""
    if numpy_only:
        monkeypatch.setattr(D, "_compiled", None)
    frag = bytes([60, 0]) + struct.pack("!HI", (2 << 3) | 0, 7)  # offset 16, next: dest. opts
    later = ipv6("2001:db8::1", "2001:db8::2", 44, b"\x11\x22\x33\x44", ext=frag)
    rows, warnings, _ = _decode([ether(later, 0x86DD)], 1)
    assert (rows[0]["proto"], rows[0]["flowable"]) == (60, False)
    assert warnings == {"ip-fragment": 1}


@pytest.mark.parametrize("numpy_only", [False, True])
def test_an_ipv6_extension_header_longer_than_its_datagram_is_counted(
    numpy_only: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only its first 8 bytes used to be checked: a hop-by-hop header claiming 2,048 bytes in
    a 24-byte payload made a flow out of bytes past the datagram."""
    if numpy_only:
        monkeypatch.setattr(D, "_compiled", None)
    hop = bytes([58, 255]) + bytes(6)  # 256 units of 8 bytes; next: ICMPv6
    p = ipv6("2001:db8::1", "2001:db8::2", 0, b"\x80\x00" + bytes(14), ext=hop)
    rows, warnings, _ = _decode([ether(p, 0x86DD)], 1)
    assert (rows[0]["proto"], rows[0]["flowable"]) == (0, False)
    assert warnings == {"truncated-ip-header": 1}


def test_snaplen_cut_packets_keep_their_captured_payload() -> None:
    p = ether(ipv4("10.0.0.1", "10.0.0.2", 17, udp(9, 53, b"x" * 100)))
    data = pcap([(T0, p[:60], len(p))], link=1)
    (b,) = list(iter_packets(io.BytesIO(data)))
    assert b.payload(0) == b"x" * (60 - 14 - 28)
    assert int(b.ip_bytes[0]) == 128
    assert b.warnings == {"cut-by-snaplen": 1}


def test_damaged_headers_are_counted_not_raised() -> None:
    good = ipv4("10.0.0.1", "10.0.0.2", 6, tcp(1, 2, b"z"))
    frames = [
        ether(good)[:20],  # IPv4 header cut
        ether(b"\x55" + good[1:]),  # version 5 behind an IPv4 ethertype
        ether(b"\x43" + good[1:]),  # IHL 3
        ether(good[:2] + b"\x00\x05" + good[4:]),  # total length shorter than the header
        ether(good[:2] + b"\x00\x00" + good[4:]),  # total length 0 (segmentation offload)
        ether(good)[: 14 + 20 + 10],  # TCP header cut
        ether(ipv4("10.0.0.1", "10.0.0.2", 6, tcp(1, 2, b"z")[:12] + b"\x20" + bytes(7))),
        b"\x00" * 10,  # shorter than an Ethernet header
        ether(ipv6("::1", "::2", 0, b"\x06\x05"), 0x86DD),  # extension header runs past
    ]
    rows, warnings, _ = _decode(frames, 1)
    assert len(rows) == len(frames)
    assert warnings == {
        "truncated-ip-header": 2,
        "bad-ip-version": 1,
        "bad-ip-header-length": 1,
        "bad-ip-length": 1,
        "ip-length-zero": 1,
        "truncated-l4-header": 1,
        "bad-tcp-header": 1,
        "truncated-link-header": 1,
        "cut-by-snaplen": 1,  # the cut TCP header; the cut IPv4 header never counts as IP
    }
    assert rows[4]["payload"] == b"z"  # length 0: the captured bytes count


def test_raw_link_type_with_a_non_ip_first_byte() -> None:
    rows, warnings, _ = _decode([b"\x20" + bytes(30), V6], 228)
    assert rows[0]["version"] == 0 and rows[1]["version"] == 0
    assert warnings == {"bad-ip-version": 2}


def test_pcapdroid_trailer() -> None:
    frames = []
    for uid, app, payload in [(10123, "com.example.app", b"x" * 3), (-1, "", b"y"),
                              (1000, "a-very-long-package-name-cut", b"")]:  # fmt: skip
        l3 = ipv4("10.215.173.1", "142.250.1.1", 6, tcp(50000, 443, payload))
        pad = bytes(-(14 + len(l3)) % 4)
        frames.append(ether(l3) + pad + pcapdroid_trailer(uid, app))
    rows, warnings, _ = _decode(frames, 1)
    assert [r["uid"] for r in rows] == [10123, -1, 1000]
    assert [r["payload"] for r in rows] == [b"xxx", b"y", b""]
    assert warnings == {}
    data = pcap([(T0 + i, f) for i, f in enumerate(frames)], link=1)
    decoder = D.Decoder()
    from auditor.packets.pcapfile import CaptureReader

    (batch,) = [decoder.decode(rb) for rb in CaptureReader(io.BytesIO(data))]
    assert [decoder.apps[a] for a in batch.app.tolist()] == [
        "com.example.app",
        "",
        "a-very-long-package-",
    ]


def test_the_batch_as_a_frame() -> None:
    data = pcap([(T0, ether(V4)), (T0 + 5, ether(V6, 0x86DD))], link=1, nano=True)
    (b,) = list(iter_packets(io.BytesIO(data)))
    df = b.frame()
    assert df[D.SRC].tolist() == ["10.0.0.2", "2001:db8::2"]
    assert df[D.DPORT].tolist() == [443, 53]
    assert str(df[D.TS].iloc[1]) == "2023-11-14 22:13:20.000000005+00:00"


# -------------------------------------------------------------------- against scapy


def _scapy_packets(n: int) -> list[Any]:
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop
    from scapy.layers.l2 import Dot1Q, Ether
    from scapy.packet import Raw

    rng = random.Random(5)
    out = []
    for i in range(n):
        payload = Raw(bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 300))))
        l4 = (
            TCP(sport=rng.randrange(1, 65536), dport=rng.randrange(1, 65536),
                flags=rng.choice(["S", "SA", "A", "PA", "FA", "R"]),
                options=[("MSS", 1460)] if i % 3 else [])
            if i % 2
            else UDP(sport=rng.randrange(1, 65536), dport=rng.randrange(1, 65536))
        )  # fmt: skip
        if i % 4 < 2:
            src, dst = f"10.{i % 250}.0.{rng.randrange(1, 255)}", f"172.16.{rng.randrange(256)}.9"
            l3 = IP(src=src, dst=dst, options=[] if i % 5 else b"\x01" * 4)
        else:
            l3 = IPv6(src=f"2001:db8::{i:x}", dst=f"fe80::{rng.randrange(1, 65535):x}")
            if i % 3 == 0:
                l3 = l3 / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
        eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # no ARP lookup
        pkt = (eth / Dot1Q(vlan=i % 4000) if i % 7 == 0 else eth) / l3 / l4 / payload
        out.append(pkt)
    return out


def test_agrees_with_scapy() -> None:
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    pkts = _scapy_packets(400)
    frames = [bytes(p) for p in pkts]
    rows, warnings, _ = _decode(frames, 1, chunk_size=8192)
    assert warnings == {}
    for frame, r in zip(frames, rows, strict=True):
        p = Ether(frame)
        ip = p[IP] if IP in p else p[IPv6]
        l4 = p[TCP] if TCP in p else p[UDP]
        assert (r["src"], r["dst"]) == (ip.src, ip.dst)
        assert (r["sport"], r["dport"]) == (l4.sport, l4.dport)
        assert r["proto"] == (6 if TCP in p else 17)
        assert r["payload"] == bytes(l4.payload)
        if TCP in p:
            assert r["flags"] == int(p[TCP].flags)


def test_bytes_at_reads_inside_and_beyond_the_head_window() -> None:
    frames = [bytes(range(256)) * 2 for _ in range(5)]
    data = pcap([(T0, f) for f in frames], link=101)
    from auditor.packets.pcapfile import CaptureReader

    (rb,) = list(CaptureReader(io.BytesIO(data)))
    offs = np.array([0, 3, 120, 127, 300])
    got = D.bytes_at(rb, None, offs, 8)
    for i, o in enumerate(offs.tolist()):
        assert bytes(got[i]) == frames[i][o : o + 8]
    rows = np.array([4, 1])
    assert bytes(D.bytes_at(rb, rows, 100, 4)[0]) == frames[4][100:104]
    many = np.arange(5) * 20 + 1
    assert [bytes(x) for x in D.bytes_at(rb, None, many, 3)] == [
        frames[i][o : o + 3] for i, o in enumerate(many.tolist())
    ]
