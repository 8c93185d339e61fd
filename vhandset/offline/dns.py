"""The offline internet's DNS: every name resolves to a stable synthetic address.

A name's address comes from the services catalogue (``ipv4``/``ipv6`` of its entry) or else
from a hash of the name: inside 198.18.0.0/15 (RFC 2544 benchmarking) for A and 2001:db8::/32
(RFC 3849 documentation) for AAAA, so no answer can ever point at a real host. Names under
``.invalid`` (RFC 6761) do not exist unless the catalogue names them exactly, as it does
``auditor-canary.invalid``. ``localhost`` is loopback, as RFC 6761 requires.

:func:`resolve` and :func:`answer` are pure (a name or a packet in, addresses or a packet out)
so that the virtual handset can resolve without sockets; :class:`OfflineDns` serves
:func:`answer` over UDP and TCP on loopback. Replies are written with ``mitmproxy.dns``
(uncompressed names, so a long CNAME chain is truncated for UDP a little sooner than a
compressing server would); the question is read by hand, stricter than mitmproxy's reader.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import ipaddress
import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass

from mitmproxy import dns
from mitmproxy.net.dns import domain_names

from vhandset.clock import now_iso
from vhandset.offline.services import Catalogue, default_catalogue

log = logging.getLogger(__name__)

DEFAULT_TTL = 60
UDP_MAX = 512  # RFC 1035 without EDNS; longer answers are truncated (TC) for UDP

# Fixed addresses in the catalogue live in the first /24 and /48; derived ones never do.
_V4_BASE = int(ipaddress.IPv4Address("198.18.0.0"))
_V4_BLOCKS = 511  # the /24 blocks 198.18.1.0 .. 198.19.255.0
_V6_BASE = int(ipaddress.IPv6Address("2001:db8::"))

TYPE_A, TYPE_NS, TYPE_CNAME, TYPE_SOA, TYPE_AAAA = 1, 2, 5, 6, 28
TYPE_SVCB, TYPE_HTTPS, TYPE_ANY = 64, 65, 255
CLASS_IN, CLASS_ANY = 1, 255
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}

_HEADER = struct.Struct("!HHHHHH")
_QR, _RD = 0x8000, 0x0100
_MAX_CNAME_HOPS = 8


class _FormatError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a name resolves to. ``exists`` false means NXDOMAIN."""

    name: str
    exists: bool
    ipv4: str | None = None
    ipv6: str | None = None
    cnames: tuple[str, ...] = ()  # the alias chain, first hop first

    @property
    def target(self) -> str:
        return self.cnames[-1] if self.cnames else self.name


@dataclass(frozen=True, slots=True)
class DnsQuery:
    """One query the server answered (or dropped), for the in-memory log."""

    time: str
    client: str
    transport: str  # "udp" or "tcp"
    name: str
    qtype: int
    rcode: str  # NOERROR, NXDOMAIN, ... or "dropped"
    answers: tuple[str, ...]


def _digest(name: str) -> bytes:
    data = b"auditor-offline-dns\x00" + name.encode("utf-8", "surrogateescape")
    return hashlib.sha256(data).digest()


def derived_ipv4(name: str) -> str:
    """A stable address for ``name`` in 198.18.0.0/15 minus its first /24, host part 1-254."""
    n = int.from_bytes(_digest(name)[:8], "big") % (_V4_BLOCKS * 254)
    block, host = 1 + n // 254, 1 + n % 254
    return str(ipaddress.IPv4Address(_V4_BASE + block * 256 + host))


def derived_ipv6(name: str) -> str:
    """A stable address for ``name`` in 2001:db8::/32 outside 2001:db8::/48."""
    d = _digest(name)
    third = 1 + int.from_bytes(d[8:10], "big") % 0xFFFF
    rest = int.from_bytes(d[10:20], "big")
    return str(ipaddress.IPv6Address(_V6_BASE | (third << 80) | rest))


def _normalize(name: str) -> str:
    return name.strip().rstrip(".").lower()


