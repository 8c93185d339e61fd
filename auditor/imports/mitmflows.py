"""mitmproxy flow files (``mitmdump -w``) to auditor records, read with mitmproxy's own reader.

HTTP flows become exactly the records the live recorder writes (:mod:`auditor.proxy.mitmconv`, same
ids, bodies and times), then one record per WebSocket message; DNS flows become ``dns``
records; TCP and UDP flows, which auditor has no record type for, become ``tcp_flow`` and
``udp_flow`` events whose payloads (each direction joined) are in the body store.

A flow file cut short (a killed mitmdump, a partial copy) or corrupt part-way keeps the flows
read before the damage; a warning says at which byte reading stopped.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
from collections.abc import Iterator
from typing import Any, BinaryIO

from mitmproxy import dns, http, tcp, udp
from mitmproxy import flow as mflow
from mitmproxy.io import FlowReader

from auditor.imports import ImportFileError, ImportReport
from auditor.proxy import mitmconv
from auditor.records import (
    EventRecord,
    HttpRecord,
    Record,
    dumps,
    record_from_dict,
    validate,
)
from auditor.session.bodies import BodyStore
from auditor.timeutil import iso, now_iso

log = logging.getLogger(__name__)


def check_flow_file(fo: BinaryIO, name: str) -> None:
    """Raise ImportFileError unless the first flow of ``fo`` can be read."""
    _refuse_json(fo, name)
    try:
        next(iter(FlowReader(fo).stream()), None)
    except Exception as exc:
        log.debug("%s: first flow unreadable", name, exc_info=True)
        raise ImportFileError(
            f"{name}: not a readable mitmproxy flow file: {_reason(exc)}"
        ) from None


def flow_records(
    fo: BinaryIO, store: BodyStore, report: ImportReport, name: str, size: int | None = None
) -> Iterator[Record]:
    """The records of every flow in ``fo``, in file order.

    Reading stops at the first damaged flow; the flows before it are kept and a warning (in
    ``report``) says where. A file whose very first flow cannot be read is an
    ImportFileError."""
    _refuse_json(fo, name)
    stream = iter(FlowReader(fo).stream())
    http_ids: set[str] = set()  # HTTP flows written, to join a migrated WebSocket to them
    read = 0
    offset = fo.tell()
    while True:
        try:
            f = next(stream)
        except StopIteration:
            break
        except Exception as exc:
            # FlowReadException, or whatever mitmproxy's state loading raises on bad data
            log.debug("%s: reading stopped at byte %d", name, offset, exc_info=True)
            if read == 0:
                raise ImportFileError(
                    f"{name}: not a readable mitmproxy flow file: {_reason(exc)}"
                ) from None
            of = f" of {size}" if size is not None else ""
            cut = _ends_mid_record(fo, offset, size)
            if cut:
                report.warn(
                    f"{name}: the flow file ends mid-record at byte {offset}{of}, after "
                    f"{read} flows (cut short: a copy or a mitmdump that did not finish "
                    "writing); the flows before it are imported"
                )
            else:
                report.warn(
                    f"{name}: reading stopped at byte {offset}{of}, after {read} flows: "
                    f"{_reason(exc)}; the flows before it are imported"
                )
            report.meta["stopped_at_byte"] = offset
            report.meta["stopped"] = {
                "at_byte": offset,
                "size": size,
                "after_flows": read,
                "why": "ends-mid-record" if cut else "unreadable-record",
                "reason": _reason(exc),
            }
            break
        read += 1
        offset = fo.tell()
        where = f"flow {read - 1} ({_clean(str(f.id))[:64]})"
        scratch = ImportReport(report.format)  # counts only for flows imported
        try:
            records = [validate(_utf8(r)) for r in _flow_records(f, store, scratch, http_ids)]
        except Exception as exc:  # one odd flow must not lose the others
            if _malformed(exc):
                log.debug("%s: %s is malformed", name, where, exc_info=True)
                report.skip(where, f"malformed flow: {_reason(exc)}")
            else:
                log.exception("%s: %s", name, where)
                report.skip(where, f"internal error: {_reason(exc)}")
            continue
        http_ids.update(r.id for r in records if isinstance(r, HttpRecord))
        for key, n in scratch.counts.items():
            report.count(key, n)
        for key, n in scratch.notes.items():
            report.note(key, n)
        report.take(scratch)
        yield from records
    report.count("flows", read)


# mitmproxy loads a flow's state without checking its types: a hostile or damaged file gives
# flows whose fields hold anything, and converting them fails in these ways. That is the
# flow's fault, not auditor's: the flow is skipped as malformed.
_MALFORMED = (
    TypeError,
    ValueError,  # also RecordFormatError, UnicodeError
    AttributeError,
    LookupError,
    OverflowError,
)


def _utf8(rec: Record) -> Record:
    """``rec`` with text that UTF-8 can hold. mitmproxy decodes bytes that are not UTF-8 (a
    request path) with surrogateescape; such a byte becomes ``%XX``, which in a URL is what it
    means; any other lone surrogate becomes U+FFFD."""
    line = dumps(rec)
    if not mitmconv.SURROGATE.search(line):
        return rec
    return record_from_dict(_escape_bytes(json.loads(line)))


def _escape_bytes(value: Any) -> Any:
    if isinstance(value, str):
        return mitmconv.utf8_text(value)
    if isinstance(value, list):
        return [_escape_bytes(v) for v in value]
    if isinstance(value, dict):
        return {_escape_bytes(k): _escape_bytes(v) for k, v in value.items()}
    return value


def _malformed(exc: Exception) -> bool:
    # datetime.fromtimestamp() of a timestamp past the platform's range is an OSError too;
    # other OSErrors (the body store could not write) are not the flow's fault.
    return isinstance(exc, _MALFORMED) or (
        isinstance(exc, OSError) and exc.errno == errno.EOVERFLOW
    )


#: What mitmproxy's reader puts in the metadata of a WebSocket it migrated from a flow file of
#: mitmproxy 6 or older (io/compat.py, convert_11_12), where the handshake and the messages
#: were two flows.
MIGRATED_WEBSOCKET = "duplicated"


def _flow_records(
    f: mflow.Flow, store: BodyStore, report: ImportReport, http_ids: set[str]
) -> Iterator[Record]:
    if isinstance(f, http.HTTPFlow):
        yield from _http_flow_records(f, store, report, http_ids)
    elif isinstance(f, dns.DNSFlow):
        yield mitmconv.dns_record(f)
        report.count("dns")
    elif isinstance(f, tcp.TCPFlow | udp.UDPFlow):
        yield stream_event(f, store)
        report.count("event")
    else:
        report.skip(f"flow {f.id}", f"{type(f).__name__} flows are not imported")


def _http_flow_records(
    f: http.HTTPFlow, store: BodyStore, report: ImportReport, http_ids: set[str]
) -> Iterator[Record]:
    """An HTTP flow and its WebSocket messages.

    A flow file of mitmproxy 6 or older holds a WebSocket as two flows: the handshake, and a
    WebSocket flow with the messages. mitmproxy 12's reader turns the second into a copy of
    the handshake (same id) carrying the messages, or, when the handshake is not in the file,
    into a made-up ``GET http://unknown/`` at time 0. The copy adds only its messages; the
    made-up request is no traffic and is not written (its messages are, named by the server
    the WebSocket was connected to)."""
    host: str | None = None
    url: str | None = None
    migrated = MIGRATED_WEBSOCKET in f.metadata and f.websocket is not None
    if migrated and f.id in http_ids:
        report.note("websocket_flows_joined_to_their_handshake")
    elif migrated and _made_up_handshake(f):
        report.note("websocket_flows_without_their_handshake")
        host, url = _server_url(f)
    else:
        yield mitmconv.http_record(f, store)
        report.count("http")
        if f.response is None and f.error is None and f.websocket is None:
            report.note("http_flows_without_response")  # in flight when mitmdump stopped
    if f.websocket is not None:
        for n, msg in enumerate(f.websocket.messages, 1):
            yield mitmconv.websocket_record(f, msg, n, store, host=host, url=url)
            report.count("websocket_message")


def _made_up_handshake(f: http.HTTPFlow) -> bool:
    req = f.request
    return req.host == "unknown" and not req.timestamp_start and f.response is None


def _server_url(f: http.HTTPFlow) -> tuple[str, str]:
    """The server a WebSocket was connected to, as a host and a ``ws(s)://`` URL."""
    host, port = _peer(f.server_conn.address or f.server_conn.peername)
    if host is None:
        return "unknown", "ws://unknown/"
    scheme = "wss" if f.server_conn.tls_established or f.server_conn.sni else "ws"
    default = 443 if scheme == "wss" else 80
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != default:
        netloc += f":{port}"
    return host, f"{scheme}://{netloc}/"


