"""Record-level readers of pcap and pcapng captures, streamed in bounded chunks.

Long because: the Python record walks are the reference the compiled walk (``_scan.c``) is held
to, and pcap, pcapng (its blocks, sections and interfaces) and the compressed inputs share the
chunking they are written for.

:class:`CaptureReader` takes a binary stream and yields :class:`RecordBatch` es. A batch is one
chunk of the file (``chunk_size`` bytes, 32 MiB by default; a record is never split between
two chunks) plus numpy columns with one row per packet: where its data starts in the chunk,
its captured and original length, its timestamp in nanoseconds and its link type. Memory is
bounded by the chunk size and the largest record, not by the file.

The only loop is the walk from one record header to the next (a record's position depends on
the one before); every other header field is gathered with numpy fancy indexing. The walk is
compiled (``auditor/packets/_scan.c``, built at install when a C compiler is there) and falls
back to the Python loops below, which give the same results; ``AUDITOR_PURE_PYTHON_SCAN=1``
forces those. ``SCANNER`` says which one is in use.

Formats: pcap in both byte orders with microsecond and nanosecond magics; pcapng with sections
in either byte order, Interface Description Blocks (link type, snap length, ``if_tsresol``,
``if_tsoffset``, name, description, comments), Enhanced, Simple and obsolete Packet Blocks and
packet comments. Name Resolution, Interface Statistics, Decryption Secrets and custom blocks
are skipped.

Compressed captures (gzip, as ``.pcap.gz``/``.pcapng.gz``; zstd, as ``.zst``) are read
through a streaming decompressor, told by their magic bytes, never by the file's name; memory
stays bounded as for a plain file (no temporary file, no whole-file decompression). zstd
frames whose window exceeds :data:`ZSTD_MAX_WINDOW` are refused (a counted warning), so a
stream cannot make the decompressor allocate more. :func:`decompressed_head` gives the first
bytes of a possibly compressed file, for callers that sniff the format.

A stream that is not a capture raises :class:`PcapError`. Damage inside a capture never
raises; it is counted in ``warnings`` under one of these keys:

- ``compressed-stream-truncated``: the gzip or zstd stream ends inside a member or frame (the
  packets decompressed before it are read)
- ``compressed-stream-corrupt``: the gzip or zstd stream is damaged (likewise)

- ``truncated-record``: the file ends inside a record or block (its bytes are left out)
- ``record-too-large``: a record claims more than 256 MiB; reading stops there
- ``empty-record``: a record with no data
- ``caplen-exceeds-wirelen``: captured length larger than the original length
- ``pcapng-bad-block``: a block length that cannot be right; reading stops there
- ``pcapng-block-length-mismatch``: a packet block's trailing length differs from its header
- ``pcapng-caplen-exceeds-block``: a packet block's captured length runs past the block
- ``pcapng-unknown-interface``: a packet names an interface no IDB described
- ``pcapng-spb-no-timestamp``: Simple Packet Blocks have no timestamp; the previous packet's is
  used
- ``pcapng-unknown-block``: a block type this reader does not know (skipped)
- ``timestamp-out-of-range``: a timestamp that does not fit in int64 nanoseconds (set to 0)
"""

from __future__ import annotations

import gzip
import io
import itertools
import logging
import struct
import sys
import zlib
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import BinaryIO, Final

import numpy as np
import zstandard
from numpy.lib.stride_tricks import sliding_window_view

from auditor.errors import AuditorError
from auditor.packets._compiled import load

log = logging.getLogger(__name__)

_compiled: ModuleType | None = load("_scan")  # else the Python walk
SCANNER: Final = "python" if _compiled is None else "compiled"

MAX_RECORD: Final = 256 * 1024 * 1024
DEFAULT_CHUNK: Final = 32 * 1024 * 1024
PAD: Final = 512  # zero bytes after every chunk: vectorised header reads stay in the buffer
HEAD: Final = 128  # bytes of each packet copied into RecordBatch.head (headers live there)
PIECE: Final = 256 * 1024  # read size when the records are walked as they arrive (fits in L2)

_PCAP_MAGICS: Final[dict[bytes, tuple[str, int]]] = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000),
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
_PCAP_MODIFIED: Final = (b"\x34\xcd\xb2\xa1", b"\xa1\xb2\xcd\x34")
SHB: Final = 0x0A0D0D0A
IDB: Final = 0x00000001
PB: Final = 0x00000002
SPB: Final = 0x00000003
NRB: Final = 0x00000004
ISB: Final = 0x00000005
EPB: Final = 0x00000006
_SKIPPED_BLOCKS: Final = frozenset(
    {NRB, ISB, 0x00000007, 0x00000008, 0x00000009, 0x0000000A, 0x00000BAD, 0x40000BAD}
)
_BYTE_ORDER_MAGIC: Final = 0x1A2B3C4D
_OPT_COMMENT: Final = 1
_IF_NAME: Final = 2
_IF_DESCRIPTION: Final = 3
_IF_TSRESOL: Final = 9
_IF_TSOFFSET: Final = 14
_I64_MAX: Final = (1 << 63) - 1


class PcapError(AuditorError):
    """The input is not a pcap or pcapng capture (or not one this reader supports)."""


@dataclass(frozen=True, slots=True)
class Interface:
    """A capture interface: the pcap file header, or one pcapng IDB."""

    index: int  # across all sections of the file
    link_type: int
    snaplen: int
    section: int = 0
    name: str = ""
    description: str = ""
    ts_units: int = 1_000_000  # ticks per second when ts_base2 is false, else 2**ts_units
    ts_base2: bool = False
    ts_offset: int = 0  # seconds (if_tsoffset)
    comments: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Comment:
    """An ``opt_comment`` of the file: on a section, an interface or a packet."""

    where: str  # "section" | "interface" | "packet"
    index: int  # section number, interface index or packet number
    text: str


