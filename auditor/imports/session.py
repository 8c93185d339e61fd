"""The import driver: capture files made by other tools become one new, closed session.

    auditor import FILE... [--out captures/] [--identifier NAME=VALUE ...]

Each file's format is found from its content, not its name (HAR: a JSON object with
``log.entries``; mitmproxy flow file: tnetstrings; pcap and pcapng: their magic numbers).
Every file is checked before the session is made, so a wrong file leaves nothing behind.
The file is then copied into the session as ``original/<name>`` and its SHA-256, size, format
and counts go into the manifest's ``capture.import``; the records are read from that copy.
Identifiers given with ``--identifier`` go into ``device.identifiers``, where the analyser
looks for them. The session is closed with its artifact hashes, so ``auditor verify`` passes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from auditor.analysis.identifiers import parse_identifier
from auditor.errors import AuditorError
from auditor.imports import (
    Compression,
    ImportFileError,
    ImportFormat,
    ImportReport,
    SkipKind,
    compression,
    decompress_bounded,
    detect_format,
)
from auditor.imports.har import MAX_DECOMPRESSED_HAR, HarLog, har_records, load_har
from auditor.imports.intrusion import intrusion_records
from auditor.imports.mitmflows import check_flow_file, flow_records
from auditor.records import RECORD_CLASSES, EventRecord, HttpRecord, Record
from auditor.session.bodies import DEFAULT_BODY_CAP
from auditor.session.layout import STATUS_COMPLETE, STATUS_INCOMPLETE, sha256_file
from auditor.session.manifest import read_manifest
from auditor.session.writer import SessionWriteError, SessionWriter, write_all, write_error
from auditor.timeutil import iso, parse_iso

log = logging.getLogger(__name__)

_MAX_TS = 253402300799.0  # the end of year 9999, the last time an ISO timestamp can hold

ORIGINAL = "original"
IDENTIFIER_SOURCE = "--identifier"
_HEAD = 64 * 1024
_COMPRESSED_HEAD = 1024 * 1024
_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Source:
    path: Path
    format: ImportFormat
    size: int
    sha256: str
    har: HarLog | None = None
    data: bytes | None = None  # a HAR's bytes, exactly as read (compressed or not)
    compression: Compression | None = None
    capture: Any = None  # a packet capture, as auditor.packets.read_capture read it


@dataclass
class ImportResult:
    session: Path
    status: str
    manifest: dict[str, Any]
    files: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "session": str(self.session),
            "status": self.status,
            "files": self.files,
            "warnings": self.warnings,
            "summary": self.manifest.get("summary", {}),
        }


# ------------------------------------------------------------------------------------- driver


def import_files(
    files: Sequence[Path],
    out: Path,
    *,
    identifiers: Mapping[str, str] | Iterable[str] = (),
    notes: str | None = None,
    body_cap: int = DEFAULT_BODY_CAP,
) -> ImportResult:
    """Import ``files`` into one new session under ``out`` and close it.

    Raises ImportFileError (naming the file) before anything is written when a file is
    missing, empty, of no known format, or unreadable from its start."""
    if not files:
        raise ImportFileError("no file to import")
    idents = parse_identifiers(identifiers)
    sources = _check_all([Path(f) for f in files])
    names = _original_names(sources)
    planned = [
        {
            "name": n,
            "original": f"{ORIGINAL}/{n}",
            "size": s.size,
            "sha256": s.sha256,
            "format": s.format.value,
            **({"compression": s.compression.value} if s.compression else {}),
        }
        for s, n in zip(sources, names, strict=True)
    ]
    writer = SessionWriter.create(
        Path(out),
        notes=notes if notes is not None else "imported from " + ", ".join(names),
        device={"identifiers": idents} if idents else {},
        capture={"import": {"files": planned}},
        body_cap=body_cap,
    )
    summaries: list[dict[str, Any]] = []
    warnings: list[str] = []
    status = STATUS_COMPLETE
    span = Span()
    spans: list[Span] = []
    copied: set[str] = set()
    try:
        writer.event("import_started", f"importing {len(sources)} file(s)", files=planned)
        (writer.path / ORIGINAL).mkdir(mode=0o700)
        seen: set[str] = set()
        os_seen: set[bytes] = set()  # events of overlapping intrusion logs, imported once
        for src, name, plan in zip(sources, names, planned, strict=True):
            file_span = Span()
            _copy(src, writer.path / ORIGINAL / name)
            copied.add(name)
            report = _import_one(src, name, writer, seen, file_span, os_seen)
            _refuse_if_nothing_read(name, report)
            span.add_span(file_span)
            spans.append(file_span)
            summary = plan | report.summary() | file_span.to_dict()
            summaries.append(summary)
            warnings += [f"{name}: {s.where}: {s.reason}" for s in report.skipped]
            listed = sum(s.count for s in report.skipped)
            if report.skipped_total > listed:
                more = report.skipped_total - listed
                warnings.append(f"{name}: {more} more skipped (see the session's import event)")
            warnings += [
                w if w.startswith(f"{name}: ") else f"{name}: {w}" for w in report.warnings
            ]
            if "stopped_at_byte" in report.meta:
                status = STATUS_INCOMPLETE
            writer.event(
                "import",
                _describe(name, report),
                file=plan,
                **report.to_dict(),
                **report.details,
            )
    except BaseException as exc:
        fate = _abandon(writer, exc, planned, copied)
        mapped = _failed(exc, writer, fate)
        if mapped is not None:
            raise mapped from exc
        raise
    opened = read_manifest(writer.path)
    capture = opened.get("capture") or {}
    started = opened.get("started_at")
    capture["import"] = {
        "files": summaries,
        **span.to_dict(),
        # files of different days: the time covered is theirs, not the gap between them
        **({"duration_seconds": covered_seconds(spans)} if span.first is not None else {}),
        "import_seconds": round(time.time() - parse_iso(started), 3) if started else None,
    }
    try:
        manifest = writer.close(status=status, capture=capture)
    except SessionWriteError as exc:  # the manifest could not be written: nothing is sealed
        raise SessionWriteError(f"{exc} ({_remove(writer, exc)})", exc.errno) from exc
    _keep_packet_flows(writer.path, manifest, sources, names)
    return ImportResult(writer.path, status, manifest, summaries, warnings)


def _keep_packet_flows(
    path: Path, manifest: dict[str, Any], sources: list[_Source], names: list[str]
) -> None:
    """Keep the packet flows of the captures this import read in the packet flow cache
    (:mod:`auditor.analysis.packetcache`), so that the first analysis of the session does not
    read them again. The session is sealed already: a failure here is only logged."""
    from auditor.analysis import packetcache
    from auditor.analysis.packetflows import read_packet_flows

    read = {
        f"{ORIGINAL}/{n}": (s.sha256, s.capture)
        for s, n in zip(sources, names, strict=True)
        if s.capture is not None
    }
    if not read or not packetcache.enabled():
        return
    try:
        read_packet_flows(path, manifest, read=read)
    except Exception as exc:  # noqa: BLE001 - an accelerator: the import itself is done
        log.warning("%s: packet flows not cached: %s", path, exc)


def import_command(
    files: Sequence[Path | str],
    out: Path | str,
    identifiers: Mapping[str, str] | Iterable[str],
    as_json: bool,
) -> dict[str, Any]:
    """``auditor import FILE... [--out DIR] [--identifier NAME=VALUE ...] [--json]``.

    Returns the JSON form of the result (session, status, files with their counts, warnings,
    summary); without ``as_json`` it also holds ``text``, the lines to print.
    The ``auditor import`` command in :mod:`auditor.cli` prints ``text`` or the JSON.
    """
    res = import_files([Path(f) for f in files], Path(out), identifiers=identifiers)
    data = res.to_dict()
    if not as_json:
        data["text"] = format_result(res)
    return data


def format_result(res: ImportResult) -> str:
    lines = []
    for f in res.files:
        creator = f.get("creator") or {}
        by = (
            f", from {creator.get('name')} {creator.get('version', '')}".rstrip() if creator else ""
        )
        lines.append(f"{f['name']} ({f['format']}{by}): {_counts_text(f)}")
        for key, n in f.get("notes", {}).items():
            lines.append(f"  note: {n} {key.replace('_', ' ')}")
    s = res.manifest.get("summary", {})
    pflows = sum(int((f.get("counts") or {}).get("packet_flows", 0)) for f in res.files)
    seen = f"{s.get('flows', 0)} HTTP flows, {s.get('hosts', 0)} hosts"
    if pflows:
        seen += f", {pflows} packet flows"
    lines.append(f"session {res.session} ({res.status}): {seen}")
    return "\n".join(lines)


def parse_identifiers(values: Mapping[str, str] | Iterable[str]) -> list[dict[str, str]]:
    """``NAME=VALUE`` strings (or a mapping) as the manifest's ``device.identifiers``."""
    pairs: list[tuple[str, str]] = []
    if isinstance(values, Mapping):
        pairs = [(str(k), str(v)) for k, v in values.items()]
    else:
        for v in values:
            try:
                pairs.append(parse_identifier(str(v)))
            except ValueError as exc:
                raise ImportFileError(f"--identifier {exc}, e.g. imei=490154203237518") from None
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for name, value in pairs:
        name, value = name.strip(), value.strip()
        if not name or not value:
            raise ImportFileError(f"--identifier {name}={value}: NAME and VALUE must not be empty")
        if name in seen:
            raise ImportFileError(
                f"--identifier {name} is given twice; name them apart (e.g. {name}1, {name}2)"
            )
        seen.add(name)
        out.append({"name": name, "value": value, "source": IDENTIFIER_SOURCE})
    return out


