"""Where known identifiers are in a flow: URL, headers, cookies and bodies, through every layer.

Long because: the scanner and its decoders are one recursion (every layer hands what it
decodes back to the others) under one shared budget of bytes, depth and nodes; split, that
budget would be passed across modules.

A :class:`Scanner` is built once from ``{name: value}`` and reused for every payload. For each
payload it makes one pass of all needles (see :mod:`auditor.analysis.identifiers`); only when
that pass finds something, or a sign of something hidden (a compressed stream, backslash or
percent escapes that hide a needle), does it parse the payload to say *where*: the JSON path,
form field, multipart part or protobuf field, through content encodings (bounded by
:func:`auditor.decoders.decode`), base64 and hex blobs, JSON inside strings, and so on. Most
payloads carry no identifier, so most payloads cost one pass.

Every match records its location kind (``url``, ``header``, ``cookie``, ``body``), the place
within it (``detail``: ``query:imei``, ``x-device``, ``$.deviceInfo.imei``, ``pb:1.3``; nested
places are joined with ``|``) and the encoding chain from the outside in, e.g.
``gzip > json > base64 > plain``. Hostile input does not crash the scan: every decoder, parser
and walk is bounded by :class:`ScanLimits`, and a bound that was hit becomes a :class:`ScanWarning`.

The request bodies of the Google endpoints :mod:`auditor.analysis.gproto` knows (Clearcut log
batches, the Firebase Analytics upload, the check-in) are read by their message definitions:
their places are field names (``log_event[0].source_extension|pb:3``, ``checkin.build.model``),
each reading is listed in :attr:`ScanResult.decoded`, and a body its definition does not read
is walked without a schema, with a ``schema-decode`` warning.

With a ``--decrypt`` rules file (:mod:`auditor.analysis.decrypt`, ``Scanner(..., decrypt=)``),
a body a rule matches is decrypted and its plaintext scanned too: its places start with the
rule's name (``decrypted:<rule>|$.imei``), each decryption is listed in
:attr:`ScanResult.decrypted`, and a body that will not decrypt is a ``decrypt-error`` warning.
"""

from __future__ import annotations

import binascii
import bisect
import json
import json.scanner
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import accumulate
from json.decoder import scanstring as _scanstring  # type: ignore[attr-defined]
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes, urlsplit

from auditor import decoders
from auditor.analysis import decrypt as decryption
from auditor.analysis import gproto
from auditor.analysis.identifiers import (
    MIN_NEEDLE_LENGTH,
    Encoding,
    Found,
    Hit,
    Matcher,
    NeedleSet,
    Variant,
    build_needles,
)

if TYPE_CHECKING:
    from auditor.records import HttpRecord
    from auditor.session.bodies import BodyStore

log = logging.getLogger(__name__)

# Markers compiled into the same automaton as the needles: streams to decode where they start.
MARKERS: tuple[bytes, ...] = (
    b"\x1f\x8b\x08",  # gzip member
    b"\x28\xb5\x2f\xfd",  # zstd frame
    b"H4sI",  # base64 of a gzip header
    b"KLUv",  # base64 of a zstd magic
)
_MARKER_CODECS = {0: "gzip", 1: "zstd"}
_B64_MARKERS = frozenset({2, 3})
_INNER = frozenset({Encoding.BASE64_INNER, Encoding.BASE64URL_INNER})
_CODEC_ENCODINGS = {
    "gzip": Encoding.GZIP,
    "x-gzip": Encoding.GZIP,
    "deflate": Encoding.DEFLATE,
    "br": Encoding.BR,
    "zstd": Encoding.ZSTD,
}


class Location(StrEnum):
    URL = "url"
    HEADER = "header"
    COOKIE = "cookie"
    BODY = "body"


class Part(StrEnum):
    REQUEST = "request"
    RESPONSE = "response"


class WarningKind(StrEnum):
    DECODE_LIMIT = "decode-limit"  # a compressed body expands past ScanLimits.decode_limit
    DECODE_BUDGET = "decode-budget"  # all decoding of one flow past ScanLimits.decode_budget
    DECODE_ERROR = "decode-error"  # truncated or invalid compressed data, unknown encoding
    DEPTH_LIMIT = "depth-limit"  # layers nested deeper than ScanLimits.max_depth
    NODE_LIMIT = "node-limit"  # JSON nodes / protobuf fields / form fields past the budget
    HIT_LIMIT = "hit-limit"  # more raw matches in one buffer than ScanLimits.max_hits
    BLOB_LIMIT = "blob-limit"  # more base64/hex blobs in one buffer than ScanLimits.max_blobs
    BODY_TRUNCATED = "body-truncated"  # the capture kept only the first part of the body
    BODY_MISSING = "body-missing"  # the session has no stored bytes for the body
    SCHEMA_DECODE = "schema-decode"  # a body its endpoint's message definition does not read
    DECRYPT_ERROR = "decrypt-error"  # a --decrypt rule matched but the body would not decrypt


@dataclass(frozen=True, slots=True)
class ScanLimits:
    decode_limit: int = 64 * 1024 * 1024  # bytes out of one decompression
    decode_budget: int = 256 * 1024 * 1024  # bytes out of all decompressions of one scan
    max_depth: int = 8  # nested layers (gzip > json > base64 > protobuf > ...)
    protobuf_depth: int = 32  # nested protobuf messages
    json_depth: int = 256  # JSON containers followed down to a match
    max_nodes: int = 200_000  # JSON nodes + protobuf fields + form fields per scan
    max_blobs: int = 512  # base64/hex blobs decoded per buffer
    min_blob: int = 16  # shortest run of base64/hex characters worth decoding
    max_hits: int = 10_000  # raw matches kept per buffer


@dataclass(frozen=True, slots=True)
class Body:
    """A body as captured: wire bytes, their Content-Encoding and Content-Type."""

    data: bytes
    content_encoding: str | None = None
    content_type: str | None = None
    part: Part = Part.REQUEST
    detail: str = ""  # where the body came from, when not the wire ("decrypted:<rule>")


@dataclass(frozen=True, slots=True)
class IdentifierMatch:
    """One identifier, found in one place, through one chain of encodings.

    ``offset`` is the position in the innermost decoded buffer; ``excerpt`` is that buffer's
    bytes around the match (raw captured text: escape it when shown).
    """

    identifier: str
    part: Part
    location: Location
    detail: str
    chain: tuple[Encoding, ...]
    variant: Variant = Variant.AS_IS
    offset: int = 0
    excerpt: str = field(default="", compare=False)

    @property
    def encoding(self) -> str:
        """The chain as text, e.g. ``gzip > json > md5-hex``."""
        return " > ".join(self.chain)

    def sort_key(self) -> tuple[Any, ...]:
        return (self.part, self.location, self.detail, self.offset, self.identifier, self.chain)

    def to_dict(self) -> dict[str, Any]:
        return {
            "identifier": self.identifier,
            "part": self.part.value,
            "location": self.location.value,
            "detail": self.detail,
            "encoding": self.encoding,
            "variant": self.variant.value,
            "offset": self.offset,
            "excerpt": self.excerpt,
        }


@dataclass(frozen=True, slots=True)
class ScanWarning:
    kind: WarningKind
    part: Part
    location: Location
    detail: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind.value,
            "part": self.part.value,
            "location": self.location.value,
            "detail": self.detail,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class SchemaReading:
    """A body read by a published message definition (:mod:`auditor.analysis.gproto`)."""

    part: Part
    endpoint: str  # "clearcut", "checkin", "firebase-analytics"
    message: str  # full name in schemas.desc
    fields: int
    unknown_fields: int  # fields the definition does not name (shown as pb:N)
    log_sources: tuple[str, ...]  # Clearcut log source names, in order
    citation: str
    sample: tuple[dict[str, Any], ...] = field(default=(), compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "part": self.part.value,
            "endpoint": self.endpoint,
            "message": self.message,
            "fields": self.fields,
            "unknown_fields": self.unknown_fields,
            "log_sources": list(self.log_sources),
            "citation": self.citation,
            "sample": list(self.sample),
        }


