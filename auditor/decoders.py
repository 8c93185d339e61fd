"""Bounded decoding of HTTP content encodings (gzip, deflate, br, zstd), and the one reader of
the text escapes captured strings wrap values in (:func:`text_views`).

Captured bodies are hostile: a few kilobytes of gzip can expand to gigabytes. Every decoder
here stops at ``limit`` output bytes and says so, instead of exhausting memory; output comes in
pieces of at most a chunk, so counting (``keep=False``) holds none of it; and a body of many
concatenated gzip members or zstd frames stops at :data:`MAX_MEMBERS`, so empty ones (which
produce no output) cannot cost unbounded time either.
"""

from __future__ import annotations

import binascii
import html
import re
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass

import brotli

try:  # Python 3.14 has it in the standard library; mitmproxy brings the backport before that.
    from compression import zstd
except ImportError:  # pragma: no cover - depends on the Python version
    from backports import zstd

from auditor.analysis.escape import INVISIBLE

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


class _Output:
    """What one decoding produced: its pieces (only when they are kept) and its size, held
    against the limit. Every decoder below asks it how much to produce next and adds each
    piece through it, so that the limit and the counting-only mode work the same for all."""

    __slots__ = ("keep", "limit", "pieces", "size")

    def __init__(self, limit: int, keep: bool) -> None:
        self.limit = limit
        self.keep = keep
        self.pieces: list[bytes] = []
        self.size = 0

    def room(self) -> int:
        """Output to ask of a decoder: one byte past the limit shows it is exceeded, and
        pieces of at most a chunk keep memory to the output kept (none when only counting)."""
        return min(_CHUNK, self.limit - self.size + 1)

    def add(self, piece: bytes) -> bool:
        """Count (and keep) a piece; True when the output is now past the limit."""
        self.size += len(piece)
        if self.keep:
            self.pieces.append(piece)
        return self.size > self.limit

    def result(self, error: str | None = None) -> Decoded:
        return Decoded(b"".join(self.pieces), self.size, False, error)

    def cut(self) -> Decoded:
        """The first ``limit`` bytes, marked exceeded."""
        if not self.keep:
            return Decoded(b"", self.limit, True)
        # Trim the pieces, then join once: joining first and slicing after would hold three
        # copies of ``limit`` bytes at the peak instead of two.
        out = self.pieces
        excess = sum(len(p) for p in out) - self.limit
        while excess > 0 and out:
            last = out.pop()
            if len(last) > excess:
                out.append(last[: len(last) - excess])
            excess -= len(last)
        return Decoded(b"".join(out), self.limit, True)


def _zlib_like(raw: bytes, wbits: int, limit: int, keep: bool) -> Decoded:
    out = _Output(limit, keep)
    view = memoryview(raw)
    start = 0  # where the current gzip member starts
    members = 0
    try:
        while True:
            members += 1
            if members > MAX_MEMBERS:
                return out.result(f"more than {MAX_MEMBERS} members")
            d = zlib.decompressobj(wbits)
            pos = start
            while pos < len(raw) or d.unconsumed_tail:
                src = d.unconsumed_tail or view[pos : pos + _CHUNK]
                if not d.unconsumed_tail:
                    pos += len(src)
                if out.add(d.decompress(src, out.room())):
                    return out.cut()
                if d.eof:
                    break
            if not d.eof:
                if out.add(d.flush()):
                    return out.cut()
                if not d.eof:
                    return out.result("truncated stream")
            # Concatenated gzip members are legal: decode them too, in a loop (not by
            # recursion) and from offsets into ``raw`` (not from copies of the rest).
            start = pos - len(d.unused_data)
            if wbits < 16 or start >= len(raw):
                break
    except zlib.error as exc:
        return out.result(str(exc))
    return out.result()


def _deflate(raw: bytes, limit: int, keep: bool) -> Decoded:
    # "deflate" in HTTP should be zlib-wrapped, but raw deflate is common in the wild.
    res = _zlib_like(raw, zlib.MAX_WBITS, limit, keep)
    if res.error and res.size == 0:
        return _zlib_like(raw, -zlib.MAX_WBITS, limit, keep)
    return res


def _brotli(raw: bytes, limit: int, keep: bool) -> Decoded:
    d = brotli.Decompressor()
    out = _Output(limit, keep)
    try:
        for pos in range(0, max(len(raw), 1), _CHUNK):
            if out.add(d.process(raw[pos : pos + _CHUNK], output_buffer_limit=out.room())):
                return out.cut()
            while not d.can_accept_more_data():
                if out.add(d.process(b"", output_buffer_limit=out.room())):
                    return out.cut()
        if not d.is_finished():
            return out.result("truncated stream")
    except brotli.error as exc:
        return out.result(f"brotli: {exc}")
    return out.result()


