"""The packet capture with its TLS secrets embedded (``tls/NAME.pcapng``, a Decryption Secrets
Block), end to end: one audit of the virtual handset through a real adb server and mitmdump,
an HTTPS upload through the proxy while adb-tcpdump records the phone's side; then tshark, an
independent reader, decrypts the upload from that one file with no key log given, and the
file is compared block by block with what ``editcap --inject-secrets`` makes of the same
capture and key log."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import auditor.audit
from auditor.audit import AuditOptions, AuditResult, run_audit
from auditor.errors import CaptureError
from auditor.evidence.verify import verify_session
from auditor.proxy.capture import DSB, SECRETS_TLS, write_keyed_pcapng
from auditor.session import FLOWS, TLS_KEYLOG, Session
from tests.conftest import free_port
from tests.e2e.conftest import adb_server
from tests.vhandset.adb_fixtures import AdbServer, wait_until
from tests.vhandset.upstream import upstream_of
from vhandset.world import VirtualWorld

__all__ = ["adb_server"]  # a fixture, used by name

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
TSHARK = shutil.which("tshark")
EDITCAP = shutil.which("editcap")
GMS = "com.google.android.gms"
UPLOAD = "https://android.clients.google.com/checkin?from=keyed-pcapng-test"


@dataclass
class Audited:
    result: AuditResult
    port: int
    status: int | str

    @property
    def session(self) -> Path:
        return self.result.session

    @property
    def keyed(self) -> list[dict[str, Any]]:
        return list(Session(self.session).manifest["tls_keyed_captures"])


@pytest.fixture(scope="module")
def audited(adb_server: AdbServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Audited]:
    tmp = tmp_path_factory.mktemp("keyed")
    world = VirtualWorld("xiaomi-mi10t", port=0, traffic=False).start()
    serial = world.info().adb_address
    try:
        adb_server.text("connect", serial)
        assert adb_server.wait_state(serial, "device", 15), adb_server.states()
        out = tmp / "captures"
        got: dict[str, int | str] = {}

        def upload() -> None:
            def started() -> bool:
                return any(b'"scenario_step"' in p.read_bytes() for p in out.glob(f"*/{FLOWS}"))

            if wait_until(started, 60, 0.05):
                uid, net = world.device.package_uid(GMS), world.network
                assert uid is not None and net is not None
                try:
                    got["status"] = net.fetch(uid, "POST", UPLOAD, body=b"\x08\x01").status
                except Exception as exc:
                    got["status"] = type(exc).__name__

        thread = threading.Thread(target=upload, daemon=True)
        thread.start()
        port = free_port()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(auditor.audit, "LOCK_DIR", tmp / "locks")
            opts = AuditOptions(
                serial=serial,
                scenario="idle",
                duration="3s",
                out=out,
                confdir=tmp / "mitm",
                port=port,
                canary_timeout=10.0,
                packets="adb-tcpdump",
                **upstream_of(world),
            )
            res = run_audit(opts)
        thread.join(15)
        yield Audited(res, port, got.get("status", "never sent"))
    finally:
        adb_server.text("disconnect", serial)
        world.stop()


def http_requests(pcap: Path, port: int, keylog: Path | None = None) -> list[tuple[str, str, str]]:
    """(method, host, URI) of the HTTP requests tshark reads in ``pcap``: with no key log
    given, only what the file itself holds can decrypt the TLS."""
    assert TSHARK is not None
    prefs = ["-o", f"tls.keylog_file:{keylog or ''}", "-d", f"tcp.port=={port},http"]
    fields = ["-T", "fields", "-e", "http.request.method", "-e", "http.host"]
    done = subprocess.run(
        [TSHARK, "-n", "-r", str(pcap), *prefs, "-Y", "http.request", *fields,
         "-e", "http.request.uri"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    rows = [tuple(line.split("\t")) for line in done.stdout.splitlines() if line.strip()]
    return [(m, h, u) for m, h, u in rows if m != "CONNECT"]


def blocks(path: Path) -> list[tuple[int, bytes]]:
    data = path.read_bytes()
    out, at = [], 0
    while at < len(data):
        kind, size = struct.unpack_from("<II", data, at)
        out.append((kind, data[at : at + size]))
        at += size
    assert at == len(data)
    return out


def test_every_capture_has_a_keyed_copy_hashed_with_the_session(audited: Audited) -> None:
    res = audited.result
    assert (res.status, res.restored) == ("complete", True)
    captures = sorted(
        p.relative_to(res.session).as_posix() for p in (res.session / "packets").iterdir()
    )
    assert [k["capture"] for k in audited.keyed] == captures
    listed = {a["path"]: a for a in Session(res.session).manifest["artifacts"]}
    for k in audited.keyed:
        keyed = res.session / str(k["keyed"])
        assert str(k["keyed"]).startswith("tls/") and keyed.suffix == ".pcapng"
        assert keyed.stat().st_mode & 0o077 == 0  # it holds the secrets
        assert listed[str(k["keyed"])]["sha256"] == hashlib.sha256(keyed.read_bytes()).hexdigest()
        assert k["secrets_bytes"] == (res.session / TLS_KEYLOG).stat().st_size
    assert verify_session(res.session).ok


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
def test_tshark_decrypts_the_upload_from_the_keyed_file_alone(audited: Audited) -> None:
    assert audited.status == 200
    want = ("POST", "android.clients.google.com", "/checkin?from=keyed-pcapng-test")
    (k,) = audited.keyed
    keyed = audited.session / str(k["keyed"])
    original = audited.session / str(k["capture"])
    assert want in http_requests(keyed, audited.port)
    assert want not in http_requests(original, audited.port)  # the pcap alone: ciphertext
    # and the same as with the key log given to tshark beside the original
    assert http_requests(keyed, audited.port) == http_requests(
        original, audited.port, audited.session / TLS_KEYLOG
    )


@pytest.mark.skipif(EDITCAP is None, reason="editcap is not installed")
def test_the_keyed_file_is_editcaps_inject_secrets_block_for_block(
    audited: Audited, tmp_path: Path
) -> None:
    assert EDITCAP is not None
    (k,) = audited.keyed
    reference = tmp_path / "editcap.pcapng"
    subprocess.run(
        [EDITCAP, "--inject-secrets", f"tls,{audited.session / TLS_KEYLOG}",
         str(audited.session / str(k["capture"])), str(reference)],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    ours, theirs = blocks(audited.session / str(k["keyed"])), blocks(reference)
    # the section header differs (each names its writer); every block after it is the same
    assert ours[0][0] == theirs[0][0] == 0x0A0D0D0A
    assert [b for _, b in ours[1:]] == [b for _, b in theirs[1:]]
    kind, dsb = ours[1]
    assert kind == DSB and struct.unpack_from("<I", dsb, 8)[0] == SECRETS_TLS
    assert len(ours) - 3 == k["packets"] > 0  # SHB, DSB, IDB, then one block per packet


def test_a_capture_cut_mid_record_is_copied_up_to_the_cut(tmp_path: Path) -> None:
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)
    packet = bytes.fromhex("4500001c000100004011f9a70a000002c61200019c40003500080000")
    record = struct.pack("<IIII", 1, 2, len(packet), len(packet)) + packet
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(header + record + record[:20])
    got = write_keyed_pcapng(cut, b"CLIENT_RANDOM 00 11\n", tmp_path / "cut.pcapng")
    assert got == (1, "the last record is cut short; not copied")
    assert [kind for kind, _ in blocks(tmp_path / "cut.pcapng")] == [0x0A0D0D0A, DSB, 1, 6]
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a capture at all")
    with pytest.raises(CaptureError, match="not a pcap or pcapng"):
        write_keyed_pcapng(bad, b"", tmp_path / "bad.pcapng")
    assert not (tmp_path / "bad.pcapng").exists()


def test_analysis_reads_the_capture_once_and_names_no_secret(
    audited: Audited, tmp_path: Path
) -> None:
    """The copy beside the key log is not read as a second capture (the same packets twice),
    and findings.json holds neither the secrets nor the copy's content."""
    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "auditor.cli", "analyze", str(audited.session), "--out", str(out),
         "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = (out / "findings.json").read_text()
    doc = json.loads(text)
    (packets,) = doc["packets"].values()
    assert [f["file"] for f in packets["files"]] == [k["capture"] for k in audited.keyed]
    secrets = (audited.session / TLS_KEYLOG).read_text().split()
    assert not [s for s in secrets if len(s) >= 32 and s in text]  # no client random, no secret