@dataclass(frozen=True, eq=False)
class RecordBatch:
    """A chunk of a capture and the packet records it holds.

    ``buf`` is the chunk as uint8 (zero bytes follow the data) and ``raw`` the same memory as a
    bytearray, for slicing payloads. ``data`` are offsets into both. ``head`` holds the first
    :data:`HEAD` bytes at each packet's data, copied in one pass so that header fields are
    read from cache (bytes past ``caplen`` are not the packet's). Row ``i`` is packet number
    ``first + i`` of the file; ``offset + data[i]`` is where its data is in the file."""

    raw: bytearray
    buf: np.ndarray
    first: int
    offset: int  # file offset of raw[0]
    data: np.ndarray  # int64
    caplen: np.ndarray  # int64
    wirelen: np.ndarray  # int64
    ts_ns: np.ndarray  # int64, nanoseconds since the epoch
    iface: np.ndarray  # int32, index into the reader's interfaces (-1: unknown)
    link_type: np.ndarray  # int32 (-1: unknown interface)
    head: np.ndarray  # (n, HEAD) uint8

    def __len__(self) -> int:
        return int(self.data.shape[0])


def gather(buf: np.ndarray, offsets: np.ndarray, width: int) -> np.ndarray:
    """The ``width`` bytes at each offset, as an (n, width) uint8 array. Offsets past the end
    of ``buf`` read as its last byte, which is padding (zero)."""
    idx = offsets[:, None] + np.arange(width, dtype=np.int64)
    return buf.take(idx, mode="clip")


def window(buf: np.ndarray, offsets: np.ndarray, width: int) -> np.ndarray:
    """Like :func:`gather`, copying each run of bytes at once (faster from 16 bytes on)."""
    rows = sliding_window_view(buf, width)
    return rows[np.minimum(offsets, len(rows) - 1)]


def u32(buf: np.ndarray, offsets: np.ndarray, order: str) -> np.ndarray:
    return gather(buf, offsets, 4).view(order + "u4")[:, 0].astype(np.int64)


class _Chunks:
    """Bounded buffers over a stream; the unparsed tail of one starts the next.

    The buffer is reused when no batch still refers to it (a caller that keeps batches gets a
    fresh buffer each time, so its batches stay intact); reuse spares the page faults of a
    new allocation per chunk."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self._stream = stream
        self._size = size
        self.raw = bytearray(PAD)
        self.buf = np.frombuffer(self.raw, dtype=np.uint8)
        self._free = (sys.getrefcount(self.raw), sys.getrefcount(self.buf))
        self.pos = 0
        self.end = 0
        self.base = 0  # file offset of raw[0]
        self.eof = False
        self._left: int | None = None  # bytes not yet read, when the stream can tell
        try:
            if stream.seekable():
                here = stream.tell()
                self._left = stream.seek(0, 2) - here
                stream.seek(here)
        except (OSError, ValueError):
            self._left = None

    def release(self) -> None:
        """Let go of the buffer once the stream is read (a batch still holding it keeps it)."""
        self.raw = bytearray(PAD)
        self.buf = np.frombuffer(self.raw, dtype=np.uint8)
        self._free = (sys.getrefcount(self.raw), sys.getrefcount(self.buf))
        self.pos = self.end = 0

    def fill(self, need: int = 0, progress: Callable[[bytearray, int], None] | None = None) -> None:
        """Start a buffer with the unparsed tail and read until it holds ``max(chunk, need)``
        bytes or the stream ends. Zero bytes follow the data (``PAD`` of them at least).

        With ``progress``, the chunk is read in pieces of :data:`PIECE` bytes and
        ``progress(raw, n)`` is called after each with the bytes read so far (``raw[:n]``;
        past ``n`` the buffer holds stale bytes until the read ends), so that a caller can
        walk the records while they are still in the CPU's cache."""
        tail = self.end - self.pos
        cap = max(self._size, need, tail)
        if self._left is not None:
            cap = min(cap, tail + self._left)
        free = (sys.getrefcount(self.raw), sys.getrefcount(self.buf)) == self._free
        if free and len(self.raw) >= cap + PAD:
            raw = self.raw
            raw[:tail] = raw[self.pos : self.end]
        else:
            raw = bytearray(cap + PAD)
            raw[:tail] = self.raw[self.pos : self.end]
        n = tail
        step = cap if progress is None else PIECE
        with memoryview(raw) as mv:
            while n < cap and not self.eof:
                got = self._stream.readinto(mv[n : min(cap, n + step)])  # type: ignore[attr-defined]
                if not got:
                    self.eof = True
                else:
                    n += got
                    if self._left is not None:
                        self._left -= got
                    if progress is not None:
                        progress(raw, n)
        if self._left is not None and self._left <= 0:
            self.eof = True
        if raw is self.raw:
            stale = min(len(raw), max(self.end, n + PAD))
            raw[n:stale] = bytes(stale - n)  # what the last chunk left past the new data
        else:
            self.raw = raw
            self.buf = np.frombuffer(raw, dtype=np.uint8)
        self.base += self.pos
        self.pos = 0
        self.end = n


_Unpack = Callable[..., tuple[int, ...]]  # struct.Struct.unpack_from of the file's byte order


