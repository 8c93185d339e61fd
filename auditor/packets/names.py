"""The names a packet can carry, parsed from payload bytes.

- **DNS** (RFC 1035) messages, over UDP or TCP (without the TCP length prefix): questions and
  the answer section, with A, AAAA, CNAME, PTR, NS and HTTPS/SVCB (RFC 9460: target name and
  the ``ipv4hint``/``ipv6hint`` parameters) decoded; compiled (``_dns.c``) where it is built.
- **TLS ClientHello** (RFC 8446): SNI and ALPN, from the handshake bytes or from a stream of
  TLS records (a ClientHello may span several records and several TCP segments).
- **QUIC Initial** (RFC 9000, RFC 9001, RFC 9369): initial secrets derived from the client's
  Destination Connection ID with the version's salt, header protection removed (AES-128-ECB),
  payload decrypted (AES-128-GCM), CRYPTO frames collected; :class:`CryptoStream` puts a
  ClientHello split over several frames and packets back together by offset.
- **HTTP/1** request line and ``Host`` header; a request head split over several TCP
  segments is put back in order first (up to :data:`HTTP_HEAD_CAP` bytes and
  :data:`HTTP_HEAD_SEGMENTS` segments).
- **The server's first flight** up to TLS 1.2: its leaf certificate, read by
  :mod:`auditor.packets.tlscert` from the server's segments put back in order.

Each parser takes bytes and gives a frozen record, or raises :class:`MalformedError`. None of
them knows where the bytes came from; :mod:`auditor.packets.flows` feeds them.
"""

from __future__ import annotations

import gc
import pickle
import socket
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any, Final

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from auditor.packets import tlscert
from auditor.packets._compiled import load
from auditor.records import CertificateInfo

if TYPE_CHECKING:
    from auditor.packets.gquic import GquicHello

_flowtab: ModuleType | None = load("_flowtab")  # else payloads are joined in Python

MAX_HANDSHAKE: Final = 64 * 1024  # reassembly cap for one ClientHello


class MalformedError(ValueError):
    """The bytes are not (or not entirely) what the parser expected."""


# --------------------------------------------------------------------------------------- DNS

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


# --------------------------------------------------------------------------------------- TLS