@dataclass(frozen=True, slots=True)
class Decryption:
    """A body decrypted by a ``--decrypt`` rule before it was scanned."""

    part: Part
    rule: str
    cipher: str
    citation: str
    plaintext_bytes: int
    # the plaintext itself, for callers that read it further (never written to a report)
    plaintext: bytes = field(default=b"", repr=False, compare=False)
    content_type: str = field(default="", compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "part": self.part.value,
            "rule": self.rule,
            "cipher": self.cipher,
            "citation": self.citation,
            "plaintext_bytes": self.plaintext_bytes,
        }


@dataclass(frozen=True, slots=True)
class ScanResult:
    matches: tuple[IdentifierMatch, ...] = ()
    warnings: tuple[ScanWarning, ...] = ()
    bytes_scanned: int = 0  # all buffers searched, decoded layers included
    decoded: tuple[SchemaReading, ...] = ()  # bodies read by their message definitions
    decrypted: tuple[Decryption, ...] = ()  # bodies decrypted by a --decrypt rule

    @property
    def identifiers(self) -> frozenset[str]:
        return frozenset(m.identifier for m in self.matches)

    def count(self, kind: WarningKind) -> int:
        return sum(1 for w in self.warnings if w.kind is kind)

    def to_dict(self) -> dict[str, Any]:
        return {
            "matches": [m.to_dict() for m in self.matches],
            "warnings": [w.to_dict() for w in self.warnings],
            "bytes_scanned": self.bytes_scanned,
            "decoded": [d.to_dict() for d in self.decoded],
            "decrypted": [d.to_dict() for d in self.decrypted],
        }


class Scanner:
    """Built once from the identifiers, reused for every payload of every session.

    Not thread-safe (the matcher's scratch space is shared): use one per thread or process.
    """

    def __init__(
        self,
        identifiers: Mapping[str, str],
        *,
        limits: ScanLimits | None = None,
        min_length: int = MIN_NEEDLE_LENGTH,
        backend: str = "auto",
        decrypt: decryption.Rules | None = None,
    ) -> None:
        self.limits = limits or ScanLimits()
        self.decrypt = decrypt
        self.needles: NeedleSet = build_needles(identifiers, min_length=min_length)
        self.matcher = Matcher(
            self.needles, markers=MARKERS, backend=backend, max_hits=self.limits.max_hits
        )
        self.warning_counts: Counter[WarningKind] = Counter()
        self.payloads = 0

    def scan_payload(
        self,
        data: bytes,
        *,
        content_type: str | None = None,
        content_encoding: str | None = None,
        part: Part = Part.REQUEST,
        location: Location = Location.BODY,
        detail: str = "",
        url: str | None = None,
    ) -> ScanResult:
        """Identifiers in one payload (a body as on the wire, or any buffer). With ``url``, a
        request body sent there is read by its message definition when gproto knows one."""
        walk = _Walk(self)
        walk.part, walk.location = part, location
        if part is Part.REQUEST and location is Location.BODY and not detail:
            walk.endpoint = gproto.endpoint_for(url)
        walk.body(data, content_encoding, content_type, detail)
        return self._done(walk)

    def scan_flow(
        self,
        url: str | None = None,
        headers: Iterable[Sequence[str]] = (),
        bodies: Iterable[Body] = (),
        *,
        response_headers: Iterable[Sequence[str]] = (),
        method: str | None = None,
    ) -> ScanResult:
        """Identifiers in one flow: its URL, request (and response) headers and its bodies.

        ``headers`` are ``[name, value]`` pairs as in :class:`auditor.records.HttpRecord`.
        With ``decrypt`` rules, a body a rule matches is scanned decrypted as well.
        """
        headers, response_headers = list(headers), list(response_headers)
        if self.decrypt is not None and url:
            bodies = self._decrypted(url, method, headers, response_headers, bodies)
        walk = _Walk(self)
        if url:
            walk.part = Part.REQUEST
            walk.url(url)
        for part, pairs in ((Part.REQUEST, headers), (Part.RESPONSE, response_headers)):
            walk.part = part
            for name, value in pairs:
                walk.header(name, value)
        endpoint = gproto.endpoint_for(url)
        for b in bodies:
            walk.part, walk.location = b.part, Location.BODY
            if isinstance(b, _Undecrypted):
                walk.warn(WarningKind.DECRYPT_ERROR, b.detail, b.error)
                continue
            if isinstance(b, _Plaintext) and b.note is not None:
                walk.decrypted.append(b.note)
            walk.endpoint = endpoint if b.part is Part.REQUEST and not b.detail else None
            walk.body(b.data, b.content_encoding, b.content_type, b.detail)
        return self._done(walk)

    def _decrypted(
        self,
        url: str,
        method: str | None,
        headers: list[Sequence[str]],
        response_headers: list[Sequence[str]],
        bodies: Iterable[Body],
    ) -> list[Body]:
        """The bodies, each followed by its plaintext when a rule decrypts it (or by a marker
        of the failure, which the walk turns into a warning)."""
        assert self.decrypt is not None
        out: list[Body] = []
        for b in bodies:
            out.append(b)
            res = decryption.apply(
                self.decrypt,
                b.data,
                url=url,
                method=method,
                headers=headers if b.part is Part.REQUEST else response_headers,
                content_encoding=b.content_encoding,
                part=b.part.value,
            )
            if res is None:
                continue
            detail = f"decrypted:{res.rule.name}"
            if res.plaintext is None:
                error = f"rule {res.rule.name}: {res.error}; the body was scanned as captured"
                out.append(_Undecrypted(b"", part=b.part, detail=detail, error=error))
                continue
            note = Decryption(
                b.part,
                res.rule.name,
                res.rule.cipher.value,
                res.rule.citation,
                len(res.plaintext),
                res.plaintext,
                res.content_type,
            )
            out.append(_Plaintext(res.plaintext, None, res.content_type, b.part, detail, note=note))
        return out

    def scan_record(self, record: HttpRecord, store: BodyStore) -> ScanResult:
        """A saved flow of a session (``Session(path).http()``, ``Session.bodies``)."""
        bodies: list[Body] = []
        extra: list[ScanWarning] = []
        for part, ref, ctype in (
            (Part.REQUEST, record.request_body, record.request_content_type),
            (Part.RESPONSE, record.response_body, record.response_content_type),
        ):
            if ref is None:
                continue
            try:
                raw = store.get(ref.sha256)
            except OSError as exc:
                extra.append(
                    ScanWarning(WarningKind.BODY_MISSING, part, Location.BODY, "", str(exc))
                )
                continue
            if ref.truncated:
                extra.append(
                    ScanWarning(
                        WarningKind.BODY_TRUNCATED,
                        part,
                        Location.BODY,
                        "",
                        f"only the first {ref.size} of {ref.wire_size} bytes were captured",
                    )
                )
            bodies.append(Body(raw, ref.encoding, ctype, part))
        res = self.scan_flow(
            record.url,
            record.request_headers,
            bodies,
            response_headers=record.response_headers,
            method=record.method,
        )
        if not extra:
            return res
        self.warning_counts.update(w.kind for w in extra)
        return ScanResult(
            res.matches, tuple(extra) + res.warnings, res.bytes_scanned, res.decoded, res.decrypted
        )

    def _done(self, walk: _Walk) -> ScanResult:
        self.payloads += 1
        self.warning_counts.update(w.kind for w in walk.warnings)
        return ScanResult(
            tuple(sorted(walk.order, key=IdentifierMatch.sort_key)),
            tuple(walk.warnings),
            walk.scanned,
            tuple(walk.readings),
            tuple(walk.decrypted),
        )


@dataclass(frozen=True, slots=True)
class _Plaintext(Body):
    note: Decryption | None = None


@dataclass(frozen=True, slots=True)
class _Undecrypted(Body):
    error: str = ""


def scan_payload(scanner: Scanner, data: bytes, **kwargs: Any) -> ScanResult:
    """:meth:`Scanner.scan_payload` as a function."""
    return scanner.scan_payload(data, **kwargs)


