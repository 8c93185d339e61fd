"""Faults, each one a test (issue 7 §4).

1. The proxy dies: mitmdump is killed with SIGKILL mid-scenario. The audit notices at once,
   keeps every line already written, restores the device and closes the session as
   ``incomplete`` (``stopped_by: proxy_died``), which ``auditor analyze`` still reports on.
2. The device goes away mid-scenario (its adbd stops: the cable is pulled). The session is
   closed and verifiable, the restore journal still lists what is pending, and
   ``auditor restore`` finishes the job once the same handset is back.
3. The disk fills up (a file-size limit, ``RLIMIT_FSIZE``, on ``auditor audit`` and so on its
   mitmdump): the capture stops with ``stopped_by: disk_full``, the device is restored, and
   every line written before the failure is intact.
4. The session is damaged afterwards (flows.jsonl cut mid-line, a body deleted or altered, the
   packet capture cut, the manifest edited): ``auditor verify`` names each file and exits 1;
   ``auditor analyze`` still writes a report whose warnings say what it could not read.
5. ``auditor audit`` is interrupted by SIGINT or SIGTERM at every step of its loop; the device
   is restored every time, the exit status is 130 and the session verifies. The steps are
   reached with auditor's test hook (``AUDITOR_TEST_PAUSE_AT``, see auditor/audit.py).

Every part is real: the adb server, the virtual handset, mitmdump with the recorder, and
``auditor`` as a subprocess wherever signals or resource limits are involved. One handset
serves the whole module, without background traffic (the flows are the ones the tests make);
each test checks that it leaves the handset exactly as it found it.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from auditor.audit import TEST_PAUSE_ENV, AuditOptions, AuditResult, run_audit
from auditor.device.handset import Handset
from auditor.device.journal import JOURNAL, RestoreJournal
from auditor.device.setup import restore_device
from auditor.evidence.verify import verify_session
from auditor.records import EventRecord, HttpRecord, Record
from auditor.session import FLOWS, Session, SessionWriteError, SessionWriter
from tests.conftest import free_port
from tests.e2e.test_audit_e2e import _kill_mitmdump, device_state, private_locks
from tests.vhandset.adb_fixtures import AdbServer, pid_alive, wait_until
from tests.vhandset.upstream import upstream_args, upstream_of
from vhandset.adb import AdbDaemon
from vhandset.world import VirtualWorld

__all__ = ["private_locks"]  # a fixture, used by name: audit locks in a temporary folder

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
ANALYTICS = "com.miui.analytics"
TRACKING = "https://tracking.miui.com/track/v4"


# ------------------------------------------------------------------------------- the handset


@dataclass
class Rig:
    world: VirtualWorld
    serial: str
    server: AdbServer
    confdir: Path  # mitmproxy's CA, shared by the module's audits
    baseline: dict[str, Any]  # the handset's state before any audit

    @property
    def uid(self) -> int:
        uid = self.world.device.package_uid(ANALYTICS)
        assert uid is not None
        return uid

    def post(self, body: bytes, query: str = "", timeout: float = 10) -> int | str:
        """An app on the handset uploads ``body``, through the proxy when one is set."""
        try:
            net = self.world.network
            assert net is not None
            return net.fetch(
                self.uid, "POST", f"{TRACKING}{query}", body=body, timeout=timeout
            ).status
        except Exception as exc:
            return type(exc).__name__


def put_back(rig: Rig, out: Path) -> None:
    """Should a test fail half way, undo what its sessions left on the handset, so that the
    next test starts from the baseline (the tests themselves assert that none was left)."""
    if device_state(rig.world) != rig.baseline:
        h = Handset(rig.serial)
        for journal in out.glob(f"*/{JOURNAL}"):
            restore_device(h, RestoreJournal(journal))


@pytest.fixture(scope="module")
def rig(adb_server: AdbServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    world = VirtualWorld("xiaomi-mi10t", port=0, traffic=False).start()
    serial = world.info().adb_address
    try:
        adb_server.text("connect", serial)
        assert adb_server.wait_state(serial, "device", 15), adb_server.states()
        confdir = tmp_path_factory.mktemp("mitm")
        yield Rig(world, serial, adb_server, confdir, device_state(world))
    finally:
        adb_server.text("disconnect", serial)
        world.stop()


@pytest.fixture
def captures(rig: Rig, tmp_path: Path) -> Iterator[Path]:
    out = tmp_path / "captures"
    out.mkdir()
    yield out
    _kill_mitmdump(out)
    put_back(rig, out)


# ----------------------------------------------------------------------------------- helpers


def audit(rig: Rig, out: Path, **kw: Any) -> AuditResult:
    kw.setdefault("port", free_port())
    kw.setdefault("canary_timeout", 10.0)
    kw = {**upstream_of(rig.world), **kw}
    opts = AuditOptions(serial=rig.serial, scenario="idle", out=out, confdir=rig.confdir, **kw)
    return run_audit(opts)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "auditor.cli", *args]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli(*args), cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


def the_session(out: Path) -> Path:
    (session,) = [p for p in out.iterdir() if p.is_dir()]
    return session


def has_event(out: Path, kind: str, **data: Any) -> bool:
    """Whether a session under ``out`` holds an event ``kind`` (whose data includes ``data``)."""
    for flows in out.glob(f"*/{FLOWS}"):
        for line in flows.read_bytes().splitlines():
            if f'"kind":"{kind}"'.encode() not in line:
                continue
            with contextlib.suppress(ValueError):
                got = json.loads(line).get("data") or {}
                if all(got.get(k) == v for k, v in data.items()):
                    return True
    return False


def read(session: Path) -> tuple[list[Record], list[str]]:
    sess = Session(session)
    return list(sess.records()), sess.warnings


def events(recs: list[Record], kind: str) -> list[EventRecord]:
    return [r for r in recs if isinstance(r, EventRecord) and r.kind == kind]


def mitmdump_pid(recs: list[Record]) -> int:
    (ev,) = events(recs, "proxy_listening")
    return int(ev.data["pid"])


def when(predicate: Callable[[], bool], action: Callable[[], None], timeout: float) -> Any:
    """Run ``action`` in a thread as soon as ``predicate`` holds (within ``timeout``)."""
    done: dict[str, float] = {}

    def go() -> None:
        if wait_until(predicate, timeout, 0.05):
            action()
            done["at"] = time.monotonic()

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread, done


def assert_verifies(session: Path) -> None:
    ver = verify_session(session)
    assert ver.ok, ver.to_dict()


# --------------------------------------------------------------------------- 1. the proxy dies


def test_proxy_killed_mid_scenario_is_noticed_and_the_session_kept(
    rig: Rig, captures: Path, tmp_path: Path
) -> None:
    flushed: dict[str, Any] = {}

    def kill_mitmdump() -> None:
        flows = the_session(captures) / FLOWS
        rig.post(b'{"before":"the kill"}')  # one flow recorded before, to be kept
        wait_until(lambda: b'"method":"POST"' in flows.read_bytes(), 5)
        flushed["bytes"] = flows.read_bytes()
        flushed["pid"] = pid = mitmdump_pid(read(flows.parent)[0])
        os.kill(pid, signal.SIGKILL)

    thread, done = when(lambda: has_event(captures, "scenario_step"), kill_mitmdump, 30)
    res = audit(rig, captures, duration="60s")
    ended = time.monotonic()
    thread.join(10)
    assert "at" in done, "the scenario never started"
    # noticed at once, not at the end of the 60 s scenario
    assert ended - done["at"] < 10
    assert (res.status, res.stopped_by, res.restored) == ("incomplete", "proxy_died", True)
    assert "SIGKILL" in res.detail and any("SIGKILL" in n for n in res.notes)
    assert device_state(rig.world) == rig.baseline
    assert not pid_alive(flushed["pid"])

    session = res.session
    # what was written before the kill is there, byte for byte, and readable
    assert (session / FLOWS).read_bytes().startswith(flushed["bytes"])
    recs, warnings = read(session)
    assert warnings == []
    posts = [r for r in recs if isinstance(r, HttpRecord) and r.method == "POST"]
    assert posts and posts[0].status == 200
    (died,) = events(recs, "proxy_died")
    assert died.data == {"exit_status": -9, "signal": "SIGKILL", "pid": flushed["pid"]}
    assert died.ts and "SIGKILL" in died.message
    (finished,) = events(recs, "scenario_finished")
    assert finished.data["stopped"] is True
    assert events(recs, "device_restored")

    m = Session(session).manifest
    assert (m["status"], m["stopped_by"], m["restored"]) == ("incomplete", "proxy_died", True)
    assert "SIGKILL" in m["stop_detail"]
    assert "unwritten_events" not in m
    assert_verifies(session)

    # the analyser still reports on it, and says it is incomplete
    report = tmp_path / "report"
    done_cli = run_cli("analyze", str(session), "--out", str(report), "--json")
    assert done_cli.returncode == 0, done_cli.stderr
    doc = json.loads((report / "findings.json").read_text())
    incomplete = doc["coverage"]["sessions_incomplete"]
    (entry,) = incomplete
    why = entry.pop("why")
    assert entry == {"session": m["session_id"], "status": "incomplete", "stopped_by": "proxy_died"}
    assert len(why) == 1 and "stopped by proxy_died" in why[0]


# ---------------------------------------------------------------------- 2. the device goes away


@dataclass
class LostDevice:
    result: AuditResult
    pulled_at: float
    ended_at: float
    pending: list[str]  # restore.jsonl's pending changes, as the audit left them
    verify_when_closed: dict[str, Any]
    state_while_away: dict[str, Any]  # the handset's state once back, before `auditor restore`
    restore: subprocess.CompletedProcess[str]
    after_restore: dict[str, Any]
    verify_after_restore: dict[str, Any]


@pytest.fixture(scope="module")
def lost_device(rig: Rig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LostDevice]:
    """An audit whose handset goes away mid-scenario (its adbd stops, as when the cable is
    pulled) and stays away until the audit is over; then it comes back on the same address
    and ``auditor restore`` runs."""
    out = tmp_path_factory.mktemp("lost") / "captures"
    port = rig.world.adbd.port

    def pull_the_cable() -> None:
        rig.world.adbd.stop()

    thread, done = when(lambda: has_event(out, "scenario_step"), pull_the_cable, 30)
    try:
        res = audit(rig, out, duration="60s", restore_wait=1.0)
        ended = time.monotonic()
        thread.join(10)
        pending = [c.what for c in RestoreJournal.in_session(res.session).pending()]
        verify_when_closed = verify_session(res.session).to_dict()
    finally:
        if "at" in done:  # back on the same address: the same serial
            rig.world.adbd = AdbDaemon(rig.world.device, host=rig.world.host, port=port)
            rig.world.adbd.start()
            rig.server.text("connect", rig.serial)
            assert rig.server.wait_state(rig.serial, "device", 15), rig.server.states()
        _kill_mitmdump(out)
    while_away = device_state(rig.world)
    restore = run_cli("restore", "-s", rig.serial, str(res.session), "--json")
    after = device_state(rig.world)
    yield LostDevice(
        res,
        done.get("at", 0.0),
        ended,
        pending,
        verify_when_closed,
        while_away,
        restore,
        after,
        verify_session(res.session).to_dict(),
    )
    put_back(rig, out)


def test_device_lost_mid_scenario_keeps_a_closed_session(rig: Rig, lost_device: LostDevice) -> None:
    res = lost_device.result
    assert lost_device.pulled_at, "the scenario never started"
    assert lost_device.ended_at - lost_device.pulled_at < 20  # not the 60 s of the scenario
    assert (res.status, res.stopped_by, res.restored) == ("incomplete", "device_lost", False)
    assert "went away" in res.detail and res.detail in res.notes
    assert f"auditor restore -s {rig.serial} {res.session}" in " ".join(res.notes)
    m = Session(res.session).manifest
    assert (m["status"], m["stopped_by"], m["restored"]) == ("incomplete", "device_lost", False)
    assert m["ended_at"] and "went away" in m["stop_detail"]
    assert lost_device.verify_when_closed["ok"], lost_device.verify_when_closed
    recs, warnings = read(res.session)
    assert warnings == []
    assert events(recs, "device_lost") and events(recs, "audit_failed")
    (pending,) = events(recs, "restore_pending")
    assert pending.data["pending"] == lost_device.pending
    # what the audit had changed, still to undo: the proxy, the CA over the system store
    assert any("http_proxy" in what for what in lost_device.pending)
    assert any("tmpfs over /system/etc/security/cacerts" in what for what in lost_device.pending)
    assert lost_device.state_while_away["http_proxy"] is not None


def test_auditor_restore_finishes_once_the_device_is_back(
    rig: Rig, lost_device: LostDevice
) -> None:
    done = lost_device.restore
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout)
    assert out["ok"] is True
    (sess,) = out["sessions"]
    assert sorted(sess["undone"]) == sorted(lost_device.pending) and sess["failed"] == []
    assert lost_device.after_restore == rig.baseline
    assert RestoreJournal.in_session(lost_device.result.session).pending() == []


def test_a_session_restored_later_still_verifies(lost_device: LostDevice) -> None:
    assert lost_device.verify_after_restore["ok"], lost_device.verify_after_restore


# ------------------------------------------------------------------------ 3. the disk fills up

FSIZE_LIMIT = 96 * 1024  # above the manifest (about 20 KiB), well below what the test sends


def _limit_file_size() -> None:
    """In the child, before exec: files may grow to FSIZE_LIMIT bytes, and a write beyond
    fails with EFBIG (not SIGXFSZ, which would kill the process)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, resource.RLIM_INFINITY))


