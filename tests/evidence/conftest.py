"""Shared fixtures: a closed session with findings to make, its report, a signing key, and a
helper that rewrites a bundle member by member (to tamper with it as an adversary would)."""

from __future__ import annotations

import base64
import gzip
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from auditor.analysis.engine import analyze, write
from auditor.evidence.signing import KeyPair, generate_keypair
from auditor.records import HttpRecord, TlsFailedRecord
from auditor.session import SessionWriter

IMEI = "490154203237518"
AID = "9774d56d682e549c"
DEVICE = {
    "manufacturer": "Xiaomi",
    "model": "M2007J3SG",
    "serial": "abc123",
    "identifiers": [
        {"name": "imei", "value": IMEI, "source": "test"},
        {"name": "android_id", "value": AID, "source": "test"},
    ],
}
SCENARIO = {"name": "idle", "steps": [{"action": "idle", "duration": 60}]}


def make_session(out: Path) -> Path:
    """A closed session whose analysis has findings: identifiers sent to the vendor in the
    query, a JSON body and base64, a keyword list in a response, a pinned host."""
    w = SessionWriter.create(out, notes="evidence test", device=DEVICE, scenario=SCENARIO)
    body = json.dumps({"d": {"imei": IMEI, "aid": AID}}).encode()
    keywords = json.dumps({"keywordBlacklist": [f"word{i}" for i in range(60)]}).encode()
    reqs = [
        ("tracking.miui.com", f"/track?imei={IMEI}", None, None),
        ("data.mistat.xiaomi.com", "/upload", body, None),
        ("sdkconfig.ad.xiaomi.com", f"/c?b={base64.b64encode(IMEI.encode()).decode()}", None,
         keywords),
        ("graph.facebook.com", f"/v1?aid={AID}", None, None),
    ]  # fmt: skip
    for i, (host, path, req, resp) in enumerate(reqs):
        w.write(
            HttpRecord(
                id=f"f{i}",
                method="POST" if req else "GET",
                scheme="https",
                host=host,
                port=443,
                path=path,
                url=f"https://{host}{path}",
                request_start=f"2026-01-01T00:00:0{i}.000000Z",
                response_end=f"2026-01-01T00:00:0{i}.500000Z",
                server_ip="203.0.113.7",
                server_port=443,
                status=200,
                request_headers=(("Host", host),),
                request_content_type="application/json" if req else None,
                request_body=w.bodies.put(req) if req else None,
                response_content_type="application/json" if resp else None,
                response_body=w.bodies.put(resp) if resp else None,
            )
        )
    w.write(
        TlsFailedRecord(
            id="t1",
            ts="2026-01-01T00:00:09.000000Z",
            side="client",
            client_ip="127.0.0.1",
            client_port=50000,
            sni="api.pinned.example",
            error="unknown ca",
        )
    )
    w.event("step", "idle", n=1)
    w.close()
    return w.path


def analyse_to(session: Path, out: Path) -> Path:
    res = analyze([session], artifacts_dir=out / "artifacts")
    write(res, out, ["json", "csv", "md", "html"])
    return out


@pytest.fixture
def session(tmp_path: Path) -> Path:
    return make_session(tmp_path / "captures")


@pytest.fixture
def report(session: Path, tmp_path: Path) -> Path:
    return analyse_to(session, tmp_path / "reports" / session.name)


@pytest.fixture
def keypair(tmp_path: Path) -> KeyPair:
    (tmp_path / "keys").mkdir(mode=0o700)
    return generate_keypair(tmp_path / "keys" / "signing.key")


Edit = Callable[[list[tuple[tarfile.TarInfo, bytes]]], list[tuple[tarfile.TarInfo, bytes]]]


def rewrite_bundle(src: Path, dst: Path, edit: Edit) -> Path:
    """Copy the bundle at ``src`` to ``dst`` (gzip tar) after ``edit`` changed its members."""
    members: list[tuple[tarfile.TarInfo, bytes]] = []
    with tarfile.open(src, "r:*") as tf:
        for ti in tf.getmembers():
            fh = tf.extractfile(ti)
            members.append((ti, fh.read() if fh else b""))
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for ti, data in edit(members):
                ti.size = len(data) if ti.isreg() else 0
                tf.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
    dst.write_bytes(raw.getvalue())
    return dst


def file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = 0o600
    return ti, data