def scan_flow(
    scanner: Scanner,
    url: str | None = None,
    headers: Iterable[Sequence[str]] = (),
    bodies: Iterable[Body] = (),
    *,
    response_headers: Iterable[Sequence[str]] = (),
) -> ScanResult:
    """:meth:`Scanner.scan_flow` as a function."""
    return scanner.scan_flow(url, headers, bodies, response_headers=response_headers)


# ------------------------------------------------------------------------------- the walk


class _Kind(StrEnum):
    JSON = "json"
    FORM = "form"
    MULTIPART = "multipart"
    PROTOBUF = "protobuf"
    OTHER = "other"


class BudgetExhausted(Exception):
    """The node budget of a walk (or of :func:`parse_protobuf`) ran out."""


_JSON_START = re.compile(rb'\s*[\[{"]')
_FORM = re.compile(rb"[\w.%*~-]+=[^&\s]*(?:&[\w.%*~-]*=?[^&\s]*)*")
_BOUNDARY_LINE = re.compile(rb"--([^\r\n]{1,200})\r?\n")
_BOUNDARY_PARAM = re.compile(r"""boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))""", re.I)
_PADDED_BASE64 = re.compile(rb"[A-Za-z0-9+/_-]+={1,2}")
_RUN = re.compile(rb"[A-Za-z0-9+/_-]*={0,2}")
_RUN_CHARS = re.compile(rb"[A-Za-z0-9+/_-]*")
_HEXCHARS = re.compile(rb"[0-9A-Fa-f]+")
_ESCAPE = re.compile(rb"\\(?:u([0-9a-fA-F]{4})|(.))", re.S)
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DISPOSITION = re.compile(r"""\b(name|filename)\s*=\s*(?:"([^"]*)"|([^;\s]*))""", re.I)
_ESCAPE_CHAR = re.compile(rb"[\\%]")
_WS = str.maketrans("", "", "\t\n\r")
_SIMPLE_ESCAPES = {b"n": b"\n", b"t": b"\t", b"r": b"\r", b"b": b"\b", b"f": b"\f"}
_FORM_SNIFF_MAX = 1024 * 1024
SCHEMA_SAMPLE = 40  # decoded fields of a schema reading kept in ScanResult.decoded


def _sub(outer: str, inner: str) -> str:
    return f"{outer}|{inner}" if outer else inner


def _mime(ctype: str | None) -> str:
    return (ctype or "").split(";", 1)[0].strip().lower()


def _sniff(data: bytes, ctype: str | None) -> tuple[_Kind, bytes | None]:
    mime = _mime(ctype)
    if mime:
        if "json" in mime:
            return _Kind.JSON, None
        if mime == "application/x-www-form-urlencoded":
            return _Kind.FORM, None
        if mime.startswith("multipart/"):
            param = _BOUNDARY_PARAM.search(ctype or "")
            if param:
                value = param.group(1) or param.group(2)
                return _Kind.MULTIPART, value.encode("latin-1", "replace")
        if "protobuf" in mime or mime.endswith("proto") or mime.startswith("application/grpc"):
            return _Kind.PROTOBUF, None
    if _JSON_START.match(data):
        return _Kind.JSON, None
    if data.startswith(b"--"):
        line = _BOUNDARY_LINE.match(data)
        if line and b"content-disposition" in data[:4096].lower():
            return _Kind.MULTIPART, line.group(1).strip()
    if (
        len(data) <= _FORM_SNIFF_MAX
        and b"=" in data
        and _FORM.fullmatch(data.strip())
        and not _PADDED_BASE64.fullmatch(data.strip())
    ):
        return _Kind.FORM, None
    return _Kind.OTHER, None


def _magic_codec(data: bytes) -> str | None:
    if data.startswith(b"\x1f\x8b\x08"):
        return "gzip"
    if data.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if len(data) > 2 and data[0] == 0x78 and ((data[0] << 8) | data[1]) % 31 == 0:
        return "deflate"
    return None


def _looks_text(data: bytes) -> bool:
    try:
        s = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return s.isprintable() or s.translate(_WS).isprintable()


def _unescape(data: bytes) -> bytes:
    """Backslash escapes of JSON and JavaScript (``\\u003d``, ``\\/``) undone, leniently."""

    def repl(m: re.Match[bytes]) -> bytes:
        if m.group(1) is not None:
            return chr(int(m.group(1), 16)).encode("utf-8", "surrogatepass")
        ch = m.group(2)
        return _SIMPLE_ESCAPES.get(ch, ch)

    return _ESCAPE.sub(repl, data)


def _unquote_plus(data: bytes) -> bytes:
    return unquote_to_bytes(data.replace(b"+", b" ")) if b"+" in data or b"%" in data else data


def _fields(data: bytes) -> Iterator[tuple[bytes, bytes, bytes]]:
    """``(name, raw value, decoded value)`` of a form body or query string."""
    for piece in data.split(b"&"):
        if not piece:
            continue
        key, _, val = piece.partition(b"=")
        yield _unquote_plus(key), val, _unquote_plus(val)


def _cookies(value: str) -> Iterator[tuple[str, str]]:
    for piece in value.split(";"):
        name, sep, val = piece.partition("=")
        if sep:
            yield name.strip(), val.strip().strip('"')


def _runs_around(data: bytes, found: Found, min_len: int) -> Iterator[tuple[int, int]]:
    """The runs of base64/hex characters that hold a hit or a base64 marker: the only ones
    whose decoding can show something (a needle inside base64 shows as a base64-inner hit,
    hex is byte-aligned, base64 of gzip or zstd starts with a marker)."""
    points = sorted(
        {h.start for h in found.hits} | {off for off, i in found.markers if i in _B64_MARKERS}
    )
    done = 0
    for p in points:
        if p < done:
            continue
        end = _RUN.match(data, p)
        e = end.end() if end else p
        back = _RUN_CHARS.match(data[done:p][::-1])
        s = p - (back.end() if back else 0)
        done = max(e, p + 1)
        if e - s >= min_len:
            yield s, e


def _blob_readings(blob: bytes, *, shifts: bool) -> Iterator[tuple[Encoding, bytes]]:
    """What a run of base64/hex characters may decode to. With ``shifts`` base64 is also read
    from the 2nd, 3rd and 4th character, for a blob glued to other base64-alphabet text."""
    core = blob.rstrip(b"=")
    if len(core) % 2 == 0 and _HEXCHARS.fullmatch(core):
        yield Encoding.HEX, bytes.fromhex(core.decode("ascii"))
    std = b"+" in core or b"/" in core
    url = b"-" in core or b"_" in core
    if std and url:
        return
    if url:
        core = core.replace(b"-", b"+").replace(b"_", b"/")
    for shift in (0, 1, 2, 3) if shifts else (0,):
        part = core[shift:]
        if len(part) % 4 == 1:
            part = part[:-1]
        try:
            raw = binascii.a2b_base64(part + b"=" * (-len(part) % 4), strict_mode=True)
        except binascii.Error:
            continue
        yield (Encoding.BASE64URL if url else Encoding.BASE64), raw


def _json_key(path: str, key: str) -> str:
    if _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def _excerpt(data: bytes, start: int, end: int, context: int = 24) -> str:
    return data[max(0, start - context) : end + context].decode("utf-8", "backslashreplace")


def _transfer_decoded(
    headers: dict[str, str], body: bytes, chain: tuple[Encoding, ...]
) -> tuple[bytes, tuple[Encoding, ...]]:
    """A multipart part's body with its base64 transfer encoding undone (when it has one and
    it decodes), and the chain of encodings that leads to it."""
    if headers.get("content-transfer-encoding", "").lower() == "base64":
        try:
            return binascii.a2b_base64(body), (*chain, Encoding.BASE64)
        except binascii.Error:
            pass
    return body, chain


