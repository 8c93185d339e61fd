"""HAR 1.2 files to auditor records: exports of HTTP Toolkit, Chrome, Firefox, Charles, mitmproxy.

A parser only. :func:`load_har` takes the bytes of a file and checks its top level (an error
there is an :class:`~auditor.imports.ImportFileError` naming the file); :func:`har_records`
turns each entry into an :class:`~auditor.records.HttpRecord` (and the WebSocket messages some
tools add) and puts the bodies in the session's body store. An entry that cannot become a
record is skipped and counted in the :class:`~auditor.imports.ImportReport`, with its index
and the field at fault; the others are still imported.

A HAR is not a wire capture: browsers and most tools store bodies already decoded (gzip
removed) and as text. When a body's Content-Encoding header says it was encoded but the HAR
holds it decoded, the stored bytes are the decoded ones, the body's ``encoding`` is null and
its ``decode_error`` says that the wire bytes are not kept. ``docs/imports.md`` lists what
else a HAR loses.
"""

from __future__ import annotations

import binascii
import codecs
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from ipaddress import ip_address
from typing import Any
from urllib.parse import quote_plus, urlsplit

from auditor import jsonio
from auditor.decoders import decode, supported
from auditor.imports import ImportFileError, ImportReport, SkipKind
from auditor.records import (
    BodyRef,
    Header,
    HttpRecord,
    Record,
    TlsFailedRecord,
    WebSocketMessageRecord,
)
from auditor.session.bodies import BodyStore
from auditor.timeutil import iso

log = logging.getLogger(__name__)

#: json needs several times a file's size in memory; larger HARs are refused.
MAX_HAR_BYTES = 2 * 1024**3
#: A compressed HAR (mitmproxy's ``.zhar``, a gzipped HAR) is refused when it decompresses to
#: more: a small file that would fill the memory is a decompression bomb.
MAX_DECOMPRESSED_HAR = 512 * 1024**2
#: Longest URL, header or other text field kept; an entry with a longer one is skipped.
MAX_TEXT = 8 * 1024 * 1024
#: How much of a body is decoded to tell whether the HAR kept it encoded.
_PROBE_LIMIT = 64 * 1024

DECODED_NOTE = "HAR body already decoded from Content-Encoding {!r}; the wire bytes are not kept"
REBUILT_NOTE = "HAR body rebuilt from postData.params; not the bytes that were sent"

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_HTTP_SCHEME = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
_VERSIONS = {
    "http/1.0": "HTTP/1.0",
    "http/1.1": "HTTP/1.1",
    "http/2": "HTTP/2.0",
    "http/2.0": "HTTP/2.0",
    "h2": "HTTP/2.0",
    "h2c": "HTTP/2.0",
    "http/3": "HTTP/3",
    "http/3.0": "HTTP/3",
    "h3": "HTTP/3",
}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}")
_CHARSET = re.compile(r";\s*charset\s*=\s*\"?([A-Za-z0-9._:\-]+)", re.IGNORECASE)
_SURROGATE = re.compile("[\ud800-\udfff]")
_LONG_FRACTION = re.compile(r"(\.\d{6})\d+")
# Epoch seconds that auditor.timeutil.iso can write: 1970 up to the end of year 9999.
_MAX_TS = 253402300799.0


class _Bad(Exception):
    """An entry (or a part of it) that cannot become a record; the message names the field."""


@dataclass(frozen=True, slots=True)
class HarLog:
    """A HAR file whose top level is sound; its entries are checked one by one later."""

    name: str
    version: str | None
    creator: dict[str, str]
    entries: list[Any]
    tls_errors: list[Any] = field(default_factory=list)


