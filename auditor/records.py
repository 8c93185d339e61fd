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
import re
import types
import typing
from collections.abc import Callable
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
    TLS_SERVER = "tls_server"


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
    server_conn_id: str | None = None  # the TlsServerRecord of the upstream connection


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
    server_conn_id: str | None = None


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


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What a certificate says about whose it is (subject, SAN DNS names, issuer, validity).

    Text is as the certificate has it, but with control characters written ``\\xNN`` and
    each value cut to 256 characters (``truncated`` is then set, as it is when more than
    1000 SAN names were left out). ``sha256`` is the hash of the DER, always there; when
    ``cryptography`` could not read a part, ``error`` says which and why."""

    sha256: str
    subject_o: str | None = None
    subject_cn: str | None = None
    subject_c: str | None = None
    dns_names: tuple[str, ...] = ()
    issuer_o: str | None = None
    issuer_cn: str | None = None
    not_before: str | None = None
    not_after: str | None = None
    truncated: bool = False
    error: str | None = None


@dataclass(frozen=True, slots=True)
class TlsServerRecord:
    """A TLS connection the proxy made to a server, and the certificates the server sent.

    Written once per connection when its handshake completes; the HTTP flows (and failed
    client handshakes) that used it name it in ``server_conn_id``. ``certificates`` is the
    chain as the server sent it, leaf first, at most 10; ``chain_length`` counts them all."""

    TYPE: ClassVar[RecordType] = RecordType.TLS_SERVER
    id: str
    ts: str
    host: str | None = None
    port: int | None = None
    server_ip: str | None = None
    server_port: int | None = None
    sni: str | None = None
    tls_version: str | None = None
    alpn: str | None = None
    cipher: str | None = None
    certificates: tuple[CertificateInfo, ...] = ()
    chain_length: int = 0


Record = (
    HttpRecord
    | TlsFailedRecord
    | WebSocketMessageRecord
    | DnsRecord
    | EventRecord
    | TlsServerRecord
)

RECORD_CLASSES: dict[str, type[Record]] = {
    cls.TYPE.value: cls
    for cls in (
        HttpRecord,
        TlsFailedRecord,
        WebSocketMessageRecord,
        DnsRecord,
        EventRecord,
        TlsServerRecord,
    )
}

_NESTED: dict[str, type] = {
    "request_body": BodyRef,
    "response_body": BodyRef,
    "body": BodyRef,
}
_NESTED_LISTS: dict[str, type] = {  # lists of objects
    "answers": DnsAnswer,
    "certificates": CertificateInfo,
}
_FIELDS: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls))
    for cls in (*RECORD_CLASSES.values(), BodyRef, DnsAnswer, CertificateInfo)
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


# Field checks, made once from the annotations: a record read from a file has the types its
# class declares (the JSON schema's), or it is not a record. Whatever reads records downstream
# (summaries, flow tables, rules) can then trust them.
_Check = Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    # 64 bits: what every reader of the JSON (and pandas' Int64 columns) can hold
    return isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63


def _is_header(v: Any) -> bool:
    return isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], str)


def _check_for(hint: Any) -> _Check:
    if hint is str:
        return lambda v: isinstance(v, str)
    if hint is int:
        return _is_int
    if hint is bool:
        return lambda v: isinstance(v, bool)
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union) and type(None) in args:
        (inner,) = (a for a in args if a is not type(None))
        check = _check_for(inner)
        return lambda v: v is None or check(v)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        item = _is_header if args[0] == Header else _check_for(args[0])
        return lambda v: isinstance(v, tuple) and all(item(x) for x in v)
    if origin is dict:
        return lambda v: isinstance(v, dict)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return lambda v: isinstance(v, hint)
    raise TypeError(f"no check for {hint!r}")  # a new field type: add its check here


def _type_name(hint: Any) -> str:
    name = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
    return re.sub(r"\bint\b", "int64", name)


_CHECKS: dict[type, tuple[tuple[str, _Check, str], ...]] = {
    cls: tuple(
        (name, _check_for(hint), _type_name(hint))
        for name, hint in typing.get_type_hints(cls).items()
        if name in _FIELDS[cls]
    )
    for cls in _FIELDS
}


def _checked(cls: type, kwargs: dict[str, Any]) -> Any:
    for name, check, expected in _CHECKS[cls]:
        if name in kwargs and not check(kwargs[name]):
            raise RecordFormatError(
                f"{cls.__name__}.{name} is {_short(kwargs[name])}, not {expected}"
            )
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise RecordFormatError(f"{cls.__name__}: {exc}") from None


def validate(record: Record) -> Record:
    """``record`` itself when each of its fields (and of its bodies and DNS answers) has the
    type its class declares; else a :class:`RecordFormatError` naming the field. For records
    built from objects of another tool (a mitmproxy flow file), which may hold anything."""
    _validate(record)
    return record


def _validate(obj: Any) -> None:
    for name, check, expected in _CHECKS[type(obj)]:
        value = getattr(obj, name)
        if not check(value):
            raise RecordFormatError(
                f"{type(obj).__name__}.{name} is {_short(value)}, not {expected}"
            )
        if isinstance(value, BodyRef):
            _validate(value)
        elif name in _NESTED_LISTS:
            for item in value:
                _validate(item)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "…"


def _pair(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def record_from_dict(obj: dict[str, Any]) -> Record:
    """Build a record from its JSON form. Unknown keys are ignored (newer writers); a missing
    required field or a value not of the field's type is a :class:`RecordFormatError`."""
    if not isinstance(obj, dict):
        raise RecordFormatError("record is not a JSON object")
    rtype = obj.get("type")
    cls = RECORD_CLASSES.get(rtype) if isinstance(rtype, str) else None
    if cls is None:
        raise RecordFormatError(f"unknown record type {_short(rtype)}")
    kwargs: dict[str, Any] = {}
    for name in _FIELDS[cls]:
        if name not in obj:
            continue
        value = obj[name]
        if name in _NESTED and isinstance(value, dict):
            value = _build(_NESTED[name], value)
        elif name in ("request_headers", "response_headers") and isinstance(value, list):
            value = tuple(_pair(p) for p in value)
        elif name in _NESTED_LISTS and isinstance(value, list):
            item_cls = _NESTED_LISTS[name]
            value = tuple(_build(item_cls, a) if isinstance(a, dict) else a for a in value)
        elif name == "alpn_offers" and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return _checked(cls, kwargs)


