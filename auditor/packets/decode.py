"""Link layers and IPv4/IPv6/TCP/UDP headers of a batch of records, vectorised with numpy.

Long because: the numpy decoder is the reference the compiled one (``_decode.c``) is held to,
layer by layer; both walk the same link types in the same order, and keeping every layer in
one file keeps the twin readable against the C.

:class:`Decoder` turns a :class:`~auditor.packets.pcapfile.RecordBatch` into a
:class:`PacketBatch`: per-packet columns (IP version, addresses as two uint64 halves, protocol,
ports, TCP flags, where the transport payload starts and how much of it was captured, the
PCAPdroid uid and app), computed over the whole batch without Python code per packet: by the
compiled decoder (``auditor/packets/_decode.c``, built at install when a C compiler is there),
else with numpy gathers (:meth:`Decoder._decode_numpy`, the reference: the two give the same
results, but for the bytes of ``payload_head`` past ``payload_len``, which mean nothing).
``AUDITOR_PURE_PYTHON_SCAN=1`` forces the numpy code, as it forces the reader's Python walk;
``DECODER`` says which one is in use.

Link types: NULL (0, host-order family) and LOOP (108, network-order family), Ethernet (1,
up to two 802.1Q/802.1ad tags), raw IP (101, and 12/14 where they mean raw; 228 IPv4, 229
IPv6), LINUX_SLL (113) and LINUX_SLL2 (276).

PCAPdroid's trailer (``struct pcapdroid_trailer`` in emanuele-f/PCAPdroid,
``app/src/main/jni/core/pcap_dump.h``): when enabled, each raw IP packet gets a fake Ethernet
header and 32 bytes at the end of the frame, in network byte order: magic ``0x01072021``,
int32 uid, a 20-byte NUL-padded app name, then a CRC-32 FCS (PCAPdroid's own reader looks for
it in the last 32 bytes of Ethernet frames). The IP total length does not include it, so it
never reaches a payload; and Ethernet padding can never be 32 bytes, so only frames at least
32 bytes longer than their IP datagram are checked.

Problems are counted per packet in ``warnings`` (keys: ``unknown-link-type-<n>``,
``truncated-link-header``, ``truncated-ip-header``, ``bad-ip-version``,
``bad-ip-header-length``, ``bad-ip-length``, ``ip-length-zero``, ``ip-fragment`` (a first
fragment still has its ports and joins its flow, as in Wireshark; later fragments do not),
``truncated-l4-header``, ``bad-tcp-header``, ``cut-by-snaplen``); what is not IP is counted in
``counts`` (``non-ip``, ``ethertype-0x....``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from types import ModuleType
from typing import Final

import numpy as np
import pandas as pd

from auditor.packets._compiled import load
from auditor.packets.names import address_texts
from auditor.packets.pcapfile import HEAD, RecordBatch, window

_compiled: ModuleType | None = load("_decode")  # else the numpy code
DECODER: Final = "numpy" if _compiled is None else "compiled"

LINKTYPE_NULL: Final = 0
LINKTYPE_ETHERNET: Final = 1
LINKTYPE_RAW: Final = 101
LINKTYPE_LOOP: Final = 108
LINKTYPE_LINUX_SLL: Final = 113
LINKTYPE_IPV4: Final = 228
LINKTYPE_IPV6: Final = 229
LINKTYPE_LINUX_SLL2: Final = 276
LINKTYPE_IEEE802_11: Final = 105
LINKTYPE_RADIOTAP: Final = 127
LINKTYPE_NFLOG: Final = 239
LINKTYPE_PKTAP: Final = 258
DLT_PKTAP: Final = 149  # Apple writes PKTAP files with its DLT value as the link type
RAW_LINK_TYPES: Final = frozenset({LINKTYPE_RAW, 12, 14})
#: Link types whose header has a fixed layout (also the types PKTAP may wrap).
FIXED_LINK_TYPES: Final = frozenset(
    {
        LINKTYPE_NULL,
        LINKTYPE_ETHERNET,
        LINKTYPE_LOOP,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
        LINKTYPE_LINUX_SLL2,
    }
    | RAW_LINK_TYPES
)
SUPPORTED_LINK_TYPES: Final = FIXED_LINK_TYPES | {
    LINKTYPE_IEEE802_11,
    LINKTYPE_RADIOTAP,
    LINKTYPE_NFLOG,
    LINKTYPE_PKTAP,
    DLT_PKTAP,
}

#: Frames whose link layer says they carry no IP packet, or one this decoder cannot read.
#: The decoders mark them with the pseudo ethertype ``LINK_KIND + index``; a key that is a
#: warning (True) means the frame may hold IP that was not read, else it is only not IP and
#: is counted with ``non-ip`` (as an ARP frame is). The order is the compiled decoder's too.
LINK_KINDS: Final[tuple[tuple[str, bool], ...]] = (
    ("null-header-unknown", True),  # NULL/LOOP: neither an IP address family nor ethertype
    ("wlan-management-frame", False),
    ("wlan-control-frame", False),
    ("wlan-extension-frame", False),
    ("wlan-no-data-frame", False),  # null function, CF-Ack/Poll without data
    ("wlan-encrypted-frame", True),  # protected: WEP/TKIP/CCMP, not readable here
    ("wlan-amsdu-frame", True),  # aggregated MSDUs, not read
    ("wlan-not-llc-snap", False),  # data that is not LLC/SNAP (e.g. spanning tree)
    ("wlan-bad-frame", True),  # protocol version not 0
    ("radiotap-bad-header", True),
    ("nflog-unknown-family", True),
    ("nflog-bad-tlv", True),
    ("nflog-no-payload", True),
    ("pktap-bad-header", True),
    ("pktap-no-packet", False),  # a record of another kind than a packet
)
LINK_KIND: Final = 0x20000
PKTAP_INNER: Final = 0x30000  # + the link type PKTAP wraps, when this decoder cannot read it

ETH_P_IP: Final = 0x0800
ETH_P_IPV6: Final = 0x86DD
VLAN_TPIDS: Final = (0x8100, 0x88A8, 0x9100)
AF_INET: Final = 2
AF_INET6: Final = (10, 23, 24, 28, 30)  # Linux, Windows, NetBSD/OpenBSD, FreeBSD, Darwin
ETHERNET_MAX_LENGTH: Final = 1500  # a NULL/LOOP header above this is an ethertype
NFULA_PAYLOAD: Final = 9
NFLOG_MAX_TLVS: Final = 64
PKTAP_HEADER: Final = 108  # sizeof(struct pktap_header)
RADIOTAP_MAX_WORDS: Final = 16  # presence bitmaps read before the header is called bad
PROTO_TCP: Final = 6
PROTO_UDP: Final = 17
IPV6_EXTENSIONS: Final = (0, 43, 44, 51, 60, 135)
IPV6_FRAGMENT: Final = 44
IPV6_AH: Final = 51
PCAPDROID_MAGIC: Final = 0x01072021
PCAPDROID_TRAILER: Final = 32
PAYLOAD_HEAD: Final = 16  # payload bytes kept per packet for choosing what to dissect

TCP_FIN: Final = 0x01
TCP_SYN: Final = 0x02
TCP_RST: Final = 0x04
TCP_ACK: Final = 0x10

# Columns of the packets table (CaptureResult.packets)
PACKET: Final = "packet"  # packet number in the file, from 0
TS: Final = "ts"
LINK_TYPE: Final = "link_type"
IP_VERSION: Final = "ip_version"
SRC: Final = "src"
DST: Final = "dst"
PROTO: Final = "proto"
SPORT: Final = "sport"
DPORT: Final = "dport"
TCP_FLAGS: Final = "tcp_flags"
PAYLOAD_OFFSET: Final = "payload_offset"  # from the start of the packet data
PAYLOAD_LENGTH: Final = "payload_length"  # captured payload bytes
CAPLEN: Final = "caplen"
WIRELEN: Final = "wirelen"
IP_BYTES: Final = "ip_bytes"
UID: Final = "uid"
APP: Final = "app"
FLOW_ID: Final = "flow_id"


@dataclass(frozen=True, eq=False)
class PacketBatch:
    """Decoded headers of one :class:`RecordBatch`, one row per packet.

    Addresses are two uint64 halves: IPv4 in ``*_lo`` (``*_hi`` is 0), IPv6 big-endian.
    ``proto`` is -1 when the packet is not IP; ports are 0 when it has none. Offsets are from
    the start of the packet's data (-1: absent). ``flowable`` packets belong to a flow: IP,
    not a fragment, and with ports when TCP or UDP."""

    records: RecordBatch
    ip_version: np.ndarray  # uint8
    src_hi: np.ndarray  # uint64
    src_lo: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    proto: np.ndarray  # int16
    sport: np.ndarray  # int32
    dport: np.ndarray  # int32
    tcp_flags: np.ndarray  # int32
    l4_off: np.ndarray  # int64
    payload_off: np.ndarray  # int64
    payload_len: np.ndarray  # int64
    payload_head: np.ndarray  # (n, PAYLOAD_HEAD) uint8: first payload bytes; past payload_len
    # they are not the payload's (zeros from the compiled decoder, anything from numpy)
    ip_bytes: np.ndarray  # int64, the IP datagram's length as sent
    flowable: np.ndarray  # bool
    uid: np.ndarray  # int32, -1 when unknown
    app: np.ndarray  # int32, index into Decoder.apps, -1 when unknown
    warnings: Counter[str]
    counts: Counter[str]

    def __len__(self) -> int:
        return len(self.records)

    def payload(self, i: int) -> bytes:
        """The captured transport payload of packet ``i``."""
        start = int(self.records.data[i] + self.payload_off[i])
        return bytes(self.records.raw[start : start + int(self.payload_len[i])])

    def frame(self, apps: list[str] | None = None) -> pd.DataFrame:
        """The batch as a DataFrame (addresses as strings), for callers that stream."""
        rb = self.records
        n = len(self)
        return pd.DataFrame(
            {
                PACKET: np.arange(rb.first, rb.first + n, dtype=np.int64),
                TS: pd.to_datetime(rb.ts_ns, unit="ns", utc=True),
                LINK_TYPE: rb.link_type,
                IP_VERSION: self.ip_version,
                SRC: addresses(self.ip_version, self.src_hi, self.src_lo),
                DST: addresses(self.ip_version, self.dst_hi, self.dst_lo),
                PROTO: self.proto,
                SPORT: self.sport,
                DPORT: self.dport,
                TCP_FLAGS: self.tcp_flags,
                PAYLOAD_OFFSET: self.payload_off,
                PAYLOAD_LENGTH: self.payload_len,
                CAPLEN: rb.caplen,
                WIRELEN: rb.wirelen,
                IP_BYTES: self.ip_bytes,
                UID: self.uid,
                APP: app_names(self.app, apps or []),
            }
        )


def address_codes(
    version: np.ndarray, hi: np.ndarray, lo: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each address as a code into a table of distinct address texts (sorted by address),
    each text made once."""
    if not len(version):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object)
    order = np.lexsort((lo, hi, version))
    v, h, low = version[order], hi[order], lo[order]
    new = np.empty(len(order), dtype=bool)
    new[0] = True
    new[1:] = (v[1:] != v[:-1]) | (h[1:] != h[:-1]) | (low[1:] != low[:-1])
    firsts = order[new]
    texts = np.array(address_texts(version[firsts], hi[firsts], lo[firsts]), dtype=object)
    codes = np.empty(len(version), dtype=np.int64)
    codes[order] = np.cumsum(new) - 1
    return codes, texts


