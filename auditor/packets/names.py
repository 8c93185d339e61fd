"""The names a packet can carry, collected per flow.

A :class:`NameCollector` consumes :class:`NameJob` s (the packets of one batch that may carry
a name, chosen by :mod:`auditor.packets.flows`) and reads them with the protocol parsers, one
module each: :mod:`~auditor.packets.dns`, :mod:`~auditor.packets.tls` (the ClientHello),
:mod:`~auditor.packets.quic` (the Initial), :mod:`~auditor.packets.gquic`,
:mod:`~auditor.packets.http1` and :mod:`~auditor.packets.tlscert` (the server's leaf
certificate). Here is what needs the flow: which packets of a flow make a ClientHello, an
HTTP request head or a server's flight put back in order, which side is the client, and what
DNS taught about addresses (kept by :mod:`~auditor.packets.dnstables`). It runs in the
reading process or in a worker process (:mod:`~auditor.packets.workerpipe`), and needs no
pandas.
"""

from __future__ import annotations

import socket
from array import array
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Final

import numpy as np

from auditor.packets import tlscert
from auditor.packets._compiled import load
from auditor.packets.dns import (
    _dns_compiled,
    parse_dns,
    split_tcp_dns,
)
from auditor.packets.dnstables import DnsStore
from auditor.packets.http1 import HTTP_HEAD_CAP, HTTP_HEAD_SEGMENTS, parse_http_request
from auditor.packets.nameresult import NameResult, earliest_hints, name_columns
from auditor.packets.quic import (
    SUPPORTED_VERSIONS,
    CryptoStream,
    InitialProtection,
    LongHeader,
    QuicInitial,
    crypto_frames,
    initial_protection,
    is_initial,
    open_initial,
    parse_long_header,
)
from auditor.packets.tls import (
    MAX_HANDSHAKE,
    ClientHello,
    client_hello_from_records,
    looks_like_client_hello_record,
)
from auditor.packets.wire import MalformedError
from auditor.records import CertificateInfo

if TYPE_CHECKING:
    from auditor.packets.gquic import GquicHello

_flowtab: ModuleType | None = load("_flowtab")  # else payloads are joined in Python

# ------------------------------------------------------------------------------ collection
#
# The per-flow side: which packets of a flow make a ClientHello, which side is the client, what
# DNS taught about addresses. A NameCollector consumes NameJobs (the packets of one batch that
# may carry a name) and runs in the reading process or in a worker process: it needs no pandas.

# what _dns.client_hellos says of a payload (see _dns.c)
_HELLO_OTHER: Final = 0
_HELLO_READ: Final = 1
KIND_DNS: Final = 1
KIND_TLS: Final = 2  # a TCP payload that starts a ClientHello record
KIND_TLS_MORE: Final = 3  # a later segment of a flow whose ClientHello did not fit in one
KIND_QUIC: Final = 4
KIND_HTTP: Final = 5
KIND_TLS_SERVER: Final = 6  # a TCP payload that starts a server's flight (ServerHello record)
KIND_TLS_SERVER_MORE: Final = 7  # a later segment of that flight, up to the leaf certificate
KIND_HTTP_MORE: Final = 8  # a later segment of a flow whose HTTP request head did not fit
KIND_HTTP_EARLY: Final = 9  # a segment from that side just before such a head's first one
EARLY_SEGMENTS: Final = 8  # segments of a flow kept while its head's first segment has not come
NAME_SNI: Final = "sni"
NAME_ALPN: Final = "alpn"
NAME_QUIC_SNI: Final = "quic_sni"
NAME_QUIC_ALPN: Final = "quic_alpn"
NAME_HTTP_HOST: Final = "http_host"
NAME_AUTHORITY: Final = "authority"  # the HTTP request's host, lower-case, without port
DNS_PORTS: Final[dict[int, str]] = {53: "dns", 5353: "mdns", 5355: "llmnr"}
STREAM_CAP: Final = MAX_HANDSHAKE + 4096


def address_text(version: int, hi: int, lo: int) -> str:
    """An address as text: dotted quad, or RFC 5952 (as tshark and ipaddress print it)."""
    if version == 4:
        return socket.inet_ntop(socket.AF_INET, lo.to_bytes(4, "big"))
    if version == 6:
        return socket.inet_ntop(socket.AF_INET6, ((hi << 64) | lo).to_bytes(16, "big"))
    return ""


