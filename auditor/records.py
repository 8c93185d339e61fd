"""The records of a capture session, defined once.

Every line of a session's ``flows.jsonl`` is one of these records as a JSON object with a
``type`` key. Their JSON form is documented in ``docs/records.md`` and
``docs/records.schema.json``; ``tests/test_records.py`` keeps the three in step.

Timestamps are ISO 8601 UTC strings (see :mod:`auditor.timeutil`). Headers are lists of
``[name, value]`` pairs in wire order; a header that is not valid UTF-8 is decoded as
Latin-1, which keeps every byte.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

SCHEMA_VERSION = 1

# The host of the canary request with which `auditor audit` checks interception; the analyser
# leaves these flows out (they are auditor's own, not the phone's).
CANARY_HOST = "auditor-canary.invalid"

Header = tuple[str, str]


class RecordType(StrEnum):
    HTTP = "http"
    TLS_FAILED = "tls_failed"
    WEBSOCKET_MESSAGE = "websocket_message"
    DNS = "dns"
    EVENT = "event"


@dataclass(frozen=True, slots=True)
class BodyRef:
    """A body kept in the session's content-addressed store.

    ``sha256`` names the stored bytes (``bodies/<sha256>.zst``). The bytes are the body as it
    came on the wire, still in its ``encoding`` (gzip, br, ...). When the body was over the
    cap, only the first ``size`` bytes are stored, ``truncated`` is true and ``full_sha256``
    is the hash of the whole wire body.
    """

    sha256: str
    size: int
    wire_size: int
    truncated: bool = False
    encoding: str | None = None
    decoded_size: int | None = None
    decode_error: str | None = None
    full_sha256: str | None = None


@dataclass(frozen=True, slots=True)
class HttpRecord:
    """One HTTP request and its response (or the error that replaced the response)."""

    TYPE: ClassVar[RecordType] = RecordType.HTTP
    id: str
    method: str
    scheme: str
    host: str
    port: int
    path: str
    url: str
    http_version: str = ""
    request_start: str | None = None
    request_end: str | None = None
    response_start: str | None = None
    response_end: str | None = None
    client_ip: str | None = None
    client_port: int | None = None
    server_ip: str | None = None
    server_port: int | None = None
    sni: str | None = None
    tls_version: str | None = None
    alpn: str | None = None
    request_headers: tuple[Header, ...] = ()
    request_content_type: str | None = None
    request_body: BodyRef | None = None
    status: int | None = None
    reason: str | None = None
    response_headers: tuple[Header, ...] = ()
    response_content_type: str | None = None
    response_body: BodyRef | None = None
    error: str | None = None
    proxy_mode: str | None = None


@dataclass(frozen=True, slots=True)
class TlsFailedRecord:
    """A TLS handshake that failed; ``side == "client"`` is the evidence of certificate pinning
    (the client rejected mitmproxy's certificate)."""

    TYPE: ClassVar[RecordType] = RecordType.TLS_FAILED
    id: str
    ts: str
    side: str
    client_ip: str | None
    client_port: int | None
    sni: str | None
    error: str
    server_ip: str | None = None
    server_port: int | None = None
    alpn_offers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WebSocketMessageRecord:
    TYPE: ClassVar[RecordType] = RecordType.WEBSOCKET_MESSAGE
    id: str
    flow_id: str
    ts: str
    from_client: bool
    is_text: bool
    host: str
    url: str
    body: BodyRef | None = None


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    name: str
    rtype: str
    value: str
    ttl: int | None = None


@dataclass(frozen=True, slots=True)
class DnsRecord:
    """A DNS query and its answers, from mitmproxy's DNS mode or from packets."""

    TYPE: ClassVar[RecordType] = RecordType.DNS
    id: str
    ts: str
    qname: str
    qtype: str
    client_ip: str | None = None
    client_port: int | None = None
    server_ip: str | None = None
    server_port: int | None = None
    transport: str = "udp"
    rcode: str | None = None
    answers: tuple[DnsAnswer, ...] = ()
    source: str = "mitmproxy"


@dataclass(frozen=True, slots=True)
class EventRecord:
    """Something that happened during the capture: start, stop, scenario step, warning."""

    TYPE: ClassVar[RecordType] = RecordType.EVENT
    ts: str
    kind: str
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)


Record = HttpRecord | TlsFailedRecord | WebSocketMessageRecord | DnsRecord | EventRecord

RECORD_CLASSES: dict[str, type[Record]] = {
    cls.TYPE.value: cls
    for cls in (HttpRecord, TlsFailedRecord, WebSocketMessageRecord, DnsRecord, EventRecord)
}

_NESTED: dict[str, type] = {
    "request_body": BodyRef,
    "response_body": BodyRef,
    "body": BodyRef,
}
_FIELDS: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls))
    for cls in (*RECORD_CLASSES.values(), BodyRef, DnsAnswer)
}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: _plain(getattr(value, name)) for name in _FIELDS[type(value)]}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def record_to_dict(record: Record) -> dict[str, Any]:
    """The JSON form of a record, ``type`` first."""
    out: dict[str, Any] = {"type": record.TYPE.value}
    for name in _FIELDS[type(record)]:
        out[name] = _plain(getattr(record, name))
    return out


def dumps(record: Record) -> str:
    """One JSON line (no newline). Non-ASCII is kept as is; the file is UTF-8."""
    return json.dumps(record_to_dict(record), ensure_ascii=False, separators=(",", ":"))


class RecordFormatError(ValueError):
    """A JSON object that is not a valid record."""


def record_from_dict(obj: dict[str, Any]) -> Record:
    """Build a record from its JSON form. Unknown keys are ignored (newer writers)."""
    if not isinstance(obj, dict):
        raise RecordFormatError("record is not a JSON object")
    rtype = obj.get("type")
    cls = RECORD_CLASSES.get(rtype) if isinstance(rtype, str) else None
    if cls is None:
        raise RecordFormatError(f"unknown record type {rtype!r}")
    kwargs: dict[str, Any] = {}
    for name in _FIELDS[cls]:
        if name not in obj:
            continue
        value = obj[name]
        if name in _NESTED and isinstance(value, dict):
            value = _build(_NESTED[name], value)
        elif name in ("request_headers", "response_headers") and isinstance(value, list):
            value = tuple((str(p[0]), str(p[1])) for p in value if isinstance(p, list | tuple))
        elif name == "answers" and isinstance(value, list):
            value = tuple(_build(DnsAnswer, a) for a in value if isinstance(a, dict))
        elif name == "alpn_offers" and isinstance(value, list):
            value = tuple(str(v) for v in value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise RecordFormatError(f"{rtype} record: {exc}") from None


def _build(cls: type, obj: dict[str, Any]) -> Any:
    try:
        return cls(**{k: v for k, v in obj.items() if k in _FIELDS[cls]})
    except TypeError as exc:
        raise RecordFormatError(f"{cls.__name__}: {exc}") from None


def loads(line: str | bytes) -> Record:
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise RecordFormatError(f"not JSON: {exc}") from None
    return record_from_dict(obj)


def decode_header_bytes(raw: bytes) -> str:
    """Header bytes to text: UTF-8 when valid, else Latin-1 (keeps every byte)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
