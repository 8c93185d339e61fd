"""Reading a tar archive that may be hostile, member by member, without extracting it.

A member is refused, and the whole archive with it, when its name is absolute, holds ``..``,
``.`` or an empty part, a backslash, a NUL or another control character, is not UTF-8, is
longer than a file system takes (a part over 255 bytes, the whole over 4095), or repeats an
earlier member's name; when it is anything but a regular file or a directory (links, devices,
FIFOs, sparse files); and when it is larger than the limits allow. The decompressed stream is
bounded as a whole, no single read of tarfile's (a PAX or GNU long-name header) may exceed a
small cap, and the headers of all members together are bounded too; tarfile's list of every
header it read is emptied as it goes. So neither a gzip bomb nor forged headers can exhaust
memory or disk. Plain tar and gzip are read.
"""

from __future__ import annotations

import errno
import gzip
import re
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from auditor.evidence import EvidenceError
from auditor.fsutil import open_regular

GiB = 1024**3
MiB = 1024**2
CHUNK = 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"


class UnsafeArchiveError(EvidenceError):
    """The archive holds a member that cannot be read safely; nothing of it is used."""


NAME_MAX = 255  # bytes in one part of a path (Linux, and most file systems)
PATH_MAX = 4095  # bytes in a whole path (Linux's PATH_MAX, 4096, counts the final NUL)
_SHOWN = 120  # characters of a refused name quoted in an error
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    max_member_size: int = 16 * GiB
    max_total_size: int = 64 * GiB
    max_members: int = 1_000_000
    max_header: int = 4 * MiB  # one PAX or GNU long-name header
    # all headers together: a member's own 512-byte block and one PAX record of a name of up to
    # ~490 bytes take 3 blocks; more than that on average, past max_header_total, is refused
    max_header_total: int = 64 * MiB
    header_per_member: int = 3 * 512
    max_in_memory: int = 64 * MiB  # a member that is parsed (bundle.json, manifest.json)


DEFAULT_LIMITS = ArchiveLimits()


def shown(name: str) -> str:
    """A member name as an error quotes it: repr (no control character reaches a terminal),
    cut to a readable length."""
    text = repr(name)
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}... ({len(name)} characters)"


def check_name(name: str) -> str:
    """``name`` if it is a safe relative member name, else :class:`UnsafeArchiveError`."""
    if not name:
        raise UnsafeArchiveError("archive member with an empty name; refusing the archive")
    if "\x00" in name or "\\" in name:
        raise UnsafeArchiveError(f"archive member {shown(name)}: NUL or backslash in its name")
    if _CONTROL.search(name):
        raise UnsafeArchiveError(
            f"archive member {shown(name)}: control character in its name; refusing the archive"
        )
    if _SURROGATE.search(name):
        raise UnsafeArchiveError(
            f"archive member {shown(name)}: its name is not UTF-8; refusing the archive"
        )
    if name.startswith("/"):
        raise UnsafeArchiveError(
            f"archive member {shown(name)}: absolute path; refusing the archive"
        )
    size = len(name.encode("utf-8"))
    if size > PATH_MAX:
        raise UnsafeArchiveError(
            f"archive member {shown(name)}: a name of {size} bytes, longer than a path may be "
            f"({PATH_MAX}); refusing the archive"
        )
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise UnsafeArchiveError(
            f"archive member {shown(name)}: path with '..', '.' or an empty part could escape "
            "the destination; refusing the archive"
        )
    for p in parts:
        if len(p.encode("utf-8")) > NAME_MAX:
            raise UnsafeArchiveError(
                f"archive member {shown(name)}: a part of {len(p.encode('utf-8'))} bytes, "
                f"longer than a file name may be ({NAME_MAX}); refusing the archive"
            )
    return name


def _kind(ti: tarfile.TarInfo) -> str:
    if ti.issym():
        return f"symbolic link (to {shown(ti.linkname)})"
    if ti.islnk():
        return f"hard link (to {shown(ti.linkname)})"
    if ti.ischr() or ti.isblk():
        return "device"
    if ti.isfifo():
        return "FIFO"
    if ti.issparse():
        return "sparse file"
    return f"type {ti.type!r}"


