"""The recorder addon, driven through mitmproxy's own test harness (taddons, tflow)."""

import gzip
import json
from pathlib import Path

import pytest
from mitmproxy import connection, exceptions, tls
from mitmproxy.proxy import context
from mitmproxy.test import taddons, tflow

from addons.recorder import Recorder
from auditor.records import DnsRecord, HttpRecord, TlsFailedRecord, WebSocketMessageRecord
from auditor.session import Session


def _records(path: Path) -> list:
    return [r for r in Session(path).records() if r.TYPE.value != "event"]


def test_options_are_validated(tmp_path: Path) -> None:
    rec = Recorder()
    with taddons.context(rec) as tctx:
        with pytest.raises(exceptions.OptionsError, match="auditor_body_cap"):
            tctx.configure(rec, auditor_body_cap=0)
        closed = tmp_path / "closed"
        tctx.configure(rec, auditor_session=str(closed), auditor_close_on_done=True)
        rec.done()
        with pytest.raises(exceptions.OptionsError, match="closed"):
            tctx.configure(rec, auditor_session=str(tmp_path / "other"))
            tctx.configure(rec, auditor_session=str(closed))


def test_http_flow_with_gzip_body_and_headers_in_order(tmp_path: Path) -> None:
    rec = Recorder()
    with taddons.context(rec) as tctx:
        tctx.configure(rec, auditor_session=str(tmp_path / "s"))
        f = tflow.tflow(resp=True)
        f.request.method = "POST"
        f.request.path = "/track?imei=1"
        f.request.headers["X-B"] = "2"
        f.request.headers["X-A"] = "1"
        f.request.headers["content-encoding"] = "gzip"
        f.request.raw_content = gzip.compress(b'{"k": "v"}')
        rec.response(f)
        rec.done()
    (r,) = _records(tmp_path / "s")
    assert isinstance(r, HttpRecord)
    assert r.id == f.id and r.method == "POST" and r.path == "/track?imei=1"
    names = [k for k, _ in r.request_headers]
    assert names.index("X-B") < names.index("X-A")
    assert r.request_body and r.request_body.encoding == "gzip"
    assert r.request_body.decoded_size == len(b'{"k": "v"}')
    assert r.status == 200 and r.response_body and r.error is None
    store = Session(tmp_path / "s").bodies
    assert gzip.decompress(store.get(r.request_body.sha256)) == b'{"k": "v"}'


def test_error_flow_keeps_the_request(tmp_path: Path) -> None:
    rec = Recorder()
    with taddons.context(rec) as tctx:
        tctx.configure(rec, auditor_session=str(tmp_path / "s"))
        f = tflow.tflow(err=True)
        f.request.content = b"evidence"
        rec.error(f)
    (r,) = _records(tmp_path / "s")
    assert r.error == "error" and r.status is None and r.request_body.size == 8


def test_body_cap_option(tmp_path: Path) -> None:
    rec = Recorder()
    with taddons.context(rec) as tctx:
        tctx.configure(rec, auditor_session=str(tmp_path / "s"), auditor_body_cap=10)
        f = tflow.tflow(resp=True)
        f.response.content = b"y" * 100
        rec.response(f)
    (r,) = _records(tmp_path / "s")
    assert r.response_body.truncated and r.response_body.size == 10
    assert r.response_body.wire_size == 100


def test_tls_failed_client_carries_sni_and_error(tmp_path: Path) -> None:
    rec = Recorder()
    with taddons.context(rec) as tctx:
        tctx.configure(rec, auditor_session=str(tmp_path / "s"))
        client = connection.Client(
            peername=("10.0.0.7", 40000), sockname=("127.0.0.1", 8080), sni="pinned.example"
        )
        ctx = context.Context(client, tctx.options)
        client.error = "The client does not trust the proxy's certificate"
        rec.tls_failed_client(tls.TlsData(client, ctx))
    (r,) = _records(tmp_path / "s")
    assert isinstance(r, TlsFailedRecord)
    assert (r.sni, r.client_ip, r.side) == ("pinned.example", "10.0.0.7", "client")
    assert "does not trust" in r.error


def test_websocket_and_dns(tmp_path: Path) -> None:
    rec = Recorder()
    with taddons.context(rec) as tctx:
        tctx.configure(rec, auditor_session=str(tmp_path / "s"))
        ws = tflow.twebsocketflow()
        rec.websocket_message(ws)
        d = tflow.tdnsflow(resp=True)
        rec.dns_response(d)
    ws_rec, dns_rec = _records(tmp_path / "s")
    assert isinstance(ws_rec, WebSocketMessageRecord) and ws_rec.flow_id == ws.id
    assert isinstance(dns_rec, DnsRecord) and dns_rec.qname == "dns.google"
    assert dns_rec.answers and dns_rec.answers[0].rtype == "A"
    assert json.dumps(dns_rec.answers[0].value)


def test_without_session_option_nothing_is_written(tmp_path: Path) -> None:
    rec = Recorder()
    with taddons.context(rec):
        rec.response(tflow.tflow(resp=True))
    assert rec.writer is None