def lookup(name: str, catalogue: Catalogue | None = None) -> Resolution:
    """Resolve ``name`` the way :class:`OfflineDns` does (no sockets)."""
    cat = catalogue if catalogue is not None else default_catalogue()
    n = _normalize(name)
    if n == "localhost" or n.endswith(".localhost"):
        return Resolution(n, True, "127.0.0.1", "::1")
    if not n:
        return Resolution(n, True)
    chain: list[str] = []
    current = n
    for _ in range(_MAX_CNAME_HOPS):
        if current == "invalid" or current.endswith(".invalid"):
            svc = cat.service_for(current)
            if svc is None or current not in svc.hosts:
                return Resolution(n, False, cnames=tuple(chain))
        svc = cat.service_for(current)
        if svc is not None and svc.cname and svc.cname != current and svc.cname not in chain:
            chain.append(svc.cname)
            current = svc.cname
            continue
        v4 = svc.ipv4 if svc is not None and svc.ipv4 else derived_ipv4(current)
        v6 = svc.ipv6 if svc is not None and svc.ipv6 else derived_ipv6(current)
        return Resolution(n, True, v4, v6, tuple(chain))
    return Resolution(n, True, derived_ipv4(current), derived_ipv6(current), tuple(chain))


def resolve(name: str, catalogue: Catalogue | None = None) -> list[str]:
    """``[ipv4, ipv6]`` for ``name``, or ``[]`` when it does not exist."""
    r = lookup(name, catalogue)
    return [a for a in (r.ipv4, r.ipv6) if a]


# --- wire format -------------------------------------------------------------------------


def _parse_question(packet: bytes) -> tuple[str, str, int, int]:
    """(the name as asked, lower-case name, qtype, qclass) of the first question.

    Stricter than ``mitmproxy.dns.DNSMessage.unpack``, on purpose: a question whose name is
    compressed or extended, runs past the packet or is longer than 255 bytes is a FORMERR,
    as resolvers answer it, instead of a message to read."""
    offset, total, labels = 12, 0, []
    while True:
        if offset >= len(packet):
            raise _FormatError("question name runs past the packet")
        size = packet[offset]
        if size & 0xC0:
            raise _FormatError("compressed or extended label in the question")
        offset += 1
        if size == 0:
            break
        label = packet[offset : offset + size]
        if len(label) < size:
            raise _FormatError("label runs past the packet")
        total += size + 1
        if total > 255:
            raise _FormatError("name longer than 255 bytes")
        labels.append(label.decode("latin-1"))
        offset += size
    if offset + 4 > len(packet):
        raise _FormatError("question without type and class")
    qtype, qclass = struct.unpack_from("!HH", packet, offset)
    asked = ".".join(labels)
    return asked, asked.lower(), qtype, qclass


# The SOA of the offline zone: its names and its serial, refresh, retry, expire (RFC 1035 3.3.13).
_SOA_RDATA = (
    domain_names.pack("ns.offline.auditor.invalid")
    + domain_names.pack("hostmaster.offline.auditor.invalid")
    + struct.pack("!IIII", 1, 3600, 600, 86400)
)


def _soa(ttl: int) -> dns.ResourceRecord:
    return dns.ResourceRecord("", TYPE_SOA, CLASS_IN, ttl, _SOA_RDATA + struct.pack("!I", ttl))


def _message(
    qid: int,
    flags_in: int,
    rcode: int,
    question: dns.Question | None = None,
    answers: tuple[dns.ResourceRecord, ...] = (),
    authority: tuple[dns.ResourceRecord, ...] = (),
    truncated: bool = False,
) -> bytes:
    """A response (``mitmproxy.dns``): the query's opcode and RD echoed, RA set."""
    return dns.DNSMessage(
        id=qid,
        query=False,
        op_code=(flags_in >> 11) & 0xF,
        authoritative_answer=False,
        truncation=truncated,
        recursion_desired=bool(flags_in & _RD),
        recursion_available=True,
        reserved=0,
        response_code=rcode,
        questions=[question] if question is not None else [],
        answers=list(answers),
        authorities=list(authority),
        additionals=[],
    ).packed


