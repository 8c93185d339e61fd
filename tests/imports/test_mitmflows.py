"""mitmproxy flow files: written by a real mitmdump on loopback, and by FlowWriter on tflows."""

from __future__ import annotations

import gzip
import http.client
import http.server
import io
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import http as mhttp
from mitmproxy import io as mio
from mitmproxy.exceptions import FlowReadException
from mitmproxy.test import tflow

from auditor.imports import ImportFileError, ImportFormat, ImportReport
from auditor.imports.mitmflows import check_flow_file, flow_records
from auditor.proxy import mitmconv
from auditor.records import (
    DnsRecord,
    EventRecord,
    HttpRecord,
    Record,
    WebSocketMessageRecord,
)
from auditor.session import Session, SessionWriter
from auditor.session.bodies import BodyStore
from auditor.timeutil import parse_iso
from tests.conftest import free_port
from tests.mitmlab import wait_listening
from tests.origin import QuietHandler

ROOT = Path(__file__).resolve().parents[2]
MITMDUMP = Path(sys.executable).parent / "mitmdump"
PLAIN = b'{"imei":"490154203237518","event":"boot"}'


def _read(data: bytes, store: BodyStore, name: str = "f.mitm") -> tuple[list[Record], ImportReport]:
    report = ImportReport(ImportFormat.MITMPROXY)
    records = list(flow_records(io.BytesIO(data), store, report, name, len(data)))
    return records, report


@pytest.fixture
def store(tmp_path: Path) -> BodyStore:
    return BodyStore(tmp_path / "bodies")


# ------------------------------------------------------------------------- a real mitmdump