def _build(cls: type, obj: dict[str, Any]) -> Any:
    return _checked(
        cls,
        {
            k: tuple(v) if k == "dns_names" and isinstance(v, list) else v
            for k, v in obj.items()
            if k in _FIELDS[cls]
        },
    )


def loads(line: str | bytes) -> Record:
    """A record from one line of ``flows.jsonl``; raises only :class:`RecordFormatError`.

    A lone surrogate (``"\\ud800"`` in the JSON, which no UTF-8 writer produces) becomes
    U+FFFD, so that every record read can be written again."""
    try:
        obj = json.loads(line)
    except ValueError as exc:  # also UnicodeDecodeError, and an int of over 4300 digits
        raise RecordFormatError(f"not JSON: {exc}") from None
    except RecursionError:
        raise RecordFormatError("not JSON: nested too deeply") from None
    if _may_hold_surrogate(line):
        try:
            obj = _no_surrogates(obj)
        except RecursionError:
            raise RecordFormatError("not a record: nested too deeply") from None
    return record_from_dict(obj)


_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_OR_ESCAPE = re.compile(r"[\ud800-\udfff]|\\u[dD][89a-fA-F]")


def _may_hold_surrogate(line: str | bytes) -> bool:
    if isinstance(line, bytes):
        if b"\x00" in line[:4] or line[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return True  # UTF-16 or UTF-32, which json also reads
        return _ESCAPED_SURROGATE.search(line) is not None  # UTF-8 holds none but escaped
    return _SURROGATE_OR_ESCAPE.search(line) is not None


def _no_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_no_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_no_surrogates(k): _no_surrogates(v) for k, v in value.items()}
    return value


def decode_header_bytes(raw: bytes) -> str:
    """Header bytes to text: UTF-8 when valid, else Latin-1 (keeps every byte)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
