"""A minimal PNG writer for the virtual handset's ``screencap -p`` (8-bit RGBA, one colour)."""

from __future__ import annotations

import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def solid_png(width: int, height: int, rgba: tuple[int, int, int, int]) -> bytes:
    """A valid ``width`` x ``height`` PNG filled with ``rgba`` (colour type 6, no interlace)."""
    if width <= 0 or height <= 0:
        raise ValueError("PNG dimensions must be positive")
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    row = b"\x00" + bytes(rgba) * width  # filter type 0 (None) per scanline
    idat = zlib.compress(row * height, 6)
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def raw_rgba(width: int, height: int, rgba: tuple[int, int, int, int], sdk: int) -> bytes:
    """``screencap`` without ``-p``: width, height, format (1 = RGBA_8888) and, from Android 9,
    the dataspace, as little-endian 32-bit words, then the pixels."""
    header = struct.pack("<III", width, height, 1)
    if sdk >= 28:
        header += struct.pack("<I", 0)
    return header + bytes(rgba) * (width * height)
