"""Google QUIC (gQUIC) client hellos: where an older Chrome or Cronet connection goes.

IETF QUIC Initials are read by :mod:`auditor.packets.quic`; this module reads the Google
versions that Android YouTube and older Chrome builds still speak, from one client-to-server
UDP payload:

- **Q0xx up to Q043**: the Google public header (flags, 8-byte connection id, version,
  packet number), a null-encrypted payload (12-byte FNV-1a-128 hash, then frames) and the
  QUIC-crypto CHLO in a STREAM frame on stream 1.
- **Q044-Q046**: the same payload behind the IETF-like long header whose connection id
  lengths share one byte.
- **Q050**: the IETF long header with length fields; the Initial is protected with keys
  derived from the Q050 salt as in RFC 9001 (header protection, AES-128-GCM) and the CHLO
  comes in CRYPTO frames, still in Google frame encoding.
- **T050, T051**: as Q050 with their own salts, but the CRYPTO frames carry a TLS 1.3
  ClientHello, read with :func:`auditor.packets.tls.parse_client_hello`; the Google user
  agent and the QUIC-crypto parameters come from its transport parameters.

Wire formats and constants follow Google's QUICHE (github.com/google/quiche, commit
27f2181381910d6f7942679f0dc96bf9de70bbe4^: quic/core/quic_framer.cc,
quic/core/crypto/crypto_framer.cc, crypto_utils.cc, null_decrypter.cc, quic_utils.cc).

:func:`parse_gquic` never raises on hostile bytes: it returns None for a datagram that is
not a gQUIC client hello, and a :class:`GquicHello` whose ``problem`` says what was wrong
when the hello is there but cannot be read in full.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from cryptography.hazmat.primitives import hashes, hmac

from auditor.packets.quic import (
    InitialKeys,
    InitialProtection,
    LongHeader,
    hkdf_expand_label,
    open_initial,
    read_varint,
)
from auditor.packets.tls import MAX_HANDSHAKE, client_hello_length, parse_client_hello
from auditor.packets.wire import MalformedError

log = logging.getLogger(__name__)

# Initial salts of the Google versions with initial obfuscators: QUICHE
# quic/core/crypto/crypto_utils.cc (kQ050Salt, kT050Salt, kT051Salt), last present at commit
# 27f2181381910d6f7942679f0dc96bf9de70bbe4^ (T050 removed there; Q050 in 6767ab5a^).
_SALTS: Final[dict[bytes, bytes]] = {
    b"Q050": bytes.fromhex("504574efd066fe2f9d945cfcdbd3a7f0d3b56b45"),
    b"T050": bytes.fromhex("7ff579e5acd072915580304c43a2367c60488310"),
    b"T051": bytes.fromhex("7a4edef4e7ccee5fa4506c19124fc8ccda6e033d"),
}
_TLS_VERSIONS: Final = frozenset({b"T050", b"T051"})
_LONG_HEADER_Q: Final = frozenset({b"Q044", b"Q045", b"Q046"})
MAX_TAGS: Final = 128  # QUICHE crypto_protocol.h kMaxEntries
_MAX_COALESCED: Final = 4
_HASH_LEN: Final = 12
_CRYPTO_STREAM: Final = 1

# FNV-1a 128 (QUICHE quic_utils.cc FNV1a_128_Hash_Three).
_FNV_OFFSET: Final = 144066263297769815596495629667062367629
_FNV_PRIME: Final = 309485009821345068724781371
_MASK128: Final = (1 << 128) - 1
_MASK96: Final = (1 << 96) - 1

# Google frame types (QUICHE quic_types.h); STREAM is 1FDOOOSS, ACK is 01M0LLOO.
_PADDING: Final = 0x00
_STOP_WAITING: Final = 0x06
_PING: Final = 0x07
_CRYPTO: Final = 0x08
_PN_LENGTHS: Final = (1, 2, 4, 6)  # 2-bit packet number length codes

# TLS extensions and QUIC transport parameters read from a T05x ClientHello.
_EXT_QUIC_PARAMS: Final = frozenset({0x39, 0xFFA5})
_TP_GOOGLE_USER_AGENT: Final = 0x3129
_TP_GOOGLE_QUIC_PARAMS: Final = 0x4751
_TP_GOOGLE_QUIC_VERSION: Final = 0x4752

_TAG_SNI: Final = b"SNI\x00"
_TAG_UAID: Final = b"UAID"
_TAG_VER: Final = b"VER\x00"
_TAG_AEAD: Final = b"AEAD"
_TAG_KEXS: Final = b"KEXS"
_WANTED: Final = frozenset({_TAG_SNI, _TAG_UAID, _TAG_VER, _TAG_AEAD, _TAG_KEXS})
_U16LE = struct.Struct("<HH")
_ENTRY = struct.Struct("<4sI")


@dataclass(frozen=True, slots=True)
class GquicHello:
    """What a gQUIC client hello says about where it goes and who sends it.

    ``version`` is the header's version label (``"Q043"``, ``"T051"``); None for a Q0xx
    packet sent after the version was agreed, whose header no longer carries it (``ver``,
    from the CHLO, then tells it). ``complete`` is False when the hello continues in a later
    datagram: the tags read so far are given. ``checksum_ok`` says whether the null
    encryption's FNV-1a hash matched (always True for Q050/T05x, whose AEAD tag did).
    ``uaid`` is the QUIC-crypto UAID tag; ``user_agent`` the TLS google_user_agent transport
    parameter of T05x.
    """

    version: str | None
    connection_id: bytes
    tls: bool
    complete: bool
    sni: str | None = None
    uaid: str | None = None
    user_agent: str | None = None
    ver: str | None = None
    aead: tuple[str, ...] = ()
    kexs: tuple[str, ...] = ()
    alpn: tuple[str, ...] = ()
    checksum_ok: bool = True
    problem: str | None = None


def looks_like_gquic(payload: bytes | bytearray) -> bool:
    """A cheap first-bytes test: could this client datagram be a gQUIC handshake packet?

    Q0xx public header: bits 0x80 and 0x40 clear (an IETF short header sets 0x40), the
    8-byte connection id flag 0x08 set, the reset flag 0x02 clear. Long header: bit 0x80 set
    and a version label of Q044-Q046, Q050, T050 or T051.
    """
    if len(payload) < 14:
        return False
    first = payload[0]
    if first & 0x80:
        label = bytes(payload[1:5])
        return label in _LONG_HEADER_Q or label in _SALTS
    return first & 0xCA == 0x08


def parse_gquic(payload: bytes | bytearray) -> GquicHello | None:
    """The client hello in one client-to-server UDP payload, or None when there is none."""
    try:
        if not looks_like_gquic(payload):
            return None
        b = bytes(payload)
        if b[0] & 0x80:
            label = b[1:5]
            if label in _LONG_HEADER_Q:
                return _parse_q046(b)
            return _parse_protected(b)
        return _parse_public(b)
    except (MalformedError, IndexError, ValueError, struct.error) as exc:  # pragma: no cover
        log.debug("gQUIC datagram not read: %s", exc)  # every path checks; this is a net
        return None


# ------------------------------------------------------------------------ null encryption


def _fnv1a_128(data: bytes) -> int:
    h = _FNV_OFFSET
    for octet in data:
        h = ((h ^ octet) * _FNV_PRIME) & _MASK128
    return h


def _null_hash_ok(associated: bytes, stored: bytes, plaintext: bytes) -> bool:
    """QUICHE null_decrypter.cc: the low 96 bits of FNV-1a-128 over header, plaintext and,
    in the later versions, the sender's perspective ("Client"), stored little-endian. Pure
    Python, about 0.7 ms for a 1,350-byte hello: only hellos get here."""
    want = int.from_bytes(stored, "little")
    base = _fnv1a_128(associated + plaintext)
    if base & _MASK96 == want:
        return True
    h = base
    for octet in b"Client":
        h = ((h ^ octet) * _FNV_PRIME) & _MASK128
    return h & _MASK96 == want


# ---------------------------------------------------------------------------------- Q0xx


def _version_number(label: bytes) -> int | None:
    if len(label) == 4 and label[:1] in (b"Q", b"T") and label[1:].isdigit():
        return int(label[1:])
    return None


def _parse_public(b: bytes) -> GquicHello | None:
    """The Google public header (QUICHE ProcessPublicHeader) of Q043 and earlier."""
    flags = b[0]
    cid = b[1:9]
    pos = 9
    label: bytes | None = None
    # Without a version in the header, try the three encodings: network byte order (Q039
    # on), little-endian (Q034-Q038), little-endian with a private flags byte (before Q034).
    numbers = [43, 35, 33]
    if flags & 0x01:
        label = b[9:13]
        pos = 13
        number = _version_number(label)
        if number is None or label[:1] != b"Q" or number > 43:
            return None
        numbers = [number]
    pn_len = _PN_LENGTHS[(flags >> 4) & 0x03]
    pos += pn_len
    if pos + _HASH_LEN > len(b):
        return None
    if label is None and b"CHLO" not in b[pos : pos + 256]:
        return None  # later packets of the connection: encrypted, no hello to find
    best: _Message | None = None
    for number in numbers:
        body = pos + _HASH_LEN
        if number < 34:
            body += 1  # private flags byte (entropy), removed in Q034
        endian = "big" if number >= 39 else "little"
        chunks = _frames(b, body, endian=endian, pn_len=pn_len, ietf=False, old=number < 34)
        hello = _quic_crypto_hello(chunks)
        if hello is not None and (best is None or _rank(hello) > _rank(best)):
            best = hello
    if best is None:
        return None
    ok = _null_hash_ok(b[:pos], b[pos : pos + _HASH_LEN], b[pos + _HASH_LEN :])
    return _hello(label, cid, best, checksum_ok=ok)


def _rank(msg: _Message) -> tuple[bool, int]:
    return (msg.complete, len(msg.tags))


def _parse_q046(b: bytes) -> GquicHello | None:
    """The Q044-Q046 long header: one byte of connection id lengths (each +3 when not 0)."""
    first = b[0]
    if first & 0x40 == 0 or (first >> 4) & 0x03 == 3:
        return None  # fixed bit clear, or a Retry
    lengths = b[5]
    dcil = (lengths >> 4) + 3 if lengths >> 4 else 0
    scil = (lengths & 0x0F) + 3 if lengths & 0x0F else 0
    pos = 6
    dcid = b[pos : pos + dcil]
    pos += dcil + scil
    pos += (first & 0x03) + 1
    if pos + _HASH_LEN > len(b):
        return None
    chunks = _frames(b, pos + _HASH_LEN, endian="big", pn_len=0, ietf=True, old=False)
    hello = _quic_crypto_hello(chunks)
    if hello is None:
        return None
    ok = _null_hash_ok(b[:pos], b[pos : pos + _HASH_LEN], b[pos + _HASH_LEN :])
    return _hello(b[1:5], dcid, hello, checksum_ok=ok)


# -------------------------------------------------------------------------- Q050, T05x


@lru_cache(maxsize=1024)
def _protection(dcid: bytes, label: bytes) -> InitialProtection:
    """QUICHE CryptoUtils::CreateInitialObfuscators: the RFC 9001 derivation with the
    version's own salt and the v1 labels."""
    h = hmac.HMAC(_SALTS[label], hashes.SHA256())
    h.update(dcid)
    secret = hkdf_expand_label(h.finalize(), b"client in", 32)
    keys = InitialKeys(
        version=int.from_bytes(label, "big"),
        secret=secret,
        key=hkdf_expand_label(secret, b"quic key", 16),
        iv=hkdf_expand_label(secret, b"quic iv", 12),
        hp=hkdf_expand_label(secret, b"quic hp", 16),
    )
    return InitialProtection(keys)