# ------------------------------------------------------------------------------ checking files


def _check_all(paths: list[Path]) -> list[_Source]:
    sources = [_check(p) for p in paths]
    seen: dict[str, Path] = {}
    for s in sources:
        if s.sha256 in seen:
            raise ImportFileError(f"{s.path}: same content as {seen[s.sha256]}; import it once")
        seen[s.sha256] = s.path
    return sources


def _check(path: Path) -> _Source:
    try:
        if not path.is_file():
            what = "a folder" if path.is_dir() else "no such file"
            raise ImportFileError(f"{path}: {what}")
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(_HEAD)
            if compression(head) is not None:
                # a zstd block (up to 128 KiB) decompresses only whole
                head += fh.read(_COMPRESSED_HEAD - len(head))
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not head:
        raise ImportFileError(f"{path}: empty file")
    fmt = detect_format(head)
    packed = compression(head)
    if fmt is None:
        inside = f"{packed.value}-compressed data of " if packed else ""
        raise ImportFileError(
            f"{path}: unknown format ({inside}no HAR file, mitmproxy flow file, pcap, pcapng "
            "or Android intrusion log)"
        )
    if fmt is ImportFormat.INTRUSION:
        if packed:
            raise ImportFileError(
                f"{path}: a {packed.value}-compressed intrusion log; decompress it first"
            )
        return _Source(path, fmt, size, _sha256(path))
    if fmt is ImportFormat.HAR:
        data = _read_all(path)
        text = decompress_bounded(data, MAX_DECOMPRESSED_HAR, str(path)) if packed else data
        har = load_har(text, str(path))
        sha = hashlib.sha256(data).hexdigest()
        return _Source(path, fmt, len(data), sha, har, data, packed)
    if fmt is ImportFormat.MITMPROXY:
        if packed:
            raise ImportFileError(
                f"{path}: a {packed.value}-compressed mitmproxy flow file; decompress it first "
                "(mitmproxy does not read it compressed either)"
            )
        with open(path, "rb") as fh:
            check_flow_file(fh, str(path))
        return _Source(path, fmt, size, _sha256(path))
    before = _identity(path)
    capture, damage = _read_packets(path)
    _check_packets_readable(path, capture, damage)
    sha = _sha256(path)
    if _identity(path) != before:  # what was read would not be what was hashed and copied
        raise ImportFileError(
            f"{path}: changed while it was read; import it when nothing writes it"
        )
    return _Source(path, fmt, size, sha, capture=capture, compression=packed)


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    """The file's device, inode, size and modification time (None when it cannot be read)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _read_all(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except MemoryError:
        raise ImportFileError(f"{path}: too large to load as HAR") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _original_names(sources: list[_Source]) -> list[str]:
    """The file names under ``original/``: the source's name, made unique, never hidden
    (hidden files are not hashed into the manifest)."""
    names: list[str] = []
    for s in sources:
        base = s.path.name
        if base.startswith("."):
            base = "_" + base[1:]
        name, n = base, 1
        while name in names:
            n += 1
            p = Path(base)
            name = f"{p.stem}-{n}{p.suffix}"
        names.append(name)
    return names


# ------------------------------------------------------------------------------ importing one


def _import_one(
    src: _Source,
    name: str,
    writer: SessionWriter,
    seen: set[str],
    span: Span,
    os_seen: set[bytes] | None = None,
) -> ImportReport:
    target = writer.path / ORIGINAL / name  # copied whole already (_copy)
    report = ImportReport(src.format)
    if src.format is ImportFormat.HAR:
        assert src.har is not None
        records = har_records(src.har, writer.bodies, report, f"har-{src.sha256[:12]}")
        _write_all(writer, records, report, seen, span)
    elif src.format is ImportFormat.MITMPROXY:
        with open(target, "rb") as fh:
            records = flow_records(fh, writer.bodies, report, name, src.size)
            _write_all(writer, records, report, seen, span)
    elif src.format is ImportFormat.INTRUSION:
        with open(target, "rb") as fh:
            events = intrusion_records(fh, report, name, f"il-{src.sha256[:12]}", seen=os_seen)
            _write_all(writer, events, report, seen, span)
    else:
        _packet_report(src.capture, report)
        span.add_packets(src.capture)  # damaged compressed data: _packet_report warns
    return report


def _write_all(
    writer: SessionWriter,
    records: Iterable[Record],
    report: ImportReport,
    seen: set[str],
    span: Span,
) -> None:
    """Write the records; one whose id an earlier file already gave (the same flow saved in
    two flow files) is skipped, so ids stay unique in the session."""
    for rec in records:
        rec_id = getattr(rec, "id", None)
        if rec_id is not None:
            if rec_id in seen:
                report.count(rec.TYPE.value, -1)
                report.skip(
                    f"{rec.TYPE.value} {rec_id}",
                    "already imported from an earlier file",
                    SkipKind.DUPLICATE,
                )
                continue
            seen.add(rec_id)
        writer.write(rec)
        span.add_record(rec)


def _refuse_if_nothing_read(name: str, report: ImportReport) -> None:
    """A file of which every item was skipped gives an error, not an empty session; one whose
    items an earlier file of the import already gave (overlapping daily logs, a flow file
    given twice) does not: its content is in the session."""
    written = sum(report.counts.get(k, 0) for k in RECORD_CLASSES)
    if written or not report.skipped_total or report.format in _PACKET_FORMATS:
        return
    if all(g.kind is SkipKind.DUPLICATE for g in report.groups.values()):
        return
    first = report.skipped[0]
    kinds = ", ".join(sorted({g.kind.value for g in report.groups.values()}))
    raise ImportFileError(
        f"{name}: nothing could be imported: all {report.skipped_total} items ({kinds}) were "
        f"skipped; the first, {first.where}: {first.reason}"
    )


_PACKET_FORMATS = frozenset({ImportFormat.PCAP, ImportFormat.PCAPNG})


def covered_seconds(spans: Iterable[Span]) -> float:
    """How long the union of the spans lasts: overlapping files count once, and the time
    between files (captured on different days) not at all."""
    pairs = sorted((s.first, s.last) for s in spans if s.first is not None and s.last is not None)
    total = 0.0
    start = end = None
    for a, b in pairs:
        if end is None or a > end:
            if end is not None and start is not None:
                total += end - start
            start, end = a, b
        else:
            end = max(end, b)
    if end is not None and start is not None:
        total += end - start
    return round(total, 6)


class Span:
    """The first and last moment of the traffic a file holds: what an imported session
    covers (its ``started_at``/``ended_at`` say when the import ran)."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last: float | None = None

    def add(self, ts: float | None) -> None:
        # a time of 0 is a time mitmproxy made up for a flow of an old file, not traffic
        if ts is None or not 0 < ts < _MAX_TS:
            return
        self.first = ts if self.first is None else min(self.first, ts)
        self.last = ts if self.last is None else max(self.last, ts)

    def add_iso(self, text: Any) -> None:
        if isinstance(text, str) and text:
            try:
                self.add(parse_iso(text))
            except ValueError:
                pass

    def add_record(self, rec: Record) -> None:
        if isinstance(rec, HttpRecord):
            for t in (rec.request_start, rec.request_end, rec.response_start, rec.response_end):
                self.add_iso(t)
            return
        self.add_iso(getattr(rec, "ts", None))
        if isinstance(rec, EventRecord):
            self.add_iso(rec.data.get("first_message"))
            self.add_iso(rec.data.get("last_message"))

    def add_packets(self, capture: Any) -> None:
        """The first and last packet of any flow, and of any DNS message."""
        import pandas as pd

        for frame, cols in ((capture.flows, ("first_seen", "last_seen")), (capture.dns, ("ts",))):
            for col in cols:
                if col in frame and len(frame):
                    values = pd.to_datetime(frame[col], utc=True, errors="coerce").dropna()
                    if len(values):
                        self.add(values.min().timestamp())
                        self.add(values.max().timestamp())

    def add_span(self, other: Span) -> None:
        self.add(other.first)
        self.add(other.last)

    def to_dict(self) -> dict[str, Any]:
        """``first_ts``, ``last_ts`` (ISO 8601 UTC) and ``duration_seconds``; empty when the
        file held no time."""
        if self.first is None or self.last is None:
            return {}
        return {
            "first_ts": iso(self.first),
            "last_ts": iso(self.last),
            "duration_seconds": round(self.last - self.first, 6),
        }


