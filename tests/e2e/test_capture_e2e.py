"""A real mitmdump with the recorder, real clients and origin servers, all on loopback."""

from __future__ import annotations

import gzip
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from auditor.evidence.verify import verify_session
from auditor.proxy.capture import Mitmdump, ProxyOptions, ca_cert_path
from auditor.records import HttpRecord, TlsFailedRecord
from auditor.session import FLOWS, Session, SessionWriter, close_session
from tests.conftest import free_port
from tests.proxied import proxied_request
from vhandset.offline.origin import OriginServer
from vhandset.offline.pki import CertificateAuthority

pytestmark = pytest.mark.e2e

CAP = 64 * 1024


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("offline-ca"))


@pytest.fixture(scope="module")
def origins(pki: CertificateAuthority) -> Iterator[tuple[OriginServer, OriginServer]]:
    with OriginServer() as plain, OriginServer(ca=pki) as tls:
        yield plain, tls


def _start(tmp_path: Path, pki: CertificateAuthority, **extra: str) -> tuple[Mitmdump, Path]:
    w = SessionWriter.create(tmp_path / "captures", body_cap=CAP)
    w.detach()
    opts = ProxyOptions(
        port=free_port(),
        confdir=tmp_path / "confdir",
        body_cap=CAP,
        extra={"ssl_verify_upstream_trusted_ca": str(pki.cert_path), **extra},
    )
    m = Mitmdump(w.path, opts)
    m.start()
    return m, w.path


def _wait_for(path: Path, predicate, timeout: float = 10.0) -> list:
    deadline = time.monotonic() + timeout
    recs: list = []
    while time.monotonic() < deadline:
        recs = list(Session(path).records())
        if predicate(recs):
            return recs
        time.sleep(0.1)
    return recs


def test_records_everything_from_a_real_mitmdump(tmp_path, pki, origins) -> None:
    plain, tls = origins
    m, path = _start(tmp_path, pki, connection_strategy="lazy")
    try:
        p = m.opts.port
        trusted = ssl.create_default_context(cafile=str(ca_cert_path(m.opts.confdir)))
        untrusting = ssl.create_default_context(cafile=str(pki.cert_path))

        assert proxied_request(p, "GET", f"http://localhost:{plain.port}/cfg?a=1&b=x%20y")[0] == 200
        payload = json.dumps({"imei": "490154203237518", "apps": ["com.a"]}).encode()
        status, _ = proxied_request(
            p,
            "POST",
            f"https://localhost:{tls.port}/upload",
            gzip.compress(payload),
            {"Content-Encoding": "gzip", "Content-Type": "application/json"},
            context=trusted,
        )
        assert status == 200
        big = 3 * CAP
        assert (
            proxied_request(p, "GET", f"http://localhost:{plain.port}/large?size={big}")[0] == 200
        )
        with pytest.raises(ssl.SSLError):
            proxied_request(
                p,
                "GET",
                f"https://localhost:{tls.port}/x",
                context=untrusting,
                sni="pinned.example.test",
            )
        # Nothing listens on port 1: with lazy connections the request is read first, then the
        # upstream fails. Over TLS too, so the decrypted request is evidence.
        assert proxied_request(p, "GET", "http://localhost:1/nohost?q=1")[0] == 502
        status, _ = proxied_request(
            p, "POST", "https://localhost:1/secret", b"id=42", context=trusted
        )
        assert status == 502
        recs = _wait_for(
            path, lambda rs: sum(isinstance(r, HttpRecord | TlsFailedRecord) for r in rs) >= 6
        )
    finally:
        m.stop()
    close_session(path)

    http = [r for r in recs if isinstance(r, HttpRecord)]
    by_path = {r.path.split("?")[0]: r for r in http}

    get = by_path["/cfg"]
    assert get.path == "/cfg?a=1&b=x%20y" and get.status == 200 and get.scheme == "http"
    assert get.request_start and get.response_end and get.client_ip == "127.0.0.1"
    assert get.server_port == plain.port

    post = by_path["/upload"]
    assert post.scheme == "https" and post.sni == "localhost" and post.tls_version
    assert post.request_body and post.request_body.encoding == "gzip"
    assert post.request_body.decoded_size == len(payload)
    store = Session(path).bodies
    assert gzip.decompress(store.get(post.request_body.sha256)) == payload
    assert dict(post.request_headers)["Content-Type"] == "application/json"

    large = by_path["/large"]
    assert large.response_body.truncated and large.response_body.size == CAP
    assert large.response_body.wire_size == big
    assert store.get(large.response_body.sha256) == b"x" * CAP

    (failed,) = [r for r in recs if isinstance(r, TlsFailedRecord)]
    assert failed.sni == "pinned.example.test" and failed.side == "client"
    assert "trust" in failed.error or "certificate" in failed.error

    nohost = by_path["/nohost"]
    assert nohost.error and nohost.status is None and nohost.port == 1
    secret = by_path["/secret"]
    assert secret.error and secret.scheme == "https" and secret.request_body.size == 5

    assert verify_session(path).ok


def test_kill_9_loses_at_most_the_flows_in_flight(tmp_path, pki, origins) -> None:
    plain, _ = origins
    m, path = _start(tmp_path, pki)
    for i in range(20):
        assert proxied_request(m.opts.port, "GET", f"http://localhost:{plain.port}/n{i}")[0] == 200
    assert m.proc is not None
    os.kill(m.proc.pid, signal.SIGKILL)
    m.proc.wait(10)
    sess = Session(path)
    paths = sorted(r.path for r in sess.http())
    assert paths == sorted(f"/n{i}" for i in range(20))
    manifest = close_session(path, status="incomplete")
    assert manifest["summary"]["flows"] == 20
    assert verify_session(path).ok


def _cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "auditor.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_capture_stops_cleanly_on_signal(tmp_path, origins, sig) -> None:
    plain, _ = origins
    port = free_port()
    out = tmp_path / "caps"
    proc = _cli(
        "capture",
        "--no-device",
        "--port",
        str(port),
        "--out",
        str(out),
        "--confdir",
        str(tmp_path / "conf"),
        "--json",
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _ = proxied_request(port, "GET", f"http://localhost:{plain.port}/hello")
                break
            except OSError:
                assert time.monotonic() < deadline, "proxy never came up"
                time.sleep(0.2)
        assert status == 200
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    result = json.loads(stdout)
    assert result["stopped_by"] == "signal" and result["flows"] == 1
    session = Path(result["session"])
    assert verify_session(session).ok
    manifest = json.loads((session / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert oct((tmp_path / "conf").stat().st_mode & 0o777) == "0o700"
    key = tmp_path / "conf" / "mitmproxy-ca.pem"
    assert key.stat().st_mode & 0o077 == 0


def test_cli_capture_duration_then_verify_catches_tampering(tmp_path) -> None:
    out = tmp_path / "caps"
    proc = _cli(
        "capture",
        "--no-device",
        "--port",
        str(free_port()),
        "--out",
        str(out),
        "--confdir",
        str(tmp_path / "conf"),
        "--duration",
        "1s",
    )
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    (session,) = list(out.iterdir())
    ok = _cli("verify", str(session))
    assert ok.wait(30) == 0
    with open(session / FLOWS, "ab") as fh:
        fh.write(b'{"type":"event","ts":"2026-01-01T00:00:00Z","kind":"forged"}\n')
    bad = _cli("verify", str(session))
    stdout, _ = bad.communicate(timeout=30)
    assert bad.returncode == 1
    assert f"CHANGED   {FLOWS}" in stdout
