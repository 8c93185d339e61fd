"""QUIC Initial packets (RFC 9000, RFC 9001, RFC 9369): initial secrets derived from the
client's Destination Connection ID with the version's salt, header protection removed
(AES-128-ECB), payload decrypted (AES-128-GCM), CRYPTO frames collected; :class:`CryptoStream`
puts a ClientHello split over several frames and packets back together by offset."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from auditor.packets.tls import MAX_HANDSHAKE, ClientHello, client_hello_length, parse_client_hello
from auditor.packets.wire import MalformedError

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