def _copy(src: _Source, target: Path) -> None:
    """Copy the source to ``target`` (0600). The source's size and SHA-256 were recorded when
    it was checked, before this; the bytes copied, and the copy read back from the disk, must
    match both. Otherwise, or when a write fails (a full disk, a file size limit), the partial
    copy is removed and the error raised: no copy that is not the source stays under its name.
    """
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    h = hashlib.sha256()
    copied = 0
    try:
        try:
            try:
                if src.data is not None:
                    write_all(fd, src.data)
                    h.update(src.data)
                    copied = len(src.data)
                else:
                    with _open_source(src.path) as fh:
                        while chunk := _read_source(fh, src.path):
                            write_all(fd, chunk)
                            h.update(chunk)
                            copied += len(chunk)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise write_error(target, exc) from None
        if copied != src.size or h.hexdigest() != src.sha256:
            raise ImportFileError(
                f"{src.path}: changed while it was being imported ({src.size} bytes, "
                f"SHA-256 {src.sha256[:16]}... when checked; {copied} bytes when copied)"
            )
        if target.stat().st_size != src.size or sha256_file(target) != src.sha256:
            raise ImportFileError(
                f"{target}: the copy on disk is not the {src.size} bytes read from "
                f"{src.path} (the file system lost or changed part of it)"
            )
    except BaseException:
        with contextlib.suppress(OSError):
            target.unlink()
        raise