def _long_header(b: bytes, start: int) -> LongHeader | None:
    """An IETF-form long header (QUICHE ParsePublicHeader): unlike names.parse_long_header,
    the Initial's token is read for the Google versions too."""
    if start + 7 > len(b):
        return None
    first = b[start]
    if first & 0xC0 != 0xC0:
        return None
    version = b[start + 1 : start + 5]
    pos = start + 5
    dcid_len = b[pos]
    if dcid_len > 20 or pos + 1 + dcid_len >= len(b):
        return None
    dcid = b[pos + 1 : pos + 1 + dcid_len]
    pos += 1 + dcid_len
    scid_len = b[pos]
    if scid_len > 20 or pos + 1 + scid_len > len(b):
        return None
    scid = b[pos + 1 : pos + 1 + scid_len]
    pos += 1 + scid_len
    packet_type = (first >> 4) & 0x03
    token = b""
    try:
        if packet_type == 0:
            token_len, pos = read_varint(b, pos)
            if pos + token_len > len(b):
                return None
            token = b[pos : pos + token_len]
            pos += token_len
        length, pos = read_varint(b, pos)
    except MalformedError:
        return None
    end = pos + length
    if end > len(b):
        return None
    return LongHeader(
        start, first, int.from_bytes(version, "big"), dcid, scid, packet_type, token, pos, end
    )