def address_texts(version: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> list[str]:
    """:func:`address_text` of each address (compiled when it is built)."""
    if _flowtab is not None:
        c = np.ascontiguousarray
        return list(
            _flowtab.address_texts(
                c(version, dtype=np.uint8), c(hi, dtype=np.uint64), c(lo, dtype=np.uint64)
            )
        )
    return [
        address_text(v, h, low)
        for v, h, low in zip(version.tolist(), hi.tolist(), lo.tolist(), strict=True)
    ]


@dataclass(frozen=True, eq=False)
class NameJob:
    """The packets of one batch that may carry a name, in file order: what each is (``kind``),
    its flow and direction (0: sent by the flow's lower address:port), TCP sequence number,
    timestamp and its payload (``blob[ends[i-1]:ends[i]]``). ``dns`` numbers the DNS packets
    among those of all jobs (-1: not DNS): a DNS row refers to its packet by that number."""

    kind: np.ndarray  # int8
    flow: np.ndarray  # int64
    direction: np.ndarray  # int8
    seq: np.ndarray  # int64
    ts: np.ndarray  # int64 ns
    tcp: np.ndarray  # bool
    order: np.ndarray  # int64: the packet's place among all packets of all jobs
    ends: np.ndarray  # int64
    blob: bytes
    dns: np.ndarray  # int64
    # flows that finished (no later packet joins them): what was kept to parse them goes
    # once the job's packets are parsed (:meth:`NameCollector.forget`)
    forget: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # flows given up came back (a packet came too late): what was forgotten comes back too,
    # before the job's packets are parsed (:meth:`NameCollector.recall`)
    recall: bool = False

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    def subset(self, mask: np.ndarray) -> NameJob:
        """The rows where ``mask`` is true (their payloads copied into a new blob)."""
        ends = self.ends[mask]
        starts = (self.ends - np.diff(self.ends, prepend=0))[mask]
        return NameJob(
            kind=self.kind[mask],
            flow=self.flow[mask],
            direction=self.direction[mask],
            seq=self.seq[mask],
            ts=self.ts[mask],
            tcp=self.tcp[mask],
            order=self.order[mask],
            ends=np.cumsum(ends - starts),
            blob=gather(self.blob, starts, ends),
            dns=self.dns[mask],
            forget=self.forget,
            recall=self.recall,
        )


def gather(buffer: bytes | bytearray, starts: np.ndarray, ends: np.ndarray) -> bytes:
    """``buffer[starts[i]:ends[i]]`` for each ``i``, joined (compiled when it is built)."""
    if _flowtab is not None:
        c = np.ascontiguousarray
        return bytes(_flowtab.gather(buffer, c(starts, dtype=np.int64), c(ends, dtype=np.int64)))
    mv = memoryview(buffer)
    return b"".join([mv[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)])


class TcpStream:
    """One direction of a TCP connection from a given sequence number on, put back in order
    (retransmissions keep the first copy), up to ``cap`` bytes (:data:`STREAM_CAP`)."""

    __slots__ = ("_later", "cap", "data", "isn", "overflow")

    def __init__(self, isn: int, cap: int = STREAM_CAP) -> None:
        self.isn = isn
        self.cap = cap
        self.data = bytearray()
        self._later: dict[int, bytes] = {}
        self.overflow = False

    def add(self, seq: int, payload: bytes) -> None:
        off = (seq - self.isn) & 0xFFFFFFFF
        cap = self.cap
        if off >= cap:
            return  # before the start (wrapped) or beyond the cap
        if off + len(payload) > cap:
            self.overflow = True
            payload = payload[: cap - off]
        if off > len(self.data):
            if len(self._later) < 64:
                self._later[off] = payload
            return
        self._put(off, payload)
        while self._later:
            ready = [o for o in self._later if o <= len(self.data)]
            if not ready:
                break
            for o in sorted(ready):
                self._put(o, self._later.pop(o))

    def _put(self, off: int, payload: bytes) -> None:
        have = len(self.data)
        if off + len(payload) > have:
            self.data += payload[have - off :]


@dataclass(slots=True)
class _TlsWait:
    direction: int
    stream: TcpStream


@dataclass(slots=True)
class _HttpWait:
    direction: int
    stream: TcpStream
    segments: int = 0


@dataclass(slots=True)
class _QuicConn:
    direction: int
    protection: InitialProtection
    crypto: CryptoStream


@dataclass(slots=True)
class _DnsStream:
    stream: TcpStream
    used: int = 0


class NameCollector:
    """Runs the parsers of this module over :class:`NameJob` s, keeping per-flow state."""

    def __init__(self) -> None:
        # kind -> flow -> its value, or its values when it had several (in the order seen)
        self.names: dict[str, dict[int, str | list[str]]] = {}
        # flows whose client side a payload told, and (flow, packet order, side) of each:
        # packed, not a tuple per flow (a long capture's flows are counted in hundreds of
        # thousands)
        self._hinted: set[int] = set()
        # forget()'s: flows and sequence numbers of ClientHellos read, QUIC connections
        # done, flights read, flows whose client side was told
        self._forgotten = (array("q"), array("q"), array("q"), array("q"), array("q"))
        self._hint_rows = (array("q"), array("q"), array("q"))
        # the same from UDP DNS queries, a job's at once: flows, packet orders, sides
        self._dns_hints: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._order = 0  # of the packet being parsed
        self.dns = DnsStore()
        self.warnings: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self._tls: dict[int, _TlsWait] = {}  # ClientHellos being reassembled
        self._tls_read: dict[int, int] = {}  # flow -> sequence number of the ClientHello read
        self.certs: dict[int, CertificateInfo] = {}  # flow -> the server's leaf certificate
        self._flight: dict[int, _TlsWait] = {}  # server flights being reassembled
        self.flights_read: set[int] = set()  # flows whose server flight was read (or given up)
        self._quic: dict[int, _QuicConn] = {}  # connections whose ClientHello is awaited
        self._quic_done: set[int] = set()  # ... read or given up (their keys and bytes let go)
        self._tcp_dns: dict[tuple[int, int], _DnsStream] = {}
        self._heads: dict[int, _HttpWait] = {}  # HTTP request heads being reassembled
        # flow -> sequence number of the first segment of a head read (or given up) since the
        # reading process last looked: it stops sending that head's segments
        self.heads_done: dict[int, int] = {}
        self._early: dict[int, list[tuple[int, bytes]]] = {}  # reordered before a head's start
        self._texts: dict[str, str] = {}  # SNI and ALPN texts, one object each

    def _warn(self, key: str) -> None:
        self.warnings[key] = self.warnings.get(key, 0) + 1

    def feed(self, job: NameJob) -> None:
        if job.recall:
            self.recall()
        self._feed(job)
        if len(job.forget):
            self.forget(job.forget)
        self.dns.flush()  # a long capture's DNS records to files, past a few MiB

    def forget(self, flows: np.ndarray) -> None:
        """Pack away what was kept per flow only to parse these finished flows (which
        ClientHello, server flight and QUIC connection were read, that a client side was
        found): a few integers each, instead of a dictionary's or set's entry. What they gave
        stays as it is, and so does what is still being reassembled (counted at the end).
        :meth:`recall` puts it back, for a file whose time goes back."""
        tls_read, quic_done, flights, hinted = (
            self._tls_read,
            self._quic_done,
            self.flights_read,
            self._hinted,
        )
        tls_flows, tls_seqs, done, read, told = self._forgotten
        for f in flows.tolist():
            seq = tls_read.pop(f, None)
            if seq is not None:
                tls_flows.append(f)
                tls_seqs.append(seq)
            if f in quic_done:
                quic_done.discard(f)
                done.append(f)
            if f in flights:
                flights.discard(f)
                read.append(f)
            if f in hinted:
                hinted.discard(f)
                told.append(f)

    def recall(self) -> None:
        """Put back what :meth:`forget` packed away: flows given up came back."""
        tls_flows, tls_seqs, done, read, told = self._forgotten
        self._tls_read.update(zip(tls_flows, tls_seqs, strict=True))
        self._quic_done.update(done)
        self.flights_read.update(read)
        self._hinted.update(told)
        self._forgotten = (array("q"), array("q"), array("q"), array("q"), array("q"))

    def _feed(self, job: NameJob) -> None:
        if not len(job):
            return
        dns = job.kind == KIND_DNS
        if _dns_compiled is not None and dns.any() and not (dns & job.tcp).any():
            self._udp_dns(job, dns)  # all at once: no DNS over TCP to keep in order with
            if dns.all():
                return
            job = job.subset(~dns)
        blob = job.blob
        ends = job.ends.tolist()
        starts = [0, *ends[:-1]]
        flows = job.flow.tolist()
        dirs = job.direction.tolist()
        kinds = job.kind.tolist()
        seqs = job.seq.tolist()
        if KIND_DNS in kinds:
            tcp = job.tcp.tolist()
            times = job.ts.tolist()
            dns = job.dns.tolist()
        order = job.order.tolist()
        # the ClientHellos whole in their first record, read in C for the job's rows at once;
        # at[i]: row i's place in their results (-1: none)
        at: list[int] = []
        if _dns_compiled is not None and KIND_TLS in kinds:
            rows = np.flatnonzero(job.kind == KIND_TLS)
            hello_status, snis, alpns = _dns_compiled.client_hellos(
                blob, np.ascontiguousarray(job.ends, dtype=np.int64), rows, self._texts
            )
            places = np.full(len(kinds), -1, dtype=np.int64)
            places[rows] = np.arange(len(rows))
            at = places.tolist()
        tls = self._tls
        for i, k in enumerate(kinds):
            self._order = order[i]
            if k == KIND_TLS and at and at[i] >= 0 and flows[i] not in tls:
                # what _tls_segment does with a segment that starts a ClientHello record
                # while no earlier one of the flow waits for its rest
                j = at[i]
                status, sni, alpn = hello_status[j], snis[j], alpns[j]
                if status == _HELLO_OTHER:
                    continue
                f = flows[i]
                if status == _HELLO_READ:
                    if self._tls_read.get(f) != seqs[i]:  # not a retransmission of it
                        self._tls_read[f] = seqs[i]
                        self._hint(f, dirs[i])
                        if sni is not None:
                            self._add(f, NAME_SNI, sni)
                        if alpn is not None:
                            self._add(f, NAME_ALPN, alpn)
                    continue
            payload = blob[starts[i] : ends[i]]
            if k == KIND_DNS:
                if tcp[i]:
                    self._dns_tcp(flows[i], dirs[i], seqs[i], payload, dns[i], times[i])
                else:
                    self._dns(flows[i], dirs[i], payload, dns[i], times[i])
            elif k == KIND_TLS or k == KIND_TLS_MORE:
                self._tls_segment(flows[i], dirs[i], seqs[i], payload, k == KIND_TLS)
            elif k == KIND_TLS_SERVER or k == KIND_TLS_SERVER_MORE:
                self._server_segment(flows[i], dirs[i], seqs[i], payload, k == KIND_TLS_SERVER)
            elif k == KIND_QUIC:
                self._quic_datagram(flows[i], dirs[i], payload)
            elif k == KIND_HTTP or k == KIND_HTTP_MORE:
                self._http_segment(flows[i], dirs[i], seqs[i], payload, k == KIND_HTTP)
            elif k == KIND_HTTP_EARLY:
                early = self._early.setdefault(flows[i], [])
                if len(early) < EARLY_SEGMENTS:
                    early.append((seqs[i], payload))

    def _udp_dns(self, job: NameJob, dns: np.ndarray) -> None:
        """The UDP DNS messages of a job, parsed and learnt by the compiled parser in one
        call (what :meth:`_dns` does for each), the flows' client sides from the queries."""
        assert _dns_compiled is not None
        rows = np.flatnonzero(dns)
        c = np.ascontiguousarray
        status_bytes, truncated = _dns_compiled.collect(
            job.blob,
            c(job.ends, dtype=np.int64),
            c(rows, dtype=np.int64),
            c(job.dns, dtype=np.int64),
            c(job.ts, dtype=np.int64),
            self.dns,
        )
        status = np.frombuffer(status_bytes, dtype=np.uint8)
        bad = int((status == 0).sum())
        if bad:
            self.warnings["dns-malformed"] = self.warnings.get("dns-malformed", 0) + bad
        if truncated:
            self.warnings["dns-truncated"] = self.warnings.get("dns-truncated", 0) + truncated
        queries = rows[status == 1]
        if queries.size:  # the first query of each flow tells its client side
            flows, first = np.unique(job.flow[queries], return_index=True)
            at = queries[first]
            side = job.direction[at].astype(np.int64)
            self._dns_hints.append((flows.astype(np.int64), job.order[at].astype(np.int64), side))

    def result(self) -> NameResult:
        self._early.clear()
        for f in list(self._heads):  # the capture ended inside a head: its complete lines count
            self._warn("http-head-incomplete")
            self._head_done(f, complete=False)
        if self._tls:
            self.warnings["tls-clienthello-incomplete"] = self.warnings.get(
                "tls-clienthello-incomplete", 0
            ) + len(self._tls)
            self._tls.clear()
        if self._flight:  # the capture or the connection ended first: counted, not damage
            self.counts["tls-certificate-incomplete"] = self.counts.get(
                "tls-certificate-incomplete", 0
            ) + len(self._flight)
            self._flight.clear()
        undone = len(self._quic)
        if undone:
            self.warnings["quic-clienthello-incomplete"] = undone
        dns = self.dns.tables()  # (and the store emptied)
        names = name_columns(self.names)
        hf, ho, hs = (np.frombuffer(a, dtype=np.int64) for a in self._hint_rows)
        hints = earliest_hints([(hf, ho, hs), *self._dns_hints])
        del hf, ho, hs
        self.names, self._dns_hints = {}, []
        self._hinted, self._hint_rows = set(), (array("q"), array("q"), array("q"))
        return NameResult(names, hints, dns, self.warnings, self.counts, self.certs)

    def _hint(self, f: int, d: int) -> None:
        if f not in self._hinted:
            self._hinted.add(f)
            flows, orders, sides = self._hint_rows
            flows.append(f)
            orders.append(self._order)
            sides.append(d)

    def _add(self, f: int, kind: str, value: str) -> None:
        of_kind = self.names.get(kind)
        if of_kind is None:
            of_kind = self.names[kind] = {}
        had = of_kind.get(f)
        if had is None:
            of_kind[f] = value  # most flows have one value: no list for it
        elif type(had) is str:
            if had != value:
                of_kind[f] = [had, value]
        elif value not in had:
            had.append(value)  # type: ignore[union-attr]

    # ---------------------------------------------------------------------------------- TLS

    def _tls_segment(self, f: int, d: int, seq: int, payload: bytes, starts: bool) -> None:
        wait = self._tls.get(f)
        if wait is None:
            if not starts or self._tls_read.get(f) == seq:
                return  # not a ClientHello, or a retransmission of one already read
            if len(payload) >= 6 and not looks_like_client_hello_record(payload):
                return
            try:
                hello = client_hello_from_records(payload)
            except MalformedError:
                self._warn("tls-clienthello-malformed")
                return
            if hello is not None:  # most ClientHellos fit in one segment
                self._tls_read[f] = seq
                self._hello(f, d, hello, NAME_SNI, NAME_ALPN)
                return
            wait = self._tls[f] = _TlsWait(d, TcpStream(seq))
        elif d != wait.direction:
            return
        wait.stream.add(seq, payload)
        try:
            hello = client_hello_from_records(wait.stream.data)
        except MalformedError:
            self._warn("tls-clienthello-malformed")
            self._tls_done(f, wait)
            return
        if hello is None:
            if wait.stream.overflow:
                self._warn("tls-clienthello-too-large")
                self._tls_done(f, wait)
            return
        self._tls_done(f, wait)
        self._hello(f, d, hello, NAME_SNI, NAME_ALPN)

    def _tls_done(self, f: int, wait: _TlsWait) -> None:
        self._tls_read[f] = wait.stream.isn
        del self._tls[f]

    def _hello(self, f: int, d: int, hello: ClientHello, sni: str, alpn: str) -> None:
        self._hint(f, d)
        if hello.sni is not None:
            self._add(f, sni, hello.sni)
        if hello.alpn:
            self._add(f, alpn, ",".join(hello.alpn))

    def _server_segment(self, f: int, d: int, seq: int, payload: bytes, starts: bool) -> None:
        """The server's first flight, put in order until its leaf certificate is read (TLS up
        to 1.2) or it shows there is none to read (:mod:`auditor.packets.tlscert`)."""
        wait = self._flight.get(f)
        if wait is None:
            if not starts or f in self.flights_read:
                return  # a flight already read (or a retransmission of its start)
            if not tlscert.looks_like_server_flight(payload):
                return
            wait = self._flight[f] = _TlsWait(d, TcpStream(seq))
        elif d != wait.direction:
            return
        wait.stream.add(seq, payload)
        try:
            flight = tlscert.read_server_flight(wait.stream.data)
        except tlscert.TooLargeError:
            self._warn("tls-certificate-too-large")
            self._flight_done(f)
            return
        except tlscert.MalformedError:
            self._warn("tls-certificate-malformed")
            self._flight_done(f)
            return
        if not flight.done:
            if wait.stream.overflow:
                self._warn("tls-certificate-too-large")
                self._flight_done(f)
            return
        self._flight_done(f)
        if flight.leaf is not None:
            info = tlscert.certificate_info(flight.leaf)
            if info.error is not None:
                self._warn("tls-certificate-unreadable")
            self.certs[f] = info

    def _flight_done(self, f: int) -> None:
        self.flights_read.add(f)
        del self._flight[f]

    # --------------------------------------------------------------------------------- QUIC

    def _quic_datagram(self, f: int, d: int, datagram: bytes) -> None:
        if f in self._quic_done:
            return  # a ClientHello already read (or given up)
        conn = self._quic.get(f)
        if conn is not None and d != conn.direction:
            return  # the server's Initials
        from auditor.packets import gquic  # it builds on this module

        if gquic.looks_like_gquic(datagram):
            self._gquic_datagram(f, d, gquic.parse_gquic(datagram))
            return
        pos = 0
        while pos + 5 <= len(datagram) and datagram[pos] & 0x80:
            version = int.from_bytes(datagram[pos + 1 : pos + 5], "big")
            if version not in SUPPORTED_VERSIONS:
                if version and pos == 0:  # 0 is version negotiation
                    self._warn("quic-unsupported-version")
                return
            try:
                header = parse_long_header(datagram, pos)
            except MalformedError:
                self._warn("quic-malformed")
                return
            if not is_initial(header):
                return
            initial = self._open(conn, header, datagram)
            if initial is None:
                return
            if conn is None:
                protection = initial_protection(header.dcid, header.version)
                conn = self._quic[f] = _QuicConn(d, protection, CryptoStream())
                self._hint(f, d)
            try:
                for offset, data in crypto_frames(initial.payload):
                    conn.crypto.add(offset, data)
                hello = conn.crypto.client_hello()
            except MalformedError:
                self._warn("quic-clienthello-malformed")
                self._quic_finished(f)
                return
            if hello is not None:
                self._quic_finished(f)
                self._hello(f, d, hello, NAME_QUIC_SNI, NAME_QUIC_ALPN)
                return
            pos = header.end

    def _gquic_datagram(self, f: int, d: int, hello: GquicHello | None) -> None:
        """Google QUIC (Q0xx, T05x): the client hello's SNI, read from one datagram
        (:mod:`auditor.packets.gquic`); data packets of either side give None."""
        if hello is None:
            return
        if hello.problem:
            self._warn("gquic-hello-malformed")
        if hello.sni is None:
            if not hello.complete:
                self._warn("gquic-hello-incomplete")
            return  # a hello without a name (a later one may carry it)
        self._hint(f, d)
        self._add(f, NAME_QUIC_SNI, hello.sni)
        if hello.alpn:
            self._add(f, NAME_QUIC_ALPN, ",".join(hello.alpn))
        self._quic_done.add(f)
        self._quic.pop(f, None)

    def _quic_finished(self, f: int) -> None:
        """Only that it is done is kept of a connection (its ciphers and CRYPTO bytes, some
        kilobytes, would otherwise stay for every QUIC flow of the capture)."""
        del self._quic[f]
        self._quic_done.add(f)

    def _open(
        self, conn: _QuicConn | None, header: LongHeader, datagram: bytes
    ) -> QuicInitial | None:
        """Decrypt with the keys of the client's first DCID, else of this packet's DCID (the
        client starts over with a new DCID after a Retry)."""
        candidates = [initial_protection(header.dcid, header.version)]
        if conn is not None and conn.protection.keys.version == header.version:
            candidates.insert(0, conn.protection)
        for protection in candidates:
            try:
                initial = open_initial(datagram, header, protection)
            except MalformedError:
                continue
            if conn is not None:
                conn.protection = protection
            return initial
        self._warn("quic-initial-undecryptable")
        return None

    # --------------------------------------------------------------------------------- HTTP

    def _http_segment(self, f: int, d: int, seq: int, payload: bytes, starts: bool) -> None:
        """A segment of an HTTP request head: the head is parsed once its blank line is there,
        its segments put in sequence order first (a gap holds it until the capture ends)."""
        wait = self._heads.get(f)
        if wait is not None and (
            d != wait.direction
            or (starts and (seq - wait.stream.isn) & 0xFFFFFFFF >= wait.stream.cap)
        ):
            if d != wait.direction and not starts:
                return
            self._warn("http-head-incomplete")  # a new request while a head was missing bytes
            self._head_done(f, complete=False)
            wait = None
        if wait is None:
            if not starts:
                return  # the rest of a head already read (or given up)
            early = self._early.pop(f, ())
            if payload.find(b"\r\n\r\n") >= 0:
                self._http(f, d, payload)  # most heads fit in one segment
                return
            wait = self._heads[f] = _HttpWait(d, TcpStream(seq, HTTP_HEAD_CAP))
            for s, p in early:  # segments that came before this one (those of the head count)
                wait.stream.add(s, p)
        wait.stream.add(seq, payload)
        wait.segments += 1
        if wait.stream.data.find(b"\r\n\r\n") >= 0:
            self._head_done(f, complete=True)
        elif wait.stream.overflow or wait.segments >= HTTP_HEAD_SEGMENTS:
            self._warn("http-head-too-large")
            self._head_done(f, complete=False)

    def _head_done(self, f: int, *, complete: bool) -> None:
        """Parse a reassembled head (one cut short: up to its last complete line)."""
        wait = self._heads.pop(f)
        self.heads_done[f] = wait.stream.isn
        data = bytes(wait.stream.data)
        if not complete:
            end = data.rfind(b"\r\n")
            if end < 0:
                return  # not even the request line
            data = data[: end + 2]
        self._http(f, wait.direction, data)

    def _http(self, f: int, d: int, payload: bytes) -> None:
        try:
            req = parse_http_request(payload)
        except MalformedError:
            self.counts["http-prefix-not-a-request"] = (
                self.counts.get("http-prefix-not-a-request", 0) + 1
            )
            return
        self._hint(f, d)
        if req.host is not None:
            self._add(f, NAME_HTTP_HOST, req.host)
        if req.authority:
            self._add(f, NAME_AUTHORITY, req.authority)

    # ---------------------------------------------------------------------------------- DNS

    def _dns_tcp(self, f: int, d: int, seq: int, payload: bytes, packet: int, ts: int) -> None:
        key = (f, d)
        st = self._tcp_dns.get(key)
        if st is None:
            st = self._tcp_dns[key] = _DnsStream(TcpStream(seq))
        st.stream.add(seq, payload)
        messages, used = split_tcp_dns(st.stream.data[st.used :])
        st.used += used
        for msg in messages:
            self._dns(f, d, msg, packet, ts)
        if st.stream.overflow:
            self._warn("dns-tcp-stream-too-large")
            del self._tcp_dns[key]

    def _dns(self, f: int, d: int, msg: bytes, packet: int, ts: int) -> None:
        try:
            m = parse_dns(msg)
        except MalformedError:
            self._warn("dns-malformed")
            return
        if m.truncated:
            self._warn("dns-truncated")
        if not m.response:
            self._hint(f, d)
        self.dns.add(m, packet, ts)