def stream_event(f: tcp.TCPFlow | udp.UDPFlow, store: BodyStore) -> EventRecord:
    """A TCP or UDP flow as an event; each direction's payload, joined, goes to the store."""
    proto = "tcp" if isinstance(f, tcp.TCPFlow) else "udp"
    up = [m for m in f.messages if m.from_client]
    down = [m for m in f.messages if not m.from_client]
    up_bytes = b"".join(m.content for m in up)
    down_bytes = b"".join(m.content for m in down)
    client_ip, client_port = _peer(f.client_conn.peername)
    server_ip, server_port = _peer(f.server_conn.peername or f.server_conn.address)
    data: dict[str, Any] = {
        "flow_id": f.id,
        "protocol": proto,
        "client_ip": client_ip,
        "client_port": client_port,
        "server_ip": server_ip,
        "server_port": server_port,
        "sni": f.client_conn.sni,
        "messages_from_client": len(up),
        "messages_from_server": len(down),
        "from_client": dataclasses.asdict(store.put(up_bytes)) if up_bytes else None,
        "from_server": dataclasses.asdict(store.put(down_bytes)) if down_bytes else None,
        "first_message": iso(f.messages[0].timestamp) if f.messages else None,
        "last_message": iso(f.messages[-1].timestamp) if f.messages else None,
        "error": f.error.msg if f.error else None,
    }
    return EventRecord(
        ts=iso(f.timestamp_created) or now_iso(),
        kind=f"{proto}_flow",
        message=(
            f"{proto} {client_ip}:{client_port} -> {server_ip}:{server_port}: "
            f"{len(up)} messages up ({len(up_bytes)} bytes), "
            f"{len(down)} down ({len(down_bytes)} bytes)"
        ),
        data=data,
    )


