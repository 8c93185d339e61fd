"""Bounded decoding of HTTP content encodings (gzip, deflate, br, zstd).

Captured bodies are hostile: a few kilobytes of gzip can expand to gigabytes. Every decoder
here stops at ``limit`` output bytes and says so, instead of exhausting memory; output comes in
pieces of at most a chunk, so counting (``keep=False``) holds none of it; and a body of many
concatenated gzip members or zstd frames stops at :data:`MAX_MEMBERS`, so empty ones (which
produce no output) cannot cost unbounded time either.
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
# Concatenated gzip members or zstd frames decoded per body. Real bodies have one or a few;
# thousands of empty ones cost time but produce no output, so the output limit cannot stop them.
MAX_MEMBERS = 4096
_CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class Decoded:
    data: bytes
    size: int  # bytes produced (== len(data) unless counting only)
    exceeded: bool  # output hit the limit; data holds the first ``limit`` bytes
    error: str | None = None  # the encoding was invalid; data holds what decoded before it


def _zlib_like(raw: bytes, wbits: int, limit: int, keep: bool) -> Decoded:
    out: list[bytes] = []
    size = 0
    view = memoryview(raw)
    start = 0  # where the current gzip member starts
    members = 0
    try:
        while True:
            members += 1
            if members > MAX_MEMBERS:
                return Decoded(b"".join(out), size, False, f"more than {MAX_MEMBERS} members")
            d = zlib.decompressobj(wbits)
            pos = start
            while pos < len(raw) or d.unconsumed_tail:
                src = d.unconsumed_tail or view[pos : pos + _CHUNK]
                if not d.unconsumed_tail:
                    pos += len(src)
                piece = d.decompress(src, _room(size, limit))
                size += len(piece)
                if keep:
                    out.append(piece)
                if size > limit:
                    return _cut(out, limit, keep, exceeded=True)
                if d.eof:
                    break
            if not d.eof:
                piece = d.flush()
                size += len(piece)
                if keep:
                    out.append(piece)
                if size > limit:
                    return _cut(out, limit, keep, exceeded=True)
                if not d.eof:
                    return Decoded(b"".join(out), size, False, "truncated stream")
            # Concatenated gzip members are legal: decode them too, in a loop (not by
            # recursion) and from offsets into ``raw`` (not from copies of the rest).
            start = pos - len(d.unused_data)
            if wbits < 16 or start >= len(raw):
                break
    except zlib.error as exc:
        return Decoded(b"".join(out), size, False, str(exc))
    return Decoded(b"".join(out), size, False)


def _room(size: int, limit: int) -> int:
    """Output to ask of a decoder: one byte past the limit shows it is exceeded, and pieces of
    at most a chunk keep memory to the output kept (none when only counting)."""
    return min(_CHUNK, limit - size + 1)


def _cut(out: list[bytes], limit: int, keep: bool, exceeded: bool) -> Decoded:
    if not keep:
        return Decoded(b"", limit, exceeded)
    # Trim the pieces, then join once: joining first and slicing after would hold three
    # copies of ``limit`` bytes at the peak instead of two.
    excess = sum(len(p) for p in out) - limit
    while excess > 0 and out:
        last = out.pop()
        if len(last) > excess:
            out.append(last[: len(last) - excess])
        excess -= len(last)
    return Decoded(b"".join(out), limit, exceeded)


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
            piece = d.process(raw[pos : pos + _CHUNK], output_buffer_limit=_room(size, limit))
            size += len(piece)
            if keep:
                out.append(piece)
            if size > limit:
                return _cut(out, limit, keep, exceeded=True)
            while not d.can_accept_more_data():
                piece = d.process(b"", output_buffer_limit=_room(size, limit))
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
    view = memoryview(raw)
    start = 0  # where the current frame starts
    members = 0
    try:
        while start < len(raw):  # a body may hold several concatenated frames
            members += 1
            if members > MAX_MEMBERS:
                return Decoded(b"".join(out), size, False, f"more than {MAX_MEMBERS} members")
            d = zstd.ZstdDecompressor()
            pos = start
            while True:
                if d.needs_input:
                    if pos >= len(raw):
                        return Decoded(b"".join(out), size, False, "truncated stream")
                    src = view[pos : pos + _CHUNK]
                    pos += len(src)
                else:
                    src = view[0:0]
                piece = d.decompress(src, _room(size, limit))
                size += len(piece)
                if keep:
                    out.append(piece)
                if size > limit:
                    return _cut(out, limit, keep, exceeded=True)
                if d.eof:
                    break
            start = pos - len(d.unused_data)
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