class _Origin(QuietHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b"hello from the origin\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(n)
        body = gzip.compress(b'{"code":0,"upload_interval":300}', mtime=0)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@dataclass(frozen=True)
class LiveCapture:
    flow_file: Path
    session: Path  # what the live recorder wrote, in the same mitmdump


def _via_proxy(
    proxy_port: int, method: str, url: str, body: bytes | None = None, **headers: str
) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10)
    try:
        conn.request(
            method, url, body=body, headers={k.replace("_", "-"): v for k, v in headers.items()}
        )
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCapture]:
    """One real mitmdump on loopback, with both ``-w`` and auditor's recorder, so the flow
    file and the live records come from the very same flows."""
    tmp = tmp_path_factory.mktemp("mitmdump")
    origin = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    writer = SessionWriter.create(tmp / "captures")
    writer.detach()
    flow_file = tmp / "flows.mitm"
    port = free_port()
    proc = subprocess.Popen(
        [
            str(MITMDUMP),
            "-q",
            "--listen-host",
            "127.0.0.1",
            "-p",
            str(port),
            "--set",
            f"confdir={tmp / 'confdir'}",
            "-w",
            str(flow_file),
            "-s",
            str(ROOT / "addons" / "recorder.py"),
            "--set",
            f"auditor_session={writer.path}",
        ],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_listening(port, proc, timeout=20.0)
        o = origin.server_address[1]
        assert _via_proxy(port, "GET", f"http://127.0.0.1:{o}/config?a=1&b=x%20y") == 200
        gz = gzip.compress(PLAIN, mtime=0)
        assert (
            _via_proxy(
                port,
                "POST",
                f"http://127.0.0.1:{o}/track",
                gz,
                Content_Type="application/json",
                Content_Encoding="gzip",
                X_Device="M2007J3SG",
            )
            == 200
        )
        assert _via_proxy(port, "GET", f"http://127.0.0.1:{free_port()}/refused") == 502
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        origin.shutdown()
        origin.server_close()
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    yield LiveCapture(flow_file, writer.path)


def test_real_mitmdump_flows_give_the_live_recorders_records(
    live: LiveCapture, store: BodyStore
) -> None:
    recorded = [r for r in Session(live.session).records() if isinstance(r, HttpRecord)]
    assert len(recorded) == 3
    imported, report = _read(live.flow_file.read_bytes(), store)
    assert report.counts == {"flows": 3, "http": 3} and not report.warnings
    by_id = {r.id: r for r in imported if isinstance(r, HttpRecord)}
    for rec in recorded:
        assert by_id[rec.id] == rec  # ids, urls, headers, times, bodies: all equal
    post = next(r for r in imported if isinstance(r, HttpRecord) and r.method == "POST")
    assert post.request_body and post.request_body.encoding == "gzip"
    assert gzip.decompress(store.get(post.request_body.sha256)) == PLAIN
    assert ("X-Device", "M2007J3SG") in post.request_headers
    live_store = Session(live.session).bodies
    assert store.get(post.response_body.sha256) == live_store.get(post.response_body.sha256)  # type: ignore[union-attr]
    refused = next(r for r in imported if isinstance(r, HttpRecord) and r.path == "/refused")
    assert refused.error and refused.status is None


def test_truncated_flow_file_keeps_what_was_read(live: LiveCapture, store: BodyStore) -> None:
    data = live.flow_file.read_bytes()
    cut = data[: len(data) - 40]
    records, report = _read(cut, store, "cut.mitm")
    assert len(records) == 2 and report.counts["flows"] == 2
    (warning,) = report.warnings
    whole, _ = _read(data, store)
    stop = len(data) - len(_last_flow_bytes(data))
    assert (
        f"cut.mitm: the flow file ends mid-record at byte {stop} of {len(cut)}, after 2 flows"
        in (warning)
    )
    assert report.meta["stopped_at_byte"] == stop
    assert report.meta["stopped"]["why"] == "ends-mid-record"
    assert records == whole[:2]


def test_corrupt_middle_flow_keeps_the_flows_before_it(live: LiveCapture, store: BodyStore) -> None:
    data = bytearray(live.flow_file.read_bytes())
    second_start = _flow_ends(bytes(data))[0]
    data[second_start : second_start + 3] = b"x:y"
    records, report = _read(bytes(data), store)
    assert len(records) == 1 and report.meta["stopped_at_byte"] == second_start
    assert "after 1 flows" in report.warnings[0]
    assert "reading stopped at byte" in report.warnings[0]  # damaged, not cut short
    assert report.meta["stopped"]["why"] == "unreadable-record"


def _flow_ends(data: bytes) -> list[int]:
    reader = mio.FlowReader(io.BytesIO(data))
    ends = []
    for _ in reader.stream():
        ends.append(reader.fo.tell())
    return ends


def _last_flow_bytes(data: bytes) -> bytes:
    ends = _flow_ends(data)
    return data[ends[-2] :]


# --------------------------------------------------------------------- FlowWriter and tflow


def _flow_file(*flows: object) -> bytes:
    buf = io.BytesIO()
    w = mio.FlowWriter(buf)
    for f in flows:
        w.add(f)  # type: ignore[arg-type]
    return buf.getvalue()


def test_every_kind_of_flow(store: BodyStore, tmp_path: Path) -> None:
    http_flow = tflow.tflow(resp=True)
    http_flow.request.content = b"telemetry"
    err_flow = tflow.tflow(err=True)
    ws = tflow.twebsocketflow()
    dns_flow = tflow.tdnsflow(resp=True)
    tcp_flow = tflow.ttcpflow()
    udp_flow = tflow.tudpflow(err=True)
    data = _flow_file(http_flow, err_flow, ws, dns_flow, tcp_flow, udp_flow)
    records, report = _read(data, store)

    ref = BodyStore(tmp_path / "ref")
    expected_http = [mitmconv.http_record(f, ref) for f in (http_flow, err_flow, ws)]
    assert [r for r in records if isinstance(r, HttpRecord)] == expected_http
    wsm = [r for r in records if isinstance(r, WebSocketMessageRecord)]
    assert wsm == [
        mitmconv.websocket_record(ws, m, n, ref)
        for n, m in enumerate(ws.websocket.messages, 1)  # type: ignore[union-attr]
    ]
    assert [r for r in records if isinstance(r, DnsRecord)] == [mitmconv.dns_record(dns_flow)]
    tcp_ev, udp_ev = [r for r in records if isinstance(r, EventRecord)]
    assert tcp_ev.kind == "tcp_flow" and udp_ev.kind == "udp_flow"
    assert tcp_ev.data["flow_id"] == tcp_flow.id and tcp_ev.data["messages_from_client"] == 1
    assert store.get(tcp_ev.data["from_client"]["sha256"]) == b"hello"
    assert store.get(tcp_ev.data["from_server"]["sha256"]) == b"it's me"
    assert udp_ev.data["error"] == "error" and udp_ev.data["protocol"] == "udp"
    assert report.counts == {
        "flows": 6,
        "http": 3,
        "websocket_message": len(wsm),
        "dns": 1,
        "event": 2,
    }


def test_flow_in_flight_when_mitmdump_stopped_is_kept_and_noted(store: BodyStore) -> None:
    f = tflow.tflow()  # a request, no response, no error
    records, report = _read(_flow_file(f), store)
    (rec,) = records
    assert isinstance(rec, HttpRecord) and rec.status is None and rec.error is None
    assert report.notes == {"http_flows_without_response": 1}


@pytest.mark.parametrize(
    "data,message",
    [
        (b'{"log": {"entries": []}}', "a JSON file, not a mitmproxy flow file"),
        (b"\xef\xbb\xbf{}", "a JSON file"),
        (b"12:not a flow}", "not a readable mitmproxy flow file"),
        (b"5:hello,", "not a readable mitmproxy flow file"),
    ],
)
def test_unreadable_from_the_start_is_an_error(store: BodyStore, data: bytes, message: str) -> None:
    with pytest.raises(ImportFileError, match=f"f.mitm: {message}"):
        _read(data, store)
    with pytest.raises(ImportFileError, match=message):
        check_flow_file(io.BytesIO(data), "f.mitm")


def test_check_flow_file_accepts_a_sound_file() -> None:
    check_flow_file(io.BytesIO(_flow_file(tflow.tflow(resp=True))), "f.mitm")


# ------------------------------------------------ real flow files of every format version

MITM_DATA = ROOT / "tests" / "data" / "mitm"
FLOW_FILES = sorted(p.name for p in MITM_DATA.glob("*.mitm"))


def _is_made_up(f: mhttp.HTTPFlow) -> bool:
    # mitmproxy's compat (convert_11_12) stands in "GET http://unknown/" at time 0 for a
    # WebSocket whose handshake the old file does not hold
    return (
        "duplicated" in f.metadata and f.request.host == "unknown" and not f.request.timestamp_start
    )


def _reference(path: Path) -> tuple[dict[str, str], list[tuple[Any, ...]]]:
    """What mitmproxy's own reader yields: HTTP flows (id -> host) and WebSocket messages."""
    with open(path, "rb") as fh:
        flows = list(mio.FlowReader(fh).stream())
    hosts: dict[str, str] = {}
    messages: list[tuple[Any, ...]] = []
    for f in flows:
        assert isinstance(f, mhttp.HTTPFlow)
        made_up = _is_made_up(f)
        if not made_up:
            hosts.setdefault(f.id, f.request.pretty_host)
        for m in f.websocket.messages if f.websocket else ():
            host = f.server_conn.address[0] if made_up else f.request.pretty_host
            content = m.content.encode() if isinstance(m.content, str) else m.content
            messages.append((f.id, host, m.from_client, int(m.type) == 1, content, m.timestamp))
    return hosts, messages


@pytest.mark.parametrize("name", FLOW_FILES)
def test_every_flow_file_version_imports_what_mitmproxy_reads(name: str, tmp_path: Path) -> None:
    from auditor.imports.session import import_files

    path = MITM_DATA / name
    try:
        hosts, messages = _reference(path)
    except FlowReadException:
        with pytest.raises(ImportFileError, match="cannot read files with flow format version"):
            import_files([path], tmp_path)
        return
    res = import_files([path], tmp_path)
    assert res.status == "complete" and res.warnings == []
    sess = Session(res.session)
    records = list(sess.records())
    got_hosts = {r.id: r.host for r in records if isinstance(r, HttpRecord)}
    assert got_hosts == hosts
    got = [
        (
            r.flow_id,
            r.host,
            r.from_client,
            r.is_text,
            sess.bodies.get(r.body.sha256) if r.body else b"",
            parse_iso(r.ts),
        )
        for r in records
        if isinstance(r, WebSocketMessageRecord)
    ]
    assert [g[:5] for g in got] == [m[:5] for m in messages]
    assert [g[5] for g in got] == pytest.approx([m[5] for m in messages], abs=1e-6)
    (f,) = res.files
    assert f["counts"].get("websocket_message", 0) == len(messages)
    assert f["skipped"] == 0


def test_old_websocket_messages_text_and_binary_both_ways(tmp_path: Path) -> None:
    """mitmproxy 6's WebSocket flows: text stored as a string, binary as bytes."""
    from auditor.imports.session import import_files

    res = import_files([MITM_DATA / "dumpfile-7-websocket-binary.mitm"], tmp_path)
    sess = Session(res.session)
    ws = [r for r in sess.records() if isinstance(r, WebSocketMessageRecord)]
    kinds = {(r.is_text, r.from_client) for r in ws}
    assert kinds == {(False, True), (True, False), (True, True)}
    binary = next(r for r in ws if not r.is_text)
    assert binary.body is not None
    assert sess.bodies.get(binary.body.sha256) == b"\x89PNG\r\n\x1a\n\x00\xff\xfe\x80\xc0\xaf" * 2
    # the WebSocket whose handshake the file lacks is named by the server it was connected to
    assert {r.url for r in ws} >= {"ws://echo.websocket.org/"}
    assert all(not r.url.startswith("http://unknown") for r in ws)
    notes = res.files[0]["notes"]
    assert notes == {
        "websocket_flows_joined_to_their_handshake": 2,
        "websocket_flows_without_their_handshake": 1,
    }


def test_websocket_messages_with_markup_and_escapes_are_kept_byte_for_byte(
    store: BodyStore,
) -> None:
    from mitmproxy.websocket import WebSocketMessage

    hostile = [
        (1, True, "<script>alert('x')</script>\x1b[2J&amp;\u202e{{7*7}}".encode()),
        (2, False, b"\x00<img src=x onerror=alert(1)>\xff"),
        (1, False, b"\\u0000 \\\" ']]> -->"),
    ]
    f = tflow.twebsocketflow()
    f.websocket.messages = [  # type: ignore[union-attr]
        WebSocketMessage(op, fc, content, timestamp=1_700_000_000 + i)
        for i, (op, fc, content) in enumerate(hostile)
    ]
    records, report = _read(_flow_file(f), store)
    ws = [r for r in records if isinstance(r, WebSocketMessageRecord)]
    assert [(r.is_text, r.from_client) for r in ws] == [(op == 1, fc) for op, fc, _ in hostile]
    assert [store.get(r.body.sha256) for r in ws if r.body] == [c for _, _, c in hostile]
    assert report.skipped_total == 0


def test_a_string_message_that_utf8_never_gave_is_kept_not_skipped() -> None:
    # a forged file: a lone surrogate in a text message (surrogateescape gives the byte back)
    assert mitmconv.message_bytes("a\udcffb") == b"a\xffb"
    assert mitmconv.message_bytes("\ud800") == b"?"