HANDSHAKE: Final = 0x16
CLIENT_HELLO: Final = 1
_EXT_SNI: Final = 0
_EXT_ALPN: Final = 16


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What a TLS ClientHello says about where it goes."""

    sni: str | None
    alpn: tuple[str, ...]
    legacy_version: int


def client_hello_length(handshake: bytes | bytearray) -> int | None:
    """The full length (header included) of the ClientHello that ``handshake`` starts with, or
    None when fewer than 4 bytes are there."""
    if len(handshake) < 4:
        return None
    if handshake[0] != CLIENT_HELLO:
        raise MalformedError(f"handshake type {handshake[0]} is not a ClientHello")
    return 4 + ((handshake[1] << 16) | (handshake[2] << 8) | handshake[3])


def parse_client_hello(handshake: bytes | bytearray) -> ClientHello:
    """SNI and ALPN of a complete ClientHello handshake message (type, length, body).

    Compiled (``_dns.c``, built with the DNS parser) where it is built, else
    :func:`_parse_client_hello_python`: the same results and errors."""
    if _dns_compiled is not None:
        return ClientHello(*_dns_compiled.client_hello(handshake))
    return _parse_client_hello_python(handshake)


def _parse_client_hello_python(handshake: bytes | bytearray) -> ClientHello:
    """:func:`parse_client_hello` in Python: the reference the compiled one is checked
    against."""
    total = client_hello_length(handshake)
    if total is None or total > len(handshake):
        raise MalformedError("incomplete ClientHello")
    b = bytes(handshake[:total])
    if total < 4 + 2 + 32 + 1:
        raise MalformedError("ClientHello too short")
    version = (b[4] << 8) | b[5]
    pos = 4 + 2 + 32
    pos += 1 + b[pos]  # legacy_session_id
    if pos + 2 > total:
        raise MalformedError("ClientHello ends in the session id")
    pos += 2 + ((b[pos] << 8) | b[pos + 1])  # cipher_suites
    if pos + 1 > total:
        raise MalformedError("ClientHello ends in the cipher suites")
    pos += 1 + b[pos]  # legacy_compression_methods
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    if pos == total:
        return ClientHello(None, (), version)  # no extensions at all
    if pos + 2 > total:
        raise MalformedError("ClientHello ends in the compression methods")
    ext_end = pos + 2 + ((b[pos] << 8) | b[pos + 1])
    if ext_end > total:
        raise MalformedError("extensions run past the ClientHello")
    pos += 2
    while pos + 4 <= ext_end:
        etype = (b[pos] << 8) | b[pos + 1]
        elen = (b[pos + 2] << 8) | b[pos + 3]
        pos += 4
        if pos + elen > ext_end:
            raise MalformedError("extension runs past the extensions")
        if etype == _EXT_SNI and sni is None:
            sni = _sni(b[pos : pos + elen])
        elif etype == _EXT_ALPN and not alpn:
            alpn = _alpn(b[pos : pos + elen])
        pos += elen
    return ClientHello(sni, alpn, version)


def _sni(ext: bytes) -> str | None:
    if len(ext) < 2:
        raise MalformedError("short server_name extension")
    end = min(len(ext), 2 + ((ext[0] << 8) | ext[1]))
    pos = 2
    while pos + 3 <= end:
        kind = ext[pos]
        length = (ext[pos + 1] << 8) | ext[pos + 2]
        pos += 3
        if pos + length > end:
            raise MalformedError("server name runs past the extension")
        if kind == 0:
            return ext[pos : pos + length].decode("utf-8", "backslashreplace")
        pos += length
    return None


def _alpn(ext: bytes) -> tuple[str, ...]:
    if len(ext) < 2:
        raise MalformedError("short ALPN extension")
    end = min(len(ext), 2 + ((ext[0] << 8) | ext[1]))
    pos = 2
    out: list[str] = []
    while pos < end:
        length = ext[pos]
        pos += 1
        if pos + length > end:
            raise MalformedError("ALPN protocol runs past the extension")
        out.append(ext[pos : pos + length].decode("ascii", "backslashreplace"))
        pos += length
    return tuple(out)


def looks_like_client_hello_record(payload: bytes | bytearray) -> bool:
    """The payload starts a TLS handshake record whose first message is a ClientHello."""
    return (
        len(payload) >= 6
        and payload[0] == HANDSHAKE
        and payload[1] == 3
        and payload[5] == CLIENT_HELLO
    )


def client_hello_from_records(stream: bytes | bytearray) -> ClientHello | None:
    """The ClientHello carried by the TLS records at the start of ``stream``; None while more
    bytes are needed. A ClientHello may span several records (RFC 8446 5.1)."""
    handshake = bytearray()
    pos = 0
    need: int | None = None
    while pos + 5 <= len(stream):
        if stream[pos] != HANDSHAKE or stream[pos + 1] != 3:
            raise MalformedError("not a TLS handshake record")
        length = (stream[pos + 3] << 8) | stream[pos + 4]
        if length == 0 or length > 16384 + 2048:
            raise MalformedError(f"TLS record length {length}")
        pos += 5
        handshake += stream[pos : pos + length]
        pos += length
        if need is None:
            need = client_hello_length(handshake)
        if need is not None:
            if need > MAX_HANDSHAKE:
                raise MalformedError("ClientHello larger than the reassembly cap")
            if len(handshake) >= need:
                return parse_client_hello(handshake)
    return None


# -------------------------------------------------------------------------------------- QUIC

QUIC_V1: Final = 0x00000001
QUIC_V2: Final = 0x6B3343CF
_SALTS: Final[dict[int, bytes]] = {
    QUIC_V1: bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a"),  # RFC 9001 5.2
    QUIC_V2: bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9"),  # RFC 9369 3.3.1
}
_LABELS: Final[dict[int, tuple[bytes, bytes, bytes]]] = {
    QUIC_V1: (b"quic key", b"quic iv", b"quic hp"),
    QUIC_V2: (b"quicv2 key", b"quicv2 iv", b"quicv2 hp"),  # RFC 9369 3.3.2
}
# The IETF drafts that shipped in clients (Chrome and Android's Cronet spoke draft 29 in
# 2020-21; Facebook's mvfst drafts 27-29): version 0xff0000NN for draft NN, v1's labels, and
# the initial salt of draft-ietf-quic-tls-23 section 5.2 (drafts 23-28) or of
# draft-ietf-quic-tls-29 section 5.2 (drafts 29-32).
QUIC_DRAFTS: Final = range(0xFF000017, 0xFF000021)
for _draft in QUIC_DRAFTS:
    _SALTS[_draft] = bytes.fromhex(
        "c3eef712c72ebb5a11a7d2432bb46365bef9f502"
        if _draft < 0xFF00001D
        else "afbfec289993d24c9e9786f19c6111e04390a899"
    )
    _LABELS[_draft] = _LABELS[QUIC_V1]
# Long-header packet type bits of an Initial: 0b00 in v1 and the drafts, 0b01 in v2
# (RFC 9369 3.2).
INITIAL_TYPE: Final[dict[int, int]] = {v: 1 if v == QUIC_V2 else 0 for v in _SALTS}
SUPPORTED_VERSIONS: Final = frozenset(_SALTS)
_FRAME_PADDING: Final = 0x00
_FRAME_PING: Final = 0x01
_FRAME_ACK: Final = 0x02
_FRAME_ACK_ECN: Final = 0x03
_FRAME_CRYPTO: Final = 0x06
_FRAME_CLOSE: Final = 0x1C


def read_varint(b: bytes | bytearray, pos: int) -> tuple[int, int]:
    """A QUIC variable-length integer (RFC 9000 16) and the offset after it."""
    if pos >= len(b):
        raise MalformedError("varint runs past the data")
    first = b[pos]
    size = 1 << (first >> 6)
    if pos + size > len(b):
        raise MalformedError("varint runs past the data")
    value = first & 0x3F
    for i in range(1, size):
        value = (value << 8) | b[pos + i]
    return value, pos + size


def encode_varint(value: int) -> bytes:
    if value < 0x40:
        return bytes([value])
    if value < 0x4000:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 0x40000000:
        return (value | 0x80000000).to_bytes(4, "big")
    return (value | 0xC000000000000000).to_bytes(8, "big")


def hkdf_expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + b"\x00"
    return HKDFExpand(algorithm=hashes.SHA256(), length=length, info=info).derive(secret)


@dataclass(frozen=True, slots=True)
class InitialKeys:
    """The packet protection keys of one direction of a QUIC connection's Initial space."""

    version: int
    secret: bytes
    key: bytes
    iv: bytes
    hp: bytes