def _peer(addr: Any) -> tuple[str | None, int | None]:
    if not addr:
        return None, None
    host = str(addr[0])
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, int(addr[1])


def _ends_mid_record(fo: BinaryIO, offset: int, size: int | None) -> bool:
    """Whether the record at ``offset`` (a tnetstring, ``<length>:<payload><type>``) runs past
    the end of the file: the file was cut, not damaged."""
    if size is None:
        return False
    try:
        fo.seek(offset)
        head = fo.read(13)
    except (OSError, ValueError):
        return False
    digits, colon, _ = head.partition(b":")
    if not colon:
        return (len(head) < 13 and head.isdigit()) or not head
    if not digits.isdigit():
        return False
    return offset + len(digits) + 1 + int(digits) + 1 > size


def _refuse_json(fo: BinaryIO, name: str) -> None:
    # mitmproxy's reader would read a HAR too, by its own rules; HARs have their importer.
    pos = fo.tell()
    head = fo.read(4)
    fo.seek(pos)
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        raise ImportFileError(f"{name}: a JSON file, not a mitmproxy flow file (import it as HAR)")


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text} ({cause})"
    return _clean(text[:300])


def _clean(text: str) -> str:
    """Text for the manifest, which is UTF-8: lone surrogates (from a hostile file) go."""
    return text.encode("utf-8", "replace").decode("utf-8")
