"""DNS messages (RFC 1035) over UDP or TCP (without the TCP length prefix): questions and
the answer section, with A, AAAA, CNAME, PTR, NS and HTTPS/SVCB (RFC 9460: target name and
the ``ipv4hint``/``ipv6hint`` parameters) decoded; compiled (``_dns.c``) where it is built.
The compiled module also reads ClientHellos (:mod:`auditor.packets.tls`) and a batch's UDP
DNS (:mod:`auditor.packets.names`); it is set up here."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from types import ModuleType
from typing import Final

from auditor.packets._compiled import load
from auditor.packets.wire import MalformedError

DNS_TYPES: Final[dict[int, str]] = {
    1: "A",
    2: "NS",
    5: "CNAME",
    6: "SOA",
    12: "PTR",
    13: "HINFO",
    15: "MX",
    16: "TXT",
    28: "AAAA",
    33: "SRV",
    35: "NAPTR",
    41: "OPT",
    43: "DS",
    46: "RRSIG",
    47: "NSEC",
    48: "DNSKEY",
    50: "NSEC3",
    52: "TLSA",
    64: "SVCB",
    65: "HTTPS",
    99: "SPF",
    255: "ANY",
    257: "CAA",
}
DNS_RCODES: Final[dict[int, str]] = {
    0: "NOERROR",
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
}
TYPE_A: Final = 1
TYPE_AAAA: Final = 28
TYPE_CNAME: Final = 5
TYPE_SVCB: Final = 64
TYPE_HTTPS: Final = 65
_NAME_TARGET_TYPES: Final = frozenset({2, 5, 12})  # NS, CNAME, PTR
_SVC_IPV4HINT: Final = 4
_SVC_IPV6HINT: Final = 6
_MAX_RECORDS: Final = 512
_H = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")


def dns_type_name(rtype: int) -> str:
    name = DNS_TYPES.get(rtype)
    return name if name is not None else f"TYPE{rtype}"


@dataclass(frozen=True, slots=True)
class DnsResource:
    """One resource record of an answer section.

    ``value`` is the address (A, AAAA), the target name (CNAME, PTR, NS, HTTPS, SVCB) or
    ``None`` for types not decoded; ``hints`` are the HTTPS/SVCB ``ipv4hint``/``ipv6hint``
    addresses."""

    name: str
    rtype: int
    ttl: int
    value: str | None
    hints: tuple[str, ...] = ()

    def __reduce__(
        self,
    ) -> tuple[type[DnsResource], tuple[str, int, int, str | None, tuple[str, ...]]]:
        # pickled as its fields: several times faster than the default for slotted classes
        return (DnsResource, (self.name, self.rtype, self.ttl, self.value, self.hints))


@dataclass(frozen=True, slots=True)
class DnsMessage:
    """A DNS message. ``truncated`` is set when the bytes ended before the sections did (a
    packet cut by the capture's snap length); what came before the cut is kept."""

    id: int
    response: bool
    opcode: int
    rcode: int
    questions: tuple[tuple[str, int], ...]
    answers: tuple[DnsResource, ...]
    truncated: bool = False


# Bytes a label may show as they are; any other byte is written as \\DDD (RFC 4343 style).
_PLAIN = bytes(b for b in range(0x21, 0x7F) if b not in (0x2E, 0x5C))


def _label_text(raw: bytes | bytearray) -> str:
    return "".join(chr(b) if b in _PLAIN else f"\\{b:03d}" for b in raw)


def read_name(
    msg: bytes | bytearray, pos: int, seen: dict[int, str] | None = None
) -> tuple[str, int]:
    """The domain name at ``pos`` (following compression pointers) and the offset after it.
    ``seen`` maps offsets of names already read in this message to their text."""
    if seen is not None and pos + 1 < len(msg) and msg[pos] >= 0xC0:
        known = seen.get(((msg[pos] & 0x3F) << 8) | msg[pos + 1])
        if known is not None:
            return known, pos + 2
    start = pos
    labels: list[bytes | bytearray] = []
    end = -1
    jumps = 0
    total = 0
    n = len(msg)
    while True:
        if pos >= n:
            raise MalformedError("name runs past the message")
        length = msg[pos]
        if length == 0:
            pos += 1
            break
        if length < 0x40:
            pos += 1
            if pos + length > n:
                raise MalformedError("label runs past the message")
            total += length + 1
            if total > 255:
                raise MalformedError("name longer than 255 bytes")
            labels.append(msg[pos : pos + length])
            pos += length
            continue
        if length < 0xC0:
            raise MalformedError(f"unsupported label type 0x{length:02x}")
        if pos + 1 >= n:
            raise MalformedError("truncated compression pointer")
        if end < 0:
            end = pos + 2
        jumps += 1
        if jumps > 64:
            raise MalformedError("compression pointer loop")
        pos = ((length & 0x3F) << 8) | msg[pos + 1]
    if b"".join(labels).translate(None, _PLAIN):
        text = ".".join(_label_text(x) for x in labels)
    else:
        text = b".".join(labels).decode("ascii")
    if seen is not None:
        seen[start] = text
    return text, (end if end >= 0 else pos)


def _ntop4(b: bytes | bytearray) -> str:
    return socket.inet_ntop(socket.AF_INET, bytes(b))


def _ntop6(b: bytes | bytearray) -> str:
    return socket.inet_ntop(socket.AF_INET6, bytes(b))


def _svcb(msg: bytes | bytearray, pos: int, end: int) -> tuple[str, tuple[str, ...]]:
    if end - pos < 3:
        raise MalformedError("short SVCB record")
    target, pos = read_name(msg, pos + 2)
    hints: list[str] = []
    while pos + 4 <= end:
        key, length = struct.unpack_from("!HH", msg, pos)
        pos += 4
        value = msg[pos : pos + length]
        if pos + length > end:
            raise MalformedError("SVCB parameter runs past the record")
        pos += length
        if key == _SVC_IPV4HINT:
            hints.extend(_ntop4(value[i : i + 4]) for i in range(0, length - 3, 4))
        elif key == _SVC_IPV6HINT:
            hints.extend(_ntop6(value[i : i + 16]) for i in range(0, length - 15, 16))
    return target, tuple(hints)


def _parse_dns_python(msg: bytes | bytearray) -> DnsMessage:
    """:func:`parse_dns` in Python: the reference the compiled parser is checked against."""
    if len(msg) < 12:
        raise MalformedError("DNS message shorter than its header")
    ident, flags, qd, an, _ns, _ar = _H.unpack_from(msg, 0)
    if qd > _MAX_RECORDS or an > _MAX_RECORDS:
        raise MalformedError("implausible DNS section counts")
    pos = 12
    questions: list[tuple[str, int]] = []
    answers: list[DnsResource] = []
    truncated = False
    seen: dict[int, str] = {}
    try:
        for _ in range(qd):
            name, pos = read_name(msg, pos, seen)
            if pos + 4 > len(msg):
                raise MalformedError("question runs past the message")
            questions.append((name, (msg[pos] << 8) | msg[pos + 1]))
            pos += 4
        for _ in range(an):
            name, pos = read_name(msg, pos, seen)
            if pos + 10 > len(msg):
                raise MalformedError("record header runs past the message")
            rtype, _cls, ttl, rdlen = _RR.unpack_from(msg, pos)
            pos += 10
            end = pos + rdlen
            if end > len(msg):
                raise MalformedError("record data runs past the message")
            value: str | None = None
            hints: tuple[str, ...] = ()
            if rtype == TYPE_A and rdlen == 4:
                value = _ntop4(msg[pos:end])
            elif rtype == TYPE_AAAA and rdlen == 16:
                value = _ntop6(msg[pos:end])
            elif rtype in _NAME_TARGET_TYPES:
                value = read_name(msg, pos, seen)[0]
            elif rtype in (TYPE_HTTPS, TYPE_SVCB):
                value, hints = _svcb(msg, pos, end)
            answers.append(DnsResource(name, rtype, ttl, value, hints))
            pos = end
    except MalformedError:
        if not questions and not answers:
            raise
        truncated = True
    return DnsMessage(
        id=ident,
        response=bool(flags & 0x8000),
        opcode=(flags >> 11) & 0xF,
        rcode=flags & 0xF,
        questions=tuple(questions),
        answers=tuple(answers),
        truncated=truncated,
    )


_dns_compiled: ModuleType | None = load("_dns")  # else the Python parser
if _dns_compiled is not None:
    _dns_compiled.setup(DnsResource, DnsMessage, MalformedError)
DNS_PARSER: Final = "python" if _dns_compiled is None else "compiled"


def parse_dns(msg: bytes | bytearray) -> DnsMessage:
    """The header, questions and answer section of one DNS message.

    Parsed by the compiled parser (``auditor/packets/_dns.c``, built at install when a C
    compiler is there), else by :func:`_parse_dns_python`: the same results (the compiled one
    is several times faster). ``AUDITOR_PURE_PYTHON_SCAN=1`` forces the Python parser;
    ``DNS_PARSER`` says which one is in use."""
    if _dns_compiled is not None:
        return _dns_compiled.parse(msg)
    return _parse_dns_python(msg)


def split_tcp_dns(stream: bytes | bytearray) -> tuple[list[bytes], int]:
    """The complete length-prefixed DNS messages at the start of a TCP stream (RFC 7766) and
    how many bytes they used."""
    out: list[bytes] = []
    pos = 0
    while pos + 2 <= len(stream):
        length = (stream[pos] << 8) | stream[pos + 1]
        if pos + 2 + length > len(stream):
            break
        out.append(bytes(stream[pos + 2 : pos + 2 + length]))
        pos += 2 + length
    return out, pos
