"""The frames a ``tcpdump -i any`` on the phone would have seen, made from what its sockets carry.

The virtual handset logs what its sockets carry (a TCP payload chunk, a UDP datagram, a
connection's open ``S`` and close ``F``), not frames. :class:`PacketSynth` turns each logged
transfer into the frames a ``tcpdump -i any`` on the phone would have seen: an SLL2 (or
Ethernet) header, IPv4 or IPv6 with a correct header checksum, and TCP or UDP with its
checksum over the pseudo-header. A TCP flow gets its three-way handshake at ``S``, sequence and
acknowledgement numbers that advance with the bytes sent each way, and a FIN exchange at ``F``;
a flow first seen mid-way (the capture started after it opened) starts without a handshake.

Everything derived (initial sequence numbers, IP ids, MAC addresses) is a function of the input,
so the same packets give the same file byte for byte.

Format: https://www.tcpdump.org/linktypes/LINKTYPE_LINUX_SLL2.html. :func:`pcapdroid_frame`
lays a raw IP packet out as PCAPdroid does with its trailer on. The pcap framing itself is
auditor's writer (``auditor.packets.pcapwrite``), part of the public API this package uses.
"""

from __future__ import annotations

import ipaddress
import logging
import struct
import zlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from auditor.packets.pcapwrite import (
    DEFAULT_SNAPLEN,
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
    LINKTYPES,
    PcapWriter,
)

log = logging.getLogger(__name__)

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
PACKET_HOST = 0  # sll_pkttype: addressed to us
PACKET_OUTGOING = 4  # sent by us

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
IPPROTO_TCP, IPPROTO_UDP = 6, 17
TTL_OUT, TTL_IN = 64, 52  # the phone's own, and what is left of a remote sender's 64
TCP_WINDOW = 65535
MAX_FLOWS = 65536  # TCP flows remembered (closed ones too, so late bytes keep their numbers)
PCAPDROID_TRAILER_MAGIC = 0x01072021
PCAPDROID_APPNAME = 20  # bytes of the trailer's app name, NUL included

_SLL2 = struct.Struct("!HHIHBB8s")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")
_MSS_OPTION = struct.Struct("!BBH")


class Segment(Protocol):
    """One logged transfer (``vhandset.network.Packet`` has this shape)."""

    @property
    def ts(self) -> float: ...
    @property
    def proto(self) -> str: ...  # tcp | udp
    @property
    def src(self) -> str: ...
    @property
    def sport(self) -> int: ...
    @property
    def dst(self) -> str: ...
    @property
    def dport(self) -> int: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def flags(self) -> str: ...  # "S" open, "F" close, "" data


# ---- checksums ---------------------------------------------------------------------------------


def internet_checksum(*parts: bytes) -> int:
    """RFC 1071 checksum of the parts laid end to end; only the last part may be odd-sized.

    Summing 16-bit words with end-around carry is summing modulo 0xFFFF, and a whole buffer
    read as one big-endian integer is congruent to the sum of its words (2**16 = 1 mod 0xFFFF),
    so this runs at C speed instead of a Python loop per word."""
    total = 0
    for part in parts:
        n = int.from_bytes(part, "big")
        total += n << 8 if len(part) & 1 else n
    s = total % 0xFFFF
    if s == 0 and total:
        s = 0xFFFF
    return ~s & 0xFFFF


# ---- frames ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkIface:
    """A network interface as SLL2 names it: index, hardware type and address."""

    name: str
    index: int
    mac: bytes
    arphrd: int = ARPHRD_ETHER


LOOPBACK = LinkIface("lo", 1, bytes(6), ARPHRD_LOOPBACK)


def mac_bytes(text: str) -> bytes:
    parts = text.replace("-", ":").split(":")
    if len(parts) != 6:
        raise ValueError(f"not a MAC address: {text!r}")
    return bytes(int(p, 16) for p in parts)


def _stable(*parts: object) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


@dataclass(slots=True)
class _Dir:
    """One direction of a TCP flow: the next sequence number it sends."""

    nxt: int


_Key = tuple[str, int, str, int]