@pytest.mark.parametrize("what", ["flows", "body"])
def test_disk_full_stops_the_capture_cleanly(
    what: str, rig: Rig, captures: Path, tmp_path: Path
) -> None:
    """``flows``: many uploads with long URLs fill flows.jsonl; ``body``: one upload larger
    than a file may be."""
    argv = cli(
        "audit", "-s", rig.serial, "--duration", "60s", "--port", str(free_port()),
        "--out", str(captures), "--confdir", str(rig.confdir), "--packets", "off",
        "--no-analyze", "--json", *upstream_args(rig.world),
    )  # fmt: skip
    env = {**os.environ, "HOME": str(tmp_path)}
    stderr = tmp_path / "stderr"
    sent: list[int | str] = []
    before: dict[str, bytes] = {}

    def fill_up() -> None:
        flows = the_session(captures) / FLOWS
        if what == "body":
            sent.append(rig.post(b"{}"))
            wait_until(lambda: b'"method":"POST"' in flows.read_bytes(), 5)
            before["flows"] = flows.read_bytes()
            sent.append(rig.post(os.urandom(FSIZE_LIMIT + 4096)))
            return
        for n in range(60):  # about 8 KiB a flow: 96 KiB fill up within a dozen
            before["flows"] = flows.read_bytes()
            outcome = rig.post(b"{}", f"?n={n}&pad={'x' * 4000}", timeout=5)
            sent.append(outcome)
            if outcome != 200 or has_event(captures, "recorder_failed"):
                return

    with open(stderr, "wb") as err:
        proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err,
            preexec_fn=_limit_file_size,
        )  # fmt: skip
        try:
            thread, done = when(lambda: has_event(captures, "scenario_step"), fill_up, 45)
            out, _ = proc.communicate(timeout=90)
            thread.join(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert "at" in done, (sent, stderr.read_text())
    result = json.loads(out)
    assert (result["status"], result["stopped_by"], result["restored"]) == (
        "incomplete",
        "disk_full",
        True,
    ), stderr.read_text()
    assert device_state(rig.world) == rig.baseline
    session = the_session(captures)
    flows = (session / FLOWS).read_bytes()
    # every line written before the failure is there, whole; no torn line was left behind
    assert flows.startswith(before["flows"]) and flows.endswith(b"\n")
    recs, warnings = read(session)
    assert warnings == []
    assert len(flows) <= FSIZE_LIMIT
    assert not list((session / "bodies").glob(".*")), "a partial body was left behind"
    m = Session(session).manifest
    assert (m["status"], m["stopped_by"], m["restored"]) == ("incomplete", "disk_full", True)
    assert "File too large" in m["stop_detail"]
    # the recorder said why, in the session or, when flows.jsonl itself was full, in the
    # manifest (the events that could not be written are kept there)
    kept = [e["kind"] for e in m.get("unwritten_events", [])]
    failed = events(recs, "recorder_failed")
    assert failed or "recorder_failed" in kept
    if what == "flows":
        assert "capture_stopped" in kept  # flows.jsonl was full: auditor's own events too
    assert "File too large" in (session / "mitmdump.log").read_text()
    assert_verifies(session)


def test_session_writer_takes_a_cut_line_back(tmp_path: Path) -> None:
    """In this process: a record that does not fit whole is not left half written, and the
    error says why."""
    w = SessionWriter.create(tmp_path / "captures")
    w.event("first", "fits")
    size = (w.path / FLOWS).stat().st_size
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, hard))
    try:
        with pytest.raises(SessionWriteError, match="File too large") as err:
            w.event("second", "x" * 500)
        assert err.value.disk_full
        w.event("third", "fits")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert [e.kind for e in w.unwritten] == ["second"]
    manifest = w.close()
    recs = list(Session(w.path).records())
    assert [r.kind for r in recs if isinstance(r, EventRecord)] == ["first", "third"]
    assert [e["kind"] for e in manifest["unwritten_events"]] == ["second"]