def initial_keys(dcid: bytes, version: int, *, server: bool = False) -> InitialKeys:
    """RFC 9001 5.2 (v1) / RFC 9369 3.3 (v2): initial_secret = HKDF-Extract(salt, DCID), then
    the client's (or server's) secret, key, iv and header protection key."""
    salt = _SALTS.get(version)
    if salt is None:
        raise MalformedError(f"no initial salt for QUIC version 0x{version:08x}")
    h = hmac.HMAC(salt, hashes.SHA256())
    h.update(dcid)
    initial_secret = h.finalize()
    secret = hkdf_expand_label(initial_secret, b"server in" if server else b"client in", 32)
    key_label, iv_label, hp_label = _LABELS[version]
    return InitialKeys(
        version=version,
        secret=secret,
        key=hkdf_expand_label(secret, key_label, 16),
        iv=hkdf_expand_label(secret, iv_label, 12),
        hp=hkdf_expand_label(secret, hp_label, 16),
    )


class InitialProtection:
    """The ciphers for one set of :class:`InitialKeys`, made once and reused per packet."""

    __slots__ = ("_aead", "_hp", "keys")

    def __init__(self, keys: InitialKeys) -> None:
        self.keys = keys
        self._aead = AESGCM(keys.key)
        self._hp = Cipher(algorithms.AES(keys.hp), modes.ECB()).encryptor()  # noqa: S305

    def mask(self, sample: bytes) -> bytes:
        return self._hp.update(sample)

    def nonce(self, packet_number: int) -> bytes:
        pn = packet_number.to_bytes(12, "big")
        return bytes(a ^ b for a, b in zip(self.keys.iv, pn, strict=True))

    def open(self, packet_number: int, header: bytes, ciphertext: bytes) -> bytes:
        return self._aead.decrypt(self.nonce(packet_number), ciphertext, header)

    def seal(self, packet_number: int, header: bytes, plaintext: bytes) -> bytes:
        return self._aead.encrypt(self.nonce(packet_number), plaintext, header)


@lru_cache(maxsize=4096)
def initial_protection(dcid: bytes, version: int, server: bool = False) -> InitialProtection:
    return InitialProtection(initial_keys(dcid, version, server=server))


@dataclass(frozen=True, slots=True)
class LongHeader:
    """The cleartext part of a QUIC long header (RFC 9000 17.2)."""

    start: int  # offset of the first byte in the datagram
    first: int
    version: int
    dcid: bytes
    scid: bytes
    packet_type: int
    token: bytes
    pn_offset: int  # from the start of the datagram
    end: int  # first byte after this packet (coalesced packets follow)


def parse_long_header(datagram: bytes | bytearray, offset: int = 0) -> LongHeader:
    """The long header of the packet at ``offset``; Initial, 0-RTT and Handshake packets carry
    a length, so ``end`` says where a coalesced packet would start."""
    b = datagram
    if offset + 7 > len(b):
        raise MalformedError("short QUIC long header")
    first = b[offset]
    if first & 0x80 == 0:
        raise MalformedError("not a QUIC long header")
    version = int.from_bytes(b[offset + 1 : offset + 5], "big")
    pos = offset + 5
    dcid_len = b[pos]
    if dcid_len > 20:
        raise MalformedError("connection id longer than 20 bytes")
    dcid = bytes(b[pos + 1 : pos + 1 + dcid_len])
    pos += 1 + dcid_len
    if pos >= len(b):
        raise MalformedError("QUIC header ends in the connection ids")
    scid_len = b[pos]
    if scid_len > 20:
        raise MalformedError("connection id longer than 20 bytes")
    scid = bytes(b[pos + 1 : pos + 1 + scid_len])
    pos += 1 + scid_len
    if pos > len(b) or len(dcid) != dcid_len or len(scid) != scid_len:
        raise MalformedError("QUIC header ends in the connection ids")
    packet_type = (first >> 4) & 0x3
    token = b""
    if version in INITIAL_TYPE and packet_type == INITIAL_TYPE[version]:
        token_len, pos = read_varint(b, pos)
        token = bytes(b[pos : pos + token_len])
        pos += token_len
    length, pos = read_varint(b, pos)
    end = pos + length
    if end > len(b):
        raise MalformedError("QUIC packet length runs past the datagram")
    return LongHeader(offset, first, version, dcid, scid, packet_type, token, pos, end)


def is_initial(header: LongHeader) -> bool:
    return INITIAL_TYPE.get(header.version, -1) == header.packet_type


@dataclass(frozen=True, slots=True)
class QuicInitial:
    """A decrypted Initial packet."""

    header: LongHeader
    packet_number: int
    payload: bytes