def load_har(data: bytes, name: str) -> HarLog:
    """Parse ``data`` as HAR. Raises ImportFileError naming ``name`` when it is not one."""
    if len(data) > MAX_HAR_BYTES:
        raise ImportFileError(
            f"{name}: {len(data)} bytes is too large to load as HAR (limit {MAX_HAR_BYTES})"
        )
    try:
        doc = jsonio.loads(data, "HAR")  # nesting bounded before parsing
    except jsonio.JsonError as exc:  # "HAR: not JSON (...)" / "HAR: ... nested ..."
        why = _short(str(exc).removeprefix("HAR: "))
        raise ImportFileError(f"{name}: not a HAR file: {why}") from None
    if not isinstance(doc, dict):
        raise ImportFileError(f"{name}: not a HAR file: the top level is {_jtype(doc)}")
    har_log = doc.get("log")
    if not isinstance(har_log, dict):
        raise ImportFileError(f'{name}: not a HAR file: no "log" object at the top level')
    entries = har_log.get("entries")
    if not isinstance(entries, list):
        what = "missing" if entries is None else _jtype(entries)
        raise ImportFileError(f"{name}: not a HAR file: log.entries is {what}, not a list")
    version = har_log.get("version")
    creator = har_log.get("creator")
    tls_errors = har_log.get("_tlsErrors")  # HTTP Toolkit's failed TLS handshakes
    return HarLog(
        name=name,
        version=_clean(version)[:32] if isinstance(version, str) else None,
        creator={
            k: _clean(v)[:200]
            for k, v in (creator.items() if isinstance(creator, dict) else ())
            if k in ("name", "version") and isinstance(v, str)
        },
        entries=entries,
        tls_errors=tls_errors if isinstance(tls_errors, list) else [],
    )


def har_records(
    har: HarLog, store: BodyStore, report: ImportReport, id_prefix: str
) -> Iterator[Record]:
    """The records of every sound entry, in file order; ids are ``<id_prefix>-<index>``."""
    report.meta["creator"] = har.creator
    if har.version is not None:
        report.meta["har_version"] = har.version
        if not har.version.startswith("1."):
            report.warn(f"HAR version {har.version!r} is not 1.x; read as 1.2")
    report.count("entries", len(har.entries))
    connections: dict[str, list[str]] = {}
    only_ports = True  # Firefox (and its forks) write the server's port as "connection"
    for i, raw in enumerate(har.entries):
        rec_id = f"{id_prefix}-{i}"
        scratch = ImportReport(report.format)  # notes count only for entries imported
        try:
            entry = _entry(raw, scratch)
        except _Bad as exc:
            report.skip(f"entry {i}", str(exc), SkipKind.HAR_ENTRY)
            continue
        except Exception as exc:  # one odd entry must not lose the others
            log.exception("%s: entry %d", har.name, i)
            report.skip(
                f"entry {i}",
                f"internal error: {type(exc).__name__}: {_short(str(exc))}",
                SkipKind.HAR_ENTRY,
            )
            continue
        for key, n in scratch.notes.items():
            report.note(key, n)
        yield _http_record(entry, rec_id, store, report)
        report.count("http")
        for n, raw_msg in enumerate(entry.ws_messages, 1):
            try:
                ts, from_client, is_text, data = _ws_message(raw_msg)
            except _Bad as exc:
                report.skip(
                    f"entry {i} _webSocketMessages[{n - 1}]", str(exc), SkipKind.WEBSOCKET_MESSAGE
                )
                continue
            yield WebSocketMessageRecord(
                id=f"{rec_id}:{n}",
                flow_id=rec_id,
                ts=ts,
                from_client=from_client,
                is_text=is_text,
                host=entry.host,
                url=entry.url,
                body=store.put(data) if data else None,
            )
            report.count("websocket_message")
        if entry.connection:
            connections.setdefault(entry.connection, []).append(rec_id)
            only_ports = only_ports and entry.connection == str(entry.port)
    for j, raw in enumerate(har.tls_errors):
        try:
            rec = _tls_error(raw, f"{id_prefix}-tls-{j}", report)
        except _Bad as exc:
            report.skip(f"log._tlsErrors[{j}]", str(exc), SkipKind.TLS_ERROR)
            continue
        yield rec
        report.count("tls_failed")
    if connections and not only_ports:
        report.details["connections"] = connections


# ------------------------------------------------------------------------------------ entries


@dataclass(slots=True)
class _Body:
    data: bytes
    wire_size: int | None = None  # the HAR's bodySize, when it gives one
    rebuilt: bool = False


@dataclass(slots=True)
class _Entry:
    method: str
    url: str
    scheme: str
    host: str
    port: int
    path: str
    http_version: str
    times: tuple[str | None, str | None, str | None, str | None]
    server_ip: str | None
    request_headers: tuple[Header, ...]
    request_content_type: str | None
    request_body: _Body | None
    status: int | None
    reason: str | None
    response_headers: tuple[Header, ...]
    response_content_type: str | None
    response_body: _Body | None
    error: str | None
    connection: str | None
    ws_messages: list[Any]