def _multipart_parts(
    data: bytes, boundary: bytes
) -> Iterator[tuple[str, dict[str, str], bytes, bytes]]:
    """``(name, headers, raw head, body)`` of each part of a multipart body (a part without a
    name is ``part<n>``)."""
    pieces = data.split(b"--" + boundary)
    for i, piece in enumerate(pieces[1:]):
        if piece.startswith(b"--"):
            break
        piece = piece[2:] if piece.startswith(b"\r\n") else piece.lstrip(b"\n")
        head, sep, body = piece.partition(b"\r\n\r\n")
        if not sep:
            head, sep, body = piece.partition(b"\n\n")
            if not sep:
                continue
        if body.endswith(b"\r\n"):
            body = body[:-2]
        elif body.endswith(b"\n"):
            body = body[:-1]
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").splitlines():
            hname, _, hval = line.partition(":")
            headers[hname.strip().lower()] = hval.strip()
        disp = {
            m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
            for m in _DISPOSITION.finditer(headers.get("content-disposition", ""))
        }
        yield disp.get("name") or f"part{i + 1}", headers, head, body


@dataclass(slots=True)
class _Field:
    number: int
    wire: int
    start: int  # the value's bytes (after the tag, and the length of a length-delimited field)
    end: int
    children: list[_Field] | None = None


def _read_varint(data: bytes, pos: int, end: int) -> tuple[int, int] | None:
    value = 0
    shift = 0
    while pos < end and shift < 70:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
    return None


def parse_protobuf(
    data: bytes,
    start: int = 0,
    end: int | None = None,
    *,
    max_depth: int = 32,
    budget: list[int] | None = None,
    descend: Callable[[int, int], bool] | None = None,
    stop_after: int | None = None,
    _depth: int = 0,
) -> list[_Field] | None:
    """The fields of ``data[start:end]`` read as a protobuf message without a schema, or None
    when it is not one. A length-delimited field that is printable text is left a string;
    otherwise it is read as a nested message when it parses as one. ``budget`` (a one-item
    list) caps the number of fields read, nested ones included; running out raises
    :class:`BudgetExhausted`. ``descend(start, end)``, when given, says which length-delimited
    fields are worth reading as nested messages (the others are left as bytes). With
    ``stop_after`` reading ends at the first field that starts past that offset: what follows
    is taken on trust."""
    end = len(data) if end is None else end
    fields: list[_Field] = []
    pos = start
    while pos < end:
        if stop_after is not None and pos > stop_after:
            break
        tag = _read_varint(data, pos, end)
        if tag is None:
            return None
        key, pos = tag
        number, wire = key >> 3, key & 7
        if number == 0:
            return None
        if budget is not None:
            budget[0] -= 1
            if budget[0] < 0:
                raise BudgetExhausted
        if wire == 0:
            v = _read_varint(data, pos, end)
            if v is None:
                return None
            fields.append(_Field(number, 0, pos, v[1]))
            pos = v[1]
        elif wire == 1 or wire == 5:
            size = 8 if wire == 1 else 4
            if pos + size > end:
                return None
            fields.append(_Field(number, wire, pos, pos + size))
            pos += size
        elif wire == 2:
            n = _read_varint(data, pos, end)
            if n is None or n[1] + n[0] > end:
                return None
            vstart, vend = n[1], n[1] + n[0]
            children = None
            if (
                _depth < max_depth
                and vend - vstart >= 2
                and (descend is None or descend(vstart, vend))
                and not _looks_text(data[vstart:vend])
            ):
                children = (
                    parse_protobuf(
                        data,
                        vstart,
                        vend,
                        max_depth=max_depth,
                        budget=budget,
                        descend=descend,
                        stop_after=stop_after,
                        _depth=_depth + 1,
                    )
                    or None
                )
            fields.append(_Field(number, 2, vstart, vend, children))
            pos = vend
        else:
            return None  # groups (3, 4) are long deprecated; 6 and 7 do not exist
    return fields