def open_initial(
    datagram: bytes | bytearray, header: LongHeader, protection: InitialProtection
) -> QuicInitial:
    """Remove header protection and decrypt one Initial packet (RFC 9001 5.3, 5.4)."""
    pn_offset = header.pn_offset
    if pn_offset + 4 + 16 > header.end:
        raise MalformedError("Initial packet too short to sample")
    mask = protection.mask(bytes(datagram[pn_offset + 4 : pn_offset + 20]))
    first = header.first ^ (mask[0] & 0x0F)
    pn_len = (first & 0x03) + 1
    pn_bytes = bytes(
        x ^ m
        for x, m in zip(datagram[pn_offset : pn_offset + pn_len], mask[1 : 1 + pn_len], strict=True)
    )
    packet_number = int.from_bytes(pn_bytes, "big")
    clear_header = bytes([first]) + bytes(datagram[header.start + 1 : pn_offset]) + pn_bytes
    try:
        payload = protection.open(
            packet_number, clear_header, bytes(datagram[pn_offset + pn_len : header.end])
        )
    except InvalidTag:
        raise MalformedError("Initial packet does not decrypt with these keys") from None
    return QuicInitial(header, packet_number, payload)


def crypto_frames(payload: bytes) -> list[tuple[int, bytes]]:
    """The CRYPTO frames of a decrypted Initial payload, as (offset, data); PADDING, PING, ACK
    and CONNECTION_CLOSE are skipped, any other frame type ends the walk (not allowed in an
    Initial packet, RFC 9000 12.4)."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    n = len(payload)
    while pos < n:
        ftype = payload[pos]
        if ftype == _FRAME_PADDING:
            pos = n - len(payload[pos:].lstrip(b"\x00"))
            continue
        pos += 1
        if ftype == _FRAME_PING:
            continue
        if ftype in (_FRAME_ACK, _FRAME_ACK_ECN):
            _, pos = read_varint(payload, pos)  # largest acknowledged
            _, pos = read_varint(payload, pos)  # delay
            count, pos = read_varint(payload, pos)
            _, pos = read_varint(payload, pos)  # first range
            for _ in range(count):
                _, pos = read_varint(payload, pos)
                _, pos = read_varint(payload, pos)
            if ftype == _FRAME_ACK_ECN:
                for _ in range(3):
                    _, pos = read_varint(payload, pos)
            continue
        if ftype == _FRAME_CRYPTO:
            offset, pos = read_varint(payload, pos)
            length, pos = read_varint(payload, pos)
            if pos + length > n:
                raise MalformedError("CRYPTO frame runs past the packet")
            out.append((offset, payload[pos : pos + length]))
            pos += length
            continue
        if ftype == _FRAME_CLOSE:
            _, pos = read_varint(payload, pos)
            _, pos = read_varint(payload, pos)
            length, pos = read_varint(payload, pos)
            pos += length
            continue
        break
    return out


class CryptoStream:
    """The Initial CRYPTO stream of one QUIC connection, reassembled by offset."""

    __slots__ = ("_chunks", "_data")

    def __init__(self) -> None:
        self._data = bytearray()
        self._chunks: dict[int, bytes] = {}

    def add(self, offset: int, data: bytes) -> None:
        if offset + len(data) > MAX_HANDSHAKE:
            raise MalformedError("CRYPTO data beyond the reassembly cap")
        if offset <= len(self._data):
            self._extend(offset, data)
            self._drain()
        elif len(self._chunks) < 256:
            old = self._chunks.get(offset, b"")
            if len(data) > len(old):
                self._chunks[offset] = data

    def _extend(self, offset: int, data: bytes) -> None:
        have = len(self._data)
        if offset + len(data) > have:
            self._data += data[have - offset :]

    def _drain(self) -> None:
        progress = True
        while progress and self._chunks:
            progress = False
            for off in sorted(self._chunks):
                if off <= len(self._data):
                    self._extend(off, self._chunks.pop(off))
                    progress = True

    def client_hello(self) -> ClientHello | None:
        """The ClientHello once all of it has arrived."""
        need = client_hello_length(self._data)
        if need is None or len(self._data) < need:
            return None
        return parse_client_hello(self._data)


def seal_initial(
    dcid: bytes,
    scid: bytes,
    version: int,
    packet_number: int,
    frames: bytes,
    *,
    token: bytes = b"",
    pad_to: int = 1200,
    dcid_for_keys: bytes | None = None,
    pn_len: int = 4,
) -> bytes:
    """A protected client Initial packet (the inverse of :func:`open_initial`): PADDING frames
    bring the datagram to ``pad_to`` bytes. Keys come from ``dcid_for_keys`` (the DCID of the
    client's first Initial) or ``dcid``."""
    protection = initial_protection(dcid_for_keys or dcid, version)
    first = 0xC0 | (INITIAL_TYPE[version] << 4) | (pn_len - 1)
    head = (
        bytes([first])
        + version.to_bytes(4, "big")
        + bytes([len(dcid)])
        + dcid
        + bytes([len(scid)])
        + scid
        + encode_varint(len(token))
        + token
    )
    fixed = len(head) + 2 + pn_len + 16  # 2-byte length varint, tag
    payload = frames + b"\x00" * max(0, pad_to - fixed - len(frames))
    length = pn_len + len(payload) + 16
    if length >= 0x4000:
        raise ValueError("Initial too long for a 2-byte length")
    pn_bytes = (packet_number & ((1 << (8 * pn_len)) - 1)).to_bytes(pn_len, "big")
    header = head + (length | 0x4000).to_bytes(2, "big") + pn_bytes
    sealed = protection.seal(packet_number, header, payload)
    pn_offset = len(header) - pn_len
    sample = sealed[4 - pn_len : 20 - pn_len]
    mask = protection.mask(sample)
    protected = bytearray(header)
    protected[0] ^= mask[0] & 0x0F
    for i in range(pn_len):
        protected[pn_offset + i] ^= mask[1 + i]
    return bytes(protected) + sealed


def crypto_frame(offset: int, data: bytes) -> bytes:
    return b"\x06" + encode_varint(offset) + encode_varint(len(data)) + data


# ------------------------------------------------------------------------------------ HTTP/1

HTTP_METHODS: Final = (
    b"GET",
    b"POST",
    b"HEAD",
    b"PUT",
    b"DELETE",
    b"OPTIONS",
    b"CONNECT",
    b"PATCH",
    b"TRACE",
    # WebDAV (RFC 4918 9)
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"COPY",
    b"MOVE",
    b"LOCK",
    b"UNLOCK",
)
# A request head is read up to this many bytes (nginx's default for a whole head is 4 x 8 KiB,
# Apache's 100 fields of 8 KiB; tracking URLs run to several KiB) and this many segments.
HTTP_HEAD_CAP: Final = 32 * 1024
HTTP_HEAD_SEGMENTS: Final = 64
_MAX_HEAD: Final = HTTP_HEAD_CAP


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """An HTTP/1 request head: ``host`` is the ``Host`` header as sent (port included),
    ``authority`` the host the request goes to (Host, else the target of CONNECT or of an
    absolute-form request), lower-cased and without port."""

    method: str
    target: str
    version: str
    host: str | None
    authority: str | None


def parse_http_request(payload: bytes | bytearray) -> HttpRequest:
    """The request line and Host header of an HTTP/1 request that ``payload`` starts with."""
    head = bytes(payload[:_MAX_HEAD])
    line_end = head.find(b"\r\n")
    line = head if line_end < 0 else head[:line_end]
    parts = line.split(b" ")
    if len(parts) != 3 or parts[0] not in HTTP_METHODS or not parts[2].startswith(b"HTTP/1."):
        raise MalformedError("not an HTTP/1 request line")
    method, target, version = (p.decode("latin-1") for p in parts)
    host: str | None = None
    if line_end >= 0:
        block_end = head.find(b"\r\n\r\n", line_end)
        block = head[line_end + 2 : block_end if block_end >= 0 else len(head)]
        for raw in block.split(b"\r\n"):
            name, sep, value = raw.partition(b":")
            if sep and name.strip().lower() == b"host":
                host = value.strip().decode("latin-1")
                break
    return HttpRequest(method, target, version, host, _authority(method, target, host))


def _authority(method: str, target: str, host: str | None) -> str | None:
    raw = host
    if not raw:
        if method == "CONNECT":
            raw = target
        elif "://" in target:
            raw = target.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    if not raw:
        return None
    return strip_port(raw).lower()


def strip_port(hostport: str) -> str:
    """``example.org:8080`` → ``example.org``; ``[2001:db8::1]:443`` → ``2001:db8::1``."""
    if hostport.startswith("["):
        end = hostport.find("]")
        return hostport[1:end] if end > 0 else hostport
    if hostport.count(":") == 1:
        return hostport.split(":", 1)[0]
    return hostport


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
        )


