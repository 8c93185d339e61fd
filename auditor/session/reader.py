"""Reading a saved capture session: its records (bad lines become warnings), their summary,
and the flow table analysis starts from. Analysis only ever opens a session this way."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditor import columns
from auditor.errors import SessionError
from auditor.fsutil import open_regular
from auditor.records import (
    EventRecord,
    HttpRecord,
    Record,
    RecordFormatError,
    TlsFailedRecord,
    loads,
)
from auditor.session.bodies import BodyStore
from auditor.session.layout import BODIES, FLOWS, STATUS_OPEN, walk_folder
from auditor.session.manifest import (
    IMPORT_EVENTS,
    imported_span,
    read_manifest,
    read_manifest_lenient,
)
from auditor.timeutil import parse_iso

if TYPE_CHECKING:
    import pandas as pd


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
        for rel in walk_folder(root)[0]
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
