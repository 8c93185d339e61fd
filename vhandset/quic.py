"""The first datagram of a QUIC v1 connection, as the virtual handset's apps send it: a client
Initial packet carrying a TLS 1.3 ClientHello, protected with the Initial keys (RFC 9001
section 5) and padded to 1200 bytes (RFC 9000 section 14.1).

Written here from the RFCs, not taken from auditor's packet reader: the double must not
borrow the code it exercises. RFC 9001 appendix A gives the keys for a known DCID, which the
tests check this module against.
"""

from __future__ import annotations

import os
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hmac import HMAC

QUIC_V1 = 0x00000001
INITIAL_SALT_V1 = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")  # RFC 9001 5.2
MIN_INITIAL = 1200


def _hmac(key: bytes, data: bytes) -> bytes:
    h = HMAC(key, hashes.SHA256())
    h.update(data)
    return h.finalize()


def _expand_label(secret: bytes, label: str, length: int) -> bytes:
    """HKDF-Expand-Label of TLS 1.3 (RFC 8446 7.1) with an empty context."""
    full = b"tls13 " + label.encode()
    info = struct.pack("!HB", length, len(full)) + full + b"\x00"
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = _hmac(secret, block + info + bytes([i]))
        out += block
        i += 1
    return out[:length]


def client_initial_keys(dcid: bytes) -> tuple[bytes, bytes, bytes]:
    """(key, iv, hp) of the client's Initial packets for the DCID it chose."""
    initial = _hmac(INITIAL_SALT_V1, dcid)
    client = _expand_label(initial, "client in", 32)
    return (
        _expand_label(client, "quic key", 16),
        _expand_label(client, "quic iv", 12),
        _expand_label(client, "quic hp", 16),
    )


def _varint(n: int) -> bytes:
    if n < 0x40:
        return bytes([n])
    if n < 0x4000:
        return struct.pack("!H", n | 0x4000)
    return struct.pack("!I", n | 0x80000000)


def _ext(kind: int, body: bytes) -> bytes:
    return struct.pack("!HH", kind, len(body)) + body


def client_hello(sni: str, alpn: str = "h3") -> bytes:
    """A TLS 1.3 ClientHello handshake message as a QUIC client sends it (no session id, the
    quic_transport_parameters extension)."""
    name = sni.encode("idna")
    proto = alpn.encode()
    exts = b"".join(
        (
            _ext(0, struct.pack("!HBH", len(name) + 3, 0, len(name)) + name),  # server_name
            _ext(10, struct.pack("!HH", 2, 0x001D)),  # supported_groups: x25519
            _ext(13, struct.pack("!HHHH", 6, 0x0403, 0x0804, 0x0401)),  # signature_algorithms
            _ext(16, struct.pack("!HB", len(proto) + 1, len(proto)) + proto),  # ALPN
            _ext(43, b"\x02\x03\x04"),  # supported_versions: TLS 1.3
            _ext(51, struct.pack("!HHH", 36, 0x001D, 32) + os.urandom(32)),  # key_share
            _ext(57, b"\x04\x04\x80\x10\x00\x00\x0f\x00"),  # transport parameters
        )
    )
    body = (
        b"\x03\x03"
        + os.urandom(32)
        + b"\x00"  # legacy_session_id: empty in QUIC (RFC 9001 8.4)
        + struct.pack("!HHHH", 6, 0x1301, 0x1302, 0x1303)
        + b"\x01\x00"
        + struct.pack("!H", len(exts))
        + exts
    )
    return b"\x01" + len(body).to_bytes(3, "big") + body


def client_initial(sni: str, *, dcid: bytes | None = None, scid: bytes | None = None) -> bytes:
    """One protected client Initial datagram (packet number 0) opening a connection to
    ``sni``."""
    dcid = dcid if dcid is not None else os.urandom(8)
    scid = scid if scid is not None else os.urandom(8)
    key, iv, hp = client_initial_keys(dcid)
    hello = client_hello(sni)
    frames = b"\x06" + _varint(0) + _varint(len(hello)) + hello  # CRYPTO at offset 0
    pn_len, pn = 4, 0
    head = (
        bytes([0xC0 | (pn_len - 1)])  # long header, fixed bit, type Initial
        + struct.pack("!I", QUIC_V1)
        + bytes([len(dcid)])
        + dcid
        + bytes([len(scid)])
        + scid
        + _varint(0)  # no token
    )
    plain_len = max(len(frames), MIN_INITIAL - len(head) - 2 - pn_len - 16)
    payload = frames + b"\x00" * (plain_len - len(frames))  # PADDING frames
    header = head + struct.pack("!H", 0x4000 | (pn_len + len(payload) + 16)) + pn.to_bytes(4, "big")
    nonce = iv[:-8] + (int.from_bytes(iv[-8:], "big") ^ pn).to_bytes(8, "big")
    sealed = AESGCM(key).encrypt(nonce, payload, header)
    sample = sealed[4 - pn_len : 20 - pn_len]
    # header protection is AES-ECB over one 16-byte sample (RFC 9001 5.4.3), by design
    enc = Cipher(algorithms.AES(hp), modes.ECB()).encryptor()  # noqa: S305
    mask = enc.update(sample) + enc.finalize()
    out = bytearray(header + sealed)
    out[0] ^= mask[0] & 0x0F
    at = len(header) - pn_len
    for i in range(pn_len):
        out[at + i] ^= mask[1 + i]
    return bytes(out)
