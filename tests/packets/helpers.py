"""Builders for the packet tests: capture files written by hand (every byte order, timestamp
resolution and pcapng block type), packets and the payloads that carry names.

Kept byte-exact and small on purpose: a test says what is in its capture. Scapy is used in the
tests themselves as an independent writer and dissector to check these against.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

from auditor.packets.flows import CaptureResult
from auditor.packets.quic import QUIC_V1
from tests.packets.quic_encode import crypto_frame, seal_initial

SHARED_CAPTURES = Path(__file__).resolve().parents[2].parent / "shared" / "captures"

# ----------------------------------------------------------------------------- capture files


def pcap(
    records: Iterable[tuple[int, bytes] | tuple[int, bytes, int]],
    link: int = 1,
    *,
    big_endian: bool = False,
    nano: bool = False,
    snaplen: int = 262144,
) -> bytes:
    """A pcap file; records are (timestamp in ns, data) or (ns, data, original length)."""
    o = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(o + "IHHiIII", magic, 2, 4, 0, 0, snaplen, link)]
    for rec in records:
        ts, data = rec[0], rec[1]
        orig = rec[2] if len(rec) == 3 else len(data)  # type: ignore[misc]
        frac = ts % 1_000_000_000 if nano else (ts % 1_000_000_000) // 1000
        out.append(struct.pack(o + "IIII", ts // 1_000_000_000, frac, len(data), orig) + data)
    return b"".join(out)


def _pad4(b: bytes) -> bytes:
    return b + b"\x00" * (-len(b) % 4)


def _opts(o: str, options: Sequence[tuple[int, bytes]]) -> bytes:
    if not options:
        return b""
    body = b"".join(struct.pack(o + "HH", c, len(v)) + _pad4(v) for c, v in options)
    return body + struct.pack(o + "HH", 0, 0)


def block(o: str, btype: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack(o + "II", btype, length) + body + struct.pack(o + "I", length)


def shb(o: str = "<", comment: str | None = None) -> bytes:
    opts = [(1, comment.encode())] if comment else []
    return block(o, 0x0A0D0D0A, struct.pack(o + "IHHq", 0x1A2B3C4D, 1, 0, -1) + _opts(o, opts))


def idb(
    o: str,
    link: int,
    *,
    snaplen: int = 0,
    tsresol: int | None = None,
    tsoffset: int | None = None,
    name: str | None = None,
    comment: str | None = None,
) -> bytes:
    opts: list[tuple[int, bytes]] = []
    if comment:
        opts.append((1, comment.encode()))
    if name:
        opts.append((2, name.encode()))
    if tsresol is not None:
        opts.append((9, bytes([tsresol])))
    if tsoffset is not None:
        opts.append((14, struct.pack(o + "q", tsoffset)))
    return block(o, 1, struct.pack(o + "HHI", link, 0, snaplen) + _opts(o, opts))


def epb(
    o: str,
    iface: int,
    ticks: int,
    data: bytes,
    *,
    orig: int | None = None,
    comment: str | None = None,
) -> bytes:
    opts = [(1, comment.encode())] if comment else []
    head = struct.pack(
        o + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(data), orig or len(data)
    )
    return block(o, 6, head + _pad4(data) + _opts(o, opts))


def obsolete_pb(o: str, iface: int, ticks: int, data: bytes) -> bytes:
    head = struct.pack(
        o + "HHIIII", iface, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data)
    )
    return block(o, 2, head + _pad4(data))


def spb(o: str, data: bytes, orig: int | None = None) -> bytes:
    return block(o, 3, struct.pack(o + "I", orig or len(data)) + _pad4(data))


def nrb(o: str) -> bytes:
    rec = struct.pack(o + "HH", 1, 13) + _pad4(b"\x0a\x00\x00\x01host.lan\x00")
    return block(o, 4, rec + struct.pack(o + "HH", 0, 0))


def isb(o: str, iface: int = 0) -> bytes:
    return block(o, 5, struct.pack(o + "III", iface, 0, 0))


def custom(o: str) -> bytes:
    return block(o, 0x00000BAD, struct.pack(o + "I", 32473) + b"PCAPdroid-ish\x00\x00\x00")


# ------------------------------------------------------------------------------- packets


def ip4(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def ip6(a: str) -> bytes:
    import ipaddress

    return ipaddress.IPv6Address(a).packed


def ipv4(
    src: str,
    dst: str,
    proto: int,
    payload: bytes,
    *,
    ident: int = 1,
    frag: int = 0x4000,
    options: bytes = b"",
    total: int | None = None,
) -> bytes:
    ihl = 5 + len(options) // 4
    length = total if total is not None else 4 * ihl + len(payload)
    head = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, 0, length, ident, frag, 64, proto, 0, ip4(src), ip4(dst)
    )
    return head + options + payload


def ipv6(src: str, dst: str, nh: int, payload: bytes, *, ext: bytes = b"") -> bytes:
    body = ext + payload
    return struct.pack("!IHBB", 0x60000000, len(body), nh, 64) + ip6(src) + ip6(dst) + body


def tcp(
    sport: int,
    dport: int,
    payload: bytes = b"",
    *,
    flags: int = 0x18,
    seq: int = 1000,
    ack: int = 0,
    options: bytes = b"",
) -> bytes:
    off = (20 + len(options)) // 4
    return (
        struct.pack("!HHIIBBHHH", sport, dport, seq, ack, off << 4, flags, 65535, 0, 0)
        + options
        + payload
    )


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def ether(l3: bytes, ethertype: int = 0x0800, vlans: Sequence[int] = ()) -> bytes:
    head = bytes.fromhex("02000000000a02000000000b")
    for i, vid in enumerate(vlans):
        head += struct.pack("!HH", 0x88A8 if i == 0 and len(vlans) > 1 else 0x8100, vid)
    return head + struct.pack("!H", ethertype) + l3


def sll(l3: bytes, protocol: int = 0x0800) -> bytes:
    return struct.pack("!HHH8sH", 0, 1, 6, bytes(8), protocol) + l3


def sll2(l3: bytes, protocol: int = 0x0800) -> bytes:
    return struct.pack("!HHIHBB8s", protocol, 0, 3, 1, 0, 6, bytes(8)) + l3


def null(l3: bytes, family: int, order: str = "<") -> bytes:
    return struct.pack(order + "I", family) + l3


def pcapdroid_trailer(uid: int, app: str) -> bytes:
    """The 32 bytes PCAPdroid appends (pcap_dump.h): magic, uid, app name, FCS; big-endian."""
    name = app.encode()[:20].ljust(20, b"\x00")
    return struct.pack("!Ii", 0x01072021, uid) + name + b"\xde\xad\xbe\xef"


# ------------------------------------------------------------------------------- payloads


def dns_name(name: str) -> bytes:
    if not name:
        return b"\x00"
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"


def dns_query(ident: int, name: str, qtype: int = 1) -> bytes:
    return (
        struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)
        + dns_name(name)
        + struct.pack("!HH", qtype, 1)
    )


def rr(owner: bytes, rtype: int, rdata: bytes, ttl: int = 300) -> bytes:
    return owner + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata


def dns_response(ident: int, name: str, qtype: int, answers: Sequence[bytes]) -> bytes:
    head = struct.pack("!HHHHHH", ident, 0x8180, 1, len(answers), 0, 0)
    return head + dns_name(name) + struct.pack("!HH", qtype, 1) + b"".join(answers)


def svcb_rdata(priority: int, target: str, params: Sequence[tuple[int, bytes]]) -> bytes:
    body = b"".join(struct.pack("!HH", k, len(v)) + v for k, v in params)
    return struct.pack("!H", priority) + dns_name(target) + body


def client_hello_body(
    sni: str | None, alpn: Sequence[str] = (), *, padding: int = 0, key_share: int = 32
) -> bytes:
    """A ClientHello handshake message (type 1, length, body)."""
    exts = b""
    if sni is not None:
        n = sni.encode()
        exts += struct.pack("!HHHBH", 0, len(n) + 5, len(n) + 3, 0, len(n)) + n
    if alpn:
        lst = b"".join(bytes([len(p)]) + p.encode() for p in alpn)
        exts += struct.pack("!HHH", 16, len(lst) + 2, len(lst)) + lst
    exts += (
        struct.pack("!HHHHH", 51, key_share + 6, key_share + 4, 29, key_share)
        + bytes(range(256)) * (key_share // 256)
        + bytes(range(key_share % 256))
    )
    if padding:
        exts += struct.pack("!HH", 21, padding) + bytes(padding)
    body = (
        b"\x03\x03"
        + bytes(range(32))
        + b"\x00"
        + b"\x00\x04\x13\x01\x13\x02"
        + b"\x01\x00"
        + struct.pack("!H", len(exts))
        + exts
    )
    return b"\x01" + len(body).to_bytes(3, "big") + body


def tls_records(handshake: bytes, record_size: int = 16384) -> bytes:
    out = b""
    for i in range(0, len(handshake), record_size):
        frag = handshake[i : i + record_size]
        out += b"\x16\x03\x01" + struct.pack("!H", len(frag)) + frag
    return out


def quic_initials(
    sni: str,
    version: int = QUIC_V1,
    *,
    dcid: bytes = b"\x83\x94\xc8\xf0\x3e\x51\x57\x08",
    scid: bytes = b"\x01\x02\x03\x04",
    parts: int = 1,
    key_share: int = 32,
    alpn: Sequence[str] = ("h3",),
) -> list[bytes]:
    """Client Initial datagrams carrying a ClientHello split into ``parts`` CRYPTO frames, one
    per packet, sent in reverse order when there are several (a receiver must reassemble by
    offset)."""
    hello = client_hello_body(sni, alpn, key_share=key_share)
    size = -(-len(hello) // parts)
    chunks = [(off, hello[off : off + size]) for off in range(0, len(hello), size)]
    return [
        seal_initial(dcid, scid, version, pn, crypto_frame(off, data) + b"\x01")
        for pn, (off, data) in enumerate(chunks)
    ][::-1]


def same_read(a: CaptureResult, b: CaptureResult) -> None:
    """Two reads of one capture gave the same tables, answers, names, warnings and counts."""
    import pandas as pd

    pd.testing.assert_frame_equal(a.flows, b.flows)
    pd.testing.assert_frame_equal(a.dns, b.dns)
    pd.testing.assert_frame_equal(a.dns_answers, b.dns_answers)
    assert a.names == b.names
    assert a.warnings == b.warnings and a.counts == b.counts