def gather(buffer: bytes | bytearray, starts: np.ndarray, ends: np.ndarray) -> bytes:
    """``buffer[starts[i]:ends[i]]`` for each ``i``, joined (compiled when it is built)."""
    if _flowtab is not None:
        c = np.ascontiguousarray
        return bytes(_flowtab.gather(buffer, c(starts, dtype=np.int64), c(ends, dtype=np.int64)))
    mv = memoryview(buffer)
    return b"".join([mv[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)])


# DNS as a collector keeps it: packed records of the dtypes below, and the texts (names,
# addresses) they refer to by number, each distinct text kept once: a capture asks for the
# same names over and over, and a Python object per row and answer would be most of the
# memory of a DNS-heavy read. The compiled ``_dns.collect`` appends the same records.
# One row per question (the packet's time, flow, addresses and ports are the reading
# process's to add); ``qname`` is a text number.
DNS_ROW: Final = np.dtype(
    [
        ("packet", "<i8"),
        ("qtype", "<i4"),
        ("qname", "<i4"),
        ("id", "<u2"),
        ("rcode", "u1"),
        ("response", "u1"),
    ]
)
# One per resource record of the answer section, for each row of its message: the row's
# number (in the collector's order), the owner name, type, TTL, value and HTTPS/SVCB hints
# (text numbers; -1: none; the hints joined with ",")
DNS_ANSWER: Final = np.dtype(
    [
        ("row", "<i8"),
        ("ttl", "<i8"),
        ("name", "<i4"),
        ("rtype", "<i4"),
        ("value", "<i4"),
        ("hints", "<i4"),
    ]
)
# What answers taught: each address given (with the time and the name asked for it), and
# each (name, address) pair, the name being the question or a CNAME on the way to it
DNS_ANSWERED: Final = np.dtype([("ts", "<i8"), ("addr", "<i4"), ("asked", "<i4")])
DNS_PAIR: Final = np.dtype([("name", "<i4"), ("addr", "<i4")])
_ROW = struct.Struct("<qiiHBB")
_ANSWER = struct.Struct("<qqiiii")
_ANSWERED = struct.Struct("<qii")
_PAIR = struct.Struct("<ii")
assert _ROW.size == DNS_ROW.itemsize and _ANSWER.size == DNS_ANSWER.itemsize
assert _ANSWERED.size == DNS_ANSWERED.itemsize and _PAIR.size == DNS_PAIR.itemsize