def _scan_pcap(raw: bytearray, pos: int, end: int, out: array[int], read: _Unpack) -> int:
    append = out.append
    while pos + 16 <= end:
        nxt = pos + 16 + read(raw, pos + 8)[0]
        if nxt > end:
            break
        append(pos)
        pos = nxt
    return pos


def _scan_pcapng(raw: bytearray, pos: int, end: int, out: array[int], read: _Unpack) -> int:
    """Packet blocks from ``pos`` on, until the chunk ends or a block needs the caller."""
    append = out.append
    while pos + 12 <= end:
        btype, blen = read(raw, pos)
        nxt = pos + blen
        if nxt > end or blen < 12 or blen & 3:
            break
        if btype == EPB or btype == SPB or btype == PB:
            append(pos)
        elif btype == SHB or btype == IDB or btype not in _SKIPPED_BLOCKS:
            break
        pos = nxt
    return pos


class _PcapWalk:
    """The compiled walk of pcap records (``_scan.pcap_records``), resumed as a chunk is read
    (see :meth:`_Chunks.fill`): each call walks the records complete in ``raw[pos:n]`` and
    keeps their columns until :meth:`take`."""

    def __init__(self, big: bool, frac_ns: int) -> None:
        assert _compiled is not None
        self._records = _compiled.pcap_records
        self._big = big
        self._frac_ns = frac_ns
        self.pos = 0
        self._parts: list[list[bytearray]] = []

    def start(self, pos: int) -> None:
        self.pos = pos
        self._parts = []

    def __call__(self, raw: bytearray, n: int) -> None:
        if n - self.pos < 16:
            return
        self.pos, *cols = self._records(raw, self.pos, n, self._big, self._frac_ns, HEAD)
        if cols[0]:
            self._parts.append(cols)

    def take(self) -> list[bytearray] | None:
        parts, self._parts = self._parts, []
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        return [bytearray().join(col) for col in zip(*parts, strict=True)]


class _PcapngWalk:
    """The compiled walk of pcapng packet blocks (``_scan.scan_pcapng``), resumed as a chunk
    is read (see :meth:`_Chunks.fill`), from the chunk's start. It stops for good at a block
    the reader must look at itself (a section or interface block, an unknown one, a bad
    length); a block not yet read whole is walked when more of it arrives."""

    def __init__(self) -> None:
        assert _compiled is not None
        self._scan = _compiled.pcapng_records
        self._big = False
        self._held = False
        self.pos = 0
        self._parts: list[tuple[bytes, bytes, bytes]] = []

    def start(self, big: bool) -> None:
        self._big, self._held, self.pos, self._parts = big, False, 0, []

    def __call__(self, raw: bytearray, n: int) -> None:
        if self._held or n - self.pos < 12:
            return
        packed, self.pos, rows, trailers = self._scan(raw, self.pos, n, self._big, 28 + HEAD)
        if packed:
            self._parts.append((packed, rows, trailers))
        if self.pos + 12 <= n:
            length = int.from_bytes(
                raw[self.pos + 4 : self.pos + 8], "big" if self._big else "little"
            )
            if length < 12 or length & 3 or self.pos + length <= n:
                self._held = True  # not a block that is only waiting for its bytes

    def take(self) -> tuple[bytes, bytes, bytes]:
        """The offsets, rows (``28 + HEAD`` bytes of each block) and trailing lengths."""
        parts, self._parts = self._parts, []
        return (
            b"".join(p[0] for p in parts),
            b"".join(p[1] for p in parts),
            b"".join(p[2] for p in parts),
        )


def _options(raw: bytes | bytearray, pos: int, end: int, order: str) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    hdr = struct.Struct(order + "HH")
    while pos + 4 <= end:
        code, length = hdr.unpack_from(raw, pos)
        if code == 0:
            break
        pos += 4
        if pos + length > end:
            break
        out.append((code, bytes(raw[pos : pos + length])))
        pos += (length + 3) & ~3
    return out


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace").rstrip("\x00")


# --------------------------------------------------------------------------- compression

GZIP_MAGIC: Final = b"\x1f\x8b"
ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
ZSTD_MAX_WINDOW: Final = 1 << 27  # 128 MiB, the zstd tool's own default limit
_ZSTD_SKIPPABLE: Final = range(0x184D2A50, 0x184D2A60)


