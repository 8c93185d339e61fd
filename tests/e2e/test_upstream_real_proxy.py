"""``auditor audit --upstream URL --upstream-ca FILE`` against a real intercepting proxy, not
the virtual handset's offline internet: a second, plain mitmdump (the lab's corporate proxy,
which re-signs TLS with its own CA) in front of an HTTPS server on loopback. auditor's
mitmdump runs with the options the audit gives it (upstream mode, the upstream's CA as
``ssl_verify_upstream_trusted_ca``); what the upstream saw is read with mitmproxy's own flow
reader, not auditor's."""

from __future__ import annotations

import contextlib
import datetime as dt
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy import io as mio
from mitmproxy.http import HTTPFlow

from auditor.proxy.capture import ca_cert_path, mitmdump_path
from auditor.records import HttpRecord
from auditor.session import Session
from tests.certs import self_signed, write_pem
from tests.conftest import free_port
from tests.mitmlab import upstream_mitmdump, wait_listening
from tests.origin import answering, serving
from tests.proxied import proxied_request

pytestmark = pytest.mark.e2e
BODY = b"origin says hello"


@contextlib.contextmanager
def _lab(tmp: Path, flows: Path | None = None) -> Iterator[tuple[int, int, Path]]:
    """An HTTPS origin on loopback (self-signed) and a plain mitmdump in front of it (the
    lab's proxy: it trusts the origin and re-signs with its own CA, kept in its confdir),
    writing its flows to ``flows``: (origin port, upstream port, upstream confdir). Both
    stopped on the way out."""
    now = dt.datetime.now(dt.UTC)
    cert, key = self_signed(
        "localhost", sans=["localhost"], valid_from=now - dt.timedelta(days=1), days=3
    )
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(*write_pem(cert, key, tmp, "origin"))
    port, conf = free_port(), tmp / "upstream-conf"
    argv = [str(mitmdump_path()), "--listen-host", "127.0.0.1", "-p", str(port), "-q"]
    argv += ["--set", f"confdir={conf}", "--set", "ssl_insecure=true"]
    if flows is not None:
        argv += ["-w", str(flows)]
    with serving(answering(BODY), tls) as origin:
        upstream = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_listening(port, upstream)
            yield origin.server_port, port, conf
        finally:
            upstream.terminate()
            upstream.wait(timeout=15)


def _through(tmp: Path, up_port: int, up_ca: Path | None, url: str) -> tuple[int, Path]:
    """One GET through auditor's mitmdump in upstream mode (trusting ``up_ca``, the
    upstream's CA, when given): the status (0: the connection failed) and the session it
    recorded."""
    with upstream_mitmdump(tmp, f"http://127.0.0.1:{up_port}", up_ca) as (opts, session):
        trusted = ssl.create_default_context(cafile=str(ca_cert_path(opts.confdir)))
        try:
            status, body = proxied_request(opts.port, "GET", url, context=trusted)
        except (OSError, ssl.SSLError):
            status, body = 0, b""
        assert status != 200 or body == BODY
        deadline = time.monotonic() + 15
        while status == 200 and time.monotonic() < deadline:
            if any(isinstance(r, HttpRecord) for r in Session(session).records()):
                break
            time.sleep(0.1)
    return status, session


def test_through_a_real_intercepting_upstream_proxy(tmp_path: Path) -> None:
    flows = tmp_path / "up.flows"
    with _lab(tmp_path, flows) as (origin, up_port, up_conf):
        url = f"https://localhost:{origin}/telemetry?via=upstream"
        # what Audit._proxy gives mitmdump for --upstream and --upstream-ca
        status, session = _through(tmp_path, up_port, ca_cert_path(up_conf), url)
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
        status, _ = _through(tmp_path, up_port, None, f"https://localhost:{origin}/telemetry")
    assert status != 200