def _entry(raw: Any, report: ImportReport) -> _Entry:
    """Check one entry and take what a record needs. Raises _Bad naming the field."""
    if not isinstance(raw, dict):
        raise _Bad(f"is {_jtype(raw)}, not an object")
    started = _time(_need(raw, "startedDateTime", str, ""), "startedDateTime", report)
    req = _need(raw, "request", dict, "")
    method = _need(req, "method", str, "request.")
    if not _TOKEN.fullmatch(method):
        raise _Bad(f"request.method {_short(method)!r} is not an HTTP method")
    url = _text(_need(req, "url", str, "request."), "request.url")
    scheme, host, port, path = _split_url(url)
    http_version = _http_version(_opt(req, "httpVersion", str, "request.") or "")
    request_headers = _headers(req.get("headers"), "request.headers")

    resp = _opt(raw, "response", dict, "")
    status: int | None = None
    reason: str | None = None
    response_headers: tuple[Header, ...] = ()
    response_body: _Body | None = None
    response_ct: str | None = None
    error: str | None = None
    if resp is not None:
        status = _status(resp.get("status"))
        response_headers = _headers(resp.get("headers"), "response.headers")
        error_text = _opt(resp, "_error", str, "response.")  # Chrome, mitmproxy
        error = _text(error_text, "response._error") if error_text else None
        if status:
            reason = _text(_opt(resp, "statusText", str, "response.") or "", "response.statusText")
            content = _opt(resp, "content", dict, "response.") or {}
            response_body = _content_body(content, resp, report)
            response_ct = _header(response_headers, "content-type") or _mime(content)
        else:  # status 0: no response (blocked, failed, aborted)
            status = None
            error = error or "no response (HAR status 0)"
    else:
        error = "no response in the HAR entry"
    request_body = _request_body(req, report)
    request_ct = _header(request_headers, "content-type")
    if request_ct is None and request_body is not None:
        request_ct = _mime(_opt(req, "postData", dict, "request.") or {})

    timings = _opt(raw, "timings", dict, "")
    total = _opt_number(raw, "time", "")
    times = _times(started, timings, total, has_response=status is not None)

    return _Entry(
        method=method,
        url=url,
        scheme=scheme,
        host=host,
        port=port,
        path=path,
        http_version=http_version,
        times=times,
        server_ip=_server_ip(raw.get("serverIPAddress"), report),
        request_headers=request_headers,
        request_content_type=request_ct,
        request_body=request_body,
        status=status,
        reason=reason,
        response_headers=response_headers,
        response_content_type=response_ct,
        response_body=response_body,
        error=error,
        connection=_connection(raw.get("connection")),
        ws_messages=_opt(raw, "_webSocketMessages", list, "") or [],
    )


def _http_record(e: _Entry, rec_id: str, store: BodyStore, report: ImportReport) -> HttpRecord:
    return HttpRecord(
        id=rec_id,
        method=e.method,
        scheme=e.scheme,
        host=e.host,
        port=e.port,
        path=e.path,
        url=e.url,
        http_version=e.http_version,
        request_start=e.times[0],
        request_end=e.times[1],
        response_start=e.times[2],
        response_end=e.times[3],
        server_ip=e.server_ip,
        server_port=e.port if e.server_ip else None,
        request_headers=e.request_headers,
        request_content_type=e.request_content_type,
        request_body=_store(e.request_body, e.request_headers, store, report),
        status=e.status,
        reason=e.reason,
        response_headers=e.response_headers,
        response_content_type=e.response_content_type,
        response_body=_store(e.response_body, e.response_headers, store, report),
        error=e.error,
    )


def _store(
    body: _Body | None, headers: tuple[Header, ...], store: BodyStore, report: ImportReport
) -> BodyRef | None:
    """Put a body in the store, and say so when the HAR had already decoded it."""
    if body is None or not body.data:
        return None
    if body.rebuilt:
        report.note("bodies_rebuilt_from_params")
        return replace(store.put(body.data), decode_error=REBUILT_NOTE)
    enc = _header(headers, "content-encoding")
    if not enc or enc.strip().lower() in ("", "identity") or not supported(enc):
        return store.put(body.data, enc)
    probe = decode(body.data, enc, _PROBE_LIMIT, keep=False)
    if probe.exceeded or probe.error is None:
        return store.put(body.data, enc)  # still encoded: these are the wire bytes
    report.note("bodies_decoded_by_exporter")
    ref = store.put(body.data)
    if not ref.truncated and body.wire_size:
        ref = replace(ref, wire_size=body.wire_size)
    return replace(ref, decode_error=DECODED_NOTE.format(enc))