class _Bounded:
    """A read-only view of the decompressed stream that counts what is read and refuses to go
    past ``limit`` bytes or to serve one read larger than ``max_read``. Bytes handed back with
    :meth:`unread` are served again first (a header looked at before tarfile parses it)."""

    def __init__(self, raw: IO[bytes], limit: int, max_read: int):
        self.raw = raw
        self.limit = limit
        self.max_read = max_read
        self.name = None
        self.last = b""  # the last 512 bytes read
        self.pending = b""

    def _keep(self, data: bytes) -> bytes:
        self.last = data[-512:] if len(data) >= 512 else (self.last + data)[-512:]
        return data

    def unread(self, data: bytes) -> None:
        self.pending = data + self.pending

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > self.max_read:
            raise UnsafeArchiveError(
                f"archive header or read of {n} bytes exceeds {self.max_read}; refusing the archive"
            )
        head = b""
        if self.pending:
            head, self.pending = self.pending[:n], self.pending[n:]
            if len(head) == n:
                return self._keep(head)
            n -= len(head)
        if self.raw.tell() + n > self.limit:
            n = max(0, self.limit - self.raw.tell())
            data = self.raw.read(n + 1)
            if len(data) > n:
                raise UnsafeArchiveError(
                    f"archive expands to more than {self.limit} bytes; refusing it"
                )
            return self._keep(head + data)
        return self._keep(head + self.raw.read(n))

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence != 0:
            raise OSError("only absolute seeks")
        if pos > self.limit:
            raise UnsafeArchiveError(
                f"archive expands to more than {self.limit} bytes; refusing it"
            )
        self.pending = b""
        return self.raw.seek(pos)

    def tell(self) -> int:
        return self.raw.tell() - len(self.pending)

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


MAX_PAX = 8 * 1024  # a PAX header: a path of PATH_MAX bytes and a few numbers fit
MAX_DIGITS = 200  # in a run, in a PAX header
_LONG_DIGITS = re.compile(rb"[0-9]{%d}" % (MAX_DIGITS + 1))


class _CheckedTarInfo(tarfile.TarInfo):
    """tarfile's header, but a PAX or GNU long-name header is looked at before tarfile parses
    it. Python's tarfile (before 3.12.6, CVE-2024-6232) searches a PAX header with regular
    expressions that take quadratic time on a run of digits: 64 KB of digits took 35 s, the
    4 MiB a header may be would take days. Nothing auditor writes needs a PAX header over
    :data:`MAX_PAX` bytes, a run of over :data:`MAX_DIGITS` digits in one, or a long name
    over :data:`PATH_MAX` bytes."""

    def _proc_pax(self, tarfile: tarfile.TarFile) -> tarfile.TarInfo:
        fileobj = tarfile.fileobj
        if self.size > MAX_PAX or not isinstance(fileobj, _Bounded):
            raise UnsafeArchiveError(
                f"a PAX header of {self.size} bytes (more than {MAX_PAX}) at byte "
                f"{self.offset}; refusing the archive"
            )
        data = fileobj.read(self._block(self.size))  # type: ignore[attr-defined]
        if _LONG_DIGITS.search(data):
            raise UnsafeArchiveError(
                f"a PAX header at byte {self.offset} with a run of more than {MAX_DIGITS} "
                "digits; refusing the archive"
            )
        fileobj.unread(data)
        return super()._proc_pax(tarfile)  # type: ignore[misc]

    def _proc_gnulong(self, tarfile: tarfile.TarFile) -> tarfile.TarInfo:
        if self.size > PATH_MAX + 1:
            raise UnsafeArchiveError(
                f"a GNU long name of {self.size} bytes (more than {PATH_MAX}) at byte "
                f"{self.offset}; refusing the archive"
            )
        return super()._proc_gnulong(tarfile)  # type: ignore[misc]


_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError)


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    size: int
    stream: IO[bytes]

    def chunks(self) -> Iterator[bytes]:
        left = self.size
        while left > 0:
            try:
                data = self.stream.read(min(CHUNK, left))
            except _READ_ERRORS as exc:
                raise EvidenceError(f"archive member {self.name}: unreadable: {exc}") from None
            if not data:
                raise EvidenceError(f"archive member {self.name}: truncated")
            left -= len(data)
            yield data


def iter_members(path: Path, limits: ArchiveLimits = DEFAULT_LIMITS) -> Iterator[Member]:
    """Every regular-file member of the archive at ``path``, in archive order, as a stream to
    read before asking for the next one. Directory members are checked, then skipped.

    Raises :class:`UnsafeArchiveError` at the first unsafe member and :class:`EvidenceError`
    when the file is not a readable (gzip) tar archive."""
    path = Path(path)
    try:  # a FIFO given as the bundle would wait for a writer forever
        fh = open_regular(path)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            raise EvidenceError(f"{path}: not a regular file; a bundle is a file") from None
        raise EvidenceError(f"{path}: cannot open: {exc.strerror or exc}") from None
    with fh:
        magic = fh.read(2)
        fh.seek(0)
        stream: Any = gzip.GzipFile(fileobj=fh, mode="rb") if magic == _GZIP_MAGIC else fh
        bound = (
            limits.max_total_size
            + limits.max_header_total
            + limits.max_members * (limits.header_per_member + 512)  # headers, data padding
            + 20 * 512  # the end-of-archive blocks
        )
        bounded = _Bounded(stream, bound, limits.max_header)
        try:
            tf = tarfile.open(  # type: ignore[call-overload]
                fileobj=bounded, mode="r:", tarinfo=_CheckedTarInfo
            )
        except UnsafeArchiveError:
            raise
        except (*_READ_ERRORS, ValueError) as exc:
            raise EvidenceError(f"{path}: not a readable tar archive: {exc}") from None
        with tf:
            yield from _members(path, tf, limits)
            _check_end(path, tf, bounded)