def _parse_protected(b: bytes) -> GquicHello | None:
    """Q050/T05x: every coalesced Initial of the datagram decrypted, their CRYPTO frames
    joined by offset."""
    label = b[1:5]
    first_header = _long_header(b, 0)
    if first_header is None:
        return None
    chunks: list[tuple[int, bytes]] = []
    start = 0
    for _ in range(_MAX_COALESCED):
        header = first_header if start == 0 else _long_header(b, start)
        if header is None or b[start + 1 : start + 5] != label:
            break
        if header.packet_type == 0:
            try:
                packet = open_initial(b, header, _protection(first_header.dcid, label))
            except MalformedError:
                break
            chunks += _frames(packet.payload, 0, endian="big", pn_len=0, ietf=True, old=False)
        start = header.end
        if start >= len(b):
            break
    if not chunks:
        return None
    if label in _TLS_VERSIONS:
        return _tls_hello(label, first_header.dcid, chunks)
    hello = _quic_crypto_hello(chunks)
    return None if hello is None else _hello(label, first_header.dcid, hello)


# ------------------------------------------------------------------------------ frames


def _frames(
    b: bytes, pos: int, *, endian: str, pn_len: int, ietf: bool, old: bool
) -> list[tuple[int, bytes]]:
    """(offset, data) of the crypto stream's STREAM frames (stream 1) and of CRYPTO frames,
    in Google frame encoding (QUICHE ProcessFrameData); the walk ends at the first frame it
    cannot read. Every step consumes at least one byte, so the walk ends."""
    out: list[tuple[int, bytes]] = []
    n = len(b)
    big = endian == "big"
    special = 0xC0 if ietf else 0xE0
    while pos < n:
        ftype = b[pos]
        pos += 1
        if ftype & special:
            if ftype & 0x80:  # STREAM 1FDOOOSS
                sid_len = (ftype & 0x03) + 1
                off_len = (ftype >> 2) & 0x07
                off_len = off_len + 1 if off_len else 0
                has_len = ftype & 0x20
                if pos + sid_len + off_len + (2 if has_len else 0) > n:
                    break
                sid = _uint(b[pos : pos + sid_len], big)
                pos += sid_len
                offset = _uint(b[pos : pos + off_len], big)
                pos += off_len
                if has_len:
                    length = _uint(b[pos : pos + 2], big)
                    pos += 2
                else:
                    length = n - pos
                data = b[pos : pos + length]  # may be short in a cut capture
                pos += length
                if sid == _CRYPTO_STREAM:
                    out.append((offset, data))
                continue
            if ftype & 0x40:  # ACK
                pos = _skip_old_ack(b, pos, ftype) if old else _skip_ack(b, pos, ftype)
                if pos < 0:
                    break
                continue
            break
        if ftype == _PADDING:
            while pos < n and b[pos] == 0:
                pos += 1
            continue
        if ftype == _PING:
            continue
        if ftype == _STOP_WAITING and pn_len:
            pos += pn_len + (1 if old else 0)  # before Q034 an entropy byte first
            continue
        if ftype == _CRYPTO and ietf:
            try:
                offset, pos = read_varint(b, pos)
                length, pos = read_varint(b, pos)
            except MalformedError:
                break
            out.append((offset, b[pos : pos + length]))
            pos += length
            continue
        break
    return out


