"""``auditor export``: analysed audits appended to a fleet dataset.

An input is a report folder (its ``findings.json``, and ``flows.parquet`` or, without it,
``flows.csv``) or a session, analysed first as ``auditor diff`` does
(:func:`auditor.analysis.diff.load_side`). Its key is the SHA-256 of its sessions' manifest
hashes (``findings.json`` ``session.manifest_sha256``): exporting the same audit again, from
the same report, another analysis of it or the session itself, adds nothing.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from auditor import columns
from auditor.analysis.diff import IDENTIFIER_RULES, identifiers_of, load_side
from auditor.errors import AuditorError
from auditor.fleet import schema
from auditor.fleet.dataset import Dataset, FleetError, part_name, partition_dir

log = logging.getLogger(__name__)

BATCH = 100  # sessions held in memory before their part is written
MAX_IDS = 200  # flow ids kept per finding or identifier row, as findings.json keeps them

Partition = tuple[str, str, str, str]


@dataclass
class Audit:
    """One input, read: its findings.json, flows and where they came from."""

    source: str
    kind: str  # report | session
    doc: dict[str, Any]
    flows: pd.DataFrame
    warnings: list[str] = field(default_factory=list)


@dataclass
class ExportResult:
    dataset: Path
    exported: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)  # already in the dataset
    failed: list[dict[str, Any]] = field(default_factory=list)  # could not be read
    files: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": str(self.dataset),
            "exported": self.exported,
            "skipped": self.skipped,
            "failed": self.failed,
            "files_written": len(self.files),
            "uncommitted_files_removed": len(self.removed),
            "warnings": self.warnings,
        }


# ---------------------------------------------------------------- reading an input


def read_audit(path: Path, workdir: Path) -> Audit:
    """``path`` (a report folder or a session) read; a session is analysed into ``workdir``."""
    side = load_side(Path(path), workdir, formats=("json", "csv"))
    folder = side.report if side.report is not None else Path(path)
    flows, warnings = read_flows(folder)
    return Audit(Path(path).name, side.kind, side.doc, flows, warnings)


def read_flows(folder: Path) -> tuple[pd.DataFrame, list[str]]:
    pq_path, csv_path = folder / "flows.parquet", folder / "flows.csv"
    try:
        if pq_path.is_file():
            return pd.read_parquet(pq_path), []
        if csv_path.is_file():
            df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
            return df, [f"{folder.name}: flows read from flows.csv (no flows.parquet)"]
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise FleetError(f"{folder}: flows cannot be read ({str(exc)[:160]})") from None
    return pd.DataFrame(), [f"{folder.name}: no flows.parquet or flows.csv: no flows exported"]


# ---------------------------------------------------------------- what an audit gives


def session_key(doc: Mapping[str, Any]) -> str:
    sess = doc.get("session") or {}
    hashes = sorted(str(h) for h in sess.get("manifest_sha256") or [] if h)
    if hashes:
        text = "manifest:" + "\n".join(hashes)
    else:
        ids = sorted(str(i) for i in sess.get("ids") or [sess.get("id")] if i)
        if not ids:
            raise FleetError("findings.json names no session (no manifest hash, no id)")
        text = "id:" + "\n".join(ids)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def build_of(device: Mapping[str, Any]) -> str:
    """The build, from the fingerprint (``brand/product/device:RELEASE/ID/INCREMENTAL:type/
    tags``): ``RELEASE/ID/INCREMENTAL``; without a fingerprint, the release and patch level."""
    fp = str(device.get("fingerprint") or "").strip()
    parts = fp.split(":")
    if len(parts) >= 3 and parts[1].strip():
        return parts[1].strip()
    if fp:
        return fp
    rel, patch = device.get("android_release"), device.get("security_patch")
    if rel or patch:
        return f"{rel or '?'} ({patch or '?'})"
    return schema.UNKNOWN


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and v != v)


def _text(v: Any) -> str | None:
    if _missing(v):
        return None
    s = str(v).strip()
    return s or None


def _ts(values: Any) -> pd.Series:
    s = pd.to_datetime(pd.Series(values, dtype=object), utc=True, errors="coerce", format="ISO8601")
    return s.astype("datetime64[us, UTC]")


def _int(v: Any) -> int:
    try:
        return int(v or 0)
    except (TypeError, ValueError):
        return 0


def _strs(values: Any) -> list[str]:
    return sorted({str(x) for x in values or [] if x is not None})


def _col(df: pd.DataFrame, name: str, default: Any = None) -> pd.Series:
    if name in df.columns:
        return df[name]
    return pd.Series([default] * len(df), index=df.index, dtype=object)


def _text_col(df: pd.DataFrame, name: str) -> list[str | None]:
    return [_text(v) for v in _col(df, name)]


def _partition(audit: Audit, flows_start: pd.Series) -> tuple[Partition, pd.Timestamp | None]:
    """The audit's partition values, and when it started: its first flow (else its
    endpoints' first contact, else when its device profile was read)."""
    device = audit.doc.get("device") or {}
    device = device if isinstance(device, dict) else {}
    started = flows_start.min() if len(flows_start) else None
    if started is None or pd.isna(started):
        seen = _ts([e.get("first_seen") for e in _endpoints(audit.doc)] or [None]).min()
        started = seen if not pd.isna(seen) else _ts([device.get("collected_at")]).min()
    if pd.isna(started):
        started = None
    month = started.strftime("%Y-%m") if started is not None else schema.UNKNOWN
    values = (
        _text(device.get("manufacturer")) or schema.UNKNOWN,
        _text(device.get("model")) or schema.UNKNOWN,
        build_of(device),
        month,
    )
    return values, started


