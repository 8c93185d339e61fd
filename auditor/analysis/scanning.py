"""What is sent, flow by flow: the payload scanner run over every saved HTTP flow.

For each request: the device identifiers it carries and in what encodings
(:mod:`auditor.analysis.payload`), personal values found without knowing them (each with
where it was found and its context: a field named for it, the device profile's own value;
:class:`auditor.analysis.rules.Shape`), an installed-app list, and the character of its body
(plain, compressed, or encrypted), judged on its decoded view
(:func:`auditor.analysis.payload.decoded_view`: multipart parts, gzip parts, base64 values
and protobuf strings undone first, so only what no known layer explains is opaque). For each
response: keyword or configuration lists (the ``MiAdBlacklistConfig`` pattern), extracted as
artifacts next to the report.

Request bodies to the Google endpoints :mod:`auditor.analysis.gproto` knows are read by their
message definitions; with a ``--decrypt`` rules file (:mod:`auditor.analysis.decrypt`), a body
a rule matches is decrypted first, and what was read or decrypted is listed per flow
(``decoded``, ``decrypted``), the view judged on the plaintext (so it is no longer "encrypted").

Bodies are decoded within bounds (:func:`auditor.decoders.decode`): a body that decodes past a
bound is searched in its first part only, and the warnings of the outcome name its flows, so
a report says which bodies were capped (a decompression bomb among them).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from auditor.analysis.decrypt import Rules as DecryptRules
from auditor.analysis.patterns import (
    PayloadClass,
    characterise,
    field_name_before,
    find_app_list,
    find_keyword_lists,
    find_patterns,
    named_shapes,
    shape_context,
)
from auditor.analysis.payload import (
    DecodedView,
    Decryption,
    LeafKind,
    Part,
    ScanLimits,
    Scanner,
    decoded_view,
    query_view,
)
from auditor.analysis.rules import Match, Shape
from auditor.decoders import decode
from auditor.fsutil import private_dir, write_private
from auditor.records import BodyRef, HttpRecord
from auditor.session.reader import Session

log = logging.getLogger(__name__)

# Decoded bytes of one body that the shape, app-list and keyword-list searches read. These are
# regex and JSON passes (~150 ns a byte), so a few kilobytes of gzip must not buy seconds of
# them; the identifier search (payload.ScanLimits.decode_limit) reads further.
DECODE_LIMIT = 4 * 1024 * 1024
MAX_NAMED_FLOWS = 10  # flows named per warning
MIN_CHARACTERISED = 64  # bytes: shorter bodies say nothing about entropy
EXCERPT = 160
# A body is judged encrypted when, with every layer undone, opaque (high-entropy,
# incompressible) pieces of at least MIN_OPAQUE_PART bytes make up at least MIN_OPAQUE bytes
# and OPAQUE_SHARE of what the body holds: a signature or a nonce in a readable body is not.
MIN_OPAQUE_PART = 64
MIN_OPAQUE = 256
OPAQUE_SHARE = 0.5
VIEW_LIMITS = ScanLimits(
    decode_limit=DECODE_LIMIT, decode_budget=4 * DECODE_LIMIT, max_depth=8, max_nodes=50_000
)


@dataclass
class ScanOutcome:
    matches: dict[str, list[Match]] = field(default_factory=dict)
    personal: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    characters: dict[str, dict[str, Any]] = field(default_factory=dict)
    keyword_lists: dict[str, dict[str, Any]] = field(default_factory=dict)
    app_lists: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    bytes_scanned: int = 0
    decoded: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # by schema
    decrypted: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # by a rule


def _body(session: Session, ref: BodyRef | None) -> bytes | None:
    """A body as stored (as on the wire), read once for every pass over it."""
    if ref is None:
        return None
    try:
        return session.bodies.get(ref.sha256)
    except OSError:
        return None


def _decoded(raw: bytes | None, ref: BodyRef | None, response: bool) -> tuple[bytes | None, str]:
    """The body with its content encoding undone (at most :data:`DECODE_LIMIT` bytes), and a
    warning when it decodes past that."""
    if raw is None or ref is None:
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


def _request_view(
    raw: bytes | None, rec: HttpRecord, plain: Decryption | None = None
) -> DecodedView:
    """The request body's decoded view: of its plaintext when a decrypt rule decrypted it
    (the scanner's decryption, not done again), else of the body as sent."""
    if raw is None or rec.request_body is None:
        return DecodedView()
    if plain is not None:
        return decoded_view(
            plain.plaintext, content_type=plain.content_type, limits=VIEW_LIMITS, url=rec.url
        )
    return decoded_view(
        raw,
        content_type=rec.request_content_type,
        content_encoding=rec.request_body.encoding,
        limits=VIEW_LIMITS,
        url=rec.url,
    )


def character_of(body: bytes, view: DecodedView) -> dict[str, Any]:
    """The character of a request body judged on its decoded view: ``encrypted_or_random``
    only when opaque pieces remain after every known layer was undone (a multipart upload of
    a gzip part is not), with those pieces named (``opaque``: path, encoding, size, entropy)."""
    outer = characterise(body).to_dict()
    opaque: list[dict[str, Any]] = []
    compressed = 0
    for leaf in view.leaves:
        if leaf.kind is LeafKind.COMPRESSED:
            compressed += len(leaf.data)
            continue
        if leaf.kind is not LeafKind.BINARY or len(leaf.data) < MIN_OPAQUE_PART:
            continue
        ch = characterise(leaf.data)
        if ch.klass is PayloadClass.ENCRYPTED_OR_RANDOM:
            opaque.append(
                {
                    "path": leaf.path,
                    "encoding": leaf.encoding,
                    "size": len(leaf.data),
                    "entropy": ch.entropy,
                }
            )
        elif ch.klass is PayloadClass.COMPRESSED:
            compressed += len(leaf.data)
    total = view.size or len(body)
    opaque_bytes = sum(int(o["size"]) for o in opaque)
    if opaque_bytes >= MIN_OPAQUE and opaque_bytes >= OPAQUE_SHARE * total:
        klass = PayloadClass.ENCRYPTED_OR_RANDOM
    elif compressed >= OPAQUE_SHARE * total:
        klass = PayloadClass.COMPRESSED
    else:
        klass = PayloadClass.PLAINTEXT
    opaque.sort(key=lambda o: (-int(o["size"]), str(o["path"])))
    return {
        **outer,
        "class": klass.value,
        "outer_class": outer["class"],
        "entropy": opaque[0]["entropy"] if opaque else outer["entropy"],
        "decoded_bytes": total,
        "opaque_bytes": opaque_bytes,
        "opaque": opaque[:10],
    }


def _shapes(url: str, body: DecodedView, device: dict[str, str]) -> list[tuple[str, str]]:
    """Personal-data shapes in the URL's query and path and in the request body's decoded
    leaves (text, and the readable runs of binary ones), each with where it was found and
    its context (:func:`shape_context`)."""
    pieces: list[tuple[str, str, str, str, bytes]] = [
        ("url", "path", "", "", unquote_to_bytes(urlsplit_path(url)))
    ]
    for location, view in (("url", query_view(url, limits=VIEW_LIMITS)), ("body", body)):
        pieces += [
            (location, lf.path, lf.name, lf.encoding, lf.data[:DECODE_LIMIT])
            for lf in view.leaves
            if lf.kind is not LeafKind.COMPRESSED
        ]
    seen: dict[tuple[str, str, str, str], Shape] = {}
    for location, detail, name, encoding, data in pieces:
        for pm in (*find_patterns(data), *named_shapes(name, data)):
            key = (pm.kind.value, pm.value, location, detail)
            if key in seen:
                continue
            context = shape_context(pm, name or field_name_before(data, pm.offset), device)
            lo = max(0, pm.offset - 24)
            excerpt = data[lo : pm.offset + len(pm.value) + 24].decode("utf-8", "replace")
            seen[key] = Shape(
                pm.kind.value, pm.value, location, detail, encoding, context, excerpt[:EXCERPT]
            )
    return [seen[k] for k in sorted(seen)]


def urlsplit_path(url: str) -> bytes:
    try:
        return urlsplit(url).path.encode("utf-8", "surrogatepass")
    except ValueError:
        return b""


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
    decrypt: DecryptRules | None = None,
) -> ScanOutcome:
    """The scan of every HTTP flow of the sessions (see the module's text); ``decrypt``: the
    rules of a ``--decrypt`` file."""
    # without identifiers, a scanner still reads what the decrypt rules name (and counts
    # what will not decrypt), and what the Google definitions read
    scanner = Scanner(identifiers, decrypt=decrypt) if identifiers or decrypt else None
    out = ScanOutcome()
    notes: dict[str, set[str]] = defaultdict(set)
    for sess in sessions:
        recs = (records or {}).get(sess.id)
        https = (r for r in recs if isinstance(r, HttpRecord)) if recs is not None else sess.http()
        for rec in https:
            fid = rec.id
            plain = None
            if scanner is not None:
                res = scanner.scan_record(rec, sess.bodies)
                plain = next((d for d in res.decrypted if d.part is Part.REQUEST), None)
                out.bytes_scanned += res.bytes_scanned
                if res.decoded:
                    out.decoded[fid] = [d.to_dict() for d in res.decoded]
                if res.decrypted:
                    out.decrypted[fid] = [d.to_dict() for d in res.decrypted]
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
            raw = _body(sess, rec.request_body)
            req, note = _decoded(raw, rec.request_body, response=False)
            if note:
                notes[note].add(fid)
            view = _request_view(raw, rec, plain)
            for text in view.warnings:
                notes[f"decoded view: request body: {text}"[:200]].add(fid)
            shapes = _shapes(rec.url, view, identifiers)
            if shapes:
                out.personal[fid] = shapes
            if req:
                texts = b"\n".join(leaf.data for leaf in view.leaves if leaf.kind is LeafKind.TEXT)[
                    :DECODE_LIMIT
                ]
                apps = find_app_list(texts or req)
                if apps:
                    out.app_lists[fid] = {"count": apps.count, "sample": list(apps.sample)}
                if len(req) >= MIN_CHARACTERISED:
                    out.characters[fid] = character_of(req, view)
            resp, note = _decoded(_body(sess, rec.response_body), rec.response_body, response=True)
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
    write_private(folder / name, data)
    return f"{folder.name}/{name}"
