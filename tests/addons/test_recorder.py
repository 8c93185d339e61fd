"""The recorder addon, driven through mitmproxy's own test harness (taddons, tflow); for the
server certificates by a real mitmdump in front of the offline internet, and for closing on a
clean exit (and sealing late after a kill) by plain real mitmdump processes on loopback."""

import asyncio
import contextlib
import gzip
import hashlib
import json
import logging
import os
import resource
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from mitmproxy import certs, connection, exceptions, tls
from mitmproxy.proxy import context
from mitmproxy.test import taddons, tflow

from auditor import columns as C
from auditor.analysis.flowtable import build_flow_table
from auditor.evidence.close import seal_late
from auditor.evidence.verify import verify_session
from auditor.proxy.capture import (
    RECORDER_SCRIPT,
    Mitmdump,
    ProxyOptions,
    ca_cert_path,
    mitmdump_path,
)
from auditor.proxy.recorder import EXIT_DISK_FULL, RECORDER_SAYS, Recorder
from auditor.records import (
    DnsRecord,
    EventRecord,
    HttpRecord,
    TlsFailedRecord,
    TlsServerRecord,
    WebSocketMessageRecord,
)
from auditor.session import FLOWS, MANIFEST, Session, read_manifest
from tests.conftest import free_port
from tests.mitmlab import upstream_mitmdump, wait_listening
from tests.origin import answering, serving
from tests.proxied import proxied_request
from vhandset.offline.internet import OfflineInternet
from vhandset.offline.pki import CertificateAuthority

# what plain mitmdump loads in a checkout: a thin file over auditor.proxy.recorder
ADDON_FILE = Path(__file__).resolve().parents[2] / "addons" / "recorder.py"


def _records(path: Path) -> list:
    return [r for r in Session(path).records() if r.TYPE.value != "event"]


def test_the_addon_file_and_the_installed_script_load_the_same_recorder() -> None:
    """``mitmdump -s addons/recorder.py`` (a checkout) and ``auditor capture`` (the installed
    module's own file) both get a Recorder through mitmproxy's script loader."""
    from mitmproxy.addons.script import load_script

    import auditor.proxy

    assert RECORDER_SCRIPT.parent == Path(auditor.proxy.__file__).resolve().parent
    for path in (ADDON_FILE, RECORDER_SCRIPT):
        module = load_script(str(path))
        assert module is not None
        (addon,) = module.addons
        assert type(addon).__name__ == "Recorder" and hasattr(addon, "configure")


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
        assert f.response is not None
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


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Within the block a write beyond ``limit`` bytes of a file fails with EFBIG, as on a full
    disk (Python ignores SIGXFSZ, which would otherwise end the process)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def _shutdown_requested(tctx: taddons.context) -> bool:
    tctx.master.event_loop.run_until_complete(asyncio.sleep(0))
    return tctx.master.should_exit.is_set()