def _uint(raw: bytes, big: bool) -> int:
    return int.from_bytes(raw, "big" if big else "little")


def _skip_old_ack(b: bytes, pos: int, ftype: int) -> int:
    """The offset after an ACK frame of the versions before Q034 (01NTLLMM: entropy, largest
    observed, delta time, timestamps), or -1; one with NACK ranges is not walked."""
    if ftype & 0x20:
        return -1
    pos += 1 + _PN_LENGTHS[(ftype >> 2) & 0x03] + 2
    if pos >= len(b):
        return -1
    stamps = b[pos]
    pos += 1
    if stamps:
        pos += 1 + 4 + (stamps - 1) * 3
    return pos if pos <= len(b) else -1


def _skip_ack(b: bytes, pos: int, ftype: int) -> int:
    """The offset after a Google ACK frame (QUICHE ProcessAckFrame), or -1."""
    block_len = _PN_LENGTHS[ftype & 0x03]
    largest_len = _PN_LENGTHS[(ftype >> 2) & 0x03]
    pos += largest_len + 2  # largest acked, ack delay (ufloat16)
    if ftype & 0x20:
        if pos >= len(b):
            return -1
        blocks = b[pos]
        pos += 1
    else:
        blocks = 0
    pos += block_len + blocks * (1 + block_len)
    if pos >= len(b):
        return -1
    stamps = b[pos]
    pos += 1
    if stamps:
        pos += 1 + 4 + (stamps - 1) * 3
    return pos if pos <= len(b) else -1