MAX_TRAILER = 1024 * 1024


def _check_end(path: Path, tf: tarfile.TarFile, bounded: _Bounded) -> None:
    """After the end-of-archive block only zeros may follow (a tar record is padded to
    10 KiB): members hidden past it would be extracted by ``tar --ignore-zeros`` but never
    checked here."""
    left = MAX_TRAILER
    try:
        pos = bounded.tell()
        if pos == tf.offset + 512:  # the block tarfile took for the end (seeking back rewinds)
            if bounded.last.count(0) != 512:
                raise UnsafeArchiveError(
                    f"{path}: a damaged header after the last member (hidden members?); "
                    "refusing the archive"
                )
        elif pos != tf.offset:
            bounded.seek(tf.offset)
        while left > 0:
            data = bounded.read(min(CHUNK, left))
            if not data:
                return
            if data.count(0) != len(data):
                raise UnsafeArchiveError(
                    f"{path}: data after the end of the archive (hidden members?); refusing it"
                )
            left -= len(data)
    except UnsafeArchiveError:
        raise
    except (*_READ_ERRORS, ValueError) as exc:
        raise EvidenceError(f"{path}: damaged archive after its last member: {exc}") from None
    raise UnsafeArchiveError(f"{path}: more than {MAX_TRAILER} bytes after the end of the archive")


def _next(path: Path, tf: tarfile.TarFile, count: int) -> tarfile.TarInfo | None:
    try:
        ti = tf.next()
    except UnsafeArchiveError:
        raise
    except (*_READ_ERRORS, ValueError) as exc:  # ValueError: a PAX length of 5000 digits
        raise EvidenceError(f"{path}: damaged archive after {count} members: {exc}") from None
    # tarfile keeps every header it has read (for getmembers()); nothing here needs them, and
    # a hostile archive's could fill memory
    tf.members.clear()  # type: ignore[attr-defined]
    if tf.pax_headers:
        # a global header applies to every later member; auditor writes none, and what it
        # holds would be kept for the rest of the archive
        raise UnsafeArchiveError(
            f"{path}: a global PAX header before member {count + 1}; refusing the archive"
        )
    return ti


def _members(path: Path, tf: tarfile.TarFile, limits: ArchiveLimits) -> Iterator[Member]:
    seen: set[str] = set()
    count = 0
    total = 0
    headers = 0
    start = 0  # where the next member's headers begin
    while True:
        ti = _next(path, tf, count)
        if ti is None:
            return
        count += 1
        if count > limits.max_members:
            raise UnsafeArchiveError(f"{path}: more than {limits.max_members} members")
        headers += ti.offset_data - start
        start = tf.offset
        if headers > limits.max_header_total + count * limits.header_per_member:
            raise UnsafeArchiveError(
                f"{path}: the headers of its first {count} members take {headers} bytes, more "
                f"than {limits.max_header_total} plus {limits.header_per_member} a member; "
                "refusing the archive"
            )
        name = check_name(ti.name)
        if name in seen:
            raise UnsafeArchiveError(
                f"archive member {shown(name)} appears twice; refusing the archive"
            )
        seen.add(name)
        if ti.isdir():
            continue
        if not ti.isreg() or ti.issparse():
            raise UnsafeArchiveError(
                f"archive member {shown(name)} is a {_kind(ti)}; only regular files are accepted"
            )
        if ti.size < 0 or ti.size > limits.max_member_size:
            raise UnsafeArchiveError(
                f"archive member {shown(name)}: {ti.size} bytes, over the "
                f"{limits.max_member_size} limit"
            )
        total += ti.size
        if total > limits.max_total_size:
            raise UnsafeArchiveError(f"{path}: members add up to more than {limits.max_total_size}")
        fobj = tf.extractfile(ti)
        if fobj is None:  # pragma: no cover - regular files always have a stream
            raise EvidenceError(f"archive member {shown(name)}: no data")
        yield Member(name, ti.size, fobj)