def _zstd(raw: bytes, limit: int, keep: bool) -> Decoded:
    out = _Output(limit, keep)
    view = memoryview(raw)
    start = 0  # where the current frame starts
    members = 0
    try:
        while start < len(raw):  # a body may hold several concatenated frames
            members += 1
            if members > MAX_MEMBERS:
                return out.result(f"more than {MAX_MEMBERS} members")
            d = zstd.ZstdDecompressor()
            pos = start
            while True:
                if d.needs_input:
                    if pos >= len(raw):
                        return out.result("truncated stream")
                    src = view[pos : pos + _CHUNK]
                    pos += len(src)
                else:
                    src = view[0:0]
                if out.add(d.decompress(src, out.room())):
                    return out.cut()
                if d.eof:
                    break
            start = pos - len(d.unused_data)
    except zstd.ZstdError as exc:
        return out.result(f"zstd: {exc}")
    return out.result()


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


# ------------------------------------------------------------------------------- text escapes
#
# Captured strings wrap values in text escapes: a query parameter URL-encoded twice
# (``jane%2540example.org``), a JSON string with ``\u0040``, an HTML entity, a backslash before
# a slash, a value in base64 or hex. :func:`text_views` undoes them, layer by layer, and says
# where each decoded character came from, so that what is found in a view can be replaced in
# the string itself. The redactor and its safety check (``auditor.analysis.redact``) both read
# strings through it: same layers, same bound, so the check cannot see what the redactor could
# not.

MAX_TEXT_LAYERS = 4  # escape layers undone, one inside the other
MIN_BINARY_RUN = 8  # base64 characters (6 bytes) before a run is decoded; hex needs 12 digits

_TEXT_ESCAPE = re.compile(
    r"(?P<pct>(?:%[0-9A-Fa-f]{2})+)"
    r"|(?:\\|%)u(?P<u>[0-9A-Fa-f]{4})"
    r"|\\x(?P<x>[0-9A-Fa-f]{2})"
    r"|\\(?P<p>[!-/:-@\[-`{-~])"
    r"|(?P<ent>&(?:#[0-9]{1,7};?|#[xX][0-9A-Fa-f]{1,6};?|[A-Za-z][A-Za-z0-9]{1,31};))"
    # characters a reader does not see: the set every display escapes (escape.INVISIBLE:
    # format characters, default ignorables, variation selectors, tags), one definition
    f"|(?P<inv>[{INVISIBLE}])"
    # fullwidth ASCII (\uff10 reads as 0)
    "|(?P<wide>[\uff01-\uff5e])"
)
_BASE64_RUN = re.compile(rf"[A-Za-z0-9+/_-]{{{MIN_BINARY_RUN},}}")
_HEX_RUN = re.compile(rf"[0-9A-Fa-f]{{{MIN_BINARY_RUN + 4},}}")
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_NONE: array[int] = array("q")
# decoded runs are kept when they hold text: 6 printable ASCII bytes in a row (random bytes
# seldom do; what the encodings needles do not cover in a blob is text in another case)
_TEXTLIKE = re.compile(rb"[\x20-\x7e]{6}")