def _endpoints(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [e for e in doc.get("endpoints") or [] if isinstance(e, dict)]


def _findings(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [f for f in doc.get("findings") or [] if isinstance(f, dict) and f.get("rule")]


def _with_keys(rows: dict[str, Any], n: int, key: str, part: Partition) -> dict[str, Any]:
    common = {schema.SESSION_KEY: [key] * n}
    common |= {k: [v] * n for k, v in zip(schema.PARTITION_KEYS, part, strict=True)}
    return common | rows


def tables_of(audit: Audit, key: str) -> tuple[Partition, dict[str, pa.Table]]:
    """The rows ``audit`` adds to each table."""
    doc, df = audit.doc, audit.flows
    start = _ts(list(_col(df, columns.START)))
    part, started = _partition(audit, start)
    n = len(df)
    name = _col(df, columns.NAME) if columns.NAME in df.columns else _col(df, columns.HOST)
    flows = {
        "session_id": _text_col(df, "session"),
        "flow_id": _text_col(df, columns.FLOW_ID),
        "start": start,
        schema.HOST: [_text(v) or "" for v in name],
        schema.RECIPIENT: [
            _text(v) or schema.UNKNOWN_RECIPIENT for v in _col(df, columns.ORGANISATION_NAME)
        ],
        "organisation_id": _text_col(df, columns.ORGANISATION),
        "country": _text_col(df, columns.COUNTRY),
        "server_country": _text_col(df, columns.SERVER_COUNTRY),
        "hosting": _text_col(df, columns.HOSTING_NAME),
        "transport": _text_col(df, columns.TRANSPORT),
        "scheme": _text_col(df, columns.SCHEME),
        "method": _text_col(df, columns.METHOD),
        "status": [_int(v) if _text(v) else None for v in _col(df, columns.STATUS)],
        schema.BYTES_UP: [_int(v) for v in _col(df, columns.BYTES_UP, 0)],
        schema.BYTES_DOWN: [_int(v) for v in _col(df, columns.BYTES_DOWN, 0)],
        "seen_by": _text_col(df, columns.SEEN_BY),
        "bypass": [_bool(v) for v in _col(df, columns.BYPASS)],
        "idle": [_bool(v) for v in _col(df, columns.IDLE)],
        "apps": _text_col(df, columns.APPS),
    }
    eps = _endpoints(doc)
    endpoints = {
        schema.HOST: [_text(e.get("host")) for e in eps],
        "ip": [_text(e.get("ip")) for e in eps],
        schema.RECIPIENT: [_text(e.get("organisation")) or schema.UNKNOWN_RECIPIENT for e in eps],
        "organisation_id": [_text(e.get("organisation_id")) for e in eps],
        "parent": [_text(e.get("parent")) for e in eps],
        "country": [_text(e.get("country")) for e in eps],
        "basis": [_text(e.get("basis")) for e in eps],
        "confidence": [_text(e.get("confidence")) for e in eps],
        "hosted_by": [_text(e.get("hosted_by")) for e in eps],
        "server_country": [_text(e.get("server_country")) for e in eps],
        "categories": [_strs(e.get("categories")) for e in eps],
        "legal_exposure": [
            _strs(x.get("country") for x in e.get("legal_exposure") or [] if isinstance(x, dict))
            for e in eps
        ],
        "state_control": [bool(e.get("state_control")) for e in eps],
        schema.FLOWS: [_int(e.get("flows")) for e in eps],
        schema.BYTES_UP: [_int(e.get("bytes_up")) for e in eps],
        schema.BYTES_DOWN: [_int(e.get("bytes_down")) for e in eps],
        "first_seen": _ts([e.get("first_seen") for e in eps]),
        "last_seen": _ts([e.get("last_seen") for e in eps]),
        "apps": [_strs(e.get("apps")) for e in eps],
    }
    fs = _findings(doc)
    findings = {
        "finding_id": [_text(f.get("id")) for f in fs],
        "rule": [str(f["rule"]) for f in fs],
        "severity": [_text(f.get("severity")) for f in fs],
        "title": [_text(f.get("title")) for f in fs],
        schema.HOST: [_text(f.get("host")) for f in fs],
        schema.RECIPIENT: [_text(f.get("organisation")) or schema.UNKNOWN_RECIPIENT for f in fs],
        "country": [_text(f.get("country")) for f in fs],
        "identifiers": [_strs(f.get("identifiers")) for f in fs],
        schema.ENCODINGS: [_strs(f.get("encodings")) for f in fs],
        schema.FLOWS: [len(set(map(str, f.get("flow_ids") or []))) for f in fs],
        "flow_ids": [_strs(f.get("flow_ids"))[:MAX_IDS] for f in fs],
    }
    # the diff's reading of identifier findings: one definition of "sent to a recipient"
    sent = sorted(identifiers_of(doc).items())
    identifiers = {
        schema.RECIPIENT: [k[0] for k, _ in sent],
        schema.IDENTIFIER: [k[1] for k, _ in sent],
        schema.ENCODINGS: [_strs(v["encodings"]) for _, v in sent],
        "hosts": [_strs(v["hosts"]) for _, v in sent],
        "rules": [_strs(v["rules"]) for _, v in sent],
        schema.FLOWS: [len(v["flow_ids"]) for _, v in sent],
        "flow_ids": [_strs(v["flow_ids"])[:MAX_IDS] for _, v in sent],
    }
    sess = doc.get("session") or {}
    device = doc.get("device") if isinstance(doc.get("device"), dict) else {}
    assert isinstance(device, dict)
    cov = doc.get("coverage") if isinstance(doc.get("coverage"), dict) else {}
    assert isinstance(cov, dict)
    sessions = {
        "session_ids": [_strs(sess.get("ids") or [sess.get("id")])],
        "manifest_sha256": [_strs(sess.get("manifest_sha256"))],
        "source": [audit.source],
        "input": [audit.kind],
        "manufacturer": [_text(device.get("manufacturer"))],
        "brand": [_text(device.get("brand"))],
        "device": [_text(device.get("device"))],
        "android_release": [_text(device.get("android_release"))],
        "fingerprint": [_text(device.get("fingerprint"))],
        "security_patch": [_text(device.get("security_patch"))],
        schema.STARTED: _ts([started.isoformat() if started is not None else None]),
        schema.DURATION: [_float(cov.get("duration_seconds"))],
        schema.FLOWS: [n],
        "findings": [len(fs)],
        "findings_schema_version": [_int(doc.get("schema_version"))],
        "auditor_version": [_text((doc.get("method") or {}).get("auditor_version"))],
        "generated_at": [_text(doc.get("generated_at"))],
    }
    rows = {
        "flows": (flows, n),
        "endpoints": (endpoints, len(eps)),
        "findings": (findings, len(fs)),
        "identifiers": (identifiers, len(sent)),
        "sessions": (sessions, 1),
    }
    out = {
        t: pa.Table.from_pydict(_with_keys(cols, k, key, part), schema=schema.TABLES[t])
        for t, (cols, k) in rows.items()
    }
    return part, out


def _bool(v: Any) -> bool | None:
    if _missing(v):
        return None
    if isinstance(v, str):
        return {"true": True, "false": False}.get(v.strip().lower())
    return bool(v)


def _float(v: Any) -> float | None:
    try:
        return float(v) if v is not None else None
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------- the export


def export(
    inputs: Sequence[Path],
    dataset: Path,
    *,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> ExportResult:
    """Append ``inputs`` to the dataset at ``dataset`` (made when missing). An input already
    there (same key) is skipped; an input that cannot be read is listed under ``failed``
    with its reason, and the others go on."""
    if not inputs:
        raise FleetError("nothing to export")
    ds = Dataset.open(Path(dataset), create=True)
    res = ExportResult(ds.root)
    with ds.locked():
        for p in ds.orphans():
            p.unlink(missing_ok=True)
            res.removed.append(p)
        if res.removed:
            res.warnings.append(
                f"{len(res.removed)} uncommitted file(s) of an interrupted export removed"
            )
        known = ds.session_keys()
        pending: dict[Partition, dict[str, list[pa.Table]]] = defaultdict(lambda: defaultdict(list))
        held: list[dict[str, Any]] = []
        with tempfile.TemporaryDirectory(prefix="auditor-export-") as tmp:
            for i, path in enumerate(inputs):
                if on_progress:
                    on_progress(i, len(inputs), str(path))
                try:
                    audit = read_audit(Path(path), Path(tmp) / str(i))
                    key = session_key(audit.doc)
                except AuditorError as exc:
                    res.failed.append({"input": str(path), "reason": str(exc)})
                    continue
                if key in known:
                    res.skipped.append(
                        {"input": str(path), "session_key": key, "reason": "already in the dataset"}
                    )
                    continue
                part, tables = tables_of(audit, key)
                known.add(key)
                for t, data in tables.items():
                    pending[part][t].append(data)
                res.warnings += audit.warnings
                held.append(_described(path, audit, key, part, tables["flows"].num_rows))
                if len(held) >= BATCH:
                    res.files += _flush(ds, pending)
                    res.exported += held
                    pending.clear()
                    held = []
            res.files += _flush(ds, pending)
            res.exported += held
        if on_progress:
            on_progress(len(inputs), len(inputs), "")
    return res


def _described(path: Path, audit: Audit, key: str, part: Partition, flows: int) -> dict[str, Any]:
    return {
        "input": str(path),
        "kind": audit.kind,
        "session_key": key,
        **dict(zip(schema.PARTITION_KEYS, part, strict=True)),
        "flows": flows,
        "identifier_findings": sum(
            1 for f in _findings(audit.doc) if f.get("rule") in IDENTIFIER_RULES
        ),
    }


def _flush(ds: Dataset, pending: Mapping[Partition, Mapping[str, list[pa.Table]]]) -> list[Path]:
    written: list[Path] = []
    parts = []
    for part, tables in sorted(pending.items()):
        keys = [str(k) for t in tables[schema.COMMIT_TABLE] for k in t.column(schema.SESSION_KEY)]
        parts.append((part, tables, part_name(keys)))
    # every other table first, then the sessions files that commit them
    for table in [t for t in schema.TABLES if t != schema.COMMIT_TABLE] + [schema.COMMIT_TABLE]:
        for part, tables, name in parts:
            data = pa.concat_tables(tables[table])
            written.append(ds.write_part(table, partition_dir(part), name, data))
    return written