class PacketSynth:
    """Logged transfers to link-layer frames, keeping TCP state per flow.

    ``local`` are the phone's own addresses: what comes from them is outgoing. A flow's opener
    (``S``) is taken as local too, so a capture works without being told. Loopback traffic goes
    out on ``lo``, everything else on ``iface`` (``wlan0``), with ``gateway_mac`` as the far end.
    """

    def __init__(
        self,
        linktype: int = LINKTYPE_LINUX_SLL2,
        *,
        local: Iterable[str] = (),
        iface: LinkIface | None = None,
        gateway_mac: bytes | None = None,
        mss: int = 1460,
    ) -> None:
        if linktype not in LINKTYPES:
            raise ValueError(f"cannot synthesise frames for link type {linktype}")
        self.linktype = linktype
        self.local = {str(ipaddress.ip_address(a)) for a in local}
        self.iface = iface or LinkIface("wlan0", 2, b"\x02\x00\x00\x00\x00\x01")
        self.gateway_mac = gateway_mac or b"\x02\x00\x00\x00\x00\xfe"
        self.mss = max(1, mss)
        self._flows: OrderedDict[_Key, tuple[_Dir, _Dir]] = OrderedDict()
        self._ident = 0

    # -- public ------------------------------------------------------------------------------
    def frames(self, seg: Segment) -> list[tuple[float, bytes]]:
        """The frames one logged transfer stands for, with their timestamps."""
        try:
            src = ipaddress.ip_address(seg.src)
            dst = ipaddress.ip_address(seg.dst)
        except ValueError:
            log.debug("unaddressable segment %s -> %s skipped", seg.src, seg.dst)
            return []
        if src.version != dst.version:
            return []
        proto = seg.proto.lower()
        if proto == "udp":
            payloads = [self._udp(seg, src.packed, dst.packed)]
            return self._frame_all(seg, src, dst, IPPROTO_UDP, payloads)
        if proto != "tcp":
            return []
        if "S" in seg.flags:
            self.local.add(str(src))
        segments = self._tcp(seg, src.packed, dst.packed)
        return self._frame_all(seg, src, dst, IPPROTO_TCP, segments)

    # -- transport ---------------------------------------------------------------------------
    def _udp(self, seg: Segment, s: bytes, d: bytes) -> tuple[bool, bytes]:
        length = 8 + len(seg.payload)
        head = _UDP.pack(seg.sport, seg.dport, length, 0)
        pseudo = _pseudo(s, d, IPPROTO_UDP, length)
        csum = internet_checksum(pseudo, head, seg.payload) or 0xFFFF
        return True, _UDP.pack(seg.sport, seg.dport, length, csum) + seg.payload

    def _flow(self, key: _Key, *, fresh: bool) -> tuple[_Dir, _Dir]:
        """(this direction, the reverse one); a new flow gets deterministic ISNs."""
        rev: _Key = (key[2], key[3], key[0], key[1])
        if not fresh:
            if key in self._flows:
                self._flows.move_to_end(key)
                return self._flows[key]
            if rev in self._flows:
                self._flows.move_to_end(rev)
                back, fwd = self._flows[rev]
                return fwd, back
        pair = (_Dir(_stable("isn", *key)), _Dir(_stable("isn", *rev)))
        self._flows.pop(rev, None)
        self._flows[key] = pair
        while len(self._flows) > MAX_FLOWS:
            self._flows.popitem(last=False)
        return pair

    def _tcp(self, seg: Segment, s: bytes, d: bytes) -> list[tuple[bool, bytes]]:
        """[(forward?, TCP segment)] for one logged transfer."""
        key: _Key = (seg.src, seg.sport, seg.dst, seg.dport)
        out: list[tuple[bool, bytes]] = []

        def emit(forward: bool, seq: int, ack: int, flags: int, data: bytes = b"") -> None:
            ports = (seg.sport, seg.dport) if forward else (seg.dport, seg.sport)
            addrs = (s, d) if forward else (d, s)
            out.append((forward, _tcp_segment(*addrs, *ports, seq, ack, flags, data, self.mss)))

        if "S" in seg.flags:
            me, peer = self._flow(key, fresh=True)
            emit(True, me.nxt, 0, TCP_SYN)
            emit(False, peer.nxt, me.nxt + 1, TCP_SYN | TCP_ACK)
            me.nxt = (me.nxt + 1) & 0xFFFFFFFF
            peer.nxt = (peer.nxt + 1) & 0xFFFFFFFF
            emit(True, me.nxt, peer.nxt, TCP_ACK)
        else:
            me, peer = self._flow(key, fresh=False)
        data = seg.payload
        for i in range(0, len(data), self.mss):
            chunk = data[i : i + self.mss]
            last = i + self.mss >= len(data)
            emit(True, me.nxt, peer.nxt, TCP_ACK | (TCP_PSH if last else 0), chunk)
            me.nxt = (me.nxt + len(chunk)) & 0xFFFFFFFF
        if "F" in seg.flags:
            emit(True, me.nxt, peer.nxt, TCP_FIN | TCP_ACK)
            me.nxt = (me.nxt + 1) & 0xFFFFFFFF
            emit(False, peer.nxt, me.nxt, TCP_FIN | TCP_ACK)
            peer.nxt = (peer.nxt + 1) & 0xFFFFFFFF
            emit(True, me.nxt, peer.nxt, TCP_ACK)
        return out

    # -- network and link --------------------------------------------------------------------
    def _frame_all(
        self,
        seg: Segment,
        src: ipaddress.IPv4Address | ipaddress.IPv6Address,
        dst: ipaddress.IPv4Address | ipaddress.IPv6Address,
        proto: int,
        transports: list[tuple[bool, bytes]],
    ) -> list[tuple[float, bytes]]:
        loop = src.is_loopback and dst.is_loopback
        outgoing = (
            loop or str(src) in self.local or (str(dst) not in self.local and seg.sport > seg.dport)
        )
        frames = []
        for i, (forward, transport) in enumerate(transports):
            a, b = (src, dst) if forward else (dst, src)
            out = outgoing == forward
            packet = self._ip(a.packed, b.packed, proto, transport, ttl=TTL_OUT if out else TTL_IN)
            frames.append((seg.ts + i * 1e-6, self._link(packet, a.version, out, loop)))
        return frames

    def _ip(self, s: bytes, d: bytes, proto: int, transport: bytes, *, ttl: int) -> bytes:
        if len(s) == 16:
            return _IPV6.pack(0x60000000, len(transport), proto, ttl, s, d) + transport
        self._ident = (self._ident + 1) & 0xFFFF
        total = 20 + len(transport)
        head = _IPV4.pack(0x45, 0, total, self._ident, 0x4000, ttl, proto, 0, s, d)
        csum = internet_checksum(head)
        return head[:10] + csum.to_bytes(2, "big") + head[12:] + transport

    def _link(self, packet: bytes, version: int, outgoing: bool, loop: bool) -> bytes:
        ethertype = ETH_P_IPV6 if version == 6 else ETH_P_IP
        if self.linktype == LINKTYPE_RAW:
            return packet
        iface = LOOPBACK if loop else self.iface
        if self.linktype == LINKTYPE_ETHERNET:
            if loop:
                macs = bytes(12)
            elif outgoing:
                macs = self.gateway_mac + iface.mac
            else:
                macs = iface.mac + self.gateway_mac
            return macs + ethertype.to_bytes(2, "big") + packet
        # libpcap drops the outgoing copy of a loopback packet and keeps the incoming one.
        pkttype = PACKET_OUTGOING if outgoing and not loop else PACKET_HOST
        sender = iface.mac if outgoing or loop else self.gateway_mac
        head = _SLL2.pack(ethertype, 0, iface.index, iface.arphrd, pkttype, 6, sender)
        return head + packet


