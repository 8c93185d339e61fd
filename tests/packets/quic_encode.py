"""QUIC encoders the tests and the bench use to make packets (the product only reads them):
a protected client Initial (the inverse of :func:`auditor.packets.quic.open_initial`) and a
CRYPTO frame."""

from __future__ import annotations

from auditor.packets.quic import INITIAL_TYPE, encode_varint, initial_protection


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
