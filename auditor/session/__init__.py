"""Capture sessions: a folder that holds everything one capture produced.

Layout of ``captures/<session-id>/``::

    manifest.json   what, when, where, with which tools; the artifact hashes once closed
    flows.jsonl     one record per line (auditor.records), appended and flushed as it happens
    bodies/         content-addressed bodies (auditor.bodies)

Writing and reading are separate: capture code uses :class:`SessionWriter`, analysis only ever
opens a saved session with :class:`Session`. The writer appends each record with a single
``write(2)`` on an ``O_APPEND`` descriptor, so several processes (mitmdump's recorder and the
controlling ``auditor`` process) can share one ``flows.jsonl``, and a ``kill -9`` loses at
most the flows still in flight.
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
import re
import secrets
import socket
import stat
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from auditor import __version__, columns, jsonio
from auditor.bodies import DEFAULT_BODY_CAP, BodyStore
from auditor.errors import SessionError
from auditor.fsutil import open_regular, private_mkdirs
from auditor.records import (
    EventRecord,
    HttpRecord,
    Record,
    RecordFormatError,
    TlsFailedRecord,
    dumps,
    loads,
)
from auditor.timeutil import iso, now_iso, parse_iso

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FLOWS = "flows.jsonl"
BODIES = "bodies"
TLS_KEYLOG = "tls/keylog.txt"
"""mitmdump's TLS secrets (NSS key log), both sides of every connection it decrypted: they
decrypt the session's packet captures, so the file is as personal as the traffic."""
MANIFEST_SCHEMA_VERSION = 1

STATUS_OPEN = "open"
STATUS_COMPLETE = "complete"
STATUS_INCOMPLETE = "incomplete"

_HASH_CHUNK = 1024 * 1024


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


MAX_MANIFEST_BYTES = 256 * 1024 * 1024
"""A manifest larger than this is not read (one of a million artifacts is about 150 MB)."""


def read_manifest(path: Path) -> dict[str, Any]:
    """The session's manifest. SessionError, with the reason, when there is none or it cannot
    be used (not JSON, nested deeper than any manifest auditor writes, not an object, text
    that is not Unicode)."""
    mpath = path / MANIFEST
    try:
        with open_regular(mpath) as fh:  # a FIFO or a device would hang or flood the reader
            data = fh.read(MAX_MANIFEST_BYTES + 1)
        if len(data) > MAX_MANIFEST_BYTES:
            raise jsonio.JsonError(f"larger than {MAX_MANIFEST_BYTES} bytes")
        obj = jsonio.loads(data, str(mpath), expect=dict)
    except FileNotFoundError:
        raise SessionError(f"{path}: not a capture session (no {MANIFEST})") from None
    except jsonio.JsonError as exc:
        why = str(exc).removeprefix(f"{mpath}: ")
        raise SessionError(f"{mpath}: unreadable manifest: {why}") from None
    except OSError as exc:
        raise SessionError(f"{mpath}: unreadable manifest: {exc.strerror or exc}") from None
    if _SURROGATE.search(data) and not _is_unicode(obj):
        # json reads a lone surrogate (escaped, or as bytes); no manifest auditor writes holds
        # one, and it could be neither hashed for the seal nor written back
        raise SessionError(f"{mpath}: unreadable manifest: text with a lone surrogate")
    return cast(dict[str, Any], obj)


# a surrogate escaped (\\uD800-\\uDFFF) or in bytes json.loads lets through (ED A0-BF)
_SURROGATE = re.compile(rb"\\[uU][dD][89a-fA-F]|\xed[\xa0-\xbf]")


def _is_unicode(obj: Any) -> bool:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# The manifest's sections and their JSON types, as readers rely on them.
_MANIFEST_TYPES: dict[str, type] = {
    "device": dict,
    "scenario": dict,
    "capture": dict,
    "summary": dict,
    "artifacts": list,
    "versions": dict,
}


def read_manifest_lenient(path: Path) -> tuple[dict[str, Any], list[str]]:
    """The manifest for analysis, whatever state it is in, and what could not be read of it.

    A missing manifest still raises SessionError (the folder is no session); an unreadable one
    gives a stand-in (``status: unknown``), and a section of the wrong type is left out."""
    problems: list[str] = []
    try:
        manifest = read_manifest(path)
    except SessionError as exc:
        if not (path / MANIFEST).exists():
            raise
        problems.append(f"{exc}; device, scenario and status are unknown")
        manifest = {"session_id": path.name, "status": "unknown"}
    return manifest, problems + drop_mistyped(manifest)


