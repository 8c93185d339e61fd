"""What is sent, flow by flow: the payload scanner run over every saved HTTP flow.

For each request: the device identifiers it carries and in what encodings
(:mod:`auditor.analysis.payload`), personal values found without knowing them, an
installed-app list, and the character of its body (plain, compressed, or encrypted). For each
response: keyword or configuration lists (the ``MiAdBlacklistConfig`` pattern), extracted as
artifacts next to the report.

Bodies are decoded within bounds (:func:`auditor.codecs.decode`): a body that decodes past a
bound is searched in its first part only, and the warnings of the outcome name its flows, so
a report says which bodies were capped (a decompression bomb among them).
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

from auditor.analysis.patterns import (
    characterise,
    find_app_list,
    find_keyword_lists,
    find_patterns,
)
from auditor.analysis.payload import Part, Scanner
from auditor.analysis.report import private_dir
from auditor.analysis.rules import Match
from auditor.codecs import decode
from auditor.records import HttpRecord
from auditor.session import Session

log = logging.getLogger(__name__)

# Decoded bytes of one body that the shape, app-list and keyword-list searches read. These are
# regex and JSON passes (~150 ns a byte), so a few kilobytes of gzip must not buy seconds of
# them; the identifier search (payload.Limits.decode_limit) reads further.
DECODE_LIMIT = 4 * 1024 * 1024
MAX_NAMED_FLOWS = 10  # flows named per warning
MIN_CHARACTERISED = 64  # bytes: shorter bodies say nothing about entropy
EXCERPT = 160


@dataclass
class ScanOutcome:
    matches: dict[str, list[Match]] = field(default_factory=dict)
    personal: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    characters: dict[str, dict[str, Any]] = field(default_factory=dict)
    keyword_lists: dict[str, dict[str, Any]] = field(default_factory=dict)
    app_lists: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    bytes_scanned: int = 0


def _decoded(session: Session, rec: HttpRecord, response: bool) -> tuple[bytes | None, str]:
    """The body with its content encoding undone (at most :data:`DECODE_LIMIT` bytes), and a
    warning when it decodes past that."""
    ref = rec.response_body if response else rec.request_body
    if ref is None:
        return None, ""
    try:
        raw = session.bodies.get(ref.sha256)
    except OSError:
        return None, ""
    if not ref.encoding:
        return raw, ""
    res = decode(raw, ref.encoding, DECODE_LIMIT)
    if res.exceeded:
        part = "response" if response else "request"
        return res.data, (
            f"decode-limit: {part} body: {ref.encoding} data expands past {DECODE_LIMIT} bytes; "
            f"personal data, app and keyword lists were searched in the first {DECODE_LIMIT}"
        )
    return (res.data if not res.error else raw), ""


def _named(notes: dict[str, set[str]]) -> list[str]:
    """One warning per message, naming the flows it concerns."""
    out = []
    for msg, fids in sorted(notes.items()):
        ids = sorted(fids)
        more = f" and {len(ids) - MAX_NAMED_FLOWS} more" if len(ids) > MAX_NAMED_FLOWS else ""
        out.append(f"{msg} ({len(ids)} flow(s): {', '.join(ids[:MAX_NAMED_FLOWS])}{more})")
    return out


def scan_sessions(
    sessions: list[Session],
    identifiers: dict[str, str],
    *,
    artifacts_dir: Path | None = None,
    records: dict[str, list[Any]] | None = None,
) -> ScanOutcome:
    scanner = Scanner(identifiers) if identifiers else None
    out = ScanOutcome()
    notes: dict[str, set[str]] = defaultdict(set)
    for sess in sessions:
        recs = (records or {}).get(sess.id)
        https = (r for r in recs if isinstance(r, HttpRecord)) if recs is not None else sess.http()
        for rec in https:
            fid = rec.id
            if scanner is not None:
                res = scanner.scan_record(rec, sess.bodies)
                out.bytes_scanned += res.bytes_scanned
                for w in res.warnings:
                    msg = f"{w.kind.value}: {w.part.value} {w.location.value}: {w.message}"
                    notes[msg[:200]].add(fid)
                sent = [m for m in res.matches if m.part is Part.REQUEST]
                if sent:
                    out.matches[fid] = [
                        Match(
                            m.identifier,
                            m.location.value,
                            m.detail,
                            m.encoding,
                            m.excerpt[:EXCERPT],
                        )
                        for m in sent
                    ]
            req, note = _decoded(sess, rec, response=False)
            if note:
                notes[note].add(fid)
            if req and "x-www-form-urlencoded" in (rec.request_content_type or ""):
                req = unquote_to_bytes(req.replace(b"+", b" "))
            text = unquote_to_bytes(rec.url) + b"\n" + (req or b"")
            found = find_patterns(text)
            if found:
                out.personal[fid] = sorted({(p.kind.value, p.value) for p in found})
            if req:
                apps = find_app_list(req)
                if apps:
                    out.app_lists[fid] = {"count": apps.count, "sample": list(apps.sample)}
                if len(req) >= MIN_CHARACTERISED:
                    out.characters[fid] = characterise(req).to_dict()
            resp, note = _decoded(sess, rec, response=True)
            if note:
                notes[note].add(fid)
            if resp and resp[:1] in (b"{", b"["):
                for n, kl in enumerate(find_keyword_lists(resp)):
                    entry: dict[str, Any] = {
                        "path": kl.path,
                        "count": kl.count,
                        "sample": list(kl.sample),
                        "reasons": list(kl.reasons),
                    }
                    if artifacts_dir is not None:
                        entry["artifact"] = _extract(artifacts_dir, fid, n, rec, kl.entries)
                    out.keyword_lists.setdefault(fid, entry)
    out.warnings = _named(notes)
    return out


def _extract(folder: Path, flow_id: str, n: int, rec: HttpRecord, entries: tuple[str, ...]) -> str:
    private_dir(folder)
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in flow_id)[:64]
    name = f"keyword-list-{safe}-{n}.json"
    data = json.dumps(
        {"flow_id": flow_id, "url": rec.url, "count": len(entries), "entries": list(entries)},
        ensure_ascii=False,
        indent=1,
    )
    fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(data)
    return f"{folder.name}/{name}"