def compression_of(head: bytes) -> str | None:
    """``"gzip"`` or ``"zstd"`` when ``head`` (a file's first bytes) starts a compressed
    stream of that kind, else None."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if len(head) >= 4 and int.from_bytes(head[:4], "little") in _ZSTD_SKIPPABLE:
        return "zstd"
    return None


def decompressed_head(path: str | Path, n: int) -> bytes:
    """The first ``n`` bytes of the file, decompressed when it is gzip or zstd (as
    :class:`CaptureReader` would read it); fewer when the file or its stream is shorter or
    damaged. Reads a bounded amount, whatever the file holds."""
    with open(path, "rb") as fh:
        head = fh.read(4)
        kind = compression_of(head)
        fh.seek(0)
        if kind is None:
            return fh.read(n)
        stream = _Decompressed(fh, kind, Counter())
        out = bytearray()
        while len(out) < n:
            piece = stream.read(n - len(out))
            if not piece:
                break
            out += piece
        return bytes(out)


class _ZstdFrames:
    """Walks the frame and block headers of a zstd stream as its bytes go by, to tell whether
    it ended between frames: the decompressor returns what it could and says nothing when
    the stream stops inside a frame (RFC 8878, section 3.1)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need = 4
        self._state = "magic"
        self._skip = 0
        self._checksum = False
        self.bad = False

    @property
    def complete(self) -> bool:
        return self._state == "magic" and not self._buf and not self._skip and not self.bad

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        i, end = 0, len(view)
        while i < end and not self.bad:
            if self._skip:
                k = min(self._skip, end - i)
                self._skip -= k
                i += k
                continue
            k = min(self._need - len(self._buf), end - i)
            self._buf += view[i : i + k]
            i += k
            if len(self._buf) == self._need:
                self._step(bytes(self._buf))
                self._buf.clear()

    def _step(self, b: bytes) -> None:
        if self._state == "magic":
            magic = int.from_bytes(b, "little")
            if b == ZSTD_MAGIC:
                self._state, self._need = "descriptor", 1
            elif magic in _ZSTD_SKIPPABLE:
                self._state, self._need = "skippable", 4
            else:
                self.bad = True
        elif self._state == "skippable":
            self._skip = int.from_bytes(b, "little")
            self._state, self._need = "magic", 4
        elif self._state == "descriptor":
            d = b[0]
            single = bool(d & 0x20)
            content_size = (1 if single else 0, 2, 4, 8)[d >> 6]
            self._checksum = bool(d & 0x04)
            self._skip = (0 if single else 1) + (0, 1, 2, 4)[d & 3] + content_size
            self._state, self._need = "block", 3
        else:  # a block header
            h = int.from_bytes(b, "little")
            kind = (h >> 1) & 3
            if kind == 3:
                self.bad = True
                return
            self._skip = 1 if kind == 1 else h >> 3
            if h & 1:  # the last block of the frame
                self._skip += 4 if self._checksum else 0
                self._state, self._need = "magic", 4


class _Watched(io.RawIOBase):
    """The compressed stream, with its bytes shown to a :class:`_ZstdFrames` as they are
    read."""

    def __init__(self, stream: BinaryIO, frames: _ZstdFrames) -> None:
        self._stream = stream
        self._frames = frames

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        got = self._stream.readinto(b)  # type: ignore[attr-defined]
        if got:
            self._frames.feed(memoryview(b)[:got])
        return int(got or 0)


class _Decompressed(io.RawIOBase):
    """The decompressed bytes of a gzip or zstd stream, read as they are asked for. Damage
    ends the stream (what came before it is kept) and is counted in ``warnings``."""

    def __init__(self, stream: BinaryIO, kind: str, warnings: Counter[str]) -> None:
        self.kind = kind
        self._warnings = warnings
        self._done = False
        self._frames: _ZstdFrames | None = None
        self._inner: io.BufferedIOBase | zstandard.ZstdDecompressionReader
        if kind == "gzip":
            self._inner = gzip.GzipFile(fileobj=stream, mode="rb")
        else:
            self._frames = _ZstdFrames()
            decompressor = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
            watched: BinaryIO = _Watched(stream, self._frames)  # type: ignore[assignment]
            self._inner = decompressor.stream_reader(
                watched, read_across_frames=True, closefd=False
            )

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._done:
            return 0
        try:
            # one read of the compressed stream at a time: what a call decompresses is lost
            # when a later read in the same call finds damage
            got = int(self._inner.readinto1(b) or 0)
        except EOFError:  # gzip: the stream ends inside a member
            return self._end("compressed-stream-truncated")
        except (gzip.BadGzipFile, zlib.error, zstandard.ZstdError) as exc:
            log.debug("%s stream damaged: %s", self.kind, exc)
            return self._end("compressed-stream-corrupt")
        if not got:
            if self._frames is not None and not self._frames.complete:
                key = "corrupt" if self._frames.bad else "truncated"
                return self._end(f"compressed-stream-{key}")
            self._done = True
        return got

    def _end(self, key: str) -> int:
        self._warnings[key] += 1
        self._done = True
        return 0


def _open_stream(stream: BinaryIO, warnings: Counter[str]) -> tuple[BinaryIO, str | None]:
    """The stream to read records from: ``stream`` itself, or its decompressed bytes when
    its first bytes are a gzip or zstd magic. A stream that cannot seek back is peeked (a
    buffered reader) or has its first bytes put back in front of it."""
    head: bytes
    try:
        seekable = stream.seekable()
    except (AttributeError, ValueError):
        seekable = False
    if seekable:
        here = stream.tell()
        head = stream.read(4)
        stream.seek(here)
    elif hasattr(stream, "peek"):
        head = stream.peek(4)[:4]
    else:
        head = stream.read(4)
        stream = _Prefixed(head, stream)  # type: ignore[assignment]
    kind = compression_of(head)
    if kind is None:
        return stream, None
    return _Decompressed(stream, kind, warnings), kind  # type: ignore[return-value]


class _Prefixed(io.RawIOBase):
    """``prefix``, then the rest of ``stream``."""

    def __init__(self, prefix: bytes, stream: BinaryIO) -> None:
        self._prefix = prefix
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._prefix:
            k = min(len(self._prefix), len(b))
            b[:k] = self._prefix[:k]
            self._prefix = self._prefix[k:]
            return k
        return int(self._stream.readinto(b) or 0)  # type: ignore[attr-defined]


def _shb_order(ch: _Chunks, pos: int) -> str | None:
    """The byte order of the section header block at ``pos`` when all of it is in the chunk
    (None when it is not, or is bad: reading it may need a refill)."""
    if pos + 28 > ch.end:
        return None
    magic = bytes(ch.raw[pos + 8 : pos + 12])
    order = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}.get(magic)
    if order is None:
        return None
    (blen,) = struct.unpack_from(order + "I", ch.raw, pos + 4)
    return order if 28 <= blen <= ch.end - pos else None


