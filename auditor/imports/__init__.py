"""Imports: capture files made by other tools, turned into auditor sessions.

Each format has a parser that takes bytes (or a binary stream) and gives records
(:mod:`auditor.imports.har`, :mod:`auditor.imports.mitmflows`); :mod:`auditor.imports.session`
finds the format of a file by its content, copies the file into a new session and writes the
records there. What a parser leaves out is never dropped silently: it is counted in an
:class:`ImportReport`, which ends up in the session's ``import`` event and manifest.
"""

from __future__ import annotations

import gzip
import io
import re
import zlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import IO, Any, cast

import zstandard

from auditor.errors import AuditorError

#: At most this many skipped items are listed one by one; all of them are counted.
MAX_LISTED = 100
#: Skipped items are also grouped by kind and reason, each group with this many examples;
#: past MAX_GROUPS groups, the rest of a kind share one group ("other reasons").
MAX_EXAMPLES = 5
MAX_GROUPS = 50
OTHER_REASONS = "other reasons"


class ImportFileError(AuditorError):
    """A file cannot be imported: unreadable, of no known format, or broken at its start.

    The message always names the file (and the entry or byte where it went wrong)."""


class ImportFormat(StrEnum):
    HAR = "har"
    MITMPROXY = "mitmproxy"
    PCAP = "pcap"
    PCAPNG = "pcapng"
    INTRUSION = "intrusion-log"  # Android 16's intrusion logs (auditor.imports.intrusion)


class Compression(StrEnum):
    """How a file is compressed, found from its magic number."""

    GZIP = "gzip"  # .gz: a HAR, a pcap, a pcapng
    ZSTD = "zstd"  # .zst
    ZLIB = "zlib"  # mitmproxy's compressed HAR (.zhar, written by its savehar command)


class SkipKind(StrEnum):
    """What was skipped: the unit each format's reader skips."""

    FLOW = "flow"  # a mitmproxy flow
    HAR_ENTRY = "har-entry"
    WEBSOCKET_MESSAGE = "websocket-message"  # of a HAR entry that was imported
    TLS_ERROR = "tls-error"  # HTTP Toolkit's log._tlsErrors
    PACKETS = "packets"  # frames of a packet capture the decoder could not read
    DUPLICATE = "duplicate"  # a record an earlier file of the same import already gave
    OS_EVENT = "os-event"  # a line (one event) of an intrusion log


@dataclass(frozen=True, slots=True)
class Skipped:
    """Something of the file that was not imported, and why."""

    where: str
    reason: str
    kind: SkipKind = SkipKind.FLOW
    count: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"where": self.where, "reason": self.reason, "kind": self.kind.value} | (
            {"count": self.count} if self.count != 1 else {}
        )


@dataclass
class SkipGroup:
    """Skipped items of one kind for one reason: all counted, the first few named."""

    kind: SkipKind
    reason: str
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "reason": self.reason,
            "count": self.count,
            "examples": list(self.examples),
        }