def drop_mistyped(manifest: dict[str, Any]) -> list[str]:
    """Take the sections of the wrong JSON type out of ``manifest``; say which."""
    problems = []
    for key, kind in _MANIFEST_TYPES.items():
        value = manifest.get(key)
        if value is not None and not isinstance(value, kind):
            found, wanted = type(value).__name__, kind.__name__
            problems.append(f"{MANIFEST}: {key!r} is a {found}, not a {wanted}; left out")
            del manifest[key]
    return problems


def sha256_file(path: Path) -> str:
    """The file's SHA-256. OSError for a file that is not regular (a FIFO or a device, even
    through a link), which would block or never end."""
    h = hashlib.sha256()
    with open_regular(path) as fh:
        while chunk := fh.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


CUSTODY = "custody.jsonl"
"""The chain-of-custody log (auditor.evidence.custody). It is appended to after the session
closes, so it is no artifact: the manifest never lists it and verify does not expect it."""


def is_artifact(rel: str) -> bool:
    """Whether a file at ``rel`` (relative, ``/``-separated) in a session folder is one of the
    artifacts the manifest hashes: every file but the manifest and the custody log. Dot-files
    too: a reader that lists a folder (``packets/``) would read them, so what is not hashed
    must be named by verify (one rule: nothing unhashed is read unnoticed)."""
    return rel not in (MANIFEST, CUSTODY)


def _walk(root: Path) -> tuple[list[str], list[str]]:
    """The artifacts under ``root`` (relative paths, sorted), and what a session must not
    hold: links (a linked folder is not walked, yet a reader listing it would follow it) and
    files that are not regular (a FIFO would hang whoever hashes or reads it)."""
    out: list[str] = []
    odd: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in [*dirnames, *filenames]:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            try:
                st = os.lstat(full)
            except OSError:
                continue  # gone meanwhile
            if stat.S_ISLNK(st.st_mode):
                odd.append(f"{rel}: a symbolic link (a session holds files only)")
            elif stat.S_ISREG(st.st_mode):
                if is_artifact(rel):
                    out.append(rel)
            elif not stat.S_ISDIR(st.st_mode):
                odd.append(f"{rel}: not a regular file")
    return sorted(out), sorted(odd)


