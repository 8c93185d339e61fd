"""The offline internet over real sockets on 127.0.0.1, alone and behind a real mitmdump."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from vhandset.offline.internet import Exchange, Limits, Mode, OfflineInternet
from vhandset.offline.pki import CertificateAuthority

LIMITS = Limits(
    max_head=16 * 1024,
    max_body=256 * 1024,
    idle_timeout=1.0,
    request_timeout=2.0,
    handshake_timeout=2.0,
)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("offline-ca"))


@pytest.fixture(scope="module")
def net(ca: CertificateAuthority) -> Iterator[OfflineInternet]:
    with OfflineInternet(ca=ca, limits=LIMITS) as n:
        yield n


@pytest.fixture(scope="module")
def trust(net: OfflineInternet) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(net.ca_cert_path))
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT  # as strict as Python 3.13's default
    return ctx


def _local_port(conn: http.client.HTTPConnection) -> int:
    assert conn.sock is not None
    return int(conn.sock.getsockname()[1])


def _mine(net: OfflineInternet, port: int, n: int = 1) -> list[Exchange]:
    """The exchanges of the client on local ``port``, waiting until there are ``n``."""
    client = f"127.0.0.1:{port}"
    got = net.wait_for(lambda rs: sum(r.client == client for r in rs) >= n, timeout=5)
    return [r for r in got if r.client == client]


def _raw(net: OfflineInternet) -> socket.socket:
    return socket.create_connection(("127.0.0.1", net.port), timeout=5)


def _read_response(sock: socket.socket, method: str = "GET") -> http.client.HTTPResponse:
    resp = http.client.HTTPResponse(sock, method=method)
    resp.begin()
    return resp


def _status_or_reset(sock: socket.socket) -> int | None:
    try:
        resp = _read_response(sock)
        resp.read()
        return resp.status
    except (ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError):
        return None


def _canary_ok(net: OfflineInternet) -> None:
    """The server still answers a normal request."""
    conn = http.client.HTTPConnection("127.0.0.1", net.port, timeout=5)
    try:
        conn.request("GET", "/auditor-canary/after", headers={"Host": "auditor-canary.invalid"})
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"canary ok")
    finally:
        conn.close()


# --- the ways in -------------------------------------------------------------------------


def test_connect_then_tls_with_the_sni_leaf(net: OfflineInternet, trust: ssl.SSLContext) -> None:
    conn = http.client.HTTPSConnection("127.0.0.1", net.port, context=trust, timeout=5)
    conn.set_tunnel("globalapi.ad.xiaomi.com", 443)
    try:
        conn.request("GET", "/api/v4/config", headers={"Accept-Encoding": "gzip"})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200 and resp.getheader("Content-Encoding") == "gzip"
        words = json.loads(gzip.decompress(body))["data"]["config"]["blacklist"]
        assert len(words) == 449 and "Free Tibet" in words
        assert isinstance(conn.sock, ssl.SSLSocket)
        cert = conn.sock.getpeercert() or {}
        assert ("DNS", "globalapi.ad.xiaomi.com") in cert["subjectAltName"]
        assert conn.sock.selected_alpn_protocol() in (None, "http/1.1")
        (ex,) = _mine(net, _local_port(conn))
    finally:
        conn.close()
    assert ex.mode is Mode.CONNECT and ex.tls and ex.sni == "globalapi.ad.xiaomi.com"
    assert (ex.host, ex.port, ex.method, ex.path, ex.status) == (
        "globalapi.ad.xiaomi.com", 443, "GET", "/api/v4/config", 200
    )  # fmt: skip
    assert ex.response_size == len(body) and ex.service == "xiaomi-ad-blacklist-config"
    assert ex.time.endswith("Z")


def test_connect_without_sni_gets_the_connect_host(net: OfflineInternet) -> None:
    ctx = ssl.create_default_context(cafile=str(net.ca_cert_path))
    ctx.check_hostname = False  # no server_hostname means no SNI; the chain is still checked
    with _raw(net) as sock:
        port = sock.getsockname()[1]
        sock.sendall(b"CONNECT android.clients.google.com:443 HTTP/1.1\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")
        with ctx.wrap_socket(sock) as tls:
            cert = tls.getpeercert() or {}
            assert ("DNS", "android.clients.google.com") in cert["subjectAltName"]
            tls.sendall(b"POST /checkin HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
            resp = _read_response(tls)
            assert resp.status == 200
            assert resp.getheader("Content-Type") == "application/x-protobuffer"
            assert resp.read()[:2] == b"\x08\x01"
            (ex,) = _mine(net, port)
    assert ex.sni is None and ex.host == "android.clients.google.com" and ex.request_size == 3


def test_plain_http_inside_a_connect_tunnel(net: OfflineInternet) -> None:
    with _raw(net) as sock:
        sock.sendall(b"CONNECT tracking.miui.com:80 HTTP/1.1\r\nHost: tracking.miui.com:80\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")
        sock.sendall(
            b"POST /track HTTP/1.1\r\nHost: tracking.miui.com\r\nContent-Length: 2\r\n\r\n{}"
        )
        resp = _read_response(sock)
        assert (resp.status, resp.read()) == (200, b'{"code":0}')
        (ex,) = _mine(net, sock.getsockname()[1])
    assert ex.mode is Mode.CONNECT and not ex.tls and ex.port == 80


def test_absolute_form_plain_http(net: OfflineInternet) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", net.port, timeout=5)
    try:
        conn.request("GET", "http://connectivitycheck.gstatic.com/generate_204")
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (204, b"")
        conn.request("POST", "http://data.mistat.intl.xiaomi.com:8080/mistats/v3", body=b"x" * 10)
        resp = conn.getresponse()
        assert json.loads(resp.read()) == {"code": 0}
        first, second = _mine(net, _local_port(conn), 2)
    finally:
        conn.close()
    assert first.mode is Mode.PROXY and not first.tls and first.status == 204
    assert (second.host, second.port, second.request_size) == (
        "data.mistat.intl.xiaomi.com", 8080, 10
    )  # fmt: skip


def test_direct_http_by_host_header(net: OfflineInternet) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", net.port, timeout=5)
    try:
        conn.request("GET", "/auditor-canary/t0k3n?x=1", headers={"Host": "auditor-canary.invalid"})
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"canary ok")
        (ex,) = _mine(net, _local_port(conn))
    finally:
        conn.close()
    assert ex.mode is Mode.DIRECT and ex.path == "/auditor-canary/t0k3n?x=1"


def test_direct_tls_by_client_hello(net: OfflineInternet, trust: ssl.SSLContext) -> None:
    sock = _raw(net)
    port = sock.getsockname()[1]
    with trust.wrap_socket(sock, server_hostname="app-measurement.com") as tls:
        tls.sendall(
            b"POST /a HTTP/1.1\r\nHost: app-measurement.com\r\nContent-Length: 4\r\n\r\nabcd"
        )
        resp = _read_response(tls)
        assert resp.status == 204 and resp.read() == b""
        (ex,) = _mine(net, port)
    assert ex.mode is Mode.DIRECT and ex.tls and ex.sni == "app-measurement.com"


def test_chunked_upload(net: OfflineInternet, trust: ssl.SSLContext) -> None:
    parts = [b"a" * 1000, b"b" * 5000, b"c"]
    conn = http.client.HTTPSConnection("127.0.0.1", net.port, context=trust, timeout=5)
    conn.set_tunnel("metrics2.data.hicloud.com", 443)
    try:
        conn.request("POST", "/upload", body=iter(parts), encode_chunked=True)
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read()) == {"code": 0}
        (ex,) = _mine(net, _local_port(conn))
    finally:
        conn.close()
    assert ex.request_size == 6001 and ex.service == "huawei-hianalytics"


def test_chunked_with_extensions_and_trailers(net: OfflineInternet) -> None:
    with _raw(net) as sock:
        sock.sendall(
            b"POST /x HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;ext=1\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n"
        )
        resp = _read_response(sock)
        assert resp.status == 204
        (ex,) = _mine(net, sock.getsockname()[1])
    assert ex.request_size == 3


def test_keep_alive_serves_several_requests(net: OfflineInternet, trust: ssl.SSLContext) -> None:
    conn = http.client.HTTPSConnection("127.0.0.1", net.port, context=trust, timeout=5)
    conn.set_tunnel("update.miui.com", 443)
    try:
        for i in range(5):
            conn.request("POST", f"/updates/v1/miotastatus?n={i}", body=b"%d" % i)
            resp = conn.getresponse()
            assert resp.status == 200 and resp.getheader("Connection") == "keep-alive"
            resp.read()
        conn.request("HEAD", "/x")
        head = conn.getresponse()
        assert head.status == 200 and int(head.getheader("Content-Length") or 0) > 0
        assert head.read() == b""
        exs = _mine(net, _local_port(conn), 6)
    finally:
        conn.close()
    assert [e.path for e in exs[:5]] == [f"/updates/v1/miotastatus?n={i}" for i in range(5)]
    assert exs[5].method == "HEAD" and exs[5].response_size == 0


def test_pipelined_requests(net: OfflineInternet) -> None:
    with _raw(net) as sock:
        sock.sendall(
            b"GET /generate_204 HTTP/1.1\r\nHost: connectivitycheck.gstatic.com\r\n\r\n"
            b"POST /t HTTP/1.1\r\nHost: tracking.miui.com\r\nContent-Length: 1\r\n\r\nx"
            b"GET /c HTTP/1.1\r\nHost: auditor-canary.invalid\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := sock.recv(65536):  # the last request asked to close
            data += chunk
    assert re.findall(rb"HTTP/1.1 (\d{3}) ", data) == [b"204", b"200", b"200"]
    assert b'\r\n\r\n{"code":0}HTTP/1.1 200' in data and data.endswith(b"\r\n\r\ncanary ok")


def test_the_request_log_is_bounded(ca: CertificateAuthority) -> None:
    with OfflineInternet(ca=ca, log_size=3) as small:
        conn = http.client.HTTPConnection("127.0.0.1", small.port, timeout=5)
        for i in range(5):
            conn.request("GET", f"http://a.example/{i}")
            conn.getresponse().read()
        conn.close()
        assert [e.path for e in small.requests()] == ["/2", "/3", "/4"]


def test_expect_100_continue(net: OfflineInternet) -> None:
    with _raw(net) as sock:
        sock.sendall(b"PUT /x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 3\r\n")
        sock.sendall(b"Expect: 100-continue\r\n\r\n")
        assert sock.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"abc")
        assert _read_response(sock, "PUT").status == 204


def test_connection_close_and_http10(net: OfflineInternet) -> None:
    with _raw(net) as sock:
        sock.sendall(b"GET /x HTTP/1.0\r\nHost: a.example\r\n\r\n")
        resp = _read_response(sock)
        assert resp.getheader("Connection") == "close" and resp.read()
        assert sock.recv(10) == b""


# --- hostile input -----------------------------------------------------------------------


def test_garbage_gets_400_and_the_server_goes_on(net: OfflineInternet) -> None:
    for junk in (b"\x00\xff\x13garbage\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n"):
        with _raw(net) as sock:
            sock.sendall(junk)
            assert _status_or_reset(sock) in (400, 505)
    _canary_ok(net)


def test_garbage_that_looks_like_tls(net: OfflineInternet) -> None:
    with _raw(net) as sock:
        sock.sendall(b"\x16\x03\x01\x00\x05hello" + os.urandom(64))
        sock.settimeout(5)
        try:
            while sock.recv(4096):
                pass
        except ConnectionResetError:
            pass
        port = sock.getsockname()[1]
    deadline = time.monotonic() + 5
    while not any(f.client.endswith(f":{port}") for f in net.failures()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (fail,) = [f for f in net.failures() if f.client.endswith(f":{port}")]
    assert fail.stage == "tls"
    _canary_ok(net)


def test_half_open_and_slowloris_connections_are_timed_out(net: OfflineInternet) -> None:
    silent = _raw(net)  # connects and never sends a byte
    partial = _raw(net)
    partial.sendall(b"GET / HTTP/1.1\r\nHost: a.exa")  # and then nothing
    drip = _raw(net)
    drip.sendall(b"GET / HTTP/1.1\r\n")
    try:
        _canary_ok(net)  # served while the three hang
        started = time.monotonic()
        # One byte every 0.3 s never trips the 1 s idle timeout; the 2 s request cap does.
        while time.monotonic() - started < 6:
            try:
                drip.sendall(b"X")
            except OSError:
                break
            time.sleep(0.3)
        for sock in (silent, partial, drip):
            sock.settimeout(6)
        assert _status_or_reset(partial) == 408
        assert _status_or_reset(drip) in (408, None)
        assert time.monotonic() - started < 6
        assert silent.recv(10) == b""  # closed quietly
    finally:
        for sock in (silent, partial, drip):
            sock.close()
    _canary_ok(net)


def test_oversize_head_and_body(net: OfflineInternet) -> None:
    with _raw(net) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a.example\r\nX-Big: " + b"x" * 40_000 + b"\r\n\r\n")
        assert _status_or_reset(sock) in (431, None)
    with _raw(net) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a.example\r\n" + b"X-A: 1\r\n" * 150 + b"\r\n")
        assert _status_or_reset(sock) == 431
    with _raw(net) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 999999999\r\n\r\n")
        assert _status_or_reset(sock) == 413
    with _raw(net) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n")
        sock.sendall(b"40001\r\n" + b"y" * 0x40001 + b"\r\n")  # one byte over the cap
        assert _status_or_reset(sock) in (413, None)
    with _raw(net) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        assert _status_or_reset(sock) == 400  # the classic smuggling shape
    with _raw(net) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
        )
        assert _status_or_reset(sock) == 400
    stages = {f.error.split()[0] for f in net.failures() if f.stage == "request"}
    assert {"431", "413", "400"} <= stages
    _canary_ok(net)


def test_bad_connect_targets(net: OfflineInternet) -> None:
    for target in (b"no-port", b"host:99999", b"[::1", b"bad host:443"):
        with _raw(net) as sock:
            sock.sendall(b"CONNECT " + target + b" HTTP/1.1\r\n\r\n")
            assert _status_or_reset(sock) == 400
    _canary_ok(net)


def test_a_client_that_rejects_the_certificate(net: OfflineInternet) -> None:
    untrusting = ssl.create_default_context()  # the system store only: not the offline CA
    with _raw(net) as sock:
        port = sock.getsockname()[1]
        sock.sendall(b"CONNECT pinned.example.com:443 HTTP/1.1\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")
        with pytest.raises(ssl.SSLCertVerificationError):
            untrusting.wrap_socket(sock, server_hostname="pinned.example.com")
    deadline = time.monotonic() + 5
    while not any(f.client.endswith(f":{port}") for f in net.failures()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (fail,) = [f for f in net.failures() if f.client.endswith(f":{port}")]
    assert fail.stage == "tls" and fail.sni == "pinned.example.com"
    assert "UNKNOWN_CA" in fail.error.upper() or "CERTIFICATE" in fail.error.upper()
    _canary_ok(net)


def test_connection_limit(ca: CertificateAuthority) -> None:
    with OfflineInternet(ca=ca, limits=Limits(max_connections=2, idle_timeout=3.0)) as small:
        held = [_raw(small), _raw(small)]
        try:
            time.sleep(0.3)
            with _raw(small) as third:
                third.settimeout(3)
                assert third.recv(10) == b""  # closed at once
            assert any(f.stage == "limit" for f in small.failures())
        finally:
            for s in held:
                s.close()
        deadline = time.monotonic() + 5  # until the server has seen the two close
        while True:
            try:
                _canary_ok(small)
                break
            except (ConnectionError, http.client.HTTPException):
                assert time.monotonic() < deadline
                time.sleep(0.1)


def test_stop_closes_connections_and_the_listener(ca: CertificateAuthority) -> None:
    net = OfflineInternet(ca=ca, limits=Limits(idle_timeout=30.0)).start()
    port = net.port
    idle = socket.create_connection(("127.0.0.1", port), timeout=5)
    idle.sendall(b"GET /x HTTP/1.1\r\nHost: a.example\r\n\r\n")
    assert _read_response(idle).status == 200  # a keep-alive connection, now idle
    started = time.monotonic()
    net.stop(timeout=3.0)
    assert time.monotonic() - started < 3.0
    try:
        assert idle.recv(10) == b""
    finally:
        idle.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    with pytest.raises(RuntimeError):
        net.start()


def test_its_own_ca_in_a_temporary_directory() -> None:
    with OfflineInternet() as net:
        ca_file = net.ca_cert_path
        assert ca_file.exists() and net.url == f"http://127.0.0.1:{net.port}"
        ctx = ssl.create_default_context(cafile=str(ca_file))
        conn = http.client.HTTPSConnection("127.0.0.1", net.port, context=ctx, timeout=5)
        conn.set_tunnel("auditor-canary.invalid", 443)
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"canary ok"
        conn.close()
    assert not ca_file.exists()


# --- behind a real mitmdump --------------------------------------------------------------


def _mitmdump() -> str:
    beside = Path(sys.executable).parent / "mitmdump"
    if not beside.exists():
        pytest.skip("mitmdump is not installed beside this interpreter")
    return str(beside)


@pytest.fixture
def mitmdump(net: OfflineInternet, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    confdir = tmp_path / "confdir"
    proc = subprocess.Popen(
        [
            _mitmdump(),
            "--mode", f"upstream:{net.url}",
            "--set", f"ssl_verify_upstream_trusted_ca={net.ca_cert_path}",
            "--listen-host", "127.0.0.1",
            "-p", str(port),
            "--set", f"confdir={confdir}",
            "-q",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                if (confdir / "mitmproxy-ca-cert.pem").exists():
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mitmdump never listened"
            time.sleep(0.1)
        yield port, confdir / "mitmproxy-ca-cert.pem"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if proc.stderr:
            proc.stderr.close()


@pytest.mark.e2e
def test_through_mitmdump_in_upstream_mode(
    net: OfflineInternet, mitmdump: tuple[int, Path]
) -> None:
    port, mitm_ca = mitmdump
    ctx = ssl.create_default_context(cafile=str(mitm_ca))
    before = len(net.requests())

    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    conn.set_tunnel("globalapi.ad.xiaomi.com", 443)
    try:
        conn.request("GET", "/api/v4/config?from=mitmdump")
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, body
        assert resp.getheader("X-Auditor-Service") == "xiaomi-ad-blacklist-config"
        assert len(json.loads(body)["data"]["config"]["blacklist"]) == 449
        assert isinstance(conn.sock, ssl.SSLSocket)
        issuer = str((conn.sock.getpeercert() or {}).get("issuer"))
        assert "mitmproxy" in issuer and "offline" not in issuer  # mitmdump's, not ours
    finally:
        conn.close()

    plain = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        plain.request("POST", "http://tracking.miui.com/track/v4", body=b'{"e":"app_open"}')
        resp = plain.getresponse()
        assert (resp.status, resp.read()) == (200, b'{"code":0}')
    finally:
        plain.close()

    seen = net.wait_for(lambda rs: len(rs) >= before + 2, timeout=10)[before:]
    https = [e for e in seen if e.host == "globalapi.ad.xiaomi.com"]
    http_ = [e for e in seen if e.host == "tracking.miui.com"]
    assert https and https[0].mode is Mode.CONNECT and https[0].tls
    assert https[0].sni == "globalapi.ad.xiaomi.com" and https[0].path.endswith("from=mitmdump")
    assert http_ and http_[0].mode is Mode.PROXY and not http_[0].tls
    assert http_[0].request_size == len(b'{"e":"app_open"}')