class DnsStore:
    """DNS rows, answers and what they taught, as packed records (see :data:`DNS_ROW`),
    growing as messages are added; :meth:`tables` gives them as arrays."""

    __slots__ = ("_index", "answered", "answers", "ids", "pairs", "rows", "texts")

    def __init__(self) -> None:
        self._index: object = None  # what _dns.collect keeps to find the texts it made again
        self.ids: dict[str, int] = {}
        self.texts: list[str] = []
        self.rows = bytearray()
        self.answers = bytearray()
        self.answered = bytearray()
        self.pairs = bytearray()

    def text_id(self, text: str) -> int:
        i = self.ids.get(text)
        if i is None:
            i = self.ids[text] = len(self.texts)
            self.texts.append(text)
        return i

    def add(self, m: DnsMessage, packet: int, ts: int) -> None:
        """A parsed message: a row per question (one with no name and type -1 for an answer
        without questions, as mDNS announces), its answers under each, and, for a NOERROR
        response, what its addresses answer."""
        tid = self.text_id
        questions = m.questions
        if not questions and m.answers:
            questions = (("", -1),)
        first = len(self.rows) // _ROW.size
        for qname, qtype in questions:
            self.rows += _ROW.pack(packet, qtype, tid(qname), m.id, m.rcode, m.response)
        for row in range(first, first + len(questions)):
            for a in m.answers:  # the texts _dns.collect numbers, in the same order
                name = tid(a.name)
                value = -1 if a.value is None else tid(a.value)
                hints = tid(",".join(a.hints)) if a.hints else -1
                self.answers += _ANSWER.pack(row, a.ttl, name, a.rtype, value, hints)
        if m.response and m.rcode == 0 and m.answers:
            self._learn(m, ts)

    def _learn(self, m: DnsMessage, ts: int) -> None:
        """Each address of an answer under the names that lead to it (the question, CNAMEs)
        and with the name asked for it (the compiled ``_dns.collect`` does the same)."""
        tid = self.text_id
        cname = {
            r.name.lower(): (r.value or "").lower() for r in m.answers if r.rtype == TYPE_CNAME
        }
        chains: list[list[str]] = []
        for qname, _ in m.questions:
            chain = [qname.lower()]
            while chain[-1] in cname and len(chain) < 16:
                chain.append(cname[chain[-1]])
            chains.append(chain)
        for r in m.answers:
            if r.rtype in (TYPE_A, TYPE_AAAA) and r.value:
                addrs: tuple[str, ...] = (r.value,)
            elif r.hints:
                addrs = r.hints
            else:
                continue
            owner = r.name.lower()
            names = [owner]
            asked = owner
            for chain in chains:
                if owner in chain:
                    names = chain[: chain.index(owner) + 1]
                    asked = chain[0]
                    break
            for a in addrs:
                aid = tid(a)
                for name in names:
                    self.pairs += _PAIR.pack(tid(name), aid)
                self.answered += _ANSWERED.pack(ts, aid, tid(asked))

    def tables(self) -> DnsTables:
        """What was added, as arrays (copies: the store may go on growing)."""
        texts = np.empty(len(self.texts), dtype=object)
        texts[:] = self.texts
        return DnsTables(
            texts,
            np.frombuffer(bytes(self.rows), dtype=DNS_ROW),
            np.frombuffer(bytes(self.answers), dtype=DNS_ANSWER),
            np.frombuffer(bytes(self.answered), dtype=DNS_ANSWERED),
            np.frombuffer(bytes(self.pairs), dtype=DNS_PAIR),
        )


