"""mitmproxy objects to auditor records.

Shared by the live recorder addon (:mod:`auditor.proxy.recorder`) and by imports of mitmproxy flow
files, so a flow becomes the same record whichever way it arrived.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from auditor.packets.tlscert import chain_info, clean_text
from auditor.records import (
    BodyRef,
    DnsAnswer,
    DnsRecord,
    Header,
    HttpRecord,
    TlsFailedRecord,
    TlsServerRecord,
    WebSocketMessageRecord,
    decode_header_bytes,
)
from auditor.session.bodies import BodyStore
from auditor.timeutil import iso, now_iso

if TYPE_CHECKING:
    from mitmproxy import connection, dns, http, tls
    from mitmproxy.websocket import WebSocketMessage


def _addr(
    addr: tuple[str, int] | tuple[str, int, int, int] | None,
) -> tuple[str | None, int | None]:
    if not addr:
        return None, None
    host, port = addr[0], addr[1]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, int(port)


def _headers(h: http.Headers) -> tuple[Header, ...]:
    return tuple((decode_header_bytes(k), decode_header_bytes(v)) for k, v in h.fields)


def _body(msg: http.Message, store: BodyStore) -> BodyRef | None:
    raw = msg.raw_content
    if not raw:
        return None
    return store.put(raw, msg.headers.get("content-encoding"))


def _alpn(conn: connection.Connection) -> str | None:
    return conn.alpn.decode("ascii", "replace") if conn.alpn else None


SURROGATE = re.compile("[\ud800-\udfff]")


def utf8_text(text: str) -> str:
    """Text UTF-8 can hold. mitmproxy decodes bytes that are not UTF-8 (a request path) with
    surrogateescape; such a byte becomes ``%XX``, which in a URL is what it means; any other
    lone surrogate becomes U+FFFD."""
    return SURROGATE.sub(_escaped, text) if SURROGATE.search(text) else text


def _escaped(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"%{code - 0xDC00:02X}" if 0xDC80 <= code <= 0xDCFF else "\ufffd"


def http_record(flow: http.HTTPFlow, store: BodyStore) -> HttpRecord:
    req, resp = flow.request, flow.response
    client_ip, client_port = _addr(flow.client_conn.peername)
    server_ip, server_port = _addr(flow.server_conn.peername)
    return HttpRecord(
        id=flow.id,
        method=req.method,
        scheme=req.scheme,
        host=req.pretty_host,
        port=req.port,
        path=utf8_text(req.path),
        url=utf8_text(req.pretty_url),
        http_version=req.http_version,
        request_start=iso(req.timestamp_start),
        request_end=iso(req.timestamp_end),
        response_start=iso(resp.timestamp_start) if resp else None,
        response_end=iso(resp.timestamp_end) if resp else None,
        client_ip=client_ip,
        client_port=client_port,
        server_ip=server_ip,
        server_port=server_port,
        sni=flow.client_conn.sni,
        tls_version=flow.client_conn.tls_version,
        alpn=_alpn(flow.client_conn),
        request_headers=_headers(req.headers),
        request_content_type=req.headers.get("content-type"),
        request_body=_body(req, store),
        status=resp.status_code if resp else None,
        reason=resp.reason if resp else None,
        response_headers=_headers(resp.headers) if resp else (),
        response_content_type=resp.headers.get("content-type") if resp else None,
        response_body=_body(resp, store) if resp else None,
        error=flow.error.msg if flow.error else None,
        proxy_mode=flow.client_conn.proxy_mode.full_spec if flow.client_conn.proxy_mode else None,
        server_conn_id=flow.server_conn.id,
    )


def tls_failed_record(data: tls.TlsData, side: str) -> TlsFailedRecord:
    client = data.context.client
    server = data.context.server
    client_ip, client_port = _addr(client.peername)
    server_ip, server_port = _addr(server.peername or server.address)
    return TlsFailedRecord(
        id=data.conn.id,
        ts=now_iso(),
        side=side,
        client_ip=client_ip,
        client_port=client_port,
        sni=client.sni or (server.sni if side == "server" else None),
        error=data.conn.error or "TLS handshake failed",
        server_ip=server_ip,
        server_port=server_port,
        alpn_offers=tuple(a.decode("ascii", "replace") for a in client.alpn_offers or ()),
        server_conn_id=server.id,
    )


def tls_server_record(server: connection.Server) -> TlsServerRecord:
    """The proxy's TLS connection to a server and the chain the server sent (leaf first, as
    :func:`auditor.packets.tlscert.certificate_info` reads each certificate from its DER)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    host, port = _addr(server.address)
    server_ip, server_port = _addr(server.peername)
    chain = list(server.certificate_list)
    return TlsServerRecord(
        id=server.id,
        ts=iso(server.timestamp_tls_setup) or now_iso(),
        host=clean_text(host)[0] if host is not None else None,
        port=port,
        server_ip=server_ip,
        server_port=server_port,
        sni=clean_text(server.sni)[0] if server.sni else None,
        tls_version=server.tls_version,
        alpn=_alpn(server),
        cipher=server.cipher,
        certificates=chain_info(c.to_cryptography().public_bytes(Encoding.DER) for c in chain),
        chain_length=len(chain),
    )