# ------------------------------------------------------------------------------------- bodies


def _content_body(
    content: dict[str, Any], resp: dict[str, Any], report: ImportReport
) -> _Body | None:
    text = _opt(content, "text", str, "response.content.")
    wire = _opt_number(resp, "bodySize", "response.")
    if text is None or text == "":
        size = _opt_number(content, "size", "response.content.")
        if size and size > 0:
            report.note("response_bodies_not_in_har")
        return None
    encoding = _opt(content, "encoding", str, "response.content.")
    data = _bytes(text, encoding, content, "response.content", report)
    return _Body(data, int(wire) if wire and wire > 0 else None)


def _request_body(req: dict[str, Any], report: ImportReport) -> _Body | None:
    post = _opt(req, "postData", dict, "request.")
    wire = _opt_number(req, "bodySize", "request.")
    wire_size = int(wire) if wire and wire > 0 else None
    status = req.get("_requestBodyStatus")  # HTTP Toolkit
    extra = _opt(req, "_content", dict, "request.")  # HTTP Toolkit: bodies that are not text
    if extra is not None and isinstance(extra.get("text"), str) and extra["text"]:
        data = _bytes(extra["text"], extra.get("encoding"), extra, "request._content", report)
        return _Body(data, wire_size)
    if post is not None:
        text = _opt(post, "text", str, "request.postData.")
        if text:
            encoding = _opt(post, "encoding", str, "request.postData.")
            data = _bytes(text, encoding, post, "request.postData", report)
            return _Body(data, wire_size)
        params = _opt(post, "params", list, "request.postData.")
        if params:
            return _Body(_rebuild(params, _mime(post) or ""), wire_size, rebuilt=True)
    if (isinstance(status, str) and status.startswith("discarded")) or wire_size:
        report.note("request_bodies_not_in_har")
    return None


