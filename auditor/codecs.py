"""Bounded decoding of HTTP content encodings (gzip, deflate, br, zstd).

Captured bodies are hostile: a few kilobytes of gzip can expand to gigabytes. Every decoder
here stops at ``limit`` output bytes and says so, instead of exhausting memory.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import brotli

try:  # Python 3.14 has it in the standard library; mitmproxy brings the backport before that.
    from compression import zstd
except ImportError:  # pragma: no cover - depends on the Python version
    from backports import zstd

DEFAULT_DECODE_LIMIT = 256 * 1024 * 1024
_CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class Decoded:
    data: bytes
    size: int  # bytes produced (== len(data) unless counting only)
    exceeded: bool  # output hit the limit; data holds the first ``limit`` bytes
    error: str | None = None  # the encoding was invalid; data holds what decoded before it


def _zlib_like(raw: bytes, wbits: int, limit: int, keep: bool) -> Decoded:
    d = zlib.decompressobj(wbits)
    out: list[bytes] = []
    size = 0
    pos = 0
    try:
        while pos < len(raw) or d.unconsumed_tail:
            src = d.unconsumed_tail or raw[pos : pos + _CHUNK]
            if not d.unconsumed_tail:
                pos += _CHUNK
            piece = d.decompress(src, min(_CHUNK, limit - size + 1))
            size += len(piece)
            if keep:
                out.append(piece)
            if size > limit:
                return _cut(out, limit, keep, exceeded=True)
            if d.eof:
                if d.unused_data and wbits >= 16:
                    # concatenated gzip members are legal; decode them too
                    rest = _zlib_like(d.unused_data, wbits, limit - size, keep)
                    return _join(out, size, rest, keep)
                break
        piece = d.flush()
        size += len(piece)
        if keep:
            out.append(piece)
        if size > limit:
            return _cut(out, limit, keep, exceeded=True)
        if not d.eof:
            return Decoded(b"".join(out), size, False, "truncated stream")
    except zlib.error as exc:
        return Decoded(b"".join(out), size, False, str(exc))
    return Decoded(b"".join(out), size, False)


def _join(out: list[bytes], size: int, rest: Decoded, keep: bool) -> Decoded:
    return Decoded(
        b"".join(out) + rest.data if keep else b"", size + rest.size, rest.exceeded, rest.error
    )


def _cut(out: list[bytes], limit: int, keep: bool, exceeded: bool) -> Decoded:
    data = b"".join(out)[:limit] if keep else b""
    return Decoded(data, limit, exceeded)


def _deflate(raw: bytes, limit: int, keep: bool) -> Decoded:
    # "deflate" in HTTP should be zlib-wrapped, but raw deflate is common in the wild.
    res = _zlib_like(raw, zlib.MAX_WBITS, limit, keep)
    if res.error and res.size == 0:
        return _zlib_like(raw, -zlib.MAX_WBITS, limit, keep)
    return res


def _brotli(raw: bytes, limit: int, keep: bool) -> Decoded:
    d = brotli.Decompressor()
    out: list[bytes] = []
    size = 0
    try:
        for pos in range(0, max(len(raw), 1), _CHUNK):
            piece = d.process(raw[pos : pos + _CHUNK], output_buffer_limit=limit - size + 1)
            size += len(piece)
            if keep:
                out.append(piece)
            if size > limit:
                return _cut(out, limit, keep, exceeded=True)
            while not d.can_accept_more_data():
                piece = d.process(b"", output_buffer_limit=limit - size + 1)
                size += len(piece)
                if keep:
                    out.append(piece)
                if size > limit:
                    return _cut(out, limit, keep, exceeded=True)
        if not d.is_finished():
            return Decoded(b"".join(out), size, False, "truncated stream")
    except brotli.error as exc:
        return Decoded(b"".join(out), size, False, f"brotli: {exc}")
    return Decoded(b"".join(out), size, False)


def _zstd(raw: bytes, limit: int, keep: bool) -> Decoded:
    out: list[bytes] = []
    size = 0
    data = raw
    try:
        while data:  # a body may hold several concatenated frames
            d = zstd.ZstdDecompressor()
            piece = d.decompress(data, limit - size + 1)
            while True:
                size += len(piece)
                if keep:
                    out.append(piece)
                if size > limit:
                    return _cut(out, limit, keep, exceeded=True)
                if d.eof:
                    break
                if d.needs_input:
                    return Decoded(b"".join(out), size, False, "truncated stream")
                piece = d.decompress(b"", limit - size + 1)
            data = d.unused_data
    except zstd.ZstdError as exc:
        return Decoded(b"".join(out), size, False, f"zstd: {exc}")
    return Decoded(b"".join(out), size, False)


_DECODERS = {
    "gzip": lambda raw, limit, keep: _zlib_like(raw, 16 + zlib.MAX_WBITS, limit, keep),
    "x-gzip": lambda raw, limit, keep: _zlib_like(raw, 16 + zlib.MAX_WBITS, limit, keep),
    "deflate": _deflate,
    "br": _brotli,
    "zstd": _zstd,
}


def supported(encoding: str) -> bool:
    return all(e in _DECODERS or e == "identity" for e in split_encodings(encoding))


def split_encodings(encoding: str | None) -> list[str]:
    """``Content-Encoding: gzip, br`` lists encodings in the order they were applied."""
    if not encoding:
        return []
    return [e.strip().lower() for e in encoding.split(",") if e.strip()]


def decode(
    raw: bytes, encoding: str | None, limit: int = DEFAULT_DECODE_LIMIT, *, keep: bool = True
) -> Decoded:
    """Undo ``encoding`` on ``raw``, producing at most ``limit`` bytes.

    With ``keep=False`` only the decoded size is computed (no output is held in memory).
    An unknown encoding is an error, not an exception.
    """
    data = raw
    size = len(raw)
    encodings = split_encodings(encoding)
    for i in range(len(encodings) - 1, -1, -1):
        enc = encodings[i]
        if enc == "identity":
            continue
        fn = _DECODERS.get(enc)
        if fn is None:
            return Decoded(data if keep else b"", size, False, f"unsupported encoding {enc!r}")
        res = fn(data, limit, keep or i > 0)
        if res.exceeded or res.error:
            return res
        data, size = res.data, res.size
    return Decoded(data if keep else b"", size, False)