def websocket_record(
    flow: http.HTTPFlow,
    message: WebSocketMessage,
    index: int,
    store: BodyStore,
    *,
    host: str | None = None,
    url: str | None = None,
) -> WebSocketMessageRecord:
    """One WebSocket message. ``host`` and ``url`` default to the flow's request (the
    handshake); an import passes the server's when mitmproxy made the handshake up."""
    content = message_bytes(message.content)
    return WebSocketMessageRecord(
        id=f"{flow.id}:{index}",
        flow_id=flow.id,
        ts=iso(message.timestamp) or now_iso(),
        from_client=bool(message.from_client),
        is_text=message.is_text,
        host=host if host is not None else flow.request.pretty_host,
        url=utf8_text(url if url is not None else flow.request.pretty_url),
        body=store.put(content) if content else None,
    )


def message_bytes(content: bytes | str) -> bytes:
    """A message's bytes. Flow files of mitmproxy 6 and older keep a text message as a string
    (mitmproxy 12's reader migrates the flow but leaves the string); that string was decoded
    from UTF-8, so encoding it again gives the bytes that were sent."""
    if isinstance(content, str):
        try:
            return content.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a lone surrogate no UTF-8 byte gave: a forged file
            return content.encode("utf-8", "replace")
    return bytes(content)


def dns_record(flow: dns.DNSFlow) -> DnsRecord:
    from mitmproxy.net.dns import response_codes, types

    q = flow.request.questions[0] if flow.request.questions else None
    resp = flow.response
    answers: tuple[DnsAnswer, ...] = ()
    if resp:
        answers = tuple(
            DnsAnswer(name=a.name, rtype=types.to_str(a.type), value=_rr_value(a), ttl=a.ttl)
            for a in resp.answers
        )
    client_ip, client_port = _addr(flow.client_conn.peername)
    server_ip, server_port = _addr(flow.server_conn.peername)
    return DnsRecord(
        id=flow.id,
        ts=iso(flow.request.timestamp) or now_iso(),
        qname=q.name if q else "",
        qtype=types.to_str(q.type) if q else "",
        client_ip=client_ip,
        client_port=client_port,
        server_ip=server_ip,
        server_port=server_port,
        transport=flow.client_conn.transport_protocol,
        rcode=response_codes.to_str(resp.response_code) if resp else None,
        answers=answers,
        source="mitmproxy",
    )


def _rr_value(rr: dns.ResourceRecord) -> str:
    try:
        return str(rr)
    except Exception:  # noqa: BLE001 - a malformed record must not lose the others
        return rr.data.hex()