def test_damaged_captures_give_a_warning_not_a_crash_or_a_huge_read(tmp_path: Path) -> None:
    """A pcap cut inside its file header, a record whose length says 4 GB, a pcapng block
    whose size says 4 GB: each is copied as far as it is sound, with a warning."""
    secrets = b"CLIENT_RANDOM " + b"ab" * 32 + b" " + b"cd" * 48 + b"\n"
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    one = struct.pack("<IIII", 1, 0, 4, 4) + b"\x00" * 4
    cases = {
        "cut.pcap": header[:10],
        "huge.pcap": header + one + struct.pack("<IIII", 2, 0, 0xF0000000, 0xF0000000) + b"x",
        "huge.pcapng": struct.pack("<IIIHHq", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1)
        + struct.pack("<I", 28)
        + struct.pack("<II", 1, 0xF0000000),
    }
    expect = {"cut.pcap": (0, "header"), "huge.pcap": (1, "not a packet"),
              "huge.pcapng": (0, "not pcapng")}  # fmt: skip
    for name, data in cases.items():
        src = tmp_path / name
        src.write_bytes(data)
        packets, warning = write_keyed_pcapng(src, secrets, tmp_path / f"{name}.keyed.pcapng")
        assert (packets, expect[name][1] in warning) == (expect[name][0], True), (name, warning)