class _Walk:
    """The state of one scan: what was found, what went wrong, what budget is left."""

    def __init__(self, scanner: Scanner) -> None:
        self.m = scanner.matcher
        self.lim = scanner.limits
        self.min_len = max(1, self.m.min_length)
        self.seen: set[IdentifierMatch] = set()
        self.order: list[IdentifierMatch] = []
        self.warnings: list[ScanWarning] = []
        self._warned: set[tuple[WarningKind, Part, Location, str]] = set()
        self.part = Part.REQUEST
        self.location = Location.BODY
        self.nodes = 0
        self.decoded = 0
        self.last_decode_error = False
        self.scanned = 0
        self.endpoint: gproto.Endpoint | None = None  # the request body's message definition
        self.readings: list[SchemaReading] = []
        self.decrypted: list[Decryption] = []

    # -- bookkeeping

    def warn(self, kind: WarningKind, detail: str, message: str) -> None:
        key = (kind, self.part, self.location, detail)
        if key in self._warned:
            return
        self._warned.add(key)
        self.warnings.append(ScanWarning(kind, self.part, self.location, detail, message))

    def add(self, hit: Hit, chain: tuple[Encoding, ...], detail: str, data: bytes) -> None:
        m = IdentifierMatch(
            hit.needle.identifier,
            self.part,
            self.location,
            detail,
            chain + hit.needle.chain,
            hit.needle.variant,
            hit.start,
            _excerpt(data, hit.start, hit.end),
        )
        if m not in self.seen:
            self.seen.add(m)
            self.order.append(m)

    def since(self, mark: int) -> set[str]:
        return {m.identifier for m in self.order[mark:]}

    def rescue(
        self, found: Found, mark: int, chain: tuple[Encoding, ...], detail: str, data: bytes
    ) -> None:
        """Raw hits of identifiers a structured walk did not find are reported as raw hits,
        so that a parse that went astray never loses a match."""
        ids = self.since(mark)
        for h in found.hits:
            if h.needle.identifier not in ids:
                self.add(h, chain, detail, data)

    def count_node(self) -> None:
        self.nodes += 1
        if self.nodes > self.lim.max_nodes:
            raise BudgetExhausted

    def find(self, data: bytes, detail: str) -> Found:
        found = self.m.find(data)
        if found.truncated:
            self.warn(
                WarningKind.HIT_LIMIT,
                detail,
                f"more than {self.lim.max_hits} matches in one buffer; the rest ignored",
            )
        return found

    def decode(self, data: bytes, codec: str, detail: str, *, sniffed: bool) -> bytes | None:
        remaining = self.lim.decode_budget - self.decoded
        self.last_decode_error = True
        if remaining <= 0:
            self.warn(
                WarningKind.DECODE_BUDGET,
                detail,
                f"decoded {self.decoded} bytes in this scan; {codec} data left undecoded",
            )
            return None
        limit = min(self.lim.decode_limit, remaining)
        dec = decoders.decode(data, codec, limit)
        self.last_decode_error = dec.error is not None
        self.decoded += len(dec.data)
        if dec.exceeded:
            self.warn(
                WarningKind.DECODE_LIMIT,
                detail,
                f"{codec} data expands past {limit} bytes; only the first {limit} were searched",
            )
        elif dec.error and (dec.data or not sniffed):
            self.warn(
                WarningKind.DECODE_ERROR,
                detail,
                f"{codec}: {dec.error}; searched the {len(dec.data)} bytes decoded before it",
            )
        return dec.data or None

    # -- entry points

    def body(self, data: bytes, encoding: str | None, ctype: str | None, detail: str) -> None:
        chain: tuple[Encoding, ...] = ()
        for enc in reversed(decoders.split_encodings(encoding)):
            if enc == "identity":
                continue
            if enc not in _CODEC_ENCODINGS:
                self.warn(
                    WarningKind.DECODE_ERROR,
                    detail,
                    f"unsupported content encoding {enc!r}; searched as is",
                )
                break
            decoded = self.decode(data, enc, detail, sniffed=False)
            if decoded is None:
                break
            data = decoded
            chain += (_CODEC_ENCODINGS[enc],)
        self.view(data, chain, detail, 0, ctype)

    def url(self, url: str) -> None:
        self.location = Location.URL
        try:
            parts = urlsplit(url)
            host = parts.hostname or ""
        except ValueError:
            self.view(url.encode("utf-8", "surrogatepass"), (), "", 0)
            return
        self.view(host.encode("utf-8", "surrogatepass"), (), "host", 0)
        path = parts.path.encode("utf-8", "surrogatepass")
        dpath = unquote_to_bytes(path)
        self.view(dpath, (Encoding.URL,) if dpath != path else (), "path", 0)
        query = parts.query.encode("utf-8", "surrogatepass")
        if not query:
            return
        found = self.find(query, "query")
        mark = len(self.order)
        for key, raw, val in _fields(query):
            name = key.decode("utf-8", "replace")
            self.view(val, (Encoding.URL,) if val != raw else (), f"query:{name}", 0)
            if len(key) >= self.min_len:
                self.view(key, (), f"query:{name} (name)", 0)
        self.rescue(found, mark, (), "query", query)

    def header(self, name: str, value: str) -> None:
        lname = name.lower()
        if lname in ("cookie", "set-cookie"):
            self.location = Location.COOKIE
            pairs = list(_cookies(value))
            for cname, cval in pairs[: 1 if lname == "set-cookie" else None]:
                raw = cval.encode("utf-8", "surrogatepass")
                dec = unquote_to_bytes(raw) if b"%" in raw else raw
                self.view(dec, (Encoding.URL,) if dec != raw else (), cname, 0)
            return
        self.location = Location.HEADER
        self.view(value.encode("utf-8", "surrogatepass"), (), lname, 0)

    # -- one buffer

    def view(
        self,
        data: bytes,
        chain: tuple[Encoding, ...],
        detail: str,
        depth: int,
        ctype: str | None = None,
    ) -> None:
        if len(data) < self.min_len:
            return
        self.scanned += len(data)
        if depth > self.lim.max_depth:
            self.warn(
                WarningKind.DEPTH_LIMIT,
                detail,
                f"more than {self.lim.max_depth} nested layers; the innermost searched as is",
            )
            for h in self.find(data, detail).hits:
                self.add(h, chain, detail, data)
            return
        codec = _magic_codec(data)
        if codec is not None:
            decoded = self.decode(data, codec, detail, sniffed=True)
            clean = not self.last_decode_error
            if decoded is not None:
                self.view(decoded, (*chain, _CODEC_ENCODINGS[codec]), detail, depth + 1)
            if decoded is not None and clean:
                return  # else the magic number may have been a coincidence: read it as is too
        found = self.find(data, detail)
        if self.endpoint is not None and not detail and not _looks_text(data):
            endpoint, self.endpoint = self.endpoint, None  # the body's outermost message only
            if self.walk_schema(endpoint, data, found, chain, depth):
                return
        if not found and not self._hidden(data):
            return
        kind, boundary = _sniff(data, ctype)
        mark = len(self.order)
        try:
            if kind is _Kind.JSON and self.walk_json(data, found, chain, detail, depth):
                self.rescue(found, mark, chain, detail, data)
                return
            if kind is _Kind.FORM and self.walk_form(data, chain, detail, depth):
                self.rescue(found, mark, chain, detail, data)
                return
            if kind is _Kind.MULTIPART and boundary:
                if self.walk_multipart(data, boundary, chain, detail, depth):
                    self.rescue(found, mark, chain, detail, data)
                    return
            hinted = kind is _Kind.PROTOBUF
            if (hinted or (kind is _Kind.OTHER and not _looks_text(data))) and (
                self.walk_protobuf(data, found, chain, detail, depth, trusted=hinted)
            ):
                return
        except BudgetExhausted:
            self.warn(
                WarningKind.NODE_LIMIT,
                detail,
                f"more than {self.lim.max_nodes} fields in this scan; the rest searched as is",
            )
        self.walk_text(data, found, chain, detail, depth)

    def _hidden(self, data: bytes) -> bool:
        return any(self.m.any(alt) for _, alt in self._alternatives(data))

    @staticmethod
    def _alternatives(data: bytes) -> Iterator[tuple[Encoding, bytes]]:
        """Readings of text in which a needle may hide: escapes undone, percent-decoded."""
        backslash, percent = b"\\" in data, b"%" in data
        if not (backslash or percent) or not _looks_text(data):
            return
        if backslash:
            alt = _unescape(data)
            if alt != data:
                yield Encoding.UNESCAPE, alt
        if percent:
            alt = unquote_to_bytes(data)
            if alt != data:
                yield Encoding.URL, alt

    def walk_schema(
        self,
        endpoint: gproto.Endpoint,
        data: bytes,
        found: Found,
        chain: tuple[Encoding, ...],
        depth: int,
    ) -> bool:
        """A request body read by its endpoint's message definition: every leaf named by its
        path of field names (fields the definition lacks by number, ``pb:N``), and those that
        hold a needle viewed further (a bytes field as a schema-less protobuf, and so on).
        64-bit integers are also read as hex, the spelling of an Android ID."""
        try:
            got = gproto.decode(data, endpoint.messages, max_fields=self.lim.max_nodes - self.nodes)
        except gproto.SchemaError as exc:
            self.warn(
                WarningKind.SCHEMA_DECODE,
                "",
                f"{endpoint.name}: {exc}; read without its definition",
            )
            return False
        self.nodes += len(got.fields)
        self.readings.append(
            SchemaReading(
                self.part,
                endpoint.name,
                got.message,
                len(got.fields),
                got.unknown,
                tuple(got.values("log_source_name")),
                endpoint.citation,
                tuple(f.to_dict() for f in got.fields[:SCHEMA_SAMPLE]),
            )
        )
        if not found and not self._hidden(data):
            return True
        leaves: list[tuple[str, bytes]] = []
        for f in got.fields:
            leaves.append((f.path, f.value))
            if f.integer is not None and abs(f.integer) > 0xFFFFFFFF:
                leaves.append((f"{f.path} (hex)", b"%x" % (f.integer & 0xFFFFFFFFFFFFFFFF)))
        pchain = (*chain, Encoding.PROTOBUF)
        mark = len(self.order)
        self.view_leaves(leaves, pchain, "", depth + 1)
        self.rescue(found, mark, pchain, "pb", data)
        return True

    def walk_text(
        self, data: bytes, found: Found, chain: tuple[Encoding, ...], detail: str, depth: int
    ) -> None:
        mark = len(self.order)
        spans: list[tuple[int, int, set[str]]] = []
        blobs = 0
        for s, e in _runs_around(data, found, self.lim.min_blob):
            if any(h.start <= s and h.end >= e - 2 for h in found.hits):
                continue  # the run is a needle itself: nothing more to learn inside
            if blobs >= self.lim.max_blobs:
                self.warn(
                    WarningKind.BLOB_LIMIT,
                    detail,
                    f"more than {self.lim.max_blobs} base64/hex runs; the rest not decoded",
                )
                break
            blobs += 1
            inner = any(
                s <= h.start and h.end <= e and h.needle.chain[0] in _INNER for h in found.hits
            )
            ids: set[str] = set()
            decoded = False
            for enc, raw in _blob_readings(data[s:e], shifts=inner):
                decoded = True
                before = len(self.order)
                self.view(raw, (*chain, enc), detail, depth + 1)
                ids = self.since(before)
                if ids:
                    break
            if decoded:
                spans.append((s, e, ids))
        for off, idx in found.markers:
            codec = _MARKER_CODECS.get(idx)
            if codec is None or off == 0:
                continue
            dec = self.decode(data[off:], codec, detail, sniffed=True)
            if dec is not None:
                self.view(
                    dec, (*chain, _CODEC_ENCODINGS[codec]), _sub(detail, f"@{off}"), depth + 1
                )
        for h in found.hits:
            # Inside a decoded blob its decoded view is the truth: a base64-inner hit there that
            # the view did not confirm matched a few bits of a neighbouring value, nothing more.
            ident, inner = h.needle.identifier, h.needle.chain[0] in _INNER
            if any(s <= h.start and h.end <= e and (inner or ident in ids) for s, e, ids in spans):
                continue
            self.add(h, chain, detail, data)
        seen = self.since(mark)
        for enc, alt in self._alternatives(data):
            for h in self.m.find(alt).hits:
                if h.needle.identifier not in seen:
                    self.add(h, (*chain, enc), detail, alt)
            seen = self.since(mark)

    def walk_json(
        self, data: bytes, found: Found, chain: tuple[Encoding, ...], detail: str, depth: int
    ) -> bool:
        jchain = (*chain, Encoding.JSON)
        if found and not self._hidden(data):
            budget = self.lim.max_nodes - self.nodes
            located = _locate_json(data, found, self.lim.json_depth, budget)
            if located is not None:
                leaves, visited = located
                self.nodes += visited
                for path, raw in leaves:
                    if len(raw) >= self.min_len:
                        self.view(raw, jchain, _sub(detail, path), depth + 1)
                return True
        return self.walk_json_fully(data, jchain, detail, depth)

    def walk_json_fully(
        self, data: bytes, jchain: tuple[Encoding, ...], detail: str, depth: int
    ) -> bool:
        """Every leaf of the document, for needles that escapes hid from the raw pass."""
        try:
            docs = _json_documents(data)
        except RecursionError:
            self.warn(WarningKind.DEPTH_LIMIT, detail, "JSON nested too deeply to parse")
            return False
        if docs is None:
            return False
        min_int = 10 ** (self.min_len - 1)
        leaves: list[tuple[str, bytes]] = []
        for root, doc in docs:
            stack: list[tuple[Any, str]] = [(doc, root)]
            while stack:
                node, path = stack.pop()
                self.count_node()
                if isinstance(node, dict):
                    for k, v in node.items():
                        kp = _json_key(path, k)
                        if len(k) >= self.min_len:
                            leaves.append((f"{kp} (key)", k.encode("utf-8", "surrogatepass")))
                        stack.append((v, kp))
                elif isinstance(node, list):
                    stack.extend((v, f"{path}[{i}]") for i, v in enumerate(node))
                elif isinstance(node, str):
                    if len(node) >= self.min_len:
                        leaves.append((path, node.encode("utf-8", "surrogatepass")))
                elif isinstance(node, int) and not isinstance(node, bool) and abs(node) >= min_int:
                    leaves.append((path, str(node).encode("ascii")))
        self.view_leaves(leaves, jchain, detail, depth + 1)
        return True

    def view_leaves(
        self, leaves: list[tuple[str, bytes]], chain: tuple[Encoding, ...], detail: str, depth: int
    ) -> None:
        """View the leaves of a parsed structure that one pass over all of them, joined, says
        hold a needle, a marker, or an escape to undo; the others cannot hold anything."""
        if not leaves:
            return
        joined = b"\n".join(raw for _, raw in leaves)
        starts = list(accumulate((len(raw) + 1 for _, raw in leaves[:-1]), initial=0))
        found = self.m.find(joined)
        points = [h.start for h in found.hits] + [off for off, _ in found.markers]
        points += [m.start() for m in _ESCAPE_CHAR.finditer(joined)]
        for i in sorted({bisect.bisect_right(starts, p) - 1 for p in points}):
            path, raw = leaves[i]
            self.view(raw, chain, _sub(detail, path), depth)

    def walk_form(self, data: bytes, chain: tuple[Encoding, ...], detail: str, depth: int) -> bool:
        fchain = (*chain, Encoding.FORM)
        for key, raw, val in _fields(data.strip()):
            self.count_node()
            name = key.decode("utf-8", "replace")
            vchain = (*fchain, Encoding.URL) if val != raw else fchain
            self.view(val, vchain, _sub(detail, name), depth + 1)
            if len(key) >= self.min_len:
                self.view(key, fchain, _sub(detail, f"{name} (name)"), depth + 1)
        return True

    def walk_multipart(
        self, data: bytes, boundary: bytes, chain: tuple[Encoding, ...], detail: str, depth: int
    ) -> bool:
        mchain = (*chain, Encoding.MULTIPART)
        parsed = 0
        for name, headers, head, body in _multipart_parts(data, boundary):
            self.count_node()
            body, pchain = _transfer_decoded(headers, body, mchain)
            parsed += 1
            self.view(body, pchain, _sub(detail, name), depth + 1, headers.get("content-type"))
            self.view(head, mchain, _sub(detail, f"{name} (headers)"), depth + 1)
        return parsed > 0

    def walk_protobuf(
        self,
        data: bytes,
        found: Found,
        chain: tuple[Encoding, ...],
        detail: str,
        depth: int,
        *,
        trusted: bool = False,
    ) -> bool:
        """Fields that hold a hit, by path (``pb:1.3``). When the content type says protobuf
        (``trusted``), the message is read only as far as the last hit."""
        points = sorted([h.start for h in found.hits] + [off for off, _ in found.markers])

        def interesting(start: int, end: int) -> bool:
            i = bisect.bisect_left(points, start)
            return i < len(points) and points[i] < end

        budget = [self.lim.max_nodes - self.nodes]
        fields = parse_protobuf(
            data,
            max_depth=self.lim.protobuf_depth,
            budget=budget,
            descend=interesting,
            stop_after=points[-1] if trusted and points else None,
        )
        self.nodes = self.lim.max_nodes - budget[0]
        if not fields:
            return False
        pchain = (*chain, Encoding.PROTOBUF)
        # leaves (strings, bytes, scalars) in offset order, with what each string leaf held
        leaves: list[tuple[int, int, str, set[str] | None]] = []
        stack: list[tuple[_Field, str]] = [(f, f"pb:{f.number}") for f in reversed(fields)]
        while stack:
            f, path = stack.pop()
            if f.children:
                stack.extend((c, f"{path}.{c.number}") for c in reversed(f.children))
            elif f.wire == 2:
                if not interesting(f.start, f.end):
                    continue
                before = len(self.order)
                self.view(data[f.start : f.end], pchain, _sub(detail, path), depth + 1)
                leaves.append((f.start, f.end, path, self.since(before)))
            else:
                leaves.append((f.start, f.end, path, None))
        leaves.sort(key=lambda leaf: leaf[0])
        starts = [leaf[0] for leaf in leaves]
        for h in found.hits:
            i = bisect.bisect_right(starts, h.start) - 1
            where = "pb"
            if i >= 0 and leaves[i][0] <= h.start and h.end <= leaves[i][1]:
                _, _, where, ids = leaves[i]
                if ids is not None and h.needle.identifier in ids:
                    continue  # the string leaf's own walk reported it
            self.add(h, pchain, _sub(detail, where), data)
        return True