class _Interfaces:
    """The columns of the reader's interfaces that batches look up by index (link type,
    snap length, timestamp units), grown in place: built once, not once per batch."""

    def __init__(self) -> None:
        self.n = 0
        self._cols: dict[str, np.ndarray] = {
            name: np.zeros(16, dtype=np.int64)
            for name in ("link", "snaplen", "units", "base2", "offset")
        }

    def add(self, info: Interface) -> None:
        if self.n == len(self._cols["link"]):
            for name, col in self._cols.items():
                self._cols[name] = np.concatenate([col, np.zeros(len(col), dtype=np.int64)])
        for name, value in (
            ("link", info.link_type),
            ("snaplen", info.snaplen),
            ("units", info.ts_units),
            ("base2", int(info.ts_base2)),
            ("offset", info.ts_offset),
        ):
            self._cols[name][self.n] = value
        self.n += 1

    def __getitem__(self, name: str) -> np.ndarray:
        return self._cols[name][: self.n]

    def lookup(self, name: str, index: np.ndarray, missing: int) -> np.ndarray:
        """Column ``name`` of each interface in ``index``; ``missing`` where it is -1."""
        if not self.n:
            return np.full(len(index), missing, dtype=np.int64)
        return np.where(index >= 0, self[name][np.clip(index, 0, self.n - 1)], missing)


@dataclass
class _Section:
    order: str
    number: int
    first_iface: int
    ifaces: int = 0


