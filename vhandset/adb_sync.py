"""adbd's ``sync:`` service (``adb push``/``pull``/``ls``) over a virtual filesystem.

Layouts follow AOSP's ``file_sync_protocol.h``: v1 ``STAT``/``LIST``/``SEND``/``RECV`` plus the
``stat_v2``/``ls_v2`` records (``STA2``, ``LST2``, ``LIS2``/``DNT2``). ``SND2``/``RCV2`` are not
advertised, so the host never sends them. Records arrive cut at arbitrary WRTE boundaries; the
channel reassembles them.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import struct
import zlib
from typing import Protocol

from vhandset.interface import FileStat, VirtualFS

logger = logging.getLogger(__name__)

SYNC_DATA_MAX = 64 * 1024
MAX_PATH_LENGTH = 1024
MAX_PUSH_SIZE = 1 << 30  # files live in memory: a larger push is refused, not buffered

REQUEST = struct.Struct("<4sI")  # also DATA/DONE/OKAY/FAIL: id, size
STAT_V1 = struct.Struct("<4sIII")  # id, mode, size, mtime
# id, error, dev, ino, mode, nlink, uid, gid, size, atime, mtime, ctime
STAT_V2 = struct.Struct("<4sIQQIIIIQqqq")
DENT_V1 = struct.Struct("<4sIIII")  # id, mode, size, mtime, namelen
DENT_V2 = struct.Struct("<4sIQQIIIIQqqqI")  # STAT_V2 fields, then namelen

_U32 = 0xFFFFFFFF


class SyncChannel(Protocol):
    """The stream as the sync service sees it."""

    def read_exact(self, size: int) -> bytes:
        """Exactly ``size`` bytes; raise EOFError when the stream ends first."""
        ...

    def write(self, data: bytes) -> None:
        """Queue reply bytes; they go out at the next flush or once a payload's worth piles up."""
        ...

    def flush(self) -> None: ...


class SyncFailure(Exception):
    """A request the device refuses: answered with FAIL, after which adbd ends the session."""


def _inode(path: str) -> int:
    return zlib.crc32(path.encode("utf-8", "surrogateescape")) or 1


def pack_stat_v1(st: FileStat | None) -> bytes:
    if st is None:
        return STAT_V1.pack(b"STAT", 0, 0, 0)
    return STAT_V1.pack(b"STAT", st.mode & _U32, st.size & _U32, st.mtime & _U32)


def _v2_fields(path: str, st: FileStat) -> tuple[int, ...]:
    nlink = 2 if stat.S_ISDIR(st.mode) else 1
    return (0, 0, _inode(path), st.mode, nlink, 0, 0, st.size, st.mtime, st.mtime, st.mtime)