def _bytes(
    text: Any, encoding: Any, holder: dict[str, Any], where: str, report: ImportReport
) -> bytes:
    if not isinstance(text, str):
        raise _Bad(f"{where}.text is {_jtype(text)}, not a string")
    if encoding is not None and not isinstance(encoding, str):
        raise _Bad(f"{where}.encoding is {_jtype(encoding)}, not a string")
    if encoding and encoding.strip().lower() == "base64":
        compact = re.sub(r"\s+", "", text)
        if len(compact) % 4:
            compact += "=" * (-len(compact) % 4)  # tolerate missing padding
        try:
            return binascii.a2b_base64(compact.encode("ascii"), strict_mode=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise _Bad(f"{where}.text is not valid base64") from None
    if encoding:
        report.note("unknown_body_encodings_read_as_text")
    return _encode_text(text, _mime(holder), report)


def _encode_text(text: str, content_type: str | None, report: ImportReport) -> bytes:
    """Text back to bytes, in the charset the content type names (the one it was decoded
    from), else UTF-8."""
    m = _CHARSET.search(content_type or "")
    if m:
        try:
            codec = codecs.lookup(m.group(1)).name
            if codec not in ("utf-8", "utf-16", "utf-32"):  # the last two would add a BOM
                return text.encode(codec)
        except (LookupError, UnicodeEncodeError):
            report.note("text_bodies_not_in_their_charset")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from a "\ud800" escape
        report.note("text_bodies_with_invalid_unicode")
        return text.encode("utf-8", "surrogatepass")


def _rebuild(params: list[Any], mime: str) -> bytes:
    """A request body from HAR ``postData.params``: urlencoded, or multipart with the
    boundary of the mime type."""
    pairs: list[tuple[str, str, str | None, str | None]] = []
    for k, p in enumerate(params):
        where = f"request.postData.params[{k}]"
        if not isinstance(p, dict):
            raise _Bad(f"{where} is {_jtype(p)}, not an object")
        name = _text(_need(p, "name", str, where + "."), where + ".name")
        value = _text(_opt(p, "value", str, where + ".") or "", where + ".value")
        file_name = _opt(p, "fileName", str, where + ".")
        ctype = _opt(p, "contentType", str, where + ".")
        pairs.append((name, value, file_name, ctype))
    m = re.search(r"boundary=\"?([^\";]+)", mime, re.IGNORECASE)
    if mime.lower().startswith("multipart/form-data") and m:
        boundary = m.group(1)
        out: list[str] = []
        for name, value, file_name, ctype in pairs:
            disp = f'form-data; name="{name}"'
            if file_name is not None:
                disp += f'; filename="{file_name}"'
            out.append(f"--{boundary}\r\nContent-Disposition: {disp}\r\n")
            if ctype:
                out.append(f"Content-Type: {ctype}\r\n")
            out.append(f"\r\n{value}\r\n")
        out.append(f"--{boundary}--\r\n")
        return "".join(out).encode("utf-8", "surrogatepass")
    encoded = "&".join(f"{quote_plus(n)}={quote_plus(v)}" for n, v, _, _ in pairs)
    return encoded.encode("ascii")


# ------------------------------------------------------------------------------ other fields


def _split_url(url: str) -> tuple[str, str, int, str]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _Bad(f"request.url {_short(url)!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise _Bad(f"request.url {_short(url)!r} is not an http(s) or ws(s) URL")
    host = parts.hostname
    if not host:
        raise _Bad(f"request.url {_short(url)!r} has no host")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return _HTTP_SCHEME[scheme], host, port or _DEFAULT_PORTS[scheme], path


def _http_version(text: str) -> str:
    return _VERSIONS.get(text.strip().lower(), _text(text, "httpVersion")[:32])


def _headers(raw: Any, where: str) -> tuple[Header, ...]:
    """Headers in order. HTTP/2 pseudo-headers (``:path``) are left out: they restate the
    request line, and the live recorder does not see them either."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _Bad(f"{where} is {_jtype(raw)}, not a list")
    out: list[Header] = []
    for k, h in enumerate(raw):
        if isinstance(h, dict):
            name, value = h.get("name"), h.get("value")
        elif isinstance(h, list) and len(h) == 2:  # [name, value], as Slack writes them
            name, value = h
        else:
            raise _Bad(f"{where}[{k}] is {_jtype(h)}, not a {{name, value}} object")
        if not isinstance(name, str) or not isinstance(value, str):
            bad = "name" if not isinstance(name, str) else "value"
            raise _Bad(f"{where}[{k}].{bad} is {_jtype(name if bad == 'name' else value)}")
        if name.startswith(":"):
            continue
        out.append((_text(name, f"{where}[{k}].name"), _text(value, f"{where}[{k}].value")))
    return tuple(out)


def _header(headers: tuple[Header, ...], name: str) -> str | None:
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def _mime(holder: dict[str, Any]) -> str | None:
    mime = holder.get("mimeType")
    if isinstance(mime, str) and mime.strip() and mime != "application/x-unknown":
        return _text(mime, "mimeType")
    return None


def _status(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Bad(f"response.status is {_jtype(value)}, not a number")
    if value != 0 and not 100 <= value <= 999:
        raise _Bad(f"response.status {value} is not an HTTP status")
    return value


def _time(text: str, where: str, report: ImportReport) -> float:
    if len(text) > 64:
        raise _Bad(f"{where} {_short(text)!r} is not a date")
    try:
        dt = datetime.fromisoformat(_LONG_FRACTION.sub(r"\1", text.strip()))
    except ValueError:
        raise _Bad(f"{where} {_short(text)!r} is not an ISO 8601 date") from None
    if dt.tzinfo is None:
        report.note("times_without_offset_read_as_utc")
        dt = dt.replace(tzinfo=UTC)
    ts = dt.timestamp()
    if not 0 <= ts <= _MAX_TS:
        raise _Bad(f"{where} {text!r} is out of range")
    return ts


def _times(
    started: float, timings: dict[str, Any] | None, total: float | None, *, has_response: bool
) -> tuple[str | None, str | None, str | None, str | None]:
    """Request and response start and end from ``startedDateTime`` and ``timings``.

    The request starts after blocked, dns and connect (which includes ssl); it ends after
    send; the response starts after wait and ends after receive. Negative values (-1: not
    applicable) count as 0. Without timings only the start is known, and the end of the
    response when ``time`` is given."""

    def phase(name: str) -> float:
        v = _opt_number(timings or {}, name, "timings.")
        return max(v or 0.0, 0.0) / 1000.0

    def stamp(ts: float) -> str | None:
        if not 0 <= ts <= _MAX_TS:
            raise _Bad("timings run past the year 9999")
        return iso(ts)

    if not timings:
        end = stamp(started + total / 1000.0) if has_response and total and total > 0 else None
        return stamp(started), None, None, end
    req_start = started + phase("blocked") + phase("dns") + phase("connect")
    req_end = req_start + phase("send")
    if not has_response:
        return stamp(req_start), stamp(req_end), None, None
    resp_start = req_end + phase("wait")
    resp_end = resp_start + phase("receive")
    return stamp(req_start), stamp(req_end), stamp(resp_start), stamp(resp_end)


def _server_ip(value: Any, report: ImportReport) -> str | None:
    if value is None or value == "":
        return None
    ip = _ip(value)
    if ip is None:
        report.note("server_ip_addresses_not_understood")
    return ip


def _ip(value: Any) -> str | None:
    """An IP address as the live recorder writes it: no brackets (Chrome writes IPv6 as
    ``[addr]``), IPv4-mapped IPv6 as plain IPv4."""
    if not isinstance(value, str) or len(value) > 100:
        return None
    text = value.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    try:
        addr = ip_address(text)
    except ValueError:
        return None
    mapped = getattr(addr, "ipv4_mapped", None)
    return str(mapped or addr)


def _connection(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return _clean(value.strip())[:200]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _is_port(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535


def _ws_message(m: Any) -> tuple[str, bool, bool, bytes]:
    """One of Chrome's, HTTP Toolkit's or mitmproxy's ``_webSocketMessages``."""
    if not isinstance(m, dict):
        raise _Bad(f"is {_jtype(m)}, not an object")
    kind = _need(m, "type", str, "")
    if kind not in ("send", "receive"):
        raise _Bad(f"type {_short(kind)!r} is neither send nor receive")
    ts = _opt_number(m, "time", "")
    if ts is None or not 0 <= ts <= _MAX_TS:
        raise _Bad("time is not a time in epoch seconds")
    is_text = m.get("opcode", 1) == 1
    data = m.get("data", "")
    if not isinstance(data, str):
        raise _Bad(f"data is {_jtype(data)}, not a string")
    if is_text:
        payload = data.encode("utf-8", "surrogatepass")
    else:
        try:
            payload = binascii.a2b_base64(data.encode("ascii"), strict_mode=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise _Bad("data is not valid base64") from None
    return iso(ts) or "", kind == "send", is_text, payload


def _tls_error(raw: Any, rec_id: str, report: ImportReport) -> TlsFailedRecord:
    """HTTP Toolkit's ``log._tlsErrors``: handshakes the client broke off."""
    if not isinstance(raw, dict):
        raise _Bad(f"is {_jtype(raw)}, not an object")
    ts = _time(_need(raw, "startedDateTime", str, ""), "startedDateTime", report)
    port = raw.get("clientPort")
    host = raw.get("hostname")
    cause = raw.get("cause")
    return TlsFailedRecord(
        id=rec_id,
        ts=iso(ts) or "",
        side="client",
        client_ip=_ip(raw.get("clientIPAddress")),
        client_port=port if _is_port(port) else None,
        sni=_text(host, "hostname") if isinstance(host, str) and host else None,
        error=f"TLS handshake failed: {_clean(cause)[:200] if isinstance(cause, str) else '?'}",
    )


# ------------------------------------------------------------------------------------ helpers


def _need(obj: dict[str, Any], key: str, kind: type, prefix: str) -> Any:
    value = obj.get(key)
    if value is None:
        raise _Bad(f"{prefix}{key} is missing")
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _Bad(f"{prefix}{key} is {_jtype(value)}, not {_JSON_NAMES[kind]}")
    return value


def _opt(obj: dict[str, Any], key: str, kind: type, prefix: str) -> Any:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _Bad(f"{prefix}{key} is {_jtype(value)}, not {_JSON_NAMES[kind]}")
    return value


def _opt_number(obj: dict[str, Any], key: str, prefix: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _Bad(f"{prefix}{key} is {_jtype(value)}, not a number")
    # abs() first: math.isfinite() overflows on an integer of more than 308 digits
    if abs(value) > 1e15 or not math.isfinite(value):
        raise _Bad(f"{prefix}{key} is not a finite number of a sane size")
    return float(value)


def _text(value: str, where: str) -> str:
    if len(value) > MAX_TEXT:
        raise _Bad(f"{where} is {len(value)} characters long (limit {MAX_TEXT})")
    return _clean(value)


def _clean(value: str) -> str:
    """Lone surrogates (``"\\ud800"`` in the JSON) cannot be written as UTF-8; they become
    U+FFFD."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", value)
    return value


_JSON_NAMES: dict[type, str] = {str: "a string", dict: "an object", list: "a list"}


def _jtype(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _short(text: str, limit: int = 80) -> str:
    text = _clean(text)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"