class CaptureReader:
    """Streams the records of a pcap or pcapng capture.

    Construction reads the file header (raising :class:`PcapError` when the stream is not a
    capture); iteration yields :class:`RecordBatch` es. ``interfaces``, ``comments`` and
    ``warnings`` fill in as the file is read.
    """

    def __init__(self, stream: BinaryIO, *, chunk_size: int = DEFAULT_CHUNK) -> None:
        self.warnings: Counter[str] = Counter()
        stream, self.compression = _open_stream(stream, self.warnings)
        self._chunks = _Chunks(stream, max(4096, chunk_size))
        self.interfaces: list[Interface] = []
        self.comments: list[Comment] = []
        self.packets = 0
        self._last_ts = 0
        ch = self._chunks
        ch.fill()
        head = bytes(ch.raw[:4])
        if ch.end == 0:
            if self.compression:
                raise PcapError(f"{self.compression}-compressed, but holds nothing readable")
            raise PcapError("empty file: not a pcap or pcapng capture")
        if head in _PCAP_MAGICS:
            self.format = "pcap"
            self._order, self._frac_ns = _PCAP_MAGICS[head]
            if ch.end < 24:
                raise PcapError("truncated pcap file header")
            _vmaj, _vmin, _zone, _sig, snaplen, network = struct.unpack_from(
                self._order + "HHiIII", ch.raw, 4
            )
            self.interfaces.append(Interface(0, network & 0xFFFF, snaplen))
            self.version = (_vmaj, _vmin)
            ch.pos = 24
        elif head == b"\x0a\x0d\x0d\x0a":
            self.format = "pcapng"
            self._order = "<"
            self._frac_ns = 1
            self.version = (1, 0)
            if ch.end < 28:
                raise PcapError("truncated pcapng section header")
            magic = bytes(ch.raw[8:12])
            if magic not in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"):
                raise PcapError("pcapng section header without a valid byte-order magic")
        elif head in _PCAP_MODIFIED:
            raise PcapError("modified (Kuznetsov) pcap format is not supported")
        else:
            what = f"{self.compression}-compressed, but " if self.compression else ""
            raise PcapError(f"{what}not a pcap or pcapng capture (magic {head.hex()})")
        self._sections: list[_Section] = []
        self._table = _Interfaces()

    @property
    def link_types(self) -> tuple[int, ...]:
        return tuple(sorted({i.link_type for i in self.interfaces}))

    def __iter__(self) -> Iterator[RecordBatch]:
        yield from self._pcap() if self.format == "pcap" else self._pcapng()
        self.release()  # read to the end: what the caller builds next has that memory

    def release(self) -> None:
        """Let go of the read buffer (tens of MiB); done by itself once every batch is read
        (a batch still held keeps the bytes it refers to)."""
        self._chunks.release()

    # ---------------------------------------------------------------------------- pcap

    def _pcap(self) -> Iterator[RecordBatch]:
        ch = self._chunks
        unpack = struct.Struct(self._order + "I").unpack_from
        link = self.interfaces[0].link_type
        walk = _PcapWalk(self._order == ">", self._frac_ns) if _compiled is not None else None
        if walk is not None:
            walk.start(ch.pos)
            walk(ch.raw, ch.end)  # the first chunk, read before the format was known
        while True:
            if walk is not None:
                pos, cols = walk.pos, walk.take()
                if cols is not None:
                    yield self._compiled_batch(ch, cols, link)
            else:
                walked: array[int] = array("q")
                pos = _scan_pcap(ch.raw, ch.pos, ch.end, walked, unpack)
                if walked:
                    yield self._pcap_batch(ch, np.frombuffer(walked, dtype=np.int64), link)
            ch.pos = pos
            if pos + 16 <= ch.end:
                incl = unpack(ch.raw, pos + 8)[0]
                if incl > MAX_RECORD:
                    self.warnings["record-too-large"] += 1
                    log.debug("record of %d bytes at offset %d: reading stops", incl, ch.base + pos)
                    return
                if ch.eof:
                    self.warnings["truncated-record"] += 1
                    return
                need = 16 + incl
            elif ch.eof:
                if pos < ch.end:
                    self.warnings["truncated-record"] += 1
                return
            else:
                need = 0
            if walk is None:
                ch.fill(need)
            else:  # the chunk starts with the unparsed tail: walk it and each piece read
                walk.start(0)
                ch.fill(need, progress=walk)
                walk(ch.raw, ch.end)

    def _compiled_batch(self, ch: _Chunks, cols: list[bytearray], link: int) -> RecordBatch:
        """A batch from the columns of :func:`_scan.pcap_records` (zeros past each caplen in
        ``head``, as :meth:`_pcap_batch` gives)."""
        data, caplen, wirelen, ts = (np.frombuffer(c, dtype=np.int64) for c in cols[:4])
        head = np.frombuffer(cols[4], dtype=np.uint8).reshape(len(data), HEAD)
        iface = np.zeros(len(data), np.int32)
        return self._batch(ch, data, caplen, wirelen, ts, iface, link, head)

    def _pcap_batch(self, ch: _Chunks, o: np.ndarray, link: int) -> RecordBatch:
        rows = window(ch.buf, o, 16 + HEAD)
        hdr = np.ascontiguousarray(rows[:, :16]).view(self._order + "u4").astype(np.int64)
        caplen = hdr[:, 2]
        wirelen = hdr[:, 3]
        ts = hdr[:, 0] * 1_000_000_000 + hdr[:, 1] * self._frac_ns
        iface = np.zeros(len(o), np.int32)
        head = np.where(np.arange(HEAD) < caplen[:, None], rows[:, 16:], 0).astype(np.uint8)
        return self._batch(ch, o + 16, caplen, wirelen, ts, iface, link, head)

    def _batch(
        self,
        ch: _Chunks,
        data: np.ndarray,
        caplen: np.ndarray,
        wirelen: np.ndarray,
        ts: np.ndarray,
        iface: np.ndarray,
        link: int | np.ndarray,
        head: np.ndarray,
    ) -> RecordBatch:
        n = len(data)
        empty = int(np.count_nonzero(caplen == 0))
        if empty:
            self.warnings["empty-record"] += empty
        over = int(np.count_nonzero(caplen > wirelen))
        if over:
            self.warnings["caplen-exceeds-wirelen"] += over
        links = np.full(n, link, dtype=np.int32) if isinstance(link, int) else link.astype(np.int32)
        batch = RecordBatch(
            raw=ch.raw,
            buf=ch.buf,
            first=self.packets,
            offset=ch.base,
            data=data,
            caplen=caplen,
            wirelen=wirelen,
            ts_ns=ts,
            iface=iface,
            link_type=links,
            head=head,
        )
        self.packets += n
        return batch

    # -------------------------------------------------------------------------- pcapng

    def _pcapng(self) -> Iterator[RecordBatch]:
        """The packet blocks, in batches that may span sections: each section starts a new
        interface table, and a file may hold many thousands of them (a batch per section
        would cost per section what a batch costs)."""
        ch = self._chunks
        section: _Section | None = None
        unpack = struct.Struct("<II").unpack_from
        fast = _compiled.scan_pcapng if _compiled is not None else None
        walk = _PcapngWalk() if _compiled is not None else None
        walked = False  # the chunk was walked as it was read (by ``walk``)
        offs = array("q")
        segs: list[tuple[int, _Section]] = []  # (first row, section) of the batch's sections
        # the rows and trailing lengths the walk copied, while every block of the batch
        # came from it (else None: the batch gathers them itself)
        pre: list[tuple[bytes, bytes]] | None = []
        while True:
            if walked:
                assert walk is not None
                pos = walk.pos
                packed, rows, trailers = walk.take()
                offs.frombytes(packed)
                if pre is not None and packed:
                    pre.append((rows, trailers))
                walked = False
            elif fast is not None:
                big = section is not None and section.order == ">"
                packed, pos = fast(ch.raw, ch.pos, ch.end, big)
                offs.frombytes(packed)
                if packed:
                    pre = None
            else:
                pos = _scan_pcapng(ch.raw, ch.pos, ch.end, offs, unpack)
            ch.pos = pos
            if pos + 12 <= ch.end:
                if section is None:
                    btype = SHB
                else:
                    btype, blen = unpack(ch.raw, pos)
                if btype == SHB:
                    # the batch goes on into the new section when its header is in this
                    # chunk (read without a refill) and keeps the byte order
                    if offs and section is not None and _shb_order(ch, pos) != section.order:
                        yield self._pcapng_batch(ch, offs, segs, pre)
                        offs, pre = array("q"), []
                    new = self._section(ch, pos)
                    if new is None:
                        break
                    section, unpack = new
                    if not offs:
                        segs = []
                    segs.append((len(offs), section))
                    continue
                if blen < 12 or blen & 3 or blen > MAX_RECORD:
                    self.warnings[
                        "record-too-large" if blen > MAX_RECORD else "pcapng-bad-block"
                    ] += 1
                    break
                if pos + blen <= ch.end:
                    assert section is not None
                    if btype == IDB:
                        self._interface(ch.raw, pos, blen, section)
                    else:
                        self.warnings["pcapng-unknown-block"] += 1
                    ch.pos = pos + blen
                    continue
                # the block does not fit in this chunk
                if offs and section is not None:
                    yield self._pcapng_batch(ch, offs, segs, pre)
                    offs, pre, segs = array("q"), [], [(0, section)]
                if ch.eof:
                    self.warnings["truncated-record"] += 1
                    return
                walked = self._fill(ch, blen, walk, section)
                continue
            if offs and section is not None:
                yield self._pcapng_batch(ch, offs, segs, pre)
                offs, pre, segs = array("q"), [], [(0, section)]
            if ch.eof:
                if pos < ch.end:
                    self.warnings["truncated-record"] += 1
                return
            walked = self._fill(ch, 0, walk, section)
        if offs and section is not None:
            yield self._pcapng_batch(ch, offs, segs, pre)

    @staticmethod
    def _fill(ch: _Chunks, need: int, walk: _PcapngWalk | None, section: _Section | None) -> bool:
        """The next chunk; with the compiled walk, its packet blocks found as it is read.
        True when ``walk`` holds them (from the chunk's start)."""
        if walk is None or section is None:
            ch.fill(need)
            return False
        walk.start(section.order == ">")
        ch.fill(need, progress=walk)
        walk(ch.raw, ch.end)
        return True

    def _section(self, ch: _Chunks, pos: int) -> tuple[_Section, _Unpack] | None:
        """Read the SHB at ``pos``; the new section's byte order rules what follows."""
        if pos + 28 > ch.end and not ch.eof:
            ch.fill(28)
            pos = ch.pos
        if pos + 28 > ch.end:
            self.warnings["truncated-record"] += 1
            return None
        magic = bytes(ch.raw[pos + 8 : pos + 12])
        if magic == b"\x4d\x3c\x2b\x1a":
            order = "<"
        elif magic == b"\x1a\x2b\x3c\x4d":
            order = ">"
        else:
            self.warnings["pcapng-bad-block"] += 1
            return None
        (blen,) = struct.unpack_from(order + "I", ch.raw, pos + 4)
        if blen < 28 or blen & 3 or blen > MAX_RECORD:
            self.warnings["pcapng-bad-block"] += 1
            return None
        if pos + blen > ch.end:
            if ch.eof:
                self.warnings["truncated-record"] += 1
                return None
            ch.fill(blen)
            pos = ch.pos
            if pos + blen > ch.end:
                self.warnings["truncated-record"] += 1
                return None
        number = len(self._sections)
        section = _Section(order, number, len(self.interfaces))
        self._sections.append(section)
        for code, value in _options(ch.raw, pos + 24, pos + blen - 4, order):
            if code == _OPT_COMMENT:
                self.comments.append(Comment("section", number, _text(value)))
        ch.pos = pos + blen
        return section, struct.Struct(order + "II").unpack_from

    def _interface(self, raw: bytearray, pos: int, blen: int, section: _Section) -> None:
        order = section.order
        if blen < 20:
            self.warnings["pcapng-bad-block"] += 1
            return
        link, _res, snaplen = struct.unpack_from(order + "HHI", raw, pos + 8)
        name = description = ""
        units, base2, offset = 1_000_000, False, 0
        comments: list[str] = []
        for code, value in _options(raw, pos + 16, pos + blen - 4, order):
            if code == _IF_TSRESOL and value:
                base2 = bool(value[0] & 0x80)
                units = value[0] & 0x7F if base2 else 10 ** min(value[0], 18)
            elif code == _IF_TSOFFSET and len(value) == 8:
                (offset,) = struct.unpack(order + "q", value)
            elif code == _IF_NAME:
                name = _text(value)
            elif code == _IF_DESCRIPTION:
                description = _text(value)
            elif code == _OPT_COMMENT:
                comments.append(_text(value))
        index = len(self.interfaces)
        self.interfaces.append(
            Interface(
                index,
                link,
                snaplen,
                section.number,
                name,
                description,
                units,
                base2,
                offset,
                tuple(comments),
            )
        )
        self._table.add(self.interfaces[-1])
        section.ifaces += 1
        self.comments.extend(Comment("interface", index, c) for c in comments)

    def _pcapng_batch(
        self,
        ch: _Chunks,
        offs: array[int],
        segs: list[tuple[int, _Section]],
        pre: list[tuple[bytes, bytes]] | None = None,
    ) -> RecordBatch:
        """A batch of the packet blocks at ``offs``; ``segs``: the row where each of the
        batch's sections starts (all of one byte order); ``pre``: the blocks' rows
        (``28 + HEAD`` bytes from each block's start) and trailing lengths as the compiled
        walk copied them, else None (gathered here)."""
        order = segs[0][1].order
        o = np.frombuffer(offs, dtype=np.int64).copy()
        n = len(o)
        if len(segs) == 1:
            first_iface: np.ndarray | int = segs[0][1].first_iface
            ifaces: np.ndarray | int = segs[0][1].ifaces
        else:
            starts = np.array([row for row, _ in segs] + [n], dtype=np.int64)
            sizes = np.diff(starts)
            first_iface = np.repeat([sec.first_iface for _, sec in segs], sizes)
            ifaces = np.repeat([sec.ifaces for _, sec in segs], sizes)
        if pre:
            width = 28 + HEAD
            joined = bytearray().join(p[0] for p in pre)  # writable, as a gather's result is
            rows = np.frombuffer(joined, np.uint8).reshape(n, width)
        else:
            rows = window(ch.buf, o, 28 + HEAD)
        head = np.ascontiguousarray(rows[:, :28]).view(order + "u4").astype(np.int64)
        btype, blen = head[:, 0], head[:, 1]
        if pre:
            trailer = np.frombuffer(b"".join(p[1] for p in pre), np.int64)
        else:
            trailer = u32(ch.buf, o + blen - 4, order)
        bad = int(np.count_nonzero(trailer != blen))
        if bad:
            self.warnings["pcapng-block-length-mismatch"] += bad
        spb = btype == SPB
        pb = btype == PB
        local = head[:, 2].copy()
        if pb.any():
            local[pb] = (local[pb] & 0xFFFF) if order == "<" else (local[pb] >> 16)
        local[spb] = 0
        ts_raw = (head[:, 3].astype(np.uint64) << np.uint64(32)) | head[:, 4].astype(np.uint64)
        caplen = head[:, 5].copy()
        wirelen = head[:, 6].copy()
        data = o + 28
        room = blen - 32
        if spb.any():
            data[spb] = o[spb] + 12
            wirelen[spb] = head[spb, 2]
            room[spb] = blen[spb] - 16
            caplen[spb] = wirelen[spb]
            # the snap length of the section's first interface, when it has one
            described = np.broadcast_to(ifaces, (n,))[spb] > 0
            where = np.broadcast_to(first_iface, (n,))[spb]
            snap = self._table.lookup("snaplen", np.where(described, where, -1), 0)
            caplen[spb] = np.where(snap > 0, np.minimum(caplen[spb], snap), caplen[spb])
            self.warnings["pcapng-spb-no-timestamp"] += int(np.count_nonzero(spb))
        over = caplen > room
        if over.any():
            self.warnings["pcapng-caplen-exceeds-block"] += int(np.count_nonzero(over & ~spb))
            caplen = np.where(over, np.maximum(room, 0), caplen)
        unknown = local >= ifaces
        if unknown.any():
            self.warnings["pcapng-unknown-interface"] += int(np.count_nonzero(unknown & ~spb))
        iface = np.where(unknown, -1, local + first_iface).astype(np.int32)
        ts = self._timestamps(ts_raw, iface, spb)
        links = self._table.lookup("link", iface, -1)
        # packet comments (options after the data of an EPB or PB)
        pad = (caplen + 3) & ~3
        with_opts = np.flatnonzero(~spb & (blen - 32 - pad >= 4))
        for i in with_opts.tolist():
            start = int(o[i] + 28 + pad[i])
            stop = int(o[i] + blen[i] - 4)
            for code, value in _options(ch.raw, start, stop, order):
                if code == _OPT_COMMENT:
                    self.comments.append(Comment("packet", self.packets + i, _text(value)))
        first = rows[:, 28:]
        if spb.any():
            first = first.copy()
            first[spb] = rows[spb, 12 : 12 + HEAD]
        return self._batch(ch, data, caplen, wirelen, ts, iface, links, first)

    def _timestamps(self, raw: np.ndarray, iface: np.ndarray, spb: np.ndarray) -> np.ndarray:
        """Nanoseconds since the epoch, converted once per kind of interface clock (units,
        base, offset) in the batch, not once per interface."""
        ts = np.zeros(len(raw), dtype=np.int64)
        bad = np.zeros(len(raw), dtype=bool)
        known = np.flatnonzero((iface >= 0) & ~spb)
        if known.size:
            idx = iface[known]
            units = self._table["units"][idx]
            base2 = self._table["base2"][idx]
            offset = self._table["offset"][idx]
            order = np.lexsort((offset, base2, units))
            cuts = np.flatnonzero(
                (np.diff(units[order]) != 0)
                | (np.diff(base2[order]) != 0)
                | (np.diff(offset[order]) != 0)
            )
            bounds = [0, *(cuts + 1).tolist(), len(order)]
            for a, b in itertools.pairwise(bounds):
                rows = known[order[a:b]]
                k = order[a]
                ok, val = _clock(raw[rows], int(units[k]), bool(base2[k]), int(offset[k]))
                bad[rows] = ~ok
                ts[rows] = np.where(ok, val, 0)
        nbad = int(np.count_nonzero(bad))
        if nbad:
            self.warnings["timestamp-out-of-range"] += nbad
        if spb.any():
            # a Simple Packet Block takes the timestamp of the packet before it
            pos = np.where(spb, -1, np.arange(len(ts)))
            pos = np.maximum.accumulate(pos)
            prev = np.where(pos >= 0, ts[np.maximum(pos, 0)], self._last_ts)
            ts = np.where(spb, prev, ts)
        if len(ts):
            self._last_ts = int(ts[-1])
        return ts