# ------------------------------------------------------------------------ 4. a damaged session


@pytest.fixture(scope="module")
def clean_session(rig: Rig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short audit with uploads that carry the IMEI (so bodies to scan) and a packet
    capture (the handset has root and tcpdump)."""
    out = tmp_path_factory.mktemp("clean") / "captures"
    imei = rig.world.device.profile.identifiers.imei

    def upload() -> None:
        for n in range(3):
            rig.post(json.dumps({"n": n, "deviceInfo": {"imei": imei}}).encode())

    thread, _ = when(lambda: has_event(out, "scenario_step"), upload, 30)
    try:
        res = audit(rig, out, duration="3s")
    finally:
        thread.join(10)
        _kill_mitmdump(out)
    assert (res.status, res.restored) == ("complete", True)
    assert device_state(rig.world) == rig.baseline
    assert_verifies(res.session)
    return res.session


@dataclass
class Damaged:
    session: Path
    flows_line: int  # the line cut in the middle
    body: str  # the deleted body, relative to the session
    pcap: str  # the cut packet capture


def damage(clean: Path, to: Path) -> Damaged:
    """A copy of ``clean`` with flows.jsonl cut in the middle of a line, a body deleted (one
    that a record before the cut refers to) and the packet capture cut."""
    session = Path(shutil.copytree(clean, to / clean.name))
    flows = session / FLOWS
    lines = flows.read_bytes().splitlines(keepends=True)
    cut = next(n for n in range(len(lines) - 1, 0, -1) if bodies_of(lines[:n]))
    flows.write_bytes(b"".join(lines[:cut]) + lines[cut][: len(lines[cut]) // 2])
    body = session / bodies_of(lines[:cut])[0]
    body.unlink()
    (pcap,) = sorted((session / "packets").glob("*.pcap"))
    pcap.write_bytes(pcap.read_bytes()[: pcap.stat().st_size // 2 + 7])
    rel = body.relative_to(session).as_posix()
    return Damaged(session, cut + 1, rel, pcap.relative_to(session).as_posix())


def bodies_of(lines: list[bytes]) -> list[str]:
    """The bodies the HTTP records among ``lines`` refer to, in order."""
    out = []
    for line in lines:
        rec = json.loads(line)
        for part in ("request_body", "response_body"):
            if rec.get("type") == "http" and rec.get(part):
                out.append(f"bodies/{rec[part]['sha256']}.zst")
    return list(dict.fromkeys(out))


def test_verify_names_each_damaged_file(clean_session: Path, tmp_path: Path) -> None:
    d = damage(clean_session, tmp_path)
    done = run_cli("verify", str(d.session), "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    out = json.loads(done.stdout)
    assert out["ok"] is False
    assert set(out["changed"]) == {FLOWS, d.pcap}
    assert out["missing"] == [d.body]
    text = run_cli("verify", str(d.session))
    assert text.returncode == 1
    for name in (FLOWS, d.pcap, d.body):
        assert name in text.stdout + text.stderr


def test_verify_notices_an_edited_manifest(clean_session: Path, tmp_path: Path) -> None:
    session = Path(shutil.copytree(clean_session, tmp_path / clean_session.name))
    m = json.loads((session / "manifest.json").read_text())
    m["device"]["model"] = "something else"
    (session / "manifest.json").write_text(json.dumps(m, indent=2))
    assert run_cli("verify", str(session)).returncode == 1


def test_analyze_reports_on_a_damaged_session_and_says_what_it_could_not_read(
    clean_session: Path, tmp_path: Path
) -> None:
    d = damage(clean_session, tmp_path)
    m = json.loads((d.session / "manifest.json").read_text())
    m["notes"] = "edited after the audit"
    (d.session / "manifest.json").write_text(json.dumps(m, indent=2))
    # and one more body, altered rather than deleted
    kept = (d.session / FLOWS).read_bytes().splitlines(keepends=True)[:-1]
    altered = d.session / next(b for b in bodies_of(kept) if b != d.body)
    altered.write_bytes(altered.read_bytes()[:-3])
    report = tmp_path / "report"
    done = run_cli("analyze", str(d.session), "--out", str(report), "--json")
    assert done.returncode == 0, done.stderr
    warnings = json.loads((report / "findings.json").read_text())["warnings"]
    text = "\n".join(warnings)
    assert f"line {d.flows_line} is truncated" in text, warnings
    assert f"{d.body}: missing" in text, warnings
    assert f"bodies/{altered.name}: damaged" in text, warnings
    assert Path(d.pcap).name in text, warnings
    assert (report / "report.html").is_file()


def test_session_reader_survives_edited_lines(clean_session: Path, tmp_path: Path) -> None:
    """Lines edited into valid JSON that is no record, or into garbage, become warnings; the
    records around them are still read."""
    session = Path(shutil.copytree(clean_session, tmp_path / clean_session.name))
    flows = session / FLOWS
    lines = flows.read_bytes().splitlines(keepends=True)
    bad = [
        b'{"type":"http","request_headers":[[]]}\n',
        b'{"type":"event"}\n',
        b"\xff\xfe not utf-8 \x00\n",
        b"[1, 2, 3]\n",
    ]
    flows.write_bytes(b"".join(lines[:2] + bad + lines[2:]))
    recs, warnings = read(session)
    assert len(recs) == len(lines)
    assert [w.split(":")[1].strip() for w in warnings] == [f"line {n}" for n in range(3, 7)]


def test_a_broken_manifest_can_still_be_opened_for_analysis(
    clean_session: Path, tmp_path: Path
) -> None:
    session = Path(shutil.copytree(clean_session, tmp_path / clean_session.name))
    (session / "manifest.json").write_text('{"session_id": "x", "device": ')
    done = run_cli("verify", str(session))
    assert done.returncode == 1 and "manifest" in done.stderr
    lenient = Session(session, lenient=True)
    assert lenient.manifest["status"] == "unknown"
    recs = list(lenient.records())
    assert recs and "unreadable manifest" in lenient.warnings[0]


# ------------------------------------------------------------- 5. SIGINT and SIGTERM, every step

STEPS = ["proxy", "packets", "setup-ca", "setup-proxy", "canary", "scenario", "restore"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("step", STEPS)
def test_interrupted_at_every_step_restores_and_closes(
    step: str, sig: signal.Signals, rig: Rig, captures: Path, tmp_path: Path
) -> None:
    argv = cli(
        "audit", "-s", rig.serial, "--duration", "1s" if step == "restore" else "30s",
        "--port", str(free_port()), "--out", str(captures), "--confdir", str(rig.confdir),
        "--packets", "auto" if step == "packets" else "off", "--no-analyze", "--json",
        *upstream_args(rig.world),
    )  # fmt: skip
    env = {**os.environ, "HOME": str(tmp_path)}  # its lock and nothing else under this HOME
    if step != "scenario":  # the scenario is waited for as it is, by its first step
        env[TEST_PAUSE_ENV] = step
    stderr = tmp_path / "stderr"

    def reached() -> bool:
        if step == "scenario":
            return has_event(captures, "scenario_step")
        return has_event(captures, "test_pause", at=step)

    with open(stderr, "wb") as err:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err)
        try:
            assert wait_until(reached, 45, 0.05), (proc.poll(), stderr.read_text())
            sent = time.monotonic()
            proc.send_signal(sig)
            out, _ = proc.communicate(timeout=60)
            took = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert proc.returncode == 130, stderr.read_text()
    result = json.loads(out)
    assert (result["stopped_by"], result["restored"]) == ("signal", True), stderr.read_text()
    # a signal during the restore is held until the restore is done: the capture was whole
    assert result["status"] == ("complete" if step == "restore" else "incomplete")
    assert took < 20
    assert device_state(rig.world) == rig.baseline
    session = the_session(captures)
    recs, warnings = read(session)
    assert warnings == []
    assert not pid_alive(mitmdump_pid(recs))
    held = events(recs, "signal_during_restore")
    assert (bool(held), bool(events(recs, "audit_interrupted"))) == (
        (True, False) if step == "restore" else (False, True)
    )
    m = Session(session).manifest
    assert (m["status"], m["stopped_by"], m["restored"]) == (result["status"], "signal", True)
    assert RestoreJournal.in_session(session).pending() == []
    assert_verifies(session)