# ------------------------------------------------------------------------------- JSON locator

# the C scanner of the json module: one value from an index, parsed in C
_JSON_SCAN: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(
    json.JSONDecoder()  # type: ignore[arg-type]
)
_JSON_WS = re.compile(r"[ \t\n\r]*")
_WS_CHARS = frozenset(" \t\n\r")


class _TooDeep(Exception):
    pass


def _char_points(data: bytes, points: list[int]) -> list[int] | None:
    """Byte offsets (at character boundaries) as offsets into ``data.decode()``."""
    if data.isascii():
        return points
    out: list[int] = []
    prev = chars = 0
    try:
        for p in points:
            chars += len(data[prev:p].decode("utf-8"))
            prev = p
            out.append(chars)
    except UnicodeDecodeError:
        return None
    return out


class _JsonLocator:
    """Follows a JSON text down to the leaves that hold given offsets, and no further.

    Values that hold none are skipped by the C scanner; only containers on the way to a
    match are read member by member in Python, so a match in a 1 MB document costs about
    two C parses of it rather than a Python walk of every node.
    """

    def __init__(self, text: str, points: list[int], max_depth: int, budget: int) -> None:
        self.s = text
        self.points = points
        self.max_depth = max_depth
        self.budget = budget  # members visited before BudgetExhausted
        self.leaves: list[tuple[str, str]] = []

    def holds(self, start: int, end: int) -> bool:
        i = bisect.bisect_left(self.points, start)
        return i < len(self.points) and self.points[i] < end

    def ws(self, i: int) -> int:
        if self.s[i : i + 1] not in _WS_CHARS:
            return i
        m = _JSON_WS.match(self.s, i)
        return m.end() if m else i

    def value(self, i: int, path: str, depth: int, stop: int | None = None) -> int:
        """Read the value at ``i``; ``stop``, its end when already known, lets a container
        be left as soon as no offset is left in it."""
        if depth > self.max_depth:
            raise _TooDeep
        ch = self.s[i : i + 1]
        if ch == "{":
            return self.obj(i, path, depth, stop)
        if ch == "[":
            return self.arr(i, path, depth, stop)
        return self.member(i, path, depth)

    def member(self, i: int, path: str, depth: int) -> int:
        self.budget -= 1
        if self.budget < 0:
            raise BudgetExhausted
        obj, end = _JSON_SCAN(self.s, i)
        if not self.holds(i, end):
            return int(end)
        if isinstance(obj, dict | list):
            self.value(i, path, depth + 1, int(end))
        elif isinstance(obj, str):
            self.leaves.append((path, obj))
        else:
            self.leaves.append((path, self.s[i:end]))
        return int(end)

    def obj(self, i: int, path: str, depth: int, stop: int | None) -> int:
        s = self.s
        i = self.ws(i + 1)
        if s[i : i + 1] == "}":
            return i + 1
        while True:
            if stop is not None and not self.holds(i, stop):
                return stop
            if s[i : i + 1] != '"':
                raise ValueError("expected a key")
            key, kend = _scanstring(s, i + 1)
            kpath = _json_key(path, key)
            if self.holds(i, kend):
                self.leaves.append((f"{kpath} (key)", key))
            i = self.ws(kend)
            if s[i : i + 1] != ":":
                raise ValueError("expected ':'")
            i = self.ws(self.member(self.ws(i + 1), kpath, depth))
            c = s[i : i + 1]
            if c == "}":
                return i + 1
            if c != ",":
                raise ValueError("expected ',' or '}'")
            i = self.ws(i + 1)

    def arr(self, i: int, path: str, depth: int, stop: int | None) -> int:
        s = self.s
        i = self.ws(i + 1)
        if s[i : i + 1] == "]":
            return i + 1
        n = 0
        while True:
            if stop is not None and not self.holds(i, stop):
                return stop
            i = self.ws(self.member(i, f"{path}[{n}]", depth))
            c = s[i : i + 1]
            if c == "]":
                return i + 1
            if c != ",":
                raise ValueError("expected ',' or ']'")
            i = self.ws(i + 1)
            n += 1