def _contiguous(chunks: list[tuple[int, bytes]], start: int) -> bytes:
    """The bytes from ``start`` on, as far as the chunks reach without a gap."""
    data = bytearray()
    end = start
    for offset, chunk in sorted(chunks, key=lambda c: c[0]):
        if offset > end:
            break
        if offset + len(chunk) > end:
            data += chunk[end - offset :]
            end = offset + len(chunk)
        if end - start > MAX_HANDSHAKE:
            break
    return bytes(data[:MAX_HANDSHAKE])


# --------------------------------------------------------------------------- QUIC crypto


@dataclass(frozen=True, slots=True)
class _Message:
    tags: dict[bytes, bytes]
    complete: bool
    problem: str | None


def _quic_crypto_hello(chunks: list[tuple[int, bytes]]) -> _Message | None:
    """The CHLO that starts one of the chunks (the first at offset 0, a later one after a
    REJ further on), joined with what follows it."""
    for offset, chunk in sorted(chunks, key=lambda c: c[0]):
        if chunk[:4] == b"CHLO":
            return _read_message(_contiguous(chunks, offset))
    return None


def _read_message(data: bytes) -> _Message:
    """A QUIC-crypto handshake message (QUICHE CryptoFramer::Process): tag, entry count,
    two bytes of padding, (tag, end offset) pairs, then the values; integers little-endian.
    Only the tags of interest are kept; a message cut short keeps the values read so far."""
    if len(data) < 8:
        return _Message({}, False, None)
    count = _U16LE.unpack_from(data, 4)[0]
    if count > MAX_TAGS:
        return _Message({}, False, f"{count} tags in the message (more than {MAX_TAGS})")
    values = 8 + 8 * count
    if values > len(data):
        return _Message({}, False, None)
    tags: dict[bytes, bytes] = {}
    last = 0
    for i in range(count):
        tag, end = _ENTRY.unpack_from(data, 8 + 8 * i)
        if end < last:
            return _Message(tags, False, "tag end offsets go backwards")
        if values + end > len(data):
            return _Message(tags, False, None)
        if tag in _WANTED and tag not in tags:
            tags[tag] = data[values + last : values + end]
        last = end
    return _Message(tags, True, None)


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "backslashreplace")


def _tag_list(raw: bytes | None) -> tuple[str, ...]:
    if not raw:
        return ()
    return tuple(
        raw[i : i + 4].rstrip(b"\x00").decode("ascii", "backslashreplace")
        for i in range(0, len(raw) - len(raw) % 4, 4)
    )


