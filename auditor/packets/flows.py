"""The flow table of a capture, its DNS table and the names DNS gave to addresses.

Long because: :class:`CaptureAnalyzer` is one state machine over the batches (flow assignment,
the choice of the packets that may carry a name, the waits for split heads, hellos and
flights, the final tables), and its steps share its per-flow arrays; the protocol parsers,
the collector and the worker are modules of their own.

:class:`CaptureAnalyzer` consumes decoded batches one at a time and keeps only per-flow state,
so a capture of any size is read in bounded memory (the per-packet table is kept only when
asked for). Per batch, everything per packet is numpy:

- **Flows.** A bidirectional key (IP version, protocol, the lower and the higher address:port)
  is hashed; packets are grouped by a stable sort of the hash (a collision is detected and
  falls back to an exact sort). A Python dict maps each distinct key to its current flow,
  touched once per key and batch. A TCP flow is its 5-tuple; any other protocol's flow ends
  after ``udp_timeout`` seconds (120 by default) of silence (from the key's previous packet in
  the file, whatever the batches), and the next packet starts a
  new one. Packets, IP bytes and TCP flags per direction, first and last seen and the
  PCAPdroid uid/app are reduced per flow with ``reduceat``.
- **Names.** Only packets that can carry a name reach Python: DNS (UDP 53/5353/5355, TCP 53),
  TCP payloads starting a TLS handshake record with a ClientHello (and, when the record and
  handshake lengths say it did not fit, the next segments from the same side), QUIC
  long-header Initials of v1 and v2 (and long headers on port 443 of other versions, counted),
  TCP payloads starting with an HTTP method (and, when the request head does not end in that
  segment, the next segments from the same side, and up to 8 just before it, which may be
  its reordered tail, up to :data:`~auditor.packets.HTTP_HEAD_CAP` bytes), and a
  server's first TLS flight unless its first
  segment shows no Certificate message can follow the ServerHello (TLS 1.3 and resumed
  sessions are left out on these bytes), with the next segments from that side as far as the
  leaf certificate's length says (until the parser has read the leaf, when the first segment
  did not tell). They are selected with numpy, packed into a
  :class:`~auditor.packets.names.NameJob` per batch and parsed by a
  :class:`~auditor.packets.names.NameCollector`: in this process, or, for a large file on a
  machine with more than one core, partly in a worker process while this one reads on (the
  worker takes QUIC Initials and DNS over TCP; UDP DNS stays here, parsed with one compiled
  call per batch, as sending its rows back would cost more than parsing them).
  Both see the same jobs, so the results are the same.
- **Orientation.** Which side is the client is decided per flow once the file is read, never
  by which packet came first when anything better is known (a capture that starts mid-way, or
  a server's late FIN, RST or push, would otherwise make the phone the server). In order:
  the side that sent a SYN without ACK (``tcp-syn``); else the side that got a SYN-ACK
  (``tcp-synack``); else the side that sent a DNS query, ClientHello, QUIC client Initial or
  HTTP request (``payload``); else by ports (``port``): a port below 1024 is the server's
  against one of 1024 or more; else a known service port (:data:`SERVICE_PORTS`: push, MQTT,
  XMPP, STUN/TURN, SIP, HTTP alternates) against any other; else a port below 32768 against
  an ephemeral one (32768 and up: Linux and Android hand out 32768-60999, IANA 49152-65535);
  only when none of these tells, the side of the flow's first packet (``first-packet``).
  ``client_evidence`` says which rule decided.
- **The server's certificate:** the leaf of a TLS <= 1.2 handshake, in the ``cert_*``
  columns (:data:`CERT_COLUMNS`).
- **The name of a flow:** the HTTP Host (``http-host``), else the TLS SNI (``tls-sni``), else
  the QUIC SNI (``quic-sni``), else the name of the last DNS answer for the server address seen
  before the flow started (``dns-answer``), else the address (``ip``).

:func:`read_capture` runs the whole pipeline on a file.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO, Final

import numpy as np
import pandas as pd
import pyarrow as pa

from auditor import columns
from auditor.gcpause import gc_paused
from auditor.heaptrim import trim_heap
from auditor.packets import decode, namekinds, names, tlscert
from auditor.packets._compiled import load
from auditor.packets.decode import Decoder, PacketBatch
from auditor.packets.dns import DNS_RCODES, dns_type_name
from auditor.packets.dnstables import DnsTables
from auditor.packets.http1 import HTTP_HEAD_CAP
from auditor.packets.nameresult import NameResult, merge_results
from auditor.packets.pcapfile import (
    DEFAULT_CHUNK,
    CaptureReader,
    Comment,
    Interface,
    window,
)
from auditor.packets.spill import FrameSpill, tidy
from auditor.packets.spilldir import drop_pages, spill_full
from auditor.packets.workerpipe import NameWorker

_flowtab: ModuleType | None = load("_flowtab")  # else numpy does the same
FLOW_TABLE: Final = "numpy" if _flowtab is None else "compiled"

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------- flow table columns
FLOW_ID: Final = columns.FLOW_ID
PROTO: Final = "proto"  # tcp | udp | icmp | icmpv6 | ip-proto-<n> ...
IP_VERSION: Final = "ip_version"
CLIENT_IP: Final = columns.CLIENT_IP
CLIENT_PORT: Final = columns.CLIENT_PORT
SERVER_IP: Final = columns.SERVER_IP
SERVER_PORT: Final = columns.SERVER_PORT
FIRST_SEEN: Final = "first_seen"  # UTC datetime
LAST_SEEN: Final = "last_seen"
PACKETS_UP: Final = "packets_up"  # client to server
PACKETS_DOWN: Final = "packets_down"
IP_BYTES_UP: Final = "ip_bytes_up"  # IP datagram lengths as sent
IP_BYTES_DOWN: Final = "ip_bytes_down"
CLIENT_EVIDENCE: Final = "client_evidence"  # tcp-syn | tcp-synack | payload | port | first-packet
SYN_SEEN: Final = "syn_seen"  # the client sent a SYN
SYNACK_SEEN: Final = "synack_seen"  # the server answered with SYN-ACK
FIN_SEEN: Final = "fin_seen"
RST_SEEN: Final = "rst_seen"
ESTABLISHED: Final = "established"  # SYN and SYN-ACK both seen
SNI: Final = columns.SNI  # TLS over TCP; several distinct values are joined with ";"
ALPN: Final = columns.ALPN  # protocols offered, joined with ","
QUIC_SNI: Final = "quic_sni"
QUIC_ALPN: Final = "quic_alpn"
HTTP_HOST: Final = "http_host"  # the Host header as sent
DNS_NAME: Final = "dns_name"  # from the last DNS answer for the server before the flow began
NAME: Final = columns.NAME
NAME_EVIDENCE: Final = columns.NAME_EVIDENCE  # http-host | tls-sni | quic-sni | dns-answer | ip
UID: Final = "uid"  # PCAPdroid trailer, -1 when absent
APP: Final = "app"
LINK_TYPE: Final = "link_type"  # of the flow's first packet
# the server's leaf certificate, from a TLS <= 1.2 handshake (auditor.packets.tlscert)
CERT_ORG: Final = columns.CERT_ORG
CERT_COUNTRY: Final = columns.CERT_COUNTRY
CERT_CN: Final = columns.CERT_CN
CERT_NAMES: Final = columns.CERT_NAMES  # SAN DNS names, ";"-joined
CERT_ISSUER: Final = columns.CERT_ISSUER
CERT_SHA256: Final = columns.CERT_SHA256
CERT_COLUMNS: Final = columns.CERT_COLUMNS

FLOW_COLUMNS: Final[tuple[str, ...]] = (
    FLOW_ID,
    PROTO,
    IP_VERSION,
    CLIENT_IP,
    CLIENT_PORT,
    SERVER_IP,
    SERVER_PORT,
    FIRST_SEEN,
    LAST_SEEN,
    PACKETS_UP,
    PACKETS_DOWN,
    IP_BYTES_UP,
    IP_BYTES_DOWN,
    CLIENT_EVIDENCE,
    SYN_SEEN,
    SYNACK_SEEN,
    FIN_SEEN,
    RST_SEEN,
    ESTABLISHED,
    SNI,
    ALPN,
    QUIC_SNI,
    QUIC_ALPN,
    HTTP_HOST,
    DNS_NAME,
    NAME,
    NAME_EVIDENCE,
    UID,
    APP,
    LINK_TYPE,
    *CERT_COLUMNS,
)

EVIDENCE_HTTP_HOST: Final = "http-host"
EVIDENCE_TLS_SNI: Final = "tls-sni"
EVIDENCE_QUIC_SNI: Final = "quic-sni"
EVIDENCE_DNS: Final = "dns-answer"
EVIDENCE_IP: Final = "ip"
_EVIDENCE: Final = (  # codes of name_evidence, lowest precedence first
    EVIDENCE_IP,
    EVIDENCE_DNS,
    EVIDENCE_QUIC_SNI,
    EVIDENCE_TLS_SNI,
    EVIDENCE_HTTP_HOST,
)
_CLIENT_EVIDENCE: Final = ("tcp-syn", "tcp-synack", "payload", "port", "first-packet")

# -------------------------------------------------------------------------- DNS table columns
DNS_TS: Final = "ts"
DNS_FLOW_ID: Final = FLOW_ID
DNS_CLIENT_IP: Final = CLIENT_IP
DNS_CLIENT_PORT: Final = CLIENT_PORT
DNS_SERVER_IP: Final = SERVER_IP
DNS_SERVER_PORT: Final = SERVER_PORT
TRANSPORT: Final = "transport"  # udp | tcp
DNS_PROTOCOL: Final = "protocol"  # dns | mdns | llmnr
DNS_ID: Final = "dns_id"
RESPONSE: Final = "response"
RCODE: Final = "rcode"
QNAME: Final = "qname"
QTYPE: Final = "qtype"
DNS_COLUMNS: Final[tuple[str, ...]] = (
    DNS_TS,
    DNS_FLOW_ID,
    DNS_CLIENT_IP,
    DNS_CLIENT_PORT,
    DNS_SERVER_IP,
    DNS_SERVER_PORT,
    TRANSPORT,
    DNS_PROTOCOL,
    DNS_ID,
    RESPONSE,
    RCODE,
    QNAME,
    QTYPE,
)

# ------------------------------------------------------------------ DNS answers table columns
# One row per resource record of an answer section, for each DNS table row of its message
ANSWER_ROW: Final = "dns_row"  # the position of the row in the DNS table
ANSWER_NAME: Final = "name"  # the record's owner name
ANSWER_TYPE: Final = "type"  # A, AAAA, CNAME, ... (TYPEnnn when not known)
ANSWER_TTL: Final = "ttl"
ANSWER_VALUE: Final = "value"  # address or target name; missing for types not decoded
ANSWER_HINTS: Final = "hints"  # HTTPS/SVCB ipv4hint/ipv6hint addresses, joined with ","
DNS_ANSWER_COLUMNS: Final[tuple[str, ...]] = (
    ANSWER_ROW,
    ANSWER_NAME,
    ANSWER_TYPE,
    ANSWER_TTL,
    ANSWER_VALUE,
    ANSWER_HINTS,
)

UDP_TIMEOUT: Final = 120.0
# A TCP key silent for longer starts a new flow (Zeek ends a TCP connection after 5 idle
# minutes, tshark never; an hour keeps every connection with keep-alives whole), so that a
# read of days of traffic need not keep every connection it met
TCP_TIMEOUT: Final = 3600.0
# Flows are written out (a spilled read) once no later packet can join them: silent past their
# timeout at the latest time seen, less this much, which a packet may come before one ahead of
# it in the file and still join its flow. A file whose time goes back further stops it.
EXPIRY_SLACK: Final = 300.0
# Server ports of 1024 and up that phones connect to (IANA Service Name and Transport Protocol
# Port Number Registry; 5228-5230: Firebase Cloud Messaging, firebase.google.com/docs/
# cloud-messaging/concept-options "FCM ports and your firewall"; 19302-19309: Google's STUN)
SERVICE_PORTS: Final = frozenset(
    {1080, 1194, 1883, 3128, 3478, 3479, 5060, 5061, 5222, 5223, 5228, 5229, 5230, 5349}
    | {8000, 8008, 8080, 8081, 8088, 8443, 8883, 8888}
    | set(range(19302, 19310))
)
EPHEMERAL_MIN: Final = 32768  # the lowest port Linux (and Android) gives a client socket
DNS_PORTS: Final = names.DNS_PORTS
WORKER_MIN_BYTES: Final = 64 * 1024 * 1024  # files this large get a worker process (auto)
SPILL_MIN_BYTES: Final = 64 * 1024 * 1024  # ... and write their tables to disk (auto)
SPILL_ROWS: Final = 65536  # rows per piece of a table written to disk
_WRITE_ROWS: Final = 4096  # finished flows written out once there are this many
# categoricals built with every category they could have (the same in every piece), those no
# flow has dropped from the whole table
_PRUNED: Final = (PROTO, CLIENT_EVIDENCE, NAME_EVIDENCE)
PROTO_NAMES: Final[dict[int, str]] = {
    1: "icmp",
    2: "igmp",
    6: "tcp",
    17: "udp",
    47: "gre",
    50: "esp",
    51: "ah",
    58: "icmpv6",
    89: "ospf",
    132: "sctp",
}
_SYN_ONLY: Final = 0x200  # derived flag bits, above the 9 TCP flag bits
_SYN_ACK: Final = 0x400
# With a worker, these kinds are parsed here; UDP DNS and the ClientHellos that fit in their
# segment keep no state between packets, and go to the worker unless it lags (_BEHIND jobs)
_KINDS_HERE: Final = (
    names.KIND_TLS,  # but for the whole ClientHellos (see _job's `floating`)
    names.KIND_TLS_MORE,
    names.KIND_HTTP,
    names.KIND_HTTP_MORE,  # here also because _job asks which heads are read
    names.KIND_HTTP_EARLY,
    names.KIND_TLS_SERVER,  # here also because _job asks which flights are read
    names.KIND_TLS_SERVER_MORE,
)
_BEHIND: Final = 2  # jobs the worker may lag before this process parses the floating kinds
_NAME_COLUMNS: Final = (
    (names.NAME_SNI, SNI),
    (names.NAME_ALPN, ALPN),
    (names.NAME_QUIC_SNI, QUIC_SNI),
    (names.NAME_QUIC_ALPN, QUIC_ALPN),
    (names.NAME_HTTP_HOST, HTTP_HOST),
)
_NAME_PRECEDENCE: Final = (
    (names.NAME_AUTHORITY, EVIDENCE_HTTP_HOST),
    (names.NAME_SNI, EVIDENCE_TLS_SNI),
    (names.NAME_QUIC_SNI, EVIDENCE_QUIC_SNI),
)
_PART_TYPES: Final[dict[str, type]] = {
    "packet": np.int64,
    "ts": np.int64,
    "link": np.int32,
    "ver": np.uint8,
    "src_hi": np.uint64,
    "src_lo": np.uint64,
    "dst_hi": np.uint64,
    "dst_lo": np.uint64,
    "proto": np.int16,
    "sport": np.int32,
    "dport": np.int32,
    "flags": np.int32,
    "pl_off": np.int64,
    "pl_len": np.int64,
    "caplen": np.int64,
    "wirelen": np.int64,
    "ip_bytes": np.int64,
    "uid": np.int32,
    "app": np.int32,
    "fid": np.int64,
}
# what is kept of each DNS packet: its addresses and ports are its flow's, by direction
_DNS_META_TYPES: Final[dict[str, type]] = {
    "ts": np.int64,
    "flow": np.int64,
    "dir": np.int8,  # 0: sent by the flow's lower side (see CaptureAnalyzer._assign)
    "tcp": np.bool_,
}
_PROTO_TEXT: Final = np.array(
    [PROTO_NAMES.get(p, f"ip-proto-{p}") for p in range(256)], dtype=object
)


@dataclass(frozen=True)
class CaptureResult:
    """Everything read from one capture.

    ``packets`` has one row per packet (columns in :mod:`auditor.packets.decode`, plus
    ``flow_id``; empty when the capture was read with ``keep_packets=False``), ``flows`` one
    row per flow (:data:`FLOW_COLUMNS`), ``dns`` one row per DNS question
    (:data:`DNS_COLUMNS`) and ``dns_answers`` one row per answer record of each
    (:data:`DNS_ANSWER_COLUMNS`, in DNS row order); ``names`` maps each name DNS answered to
    its addresses. Damage is counted in ``warnings``; what was seen, in ``counts``."""

    source: str
    format: str
    packets: pd.DataFrame
    flow_table: pd.DataFrame | FrameSpill  # the flows, in memory or written to disk
    dns_table: pd.DataFrame | FrameSpill
    dns_tables: DnsTables  # what DNS said, compactly: ``names`` and ``dns_answers`` come from it
    warnings: Counter[str]
    counts: Counter[str]
    link_types: tuple[int, ...]
    comments: tuple[Comment, ...]
    interfaces: tuple[Interface, ...]
    apps: tuple[str, ...] = ()

    @functools.cached_property
    def flows(self) -> pd.DataFrame:
        """One row per flow (:data:`FLOW_COLUMNS`); read from disk when first asked for if
        the read wrote it there (``spilled``)."""
        t = self.flow_table
        return t if isinstance(t, pd.DataFrame) else t.frame()

    @functools.cached_property
    def dns(self) -> pd.DataFrame:
        """One row per DNS question (:data:`DNS_COLUMNS`); read as :attr:`flows` is."""
        t = self.dns_table
        return t if isinstance(t, pd.DataFrame) else t.frame()

    @property
    def spilled(self) -> bool:
        """Whether the read wrote its flow and DNS tables to disk as it built them."""
        return isinstance(self.flow_table, FrameSpill)

    def flow_pieces(self) -> Iterator[pd.DataFrame]:
        """The flow table in pieces (about :data:`SPILL_ROWS` rows), read one at a time when
        the table is on disk (memory for one piece, not the table). A spilled read gives
        them in the order its flows finished, each sorted by flow id (``flow_id`` says
        the row), its categoricals with every category they could have."""
        yield from _pieces_of(self.flow_table)

    def dns_pieces(self) -> Iterator[pd.DataFrame]:
        """The DNS table as :meth:`flow_pieces` gives the flows."""
        yield from _pieces_of(self.dns_table)

    @functools.cached_property
    def names(self) -> dict[str, tuple[str, ...]]:
        """Each name DNS answers gave addresses for (the question or a CNAME on the way to
        it), with those addresses, sorted (made when first asked for)."""
        return self.dns_tables.name_addrs()

    @functools.cached_property
    def dns_answers(self) -> pd.DataFrame:
        """One row per answer record of each DNS row (:data:`DNS_ANSWER_COLUMNS`), in DNS
        row order (made when first asked for)."""
        return _answers_table(self.dns_tables)

    def answers_of(self, row: int) -> list[tuple[str, str, int, str | None, str | None]]:
        """(name, type, ttl, value, hints) of each answer record of DNS row ``row``."""
        a = self.dns_answers
        sel = a[a[ANSWER_ROW].to_numpy() == row]
        return [
            (
                n,
                str(t),
                int(ttl),
                v if isinstance(v, str) else None,
                h if isinstance(h, str) else None,
            )
            for n, t, ttl, v, h in zip(
                sel[ANSWER_NAME],
                sel[ANSWER_TYPE],
                sel[ANSWER_TTL],
                sel[ANSWER_VALUE],
                sel[ANSWER_HINTS],
                strict=True,
            )
        ]


def _pieces_of(table: pd.DataFrame | FrameSpill) -> Iterator[pd.DataFrame]:
    if isinstance(table, FrameSpill):
        yield from table.pieces()
        return
    if not len(table):
        yield table
    for lo in range(0, len(table), SPILL_ROWS):
        yield table.iloc[lo : lo + SPILL_ROWS]


# ------------------------------------------------------------------------------ flow store

_STORE_FIELDS: Final[dict[str, tuple[type, int]]] = {  # (also the compiled table's columns)
    "ver": (np.uint8, 0),
    "proto": (np.int16, 0),
    "a_hi": (np.uint64, 0),
    "a_lo": (np.uint64, 0),
    "b_hi": (np.uint64, 0),
    "b_lo": (np.uint64, 0),
    "pa": (np.int32, 0),
    "pb": (np.int32, 0),
    "first_pkt": (np.int64, 0),
    "first_dir": (np.int8, 0),
    "link": (np.int32, 0),
    "first_ns": (np.int64, np.iinfo(np.int64).max),
    "last_ns": (np.int64, np.iinfo(np.int64).min),
    "prev_ns": (np.int64, np.iinfo(np.int64).min),  # of its latest packet in file order
    "pk_ab": (np.int64, 0),
    "pk_ba": (np.int64, 0),
    "by_ab": (np.int64, 0),
    "by_ba": (np.int64, 0),
    "fl_ab": (np.int32, 0),
    "fl_ba": (np.int32, 0),
    "uid": (np.int32, -1),
    "app": (np.int32, -1),
}
# a flow as the compiled table hands it over: its id and the fields above
_RAW_TYPES: Final[dict[str, type]] = {
    "id": np.int64,
    **{k: t for k, (t, _) in _STORE_FIELDS.items()},
}


class _FlowStore:
    """Per-flow columns, grown by doubling."""

    def __init__(self) -> None:
        self.n = 0
        self._cap = 0
        self.cols: dict[str, np.ndarray] = {}
        self._grow(1024)

    def _grow(self, cap: int) -> None:
        for name, (dtype, fill) in _STORE_FIELDS.items():
            new: np.ndarray = np.full(cap, fill, dtype=dtype)
            old = self.cols.get(name)
            if old is not None:
                new[: self.n] = old[: self.n]
            self.cols[name] = new
        self._cap = cap

    def add(self, k: int) -> np.ndarray:
        if self.n + k > self._cap:
            self._grow(max(self._cap * 2, self.n + k))
        ids = np.arange(self.n, self.n + k, dtype=np.int64)
        self.n += k
        return ids

    def __getitem__(self, name: str) -> np.ndarray:
        return self.cols[name]


_M1 = 0x9E3779B97F4A7C15
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)
_M4 = np.uint64(0xD6E8FEB86659FD93)
_SALT = [np.uint64(((i + 1) * _M1) & 0xFFFFFFFFFFFFFFFF) for i in range(16)]


def _hash(*cols: np.ndarray) -> np.ndarray:
    """A 64-bit mix of the key columns (splitmix64 finaliser per column)."""
    h = np.zeros(len(cols[0]), dtype=np.uint64)
    for i, c in enumerate(cols):
        x = c.astype(np.uint64) + _SALT[i]
        x ^= x >> np.uint64(30)
        x *= _M2
        x ^= x >> np.uint64(27)
        x *= _M3
        x ^= x >> np.uint64(31)
        h = (h ^ x) * _M4
    return h


def _starts(*sorted_cols: np.ndarray) -> np.ndarray:
    m = len(sorted_cols[0])
    new = np.zeros(m, dtype=bool)
    new[0] = True
    for c in sorted_cols:
        new[1:] |= c[1:] != c[:-1]
    return new


# -------------------------------------------------------------------------------- analyzer


def _file_size(source: object) -> int:
    """The size of the file behind ``source`` (0: not a file)."""
    try:
        return int(os.fstat(source.fileno()).st_size)  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return 0


def _worker_wanted(source: object, workers: int | None) -> bool:
    if workers is not None:
        return workers > 0
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    if cores < 2:
        return False
    return _file_size(source) >= WORKER_MIN_BYTES


class CaptureAnalyzer:
    """Builds the flow table, DNS table and name map from decoded batches.

    With ``worker=True`` the names are parsed in a separate process (call :meth:`close` if
    :meth:`finish` is not reached). ``compiled``: None uses the compiled flow table
    (``_flowtab.c``) when it is in use, False the numpy one (the same results), True requires
    the compiled one (RuntimeError when it is not built or is switched off)."""

    def __init__(
        self,
        *,
        keep_packets: bool = True,
        udp_timeout: float = UDP_TIMEOUT,
        worker: bool = False,
        compiled: bool | None = None,
        tcp_timeout: float = TCP_TIMEOUT,
        expire: bool = False,
    ) -> None:
        self.keep_packets = keep_packets
        self._timeout_ns = int(udp_timeout * 1e9)
        self._tcp_timeout_ns = int(tcp_timeout * 1e9)
        self._store = _FlowStore()
        self._by_key: dict[tuple[int, ...], int] = {}
        if compiled and _flowtab is None:
            raise RuntimeError("the compiled flow table is not built")
        use = _flowtab is not None if compiled is None else compiled
        self._table = (
            _flowtab.FlowTable(self._timeout_ns, self._tcp_timeout_ns) if use and _flowtab else None
        )
        # flows written out as they finish (compiled table only): see _expire
        self._expire = bool(expire and self._table is not None)
        self._finished: FrameSpill | None = None
        self._pending: list[dict[str, np.ndarray]] = []  # finished, not yet a whole piece
        self._pending_rows = 0
        self._latest_ns = np.iinfo(np.int64).min  # the latest packet time seen
        self._expired_before: int | None = None  # the time flows were last given up at
        self._next_id = 0  # flows started so far (the compiled table's ids)
        self._compiled = use  # the compiled parts (flow table, name kinds), or numpy's
        self.warnings: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self._parts: list[dict[str, np.ndarray]] = []
        self._tls_wait: dict[int, list[int]] = {}  # flow -> [direction, bytes still to send]
        self._flight_wait: dict[int, list[int]] = {}  # the same for server flights
        self._head_wait: dict[int, list[int]] = {}  # ... for HTTP heads, + their first seq
        self._worker: NameWorker | None = None
        self._worker_forget: list[np.ndarray] = []  # finished flows the worker is to hear of
        self._worker_recall = False  # ... and that they came back
        if worker:
            try:
                self._worker = NameWorker()
            except OSError as exc:  # no interpreter to start: parse names here instead
                log.debug("no name worker (%s); names are parsed in this process", exc)
        self._collector = names.NameCollector()
        self._renumber = np.zeros(0, dtype=np.int64)
        self._dns_seen = 0  # DNS packets handed to the collector so far
        self._rows_seen = 0  # packets handed to the collectors so far
        self._dns_meta: list[dict[str, np.ndarray]] = []  # their time, flow, direction
        # each flow's address codes, ports and the address texts (by _flow_table)
        none = np.zeros(0, dtype=np.int64)
        self._sides: tuple[np.ndarray, ...] = (none, none, none, none, np.zeros(0, dtype=object))

    def close(self) -> None:
        """Stop the name worker and let go of the files a read that ended early still holds
        (its collector's DNS records, the flows written out): at once, not when collected."""
        if self._worker is not None:
            self._worker.close()
        self._collector.dns.close()
        if self._finished is not None:
            self._finished.discard()
            self._finished = None

    # ------------------------------------------------------------------------ per batch

    def feed(self, batch: PacketBatch) -> None:
        self.warnings.update(batch.warnings)
        self.counts.update(batch.counts)
        if self._expire and self._late(batch):
            self._restore_flows()
        fid, direction = self._assign(batch)
        expired = self._expire_flows(batch) if self._expire else _NO_ROWS
        got = self._job(batch, fid, direction)
        if got is not None:
            job, floating = got
            if self._worker is None:
                self._collector.feed(job)
            else:  # the costly kinds to the worker, the cheap ones here: both stay busy
                if self._worker.behind >= _BEHIND:  # the floating kinds here while it lags
                    here = np.isin(job.kind, _KINDS_HERE) | floating
                else:
                    here = np.isin(job.kind, _KINDS_HERE) & ~floating
                if here.any():
                    self._collector.feed(job.subset(here))
                if not here.all():
                    sub = job.subset(~here)
                    if self._worker_forget or self._worker_recall:
                        sub = dataclasses.replace(  # the flows finished since its last job
                            sub,
                            forget=np.concatenate(self._worker_forget or [_NO_ROWS]),
                            recall=self._worker_recall,  # (before this job's packets)
                        )
                        self._worker_forget, self._worker_recall = [], False
                    self._worker.feed(sub)
        if self._flight_wait:  # a flight read (or given up) needs no more segments
            read = self._collector.flights_read
            for f in [f for f in self._flight_wait if f in read]:
                del self._flight_wait[f]
        done = self._collector.heads_done
        if done:  # so does an HTTP head (a later request of the flow has a wait of its own)
            for f, isn in done.items():
                w = self._head_wait.get(f)
                if w is not None and w[2] == isn:
                    del self._head_wait[f]
            done.clear()
        if len(expired):  # finished flows: what was kept to parse them is packed away
            self._collector.forget(expired)
            if self._worker is not None:
                self._worker_forget.append(expired)
        if self.keep_packets:
            rb = batch.records
            self._parts.append(
                {
                    "packet": np.arange(rb.first, rb.first + len(rb), dtype=np.int64),
                    "ts": rb.ts_ns,
                    "link": rb.link_type,
                    "ver": batch.ip_version,
                    "src_hi": batch.src_hi,
                    "src_lo": batch.src_lo,
                    "dst_hi": batch.dst_hi,
                    "dst_lo": batch.dst_lo,
                    "proto": batch.proto,
                    "sport": batch.sport,
                    "dport": batch.dport,
                    "flags": batch.tcp_flags,
                    "pl_off": batch.payload_off,
                    "pl_len": batch.payload_len,
                    "caplen": rb.caplen,
                    "wirelen": rb.wirelen,
                    "ip_bytes": batch.ip_bytes,
                    "uid": batch.uid,
                    "app": batch.app,
                    "fid": fid,
                }
            )

    def _assign(self, pb: PacketBatch) -> tuple[np.ndarray, np.ndarray]:
        """The flow of every packet (-1: none) and its direction (0: lower side sent it)."""
        if self._table is not None:
            return self._assign_compiled(pb)
        n = len(pb)
        fid = np.full(n, -1, dtype=np.int64)
        direction = np.zeros(n, dtype=np.int8)
        sel = np.flatnonzero(pb.flowable)
        m = len(sel)
        if not m:
            return fid, direction
        rb = pb.records
        ver, proto = pb.ip_version[sel], pb.proto[sel]
        sh, sl, dh, dl = pb.src_hi[sel], pb.src_lo[sel], pb.dst_hi[sel], pb.dst_lo[sel]
        sp, dp = pb.sport[sel], pb.dport[sel]
        swap = (sh > dh) | ((sh == dh) & ((sl > dl) | ((sl == dl) & (sp > dp))))
        a_hi, a_lo = np.where(swap, dh, sh), np.where(swap, dl, sl)
        b_hi, b_lo = np.where(swap, sh, dh), np.where(swap, sl, dl)
        pa, pbp = np.where(swap, dp, sp), np.where(swap, sp, dp)
        key_cols = (ver, proto, a_hi, a_lo, b_hi, b_lo, pa, pbp)
        h = _hash(*key_cols)
        order = np.argsort(h, kind="stable")
        brk = _starts(h[order])
        gid = np.cumsum(brk) - 1
        rep = order[np.flatnonzero(brk)][gid]
        if not all(np.array_equal(c[order], c[rep]) for c in key_cols):
            order = np.lexsort(key_cols[::-1])
            brk = _starts(*(c[order] for c in key_cols))
        starts = np.flatnonzero(brk)
        g = order[starts]
        keys = list(zip(*(c[g].tolist() for c in key_cols), strict=True))
        get = self._by_key.get
        cur = np.fromiter((get(k, -1) for k in keys), dtype=np.int64, count=len(keys))

        store = self._store
        ts_s = rb.ts_ns[sel][order]
        known = cur >= 0
        new = np.zeros(m, dtype=bool)
        new[starts] = ~known
        timeout = np.where(proto[order] == decode.PROTO_TCP, self._tcp_timeout_ns, self._timeout_ns)
        gap = np.zeros(m, dtype=np.int64)
        gap[1:] = ts_s[1:] - ts_s[:-1]
        gap[starts] = np.where(known, ts_s[starts] - store["prev_ns"][np.maximum(cur, 0)], 0)
        new |= gap > timeout
        new_pos = np.flatnonzero(new)
        ids = store.add(len(new_pos))
        vals = np.full(m, -1, dtype=np.int64)
        vals[new_pos] = ids
        cont = ~new[starts]
        vals[starts[cont]] = cur[cont]
        at = np.where(vals >= 0, np.arange(m), 0)
        np.maximum.accumulate(at, out=at)
        fid_s = vals[at]

        d = swap.astype(np.int8)
        if len(new_pos):
            p = order[new_pos]
            for name, col in zip(("ver", "proto", "a_hi", "a_lo", "b_hi", "b_lo", "pa", "pb"),
                                 key_cols, strict=True):  # fmt: skip
                store[name][ids] = col[p]
            store["first_dir"][ids] = d[p]
            store["link"][ids] = rb.link_type[sel[p]]
            store["first_pkt"][ids] = rb.first + sel[p]
        ends = np.empty(len(starts), dtype=np.int64)
        ends[:-1] = starts[1:] - 1
        ends[-1] = m - 1
        last = fid_s[ends]
        for j in np.flatnonzero(last != cur).tolist():
            self._by_key[keys[j]] = int(last[j])

        # per-flow sums over this batch
        seg = np.flatnonzero(_starts(fid_s))
        f = fid_s[seg]
        d_s = d[order].astype(np.int64)
        by = pb.ip_bytes[sel][order]
        flags = pb.tcp_flags[sel][order]
        syn = flags & (decode.TCP_SYN | decode.TCP_ACK)
        flags = (
            flags
            | np.where(syn == decode.TCP_SYN, _SYN_ONLY, 0)
            | np.where(syn == (decode.TCP_SYN | decode.TCP_ACK), _SYN_ACK, 0)
        )
        count = np.diff(np.append(seg, m))
        pk_ba = np.add.reduceat(d_s, seg)
        by_all = np.add.reduceat(by, seg)
        by_ba = np.add.reduceat(by * d_s, seg)
        store["pk_ab"][f] += count - pk_ba
        store["pk_ba"][f] += pk_ba
        store["by_ab"][f] += by_all - by_ba
        store["by_ba"][f] += by_ba
        store["fl_ab"][f] |= np.bitwise_or.reduceat(np.where(d_s == 0, flags, 0), seg)
        store["fl_ba"][f] |= np.bitwise_or.reduceat(np.where(d_s == 1, flags, 0), seg)
        store["first_ns"][f] = np.minimum(store["first_ns"][f], np.minimum.reduceat(ts_s, seg))
        store["last_ns"][f] = np.maximum(store["last_ns"][f], np.maximum.reduceat(ts_s, seg))
        store["prev_ns"][f] = ts_s[np.append(seg[1:], m) - 1]  # each segment is in file order
        uid, app = pb.uid[sel][order], pb.app[sel][order]
        if (uid >= 0).any() or (app >= 0).any():  # a PCAPdroid trailer (its uid may be -1)
            store["uid"][f] = np.maximum(store["uid"][f], np.maximum.reduceat(uid, seg))
            store["app"][f] = np.maximum(store["app"][f], np.maximum.reduceat(app, seg))
        fid[sel[order]] = fid_s
        direction[sel] = d
        return fid, direction

    def _expire_flows(self, pb: PacketBatch) -> np.ndarray:
        """Take the flows no later packet can join out of the compiled table, into pieces of
        finished flows written to disk: those silent past their timeout at the latest time
        seen less :data:`EXPIRY_SLACK` (and those whose key started a newer flow)."""
        assert self._table is not None
        ts = pb.records.ts_ns[pb.flowable]
        if not len(ts):
            return _NO_ROWS
        self._latest_ns = max(self._latest_ns, int(ts.max()))
        slack = int(EXPIRY_SLACK * 1e9)
        before = max(self._latest_ns, np.iinfo(np.int64).min + slack) - slack
        raw = self._table.expire(before)
        if raw is None:
            return _NO_ROWS
        self._expired_before = before  # a packet earlier than this may belong to one of them
        cols: dict[str, np.ndarray] = {
            k: np.frombuffer(v, dtype=_RAW_TYPES[k]) for k, v in raw.items()
        }
        self._pending.append(cols)
        self._pending_rows += len(cols["id"])
        if self._pending_rows >= _WRITE_ROWS:
            self._write_finished()
        return cols["id"]

    def _late(self, pb: PacketBatch) -> bool:
        """Whether a packet of the batch is earlier than a time flows were given up at (it
        could belong to one of them)."""
        if self._expired_before is None:
            return False
        ts = pb.records.ts_ns[pb.flowable]
        return bool(len(ts)) and int(ts.min()) < self._expired_before

    def _restore_flows(self) -> None:
        """Put every flow given up back into the compiled table, as if none had left, and
        give up no more (a packet came later than the slack allows: it may join one)."""
        assert self._table is not None
        log.debug("a packet came too late for the flows written out: they are read back")
        self._collector.recall()  # what the collectors packed away of them comes back too
        self._worker_recall, self._worker_forget = self._worker is not None, []
        parts: list[dict[str, np.ndarray]] = []
        if self._finished is not None:
            self._finished.close()
            parts = list(self._finished.arrays())
        parts += self._pending
        if parts:
            cols = {k: np.concatenate([c[k] for c in parts]) for k in _RAW_TYPES}
            order = np.argsort(cols["id"], kind="stable")
            self._table.restore(
                {k: np.ascontiguousarray(v[order]).tobytes() for k, v in cols.items()}
            )
        if self._finished is not None:  # only once they are back in the table
            self._finished.discard()
            self._finished = None
        self._pending, self._pending_rows = [], 0
        self._expire = False
        self._expired_before = None

    def _write_finished(self) -> None:
        if not self._pending:
            return
        cols = {k: np.concatenate([c[k] for c in self._pending]) for k in _RAW_TYPES}
        self._pending, self._pending_rows = [], 0
        if self._finished is None:
            self._finished = FrameSpill(mapped=False)  # read back a piece at a time
        n = len(cols["id"])
        for lo in range(0, n, SPILL_ROWS):
            piece = pd.DataFrame({k: v[lo : lo + SPILL_ROWS] for k, v in cols.items()})
            self._finished.append(piece)

    def _assign_compiled(self, pb: PacketBatch) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_assign` by ``_flowtab.c``, packet by packet in file order."""
        assert self._table is not None
        n = len(pb)
        fid = np.empty(n, dtype=np.int64)
        direction = np.empty(n, dtype=np.int8)
        rb = pb.records
        c = np.ascontiguousarray
        self._next_id = self._table.assign(
            rb.first,
            c(pb.flowable, dtype=np.bool_),
            c(pb.ip_version, dtype=np.uint8),
            c(pb.src_hi, dtype=np.uint64),
            c(pb.src_lo, dtype=np.uint64),
            c(pb.dst_hi, dtype=np.uint64),
            c(pb.dst_lo, dtype=np.uint64),
            c(pb.proto, dtype=np.int16),
            c(pb.sport, dtype=np.int32),
            c(pb.dport, dtype=np.int32),
            c(rb.ts_ns, dtype=np.int64),
            c(pb.ip_bytes, dtype=np.int64),
            c(pb.tcp_flags, dtype=np.int32),
            c(pb.uid, dtype=np.int32),
            c(pb.app, dtype=np.int32),
            c(rb.link_type, dtype=np.int32),
            fid,
            direction,
        )
        return fid, direction

    def _job(
        self, pb: PacketBatch, fid: np.ndarray, direction: np.ndarray
    ) -> tuple[names.NameJob, np.ndarray] | None:
        """The packets of the batch that may carry a name, chosen with numpy, and which of
        them either process may parse (``floating``): UDP DNS, and ClientHellos that fit in
        their segment on flows not waiting for the rest of an earlier one."""
        idx = np.flatnonzero((fid >= 0) & (pb.payload_len > 0))
        if not idx.size:
            return None
        tcp = pb.proto[idx] == decode.PROTO_TCP
        plen = pb.payload_len[idx]
        f = fid[idx]
        d = direction[idx]
        kind = np.zeros(len(idx), dtype=np.int8)
        # the packets that may carry a name, and what
        maybe, found = namekinds.name_kinds(pb, idx, compiled=self._compiled)
        kind[maybe] = found
        ln = plen[maybe]
        # the first bytes of the TLS records (ClientHellos and server flights), -1 past the
        # captured payload
        tls = np.flatnonzero((found == names.KIND_TLS) | (found == names.KIND_TLS_SERVER))
        head = pb.payload_head[idx[maybe[tls]]].astype(np.int64)
        head[np.arange(head.shape[1]) >= ln[tls][:, None]] = -1
        # A ClientHello fits in its segment when its record does and the handshake message
        # fits in that record; otherwise the next segments from that side go too, as many
        # bytes as the lengths say are missing (records of the first one's size).
        record = np.maximum((head[:, 3] << 8) | head[:, 4], 1)
        message = 4 + ((head[:, 6] << 16) | (head[:, 7] << 8) | head[:, 8])
        known = head[:, 8] >= 0
        whole_tls = known & (ln[tls] >= 5 + record) & (record >= message)
        cut = np.flatnonzero((found[tls] == names.KIND_TLS) & ~whole_tls)
        need = np.where(
            known[cut], message[cut] + 5 * (-(-message[cut] // record[cut])), names.STREAM_CAP
        )
        split = maybe[tls[cut]]
        missing = np.minimum(need, names.STREAM_CAP) - ln[tls[cut]]
        self._mark_more(self._tls_wait, names.KIND_TLS_MORE, kind, tcp, f, d, plen, split, missing)
        whole = np.zeros(len(maybe), dtype=bool)
        whole[tls] = whole_tls
        in_tls = np.flatnonzero(found[tls] == names.KIND_TLS_SERVER)
        hello = tls[in_tls]
        if hello.size or self._flight_wait:
            need = _flight_need(pb, idx[maybe[hello]], ln[hello], head[in_tls])
            kind[maybe[hello[need == 0]]] = 0  # no certificate can follow: left out at once
            more = need > ln[hello]
            flight, missing = maybe[hello[more]], need[more] - ln[hello[more]]
            wait = self._flight_wait
            self._mark_more(
                wait, names.KIND_TLS_SERVER_MORE, kind, tcp, f, d, plen, flight, missing
            )
        heads = maybe[found == names.KIND_HTTP]
        if heads.size or self._head_wait:
            self._mark_heads(pb, idx, kind, tcp, f, d, plen, heads)
        pick = np.flatnonzero(kind)
        if not pick.size:
            return None
        floating = np.zeros(len(idx), dtype=bool)
        udp_dns = (found == names.KIND_DNS) & (pb.proto[idx[maybe]] == decode.PROTO_UDP)
        floating[maybe] = ((found == names.KIND_TLS) & whole) | udp_dns
        floating = floating[pick] & (kind[pick] != names.KIND_TLS_MORE)
        if self._tls_wait:  # a flow with the rest of a ClientHello to come keeps it all here
            hello = np.flatnonzero(floating & (kind[pick] == names.KIND_TLS))
            waiting = np.fromiter(self._tls_wait, np.int64, len(self._tls_wait))
            floating[hello[np.isin(f[pick[hello]], waiting)]] = False
        rows = idx[pick]
        rb = pb.records
        start = rb.data[rows] + pb.payload_off[rows]
        length = pb.payload_len[rows]
        blob = names.gather(rb.raw, start, start + length)
        seq = np.zeros(len(rows), dtype=np.int64)
        t = tcp[pick]
        if t.any():
            at = rb.data[rows[t]] + pb.l4_off[rows[t]] + 4
            seq[t] = np.ascontiguousarray(window(rb.buf, at, 4)).view(">u4")[:, 0]
        is_dns = kind[pick] == names.KIND_DNS
        dns_rows = rows[is_dns]
        dns_no = np.full(len(rows), -1, dtype=np.int64)
        dns_no[is_dns] = np.arange(self._dns_seen, self._dns_seen + len(dns_rows))
        job = names.NameJob(
            kind=kind[pick],
            flow=f[pick],
            direction=d[pick],
            seq=seq,
            ts=rb.ts_ns[rows],
            tcp=t,
            order=np.arange(self._rows_seen, self._rows_seen + len(rows), dtype=np.int64),
            ends=np.cumsum(length),
            blob=blob,
            dns=dns_no,
        )
        self._rows_seen += len(rows)
        if dns_rows.size:
            self._dns_seen += len(dns_rows)
            self._dns_meta.append(
                {
                    "ts": rb.ts_ns[dns_rows],
                    "flow": fid[dns_rows],
                    "dir": direction[dns_rows],
                    "tcp": pb.proto[dns_rows] == decode.PROTO_TCP,
                }
            )
        return job, floating

    def _mark_heads(
        self,
        pb: PacketBatch,
        idx: np.ndarray,
        kind: np.ndarray,
        tcp: np.ndarray,
        f: np.ndarray,
        d: np.ndarray,
        plen: np.ndarray,
        heads: np.ndarray,
    ) -> None:
        """Mark the next segments from the same side of HTTP request heads (``heads``:
        positions in ``idx``) that do not end in their first segment, up to
        :data:`~auditor.packets.HTTP_HEAD_CAP` bytes, until the next request of the
        flow, or until the collector has read the head. ``_head_wait`` keeps, per flow whose
        head is open, [side, bytes left, sequence number of its first segment]."""
        rb = pb.records
        raw = rb.raw
        wait = self._head_wait
        rows = idx[heads]
        start = rb.data[rows] + pb.payload_off[rows]
        starts: dict[int, bool] = {  # position -> the head ends in this segment
            j: raw.find(b"\r\n\r\n", a, a + n) >= 0
            for j, a, n in zip(
                heads.tolist(), start.tolist(), pb.payload_len[rows].tolist(), strict=True
            )
        }
        cut = {int(f[j]) for j, whole in starts.items() if not whole}
        if not cut and not wait:
            return  # every head ends in its first segment (most do)
        open_flows = np.array(sorted(cut | set(wait)), dtype=np.int64)
        recent: dict[int, list[int]] = {}  # per flow, its last segments marked as nothing
        for j in np.flatnonzero(tcp & np.isin(f, open_flows)).tolist():
            fj = int(f[j])
            whole = starts.get(j)
            if whole is not None:
                if whole:
                    wait.pop(fj, None)
                else:
                    at = int(rb.data[idx[j]] + pb.l4_off[idx[j]]) + 4
                    isn = int.from_bytes(raw[at : at + 4], "big")
                    wait[fj] = [int(d[j]), HTTP_HEAD_CAP - int(plen[j]), isn]
                    for e in recent.get(fj, ()):  # reordered before the head's start?
                        if d[e] == d[j]:
                            kind[e] = names.KIND_HTTP_EARLY
                recent.pop(fj, None)
                continue
            w = wait.get(fj)
            if w is None or kind[j] != 0 or d[j] != w[0]:
                if kind[j] == 0:
                    seen = recent.setdefault(fj, [])
                    seen.append(j)
                    if len(seen) > names.EARLY_SEGMENTS:
                        del seen[0]
                continue
            kind[j] = names.KIND_HTTP_MORE
            w[1] -= int(plen[j])
            if w[1] <= 0:
                del wait[fj]

    def _mark_more(
        self,
        wait: dict[int, list[int]],
        more_kind: int,
        kind: np.ndarray,
        tcp: np.ndarray,
        f: np.ndarray,
        d: np.ndarray,
        plen: np.ndarray,
        split: np.ndarray,
        missing: np.ndarray,
    ) -> None:
        """Mark (``more_kind``) the next segments from the same side of flows whose
        ClientHello (or server flight, up to its leaf certificate) did not fit in one segment
        (after the start when it is in this batch) until the missing bytes are covered, and
        one segment more (a retransmission may have been counted). ``wait`` keeps, per flow
        still waiting, [side, bytes still missing, spare segments]."""
        for j, more in zip(split.tolist(), missing.tolist(), strict=True):
            wait[int(f[j])] = [int(d[j]), int(more), 1]
        if not wait:
            return
        waiting = np.array(sorted(wait), dtype=np.int64)
        side = np.array([wait[x][0] for x in waiting.tolist()], dtype=np.int8)
        since = np.full(len(waiting), -1, dtype=np.int64)
        if split.size:
            np.maximum.at(since, np.searchsorted(waiting, f[split]), split)
        at = np.minimum(np.searchsorted(waiting, f), len(waiting) - 1)
        member = waiting[at] == f
        after = np.where(member, since[at], -1)
        cand = np.flatnonzero(
            tcp & (kind == 0) & member & (side[at] == d) & (np.arange(len(f)) > after)
        )
        if not cand.size:
            return
        order = cand[np.argsort(f[cand], kind="stable")]
        fs = f[order]
        first = np.flatnonzero(_starts(fs))
        sizes = np.diff(np.append(first, len(fs)))
        sent = np.cumsum(plen[order]) - plen[order]  # bytes before each, per flow
        sent -= np.repeat(sent[first], sizes)
        state = [wait[x] for x in fs[first].tolist()]
        budget = np.repeat(np.array([w[1] for w in state], dtype=np.int64), sizes)
        spare = np.repeat(np.array([w[2] for w in state], dtype=bool), sizes)
        short = sent < budget
        rank = np.arange(len(fs)) - np.repeat(first, sizes)
        extra = spare & ~short & (rank == np.repeat(np.add.reduceat(short, first), sizes))
        chosen = short | extra
        kind[order[chosen]] = more_kind
        used = np.add.reduceat(np.where(chosen, plen[order], 0), first)
        spent = np.add.reduceat(extra, first)
        for x, w, u, e in zip(fs[first].tolist(), state, used.tolist(), spent.tolist(),
                              strict=True):  # fmt: skip
            w[1] -= u
            w[2] -= e
            if w[2] <= 0 or (w[1] <= 0 and w[2] <= 0):
                del wait[x]

    # ------------------------------------------------------------------------------ end

    def finish(self) -> tuple[pd.DataFrame, pd.DataFrame, DnsTables]:
        """The flow table, the DNS table and what DNS said (its answers, the names of the
        addresses), compactly."""
        flows: list[pd.DataFrame] = []
        dns: list[pd.DataFrame] = []
        found = self.finish_into(flows.append, dns.append)
        return _whole_flows(flows), dns[0], found

    def finish_into(
        self,
        flow_sink: Callable[[pd.DataFrame], None],
        dns_sink: Callable[[pd.DataFrame], None],
        *,
        rows: int | None = None,
        apps: Sequence[str] | None = None,
    ) -> DnsTables:
        """:meth:`finish`, the tables handed to the sinks in pieces of ``rows`` rows (None:
        each table in one piece), in row order: what building them needs beyond what the
        read keeps is a piece's worth. ``apps``: the PCAPdroid app names the decoder met,
        which replace the app codes (else the codes stay). Returns what DNS said."""
        found = self._flow_pieces(flow_sink, rows, apps)  # its working arrays go first
        found.certs.clear()
        self._dns_pieces(found.dns, dns_sink, rows)
        return found.dns

    def _flow_pieces(
        self,
        sink: Callable[[pd.DataFrame], None],
        rows: int | None,
        apps: Sequence[str] | None,
    ) -> NameResult:
        """The flow table, in pieces to ``sink``; returns what the name collectors found.
        Flows are numbered by their first packet (the compiled table hands out its ids in
        that order; the numpy one's are renumbered, ``_renumber``); the flows written out as
        they finished, if any, are read back first, then those left in the table."""
        if self._table is not None:
            if self._finished is not None:
                self._finished.close()
            pending = self._pending
            self._pending, self._pending_rows = [], 0
            raw = self._table.columns()
            self._table = None
            live: dict[str, np.ndarray] = {
                k: np.frombuffer(raw[k], dtype=t) for k, t in _RAW_TYPES.items()
            }
            del raw
            if pending:  # finished flows not written yet go with the live ones
                live = {k: np.concatenate([*(c[k] for c in pending), live[k]]) for k in _RAW_TYPES}
            del pending
            n = self._next_id
            self._renumber = np.arange(n, dtype=np.int64)  # ids in file order already
        else:  # the numpy table: its ids in the order of each batch's keys
            live = {k: v[: self._store.n] for k, v in self._store.cols.items()}
            self._store = _FlowStore()
            n = len(live["ver"])
            order = np.argsort(live["first_pkt"], kind="stable")
            self._renumber = np.empty(n, dtype=np.int64)
            self._renumber[order] = np.arange(n)
            live = {k: v[order] for k, v in live.items()}
            live["id"] = np.arange(n, dtype=np.int64)
        ids = live["id"]
        if len(ids) > 1 and (ids[1:] < ids[:-1]).any():
            order = np.argsort(ids, kind="stable")
            live = {k: v[order] for k, v in live.items()}
        return self._built_pieces(sink, rows, apps, live, n)

    def _raw_pieces(
        self, live: dict[str, np.ndarray], rows: int | None
    ) -> Iterator[dict[str, np.ndarray]]:
        """The flows as the flow table gave them (:data:`_RAW_TYPES`), in pieces sorted by
        id: those written out, then those still in the table at the end (``live``, cut into
        pieces of ``rows``; None: one)."""
        if self._finished is not None:  # written a few thousand at a time: joined again
            group: list[dict[str, np.ndarray]] = []
            rows = 0
            for piece in self._finished.arrays():
                group.append(piece)
                rows += len(piece["id"])
                del piece
                if rows >= SPILL_ROWS:
                    yield _joined(group)  # (it empties the group: no piece is kept twice)
                    rows = 0
            if group:
                yield _joined(group)
        n = len(live["id"])
        if not n and self._finished is None:  # no flow at all: one piece, of no rows
            yield live
        step = max(int(rows or n), 1)
        for lo in range(0, n, step):
            yield {k: v[lo : lo + step] for k, v in live.items()}

    def _built_pieces(
        self,
        sink: Callable[[pd.DataFrame], None],
        rows: int | None,
        apps: Sequence[str] | None,
        live: dict[str, np.ndarray],
        n: int,
    ) -> NameResult:
        """The table's pieces, one per piece of flows (:meth:`_raw_pieces`; flows written out
        come in the order they finished, each piece sorted by id), each flow's names, client
        side, certificate and DNS name looked up by its id. Categoricals carry every
        category they could have (the same in every piece): :func:`_whole_flows` and the
        spilled table drop those no flow has."""
        trim_heap()  # what the read freed, before the tables are built (heaptrim says why)
        # every flow's two addresses by id, as codes into one table of texts, each made once
        ver = np.zeros(n, dtype=np.uint8)
        a_hi, a_lo = np.zeros(n, dtype=np.uint64), np.zeros(n, dtype=np.uint64)
        b_hi, b_lo = np.zeros(n, dtype=np.uint64), np.zeros(n, dtype=np.uint64)
        a_port = np.zeros(n, dtype=np.int32)
        b_port = np.zeros(n, dtype=np.int32)
        for c in self._raw_pieces(live, rows):
            ids = c["id"]
            ver[ids], a_port[ids], b_port[ids] = c["ver"], c["pa"], c["pb"]
            a_hi[ids], a_lo[ids], b_hi[ids], b_lo[ids] = c["a_hi"], c["a_lo"], c["b_hi"], c["b_lo"]
        codes, texts = decode.address_codes(
            np.concatenate([ver, ver]), np.concatenate([a_hi, b_hi]), np.concatenate([a_lo, b_lo])
        )
        del ver, a_hi, a_lo, b_hi, b_lo
        a_side, b_side = codes[:n], codes[n:]
        del codes
        self._sides = (a_side, b_side, a_port, b_port, texts)
        found = self._collector.result()
        if self._worker is not None:
            try:
                found = merge_results(self._worker.result(), found)
            finally:
                self._worker.close()
        self.warnings.update(found.warnings)
        self.counts.update(found.counts)
        addr_dtype = _categories(pd.Index(texts))
        trim_heap()
        namer = _DnsNamer(found.dns, texts)
        hf, _, hint_sides = found.hints
        found = dataclasses.replace(found, hints=(_NO_ROWS, _NO_ROWS, _NO_ROWS))  # sorted below
        hf = self._renumber[hf]
        o = np.argsort(hf, kind="stable")
        hf, hint_sides = hf[o], hint_sides[o]
        by_kind = {}
        for kind, (f, j, v) in found.names.items():
            f = self._renumber[f]
            o = np.argsort(f, kind="stable")
            by_kind[kind] = (f[o], j[o], v[o])
        found.names.clear()
        cert_ids = self._renumber[np.fromiter(found.certs, np.int64, len(found.certs))]
        cert_order = np.argsort(cert_ids, kind="stable")
        cert_ids = cert_ids[cert_order]
        cert_infos = list(found.certs.values())
        cert_fields = [tlscert.flow_fields(cert_infos[i]) for i in cert_order.tolist()]
        del cert_infos
        proto_cats = pd.Index(sorted(set(_PROTO_TEXT.tolist())))
        proto_code = proto_cats.get_indexer(_PROTO_TEXT.tolist()).astype(np.int64)
        evidence_cats = pd.Index(sorted(_CLIENT_EVIDENCE))
        evidence_code = evidence_cats.get_indexer(pd.Index(list(_CLIENT_EVIDENCE))).astype(np.int64)
        name_ev_cats = pd.Index(sorted(_EVIDENCE))
        name_ev_code = name_ev_cats.get_indexer(pd.Index(list(_EVIDENCE))).astype(np.int64)

        def lookup(sorted_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """Rows of ``ids`` found in ``sorted_ids``, and where."""
            if not len(sorted_ids):
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
            pos = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
            rows_ = np.flatnonzero(sorted_ids[pos] == ids)
            return rows_, pos[rows_]

        for c in self._raw_pieces(live, rows):
            ids = c["id"]
            m = len(ids)
            a_code, b_code = a_side[ids], b_side[ids]
            hint = np.full(m, -1, dtype=np.int64)
            r, at = lookup(hf, ids)
            hint[r] = hint_sides[at]
            fa, fb = c["fl_ab"], c["fl_ba"]
            client, evidence = _orientation(
                (fa & _SYN_ONLY) > 0, (fb & _SYN_ONLY) > 0, (fa & _SYN_ACK) > 0,
                (fb & _SYN_ACK) > 0, hint, c["pa"], c["pb"], c["first_dir"],
            )  # fmt: skip
            a_is_client = client == 0
            server_code = np.where(a_is_client, b_code, a_code)
            dns_rows, answered = namer.lookup(server_code, c["first_ns"])
            name_ev = np.full(m, _EVIDENCE.index(EVIDENCE_IP), dtype=np.int64)
            name_ev[dns_rows] = _EVIDENCE.index(EVIDENCE_DNS)
            piece_kinds = {}
            for kind, (f, j, v) in by_kind.items():
                r, at = lookup(f, ids)
                piece_kinds[kind] = (r, j[at], v[at])
            for kind, ev in reversed(_NAME_PRECEDENCE):
                if kind in piece_kinds:
                    name_ev[piece_kinds[kind][0]] = _EVIDENCE.index(ev)
            r, at = lookup(cert_ids, ids)
            certs = (r, [cert_fields[i] for i in at.tolist()]) if len(r) else None
            whole = _FlowWhole(
                col={k2: c[k2] for k2 in _STORE_FIELDS},
                a_code=a_code,
                b_code=b_code,
                a_is_client=a_is_client,
                is_tcp=c["proto"] == decode.PROTO_TCP,
                texts=texts,
                addr_dtype=addr_dtype,
                proto_col=pd.Categorical.from_codes(
                    proto_code[c["proto"].astype(np.int64) & 0xFF], categories=proto_cats
                ),
                evidence_col=pd.Categorical.from_codes(
                    evidence_code[evidence], categories=evidence_cats
                ),
                name_ev_col=pd.Categorical.from_codes(
                    name_ev_code[name_ev], categories=name_ev_cats
                ),
                app_col=(
                    decode.app_names(c["app"].astype(np.int32), list(apps))
                    if apps is not None
                    else None
                ),
                dns_named=(dns_rows, answered),
                by_kind=piece_kinds,
                certs=certs,
                ids=ids,
            )
            sink(_flow_piece(whole, 0, m))
        if self._finished is not None:
            self._finished.discard()
            self._finished = None
        return found

    def _dns_pieces(
        self, found: DnsTables, sink: Callable[[pd.DataFrame], None], rows: int | None
    ) -> None:
        """One row per DNS question, in pieces to ``sink``: what the collectors parsed, with
        the packet's time, flow, addresses and ports, which this process kept. Each piece is
        made from its rows alone (what it needs beyond the table's is a piece's worth); the
        categories, the same in every piece, from the whole columns first."""
        trim_heap()
        rec = found.rows
        n = len(rec)
        meta: dict[str, np.ndarray] = {}
        parts, self._dns_meta = self._dns_meta, []
        for k, t in _DNS_META_TYPES.items():  # per DNS packet; a row gives its packet
            meta[k] = np.concatenate([m.pop(k) for m in parts]) if parts else np.zeros(0, t)
        del parts
        a_code, b_code, a_port, b_port, texts = self._sides
        step = max(int(rows or n), 1)
        spans = [(lo, min(lo + step, n)) for lo in range(0, max(n, 1), step)]

        def flows_of(lo: int, hi: int) -> np.ndarray:
            f = meta["flow"][rec["packet"][lo:hi].astype(np.int64)]
            return self._renumber[f] if len(f) else f

        # the addresses of these rows: the flows' (in the texts' order, which address_codes
        # sorts by address), those in use only
        seen = np.zeros(len(texts), dtype=bool)
        for lo, hi in spans:
            f = flows_of(lo, hi)
            seen[a_code[f]] = True
            seen[b_code[f]] = True
        used = np.flatnonzero(seen)
        del seen
        code_of = np.full(len(texts), -1, dtype=np.int64)
        code_of[used] = np.arange(len(used))
        cats = _categories(pd.Index(texts[used], dtype=object))
        labels = list(dict.fromkeys(DNS_PORTS.values()))
        unset = labels.index("dns")
        # categoricals of the whole table (the same categories in every piece): the keys
        # each column has, then each piece's codes among them
        response_all = rec["response"].astype(bool)
        rcodes = np.unique(rec["rcode"][response_all]).astype(np.int64)
        if not response_all.all():
            rcodes = np.concatenate([[-1], rcodes])  # a question has none
        del response_all
        qtypes = np.unique(rec["qtype"]).astype(np.int64)
        transports = np.unique(meta["tcp"][rec["packet"].astype(np.int64)]).astype(np.int64)

        def ports(lo: int, hi: int) -> tuple[np.ndarray, ...]:
            """The rows' flows, client and server ports, and protocol (a label's number)."""
            f = flows_of(lo, hi)
            response = rec["response"][lo:hi].astype(bool)
            from_a = meta["dir"][rec["packet"][lo:hi].astype(np.int64)] == 0
            sport = np.where(from_a, a_port[f], b_port[f])
            dport = np.where(from_a, b_port[f], a_port[f])
            client_port = np.where(response, dport, sport)
            server_port = np.where(response, sport, dport)
            protocol = np.full(hi - lo, unset, dtype=np.int8)
            for port, label in DNS_PORTS.items():
                if label != "dns":
                    protocol[
                        (server_port == port) | ((client_port == port) & (protocol == unset))
                    ] = labels.index(label)
            return f, client_port, server_port, protocol

        protocols = np.zeros(0, dtype=np.int64)
        for lo, hi in spans:  # the protocols the table has (each piece's made again below)
            protocols = np.union1d(protocols, ports(lo, hi)[3].astype(np.int64))
        transport_of = _coded_keys(transports, ("udp", "tcp"), str)
        protocol_of = _coded_keys(protocols, labels)
        rcode_of = _coded_keys(rcodes, lambda c: DNS_RCODES.get(c, str(c)) if c >= 0 else None)
        qtype_of = _coded_keys(qtypes, lambda q: dns_type_name(q) if q >= 0 else "")
        drop_pages(rec)
        for lo, hi in spans:
            f, client_port, server_port, protocol = ports(lo, hi)
            packet = rec["packet"][lo:hi].astype(np.int64)
            fa = meta["dir"][packet] == 0
            resp = rec["response"][lo:hi].astype(bool)
            a_row, b_row = code_of[a_code[f]], code_of[b_code[f]]
            src, dst = np.where(fa, a_row, b_row), np.where(fa, b_row, a_row)
            sink(
                pd.DataFrame(
                    {
                        DNS_TS: pd.to_datetime(meta["ts"][packet], unit="ns", utc=True),
                        DNS_FLOW_ID: f,
                        DNS_CLIENT_IP: pd.Categorical.from_codes(
                            np.where(resp, dst, src), dtype=cats, validate=False
                        ),
                        DNS_CLIENT_PORT: client_port,
                        DNS_SERVER_IP: pd.Categorical.from_codes(
                            np.where(resp, src, dst), dtype=cats, validate=False
                        ),
                        DNS_SERVER_PORT: server_port,
                        TRANSPORT: transport_of(meta["tcp"][packet].astype(np.int64)),
                        DNS_PROTOCOL: protocol_of(protocol.astype(np.int64)),
                        DNS_ID: rec["id"][lo:hi].astype(np.int64),
                        RESPONSE: resp,
                        RCODE: rcode_of(np.where(resp, rec["rcode"][lo:hi].astype(np.int64), -1)),
                        QNAME: _texts_of(found, rec["qname"][lo:hi]),
                        QTYPE: qtype_of(rec["qtype"][lo:hi].astype(np.int64)),
                    },
                    columns=list(DNS_COLUMNS),
                )
            )
            del f, client_port, server_port, protocol
            drop_pages(rec)  # read from its file again if asked for

    def packets_frame(self, apps: list[str]) -> pd.DataFrame:
        """The per-packet table (after :meth:`finish`, which numbers the flows)."""
        if not self._parts:
            return _no_packets(apps)
        cat = {k: np.concatenate([p[k] for p in self._parts]) for k in self._parts[0]}
        fid = cat["fid"]
        if len(self._renumber):
            fid = np.where(fid >= 0, self._renumber[np.maximum(fid, 0)], -1)
        return pd.DataFrame(
            {
                decode.PACKET: cat["packet"],
                decode.TS: pd.to_datetime(cat["ts"], unit="ns", utc=True),
                decode.LINK_TYPE: cat["link"],
                decode.IP_VERSION: cat["ver"],
                decode.SRC: decode.addresses(cat["ver"], cat["src_hi"], cat["src_lo"]),
                decode.DST: decode.addresses(cat["ver"], cat["dst_hi"], cat["dst_lo"]),
                decode.PROTO: cat["proto"],
                decode.SPORT: cat["sport"],
                decode.DPORT: cat["dport"],
                decode.TCP_FLAGS: cat["flags"],
                decode.PAYLOAD_OFFSET: cat["pl_off"],
                decode.PAYLOAD_LENGTH: cat["pl_len"],
                decode.CAPLEN: cat["caplen"],
                decode.WIRELEN: cat["wirelen"],
                decode.IP_BYTES: cat["ip_bytes"],
                decode.UID: cat["uid"],
                decode.APP: decode.app_names(cat["app"], apps),
                decode.FLOW_ID: fid,
            }
        )


# ---------------------------------------------------------------------------- entry points


@dataclass(frozen=True)
class _FlowWhole:
    """What the pieces of the flow table are cut from (see CaptureAnalyzer._flow_pieces):
    the flows' columns in table order, their address codes, orientation and protocol, the
    address texts, the categoricals of the whole table, and each kind of name as rows
    sorted with their values."""

    col: dict[str, np.ndarray]
    a_code: np.ndarray
    b_code: np.ndarray
    a_is_client: np.ndarray
    is_tcp: np.ndarray
    texts: np.ndarray
    addr_dtype: pd.CategoricalDtype
    proto_col: pd.Categorical[Any]
    evidence_col: pd.Categorical[Any]
    name_ev_col: pd.Categorical[Any]
    app_col: pd.Categorical[Any] | None
    dns_named: tuple[np.ndarray, np.ndarray]
    by_kind: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    certs: tuple[np.ndarray, list[tuple[str | None, ...]]] | None
    ids: np.ndarray | None = None  # the flows' ids (None: their rows, from 0)


def _flow_piece(w: _FlowWhole, lo: int, hi: int) -> pd.DataFrame:
    """Rows ``lo`` to ``hi`` of the flow table."""
    col, by_kind, certs, dns_named = w.col, w.by_kind, w.certs, w.dns_named
    m = hi - lo
    c = {k: v[lo:hi] for k, v in col.items()}
    a_is_client = w.a_is_client[lo:hi]
    ac, bc = w.a_code[lo:hi], w.b_code[lo:hi]
    fa, fb = c["fl_ab"], c["fl_ba"]
    pa, pbp = c["pa"], c["pb"]
    client_code = np.where(a_is_client, ac, bc)
    server_code = np.where(a_is_client, bc, ac)
    cflags = np.where(a_is_client, fa, fb)
    sflags = np.where(a_is_client, fb, fa)
    is_tcp = w.is_tcp[lo:hi]
    syn_seen = is_tcp & ((cflags & _SYN_ONLY) > 0)
    synack_seen = is_tcp & ((sflags & _SYN_ACK) > 0)

    def within(sorted_rows: np.ndarray) -> slice:
        a, b = np.searchsorted(sorted_rows, (lo, hi))
        return slice(int(a), int(b))

    name = w.texts[server_code]
    sel = within(dns_named[0])
    rows, answered = dns_named[0][sel] - lo, dns_named[1][sel]
    dns_name = _text_at(m, rows, answered)
    name[rows] = answered
    names_cols: dict[str, pd.Series] = {}
    for kind, column in _NAME_COLUMNS:
        if kind in by_kind:
            r, joined, _ = by_kind[kind]
            sel = within(r)
            names_cols[column] = _text_at(m, r[sel] - lo, joined[sel])
        else:
            names_cols[column] = _no_text(m)
    cert_cols: dict[str, pd.Series] = {}
    sel = within(certs[0]) if certs is not None else slice(0, 0)
    if certs is not None and sel.stop > sel.start:
        cols = [np.full(m, None, dtype=object) for _ in CERT_COLUMNS]
        for r, fields in zip(
            (certs[0][sel] - lo).tolist(), certs[1][sel], strict=True
        ):  # fmt: skip
            for i, text in enumerate(fields):
                cols[i][r] = text
        cert_cols = {cname: _text(v) for cname, v in zip(CERT_COLUMNS, cols, strict=True)}
    else:
        cert_cols = {cname: _no_text(m) for cname in CERT_COLUMNS}
    for kind, _ev in reversed(_NAME_PRECEDENCE):
        if kind in by_kind:
            r, _, first = by_kind[kind]
            sel = within(r)
            name[r[sel] - lo] = first[sel]

    return pd.DataFrame(
        {
            FLOW_ID: np.arange(lo, hi, dtype=np.int64) if w.ids is None else w.ids[lo:hi],
            PROTO: w.proto_col[lo:hi],
            IP_VERSION: c["ver"].astype(np.int8),
            CLIENT_IP: pd.Categorical.from_codes(client_code, dtype=w.addr_dtype, validate=False),
            CLIENT_PORT: np.where(a_is_client, pa, pbp),
            SERVER_IP: pd.Categorical.from_codes(server_code, dtype=w.addr_dtype, validate=False),
            SERVER_PORT: np.where(a_is_client, pbp, pa),
            FIRST_SEEN: pd.to_datetime(c["first_ns"], unit="ns", utc=True),
            LAST_SEEN: pd.to_datetime(c["last_ns"], unit="ns", utc=True),
            PACKETS_UP: np.where(a_is_client, c["pk_ab"], c["pk_ba"]),
            PACKETS_DOWN: np.where(a_is_client, c["pk_ba"], c["pk_ab"]),
            IP_BYTES_UP: np.where(a_is_client, c["by_ab"], c["by_ba"]),
            IP_BYTES_DOWN: np.where(a_is_client, c["by_ba"], c["by_ab"]),
            CLIENT_EVIDENCE: w.evidence_col[lo:hi],
            SYN_SEEN: syn_seen,
            SYNACK_SEEN: synack_seen,
            FIN_SEEN: is_tcp & (((fa | fb) & decode.TCP_FIN) > 0),
            RST_SEEN: is_tcp & (((fa | fb) & decode.TCP_RST) > 0),
            ESTABLISHED: syn_seen & synack_seen,
            SNI: names_cols[SNI],
            ALPN: names_cols[ALPN],
            QUIC_SNI: names_cols[QUIC_SNI],
            QUIC_ALPN: names_cols[QUIC_ALPN],
            HTTP_HOST: names_cols[HTTP_HOST],
            DNS_NAME: dns_name,
            NAME: _text(name),
            NAME_EVIDENCE: w.name_ev_col[lo:hi],
            UID: c["uid"],
            APP: c["app"] if w.app_col is None else w.app_col[lo:hi],
            LINK_TYPE: c["link"],
            **cert_cols,
        },
        columns=list(FLOW_COLUMNS),
    )


def _flight_need(pb: PacketBatch, rows: np.ndarray, ln: np.ndarray, head: np.ndarray) -> np.ndarray:
    """For packets (``rows`` of the batch) that start a server's flight with a ServerHello
    record: how many bytes of the server's stream hold the leaf certificate, as far as this
    first segment tells (0: none can follow; the reassembly cap: it does not tell).

    What comes after the ServerHello decides: in TLS 1.3, and when a session is resumed, a
    ChangeCipherSpec or encrypted record, so nothing is to be read (most TLS today is left
    out here, in numpy); up to TLS 1.2 a Certificate message, in the same record or the next,
    whose first entry's length gives the bytes to wait for. A ServerHello always fits in its
    record; a first segment that says otherwise is not one, and is left out too."""
    cap = tlscert.MAX_FLIGHT
    record = (head[:, 3] << 8) | head[:, 4]
    hello = (head[:, 6] << 16) | (head[:, 7] << 8) | head[:, 8]
    same = (head[:, 8] >= 0) & (4 + hello < record)  # another message in the same record
    at = np.where(same, 9 + hello, 5 + record)  # that message, or the next record
    at = np.minimum(at, cap)
    rb = pb.records
    w = window(rb.buf, rb.data[rows] + pb.payload_off[rows] + at, 16).astype(np.int64)
    w[at[:, None] + np.arange(16) >= ln[:, None]] = -1  # past the captured payload
    mtype = np.where(same, w[:, 0], w[:, 5])
    leaf_at = np.where(same, 7, 12)
    pick = np.arange(len(rows))
    leaf = (w[pick, leaf_at] << 16) | (w[pick, leaf_at + 1] << 8) | w[pick, leaf_at + 2]
    handshake_next = same | (w[:, 0] == tlscert.HANDSHAKE)
    told = (w[:, 0] >= 0) & (~handshake_next | (mtype >= 0))
    certificate = handshake_next & (mtype == tlscert.CERTIFICATE)
    need = np.full(len(rows), cap, dtype=np.int64)
    need[told & ~certificate] = 0
    need[(head[:, 8] >= 0) & ((hello < 38) | (4 + hello > record))] = 0  # not a ServerHello
    known = certificate & (leaf >= 0)
    end = at + leaf_at + 3 + leaf
    need[known] = np.minimum(end + 5 * (end // 16384 + 1), cap)[known]  # record headers
    return need


def _orientation(
    syn_a: np.ndarray,
    syn_b: np.ndarray,
    synack_a: np.ndarray,
    synack_b: np.ndarray,
    hint: np.ndarray,
    port_a: np.ndarray,
    port_b: np.ndarray,
    first_dir: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per flow, the client side (0: the lower address:port, ``a``) and the code of the rule
    that decided it in ``_CLIENT_EVIDENCE`` (the rules: the module docstring, Orientation).
    ``syn_*``/``synack_*``: that side sent a SYN without ACK / a SYN-ACK; ``hint``: the side a
    payload showed to be the client, -1 when none did."""
    service = np.array(sorted(SERVICE_PORTS), dtype=np.int64)
    known_a, known_b = np.isin(port_a, service), np.isin(port_b, service)
    conds = [
        syn_a & ~syn_b,
        syn_b & ~syn_a,
        synack_b & ~synack_a,
        synack_a & ~synack_b,
        hint >= 0,
        (port_b < 1024) & (port_a >= 1024),
        (port_a < 1024) & (port_b >= 1024),
        known_b & ~known_a & (port_a >= 1024),
        known_a & ~known_b & (port_b >= 1024),
        (port_b < EPHEMERAL_MIN) & (port_a >= EPHEMERAL_MIN),
        (port_a < EPHEMERAL_MIN) & (port_b >= EPHEMERAL_MIN),
    ]
    client = np.select(conds, [0, 1, 0, 1, hint, 0, 1, 0, 1, 0, 1], default=first_dir)
    evidence = np.select(conds, [0, 0, 1, 1, 2, 3, 3, 3, 3, 3, 3], default=4)
    return client, evidence


class _DnsNamer:
    """For flows given a few at a time (their servers' codes into the address texts and their
    first times), the name asked of the last DNS answer that gave the server's address at or
    before that time (of several at the same time, the greatest name): the answers sorted
    once, by address and time, one per (address, time), then each flow's found by a binary
    search (the key: the address's code, then the rank of the time among the answers'
    times)."""

    def __init__(self, found: DnsTables, table: pd.Index | np.ndarray) -> None:
        self._texts = found.texts
        self._keys = np.zeros(0, dtype=np.int64)
        self._code = np.zeros(0, dtype=np.int64)
        self._name = np.zeros(0, dtype=np.int64)
        self._times = np.zeros(0, dtype=np.int64)
        self._width = 1
        answered = found.answered
        if not len(answered) or not len(table):
            return
        dns_texts = pd.Index(found.texts, dtype=object)
        if dns_texts.is_unique:  # a hash of the DNS texts (as many whatever the flows), in C
            pos = dns_texts.get_indexer(np.asarray(table, dtype=object))
            del dns_texts
            hit = np.flatnonzero(pos >= 0)
            # of several equal texts in the table (not as address_codes makes it), the first
            text_at, first = np.unique(pos[hit], return_index=True)
            code_of_text = np.full(len(found.texts), -1, dtype=np.int64)
            code_of_text[text_at] = hit[first]
            del pos, hit, text_at, first
        else:
            first_of: dict[str, int] = {}
            for i, t in enumerate(np.asarray(table, dtype=object).tolist()):
                first_of.setdefault(t, i)
            code_of_text = np.array([first_of.get(t, -1) for t in found.texts.tolist()], np.int64)
        e_code = code_of_text[answered["addr"]]
        keep = np.flatnonzero(e_code >= 0)  # others gave an address no flow has
        if not keep.size:
            return
        e_code = e_code[keep]
        e_ts = answered["ts"][keep].astype(np.int64)
        e_name = answered["asked"][keep].astype(np.int64)
        drop_pages(answered)  # read from its file again if asked for
        # one answer per (address, time): the last of the order by (address, time, name
        # rank); of several answers at the same time, the greatest name (text order) wins.
        # The names' ranks among the texts (a sort of every text) only when two answers tie.
        order = np.lexsort((e_ts, e_code))
        e_code, e_ts, e_name = e_code[order], e_ts[order], e_name[order]
        last = np.ones(len(e_code), dtype=bool)
        last[:-1] = (e_code[1:] != e_code[:-1]) | (e_ts[1:] != e_ts[:-1])
        if (~last[:-1] & (e_name[1:] != e_name[:-1])).any():  # two names at once
            order = np.lexsort((found.text_rank()[e_name], e_ts, e_code))
            e_code, e_ts, e_name = e_code[order], e_ts[order], e_name[order]
        e_code, e_ts, e_name = e_code[last], e_ts[last], e_name[last]
        self._times = np.unique(e_ts)
        self._width = len(self._times) + 1
        self._keys = e_code * self._width + np.searchsorted(self._times, e_ts)
        self._code, self._name = e_code, e_name

    def lookup(self, server: np.ndarray, first_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows of the flows (servers' codes, first times) that DNS named, and the names."""
        if not len(self._keys) or not len(server):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object)
        server = server.astype(np.int64)
        # the last answer of the server's address at a time at or before the flow's first
        before = np.searchsorted(self._times, first_ns.astype(np.int64), side="right")
        at = np.searchsorted(self._keys, server * self._width + before - 1, side="right") - 1
        ok = at >= 0
        ok[ok] = self._code[at[ok]] == server[ok]
        rows = np.flatnonzero(ok)
        return rows, self._texts[self._name[at[rows]]]


def _texts_of(found: DnsTables, ids: np.ndarray) -> pd.Series:
    """A text column of the texts numbered ``ids`` (-1: missing), taken from the texts as
    one Arrow array (each distinct text converted once)."""
    if not len(ids):
        return _text(np.zeros(0, dtype=object))
    ids = ids.astype(np.int64)
    table = found.arrow_texts()
    taken = table.take(pa.array(np.where(ids >= 0, ids, len(table) - 1)))
    return pd.Series(pd.arrays.ArrowStringArray(taken, dtype=_STR))  # type: ignore[call-arg]


def _answers_table(found: DnsTables) -> pd.DataFrame:
    a = found.answers
    return pd.DataFrame(
        {
            ANSWER_ROW: a["row"].astype(np.int64),
            ANSWER_NAME: _texts_of(found, a["name"]),
            ANSWER_TYPE: _coded(a["rtype"].astype(np.int64), dns_type_name, str),
            ANSWER_TTL: a["ttl"].astype(np.int64),
            ANSWER_VALUE: _texts_of(found, a["value"]),
            ANSWER_HINTS: _texts_of(found, a["hints"]),
        },
        columns=list(DNS_ANSWER_COLUMNS),
    )


def _no_packets(apps: list[str]) -> pd.DataFrame:
    """The packets table without rows (its columns and types all the same)."""
    empty = CaptureAnalyzer(keep_packets=True)
    empty._parts.append({k: np.zeros(0, dtype=t) for k, t in _PART_TYPES.items()})
    return empty.packets_frame(apps)


_STR: Final = pd.StringDtype("pyarrow", na_value=np.nan)  # what dtype="str" gives


def _text(values: np.ndarray) -> pd.Series:
    """A text column in pandas' string dtype, missing values included (NaN): converted by
    Arrow in one pass (pandas checks each value in Python first), or by pandas when a value
    is not text."""
    try:
        arr = pa.array(values, type=pa.large_string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pd.Series(values, dtype="str")
    return pd.Series(pd.arrays.ArrowStringArray(arr, dtype=_STR))  # type: ignore[call-arg]


_NO_ROWS: Final = np.zeros(0, dtype=np.int64)


def _no_text(n: int) -> pd.Series:
    """A text column of ``n`` missing values (as :func:`_text` makes of ``n`` Nones)."""
    arr = pa.nulls(n, type=pa.large_string())
    return pd.Series(pd.arrays.ArrowStringArray(arr, dtype=_STR))  # type: ignore[call-arg]


def _text_at(n: int, rows: np.ndarray, values: np.ndarray) -> pd.Series:
    """A text column of ``n`` rows with ``values`` (texts) at ``rows`` (distinct), missing
    elsewhere: what :func:`_text` makes of such an object array, without one."""
    if not len(rows):
        return _no_text(n)
    col = np.full(n, None, dtype=object)
    col[rows] = values
    return _text(col)


def _coded(
    keys: np.ndarray,
    label: Callable[[int], str | None] | Sequence[str] | np.ndarray,
    empty: type = object,
) -> pd.Categorical:
    """A column of few distinct strings (kinds, protocols) as a categorical: what
    ``pd.Categorical`` makes of each key's label (None: missing), each label made once per
    distinct key. ``label`` is a function of the key or a sequence indexed by it; ``empty``
    is the type of the categories when there are none (``str`` where pandas would have made
    the labels from a text array)."""
    uniq, inverse = np.unique(keys, return_inverse=True)
    text = label if callable(label) else label.__getitem__
    labels = [text(k) for k in uniq.tolist()]
    cats = sorted({x for x in labels if x is not None})
    at = {c: i for i, c in enumerate(cats)}
    remap = np.array([-1 if x is None else at[x] for x in labels], dtype=np.int64)
    index: pd.Index = pd.Index(cats) if cats else pd.Index([], dtype=empty)
    return pd.Categorical.from_codes(remap[inverse.ravel()], categories=index)


def _categories(index: pd.Index) -> pd.CategoricalDtype:
    """The dtype of a categorical of these (distinct) categories, without the hash table
    pandas builds to check them (a copy of each text as an object, for an Arrow-backed
    index): nothing here looks a category up, and that copy would live as long as the
    table."""
    dtype = pd.CategoricalDtype(index)
    cache = getattr(dtype.categories, "_cache", None)  # pandas' cache of the index's engine
    if isinstance(cache, dict):
        cache.clear()
    return dtype


def _coded_keys(
    keys: np.ndarray,
    label: Callable[[int], str | None] | Sequence[str] | np.ndarray,
    empty: type = object,
) -> Callable[[np.ndarray], pd.Categorical]:
    """:func:`_coded` for a column made in pieces: given every key the column has
    (``keys``, sorted, distinct), a function that codes a piece of it (keys among them) with
    the categories :func:`_coded` gives the whole column."""
    text = label if callable(label) else label.__getitem__
    labels = [text(k) for k in keys.tolist()]
    cats = sorted({x for x in labels if x is not None})
    at = {c: i for i, c in enumerate(cats)}
    remap = np.array([-1 if x is None else at[x] for x in labels] + [-1], dtype=np.int64)
    dtype = pd.CategoricalDtype(pd.Index(cats) if cats else pd.Index([], dtype=empty))

    def code(piece: np.ndarray) -> pd.Categorical:
        return pd.Categorical.from_codes(
            remap[np.searchsorted(keys, piece)], dtype=dtype, validate=False
        )

    return code


def iter_packets(
    source: str | Path | BinaryIO, *, chunk_size: int = DEFAULT_CHUNK
) -> Iterator[PacketBatch]:
    """Decoded batches of a capture, streamed (each batch is a chunk of ``chunk_size`` bytes;
    ``batch.frame()`` gives it as a DataFrame)."""
    if isinstance(source, (str, Path)):
        with open(source, "rb") as fh:
            yield from iter_packets(fh, chunk_size=chunk_size)
        return
    reader = CaptureReader(source, chunk_size=chunk_size)
    decoder = Decoder()
    for rb in reader:
        yield decoder.decode(rb)


def read_capture(
    source: str | Path | BinaryIO,
    *,
    keep_packets: bool = True,
    chunk_size: int = DEFAULT_CHUNK,
    udp_timeout: float = UDP_TIMEOUT,
    workers: int | None = None,
    spill: bool | None = None,
) -> CaptureResult:
    """Read a pcap or pcapng capture: its packets, flows, DNS and names.

    Raises :class:`~auditor.packets.pcapfile.PcapError` when the input is not a capture.
    With ``keep_packets=False`` the per-packet table is not built and memory stays bounded
    by the chunk size and the number of flows. ``workers``: 1 parses names in a worker
    process, 0 in this one; None (the default) uses a worker for files of 64 MiB or more when
    more than one core is available. ``spill``: True builds the flow and DNS tables in pieces
    of :data:`SPILL_ROWS` rows written to disk as they are made (an unnamed temporary file in
    ``AUDITOR_SPILL_DIR`` or the system's temporary folder), read back when ``flows`` or
    ``dns`` is first asked for, or piece by piece (``flow_pieces``); False builds them in
    memory; None (the default) spills for files of 64 MiB or more. The tables are the same.

    >>> r = read_capture("capture.pcap")            # doctest: +SKIP
    >>> r.flows[[SERVER_IP, NAME, NAME_EVIDENCE]]    # doctest: +SKIP
    """
    if isinstance(source, (str, Path)):
        with open(source, "rb") as fh:
            result = read_capture(
                fh,
                keep_packets=keep_packets,
                chunk_size=chunk_size,
                udp_timeout=udp_timeout,
                workers=workers,
                spill=spill,
            )
        return dataclasses.replace(result, source=str(source))
    reader = CaptureReader(source, chunk_size=chunk_size)
    decoder = Decoder()
    worker = _worker_wanted(source, workers)
    if spill is None:
        spill = _file_size(source) >= SPILL_MIN_BYTES
    analyzer = CaptureAnalyzer(
        keep_packets=keep_packets, udp_timeout=udp_timeout, worker=worker, expire=spill
    )
    flow_table: pd.DataFrame | FrameSpill
    dns_table: pd.DataFrame | FrameSpill
    try:
        with gc_paused():
            for i, rb in enumerate(reader, 1):
                analyzer.feed(decoder.decode(rb))
                del rb  # lets the reader reuse its buffer for the next chunk
                if spill and not i % _TRIM_EVERY:
                    trim_heap()  # what the batches freed (see heaptrim)
            if spill:
                # flows written out as they finished come in that order, with every
                # category there could be: the table read back is sorted and pruned
                flow_table = FrameSpill(sort_by=FLOW_ID, prune=_PRUNED)
                dns_table = FrameSpill()
                dns_tables = analyzer.finish_into(
                    flow_table.append, dns_table.append, rows=SPILL_ROWS, apps=decoder.apps
                )
                flow_table.close()
                dns_table.close()
            else:
                pieces: tuple[list[pd.DataFrame], list[pd.DataFrame]] = ([], [])
                dns_tables = analyzer.finish_into(
                    pieces[0].append, pieces[1].append, apps=decoder.apps
                )
                flow_table, dns_table = _whole_flows(pieces[0]), pieces[1][0]
    except OSError as exc:  # a full disk while tables are written: named as such
        full = spill_full(exc)
        if full is exc:
            raise
        raise full from exc
    finally:
        analyzer.close()
    packets = analyzer.packets_frame(decoder.apps) if keep_packets else _no_packets(decoder.apps)
    warnings = Counter(reader.warnings)
    warnings.update(analyzer.warnings)
    log.debug(
        "%s: %d packets, %d flows, %d DNS rows (name worker: %s); warnings %s",
        getattr(source, "name", "<stream>"),
        reader.packets,
        _rows(flow_table),
        _rows(dns_table),
        worker,
        dict(warnings),
    )
    counts = Counter(analyzer.counts)
    counts["packets"] = reader.packets
    counts["flows"] = _rows(flow_table)
    return CaptureResult(
        source=getattr(source, "name", "<stream>"),
        format=reader.format,
        packets=packets,
        flow_table=flow_table,
        dns_table=dns_table,
        dns_tables=dns_tables,
        warnings=+warnings,
        counts=+counts,
        link_types=reader.link_types,
        comments=tuple(reader.comments),
        interfaces=tuple(reader.interfaces),
        apps=tuple(decoder.apps),
    )


#: A spilled read gives the heap's free pages back every this many chunks (a few ms each)
_TRIM_EVERY: Final = 4


def _joined(group: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Pieces of raw flows as one, sorted by id, the list emptied (what it held is let go
    as it is joined)."""
    out = (
        group.pop()
        if len(group) == 1
        else {k: np.concatenate([g[k] for g in group]) for k in _RAW_TYPES}
    )
    group.clear()
    ids = out["id"]
    if len(ids) > 1 and (ids[1:] < ids[:-1]).any():
        order = np.argsort(ids, kind="stable")
        out = {k: v[order] for k, v in out.items()}
    return out


def _whole_flows(pieces: list[pd.DataFrame]) -> pd.DataFrame:
    """The flow table from its pieces (as a spilled read's ``flows`` reads them back: sorted
    by flow id, the categories no flow has dropped)."""
    out = pieces[0] if len(pieces) == 1 else pd.concat(pieces, ignore_index=True)
    return tidy(out, _PRUNED, FLOW_ID)


def _rows(table: pd.DataFrame | FrameSpill) -> int:
    return table.rows if isinstance(table, FrameSpill) else len(table)