@dataclass(frozen=True, slots=True)
class TextView:
    """``text`` decoded from a string: its character ``i`` came from the string's
    ``[starts[i], ends[i])``. ``layers`` names what was undone, outermost first (``url``,
    ``unescape``, ``html``, several joined by ``+`` when one layer held several kinds, then
    ``base64`` or ``hex``); the string itself has none."""

    text: str
    starts: array[int]  # (empty for the string itself and for a decoded run: see ``run``)
    ends: array[int]
    layers: tuple[str, ...] = ()
    # a decoded run: the view it is in, where it starts there, characters per 3 bytes
    run: tuple[TextView, int, int] | None = None

    def origin(self, start: int, end: int) -> tuple[int, int]:
        """The span of the string that ``text[start:end]`` (not empty) was decoded from."""
        if not self.layers:
            return start, end
        if self.run is None:
            return self.starts[start], self.ends[end - 1]
        parent, base, per3 = self.run
        # byte j is bits [8j, 8j + 8): the characters of 2 (hex) or 4/3 (base64) bytes each
        # that hold any of them
        bits = 24 // per3
        return parent.origin(base + (8 * start) // bits, base + (8 * end - 1) // bits + 1)


def _utf8_chars(data: bytes) -> Iterator[tuple[str, int, int]]:
    """Characters of ``data`` with the byte span of each; a byte that does not start a valid
    UTF-8 sequence is U+FFFD on its own."""
    i = 0
    while i < len(data):
        b = data[i]
        n = 1 if b < 0x80 else 2 if 0xC2 <= b < 0xE0 else 3 if 0xE0 <= b < 0xF0 else 4
        try:
            ch = data[i : i + n].decode("utf-8") if b >= 0x80 else chr(b)
        except UnicodeDecodeError:
            ch, n = "\ufffd", 1
        yield ch, i, i + n
        i += n


def _unescape_once(view: TextView) -> TextView | None:
    """One layer of escapes of ``view`` undone (every kind at once); ``None`` when it has
    none."""
    text = view.text
    out: list[str] = []
    starts, ends = array("q"), array("q")
    kinds: set[str] = set()
    pos = 0

    def keep(upto: int) -> None:
        out.append(text[pos:upto])
        if view.layers:
            starts.extend(view.starts[pos:upto])
            ends.extend(view.ends[pos:upto])
        else:
            starts.extend(range(pos, upto))
            ends.extend(range(pos + 1, upto + 1))

    for m in _TEXT_ESCAPE.finditer(text):
        s, e = m.span()
        keep(s)
        pos = e
        pieces: list[tuple[str, int, int]]
        if m.group("pct") is not None:
            kinds.add("url")
            data = bytes.fromhex(m.group("pct").replace("%", ""))
            pieces = [(ch, s + 3 * bs, s + 3 * be) for ch, bs, be in _utf8_chars(data)]
        elif m.group("ent") is not None:
            kinds.add("html")
            pieces = [(ch, s, e) for ch in html.unescape(m.group("ent"))]
        elif m.group("inv") is not None:
            kinds.add("invisible")
            pieces = []
        elif m.group("wide") is not None:
            kinds.add("fullwidth")
            pieces = [(chr(ord(m.group("wide")) - 0xFEE0), s, e)]
        elif m.group("p") is not None:
            kinds.add("unescape")
            pieces = [(m.group("p"), s, e)]
        else:
            kinds.add("unescape")
            code = int(m.group("u") or m.group("x"), 16)
            # a surrogate cannot be matched or written as UTF-8: U+FFFD (each escape of a
            # pair stands for its own character)
            pieces = [("\ufffd" if 0xD800 <= code < 0xE000 else chr(code), s, e)]
        for ch, a, b in pieces:
            out.append(ch)
            origin = view.origin(a, b)
            starts.append(origin[0])
            ends.append(origin[1])
    if not kinds:
        return None
    keep(len(text))
    return TextView("".join(out), starts, ends, (*view.layers, "+".join(sorted(kinds))))


def _binary_views(view: TextView) -> Iterator[TextView]:
    """``view``'s runs of base64 (either alphabet, at each of the 4 places a run can start a
    group) and of hex (at both alignments), decoded into Latin-1 text (a character a byte),
    where they hold text."""
    text = view.text
    for m in _BASE64_RUN.finditer(text):
        run = m.group().encode("ascii").translate(_TO_STANDARD)
        for a in range(4):
            chars = run[a:]
            if len(chars) % 4 == 1:
                chars = chars[:-1]
            if len(chars) < MIN_BINARY_RUN:
                continue
            data = binascii.a2b_base64(chars + b"=" * (-len(chars) % 4))
            if not _TEXTLIKE.search(data):
                continue
            yield TextView(
                data.decode("latin-1"), _NONE, _NONE, (*view.layers, "base64"),
                (view, m.start() + a, 4),
            )  # fmt: skip
    for m in _HEX_RUN.finditer(text):
        for a in range(2):
            digits = m.group()[a:]
            data = bytes.fromhex(digits[: len(digits) - len(digits) % 2])
            if not _TEXTLIKE.search(data):
                continue
            yield TextView(
                data.decode("latin-1"), _NONE, _NONE, (*view.layers, "hex"),
                (view, m.start() + a, 6),
            )  # fmt: skip


def text_views(text: str, *, binary: bool = True) -> Iterator[TextView]:
    """``text`` itself, then each layer of text escapes undone (percent-encoding, ``\\uXXXX``
    and ``\\xXX``, a backslash before punctuation, HTML entities; and characters a reader
    does not see dropped, fullwidth ones read as ASCII), up to
    :data:`MAX_TEXT_LAYERS` layers one inside the other; then (``binary``) every run of base64
    and of hex in each of these, decoded. Never raises. The views together hold a few tens of
    times ``text``'s length at most; they are made one at a time."""
    cur = TextView(text, _NONE, _NONE)
    layers = [cur]
    yield cur
    for _ in range(MAX_TEXT_LAYERS):
        nxt = _unescape_once(cur)
        if nxt is None:
            break
        cur = nxt
        layers.append(cur)
        yield cur
    if not binary:
        return
    seen: set[tuple[int, int, str]] = set()
    for v in layers:
        for b in _binary_views(v):
            key = (*b.origin(0, len(b.text)), b.text) if b.text else (0, 0, "")
            if key not in seen:  # a run that no escape layer changed is decoded once
                seen.add(key)
                yield b