def addresses(version: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> pd.Categorical:
    """Addresses as strings, computed once per distinct address."""
    if not len(version):
        return pd.Categorical([], categories=[])
    codes, texts = address_codes(version, hi, lo)
    cats, remap = np.unique(texts, return_inverse=True)
    return pd.Categorical.from_codes(remap[codes], categories=pd.Index(cats))


def app_names(app: np.ndarray, apps: list[str]) -> pd.Categorical:
    cats = list(dict.fromkeys(apps))
    index = {name: i for i, name in enumerate(cats)}
    remap = np.array([index[a] for a in apps] + [-1], dtype=np.int32)
    return pd.Categorical.from_codes(remap[app], categories=pd.Index(cats, dtype=object))


def _non_ip_key(et: int) -> tuple[str, bool]:
    """The key a pseudo ethertype (see :func:`_link`) is counted under, and whether it is a
    warning."""
    if et < 0:
        return "bad-ip-version", True
    if et >= PKTAP_INNER:
        return f"pktap-unknown-link-type-{et - PKTAP_INNER}", True
    if et >= LINK_KIND:
        return LINK_KINDS[et - LINK_KIND]
    if et > 0xFFFF:
        return f"address-family-{et - 0x10000}", False
    return f"ethertype-0x{et:04x}", False


def _tally_non_ip(et: np.ndarray, warnings: Counter[str], counts: Counter[str]) -> None:
    """Count the packets that are not IP by ``et``, their ethertypes (see :func:`_link`)."""
    for e, k in zip(*np.unique(et, return_counts=True), strict=True):
        key, warn = _non_ip_key(int(e))
        if warn:
            warnings[key] += int(k)
        else:
            counts[key] += int(k)
            counts["non-ip"] += int(k)


def _add(counter: Counter[str], key: str, k: int) -> None:
    if k:
        counter[key] += k


def _be16(m: np.ndarray, i: int) -> np.ndarray:
    return (m[:, i].astype(np.int64) << 8) | m[:, i + 1]


def _be32(m: np.ndarray, i: int) -> np.ndarray:
    return np.ascontiguousarray(m[:, i : i + 4]).view(">u4")[:, 0].astype(np.int64)


def _be64(m: np.ndarray, i: int) -> np.ndarray:
    return np.ascontiguousarray(m[:, i : i + 8]).view(">u8")[:, 0].astype(np.uint64)


def _count(counter: Counter[str], key: str, mask: np.ndarray) -> None:
    _add(counter, key, int(np.count_nonzero(mask)))


def bytes_at(
    rb: RecordBatch, rows: np.ndarray | None, off: np.ndarray | int, width: int
) -> np.ndarray:
    """``width`` bytes at offset ``off`` (from the start of each packet's data) of the packets
    ``rows`` (None: all), as a (rows, width) uint8 array. Read from ``rb.head`` when in it
    (rows sharing an offset are sliced together), else from the chunk."""
    n = len(rb) if rows is None else len(rows)
    if isinstance(off, int):
        if off + width <= HEAD:
            return (
                rb.head[:, off : off + width] if rows is None else rb.head[rows, off : off + width]
            )
        off = np.full(n, off, dtype=np.int64)
    out = np.empty((n, width), dtype=np.uint8)
    inside = (off >= 0) & (off + width <= HEAD)
    if not inside.all():
        far = np.flatnonzero(~inside)
        base = rb.data[far] if rows is None else rb.data[rows[far]]
        out[far] = window(rb.buf, base + np.maximum(off[far], 0), width)
        inner = np.flatnonzero(inside)
    else:
        inner = None
    off_in = off if inner is None else off[inner]
    present = np.flatnonzero(np.bincount(off_in, minlength=HEAD))
    if inner is None and len(present) == 1:
        v = int(present[0])
        return rb.head[:, v : v + width] if rows is None else rb.head[rows, v : v + width]
    src = np.arange(n) if inner is None else inner
    prow = src if rows is None else rows[src]
    if len(present) > 12:
        cols = off_in[:, None] + np.arange(width)
        out[src] = rb.head[prow[:, None], cols]
        return out
    for v in present.tolist():
        m = np.flatnonzero(off_in == v)
        out[src[m]] = rb.head[prow[m], v : v + width]
    return out


class Decoder:
    """Decodes record batches; keeps the table of PCAPdroid app names across batches."""

    def __init__(self) -> None:
        self.apps: list[str] = []
        self._app_index: dict[bytes, int] = {}

    def decode(self, rb: RecordBatch) -> PacketBatch:
        """The batch's headers, by the compiled decoder when it is in use (see DECODER)."""
        if _compiled is None:
            return self._decode_numpy(rb)
        return self._decode_compiled(rb)

    def _decode_compiled(self, rb: RecordBatch) -> PacketBatch:
        """:meth:`_decode_numpy`, in one pass of ``_decode.decode`` over the batch; the
        warnings and counts are built from its tallies in the order the numpy code adds them
        (a Counter keeps that order)."""
        assert _compiled is not None
        n = len(rb)
        cols: dict[str, np.ndarray] = {
            "ip_version": np.empty(n, dtype=np.uint8),
            "src_hi": np.empty(n, dtype=np.uint64),
            "src_lo": np.empty(n, dtype=np.uint64),
            "dst_hi": np.empty(n, dtype=np.uint64),
            "dst_lo": np.empty(n, dtype=np.uint64),
            "proto": np.empty(n, dtype=np.int16),
            "sport": np.empty(n, dtype=np.int32),
            "dport": np.empty(n, dtype=np.int32),
            "tcp_flags": np.empty(n, dtype=np.int32),
            "l4_off": np.empty(n, dtype=np.int64),
            "payload_off": np.empty(n, dtype=np.int64),
            "payload_len": np.empty(n, dtype=np.int64),
            "payload_head": np.empty((n, PAYLOAD_HEAD), dtype=np.uint8),
            "ip_bytes": np.empty(n, dtype=np.int64),
            "flowable": np.empty(n, dtype=bool),
            "uid": np.empty(n, dtype=np.int32),
            "app": np.empty(n, dtype=np.int32),
            "non_ip": np.empty(n, dtype=np.int32),
        }
        head = rb.head
        if head.ndim != 2 or head.dtype != np.uint8 or (n and head.strides[1] != 1):
            head = np.ascontiguousarray(head, dtype=np.uint8)
        values, names = _compiled.decode(
            rb.buf,
            np.ascontiguousarray(rb.data, dtype=np.int64),
            np.ascontiguousarray(rb.caplen, dtype=np.int64),
            np.ascontiguousarray(rb.link_type, dtype=np.int32),
            head,
            tuple(cols[name] for name in _compiled.OUTPUTS),
        )
        t = dict(zip(_compiled.TALLIES, values, strict=True))
        warnings: Counter[str] = Counter()
        counts: Counter[str] = Counter({"packets": n})
        if t["unknown-link"]:
            links = rb.link_type[~np.isin(rb.link_type, list(SUPPORTED_LINK_TYPES))]
            for link, k in zip(*np.unique(links, return_counts=True), strict=True):
                warnings[f"unknown-link-type-{int(link)}"] += int(k)
        _add(warnings, "truncated-link-header", t["truncated-link"])
        if t["non-ip"]:
            _tally_non_ip(cols["non_ip"][: t["non-ip"]], warnings, counts)
        for key, name in (
            ("truncated-ip-header", "v4-truncated"),
            ("bad-ip-version", "v4-bad-version"),
            ("bad-ip-header-length", "v4-bad-ihl"),
            ("ip-length-zero", "v4-length-zero"),
            ("bad-ip-length", "v4-bad-length"),
            ("truncated-ip-header", "v6-truncated"),
            ("bad-ip-version", "v6-bad-version"),
            ("ip-length-zero", "v6-length-zero"),
            ("truncated-ip-header", "v6-ext-truncated"),
        ):
            _add(warnings, key, t[name])
        counts["ipv4"] += t["ipv4"]
        counts["ipv6"] += t["ipv6"]
        _add(warnings, "ip-fragment", t["fragment"])
        _add(warnings, "truncated-l4-header", t["l4-truncated"])
        _add(warnings, "bad-tcp-header", t["bad-tcp"])
        if t["tcp"] or t["udp"]:
            counts["tcp"] += t["tcp"]
            counts["udp"] += t["udp"]
        counts["other-ip"] += t["other-ip"]
        _add(warnings, "cut-by-snaplen", t["cut-by-snaplen"])
        app = cols["app"]
        if names:  # the batch's app names, in the order they appear: codes of the decoder
            codes = np.array([self._app(raw) for raw in names] + [-1], dtype=np.int32)
            if not np.array_equal(codes[:-1], np.arange(len(names))):
                app = codes[app]
        return PacketBatch(
            records=rb,
            ip_version=cols["ip_version"],
            src_hi=cols["src_hi"],
            src_lo=cols["src_lo"],
            dst_hi=cols["dst_hi"],
            dst_lo=cols["dst_lo"],
            proto=cols["proto"],
            sport=cols["sport"],
            dport=cols["dport"],
            tcp_flags=cols["tcp_flags"],
            l4_off=cols["l4_off"],
            payload_off=cols["payload_off"],
            payload_len=cols["payload_len"],
            payload_head=cols["payload_head"],
            ip_bytes=cols["ip_bytes"],
            flowable=cols["flowable"],
            uid=cols["uid"],
            app=app,
            warnings=+warnings,
            counts=+counts,
        )

    def _decode_numpy(self, rb: RecordBatch) -> PacketBatch:
        """The reference decoder, vectorised with numpy."""
        n = len(rb)
        warnings: Counter[str] = Counter()
        counts: Counter[str] = Counter({"packets": n})
        l3 = np.full(n, -1, dtype=np.int64)
        et = np.zeros(n, dtype=np.int64)
        trail = np.zeros(n, dtype=np.int64)
        links = np.unique(rb.link_type) if n else np.zeros(0, dtype=np.int32)
        for link in links.tolist():
            rows = None if len(links) == 1 else np.flatnonzero(rb.link_type == link)
            if link not in SUPPORTED_LINK_TYPES:
                warnings[f"unknown-link-type-{link}"] += n if rows is None else len(rows)
                continue
            off, etype, tail = _link(link, rb, rows, rb.caplen if rows is None else rb.caplen[rows])
            if rows is None:
                l3[:] = off
                et[:] = etype
                trail[:] = tail
            else:
                l3[rows] = off
                et[rows] = etype
                trail[rows] = tail
        empty = rb.caplen == 0  # counted by the reader
        cap = rb.caplen - trail  # what precedes a radiotap FCS
        short = (l3 >= 0) & (cap <= l3) & ~empty
        _count(warnings, "truncated-link-header", short)
        l3[short | empty] = -1
        et[short | empty] = 0
        is4 = et == ETH_P_IP
        is6 = et == ETH_P_IPV6
        other = (l3 >= 0) & ~is4 & ~is6
        if other.any():
            _tally_non_ip(et[other], warnings, counts)

        ip = _IpColumns(n)
        r4 = np.flatnonzero(is4)
        if r4.size:
            _ipv4(rb, cap, l3, r4, warnings, ip)
        r6 = np.flatnonzero(is6)
        if r6.size:
            _ipv6(rb, cap, l3, r6, warnings, ip)
        version, proto, l4, ip_end = ip.version, ip.proto, ip.l4, ip.end
        counts["ipv4"] += int(np.count_nonzero(version == 4))
        counts["ipv6"] += int(np.count_nonzero(version == 6))
        _count(warnings, "ip-fragment", ip.frag)

        sport = np.zeros(n, dtype=np.int32)
        dport = np.zeros(n, dtype=np.int32)
        flags = np.zeros(n, dtype=np.int32)
        pl_off = np.full(n, -1, dtype=np.int64)
        pl_len = np.zeros(n, dtype=np.int64)
        is_ip = version > 0
        tcp_or_udp = (proto == PROTO_TCP) | (proto == PROTO_UDP)
        ported = is_ip & ~ip.later & tcp_or_udp & (l4 >= 0)
        tcp = ported & (proto == PROTO_TCP)
        need = np.where(tcp, 20, 8)
        fits = ported & (cap >= l4 + need) & (ip_end >= l4 + need)
        _count(warnings, "truncated-l4-header", ported & ~fits)
        rl = np.flatnonzero(fits)
        if rl.size:
            m = bytes_at(rb, rl, l4[rl], 14)
            sport[rl] = _be16(m, 0)
            dport[rl] = _be16(m, 2)
            t = tcp[rl]
            doff = (m[:, 12].astype(np.int64) >> 4) * 4
            bad_tcp = t & (doff < 20)
            _count(warnings, "bad-tcp-header", bad_tcp)
            flags[rl] = np.where(t, ((m[:, 12].astype(np.int32) & 1) << 8) | m[:, 13], 0)
            start = l4[rl] + np.where(t, doff, 8)
            start = np.where(bad_tcp, -1, start)
            pl_off[rl] = start
            stop = np.minimum(ip_end[rl], cap[rl])
            pl_len[rl] = np.where(start >= 0, np.maximum(stop - start, 0), 0)
            n_tcp = int(np.count_nonzero(t))
            counts["tcp"] += n_tcp
            counts["udp"] += len(rl) - n_tcp
        flowable = is_ip & ~ip.later & (fits | ~tcp_or_udp) & (l4 >= 0)
        counts["other-ip"] += int(np.count_nonzero(flowable & ~fits))
        _count(warnings, "cut-by-snaplen", is_ip & (ip_end > cap))
        head = np.zeros((n, PAYLOAD_HEAD), dtype=np.uint8)
        rp = np.flatnonzero(pl_len > 0)
        if rp.size:
            head[rp] = bytes_at(rb, rp, pl_off[rp], PAYLOAD_HEAD)
        uid = np.full(n, -1, dtype=np.int32)
        app = np.full(n, -1, dtype=np.int32)
        # PCAPdroid's trailer makes the frame at least 32 bytes longer than its IP datagram;
        # Ethernet padding never does (a datagram is at least 20 bytes, a frame 60).
        spare = (
            (rb.link_type == LINKTYPE_ETHERNET) & is_ip & (cap - l3 - ip.bytes >= PCAPDROID_TRAILER)
        )
        if spare.any():
            self._trailer(rb, np.flatnonzero(spare), uid, app)
        return PacketBatch(
            records=rb,
            ip_version=version,
            src_hi=ip.src_hi,
            src_lo=ip.src_lo,
            dst_hi=ip.dst_hi,
            dst_lo=ip.dst_lo,
            proto=proto,
            sport=sport,
            dport=dport,
            tcp_flags=flags,
            l4_off=l4,
            payload_off=pl_off,
            payload_len=pl_len,
            payload_head=head,
            ip_bytes=ip.bytes,
            flowable=flowable,
            uid=uid,
            app=app,
            warnings=+warnings,
            counts=+counts,
        )

    def _trailer(self, rb: RecordBatch, rows: np.ndarray, uid: np.ndarray, app: np.ndarray) -> None:
        start = rb.data[rows] + rb.caplen[rows] - PCAPDROID_TRAILER
        tail = window(rb.buf, start, 28)
        hit = _be32(tail, 0) == PCAPDROID_MAGIC
        if not hit.any():
            return
        sel = rows[hit]
        uid[sel] = np.ascontiguousarray(tail[hit, 4:8]).view(">i4")[:, 0]
        names = np.ascontiguousarray(tail[hit, 8:28])
        uniq, first, inverse = np.unique(
            names.view("V20")[:, 0], return_index=True, return_inverse=True
        )
        codes = np.zeros(len(uniq), dtype=np.int32)
        for k in np.argsort(first).tolist():  # codes in the order the apps first appear
            codes[k] = self._app(bytes(uniq[k]))
        app[sel] = codes[inverse.ravel()]

    def _app(self, raw: bytes) -> int:
        code = self._app_index.get(raw)
        if code is None:
            code = len(self.apps)
            self.apps.append(raw.split(b"\x00", 1)[0].decode("utf-8", "replace"))
            self._app_index[raw] = code
        return code


_Offsets = np.ndarray | int


_KIND_CODES: Final[dict[str, int]] = {k: LINK_KIND + i for i, (k, _) in enumerate(LINK_KINDS)}


def _kind(name: str) -> int:
    """The pseudo ethertype of a kind of frame in :data:`LINK_KINDS`."""
    return _KIND_CODES[name]


def _le16(m: np.ndarray, i: int) -> np.ndarray:
    return m[:, i].astype(np.int64) | (m[:, i + 1].astype(np.int64) << 8)


def _le32(m: np.ndarray, i: int) -> np.ndarray:
    return np.ascontiguousarray(m[:, i : i + 4]).view("<u4")[:, 0].astype(np.int64)


def _sub(rows: np.ndarray | None, r: np.ndarray) -> np.ndarray:
    return r if rows is None else rows[r]


def _link(
    link: int, rb: RecordBatch, rows: np.ndarray | None, cap: np.ndarray
) -> tuple[_Offsets, np.ndarray, _Offsets]:
    """Where the network layer starts, its ethertype and how many bytes of the frame follow
    the packet (a radiotap FCS). The ethertype is a pseudo one when the frame holds no IP the
    decoder can read: -1 (a raw link type whose packet is not IP), above 0xffff (see
    :func:`_non_ip_key`). A link header cut by the snaplen starts its network layer at
    ``cap`` (counted as ``truncated-link-header``). ``cap``: the rows' captured lengths."""
    if link in FIXED_LINK_TYPES:
        off, et = _fixed_link(link, rb, rows, 0)
        return off, et, 0
    if link == LINKTYPE_RADIOTAP:
        return _radiotap(rb, rows, cap)
    if link == LINKTYPE_IEEE802_11:
        n = len(cap)
        no = np.zeros(n, dtype=bool)
        return _wlan(rb, rows, cap, np.zeros(n, dtype=np.int64), no, no)
    if link == LINKTYPE_NFLOG:
        off, et = _nflog(rb, rows, cap)
        return off, et, 0
    off, et = _pktap(rb, rows, cap)  # LINKTYPE_PKTAP, DLT_PKTAP
    return off, et, 0


def _fixed_link(
    link: int, rb: RecordBatch, rows: np.ndarray | None, base: _Offsets
) -> tuple[_Offsets, np.ndarray]:
    """:func:`_link` of a link header of fixed layout at ``base``."""
    if link == LINKTYPE_ETHERNET:
        h = bytes_at(rb, rows, base + 12, 10)
        et = _be16(h, 0)
        tag = np.isin(et, VLAN_TPIDS)
        if not tag.any():
            return base + 14, et
        off = np.where(tag, 18, 14)
        et = np.where(tag, _be16(h, 4), et)
        tag2 = tag & np.isin(et, VLAN_TPIDS)
        et = np.where(tag2, _be16(h, 8), et)
        return base + np.where(tag2, 22, off), et
    if link in RAW_LINK_TYPES or link in (LINKTYPE_IPV4, LINKTYPE_IPV6):
        nib = bytes_at(rb, rows, base, 1)[:, 0].astype(np.int64) >> 4
        if link == LINKTYPE_IPV4:
            return base, np.where(nib == 4, ETH_P_IP, -1)
        if link == LINKTYPE_IPV6:
            return base, np.where(nib == 6, ETH_P_IPV6, -1)
        return base, np.where(nib == 4, ETH_P_IP, np.where(nib == 6, ETH_P_IPV6, -1))
    if link in (LINKTYPE_NULL, LINKTYPE_LOOP):
        return base + 4, _null(bytes_at(rb, rows, base, 4), link)
    if link == LINKTYPE_LINUX_SLL:
        return base + 16, _be16(bytes_at(rb, rows, base + 14, 2), 0)
    return base + 20, _be16(bytes_at(rb, rows, base, 2), 0)  # LINUX_SLL2


def _null(h: np.ndarray, link: int) -> np.ndarray:
    """The ethertype of NULL (host byte order) or LOOP (network byte order) headers.

    The 4 bytes hold a BSD address family, or as some tools write an ethertype, in either
    byte order; they are read as Wireshark reads them (``packet-null.c``): a value above
    1500 is an ethertype (its low 16 bits), else an address family."""
    h = np.ascontiguousarray(h)
    if link == LINKTYPE_LOOP:
        v = _be32(h, 0)
    else:
        le = h.view("<u4")[:, 0].astype(np.int64)
        high = (le >> 16) != 0
        upper16 = high & (h[:, 3] == 0) & (h[:, 2] < 6)  # a 16-bit value in bytes 2-3
        swapped = high & ~upper16  # written big-endian
        low16 = ~high & (h[:, 0] == 0) & (h[:, 1] < 6)  # a big-endian 16-bit value
        v = np.where(
            upper16, h[:, 2], np.where(swapped, _be32(h, 0), np.where(low16, h[:, 1], le))
        ).astype(np.int64)
    eth = v > ETHERNET_MAX_LENGTH  # its low 16 bits (the high ones may be anything)
    v4 = np.where(eth, (v & 0xFFFF) == ETH_P_IP, v == AF_INET)
    v6 = np.where(eth, (v & 0xFFFF) == ETH_P_IPV6, np.isin(v, AF_INET6))
    return np.where(v4, ETH_P_IP, np.where(v6, ETH_P_IPV6, _kind("null-header-unknown")))


def _radiotap(
    rb: RecordBatch, rows: np.ndarray | None, cap: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A radiotap header (its length, and the Flags field for FCS and padding), then 802.11."""
    n = len(cap)
    off = np.zeros(n, dtype=np.int64)
    et = np.zeros(n, dtype=np.int64)
    h = bytes_at(rb, rows, 0, 8)
    length = _le16(h, 2)
    present = _le32(h, 4)
    short = cap < 8
    bad = ~short & ((h[:, 0] != 0) | (length < 8))
    cut = ~short & ~bad & (length > cap)
    ok = ~short & ~bad & ~cut
    words = np.ones(n, dtype=np.int64)
    more = ok & ((present >> 31) != 0)
    for i in range(1, RADIOTAP_MAX_WORDS):
        e = np.flatnonzero(more)
        if not e.size:
            break
        over = 4 + 4 * i + 4 > length[e]
        bad[e[over]] = True
        more[e[over]] = False
        e = e[~over]
        word = _le32(bytes_at(rb, _sub(rows, e), 4 + 4 * i, 4), 0)
        more[e] = (word >> 31) != 0
        words[e] = i + 1
    bad |= more  # still more bitmaps after the last one read
    ok &= ~bad
    at = 4 + 4 * words
    at = np.where(present & 1, ((at + 7) & ~7) + 8, at)  # TSFT: 8 bytes, 8-aligned
    has_flags = ok & ((present & 2) != 0)
    flags_bad = has_flags & (at + 1 > length)
    bad |= flags_bad
    ok &= ~flags_bad
    flags = np.where(has_flags & ok, bytes_at(rb, rows, np.minimum(at, length), 1)[:, 0], 0)
    fcs = ok & ((flags & 0x10) != 0)
    pad = ok & ((flags & 0x20) != 0)
    trail = np.zeros(n, dtype=np.int64)
    r = np.flatnonzero(ok)
    if r.size:
        o, e, t = _wlan(rb, _sub(rows, r), cap[r], length[r], fcs[r], pad[r])
        off[r], et[r], trail[r] = o, e, t
    off[short | cut] = cap[short | cut]
    et[bad] = _kind("radiotap-bad-header")
    return off, et, trail


def _wlan(
    rb: RecordBatch,
    rows: np.ndarray | None,
    cap: np.ndarray,
    w: np.ndarray,
    fcs: np.ndarray,
    pad: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An 802.11 frame at ``w``: data frames carrying LLC/SNAP give their ethertype (QoS,
    four addresses, HT control and radiotap's padding taken into account); other frames,
    a kind of :data:`LINK_KINDS`. ``fcs``: the frame ends with a 4-byte FCS."""
    n = len(cap)
    off = np.zeros(n, dtype=np.int64)
    et = np.zeros(n, dtype=np.int64)
    trail = np.where(fcs, 4, 0).astype(np.int64)
    capx = cap - trail
    fc = bytes_at(rb, rows, w, 2).astype(np.int64)
    short = capx < w + 2
    live = ~short
    version_bad = live & ((fc[:, 0] & 3) != 0)
    live &= ~version_bad
    ftype = (fc[:, 0] >> 2) & 3
    sub = fc[:, 0] >> 4
    data = live & (ftype == 2)
    no_data = data & ((sub & 4) != 0)
    data &= ~no_data
    qos = (sub & 8) != 0
    four = (fc[:, 1] & 3) == 3
    size = 24 + 6 * four + 2 * qos + 4 * (qos & ((fc[:, 1] & 0x80) != 0))
    size = np.where(pad, (size + 3) & ~3, size)
    cut = data & (capx < w + size)
    data &= ~cut
    protected = data & ((fc[:, 1] & 0x40) != 0)
    data &= ~protected
    qos_control = bytes_at(rb, rows, w + 24 + 6 * four, 1)[:, 0]
    amsdu = data & qos & ((qos_control & 0x80) != 0)
    data &= ~amsdu
    cut2 = data & (capx < w + size + 8)
    data &= ~cut2
    llc = bytes_at(rb, rows, w + size, 8)
    snap = (
        (llc[:, 0] == 0xAA)
        & (llc[:, 1] == 0xAA)
        & (llc[:, 2] == 3)
        & (llc[:, 3] == 0)
        & (llc[:, 4] == 0)
        & ((llc[:, 5] == 0) | (llc[:, 5] == 0xF8))
    )
    et[:] = np.where(data & snap, _be16(llc, 6), et)
    off[:] = np.where(data & snap, w + size + 8, off)
    for mask, name in (
        (version_bad, "wlan-bad-frame"),
        (live & (ftype == 0), "wlan-management-frame"),
        (live & (ftype == 1), "wlan-control-frame"),
        (live & (ftype == 3), "wlan-extension-frame"),
        (no_data, "wlan-no-data-frame"),
        (protected, "wlan-encrypted-frame"),
        (amsdu, "wlan-amsdu-frame"),
        (data & ~snap, "wlan-not-llc-snap"),
    ):
        et[mask] = _kind(name)
    truncated = short | cut | cut2
    off[truncated] = cap[truncated]
    return off, et, trail


def _nflog(
    rb: RecordBatch, rows: np.ndarray | None, cap: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Linux NFLOG: a 4-byte header (address family first), then TLVs with lengths and
    types in the byte order of the host that logged (told by the first TLV's length); the
    packet is the value of the NFULA_PAYLOAD attribute."""
    n = len(cap)
    off = np.zeros(n, dtype=np.int64)
    et = np.zeros(n, dtype=np.int64)
    h = bytes_at(rb, rows, 0, 8)
    family = h[:, 0]
    short = cap < 4
    unknown = ~short & (family != 2) & (family != 10)
    ip_et = np.where(family == 2, ETH_P_IP, ETH_P_IPV6)
    le, be = _le16(h, 4), _be16(h, 4)
    big = ~((le >= 4) & (le <= cap - 4)) & (be >= 4) & (be <= cap - 4)
    pos = np.full(n, 4, dtype=np.int64)
    alive = ~short & ~unknown
    truncated = short.copy()
    for k in range(NFLOG_MAX_TLVS + 1):
        a = np.flatnonzero(alive)
        if not a.size:
            break
        end = pos[a] + 4 > cap[a]
        ended = a[end]
        alive[ended] = False
        at_end = pos[ended] == cap[ended]
        et[ended[at_end]] = _kind("nflog-no-payload")
        truncated[ended[~at_end]] = True
        a = a[~end]
        if k == NFLOG_MAX_TLVS:
            et[a] = _kind("nflog-bad-tlv")
            break
        t = bytes_at(rb, _sub(rows, a), pos[a], 4)
        length = np.where(big[a], _be16(t, 0), _le16(t, 0))
        kind = np.where(big[a], _be16(t, 2), _le16(t, 2)) & 0x7FFF
        bad = length < 4
        et[a[bad]] = _kind("nflog-bad-tlv")
        alive[a[bad]] = False
        hit = ~bad & (kind == NFULA_PAYLOAD)
        found = a[hit]
        off[found] = pos[found] + 4
        et[found] = ip_et[found]
        alive[found] = False
        go = a[~bad & ~hit]
        pos[go] += (length[~bad & ~hit] + 3) & ~3
    et[unknown] = _kind("nflog-unknown-family")
    off[truncated] = cap[truncated]
    return off, et


def _pktap(
    rb: RecordBatch, rows: np.ndarray | None, cap: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Apple's PKTAP: a header of its own length (little-endian, as Apple's hosts write it)
    naming the link type of the frame that follows it, read as that link type."""
    n = len(cap)
    off = np.zeros(n, dtype=np.int64)
    et = np.zeros(n, dtype=np.int64)
    h = bytes_at(rb, rows, 0, 12)
    length, record, inner = _le32(h, 0), _le32(h, 4), _le32(h, 8)
    short = cap < 12
    bad = ~short & ((length < PKTAP_HEADER) | (record > 1))
    cut = ~short & ~bad & (length > cap)
    ok = ~short & ~bad & ~cut
    et[ok & (record == 0)] = _kind("pktap-no-packet")
    packet = ok & (record == 1)
    readable = packet & np.isin(inner, list(FIXED_LINK_TYPES))
    for link in np.unique(inner[readable]).tolist():
        r = np.flatnonzero(readable & (inner == link))
        o, e = _fixed_link(link, rb, _sub(rows, r), length[r])
        off[r], et[r] = o, e
    other = packet & ~readable
    et[other] = PKTAP_INNER + np.minimum(inner[other], 0xFFFF)
    et[bad] = _kind("pktap-bad-header")
    off[short | cut] = cap[short | cut]
    return off, et


class _IpColumns:
    """Network-layer columns of a batch, filled by :func:`_ipv4` and :func:`_ipv6`."""

    def __init__(self, n: int) -> None:
        self.version = np.zeros(n, dtype=np.uint8)
        self.src_hi = np.zeros(n, dtype=np.uint64)
        self.src_lo = np.zeros(n, dtype=np.uint64)
        self.dst_hi = np.zeros(n, dtype=np.uint64)
        self.dst_lo = np.zeros(n, dtype=np.uint64)
        self.proto = np.full(n, -1, dtype=np.int16)
        self.l4 = np.full(n, -1, dtype=np.int64)
        self.end = np.zeros(n, dtype=np.int64)
        self.bytes = np.zeros(n, dtype=np.int64)
        self.frag = np.zeros(n, dtype=bool)  # any fragment
        self.later = np.zeros(n, dtype=bool)  # not the first fragment: no transport header


def _ipv4(
    rb: RecordBatch,
    cap: np.ndarray,
    l3: np.ndarray,
    rows: np.ndarray,
    warnings: Counter[str],
    ip: _IpColumns,
) -> None:
    fits = cap[rows] >= l3[rows] + 20
    if not fits.all():
        _count(warnings, "truncated-ip-header", ~fits)
        rows = rows[fits]
    h = bytes_at(rb, rows, l3[rows], 20)
    ok = (h[:, 0] >> 4) == 4
    ihl = (h[:, 0].astype(np.int64) & 15) * 4
    ok_ihl = ok & (ihl >= 20)
    if not ok_ihl.all():
        _count(warnings, "bad-ip-version", ~ok)
        _count(warnings, "bad-ip-header-length", ok & (ihl < 20))
        rows, h, ihl = rows[ok_ihl], h[ok_ihl], ihl[ok_ihl]
    base = l3[rows]
    total = _be16(h, 2)
    zero = total == 0
    if zero.any():
        _count(warnings, "ip-length-zero", zero)
        total = np.where(zero, cap[rows] - base, total)
    bad_len = total < ihl
    _count(warnings, "bad-ip-length", bad_len)
    ip.version[rows] = 4
    ip.src_lo[rows] = _be32(h, 12).astype(np.uint64)
    ip.dst_lo[rows] = _be32(h, 16).astype(np.uint64)
    ip.proto[rows] = h[:, 9]
    fragment_field = _be16(h, 6)
    ip.frag[rows] = (fragment_field & 0x3FFF) != 0
    ip.later[rows] = (fragment_field & 0x1FFF) != 0
    ip.end[rows] = base + total
    ip.bytes[rows] = total
    ip.l4[rows] = np.where(bad_len, -1, base + ihl)


def _ipv6(
    rb: RecordBatch,
    cap: np.ndarray,
    l3: np.ndarray,
    rows: np.ndarray,
    warnings: Counter[str],
    ip: _IpColumns,
) -> None:
    fits = cap[rows] >= l3[rows] + 40
    if not fits.all():
        _count(warnings, "truncated-ip-header", ~fits)
        rows = rows[fits]
    h = bytes_at(rb, rows, l3[rows], 40)
    ok = (h[:, 0] >> 4) == 6
    if not ok.all():
        _count(warnings, "bad-ip-version", ~ok)
        rows, h = rows[ok], h[ok]
    base = l3[rows]
    plen = _be16(h, 4)
    zero = plen == 0
    if zero.any():
        _count(warnings, "ip-length-zero", zero)
        plen = np.where(zero, np.maximum(cap[rows] - base - 40, 0), plen)
    ip.version[rows] = 6
    ip.src_hi[rows] = _be64(h, 8)
    ip.src_lo[rows] = _be64(h, 16)
    ip.dst_hi[rows] = _be64(h, 24)
    ip.dst_lo[rows] = _be64(h, 32)
    end = base + 40 + plen
    ip.end[rows] = end
    ip.bytes[rows] = 40 + plen
    nh = h[:, 6].astype(np.int64)
    off = base + 40
    alive = np.ones(len(rows), dtype=bool)
    fragmented = np.zeros(len(rows), dtype=bool)
    not_first = np.zeros(len(rows), dtype=bool)
    for _ in range(8):
        # what follows a later fragment's header is data, not headers
        ext = alive & ~not_first & np.isin(nh, IPV6_EXTENSIONS)
        if not ext.any():
            break
        e = np.flatnonzero(ext)
        fits = off[e] + 8 <= np.minimum(end[e], cap[rows[e]])
        _count(warnings, "truncated-ip-header", ~fits)
        alive[e[~fits]] = False
        e = e[fits]
        m = bytes_at(rb, rows[e], off[e], 8)
        kind = nh[e]
        is_frag = kind == IPV6_FRAGMENT
        size = np.where(
            is_frag,
            8,
            np.where(kind == IPV6_AH, (m[:, 1].astype(np.int64) + 2) * 4,
                     (m[:, 1].astype(np.int64) + 1) * 8),
        )  # fmt: skip
        fragmented[e[is_frag]] = True
        not_first[e[is_frag]] = (_be16(m, 2)[is_frag] >> 3) != 0
        over = off[e] + size > end[e]  # a header longer than the datagram
        _count(warnings, "truncated-ip-header", over)
        alive[e[over]] = False
        e, m, size = e[~over], m[~over], size[~over]
        nh[e] = m[:, 0]
        off[e] += size
    ip.proto[rows] = nh
    ip.frag[rows] = fragmented
    ip.later[rows] = not_first
    ip.l4[rows] = np.where(alive & ~np.isin(nh, IPV6_EXTENSIONS), off, -1)