def _locate_json(
    data: bytes, found: Found, max_depth: int, budget: int
) -> tuple[list[tuple[str, bytes]], int] | None:
    """``(JSON path, leaf bytes)`` of the leaves that hold a hit or a marker of ``found``, for
    one document or several concatenated (NDJSON: paths become ``lineN:$...``), and the
    members visited; None when ``data`` is not JSON text. Raises BudgetExhausted past
    ``budget`` members."""
    points = sorted({h.start for h in found.hits} | {off for off, _ in found.markers})
    chars = _char_points(data, points)
    if chars is None:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    docs: list[tuple[int, list[tuple[str, str]]]] = []
    loc = _JsonLocator(text, chars, max_depth, budget)
    try:
        i = loc.ws(0)
        while i < len(text):
            loc.leaves = []
            start = i
            i = loc.ws(loc.value(i, "$", 0))
            docs.append((start, loc.leaves))
    except (ValueError, StopIteration, RecursionError, _TooDeep):
        return None
    out: list[tuple[str, bytes]] = []
    for start, leaves in docs:
        prefix = f"line{text.count(chr(10), 0, start) + 1}:" if len(docs) > 1 else ""
        out += [(prefix + p, v.encode("utf-8", "surrogatepass")) for p, v in leaves]
    return out, budget - loc.budget


def _json_documents(data: bytes) -> list[tuple[str, Any]] | None:
    """The JSON document of ``data`` as ``[("$", doc)]``, else its newline-delimited
    documents (:func:`_ndjson`), else None. Raises RecursionError when nested too deeply."""
    try:
        return [("$", json.loads(data))]
    except ValueError:
        return _ndjson(data)


def _ndjson(data: bytes) -> list[tuple[str, Any]] | None:
    if b"\n" not in data:
        return None
    docs: list[tuple[str, Any]] = []
    for i, line in enumerate(data.split(b"\n")):
        if not line.strip():
            continue
        try:
            docs.append((f"line{i + 1}:$", json.loads(line)))
        except (ValueError, RecursionError):
            return None
    return docs if len(docs) > 1 else None


# ------------------------------------------------------------------------------- decoded view
#
# The identifier search above decodes only where a needle or a marker points. The judgements
# that need the whole content (is it encrypted? which field holds this IMEI-shaped number?)
# read the decoded view: every layer the search knows undone everywhere, with the same
# helpers (content and magic-number codecs, JSON and NDJSON, forms, multipart parts, base64,
# protobuf), within the same kind of bounds.


class LeafKind(StrEnum):
    TEXT = "text"  # printable text: a JSON string or number, a form, query or text value
    BINARY = "binary"  # bytes no known layer explains (ciphertext, images, unknown formats)
    COMPRESSED = "compressed"  # a compressed stream that did not decode (kept as is)


@dataclass(frozen=True, slots=True)
class Leaf:
    """One innermost piece of a payload after every layer was undone."""

    path: str  # as IdentifierMatch.detail: "$.a.b", "file|pb:1.2", "query:imei"
    name: str  # the innermost field name that names it ("" when none)
    chain: tuple[Encoding, ...]
    data: bytes
    kind: LeafKind

    @property
    def encoding(self) -> str:
        return " > ".join(self.chain)


@dataclass
class DecodedView:
    leaves: list[Leaf] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    decoded: int = 0  # bytes produced by decompression

    @property
    def size(self) -> int:
        return sum(len(leaf.data) for leaf in self.leaves)


_B64_TEXT = re.compile(rb"[A-Za-z0-9+/]+={0,2}|[A-Za-z0-9_-]+={0,2}")
_HEX_TEXT = re.compile(rb"(?:[0-9a-fA-F]{2})+")
MIN_ENCODED_VALUE = 64  # characters: shorter base64/hex text (hashes, ids, nonces) stays text
_WALKED_KINDS = frozenset(
    {gproto.FieldKind.STRING, gproto.FieldKind.BYTES, gproto.FieldKind.UNKNOWN_BYTES}
)