def answer(
    packet: bytes,
    catalogue: Catalogue | None = None,
    *,
    ttl: int = DEFAULT_TTL,
    max_size: int = UDP_MAX,
) -> bytes | None:
    """The reply to one DNS message, or ``None`` when it deserves none (too short, a reply)."""
    return _answer(packet, catalogue, ttl, max_size)[0]


def _answer(
    packet: bytes, catalogue: Catalogue | None, ttl: int, max_size: int
) -> tuple[bytes | None, str, int, str, tuple[str, ...]]:
    """(reply, name, qtype, rcode name, answer strings) for logging as well as replying."""
    if len(packet) < _HEADER.size:
        return None, "", 0, "dropped", ()
    qid, flags, qdcount, _, _, _ = _HEADER.unpack_from(packet)
    if flags & _QR:
        return None, "", 0, "dropped", ()
    if (flags >> 11) & 0xF != 0:
        return _message(qid, flags, NOTIMP), "", 0, "NOTIMP", ()
    if qdcount != 1:
        return _message(qid, flags, FORMERR), "", 0, "FORMERR", ()
    try:
        asked, name, qtype, qclass = _parse_question(packet)
        question = dns.Question(asked, qtype, qclass)
        # mitmproxy writes names as IDNA: a name it cannot write, or writes otherwise (a
        # non-ASCII label as xn--, a dot inside a label as two labels), cannot be echoed as
        # asked, and a resolver drops a reply whose question differs: FORMERR instead
        packed = domain_names.pack(asked)
        if packet[12 : 12 + len(packed)] != packed:
            raise _FormatError("the question's name cannot be written back as it was asked")
    except (_FormatError, ValueError):
        return _message(qid, flags, FORMERR), "", 0, "FORMERR", ()
    if qclass not in (CLASS_IN, CLASS_ANY):
        return _message(qid, flags, REFUSED, question), name, qtype, "REFUSED", ()
    res = lookup(name, catalogue)
    if not res.exists:
        reply = _message(qid, flags, NXDOMAIN, question, (), (_soa(ttl),))
        return reply, name, qtype, "NXDOMAIN", ()
    records: list[dns.ResourceRecord] = []
    shown: list[str] = []
    owner = asked
    for alias in res.cnames:
        records.append(
            dns.ResourceRecord(owner, TYPE_CNAME, CLASS_IN, ttl, domain_names.pack(alias))
        )
        shown.append(f"CNAME {alias}")
        owner = alias
    if qtype != TYPE_CNAME:
        if qtype in (TYPE_A, TYPE_ANY) and res.ipv4:
            rdata = ipaddress.IPv4Address(res.ipv4).packed
            records.append(dns.ResourceRecord(owner, TYPE_A, CLASS_IN, ttl, rdata))
            shown.append(f"A {res.ipv4}")
        if qtype in (TYPE_AAAA, TYPE_ANY) and res.ipv6:
            rdata = ipaddress.IPv6Address(res.ipv6).packed
            records.append(dns.ResourceRecord(owner, TYPE_AAAA, CLASS_IN, ttl, rdata))
            shown.append(f"AAAA {res.ipv6}")
    # Everything else (HTTPS, SVCB, MX, TXT, PTR, ...) exists but has no data: NODATA + SOA.
    authority = () if records else (_soa(ttl),)
    reply = _message(qid, flags, NOERROR, question, tuple(records), authority)
    if len(reply) > max_size:
        reply = _message(qid, flags, NOERROR, question, truncated=True)
    return reply, name, qtype, "NOERROR", tuple(shown)


# --- server ------------------------------------------------------------------------------