@dataclass(frozen=True)
class DnsTables:
    """A collector's DNS (see :data:`DNS_ROW`): ``texts`` (object array) and the records that
    refer to them by number. Pickled as a few buffers, whatever the number of rows."""

    texts: np.ndarray
    rows: np.ndarray
    answers: np.ndarray
    answered: np.ndarray
    pairs: np.ndarray
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @staticmethod
    def empty() -> DnsTables:
        return DnsStore().tables()

    def merge(self, other: DnsTables) -> DnsTables:
        """Both collectors' DNS, rows in packet order (a packet's rows all come from one
        collector, in their order), texts numbered again."""
        if not len(other.rows) and not len(other.answered):
            return self
        if not len(self.rows) and not len(self.answered):
            return other
        both = np.concatenate([self.texts, other.texts])
        codes, uniq = _factorize(both)
        mine, theirs = codes[: len(self.texts)], codes[len(self.texts) :]

        def renumber(a: np.ndarray, table: np.ndarray, fields: tuple[str, ...]) -> np.ndarray:
            a = a.copy()
            for f in fields:
                v = a[f]
                a[f] = np.where(v >= 0, table[np.maximum(v, 0)], -1) if len(table) else v
            return a

        rows = np.concatenate(
            [renumber(self.rows, mine, ("qname",)), renumber(other.rows, theirs, ("qname",))]
        )
        order = np.argsort(rows["packet"], kind="stable")
        position = np.empty(len(order), dtype=np.int64)
        position[order] = np.arange(len(order))
        a = renumber(self.answers, mine, ("name", "value", "hints"))
        b = renumber(other.answers, theirs, ("name", "value", "hints"))
        b["row"] += len(self.rows)
        answers = np.concatenate([a, b])
        answers["row"] = position[answers["row"]]
        answers = answers[np.argsort(answers["row"], kind="stable")]
        return DnsTables(
            uniq,
            rows[order],
            answers,
            np.concatenate(
                [
                    renumber(self.answered, mine, ("addr", "asked")),
                    renumber(other.answered, theirs, ("addr", "asked")),
                ]
            ),
            np.concatenate(
                [
                    renumber(self.pairs, mine, ("name", "addr")),
                    renumber(other.pairs, theirs, ("name", "addr")),
                ]
            ),
        )

    def name_addrs(self) -> dict[str, tuple[str, ...]]:
        """Each name answers gave addresses for (the question or a CNAME on the way), with
        those addresses: sorted, each once."""
        if not len(self.pairs):
            return {}
        key = (self.pairs["name"].astype(np.int64) << 32) | self.pairs["addr"].astype(np.int64)
        key.sort()
        key = key[np.concatenate([[True], key[1:] != key[:-1]])]
        name, addr = key >> 32, key & 0xFFFFFFFF
        rank = self.text_rank()
        order = np.lexsort((rank[addr], rank[name]))
        name, addr = name[order], addr[order]
        cut = np.flatnonzero(name[1:] != name[:-1]) + 1
        starts = np.concatenate([[0], cut]).tolist()
        ends = np.concatenate([cut, [len(name)]]).tolist()
        addrs = self.texts[addr].tolist()
        names = self.texts[name[starts]].tolist() if starts else []
        return {n: tuple(addrs[a:b]) for n, a, b in zip(names, starts, ends, strict=True)}

    def text_rank(self) -> np.ndarray:
        """The place of each text in the sorted texts (code point order, as Python sorts)."""
        rank = self._cache.get("rank")
        if rank is None:
            import pyarrow.compute as pc

            texts = self.arrow_texts()[: len(self.texts)]
            order = pc.array_sort_indices(texts).to_numpy()
            rank = self._cache["rank"] = np.empty(len(self.texts), dtype=np.int64)
            rank[order] = np.arange(len(self.texts))
        return rank

    def arrow_texts(self) -> Any:
        """The texts as one Arrow large_string array, with a null after the last."""
        table = self._cache.get("arrow")
        if table is None:
            import pyarrow as pa

            table = self._cache["arrow"] = pa.array(
                [*self.texts.tolist(), None], type=pa.large_string()
            )
        return table

    def python_rows(self) -> list[tuple[Any, ...]]:
        """Each row as (packet, id, response, rcode, qname, qtype, answers as DnsResource
        tuples): for tests and small captures."""
        t = self.texts.tolist()
        per_row: dict[int, list[DnsResource]] = {}
        for r in self.answers.tolist():
            row, ttl, name, rtype, value, hints = r
            per_row.setdefault(row, []).append(
                DnsResource(
                    t[name],
                    rtype,
                    ttl,
                    None if value < 0 else t[value],
                    tuple(t[hints].split(",")) if hints >= 0 else (),
                )
            )
        return [
            (p, i, bool(resp), rc, t[q], qt, tuple(per_row.get(k, ())))
            for k, (p, qt, q, i, rc, resp) in enumerate(self.rows.tolist())
        ]

    def python_answered(self) -> list[tuple[str, int, str]]:
        """(address, time, name asked) of each address answers gave, in order."""
        t = self.texts.tolist()
        return [(t[a], ts, t[q]) for ts, a, q in self.answered.tolist()]