class _Decoder:
    def __init__(self, limits: ScanLimits, endpoint: gproto.Endpoint | None = None) -> None:
        self.lim = limits
        self.view = DecodedView()
        self.nodes = 0
        self.exhausted = False
        self.endpoint = endpoint  # the body's message definition, for its outermost message

    def warn(self, message: str) -> None:
        if message not in self.view.warnings:
            self.view.warnings.append(message)

    def leaf(self, path: str, name: str, chain: tuple[Encoding, ...], data: bytes) -> None:
        kind = LeafKind.TEXT if _looks_text(data) else LeafKind.BINARY
        self.view.leaves.append(Leaf(path, name, chain, data, kind))

    def count(self) -> bool:
        self.nodes += 1
        if self.nodes > self.lim.max_nodes:
            if not self.exhausted:
                self.warn(f"more than {self.lim.max_nodes} fields; the rest kept as they are")
            self.exhausted = True
        return not self.exhausted

    def decode(self, data: bytes, codec: str) -> bytes | None:
        remaining = self.lim.decode_budget - self.view.decoded
        if remaining <= 0:
            self.warn(f"decoded {self.view.decoded} bytes; {codec} data left undecoded")
            return None
        limit = min(self.lim.decode_limit, remaining)
        dec = decoders.decode(data, codec, limit)
        self.view.decoded += len(dec.data)
        if dec.exceeded:
            self.warn(f"{codec} data expands past {limit} bytes; only the first {limit} read")
        elif dec.error:
            return None
        return dec.data

    def walk(
        self,
        data: bytes,
        chain: tuple[Encoding, ...],
        path: str,
        name: str,
        depth: int,
        ctype: str | None = None,
    ) -> None:
        if not data:
            return
        if depth > self.lim.max_depth or not self.count():
            if depth > self.lim.max_depth:
                self.warn(f"more than {self.lim.max_depth} nested layers; the innermost kept")
            self.leaf(path, name, chain, data)
            return
        codec = _magic_codec(data)
        if codec is not None:
            dec = self.decode(data, codec)
            if dec:
                self.walk(dec, (*chain, _CODEC_ENCODINGS[codec]), path, name, depth + 1)
                return
            if codec != "deflate":  # two bytes of zlib header are often a coincidence
                self.view.leaves.append(Leaf(path, name, chain, data, LeafKind.COMPRESSED))
                return
        if self.endpoint is not None and not path and not _looks_text(data):
            endpoint, self.endpoint = self.endpoint, None
            if self.walk_schema(endpoint, data, chain, depth):
                return
        kind, boundary = _sniff(data, ctype)
        if kind is _Kind.JSON and self.walk_json(data, chain, path, name, depth):
            return
        if kind is _Kind.FORM:
            fchain = (*chain, Encoding.FORM)
            for key, raw, val in _fields(data.strip()):
                k = key.decode("utf-8", "replace")
                vchain = (*fchain, Encoding.URL) if val != raw else fchain
                self.walk(val, vchain, _sub(path, k), k, depth + 1)
            return
        if kind is _Kind.MULTIPART and boundary:
            parts = list(_multipart_parts(data, boundary))
            if parts:
                mchain = (*chain, Encoding.MULTIPART)
                for pname, headers, _head, body in parts:
                    body, pchain = _transfer_decoded(headers, body, mchain)
                    ptype = headers.get("content-type")
                    self.walk(body, pchain, _sub(path, pname), pname, depth + 1, ptype)
                return
        if _looks_text(data):
            if not self.walk_encoded_text(data, chain, path, name, depth):
                self.leaf(path, name, chain, data)
            return
        if not self.walk_protobuf(data, chain, path, depth, trusted=kind is _Kind.PROTOBUF):
            self.leaf(path, name, chain, data)

    def walk_schema(
        self, endpoint: gproto.Endpoint, data: bytes, chain: tuple[Encoding, ...], depth: int
    ) -> bool:
        try:
            got = gproto.decode(data, endpoint.messages, max_fields=self.lim.max_nodes - self.nodes)
        except gproto.SchemaError as exc:
            self.warn(f"{endpoint.name}: {exc}; read without its definition")
            return False
        self.nodes += len(got.fields)
        pchain = (*chain, Encoding.PROTOBUF)
        for f in got.fields:
            if f.kind in _WALKED_KINDS:
                self.walk(f.value, pchain, f.path, f.name, depth + 1)
            else:
                self.view.leaves.append(Leaf(f.path, f.name, pchain, f.value, LeafKind.TEXT))
        return True

    def walk_encoded_text(
        self, data: bytes, chain: tuple[Encoding, ...], path: str, name: str, depth: int
    ) -> bool:
        """A long value that is wholly base64 or hex: read as what it encodes."""
        text = data.strip()
        if len(text) < MIN_ENCODED_VALUE:
            return False
        if _HEX_TEXT.fullmatch(text):
            self.walk(bytes.fromhex(text.decode("ascii")), (*chain, Encoding.HEX), path, name,
                      depth + 1)  # fmt: skip
            return True
        if not _B64_TEXT.fullmatch(text):
            return False
        url = b"-" in text or b"_" in text
        core = text.rstrip(b"=")
        if url:
            core = core.replace(b"-", b"+").replace(b"_", b"/")
        if len(core) % 4 == 1:
            return False
        try:
            raw = binascii.a2b_base64(core + b"=" * (-len(core) % 4), strict_mode=True)
        except binascii.Error:
            return False
        if _looks_text(raw) and not _JSON_START.match(raw):
            return False  # base64 of text is rare in values; words that happen to decode are not
        enc = Encoding.BASE64URL if url else Encoding.BASE64
        self.walk(raw, (*chain, enc), path, name, depth + 1)
        return True

    def walk_json(
        self, data: bytes, chain: tuple[Encoding, ...], path: str, name: str, depth: int
    ) -> bool:
        try:
            docs = _json_documents(data)
        except RecursionError:
            self.warn("JSON nested too deeply to parse")
            return False
        if docs is None:
            return False
        jchain = (*chain, Encoding.JSON)
        for root, doc in docs:
            stack: list[tuple[Any, str, str]] = [(doc, root, name)]
            while stack:
                node, jpath, key = stack.pop()
                if not self.count():
                    return True
                if isinstance(node, dict):
                    stack.extend(
                        (v, _json_key(jpath, str(k)), str(k)) for k, v in reversed(node.items())
                    )
                elif isinstance(node, list):
                    stack.extend(
                        (v, f"{jpath}[{i}]", key) for i, v in reversed(list(enumerate(node)))
                    )
                elif isinstance(node, str):
                    raw = node.encode("utf-8", "surrogatepass")
                    self.walk(raw, jchain, _sub(path, jpath), key, depth + 1)
                elif isinstance(node, int | float) and not isinstance(node, bool):
                    self.view.leaves.append(
                        Leaf(_sub(path, jpath), key, jchain, str(node).encode(), LeafKind.TEXT)
                    )
        return True

    def walk_protobuf(
        self, data: bytes, chain: tuple[Encoding, ...], path: str, depth: int, *, trusted: bool
    ) -> bool:
        budget = [max(0, self.lim.max_nodes - self.nodes)]
        try:
            fields = parse_protobuf(data, max_depth=self.lim.protobuf_depth, budget=budget)
        except BudgetExhausted:
            self.warn("protobuf message past the field budget; kept as it is")
            return False
        self.nodes = self.lim.max_nodes - budget[0]
        if not fields or (
            not trusted and len(data) > 16 and len(fields) == 1 and fields[0].wire != 2
        ):
            return False
        pchain = (*chain, Encoding.PROTOBUF)
        stack: list[tuple[_Field, str]] = [(f, f"pb:{f.number}") for f in reversed(fields)]
        while stack:
            f, fpath = stack.pop()
            if f.children:
                stack.extend((c, f"{fpath}.{c.number}") for c in reversed(f.children))
            elif f.wire == 2:
                self.walk(data[f.start : f.end], pchain, _sub(path, fpath), fpath, depth + 1)
        return True


def decoded_view(
    data: bytes,
    *,
    content_type: str | None = None,
    content_encoding: str | None = None,
    limits: ScanLimits | None = None,
    path: str = "",
    url: str | None = None,
) -> DecodedView:
    """Every innermost piece of a payload (a body as on the wire), each with where it was and
    the layers undone to reach it. A layer that would not decode leaves its bytes as they are
    (``compressed`` when a magic number said so). With ``url``, a request body sent to an
    endpoint :mod:`auditor.analysis.gproto` knows is read by its message definition."""
    dec = _Decoder(limits or ScanLimits(), None if path else gproto.endpoint_for(url))
    chain: tuple[Encoding, ...] = ()
    for enc in reversed(decoders.split_encodings(content_encoding)):
        if enc == "identity":
            continue
        if enc not in _CODEC_ENCODINGS:
            dec.warn(f"unsupported content encoding {enc!r}; read as is")
            break
        out = dec.decode(data, enc)
        if out is None:
            dec.warn(f"{enc}: could not be decoded; read as is")
            break
        data, chain = out, (*chain, _CODEC_ENCODINGS[enc])
    dec.walk(data, chain, path, "", 0, content_type)
    return dec.view


def query_view(url: str, *, limits: ScanLimits | None = None) -> DecodedView:
    """The decoded view of a URL's query: each parameter's value, named by the parameter."""
    dec = _Decoder(limits or ScanLimits())
    try:
        query = urlsplit(url).query.encode("utf-8", "surrogatepass")
    except ValueError:
        return dec.view
    for key, raw, val in _fields(query):
        name = key.decode("utf-8", "replace")
        dec.walk(val, (Encoding.URL,) if val != raw else (), f"query:{name}", name, 0)
    return dec.view