class OfflineDns:
    """A DNS server on ``host:port`` (UDP, and TCP on the same port), loopback by default."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        catalogue: Catalogue | None = None,
        ttl: int = DEFAULT_TTL,
        tcp: bool = True,
        tcp_timeout: float = 5.0,
        max_tcp_connections: int = 64,
        log_size: int = 10_000,
    ):
        self.host = host
        self._want_port = port
        self.catalogue = catalogue if catalogue is not None else default_catalogue()
        self.ttl = ttl
        self.tcp = tcp
        self.tcp_timeout = tcp_timeout
        self.max_tcp_connections = max_tcp_connections
        self._log: collections.deque[DnsQuery] = collections.deque(maxlen=log_size)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._port = 0

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("OfflineDns is not started")
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def queries(self) -> list[DnsQuery]:
        with self._lock:
            return list(self._log)

    def start(self) -> OfflineDns:
        if self._udp is not None or self._stopping.is_set():
            raise RuntimeError("OfflineDns can be started once")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        if not _is_loopback(self.host):
            log.warning("offline DNS listens on %s, beyond loopback", self.host)
        for _ in range(20):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            udp.bind((self.host, self._want_port))
            port = udp.getsockname()[1]
            if not self.tcp:
                break
            tcp = socket.socket(family, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((self.host, port))
            except OSError:
                udp.close()
                tcp.close()
                if self._want_port:
                    raise
                continue
            tcp.listen(32)
            tcp.settimeout(0.2)
            self._tcp = tcp
            break
        else:
            raise OSError("no port free for both UDP and TCP")
        udp.settimeout(0.2)
        self._udp, self._port = udp, port
        self._spawn(self._udp_loop, "offline-dns-udp")
        if self._tcp is not None:
            self._spawn(self._tcp_loop, "offline-dns-tcp")
        log.info("offline DNS on %s:%d", self.host, port)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        deadline = time.monotonic() + timeout
        with self._lock:
            conns = list(self._conns.items())
        for sock, _ in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for t in [*self._threads, *(t for _, t in conns)]:
            t.join(max(0.0, deadline - time.monotonic()))
        for s in (self._udp, self._tcp):
            if s is not None:
                s.close()

    def __enter__(self) -> OfflineDns:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, target: object, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)  # type: ignore[arg-type]
        self._threads.append(t)
        t.start()

    def _handle(self, packet: bytes, client: str, transport: str, max_size: int) -> bytes | None:
        try:
            reply, name, qtype, rcode, shown = _answer(packet, self.catalogue, self.ttl, max_size)
        except Exception:  # one bad packet must not stop the server
            log.exception("offline DNS: failed to answer a packet from %s", client)
            return None
        entry = DnsQuery(now_iso(), client, transport, name, qtype, rcode, shown)
        with self._lock:
            self._log.append(entry)
        log.debug("offline DNS %s %s type %d -> %s %s", transport, name, qtype, rcode, shown)
        return reply

    def _udp_loop(self) -> None:
        assert self._udp is not None
        sock = self._udp
        while not self._stopping.is_set():
            try:
                packet, addr = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.05)
                continue
            reply = self._handle(packet, f"{addr[0]}:{addr[1]}", "udp", UDP_MAX)
            if reply is not None:
                with contextlib.suppress(OSError):
                    sock.sendto(reply, addr)

    def _tcp_loop(self) -> None:
        assert self._tcp is not None
        while not self._stopping.is_set():
            try:
                conn, addr = self._tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.05)
                continue
            with self._lock:
                if len(self._conns) >= self.max_tcp_connections:
                    conn.close()
                    continue
                t = threading.Thread(
                    target=self._tcp_conn, args=(conn, addr), name="offline-dns-conn", daemon=True
                )
                self._conns[conn] = t
                t.start()

    def _tcp_conn(self, conn: socket.socket, addr: tuple[str, int]) -> None:
        client = f"{addr[0]}:{addr[1]}"
        try:
            conn.settimeout(self.tcp_timeout)
            while not self._stopping.is_set():
                head = _recv_exact(conn, 2)
                if head is None:
                    return
                (length,) = struct.unpack("!H", head)
                packet = _recv_exact(conn, length)
                if packet is None:
                    return
                reply = self._handle(packet, client, "tcp", 65535)
                if reply is None:
                    return
                conn.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            pass
        finally:
            conn.close()
            with self._lock:
                self._conns.pop(conn, None)


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
