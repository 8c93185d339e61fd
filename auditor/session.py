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

import errno
import hashlib
import json
import logging
import os
import platform
import secrets
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditor import __version__, columns
from auditor.bodies import DEFAULT_BODY_CAP, BodyStore
from auditor.errors import SessionError
from auditor.fsutil import private_mkdirs
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


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, ensure_ascii=False, sort_keys=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_manifest(path: Path) -> dict[str, Any]:
    mpath = path / MANIFEST
    try:
        obj = json.loads(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SessionError(f"{path}: not a capture session (no {MANIFEST})") from None
    except (OSError, ValueError) as exc:
        raise SessionError(f"{mpath}: unreadable manifest: {exc}") from None
    if not isinstance(obj, dict):
        raise SessionError(f"{mpath}: manifest is not a JSON object")
    return obj


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
    for key, kind in _MANIFEST_TYPES.items():
        value = manifest.get(key)
        if value is not None and not isinstance(value, kind):
            found, wanted = type(value).__name__, kind.__name__
            problems.append(f"{MANIFEST}: {key!r} is a {found}, not a {wanted}; left out")
            del manifest[key]
    return manifest, problems


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


CUSTODY = "custody.jsonl"
"""The chain-of-custody log (auditor.evidence.custody). It is appended to after the session
closes, so it is no artifact: the manifest never lists it and verify does not expect it."""


def is_artifact(rel: str) -> bool:
    """Whether a file at ``rel`` (relative, ``/``-separated) in a session folder is one of the
    artifacts the manifest hashes: not the manifest, not the custody log, not a dot-file."""
    return rel not in (MANIFEST, CUSTODY) and not rel.rsplit("/", 1)[-1].startswith(".")


def _artifact_paths(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            if is_artifact(rel):
                out.append(rel)
    return sorted(out)


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
        self._fd: int | None = os.open(path / FLOWS, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
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
            _write_json_atomic(path / MANIFEST, manifest)
        except OSError as exc:
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
    """Write the end time, the summary and the artifact hashes into the manifest."""
    manifest = read_manifest(path)
    if manifest.get("status") not in (STATUS_OPEN, None):
        raise SessionError(f"{path} is already closed")
    manifest.update(updates)
    manifest["status"] = status
    manifest["ended_at"] = now_iso()
    sess = Session(path)
    summary = sess.summary()
    span = imported_span(manifest)
    if span is not None:  # an import: the capture's own times, packet captures included
        summary.first_ts, summary.last_ts = span
    manifest["summary"] = summary.to_dict()
    if sess.warnings:
        manifest["reader_warnings"] = sess.warnings
    manifest["artifacts"] = [
        {"path": rel, "sha256": sha256_file(path / rel), "size": (path / rel).stat().st_size}
        for rel in _artifact_paths(path)
    ]
    manifest.pop(SEAL, None)
    manifest[SEAL] = {"sha256": manifest_digest(manifest), "over": SEAL_OVER}
    _write_json_atomic(path / MANIFEST, manifest)
    return manifest


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

    def records(self) -> Iterator[Record]:
        """Every record in file order. Bad lines become warnings (``self.warnings``); a
        truncated last line (a killed writer) is expected and reported the same way."""
        fpath = self.path / FLOWS
        self.warnings[:] = self.manifest_warnings
        try:
            fh = open(fpath, "rb")
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
    unlisted = [rel for rel in _artifact_paths(path) if rel not in listed]
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


def _custody_warnings(path: Path) -> list[str]:
    from auditor.evidence.custody import check_log

    return [f"{CUSTODY}: {w}" for w in check_log(path / CUSTODY)]


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

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


def describe_device(device: dict[str, Any]) -> str:
    if not device:
        return "-"
    label = " ".join(str(device[k]) for k in ("manufacturer", "model") if device.get(k))
    serial = device.get("serial")
    return f"{label} ({serial})" if label and serial else label or str(serial or "-")


def session_info(path: Path) -> SessionInfo:
    sess = Session(path)
    m = sess.manifest
    summary = m.get("summary")
    if not isinstance(summary, dict) or m.get("status") == STATUS_OPEN:
        summary = sess.summary().to_dict()
    duration = sess.duration_seconds()
    if duration is None and m.get("started_at"):
        duration = time.time() - parse_iso(m["started_at"])
    return SessionInfo(
        id=sess.id,
        path=str(sess.path),
        status=str(m.get("status", "?")),
        device=describe_device(m.get("device") or {}),
        started_at=m.get("started_at"),
        duration_s=round(duration, 3) if duration is not None else None,
        flows=int(summary.get("flows", 0)),
        tls_failed=int(summary.get("tls_failed", 0)),
        bytes_up=int(summary.get("bytes_up", 0)),
        bytes_down=int(summary.get("bytes_down", 0)),
    )


def list_sessions(root: Path) -> tuple[list[SessionInfo], list[str]]:
    """Sessions under ``root``, oldest first, and one warning per folder that is not one."""
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
        except SessionError as exc:
            warnings.append(str(exc))
    infos.sort(key=lambda i: (i.started_at or "", i.id))
    return infos, warnings
