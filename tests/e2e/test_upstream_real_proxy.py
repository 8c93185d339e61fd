"""``auditor audit --upstream URL --upstream-ca FILE`` against a real intercepting proxy, not
the virtual handset's offline internet: a second, plain mitmdump (the lab's corporate proxy,
which re-signs TLS with its own CA) in front of an HTTPS server on loopback. auditor's
mitmdump runs with the options the audit gives it (upstream mode, the upstream's CA as
``ssl_verify_upstream_trusted_ca``); what the upstream saw is read with mitmproxy's own flow
reader, not auditor's."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mitmproxy import io as mio
from mitmproxy.http import HTTPFlow

from auditor.proxy.capture import Mitmdump, ProxyOptions, ca_cert_path, mitmdump_path
from auditor.records import HttpRecord
from auditor.session import Session, SessionWriter
from tests.conftest import free_port
from tests.proxied import proxied_request

pytestmark = pytest.mark.e2e
BODY = b"origin says hello"


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "origin.pem", tmp / "origin.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _Origin(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the upstream mitmdump exited"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError("the upstream mitmdump did not listen")


@contextlib.contextmanager
def _lab(tmp: Path, flows: Path | None = None) -> Iterator[tuple[int, int, Path]]:
    """An HTTPS origin on loopback (self-signed) and a plain mitmdump in front of it (the
    lab's proxy: it trusts the origin and re-signs with its own CA, kept in its confdir),
    writing its flows to ``flows``: (origin port, upstream port, upstream confdir). Both
    stopped on the way out."""
    cert, key = _self_signed(tmp)
    origin = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    origin.socket = tls.wrap_socket(origin.socket, server_side=True)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    port, conf = free_port(), tmp / "upstream-conf"
    argv = [str(mitmdump_path()), "--listen-host", "127.0.0.1", "-p", str(port), "-q"]
    argv += ["--set", f"confdir={conf}", "--set", "ssl_insecure=true"]
    if flows is not None:
        argv += ["-w", str(flows)]
    upstream = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(port, upstream)
        yield origin.server_port, port, conf
    finally:
        upstream.terminate()
        upstream.wait(timeout=15)
        origin.shutdown()
        origin.server_close()


def _through(tmp: Path, up_port: int, extra: dict[str, str], url: str) -> tuple[int, Path]:
    """One GET through auditor's mitmdump in upstream mode: the status (0: the connection
    failed) and the session it recorded."""
    writer = SessionWriter.create(tmp / "captures")
    writer.detach()
    opts = ProxyOptions(
        port=free_port(),
        confdir=tmp / "confdir",
        mode=f"upstream:http://127.0.0.1:{up_port}",
        extra=extra,
    )
    ours = Mitmdump(writer.path, opts)
    ours.start()
    try:
        trusted = ssl.create_default_context(cafile=str(ca_cert_path(opts.confdir)))
        try:
            status, body = proxied_request(opts.port, "GET", url, context=trusted)
        except (OSError, ssl.SSLError):
            status, body = 0, b""
        assert status != 200 or body == BODY
        deadline = time.monotonic() + 15
        while status == 200 and time.monotonic() < deadline:
            if any(isinstance(r, HttpRecord) for r in Session(writer.path).records()):
                break
            time.sleep(0.1)
    finally:
        ours.stop()
    return status, writer.path


def test_through_a_real_intercepting_upstream_proxy(tmp_path: Path) -> None:
    flows = tmp_path / "up.flows"
    with _lab(tmp_path, flows) as (origin, up_port, up_conf):
        url = f"https://localhost:{origin}/telemetry?via=upstream"
        # what Audit._proxy gives mitmdump for --upstream and --upstream-ca
        extra = {"ssl_verify_upstream_trusted_ca": str(ca_cert_path(up_conf))}
        status, session = _through(tmp_path, up_port, extra, url)
    assert status == 200
    (rec,) = [r for r in Session(session).records() if isinstance(r, HttpRecord)]
    assert (rec.host, rec.path, rec.status) == ("localhost", "/telemetry?via=upstream", 200)
    # the upstream proxy saw the same request, read by mitmproxy's own reader
    with flows.open("rb") as fh:
        seen = [f for f in mio.FlowReader(fh).stream() if isinstance(f, HTTPFlow)]
    assert [(f.request.pretty_host, f.request.path) for f in seen] == [
        ("localhost", "/telemetry?via=upstream")
    ]
    assert seen[0].response is not None and seen[0].response.content == BODY


def test_an_upstream_whose_ca_is_not_given_is_not_trusted(tmp_path: Path) -> None:
    """Without the upstream's CA, auditor's mitmdump refuses the certificates the upstream
    made: the client gets no 200 from the origin (a failure, not a silent pass-through)."""
    with _lab(tmp_path) as (origin, up_port, _conf):
        status, _ = _through(tmp_path, up_port, {}, f"https://localhost:{origin}/telemetry")
    assert status != 200