@dataclass
class ImportReport:
    """What one file gave: records written by type, what was skipped, what was lost on the way.

    ``counts`` counts the records written (by record type) and what the parser read;
    ``notes`` counts conditions that did not skip anything but lost detail (for instance a
    body that the exporting tool had already decoded); ``warnings`` are sentences for the
    user (for instance where a truncated flow file stopped). ``meta`` goes into the manifest
    with the counts; ``details`` (possibly long, such as the HAR's connection ids) only into
    the session's ``import`` event."""

    format: ImportFormat
    counts: dict[str, int] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    skipped_total: int = 0
    groups: dict[tuple[SkipKind, str], SkipGroup] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def note(self, key: str, n: int = 1) -> None:
        self.notes[key] = self.notes.get(key, 0) + n

    def skip(self, where: str, reason: str, kind: SkipKind = SkipKind.FLOW) -> None:
        self.skip_many(kind, 1, reason, where)

    def skip_many(self, kind: SkipKind, n: int, reason: str, where: str | None = None) -> None:
        """``n`` items of ``kind`` skipped for ``reason`` (``where`` names them, if one place
        does)."""
        if n <= 0:
            return
        self.skipped_total += n
        if len(self.skipped) < MAX_LISTED:
            self.skipped.append(Skipped(where or kind.value, reason, kind, n))
        key = (kind, reason)
        group = self.groups.get(key)
        if group is None:
            if sum(1 for k in self.groups if k[0] is kind) >= MAX_GROUPS:
                key = (kind, OTHER_REASONS)
                group = self.groups.get(key)
            if group is None:
                group = self.groups[key] = SkipGroup(kind, key[1])
        group.count += n
        if where is not None and len(group.examples) < MAX_EXAMPLES:
            group.examples.append(where)

    def take(self, other: ImportReport) -> None:
        """Add what ``other`` (a scratch report for one item) skipped to this report."""
        for item in other.skipped:
            self.skip_many(item.kind, item.count, item.reason, item.where)

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format.value,
            "counts": dict(sorted(self.counts.items())),
            "notes": dict(sorted(self.notes.items())),
            "skipped": self.skipped_total,
            "skipped_by_reason": [
                g.to_dict() for g in sorted(self.groups.values(), key=lambda g: (g.kind, g.reason))
            ],
            "skipped_detail": [s.to_dict() for s in self.skipped],
            "warnings": list(self.warnings),
            **self.meta,
        }

    def summary(self) -> dict[str, Any]:
        """The manifest's part: no per-item details."""
        out = self.to_dict()
        del out["skipped_detail"]
        return out


_PCAP_MAGICS = (
    b"\xd4\xc3\xb2\xa1",  # microseconds, little-endian
    b"\xa1\xb2\xc3\xd4",  # microseconds, big-endian
    b"\x4d\x3c\xb2\xa1",  # nanoseconds, little-endian
    b"\xa1\xb2\x3c\x4d",  # nanoseconds, big-endian
)
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"  # the Section Header Block type
_BOMS = (
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)
# A flow file is a series of tnetstrings, each a dict: "<length>:<payload>}".
_TNETSTRING = re.compile(rb"([0-9]{1,12}):")
_TNET_KEY = re.compile(rb"[0-9]{1,6}:[A-Za-z_]")


