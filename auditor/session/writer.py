"""Writing a capture session: creating its folder and manifest, appending records (one
``write(2)`` per record on an ``O_APPEND`` descriptor), and closing it, which hashes the
artifacts and seals the manifest.

Several processes (mitmdump's recorder and the controlling ``auditor`` process) can share one
``flows.jsonl``, and a ``kill -9`` loses at most the flows still in flight.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import platform
import secrets
import socket
import stat
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from auditor import __version__
from auditor.errors import SessionError
from auditor.fsutil import private_mkdirs
from auditor.records import EventRecord, Record, dumps
from auditor.session.bodies import DEFAULT_BODY_CAP, BodyStore
from auditor.session.layout import (
    BODIES,
    FLOWS,
    HASH_CHUNK,
    MANIFEST,
    MANIFEST_SCHEMA_VERSION,
    STATUS_COMPLETE,
    STATUS_OPEN,
    walk_folder,
)
from auditor.session.manifest import SEAL, SEAL_OVER, imported_span, manifest_digest, read_manifest
from auditor.session.reader import Session
from auditor.timeutil import iso, now_iso

log = logging.getLogger(__name__)


def tool_versions() -> dict[str, str]:
    """Versions of auditor and the tools whose behaviour shapes a capture."""
    out = {"auditor": __version__, "python": platform.python_version()}
    for dist in ("mitmproxy", "scapy", "adbutils"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def new_session_id(ts: float | None = None) -> str:
    """UTC start time plus a short random suffix, e.g. ``20261128T035135Z-3f9a1c``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(ts if ts is not None else time.time()))
    return f"{stamp}-{secrets.token_hex(3)}"


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` under a temporary name, then rename it: the file is whole or untouched.
    A write that fails (a full disk) leaves no temporary file behind. Raises OSError."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = (json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n").encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``; a short write is continued, and the call that cannot go on
    raises the OSError (ENOSPC, EFBIG) instead of reporting a short count."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # pragma: no cover - write(2) returns an error rather than 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


class SessionWriteError(SessionError):
    """A session file could not be written: the disk is full, a file reached its size limit
    (``ulimit -f``), or the I/O failed. What was written before is intact."""

    def __init__(self, message: str, errno_: int | None = None):
        super().__init__(message)
        self.errno = errno_

    @property
    def disk_full(self) -> bool:
        return self.errno in DISK_FULL_ERRNOS


def write_error(path: Path, exc: OSError) -> SessionWriteError:
    """The one message for a failed write to a session file."""
    reason = exc.strerror or str(exc)
    if exc.errno in DISK_FULL_ERRNOS:
        reason += " (the disk is full or the file reached its size limit)"
    return SessionWriteError(f"cannot write to {path}: {reason}", exc.errno)


def append_line(fd: int, data: bytes, path: Path) -> None:
    """Append one whole line to an ``O_APPEND`` file with one ``write(2)``, so that writers in
    several processes never interleave within a line. ``fd`` must be open for reading too
    (``O_RDWR``): a partial line is recognised by reading it back.

    A short write (the disk filled up mid-line) is taken back off the file, so the file still
    ends on a whole line and nothing already written is touched; then SessionWriteError."""
    try:
        n = os.write(fd, data)
        if n == len(data):
            return
        try:
            # Whatever stopped the first write gives the real errno here; should the rest go
            # through after all, the line is whole and nothing needs taking back.
            if os.write(fd, data[n:]) == len(data) - n:
                return
        except OSError as exc:
            _take_back(fd, data[:n])
            raise write_error(path, exc) from None
        _take_back(fd, data[:n])
        raise SessionWriteError(f"cannot write to {path}: short write", errno.ENOSPC)
    except OSError as exc:
        raise write_error(path, exc) from None


def _take_back(fd: int, partial: bytes) -> None:
    """Cut ``partial`` off the end of the file, if the file still ends with it (another
    process may have appended since; then the torn line stays, and the reader reports it)."""
    if not partial:
        return
    try:
        size = os.fstat(fd).st_size
        if size >= len(partial) and os.pread(fd, len(partial), size - len(partial)) == partial:
            os.ftruncate(fd, size - len(partial))
    except OSError as exc:
        log.warning("could not take a partial line back off the session file: %s", exc)


class SessionWriter:
    """Appends records to a session. Create one with :meth:`create` or :meth:`attach`."""

    def __init__(self, path: Path, *, body_cap: int = DEFAULT_BODY_CAP):
        self.path = path
        self.bodies = BodyStore(path / BODIES, body_cap)
        fd = os.open(path / FLOWS, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            # every writer holds a shared lock while it may write: seal_late, which takes it
            # exclusively, never seals a session that is still being recorded
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SessionError(f"{path} is being sealed by another process") from None
        self._fd: int | None = fd
        self.counts: dict[str, int] = {}
        # events that could not be written (the disk was full): close() keeps them in the
        # manifest, so that the reason a capture stopped is not lost with them
        self.unwritten: list[EventRecord] = []

    @classmethod
    def create(
        cls,
        out_dir: Path,
        *,
        notes: str = "",
        device: dict[str, Any] | None = None,
        scenario: dict[str, Any] | None = None,
        capture: dict[str, Any] | None = None,
        body_cap: int = DEFAULT_BODY_CAP,
        session_id: str | None = None,
    ) -> SessionWriter:
        """Make ``out_dir/<new id>/`` (mode 0700) with an open manifest."""
        started = time.time()
        sid = session_id or new_session_id(started)
        path = Path(out_dir) / sid
        try:
            private_mkdirs(Path(out_dir))
            path.mkdir(mode=0o700)
        except OSError as exc:
            raise SessionError(f"cannot create session folder {path}: {exc}") from None
        os.chmod(path, 0o700)
        manifest = {
            "schema_version": MANIFEST_SCHEMA_VERSION,
            "session_id": sid,
            "status": STATUS_OPEN,
            "started_at": iso(started),
            "ended_at": None,
            "host": socket.gethostname(),
            "versions": tool_versions(),
            "device": device or {},
            "scenario": scenario or {},
            "notes": notes,
            "capture": {**(capture or {}), "body_cap": body_cap},
            "artifacts": [],
        }
        try:
            write_json_atomic(path / MANIFEST, manifest)
        except OSError as exc:
            with contextlib.suppress(OSError):
                path.rmdir()  # the folder this made, still empty: nothing half-made is left
            raise write_error(path / MANIFEST, exc) from None
        return cls(path, body_cap=body_cap)

    @classmethod
    def attach(cls, path: Path, *, body_cap: int | None = None) -> SessionWriter:
        """Append to an existing session (as mitmdump's recorder does); create it if the folder
        is empty or missing, so ``mitmdump -s addons/recorder.py`` works on its own."""
        path = Path(path)
        if not (path / MANIFEST).exists():
            if path.exists() and any(path.iterdir()):
                raise SessionError(f"{path} is not empty and holds no {MANIFEST}")
            parent, sid = path.parent, path.name
            return cls.create(parent, session_id=sid, body_cap=body_cap or DEFAULT_BODY_CAP)
        manifest = read_manifest(path)
        if manifest.get("status") != STATUS_OPEN:
            raise SessionError(f"{path} is closed ({manifest.get('status')}); start a new session")
        cap = body_cap or manifest.get("capture", {}).get("body_cap") or DEFAULT_BODY_CAP
        return cls(path, body_cap=int(cap))

    def _mend_torn_tail(self) -> None:
        """End a line torn by a writer that died mid-write, so the next record starts on a line
        of its own (the torn one is then reported by the reader, and nothing else is lost)."""
        if self._fd is None:
            return
        try:
            size = os.fstat(self._fd).st_size
            if size and os.pread(self._fd, 1, size - 1) != b"\n":
                append_line(self._fd, b"\n", self.path / FLOWS)
        except OSError as exc:
            raise write_error(self.path / FLOWS, exc) from None

    def write(self, record: Record) -> None:
        """Append one record. Raises SessionWriteError when it cannot be written whole (the
        file then still ends on the previous record)."""
        if self._fd is None:
            raise SessionError(f"{self.path}: session writer is closed")
        append_line(self._fd, (dumps(record) + "\n").encode("utf-8"), self.path / FLOWS)
        t = record.TYPE.value
        self.counts[t] = self.counts.get(t, 0) + 1

    def event(self, kind: str, message: str = "", **data: Any) -> None:
        """Append an event. One that cannot be written is kept for the manifest
        (``unwritten_events``) and SessionWriteError raised."""
        rec = EventRecord(ts=now_iso(), kind=kind, message=message, data=data)
        try:
            # Events are rare and may follow another process's death: check the tail first.
            self._mend_torn_tail()
            self.write(rec)
        except SessionWriteError:
            self.unwritten.append(rec)
            raise

    def flush(self) -> None:
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                raise write_error(self.path / FLOWS, exc) from None

    def detach(self) -> None:
        """Stop writing without closing the session (another process will close it)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.fsync(fd)
        except OSError as exc:
            log.error("%s: %s", self.path / FLOWS, write_error(self.path / FLOWS, exc))
        finally:
            os.close(fd)

    def close(self, status: str = STATUS_COMPLETE, **manifest_updates: Any) -> dict[str, Any]:
        self.detach()
        if self.unwritten:
            manifest_updates["unwritten_events"] = [
                json.loads(dumps(rec)) for rec in self.unwritten
            ]
        return close_session(self.path, status=status, **manifest_updates)


def close_session(path: Path, status: str = STATUS_COMPLETE, **updates: Any) -> dict[str, Any]:
    """Write the end time (now, unless ``updates`` gives ``ended_at``), the summary and the
    artifact hashes into the manifest, and seal it. SessionError when the session is closed
    already or holds a link or a file that is not regular; SessionWriteError when the manifest
    cannot be written (the session is then still open, and no temporary file is left)."""
    path = Path(path)
    manifest = read_manifest(path)
    if manifest.get("status") not in (STATUS_OPEN, None):
        raise SessionError(f"{path} is already closed")
    artifacts, odd = walk_folder(path)
    if odd:
        raise SessionError(f"{path}: cannot seal: {'; '.join(odd[:5])}")
    manifest.update(updates)
    manifest["status"] = status
    manifest["ended_at"] = updates.get("ended_at") or now_iso()
    sess = Session(path)
    summary = sess.summary()
    span = imported_span(manifest)
    if span is not None:  # an import: the capture's own times, packet captures included
        summary.first_ts, summary.last_ts = span
    manifest["summary"] = summary.to_dict()
    if sess.warnings:
        manifest["reader_warnings"] = sess.warnings
    manifest["artifacts"] = [_hash_artifact(path, rel) for rel in artifacts]
    manifest.pop(SEAL, None)
    manifest[SEAL] = {"sha256": manifest_digest(manifest), "over": SEAL_OVER}
    try:
        write_json_atomic(path / MANIFEST, manifest)
    except OSError as exc:
        raise write_error(path / MANIFEST, exc) from None
    return manifest


def _hash_artifact(root: Path, rel: str) -> dict[str, Any]:
    """``{path, sha256, size}`` of one artifact, hashed and sized through one descriptor (the
    size is of the bytes hashed, even should the file grow meanwhile)."""
    h = hashlib.sha256()
    size = 0
    fd = os.open(root / rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SessionError(f"{root}: cannot seal: {rel}: not a regular file")
        while chunk := os.read(fd, HASH_CHUNK):
            h.update(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return {"path": rel, "sha256": h.hexdigest(), "size": size}
