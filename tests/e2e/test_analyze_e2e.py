"""`auditor analyze` on sessions recorded through a real mitmdump: identifiers hidden in every
encoding are all found; a negative control gives nothing; the output is reproducible."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import subprocess
import sys
import time
import zlib
from pathlib import Path
from urllib.parse import quote, urlencode

import brotli
import pytest

from auditor.decoders import zstd
from auditor.proxy.capture import Mitmdump, ProxyOptions
from auditor.session import Session, SessionWriter, close_session
from tests.conftest import free_port
from tests.proxied import proxied_request
from vhandset.offline.origin import OriginServer

pytestmark = pytest.mark.e2e

IMEI = "490154203237518"
AID = "9774d56d682e549c"


def _pb_string(field: int, value: bytes) -> bytes:
    return bytes([field << 3 | 2, len(value)]) + value


def _requests(imei: str, aid: str, port: int) -> list[tuple[str, str, bytes | None, dict, set]]:
    """(method, url, body, headers, {(identifier, encoding substring)}) planted per request."""
    b = imei.encode()
    url = f"http://localhost:{port}"
    md5 = hashlib.md5(b).hexdigest()
    sha1 = hashlib.sha1(b).hexdigest()
    sha256 = hashlib.sha256(b).digest()
    js = json.dumps({"d": {"e": [{"imei": imei}], "aid": aid}}).encode()
    return [
        ("GET", f"{url}/q?imei={imei}", None, {}, {("imei", "plain")}),
        ("GET", f"{url}/q?x={quote('id:' + imei + '&')}", None, {}, {("imei", "plain")}),
        ("GET", f"{url}/q?b={base64.b64encode(b).decode()}", None, {}, {("imei", "base64")}),
        ("GET", f"{url}/q?u={base64.urlsafe_b64encode(b).decode().rstrip('=')}", None, {},
         {("imei", "base64")}),
        ("GET", f"{url}/q?h={b.hex()}", None, {}, {("imei", "hex")}),
        ("GET", f"{url}/q?H={b.hex().upper()}", None, {}, {("imei", "hex")}),
        ("GET", f"{url}/q?m={md5}", None, {}, {("imei", "md5")}),
        ("GET", f"{url}/q?M={md5.upper()}", None, {}, {("imei", "md5")}),
        ("GET", f"{url}/q?s={sha1}", None, {}, {("imei", "sha1")}),
        ("GET", f"{url}/q?t={base64.b64encode(sha256).decode()}", None, {}, {("imei", "sha256")}),
        ("GET", f"{url}/h", None, {"X-Device": aid}, {("android_id", "plain")}),
        ("GET", f"{url}/c", None, {"Cookie": f"a=1; did={aid}"}, {("android_id", "plain")}),
        ("POST", f"{url}/j", gzip.compress(js), {"Content-Encoding": "gzip",
         "Content-Type": "application/json"}, {("imei", "gzip"), ("android_id", "gzip")}),
        ("POST", f"{url}/j", zlib.compress(js), {"Content-Encoding": "deflate",
         "Content-Type": "application/json"}, {("imei", "deflate")}),
        ("POST", f"{url}/j", brotli.compress(js), {"Content-Encoding": "br",
         "Content-Type": "application/json"}, {("imei", "br")}),
        ("POST", f"{url}/j", zstd.compress(js), {"Content-Encoding": "zstd",
         "Content-Type": "application/json"}, {("imei", "zstd")}),
        ("POST", f"{url}/f", urlencode({"aid": aid, "x": "1"}).encode(),
         {"Content-Type": "application/x-www-form-urlencoded"}, {("android_id", "form")}),
        ("POST", f"{url}/m", (
            "--XX\r\nContent-Disposition: form-data; name=\"imei\"\r\n\r\n" + imei
            + "\r\n--XX--\r\n").encode(),
         {"Content-Type": "multipart/form-data; boundary=XX"}, {("imei", "multipart")}),
        ("POST", f"{url}/p", _pb_string(1, _pb_string(2, b)),
         {"Content-Type": "application/x-protobuf"}, {("imei", "protobuf")}),
        ("POST", f"{url}/b", json.dumps({"blob": base64.b64encode(js).decode()}).encode(),
         {"Content-Type": "application/json"}, {("imei", "base64")}),
    ]  # fmt: skip


def _record(tmp: Path, imei: str, aid: str) -> tuple[Path, set]:
    w = SessionWriter.create(tmp / "captures")
    w.detach()
    opts = ProxyOptions(port=free_port(), confdir=tmp / "conf")
    planted: set = set()
    with OriginServer() as origin:
        m = Mitmdump(w.path, opts)
        m.start()
        try:
            reqs = _requests(imei, aid, origin.port)
            for method, url, body, headers, plant in reqs:
                assert proxied_request(opts.port, method, url, body, headers)[0] == 200
                planted |= plant
            deadline = time.monotonic() + 10
            while sum(1 for _ in Session(w.path).http()) < len(reqs):
                assert time.monotonic() < deadline
                time.sleep(0.1)
        finally:
            m.stop()
    close_session(w.path)
    return w.path, planted


def _analyze(session: Path, out: Path, *ids: str) -> dict:
    args = [sys.executable, "-m", "auditor.cli", "analyze", str(session), "--out", str(out)]
    for i in ids:
        args += ["--identifier", i]
    done = subprocess.run([*args, "--json"], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return json.loads((out / "findings.json").read_text())


def test_every_planted_encoding_is_found(tmp_path: Path) -> None:
    session, planted = _record(tmp_path, IMEI, AID)
    doc = _analyze(session, tmp_path / "r1", f"imei={IMEI}", f"android_id={AID}")
    found = {
        (f["identifiers"][0], enc)
        for f in doc["findings"]
        if f["rule"] == "identifier-sent"
        for enc in f["encodings"]
    }
    missing = {
        (i, part) for i, part in planted if not any(i == fi and part in fe for fi, fe in found)
    }
    assert not missing, (missing, sorted(found))
    # every finding carries its flows and a citation, and the flows exist in the session
    ids = {r.id for r in Session(session).http()}
    for f in doc["findings"]:
        assert f["flow_ids"] and set(f["flow_ids"]) <= ids | {
            r.id for r in Session(session).records() if r.TYPE.value == "tls_failed"
        }
        assert f["citations"]
    for name in ("report.html", "flows.csv", "flows.parquet", "endpoints.csv", "summary.md"):
        assert (tmp_path / "r1" / name).stat().st_size > 0

    # Reproducible: a second run gives a byte-identical findings.json but for generated_at.
    doc2 = _analyze(session, tmp_path / "r2", f"imei={IMEI}", f"android_id={AID}")
    doc.pop("generated_at"), doc2.pop("generated_at")
    assert json.dumps(doc, sort_keys=True) == json.dumps(doc2, sort_keys=True)


def test_negative_control_finds_nothing(tmp_path: Path) -> None:
    # The same traffic with other values: searching for the real ones must find nothing.
    session, _ = _record(tmp_path, "356938035643809", "0123456789abcdef")
    doc = _analyze(session, tmp_path / "r", f"imei={IMEI}", f"android_id={AID}")
    assert [f for f in doc["findings"] if f["identifiers"]] == []
    assert doc["identifiers_searched"] == ["android_id", "imei"]