def test_a_body_the_disk_cannot_hold_stops_the_recording(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()
    with caplog.at_level(logging.ERROR), taddons.context(rec) as tctx:
        tctx.configure(rec, auditor_session=str(tmp_path / "s"))
        kept = tflow.tflow(resp=True)
        rec.response(kept)
        big = tflow.tflow(resp=True)
        assert big.response is not None
        big.response.content = os.urandom(200_000)  # incompressible: 200 kB on disk too
        with file_size_limit(100_000):
            rec.response(big)
        assert _shutdown_requested(tctx)
        rec.response(tflow.tflow(resp=True))  # nothing more is recorded
        assert rec.exit_status == EXIT_DISK_FULL
        rec.done()  # outside mitmdump: no exit status to set
    session = tmp_path / "s"
    recs = list(Session(session).records())
    assert [r.id for r in recs if isinstance(r, HttpRecord)] == [kept.id]
    (failed,) = [r for r in recs if isinstance(r, EventRecord) and r.kind == "recorder_failed"]
    assert failed.data == {"disk_full": True} and "File too large" in failed.message
    assert not list((session / "bodies").glob(".*")), "a partial body was left behind"
    said = [r.getMessage() for r in caplog.records if RECORDER_SAYS in r.getMessage()]
    assert said and "File too large" in said[0]


def test_a_record_the_disk_cannot_hold_is_not_left_half_written(tmp_path: Path) -> None:
    rec = Recorder()
    with taddons.context(rec) as tctx:
        tctx.configure(rec, auditor_session=str(tmp_path / "s"))
        rec.response(tflow.tflow(resp=True))
        flows = tmp_path / "s" / FLOWS
        before = flows.read_bytes()
        big = tflow.tflow(resp=True)
        big.request.path = "/" + "x" * 8000
        with file_size_limit(len(before) + 4000):
            rec.response(big)
        assert _shutdown_requested(tctx)
        assert rec.exit_status == EXIT_DISK_FULL
    after = flows.read_bytes()
    assert after.startswith(before) and after.endswith(b"\n")
    recs = list(Session(tmp_path / "s").records())
    assert big.id not in {getattr(r, "id", None) for r in recs}
    assert [r.kind for r in recs if isinstance(r, EventRecord)][-1] == "recorder_failed"


def test_a_path_that_is_not_utf8_is_recorded_percent_encoded(tmp_path: Path) -> None:
    """mitmproxy keeps such a path with surrogateescape; the line must still be written (found
    by fuzzing the flow-file importer, which shares the conversion)."""
    rec = Recorder()
    with taddons.context(rec) as tctx:
        tctx.configure(rec, auditor_session=str(tmp_path / "s"))
        f = tflow.tflow(resp=True)
        f.request.data.path = b"/\x80path?q=\xff"
        rec.response(f)
        rec.done()
    (r,) = _records(tmp_path / "s")
    assert isinstance(r, HttpRecord) and r.path == "/%80path?q=%FF"


# --------------------------------------------------------------- the server's certificates


def _chain(tmp_path: Path, host: str) -> tuple[list[certs.Cert], bytes]:
    """The offline CA's chain for ``host`` (leaf, CA) as mitmproxy holds a server's chain,
    and the leaf's DER."""
    pem, _key = CertificateAuthority(tmp_path / "ca").leaf(host)
    chain = [certs.Cert(c) for c in x509.load_pem_x509_certificates(pem.read_bytes())]
    return chain, chain[0].to_cryptography().public_bytes(Encoding.DER)


def test_the_upstream_chain_is_recorded_once_and_flows_name_it(tmp_path: Path) -> None:
    chain, leaf_der = _chain(tmp_path, "api.example.com")
    rec = Recorder()
    with taddons.context(rec) as tctx:
        tctx.configure(rec, auditor_session=str(tmp_path / "s"))
        f = tflow.tflow(resp=True)
        server = f.server_conn
        server.certificate_list = chain
        server.sni = "api.example.com"
        server.tls_version = "TLSv1.2"
        server.timestamp_tls_setup = 1_767_225_600.25
        server.cipher = "ECDHE-ECDSA-AES128-GCM-SHA256"
        rec.tls_established_server(
            tls.TlsData(server, context.Context(f.client_conn, tctx.options))
        )
        rec.response(f)
        again = tflow.tflow(resp=True)
        again.server_conn = server  # a second request on the same connection
        rec.response(again)
    tls_rec, first, second = _records(tmp_path / "s")
    assert isinstance(tls_rec, TlsServerRecord) and tls_rec.id == server.id
    assert first.server_conn_id == second.server_conn_id == server.id
    assert tls_rec.ts == "2026-01-01T00:00:00.250000Z" and tls_rec.chain_length == 2
    assert (tls_rec.sni, tls_rec.tls_version) == ("api.example.com", "TLSv1.2")
    leaf, ca = tls_rec.certificates
    assert leaf.sha256 == hashlib.sha256(leaf_der).hexdigest() == chain[0].fingerprint().hex()
    assert (leaf.subject_cn, leaf.subject_o, leaf.dns_names) == (
        "api.example.com",
        None,
        ("api.example.com",),
    )
    assert leaf.issuer_cn == ca.subject_cn == "auditor offline internet root CA"
    assert leaf.not_before == chain[0].notbefore.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    assert leaf.not_after == chain[0].notafter.strftime("%Y-%m-%dT%H:%M:%S.000000Z")


def test_a_hostile_chain_is_capped(tmp_path: Path) -> None:
    chain, _ = _chain(tmp_path, "x.example")
    rec = Recorder()
    with taddons.context(rec) as tctx:
        tctx.configure(rec, auditor_session=str(tmp_path / "s"))
        server = tflow.tserver_conn()
        server.certificate_list = chain * 30
        rec.tls_established_server(
            tls.TlsData(server, context.Context(tflow.tclient_conn(), tctx.options))
        )
    (r,) = _records(tmp_path / "s")
    assert r.chain_length == 60 and len(r.certificates) == 10


@pytest.mark.e2e
def test_a_real_mitmdump_records_what_the_offline_internet_presents(tmp_path: Path) -> None:
    """mitmdump in upstream mode in front of the offline internet, as the virtual handset uses
    it: the chain it records is the offline CA's, whose names carry no organisation."""
    with (
        OfflineInternet(ca_dir=tmp_path / "offline-ca") as net,
        upstream_mitmdump(tmp_path, net.url, net.ca_cert_path) as (opts, session),
    ):
        trusted = ssl.create_default_context(cafile=str(ca_cert_path(opts.confdir)))
        url = "https://globalapi.ad.xiaomi.com/api/v4/config?from=recorder-test"
        assert proxied_request(opts.port, "GET", url, context=trusted)[0] == 200
        pinned = ssl.create_default_context(cafile=str(net.ca_cert_path))
        with pytest.raises(ssl.SSLError):
            proxied_request(opts.port, "GET", "https://pinned.example.com/", context=pinned)
        recs: list = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            recs = list(Session(session).records())
            if any(isinstance(r, HttpRecord) for r in recs) and any(
                isinstance(r, TlsFailedRecord) for r in recs
            ):
                break
            time.sleep(0.1)
        leaf_pem = net.ca.leaf("globalapi.ad.xiaomi.com")[0].read_bytes()
    servers = {r.id: r for r in recs if isinstance(r, TlsServerRecord)}
    (flow,) = [r for r in recs if isinstance(r, HttpRecord)]
    conn = servers[flow.server_conn_id]
    assert conn.sni == "globalapi.ad.xiaomi.com" and conn.tls_version and conn.chain_length == 2
    leaf, root = conn.certificates
    expected = x509.load_pem_x509_certificate(leaf_pem)
    assert leaf.sha256 == expected.fingerprint(hashes.SHA256()).hex()
    assert (leaf.subject_o, leaf.subject_cn, leaf.subject_c) == (
        None,
        "globalapi.ad.xiaomi.com",
        None,
    )
    assert leaf.dns_names == ("globalapi.ad.xiaomi.com",)
    assert (leaf.issuer_o, leaf.issuer_cn) == (None, "auditor offline internet root CA")
    assert (root.subject_o, root.subject_cn) == (None, "auditor offline internet root CA")
    # the pinned client gave up after mitmproxy had connected upstream: the certificate is kept
    (failed,) = [r for r in recs if isinstance(r, TlsFailedRecord)]
    assert failed.sni == "pinned.example.com"
    pinned_conn = servers[failed.server_conn_id]  # type: ignore[index]
    assert pinned_conn.certificates[0].subject_cn == "pinned.example.com"
    # and the analyser's flow table reads them back for each flow
    df, _ = build_flow_table(Session(session))
    rows = df.set_index(C.FLOW_ID)
    assert rows.loc[flow.id, C.CERT_CN] == "globalapi.ad.xiaomi.com"
    assert rows.loc[failed.id, C.CERT_CN] == "pinned.example.com"
    for fid in (flow.id, failed.id):
        assert rows.loc[fid, C.CERT_ORG] is None and rows.loc[fid, C.CERT_SOURCE] == "proxy"
        assert rows.loc[fid, C.CERT_ISSUER] == "auditor offline internet root CA"


# ------------------------------------------------- closing the session (issue 15.9)


def test_the_recorder_closes_its_session_by_default(tmp_path: Path) -> None:
    rec = Recorder()
    with taddons.context(rec) as tctx:
        tctx.configure(rec, auditor_session=str(tmp_path / "s"))
        rec.response(tflow.tflow(resp=True))
        rec.done()
    m = read_manifest(tmp_path / "s")
    assert m["status"] == "complete" and m["summary"]["flows"] == 1
    assert verify_session(tmp_path / "s").ok


def test_a_recorder_stopped_by_a_full_disk_closes_its_session_incomplete(tmp_path: Path) -> None:
    rec = Recorder()
    with taddons.context(rec) as tctx:
        tctx.configure(rec, auditor_session=str(tmp_path / "s"))
        rec.response(tflow.tflow(resp=True))
        big = tflow.tflow(resp=True)
        big.request.path = "/" + "x" * 8000
        with file_size_limit((tmp_path / "s" / FLOWS).stat().st_size + 4000):
            rec.response(big)
        rec.done()
    m = read_manifest(tmp_path / "s")
    assert (m["status"], m["stopped_by"]) == ("incomplete", "disk_full")
    assert "File too large" in m["stop_detail"] and verify_session(tmp_path / "s").ok


def test_auditor_capture_and_audit_close_their_sessions_themselves(tmp_path: Path) -> None:
    argv = Mitmdump(tmp_path, ProxyOptions(confdir=tmp_path / "c")).argv()
    i = argv.index("auditor_close_on_done=false")
    assert argv[i - 1] == "--set" and argv.index(str(RECORDER_SCRIPT)) < i


# ------------------------------------------------------------------------- real mitmdump


@pytest.fixture(scope="module")
def web() -> Iterator[int]:
    with serving(answering(b"hello")) as server:
        yield int(server.server_address[1])


def _start(session: Path, confdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Plain ``mitmdump -s addons/recorder.py``: no option about closing."""
    port = free_port()
    argv = [
        mitmdump_path(),
        "--quiet",
        "--listen-host",
        "127.0.0.1",
        "--listen-port",
        str(port),
        "--set",
        f"confdir={confdir}",
        "-s",
        str(ADDON_FILE),
        "--set",
        f"auditor_session={session}",
    ]
    session.parent.mkdir(parents=True, exist_ok=True)
    log = open(session.parent / f"{session.name}.log", "wb")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    log.close()
    wait_listening(port, proc)
    return proc, port


def _record_one(proc: subprocess.Popen[bytes], port: int, web: int, session: Path) -> str:
    try:
        url = f"http://127.0.0.1:{web}/ping?n=1"
        assert proxied_request(port, "GET", url) == (200, b"hello")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            flows = [r for r in Session(session).records() if isinstance(r, HttpRecord)]
            if flows:
                return flows[0].id
            time.sleep(0.05)
        raise AssertionError("the flow was not recorded")
    except BaseException:
        proc.kill()
        raise


@pytest.mark.e2e
def test_plain_mitmdump_closes_on_a_clean_exit_and_seal_late_closes_a_killed_one(
    tmp_path: Path, web: int
) -> None:
    clean = tmp_path / "captures" / "clean"
    proc, port = _start(clean, tmp_path / "confdir")
    _record_one(proc, port, web, clean)
    proc.send_signal(signal.SIGTERM)  # a clean exit, as Ctrl-C
    assert proc.wait(30) == 0
    m = read_manifest(clean)
    assert m["status"] == "complete" and m["summary"]["flows"] == 1
    assert FLOWS in [a["path"] for a in m["artifacts"]]
    assert verify_session(clean).ok

    killed = tmp_path / "captures" / "killed"
    proc, port = _start(killed, tmp_path / "confdir")
    flow_id = _record_one(proc, port, web, killed)
    proc.send_signal(signal.SIGKILL)  # a crash: nothing closes it
    proc.wait(30)
    assert read_manifest(killed)["status"] == "open" and not verify_session(killed).ok
    res = seal_late(killed, by="test operator", reason="mitmdump was killed")
    assert res.manifest["status"] == "incomplete" and not res.stopped_cleanly
    assert verify_session(killed).ok
    assert json.loads((killed / MANIFEST).read_text())["sealed_late"]["by"] == "test operator"
    assert [r.id for r in Session(killed).http()] == [flow_id]
    assert res.manifest["summary"]["flows"] == 1