def _factorize(texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes into the distinct texts (in first-seen order) and those texts: pandas' hash
    table in C (imported here: a worker process that only parses names never merges)."""
    import pandas as pd

    codes, uniq = pd.factorize(texts)
    out = np.empty(len(uniq), dtype=object)
    out[:] = uniq
    return codes.astype(np.int64), out


@dataclass(frozen=True)
class NameResult:
    """What a :class:`NameCollector` learnt, as arrays (they cross from the worker process
    pickled, and are read by numpy): names per kind (:data:`NameColumn`: the flows with a
    name of that kind, their values in the order seen joined with ``;``, and the first of
    them), which side of a flow is the client (from payloads: flows, the order of the
    packet that told, the side), and the DNS: one row per question, its answers, and the
    addresses answers gave to names (:class:`DnsTables`)."""

    names: dict[str, NameColumn]
    hints: tuple[np.ndarray, np.ndarray, np.ndarray]  # flow, packet order, client side
    dns: DnsTables
    warnings: dict[str, int]
    counts: dict[str, int]
    certs: dict[int, CertificateInfo] = field(default_factory=dict)  # the leaf, per flow


NameColumn = tuple[np.ndarray, np.ndarray, np.ndarray]  # flows, joined values, first values


def name_columns(names: dict[int, dict[str, list[str]]]) -> dict[str, NameColumn]:
    """A collector's names (flow → kind → values) as one :data:`NameColumn` per kind."""
    per: dict[str, tuple[list[int], list[str], list[str]]] = {}
    for f, kinds in names.items():
        for kind, values in kinds.items():
            if values:
                got = per.get(kind)
                if got is None:
                    got = per[kind] = ([], [], [])
                got[0].append(f)
                got[1].append(";".join(values))
                got[2].append(values[0])
    return {k: (np.asarray(f, np.int64), _objects(j), _objects(v)) for k, (f, j, v) in per.items()}


def hint_arrays(hints: dict[int, tuple[int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(hints)
    return (
        np.fromiter(hints.keys(), np.int64, n),
        np.fromiter((h[0] for h in hints.values()), np.int64, n),
        np.fromiter((h[1] for h in hints.values()), np.int64, n),
    )


def _objects(values: list[str]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


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
        self.names: dict[int, dict[str, list[str]]] = {}
        self.hints: dict[int, tuple[int, int]] = {}
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
            hints = self.hints
            for f, o, d in zip(
                flows.tolist(), job.order[at].tolist(), job.direction[at].tolist(), strict=True
            ):
                known = hints.get(f)
                if known is None or known[0] > o:
                    hints[f] = (o, d)

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
        dns, self.dns = self.dns.tables(), DnsStore()
        names, hints = name_columns(self.names), hint_arrays(self.hints)
        self.names, self.hints = {}, {}
        return NameResult(names, hints, dns, self.warnings, self.counts, self.certs)

    def _hint(self, f: int, d: int) -> None:
        if f not in self.hints:
            self.hints[f] = (self._order, d)

    def _add(self, f: int, kind: str, value: str) -> None:
        values = self.names.setdefault(f, {}).setdefault(kind, [])
        if value not in values:
            values.append(value)

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


def merge_results(*results: NameResult) -> NameResult:
    """One result from collectors that saw disjoint sets of packets, each flow's names
    from one of them (DNS rows in packet order; a flow's client side from the earliest
    packet; the UDP DNS of a job may be parsed by either collector, as it keeps no state)."""
    warnings: dict[str, int] = {}
    counts: dict[str, int] = {}
    certs: dict[int, CertificateInfo] = {}
    dns = DnsTables.empty()
    for r in results:
        certs.update(r.certs)
        for src, dst in ((r.warnings, warnings), (r.counts, counts)):
            for k, v in src.items():
                dst[k] = dst.get(k, 0) + v
        dns = dns.merge(r.dns)
    # a flow's names of one kind from the last result that has them (as dict.update did)
    names: dict[str, NameColumn] = {}
    for kind in dict.fromkeys(k for r in results for k in r.names):
        parts = [r.names[kind] for r in results if kind in r.names]
        flows, joined, first = (np.concatenate([p[i] for p in parts]) for i in range(3))
        _, last = np.unique(flows[::-1], return_index=True)
        keep = np.sort(len(flows) - 1 - last)
        names[kind] = (flows[keep], joined[keep], first[keep])
    # a flow's client side from the earliest packet that told (the least (order, side))
    hf, ho, hs = (np.concatenate([r.hints[i] for r in results]) for i in range(3))
    order = np.lexsort((hs, ho, hf))
    hf, ho, hs = hf[order], ho[order], hs[order]
    first_of = np.ones(len(hf), dtype=bool)
    first_of[1:] = hf[1:] != hf[:-1]
    hints = (hf[first_of], ho[first_of], hs[first_of])
    return NameResult(names, hints, dns, warnings, counts, certs)


def read_frame(stream: IO[bytes]) -> bytes | None:
    head = stream.read(8)
    if len(head) < 8:
        return None
    size = int.from_bytes(head, "big")
    data = stream.read(size)
    if len(data) < size:
        return None
    return bytes(data)


def write_frame(stream: IO[bytes], data: bytes) -> None:
    stream.write(len(data).to_bytes(8, "big"))
    stream.write(data)
    stream.flush()


def serve(jobs: IO[bytes], results: IO[bytes]) -> int:
    """The worker process: pickled NameJobs in length-prefixed frames on ``jobs`` until an
    empty frame. After each job an ("done", None) frame tells the reading process the job is
    done; at the end one frame with ("ok", NameResult) or ("error", text). The peer is the
    reading process that started this one, over its own pipes, and reads ``results`` while
    it writes ``jobs``."""
    gc.disable()  # only long-lived, acyclic objects here (see flows._gc_paused)
    collector = NameCollector()
    done = pickle.dumps(("done", None), pickle.HIGHEST_PROTOCOL)
    try:
        while True:
            frame = read_frame(jobs)
            if not frame:
                break
            collector.feed(pickle.loads(frame))  # noqa: S301 - from the parent process
            write_frame(results, done)
        reply: tuple[str, object] = ("ok", collector.result())
    except Exception as exc:  # noqa: BLE001 - reported to the reading process
        reply = ("error", f"{type(exc).__name__}: {exc}")
    write_frame(results, pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
    return 0 if reply[0] == "ok" else 1