def _open_source(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _read_source(fh: BinaryIO, path: Path) -> bytes:
    try:
        return fh.read(_CHUNK)
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot read: {exc.strerror or exc}") from None


NOT_COPIED = "the import failed before this file was copied whole"


def _abandon(
    writer: SessionWriter, exc: BaseException, planned: list[dict[str, Any]], copied: set[str]
) -> str:
    """Close a session whose import failed half-way as incomplete, saying why, with the files
    not copied whole no longer named as originals (``original: null``, ``not_copied``). When
    even that cannot be written (the disk is full), the session is removed: an import leaves
    a session that says what it holds, or none. Returns what became of it, for the error."""
    why = f"{type(exc).__name__}: {exc}"[:500]
    try:
        capture = read_manifest(writer.path).get("capture") or {}
        capture["import"] = {
            "files": [
                p if p["name"] in copied else {**p, "original": None, "not_copied": NOT_COPIED}
                for p in planned
            ]
        }
        with contextlib.suppress(SessionWriteError):  # kept for the manifest (unwritten)
            writer.event("import_failed", why)
        writer.close(status=STATUS_INCOMPLETE, import_failed=why, capture=capture)
        return f"session {writer.path} kept, closed as incomplete"
    except Exception as close_exc:  # noqa: BLE001 - whatever it was, leave no half session
        return _remove(writer, close_exc)


def _remove(writer: SessionWriter, why: BaseException) -> str:
    """Remove the session of an import that cannot be closed; say what became of it."""
    log.debug("could not close %s after a failed import: %s", writer.path, why)
    writer.detach()
    shutil.rmtree(writer.path, ignore_errors=True)
    if writer.path.exists():
        return f"session {writer.path} could not be closed nor removed: remove it"
    return f"session {writer.path} removed: it could not be closed"


def _failed(exc: BaseException, writer: SessionWriter, fate: str) -> BaseException | None:
    """The error to raise for a failed import: one that names the session's fate. A failed
    write to the session (an OSError from the body store) becomes a SessionWriteError."""
    if isinstance(exc, OSError) and exc.filename and str(exc.filename).startswith(str(writer.path)):
        exc = write_error(Path(exc.filename), exc)
    if isinstance(exc, SessionWriteError):
        return SessionWriteError(f"{exc} ({fate})", exc.errno)
    if isinstance(exc, AuditorError):
        return type(exc)(f"{exc} ({fate})")
    return None


def _describe(name: str, report: ImportReport) -> str:
    return f"imported {name} ({report.format.value}): {_counts_text(report.summary())}"


def _counts_text(summary: Mapping[str, Any]) -> str:
    counts = summary.get("counts", {})
    keys = [*RECORD_CLASSES, "packets", "packet_flows", "dns_messages"]
    keys += ["dns_event", "connect_event", "security_event"]  # an intrusion log's
    parts = [f"{counts[k]} {k.replace('_', ' ')}" for k in keys if counts.get(k)]
    text = ", ".join(parts) or "no records"
    if summary.get("skipped"):
        text += f"; {summary['skipped']} skipped"
    if summary.get("warnings"):
        text += f"; {len(summary['warnings'])} warning(s)"
    return text


# ---------------------------------------------------------------------------- packet captures

MAX_COMMENTS = 50  # pcapng comments listed in the manifest (all are counted)


def _read_packets(path: Path) -> tuple[Any, str | None]:
    """The capture read with the fast packet path (flows, DNS and names; no per-packet table),
    or an ImportFileError naming the file when it is no capture at all; and, for a compressed
    capture whose compressed data ends early, where it does."""
    from auditor.packets import PcapError, read_capture
    from auditor.packets.spilldir import SpillFull

    try:
        # the reader undoes gzip and zstd itself, and counts a stream that ends early or is
        # damaged (compressed-stream-truncated / -corrupt; zstd says nothing of a cut frame)
        capture = read_capture(path, keep_packets=False)
    except PcapError as exc:
        raise ImportFileError(f"{path}: {exc}") from None
    except SpillFull:  # not the capture's fault: the CLI says what a full disk needs
        raise
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    damaged = {k: n for k, n in capture.warnings.items() if str(k).startswith("compressed-stream-")}
    damage = (
        "the compressed data is damaged or cut ("
        + ", ".join(f"{k}: {n}" for k, n in sorted(damaged.items()))
        + ")"
        if damaged
        else None
    )
    return capture, damage


#: The packet counts (``CaptureResult.counts``) of frames the decoder understood at the link
#: layer: IP of either version, and other protocols it recognised (ARP...). A frame it did not
#: (an unknown link type, a cut link or IP header) is counted in none of them.
_READ_KINDS = ("ipv4", "ipv6", "non-ip")


def unreadable_packets(capture: Any) -> tuple[int, int]:
    """(frames in the capture, frames the decoder could not read)."""
    total = int(capture.counts.get("packets", 0))
    read = sum(int(capture.counts.get(k, 0)) for k in _READ_KINDS)
    return total, max(total - read, 0)


def _check_packets_readable(path: Path, capture: Any, damage: str | None) -> None:
    """A capture with frames of which none can be read gives no session."""
    total, bad = unreadable_packets(capture)
    if total == 0:
        why = f" ({damage})" if damage else ""
        raise ImportFileError(f"{path}: the capture holds no packets{why}; nothing to import")
    if bad == total:
        raise ImportFileError(
            f"{path}: none of its {total} packets can be read ({_why_unreadable(capture)}); "
            "nothing to import"
        )


#: The decoder's warnings about a frame it could not read at the link or IP layer.
_UNREAD_WARNINGS = (
    "unknown-link-type-",
    "truncated-link",
    "truncated-ip",
    "bad-ip",
    "ip-length",
    # auditor.packets.decode.LINK_KINDS that may hide IP: encrypted Wi-Fi, a bad header...
    "null-header",
    "wlan-",
    "radiotap-",
    "nflog-",
    "pktap-",
)


def _why_unreadable(capture: Any) -> str:
    why = {k: v for k, v in capture.warnings.items() if str(k).startswith(_UNREAD_WARNINGS)}
    return ", ".join(f"{k}: {v}" for k, v in sorted(why.items())) or "no known cause"


def _packet_report(capture: Any, report: ImportReport) -> None:
    """What the capture holds, for the manifest and the import event.

    The capture stays the evidence: the analyser reads ``original/<name>`` itself (see
    :mod:`auditor.analysis.packetflows`), so no per-packet or per-flow record is copied into
    ``flows.jsonl``. Damage met while reading (a truncated last record, an unknown link type,
    a snaplen-cut packet) is counted here and becomes a warning."""
    counts = capture.counts
    report.count("packets", int(counts.get("packets", 0)))
    report.count("packet_flows", len(capture.flows))
    report.count("dns_messages", len(capture.dns))
    names = capture.flows["name_evidence"].astype(str).value_counts().to_dict()
    report.meta["capture"] = {
        "format": capture.format,
        "link_types": list(capture.link_types),
        "interfaces": [
            {"index": i.index, "link_type": i.link_type, "name": i.name, "snaplen": i.snaplen}
            for i in capture.interfaces[:MAX_COMMENTS]
        ],
        "flows_named_by": dict(sorted(names.items())),
        "apps": list(capture.apps),
        "warnings": {str(k): int(v) for k, v in sorted(capture.warnings.items())},
    }
    if capture.comments:
        report.details["comments"] = [
            {"where": c.where, "index": c.index, "text": c.text}
            for c in capture.comments[:MAX_COMMENTS]
        ]
        report.meta["capture"]["comments"] = len(capture.comments)
    for kind, n in sorted(capture.warnings.items()):
        report.note(f"packet_{kind}", int(n))
    total, bad = unreadable_packets(capture)
    if bad:
        report.skip_many(
            SkipKind.PACKETS,
            bad,
            f"{bad} of {total} packets could not be read ({_why_unreadable(capture)})",
        )
    damaged = {
        k: v
        for k, v in capture.warnings.items()
        if "truncated" in str(k) or str(k).startswith("compressed-stream-")
    }
    if damaged:
        report.warn(
            "the capture is damaged: "
            + ", ".join(f"{k} {v}" for k, v in sorted(damaged.items()))
            + "; everything before the damage was read"
        )