def _hello(
    label: bytes | None, cid: bytes, msg: _Message, *, checksum_ok: bool = True
) -> GquicHello:
    ver = msg.tags.get(_TAG_VER)
    return GquicHello(
        version=_text(label),
        connection_id=cid,
        tls=False,
        complete=msg.complete,
        sni=_text(msg.tags.get(_TAG_SNI)),
        uaid=_text(msg.tags.get(_TAG_UAID)),
        ver=_text(ver[:4]) if ver else None,
        aead=_tag_list(msg.tags.get(_TAG_AEAD)),
        kexs=_tag_list(msg.tags.get(_TAG_KEXS)),
        checksum_ok=checksum_ok,
        problem=msg.problem,
    )


# ------------------------------------------------------------------------------ T05x TLS


def _tls_hello(label: bytes, dcid: bytes, chunks: list[tuple[int, bytes]]) -> GquicHello | None:
    data = _contiguous(chunks, 0)
    if not data or data[0] != 1:
        return None
    version = _text(label)
    try:
        need = client_hello_length(data)
        if need is None or need > len(data):
            return GquicHello(version, dcid, tls=True, complete=False)
        hello = parse_client_hello(data)
        params = _transport_parameters(data[:need], wide=label != b"T050")
    except MalformedError as exc:
        return GquicHello(version, dcid, tls=True, complete=False, problem=str(exc))
    tags = (
        _read_message(params[_TP_GOOGLE_QUIC_PARAMS]).tags
        if _TP_GOOGLE_QUIC_PARAMS in params
        else {}
    )
    quic_version = params.get(_TP_GOOGLE_QUIC_VERSION, b"")
    return GquicHello(
        version=version,
        connection_id=dcid,
        tls=True,
        complete=True,
        sni=hello.sni,
        uaid=_text(tags.get(_TAG_UAID)),
        user_agent=_text(params.get(_TP_GOOGLE_USER_AGENT)),
        ver=_text(quic_version[:4]) if len(quic_version) >= 4 else None,
        alpn=hello.alpn,
    )


def _transport_parameters(hello: bytes, *, wide: bool) -> dict[int, bytes]:
    """The Google transport parameters of a complete ClientHello: T050 writes them with
    16-bit ids and lengths behind a 16-bit total (draft-26 form), T051 with varints
    (QUICHE ParsedQuicVersion::HasVarIntTransportParams)."""
    ext = _extension(hello)
    if ext is None:
        return {}
    out: dict[int, bytes] = {}
    pos = 0
    end = len(ext)
    if not wide:
        if end < 2:
            return {}
        end = min(end, 2 + ((ext[0] << 8) | ext[1]))
        pos = 2
    while pos < end:
        if wide:
            pid, pos = read_varint(ext, pos)
            length, pos = read_varint(ext, pos)
        else:
            if pos + 4 > end:
                break
            pid = (ext[pos] << 8) | ext[pos + 1]
            length = (ext[pos + 2] << 8) | ext[pos + 3]
            pos += 4
        if pos + length > end:
            raise MalformedError("transport parameter runs past the extension")
        if pid in (_TP_GOOGLE_USER_AGENT, _TP_GOOGLE_QUIC_PARAMS, _TP_GOOGLE_QUIC_VERSION):
            out.setdefault(pid, ext[pos : pos + length])
        pos += length
    return out


def _extension(hello: bytes) -> bytes | None:
    """The quic_transport_parameters extension of a complete ClientHello (whose lengths
    names.parse_client_hello has already checked)."""
    pos = 4 + 2 + 32
    pos += 1 + hello[pos]
    pos += 2 + ((hello[pos] << 8) | hello[pos + 1])
    pos += 1 + hello[pos]
    if pos + 2 > len(hello):
        return None
    end = min(len(hello), pos + 2 + ((hello[pos] << 8) | hello[pos + 1]))
    pos += 2
    while pos + 4 <= end:
        etype = (hello[pos] << 8) | hello[pos + 1]
        elen = (hello[pos + 2] << 8) | hello[pos + 3]
        pos += 4
        if etype in _EXT_QUIC_PARAMS:
            return hello[pos : min(pos + elen, end)]
        pos += elen
    return None