def _pseudo(s: bytes, d: bytes, proto: int, length: int) -> bytes:
    if len(s) == 16:
        return s + d + length.to_bytes(4, "big") + bytes(3) + bytes([proto])
    return s + d + bytes([0, proto]) + length.to_bytes(2, "big")


def _tcp_segment(
    s: bytes,
    d: bytes,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    data: bytes,
    mss: int,
) -> bytes:
    options = _MSS_OPTION.pack(2, 4, min(mss, 0xFFFF)) if flags & TCP_SYN else b""
    offset = (20 + len(options)) // 4
    ack_field = ack & 0xFFFFFFFF if flags & TCP_ACK else 0
    fields = (sport, dport, seq & 0xFFFFFFFF, ack_field, offset << 4, flags, TCP_WINDOW)
    head = _TCP.pack(*fields, 0, 0) + options
    csum = internet_checksum(_pseudo(s, d, IPPROTO_TCP, len(head) + len(data)), head, data)
    return _TCP.pack(*fields, csum, 0) + options + data


def pcapdroid_frame(packet: bytes, uid: int, app: str) -> bytes:
    """A raw IP packet as PCAPdroid dumps it with its trailer (``pcap_dump_packet`` in
    ``app/src/main/jni/core/pcap_dump.c``): an Ethernet header with both MACs zero, the
    packet, zero padding to a multiple of 4 bytes, then the 32-byte trailer: magic and UID
    (big-endian), the app name (at most 19 bytes, NUL-padded) and a CRC-32 of all that comes
    before it, in the phone's (little-endian) byte order."""
    ethertype = ETH_P_IPV6 if packet[:1] and packet[0] >> 4 == 6 else ETH_P_IP
    frame = bytearray(12) + ethertype.to_bytes(2, "big") + packet
    frame += bytes(-len(frame) & 3)
    name = app.encode("utf-8")[: PCAPDROID_APPNAME - 1].ljust(PCAPDROID_APPNAME, b"\0")
    frame += struct.pack(">Ii", PCAPDROID_TRAILER_MAGIC, uid) + name
    return bytes(frame) + struct.pack("<I", zlib.crc32(frame))


# ---- whole files -------------------------------------------------------------------------------


def write_pcap(
    path: Path | str,
    segments: Iterable[Segment],
    *,
    linktype: int = LINKTYPE_LINUX_SLL2,
    nanos: bool = False,
    local: Iterable[str] = (),
    snaplen: int = DEFAULT_SNAPLEN,
) -> int:
    """Write logged transfers as a pcap file; returns the number of records written."""
    synth = PacketSynth(linktype, local=local)
    with open(path, "wb") as fh:
        writer = PcapWriter(fh, linktype, nanos=nanos, snaplen=snaplen)
        for seg in segments:
            writer.write_frames(synth.frames(seg))
        return writer.packets


__all__ = [
    "LOOPBACK",
    "LinkIface",
    "PacketSynth",
    "Segment",
    "internet_checksum",
    "mac_bytes",
    "pcapdroid_frame",
    "write_pcap",
]