# --------------------------------------------------------------------------------------- writing

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
    artifacts, odd = _walk(path)
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
        while chunk := os.read(fd, _HASH_CHUNK):
            h.update(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return {"path": rel, "sha256": h.hexdigest(), "size": size}


SEAL = "seal"
SEAL_OVER = "this manifest without its seal, as JSON with sorted keys and no spaces (UTF-8)"
# files that may grow after the session is closed, and only at their end: `auditor restore`
# appends to the restore journal when it finishes a restore the audit could not
APPEND_ONLY = frozenset({"restore.jsonl"})


def manifest_digest(manifest: dict[str, Any]) -> str:
    """The SHA-256 the seal holds: it catches a manifest edited or damaged after the session
    closed. (It is no signature: whoever edits the manifest can recompute it; a signed bundle,
    ``auditor bundle --sign``, is what resists that.)"""
    body = {k: v for k, v in manifest.items() if k != SEAL}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _prefix_sha256(path: Path, size: int) -> str:
    h = hashlib.sha256()
    left = size
    with open(path, "rb") as fh:
        while left > 0:
            chunk = fh.read(min(left, 1 << 20))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------- reading


@dataclass(slots=True)
class Summary:
    flows: int = 0
    tls_failed: int = 0
    websocket_messages: int = 0
    dns: int = 0
    events: int = 0
    errors: int = 0
    hosts: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    first_ts: str | None = None
    last_ts: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


def _headers_size(headers: Iterable[tuple[str, str]]) -> int:
    return sum(len(k) + len(v) + 4 for k, v in headers) + 2


def http_bytes(rec: HttpRecord) -> tuple[int, int]:
    """Approximate bytes on the wire up and down: start line, headers and wire body."""
    up = len(rec.method) + len(rec.path) + 12 + _headers_size(rec.request_headers)
    up += rec.request_body.wire_size if rec.request_body else 0
    down = 0
    if rec.status is not None:
        down = 17 + len(rec.reason or "") + _headers_size(rec.response_headers)
        down += rec.response_body.wire_size if rec.response_body else 0
    return up, down


def readable_files(path: Path, manifest: dict[str, Any], folder: str) -> list[str]:
    """The files under ``folder`` (relative, e.g. ``packets``; recursively) that a reader of
    the session at ``path`` may read, as relative ``/``-separated paths, sorted.

    For a closed session, only those its manifest hashed: a file added after the close is
    never read (and ``auditor verify`` names it): what is not hashed is not read. For an open
    session (nothing hashed yet), the regular files on disk, without dot-files (temporary
    names) and without following links. A session whose status is unknown (an unreadable
    manifest, read leniently) gives none."""
    prefix = folder.strip("/") + "/"
    status = manifest.get("status")
    if status not in (STATUS_OPEN, None):
        arts = manifest.get("artifacts")
        listed = {
            a["path"]
            for a in (arts if isinstance(arts, list) else [])
            if isinstance(a, dict) and isinstance(a.get("path"), str)
        }
        return sorted(
            rel
            for rel in listed
            if rel.startswith(prefix) and ".." not in rel.split("/") and "\0" not in rel
        )
    root = Path(path) / folder
    if root.is_symlink() or not root.is_dir():
        return []
    return [
        f"{prefix}{rel}"
        for rel in _walk(root)[0]
        if not any(part.startswith(".") for part in rel.split("/"))
    ]


@dataclass
class Session:
    """A saved capture session, opened for reading."""

    path: Path
    # lenient: open a damaged session for analysis: an unreadable manifest becomes a warning
    # (see read_manifest_lenient) instead of an error
    lenient: bool = field(default=False, kw_only=True)
    manifest: dict[str, Any] = field(init=False)
    warnings: list[str] = field(init=False, default_factory=list)
    manifest_warnings: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not self.path.is_dir():
            raise SessionError(f"{self.path}: no such session folder")
        if self.lenient:
            self.manifest, self.manifest_warnings = read_manifest_lenient(self.path)
        else:
            self.manifest = read_manifest(self.path)
        self.bodies = BodyStore(self.path / BODIES)

    @property
    def id(self) -> str:
        return str(self.manifest.get("session_id") or self.path.name)

    def files(self, folder: str) -> list[str]:
        """The files under ``folder`` a reader may read (see :func:`readable_files`)."""
        return readable_files(self.path, self.manifest, folder)

    def records(self) -> Iterator[Record]:
        """Every record in file order. Bad lines become warnings (``self.warnings``); a
        truncated last line (a killed writer) is expected and reported the same way."""
        fpath = self.path / FLOWS
        self.warnings[:] = self.manifest_warnings
        try:
            fh = open_regular(fpath)
        except FileNotFoundError:
            self.warnings.append(f"{FLOWS}: missing")
            return
        except OSError as exc:
            self.warnings.append(f"{FLOWS}: unreadable: {exc.strerror or exc}")
            return
        with fh:
            lineno = 0
            try:
                for raw in fh:
                    lineno += 1
                    if not raw.endswith(b"\n"):
                        self.warnings.append(
                            f"{FLOWS}: last line {lineno} is truncated ({len(raw)} bytes), ignored"
                        )
                        break
                    if raw.startswith(b"{") and not raw.rstrip().endswith(b"}"):
                        self.warnings.append(
                            f"{FLOWS}: line {lineno} is torn ({len(raw)} bytes; its writer died "
                            "mid-write), ignored"
                        )
                        continue
                    if not raw.strip():
                        continue
                    try:
                        rec = loads(raw)
                    except RecordFormatError as exc:
                        self.warnings.append(f"{FLOWS}: line {lineno}: {exc}")
                        continue
                    except Exception as exc:  # noqa: BLE001 - an edited line must not stop the rest
                        self.warnings.append(
                            f"{FLOWS}: line {lineno}: not a valid record "
                            f"({type(exc).__name__}: {exc})"
                        )
                        continue
                    yield rec
            except OSError as exc:
                self.warnings.append(
                    f"{FLOWS}: read failed after line {lineno}: {exc.strerror or exc}; "
                    "the rest is not read"
                )

    def http(self) -> Iterator[HttpRecord]:
        return (r for r in self.records() if isinstance(r, HttpRecord))

    def summary(self) -> Summary:
        s = Summary()
        hosts: set[str] = set()
        first: str | None = None
        last: str | None = None
        for rec in self.records():
            if isinstance(rec, HttpRecord):
                s.flows += 1
                hosts.add(rec.host)
                up, down = http_bytes(rec)
                s.bytes_up += up
                s.bytes_down += down
                if rec.error:
                    s.errors += 1
                ts = rec.request_start
            elif isinstance(rec, TlsFailedRecord):
                s.tls_failed += 1
                if rec.sni:
                    hosts.add(rec.sni)
                ts = rec.ts
            elif isinstance(rec, EventRecord):
                s.events += 1
                # an import's own events are dated when it ran, not when the traffic was
                ts = None if rec.kind in IMPORT_EVENTS else rec.ts
            else:
                if rec.TYPE.value == "dns":
                    s.dns += 1
                else:
                    s.websocket_messages += 1
                ts = rec.ts
            if ts:
                first = ts if first is None or ts < first else first
                last = ts if last is None or ts > last else last
        s.hosts = len(hosts)
        s.first_ts, s.last_ts = first, last
        return s

    def flows(self, records: Iterable[Record] | None = None) -> pd.DataFrame:
        """One row per HTTP flow or failed TLS handshake; columns from :mod:`auditor.columns`.
        Pass ``records`` already read to spare a second pass over ``flows.jsonl``."""
        import pandas as pd

        rows: list[tuple[Any, ...]] = []
        for rec in records if records is not None else self.records():
            if isinstance(rec, HttpRecord):
                rows.append(_http_row(rec))
            elif isinstance(rec, TlsFailedRecord):
                rows.append(_tls_failed_row(rec))
        df = pd.DataFrame.from_records(rows, columns=list(columns.FLOW_COLUMNS))
        for col in (columns.START, columns.END):
            parsed = pd.to_datetime(df[col], utc=True, format="ISO8601", errors="coerce")
            bad = parsed.isna() & df[col].notna()
            if bad.any():  # a hand-edited or damaged line: its time is unknown, not a crash
                self.warnings.append(
                    f"{FLOWS}: {int(bad.sum())} flow(s) with an unreadable {col} time"
                )
            df[col] = parsed
        for col in (
            columns.CLIENT_PORT,
            columns.SERVER_PORT,
            columns.PORT,
            columns.STATUS,
            columns.REQUEST_WIRE_SIZE,
            columns.RESPONSE_WIRE_SIZE,
            columns.REQUEST_DECODED_SIZE,
            columns.RESPONSE_DECODED_SIZE,
        ):
            df[col] = df[col].astype("Int64")
        return df

    def duration_seconds(self) -> float | None:
        """How long the session's traffic spans: for an import, the time its files cover, from
        their first to their last time, without the gaps between files (``started_at`` and
        ``ended_at`` are when the import ran)."""
        span = imported_span(self.manifest)
        if span is not None:
            covered = self.manifest["capture"]["import"].get("duration_seconds")
            if isinstance(covered, int | float) and not isinstance(covered, bool):
                return float(covered)  # several files: the time they cover, gaps left out
            return parse_iso(span[1]) - parse_iso(span[0])
        start, end = self.manifest.get("started_at"), self.manifest.get("ended_at")
        if not start or not end:
            return None
        return parse_iso(end) - parse_iso(start)


#: The events ``auditor import`` writes about itself (auditor.imports.session).
IMPORT_EVENTS = frozenset({"import_started", "import", "import_failed"})


def imported_span(manifest: dict[str, Any]) -> tuple[str, str] | None:
    """The first and last time of an imported session's traffic (``capture.import``), or
    None for a live session or an import whose files held no time."""
    capture = manifest.get("capture")
    imp = capture.get("import") if isinstance(capture, dict) else None
    if not isinstance(imp, dict):
        return None
    first, last = imp.get("first_ts"), imp.get("last_ts")
    if not (isinstance(first, str) and isinstance(last, str)):
        return None
    try:
        parse_iso(first), parse_iso(last)
    except ValueError:
        return None
    return first, last


def _http_row(r: HttpRecord) -> tuple[Any, ...]:
    up, down = http_bytes(r)
    qb, sb = r.request_body, r.response_body
    return (
        r.id,
        "http",
        "mitmproxy" if r.proxy_mode else "import",  # HAR imports have no proxy mode
        r.request_start,
        r.response_end or r.request_end or r.request_start,
        r.client_ip,
        r.client_port,
        r.server_ip,
        r.server_port,
        r.sni,
        r.tls_version,
        r.alpn,
        r.method,
        r.scheme,
        r.host,
        r.port,
        r.path,
        r.url,
        r.status,
        r.request_content_type,
        r.response_content_type,
        qb.sha256 if qb else None,
        sb.sha256 if sb else None,
        qb.wire_size if qb else 0,
        sb.wire_size if sb else 0,
        qb.decoded_size if qb else 0,
        sb.decoded_size if sb else 0,
        bool(qb and qb.truncated),
        bool(sb and sb.truncated),
        up,
        down,
        r.error,
    )


def _tls_failed_row(r: TlsFailedRecord) -> tuple[Any, ...]:
    row: list[Any] = [None] * len(columns.FLOW_COLUMNS)
    idx = {c: i for i, c in enumerate(columns.FLOW_COLUMNS)}
    for col, value in (
        (columns.FLOW_ID, r.id),
        (columns.RECORD_TYPE, "tls_failed"),
        (columns.SOURCE, "mitmproxy"),
        (columns.START, r.ts),
        (columns.END, r.ts),
        (columns.CLIENT_IP, r.client_ip),
        (columns.CLIENT_PORT, r.client_port),
        (columns.SERVER_IP, r.server_ip),
        (columns.SERVER_PORT, r.server_port),
        (columns.SNI, r.sni),
        (columns.HOST, r.sni or r.server_ip),
        (columns.PORT, r.server_port),
        (columns.BYTES_UP, 0),
        (columns.BYTES_DOWN, 0),
        (columns.ERROR, r.error),
        (columns.REQUEST_TRUNCATED, False),
        (columns.RESPONSE_TRUNCATED, False),
    ):
        row[idx[col]] = value
    return tuple(row)


# -------------------------------------------------------------------------------- verify and list


@dataclass(frozen=True, slots=True)
class VerifyResult:
    path: Path
    ok: bool
    checked: int
    missing: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    unlisted: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # they do not fail the check (e.g. the custody log's)

    def to_dict(self) -> dict[str, Any]:
        return {
            "session": str(self.path),
            "ok": self.ok,
            "checked": self.checked,
            "missing": list(self.missing),
            "changed": list(self.changed),
            "unlisted": list(self.unlisted),
            "problems": list(self.problems),
            "warnings": list(self.warnings),
        }


def verify_session(path: Path) -> VerifyResult:
    """Recompute every artifact's SHA-256 and size against the manifest.

    The custody log is not an artifact; a break in its hash chain is a warning."""
    path = Path(path)
    manifest = read_manifest(path)
    problems: list[str] = []
    if manifest.get("status") == STATUS_OPEN:
        problems.append("session was never closed: no artifact hashes to check")
    listed: dict[str, dict[str, Any]] = {}
    for art in manifest.get("artifacts") or []:
        if isinstance(art, dict) and isinstance(art.get("path"), str):
            listed[art["path"]] = art
        else:
            problems.append(f"malformed artifact entry: {art!r}")
    missing, changed = [], []
    warnings: list[str] = []
    seal = manifest.get(SEAL)
    if isinstance(seal, dict):
        if seal.get("sha256") != manifest_digest(manifest):
            changed.append(MANIFEST)  # edited or damaged after the session was closed
    elif manifest.get("status") != STATUS_OPEN:
        warnings.append(f"{MANIFEST}: no seal (closed by an older auditor); edits go unnoticed")
    for rel, art in sorted(listed.items()):
        fpath = path / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            problems.append(f"artifact path escapes the session: {rel}")
            continue
        if not fpath.is_file():
            missing.append(rel)
            continue
        size = fpath.stat().st_size
        if size == art.get("size") and sha256_file(fpath) == art.get("sha256"):
            continue
        recorded = art.get("size")
        if (
            rel in APPEND_ONLY
            and isinstance(recorded, int)
            and size > recorded
            and _prefix_sha256(fpath, recorded) == art.get("sha256")
        ):
            warnings.append(
                f"{rel}: {size - recorded} bytes appended after the session was closed "
                "(auditor restore); what was sealed is unchanged"
            )
            continue
        changed.append(rel)
    on_disk, odd = _walk(path)
    unlisted = [rel for rel in on_disk if rel not in listed]
    problems += odd
    problems += import_copy_problems(manifest, listed)
    ok = not (missing or changed or unlisted or problems)
    return VerifyResult(
        path,
        ok,
        len(listed),
        tuple(missing),
        tuple(changed),
        tuple(unlisted),
        tuple(problems),
        tuple(warnings + _custody_warnings(path)),
    )


def imported_files(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The entries of ``capture.import.files`` (an imported session), or none."""
    capture = manifest.get("capture")
    imp = capture.get("import") if isinstance(capture, dict) else None
    files = imp.get("files") if isinstance(imp, dict) else None
    return [f for f in files if isinstance(f, dict)] if isinstance(files, list) else []


def import_copy_problems(manifest: dict[str, Any], listed: dict[str, dict[str, Any]]) -> list[str]:
    """Imported files whose sealed copy is not the file the import read: the import recorded
    the source's size and SHA-256 before copying, and the copy under ``original/`` must be
    those bytes (a copy cut short by a full disk hashes to itself, never to the source)."""
    out = []
    for f in imported_files(manifest):
        rel = f.get("original")
        if not isinstance(rel, str):
            continue  # not copied (the import failed first): the manifest claims no copy
        art = listed.get(rel)
        want_size, want_sha = f.get("size"), f.get("sha256")
        if art is None:
            out.append(f"{rel}: the import recorded this copy, but it is not among the artifacts")
        elif art.get("size") != want_size or art.get("sha256") != want_sha:
            out.append(
                f"{rel}: not the file the import read ({want_size} bytes, SHA-256 "
                f"{str(want_sha)[:16]}...): the sealed copy has {art.get('size')} bytes; the "
                "import was cut short, or the copy was replaced"
            )
    return out


# ------------------------------------------------------------------------------- sealing late

STOPPED_LEFT_OPEN = "left_open"
"""``stopped_by`` of a session that its recorder never closed, sealed afterwards."""
MAX_SEALER_CHARS = 200
MAX_REASON_CHARS = 2000


@dataclass(frozen=True, slots=True)
class LateSeal:
    """What :func:`seal_late` did: the session, its sealed manifest, whether the recorder's
    last word was a clean stop, and warnings (the custody log not written, a copy not whole)."""

    path: Path
    manifest: dict[str, Any]
    stopped_cleanly: bool
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "session": str(self.path),
            "status": self.manifest.get("status"),
            "sealed_late": self.manifest.get("sealed_late"),
            "stop_detail": self.manifest.get("stop_detail"),
            "artifacts": len(self.manifest.get("artifacts") or []),
            "stopped_cleanly": self.stopped_cleanly,
            "warnings": list(self.warnings),
        }


def seal_late(path: Path | str, *, by: str, reason: str = "", argv: Sequence[str] = ()) -> LateSeal:
    """Seal a session its recorder left open (a crash, ``kill -9``, mitmdump run with
    ``auditor_close_on_done=false``): hash its artifacts and close it as ``incomplete``, with
    ``stopped_by: left_open``, why in ``stop_detail``, and ``sealed_late`` (when, by whom, the
    login user and host, the reason) in the manifest; then one line in the custody log
    (``command: close``, ``details.sealed_late``), with ``argv`` as the command line.

    ``by``: who seals it (a name, required, at most 200 characters; ``reason`` at most
    2,000). ``ended_at`` becomes the time of the last record, not the time of sealing. An
    imported file whose copy is not whole (the import was killed mid-copy) is kept and hashed,
    but no longer named as the import's original.

    Raises SessionError: not a session, an unreadable manifest, no ``by``, not open (already
    closed), still being recorded (a writer holds it), or a link or special file in it;
    SessionWriteError (a SessionError) when the manifest cannot be written: the session is
    then still open. A custody log that cannot be written is a warning, as in the CLI."""
    path = Path(path)
    who = by.strip()
    if not who:
        raise SessionError(f"{path}: say who seals the session (by)")
    if len(who) > MAX_SEALER_CHARS or len(reason) > MAX_REASON_CHARS:
        raise SessionError(
            f"{path}: 'by' is limited to {MAX_SEALER_CHARS} characters and the reason to "
            f"{MAX_REASON_CHARS}"
        )
    manifest = read_manifest(path)
    if manifest.get("status") != STATUS_OPEN:
        raise SessionError(f"{path} is already closed ({manifest.get('status')}); nothing to seal")
    with _sole_access(path):
        stop = _last_stop(Session(path))
        updates: dict[str, Any] = {}
        capture = manifest.get("capture")
        if isinstance(capture, dict) and _mark_partial_copies(path, capture):
            updates["capture"] = capture
        from auditor.evidence.custody import login_user

        sealed = {
            "at": now_iso(),
            "by": who,
            "user": login_user(),
            "host": socket.gethostname(),
            "reason": reason,
        }
        closed = close_session(
            path,
            STATUS_INCOMPLETE,
            stopped_by=STOPPED_LEFT_OPEN,
            stop_detail=stop.detail,
            sealed_late=sealed,
            ended_at=stop.last_ts or manifest.get("started_at") or sealed["at"],
            **updates,
        )
    warnings = [
        f"{f['name']}: {f['not_copied']}"
        for f in imported_files(closed)
        if isinstance(f.get("not_copied"), str) and "name" in f
    ]
    warnings += _log_late_seal(path, closed, sealed, argv)
    return LateSeal(path, closed, stop.clean, tuple(warnings))


@contextlib.contextmanager
def _sole_access(path: Path) -> Iterator[None]:
    """Hold ``flows.jsonl`` exclusively: no writer (which holds it shared) has it open."""
    try:
        fd = os.open(path / FLOWS, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        yield  # nothing was ever recorded: no writer to wait for
        return
    except OSError as exc:
        raise SessionError(f"{path / FLOWS}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SessionError(
                f"{path} is still being recorded: a process (mitmdump's recorder, or the "
                "auditor command that runs it) has it open; stop that process first"
            ) from None
        yield
    finally:
        os.close(fd)  # also releases the lock


@dataclass(frozen=True, slots=True)
class _Stop:
    clean: bool
    detail: str
    last_ts: str | None


def _last_stop(sess: Session) -> _Stop:
    """How the recorder last stopped (its own events), and the time of the last record."""
    last_kind: str | None = None
    failure = ""
    last_ts: str | None = None
    for rec in sess.records():
        stamps: tuple[Any, ...]
        if isinstance(rec, HttpRecord):
            stamps = (rec.request_start, rec.request_end, rec.response_start, rec.response_end)
        else:
            stamps = (getattr(rec, "ts", None),)
        for ts in stamps:
            if isinstance(ts, str) and ts and (last_ts is None or ts > last_ts):
                last_ts = ts
        if isinstance(rec, EventRecord) and rec.kind.startswith("recorder_"):
            last_kind = rec.kind
            if rec.kind == "recorder_failed":
                failure = rec.message
    if last_kind == "recorder_stopped" and not failure:
        detail = (
            "left open: its recorder stopped cleanly but did not close it (mitmdump ran "
            "with auditor_close_on_done=false, or the auditor command running it died)"
        )
        return _Stop(True, detail, last_ts)
    if failure:
        detail = f"left open: its recorder stopped on a write failure ({failure[:300]})"
    else:
        detail = (
            "left open: no clean stop was recorded (the recorder or the auditor command "
            "running it was killed or crashed); flows in flight then are missing"
        )
    return _Stop(False, detail, last_ts)


def _mark_partial_copies(path: Path, capture: dict[str, Any]) -> bool:
    """An imported file whose copy under ``original/`` is not the file the import read (it
    was killed mid-copy) stays, hashed, but is no longer named as the import's original."""
    changed = False
    for f in imported_files({"capture": capture}):
        rel = f.get("original")
        if not isinstance(rel, str) or ".." in Path(rel).parts or Path(rel).is_absolute():
            continue
        target = path / rel
        try:
            size = target.stat().st_size if target.is_file() else None
            whole = size == f.get("size") and sha256_file(target) == f.get("sha256")
        except OSError:
            size, whole = None, False
        if not whole:
            f["original"] = None
            held = "no copy" if size is None else f"a copy of {size} bytes"
            f["not_copied"] = (
                f"the import was cut short: {held} of the {f.get('size')} it read "
                f"({rel}, kept but not read as the original)"
            )
            changed = True
    return changed


def _log_late_seal(
    path: Path, manifest: dict[str, Any], sealed: dict[str, Any], argv: Sequence[str]
) -> list[str]:
    from auditor.evidence.custody import CustodyEntry, append

    try:
        details = {
            "sealed_late": True,
            "by": sealed["by"],
            "reason": sealed["reason"],
            "status": manifest.get("status"),
            "stop_detail": manifest.get("stop_detail"),
            "manifest_sha256": sha256_file(path / MANIFEST),
        }
        append(path, CustodyEntry("close", tuple(argv), 0, details, ts=sealed["at"]))
    except OSError as exc:
        return [f"custody log of {path} not written: {exc.strerror or exc}"]
    return []


def _custody_warnings(path: Path) -> list[str]:
    from auditor.evidence.custody import check_log

    return [f"{CUSTODY}: {w}" for w in check_log(path / CUSTODY)]


STATUS_UNREADABLE = "unreadable"
"""How ``auditor sessions`` lists a folder whose manifest cannot be read (SessionInfo.problem)."""


@dataclass(frozen=True, slots=True)
class SessionInfo:
    id: str
    path: str
    status: str
    device: str
    started_at: str | None
    duration_s: float | None
    flows: int
    tls_failed: int
    bytes_up: int
    bytes_down: int
    problem: str | None = None  # why the session could not be read (status "unreadable")

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}

    @classmethod
    def unreadable(cls, path: Path, problem: str) -> SessionInfo:
        return cls(path.name, str(path), STATUS_UNREADABLE, "-", None, None, 0, 0, 0, 0, problem)


def describe_device(device: dict[str, Any]) -> str:
    if not device:
        return "-"
    label = " ".join(str(device[k]) for k in ("manufacturer", "model") if device.get(k))
    serial = device.get("serial")
    return f"{label} ({serial})" if label and serial else label or str(serial or "-")


def _count(summary: dict[str, Any], key: str) -> int:
    value = summary.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def session_info(path: Path) -> SessionInfo:
    """One line of ``auditor sessions``. SessionError when the manifest cannot be read; a
    section of the wrong type is read as absent (as analysis reads it)."""
    sess = Session(path)
    m = dict(sess.manifest)
    drop_mistyped(m)  # a section of the wrong type is read as absent
    summary = m.get("summary")
    if not isinstance(summary, dict) or m.get("status") == STATUS_OPEN:
        summary = sess.summary().to_dict()
    started = m.get("started_at") if isinstance(m.get("started_at"), str) else None
    try:
        duration = sess.duration_seconds()
        if duration is None and started:
            duration = time.time() - parse_iso(started)
    except (ValueError, TypeError, KeyError, AttributeError):
        duration = None  # a time that cannot be read: the duration is unknown, not an error
    return SessionInfo(
        id=str(m.get("session_id") or sess.path.name),
        path=str(sess.path),
        status=str(m.get("status", "?")),
        device=describe_device(m.get("device") or {}),
        started_at=started,
        duration_s=round(duration, 3) if duration is not None else None,
        flows=_count(summary, "flows"),
        tls_failed=_count(summary, "tls_failed"),
        bytes_up=_count(summary, "bytes_up"),
        bytes_down=_count(summary, "bytes_down"),
    )


def list_sessions(root: Path) -> tuple[list[SessionInfo], list[str]]:
    """Sessions under ``root``, oldest first, and one warning per session that cannot be read.
    Such a session is listed too, as ``unreadable`` with the reason (``problem``); one bad
    manifest never hides the others."""
    root = Path(root)
    if not root.is_dir():
        raise SessionError(f"{root}: no such folder")
    infos, warnings = [], []
    for child in sorted(root.iterdir()):
        if not child.is_dir() or child.name.startswith("."):
            continue
        if not (child / MANIFEST).exists():
            continue
        try:
            infos.append(session_info(child))
        except Exception as exc:  # noqa: BLE001 - one session's damage must not hide the rest
            why = str(exc) if isinstance(exc, SessionError) else f"{type(exc).__name__}: {exc}"
            infos.append(SessionInfo.unreadable(child, why))
            warnings.append(why if isinstance(exc, SessionError) else f"{child}: {why}")
    infos.sort(key=lambda i: (i.started_at or "", i.id))
    return infos, warnings