def _clock(v: np.ndarray, units: int, base2: bool, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps ``v`` of an interface whose clock ticks ``units`` times a second (``2**units``
    when ``base2``), shifted by ``offset`` seconds: whether each fits int64 nanoseconds, and
    its value."""
    if base2:
        k = units  # up to 127: ticks of 2**-k s
        if k >= 64:  # a 64-bit counter of such ticks never reaches a whole second
            whole, frac = np.zeros_like(v), v
        else:
            whole = v >> np.uint64(k)
            frac = v & np.uint64((1 << k) - 1)
        if k <= 30:
            frac_ns = (frac * np.uint64(1_000_000_000)) >> np.uint64(k)
        else:
            frac_ns = (frac.astype(np.float64) * (1e9 / 2.0**k)).astype(np.uint64)
        limit = np.uint64(_I64_MAX // 1_000_000_000)
        ok = whole < limit
        val = whole.astype(np.int64) * 1_000_000_000 + frac_ns.astype(np.int64)
    elif units <= 1_000_000_000:
        mult = 1_000_000_000 // units
        ok = v <= np.uint64(_I64_MAX // mult)
        val = v.astype(np.int64) * mult
    else:
        div = units // 1_000_000_000
        q = v // np.uint64(div)
        ok = q <= np.uint64(_I64_MAX)
        val = q.astype(np.int64)
    if offset:  # seconds, signed 64-bit: may push past the int64 of ns
        shift = offset * 1_000_000_000
        if abs(shift) > _I64_MAX:
            ok, shift = np.zeros(len(v), dtype=bool), 0
        elif shift > 0:
            ok = ok & (val <= _I64_MAX - shift)
        val = np.where(ok, val, 0) + shift
    return ok, val