_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: The first byte of a zlib stream with a 32 KiB window (RFC 1950: CM 8, CINFO 7) and the
#: second bytes zlib writes for its four compression levels.
_ZLIB_HEADERS = frozenset({b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda"})
#: At most this many bytes are decompressed to tell what a compressed file holds.
_PEEK = 64 * 1024
_PIECE = 256 * 1024


def compression(head: bytes) -> Compression | None:
    """How a file is compressed, from its first bytes; ``None`` when it is not (or not in a
    way an import reads)."""
    if head[:2] == _GZIP_MAGIC:
        return Compression.GZIP
    if head[:4] == _ZSTD_MAGIC:
        return Compression.ZSTD
    if head[:2] in _ZLIB_HEADERS:
        return Compression.ZLIB
    return None


def decompressed_head(head: bytes, n: int = _PEEK) -> bytes:
    """Up to ``n`` bytes of what the compressed ``head`` holds (all it gives when it is
    shorter or damaged further on); ``head`` itself when it is not compressed."""
    kind = compression(head)
    if kind is None:
        return head
    out = io.BytesIO()
    try:
        with _decompressing(io.BytesIO(head), kind) as fh:
            while out.tell() < n and (chunk := _read_piece(fh, n - out.tell())):
                out.write(chunk)
    except (OSError, EOFError, zlib.error, zstandard.ZstdError):
        pass  # the head ends mid-stream, or the stream is damaged past what was read
    return out.getvalue()[:n]


def decompress_bounded(data: bytes, limit: int, name: str) -> bytes:
    """``data`` decompressed, never more than ``limit`` bytes: a file that would give more
    (a decompression bomb) or a damaged stream is an ImportFileError naming ``name``."""
    kind = compression(data)
    if kind is None:
        return data
    out = bytearray()
    try:
        with _decompressing(io.BytesIO(data), kind) as fh:
            while chunk := _read_piece(fh, _PIECE):
                out += chunk
                if len(out) > limit:
                    raise ImportFileError(
                        f"{name}: decompresses to more than {limit} bytes (the limit); not imported"
                    )
    except (OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
        raise ImportFileError(
            f"{name}: {kind.value} data is damaged after {len(out)} decompressed bytes "
            f"({exc or type(exc).__name__})"
        ) from None
    return bytes(out)


def _read_piece(fh: IO[bytes], n: int) -> bytes:
    """At most ``n`` bytes, in one piece: a read of many pieces that meets damaged data
    raises and loses the pieces it had (GzipFile.read does)."""
    n = min(n, _PIECE)
    read1 = getattr(fh, "read1", None)
    return read1(n) if read1 is not None else fh.read(n)


def _decompressing(fh: IO[bytes], kind: Compression) -> IO[bytes]:
    reader: Any
    if kind is Compression.GZIP:
        reader = gzip.GzipFile(fileobj=fh, mode="rb")
    elif kind is Compression.ZSTD:
        reader = zstandard.ZstdDecompressor().stream_reader(
            fh, closefd=True, read_across_frames=True
        )
    else:
        reader = _ZlibReader(fh)
    return cast(IO[bytes], reader)


class _ZlibReader(io.RawIOBase):
    """A zlib stream (RFC 1950) read as a file; the standard library has no such reader."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self._z = zlib.decompressobj()
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        while not self._buf and not self._z.eof:
            raw = self._z.unconsumed_tail or self._fh.read(64 * 1024)
            if not raw:
                raise EOFError("the zlib stream ends before its end marker")
            self._buf = self._z.decompress(raw, len(view))
        n = min(len(view), len(self._buf))
        view[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


def detect_format(head: bytes) -> ImportFormat | None:
    """The format of a file from its first bytes (64 KiB is plenty); ``None`` if unknown.

    A compressed file (gzip, zstd, zlib) is told by what its decompressed start holds; give
    it 256 KiB at least, as a zstd block (up to 128 KiB) decompresses only whole."""
    if compression(head) is not None:
        inner = decompressed_head(head)
        return _detect_plain(inner) if inner and compression(inner) is None else None
    return _detect_plain(head)


# the first key of an Android 16 intrusion log's first line: an event ({"dns_event": ...})
_FIRST_EVENT = re.compile(rb'\A\s*\{\s*"([a-z][a-z0-9_]{0,40}_event)"\s*:')


def looks_like_intrusion_log(head: bytes) -> bool:
    """Whether a file's first bytes are an intrusion log (:mod:`auditor.imports.intrusion`): a
    JSON object whose first key names an event (``{"dns_event":``). Checked before the HAR
    test, which takes any JSON object."""
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    return _FIRST_EVENT.match(head[:4096]) is not None


def _detect_plain(head: bytes) -> ImportFormat | None:
    if head[:4] in _PCAP_MAGICS:
        return ImportFormat.PCAP
    if head[:4] == _PCAPNG_MAGIC:
        return ImportFormat.PCAPNG
    if looks_like_intrusion_log(head):
        return ImportFormat.INTRUSION
    if _looks_like_json_object(head):
        return ImportFormat.HAR
    m = _TNETSTRING.match(head)
    if m and _TNET_KEY.match(head, m.end()):
        end = m.end() + int(m.group(1))
        # the first flow may run past ``head`` (a big flow, or a file cut inside it)
        if end >= len(head) or head[end : end + 1] == b"}":
            return ImportFormat.MITMPROXY
    return None


def _looks_like_json_object(head: bytes) -> bool:
    text: str | None = None
    for bom, codec in _BOMS:
        if head.startswith(bom):
            text = head[len(bom) : len(bom) + 256].decode(codec, "ignore")
            break
    if text is None:
        text = head[:256].decode("utf-8", "ignore")
    return text.lstrip(" \t\r\n").startswith("{")