def pack_stat_v2(ident: bytes, path: str, st: FileStat | None) -> bytes:
    """``STA2``/``LST2`` reply; a missing file carries ENOENT and zeroes, as adbd's does."""
    if st is None:
        return STAT_V2.pack(ident, errno.ENOENT, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    return STAT_V2.pack(ident, *_v2_fields(path, st))


def pack_dent_v1(name: str, st: FileStat) -> bytes:
    raw = name.encode("utf-8", "surrogateescape")
    return DENT_V1.pack(b"DENT", st.mode & _U32, st.size & _U32, st.mtime & _U32, len(raw)) + raw


def pack_dent_v2(name: str, path: str, st: FileStat) -> bytes:
    raw = name.encode("utf-8", "surrogateescape")
    return DENT_V2.pack(b"DNT2", *_v2_fields(path, st), len(raw)) + raw


DONE_V1 = DENT_V1.pack(b"DONE", 0, 0, 0, 0)
DONE_V2 = DENT_V2.pack(b"DONE", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)


def pack_status(ident: bytes, message: str = "") -> bytes:
    # a message may quote a path the host sent, which was not UTF-8: give its bytes back
    raw = message.encode("utf-8", "surrogateescape")
    return REQUEST.pack(ident, len(raw)) + raw


def parse_send_target(argument: str) -> tuple[str, int]:
    """``"/sdcard/x,33188"`` -> (path, st_mode). The mode is decimal and carries the type bits."""
    path, comma, mode_text = argument.rpartition(",")
    if not comma or not path:
        raise SyncFailure("missing , in ID_SEND")
    # ASCII digits only ("³".isdigit() is true), and what fits the 32-bit st_mode
    if not (mode_text.isascii() and mode_text.isdigit()) or int(mode_text) > _U32:
        raise SyncFailure(f"bad mode in ID_SEND: {mode_text}")
    mode = int(mode_text)
    if stat.S_ISLNK(mode):
        raise SyncFailure("symlinks are not supported")
    return path, stat.S_IFREG | (mode & 0o777)


def _reason(exc: OSError) -> str:
    if exc.errno:
        return os.strerror(exc.errno)
    for kind, code in (
        (FileNotFoundError, errno.ENOENT),
        (IsADirectoryError, errno.EISDIR),
        (NotADirectoryError, errno.ENOTDIR),
        (PermissionError, errno.EACCES),
    ):
        if isinstance(exc, kind):
            return os.strerror(code)
    return str(exc) or type(exc).__name__


def _join(directory: str, name: str) -> str:
    return directory.rstrip("/") + "/" + name if directory != "/" else "/" + name


def _parent(path: str) -> str:
    head = path.rstrip("/").rsplit("/", 1)[0]
    return head or "/"


def _entries(fs: VirtualFS, path: str) -> list[tuple[str, FileStat]] | None:
    """The directory as readdir shows it, ``.`` and ``..`` included."""
    listing = fs.listdir(path)
    if listing is None:
        return None
    names = {name for name, _ in listing}
    extra: list[tuple[str, FileStat]] = []
    for name, target in ((".", path), ("..", _parent(path))):
        st = fs.stat(target)
        if name not in names and st is not None:
            extra.append((name, st))
    return extra + listing


def _receive_file(channel: SyncChannel) -> tuple[bytes, int]:
    """The DATA records of a SEND up to its DONE: (content, mtime)."""
    parts: list[bytes] = []
    total = 0
    while True:
        ident, size = REQUEST.unpack(channel.read_exact(REQUEST.size))
        if ident == b"DONE":
            return b"".join(parts), size
        if ident != b"DATA":
            raise SyncFailure("invalid data message")
        if size > SYNC_DATA_MAX:
            raise SyncFailure("oversize data message")
        total += size
        if total > MAX_PUSH_SIZE:
            raise SyncFailure("file too large")
        parts.append(channel.read_exact(size))


def _send(fs: VirtualFS, channel: SyncChannel, argument: str) -> None:
    path, mode = parse_send_target(argument)
    data, mtime = _receive_file(channel)
    try:
        fs.write(path, data, mode, mtime)
    except OSError as exc:
        raise SyncFailure(f"couldn't create file: {_reason(exc)}") from exc
    channel.write(pack_status(b"OKAY"))


def _recv(fs: VirtualFS, channel: SyncChannel, path: str) -> None:
    try:
        data = fs.read(path)
    except OSError as exc:
        raise SyncFailure(f"open failed: {_reason(exc)}") from exc
    view = memoryview(data)
    for start in range(0, len(data), SYNC_DATA_MAX):
        chunk = view[start : start + SYNC_DATA_MAX]
        channel.write(REQUEST.pack(b"DATA", len(chunk)) + chunk)
    channel.write(REQUEST.pack(b"DONE", 0))


def _list(fs: VirtualFS, channel: SyncChannel, path: str, v2: bool) -> None:
    for name, st in _entries(fs, path) or []:
        if v2:
            channel.write(pack_dent_v2(name, _join(path, name), st))
        else:
            channel.write(pack_dent_v1(name, st))
    channel.write(DONE_V2 if v2 else DONE_V1)


def handle_request(fs: VirtualFS, channel: SyncChannel, ident: bytes, argument: str) -> None:
    """One request; raise SyncFailure for a refusal."""
    if ident == b"STAT":
        channel.write(pack_stat_v1(fs.stat(argument)))
    elif ident in (b"STA2", b"LST2"):
        channel.write(pack_stat_v2(ident, argument, fs.stat(argument)))
    elif ident == b"LIST":
        _list(fs, channel, argument, v2=False)
    elif ident == b"LIS2":
        _list(fs, channel, argument, v2=True)
    elif ident == b"SEND":
        _send(fs, channel, argument)
    elif ident == b"RECV":
        _recv(fs, channel, argument)
    else:
        raise SyncFailure(f"unknown command {ident!r}")


def serve_sync(fs: VirtualFS, channel: SyncChannel) -> None:
    """Answer requests until QUIT, the end of the stream (even inside a request: the host
    went away mid-push), or a refusal."""
    while True:
        try:
            ident, length = REQUEST.unpack(channel.read_exact(REQUEST.size))
        except EOFError:
            return
        if ident == b"QUIT":
            return
        try:
            if length > MAX_PATH_LENGTH:
                raise SyncFailure("path too long")
            argument = channel.read_exact(length).decode("utf-8", "surrogateescape")
            handle_request(fs, channel, ident, argument)
        except EOFError:
            logger.info("sync %s: the stream ended inside the request", _name(ident))
            return
        except SyncFailure as failure:
            logger.info("sync %s refused: %s", _name(ident), failure)
            channel.write(pack_status(b"FAIL", str(failure)))
            channel.flush()
            return
        channel.flush()


def _name(ident: bytes) -> str:
    return ident.decode("ascii", "replace")
