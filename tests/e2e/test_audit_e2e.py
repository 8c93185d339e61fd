"""The whole audit loop with every real part: a private adb server, mitmdump with the recorder,
the virtual handset (its ADB daemon, network stack and background traffic) and the offline
internet behind mitmdump in upstream mode. ``auditor audit`` runs in this process through
:func:`run_audit` and as a CLI subprocess (for the signals); ``auditor demo`` runs as a
subprocess with its own adb server and handset.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

import auditor.audit
from auditor.audit import AuditOptions, AuditResult, run_audit
from auditor.evidence.verify import verify_session
from auditor.records import EventRecord, HttpRecord, Record, TlsFailedRecord
from auditor.session import TLS_KEYLOG, Session
from tests.conftest import free_port
from tests.e2e.conftest import WorldFactory
from tests.vhandset.adb_fixtures import AdbServer, pid_alive, wait_until
from tests.vhandset.upstream import upstream_args, upstream_of
from vhandset.traffic import load_plan
from vhandset.world import VirtualWorld

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
XIAOMI_HOSTS = re.compile(r"(^|\.)(xiaomi|miui)\.com$")
BLOCKLIST_SIZE = 449  # MiAdBlacklistConfig as the Lithuanian NCSC saw it (services.yaml)
# At 4x the blocklist job runs every 10 s +-30 %, at once on the PROXY_CHANGE broadcast, which
# comes before the CA is installed. 15 s of capture hold its next run for certain; 10 s do not.
XIAOMI_DURATION = "15s"


@pytest.fixture(autouse=True, scope="module")
def private_locks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The per-device audit locks live in a temporary folder, not in ~/.auditor."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(auditor.audit, "LOCK_DIR", tmp_path_factory.mktemp("locks"))
        yield


# ----------------------------------------------------------------------------------- helpers


def device_state(world: VirtualWorld) -> dict[str, Any]:
    """What an audit changes on the handset, and must put back."""
    dev = world.device
    with dev.lock:
        settings = {ns: dict(values) for ns, values in dev.settings.items()}
        reverse = dict(dev.reverse)
    return {
        "settings": settings,
        "http_proxy": settings["global"].get("http_proxy"),
        "private_dns_mode": settings["global"].get("private_dns_mode"),
        "reverse": reverse,
        "mounts": dev.run("cat /proc/mounts").out,
        "downloads": dev.run("ls -a /sdcard/Download").out,
        "local_tmp": dev.run("ls -a /data/local/tmp").out,
        "system_cas": dev.trusted_ca_files(),
        "user_cas": dev.user_ca_files(),
    }


def audit(serial: str, out: Path, tmp: Path, on_progress: Any = None, **kw: Any) -> AuditResult:
    kw.setdefault("port", free_port())
    opts = AuditOptions(serial=serial, scenario="idle", out=out, confdir=tmp / "mitm", **kw)
    return run_audit(opts, on_progress)


def records(session: Path) -> list[Record]:
    sess = Session(session)
    recs = list(sess.records())
    assert sess.warnings == []
    return recs


def https_flows(recs: list[Record], host: str | re.Pattern[str]) -> list[HttpRecord]:
    def match(h: str) -> bool:
        return bool(host.search(h)) if isinstance(host, re.Pattern) else h == host

    return [
        r
        for r in recs
        if isinstance(r, HttpRecord)
        and r.scheme == "https"
        and r.status in (200, 204)
        and match(r.host)
    ]


def tls_failed(recs: list[Record]) -> list[TlsFailedRecord]:
    return [r for r in recs if isinstance(r, TlsFailedRecord)]


def events(recs: list[Record], kind: str) -> list[EventRecord]:
    return [r for r in recs if isinstance(r, EventRecord) and r.kind == kind]


def mitmdump_pid(recs: list[Record]) -> int:
    (ev,) = events(recs, "proxy_listening")
    return int(ev.data["pid"])


def _kill_mitmdump(captures: Path) -> None:
    """If the audit died without stopping its mitmdump, stop it (by its PID)."""
    for flows in captures.glob("*/flows.jsonl"):
        for line in flows.read_text(errors="replace").splitlines():
            if '"kind":"proxy_listening"' in line:
                pid = int(json.loads(line)["data"]["pid"])
                if pid_alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


def plan_hosts(profile: str) -> set[str]:
    hosts = set()
    for job in load_plan(profile).jobs:
        if job.request is not None:
            hosts.add(urlsplit(job.request.url).hostname or "")
        if job.host:
            hosts.add(job.host)
    return hosts - {""}


def walk(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, dict):
        for v in value.values():
            yield from walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk(v)


def assert_closed_and_restored(
    res: AuditResult, before: dict[str, Any], after: dict[str, Any]
) -> None:
    assert res.restored
    assert after == before
    manifest = Session(res.session).manifest
    assert manifest["status"] == res.status and manifest["ended_at"]
    assert manifest["restored"] is True
    paths = {a["path"] for a in manifest["artifacts"]}
    assert {"flows.jsonl", "restore.jsonl", "logcat.txt", "sockets.jsonl", TLS_KEYLOG} <= paths
    keylog = Path(res.session) / TLS_KEYLOG  # mitmdump's TLS secrets: owner only
    assert keylog.stat().st_mode & 0o077 == 0 and keylog.stat().st_size > 0
    ver = verify_session(res.session)
    assert ver.ok, ver.to_dict()


# ------------------------------------------------------------------- the Xiaomi's idle audit


@dataclass
class XiaomiAudit:
    world: VirtualWorld
    result: AuditResult
    before: dict[str, Any]
    after: dict[str, Any]
    records: list[Record]
    port: int
    progress: list[tuple[str, int | None, int]]  # (phase, packets, dropped) as reported

    @property
    def session(self) -> Path:
        return self.result.session

    def uid(self, package: str) -> int:
        found = self.world.device.package_uid(package)
        assert found is not None
        return found


@pytest.fixture(scope="module")
def xiaomi(
    adb_server: AdbServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[XiaomiAudit]:
    """One 15 s idle audit of the virtual Xiaomi (traffic at 4x), shared by the tests below;
    the handset is stopped before they look at the session."""
    tmp = tmp_path_factory.mktemp("xiaomi")
    world = VirtualWorld("xiaomi-mi10t", port=0, speed=4.0).start()
    serial = world.info().adb_address
    try:
        adb_server.text("connect", serial)
        assert adb_server.wait_state(serial, "device", 15), adb_server.states()
        before = device_state(world)
        port = free_port()
        progress: list[tuple[str, int | None, int]] = []
        res = audit(
            serial,
            tmp / "captures",
            tmp,
            lambda p: progress.append((p.phase, p.packets, p.packets_dropped)),
            duration=XIAOMI_DURATION,
            port=port,
            **upstream_of(world),
        )
        after = device_state(world)
    finally:
        adb_server.text("disconnect", serial)
        world.stop()
    yield XiaomiAudit(world, res, before, after, records(res.session), port, progress)


def test_xiaomi_audit_shows_live_packet_counts(xiaomi: XiaomiAudit) -> None:
    """The progress the CLI shows carries the packet capture's counts as they grow, and its
    last report shows what the capture said of itself when it stopped: the packets, and the
    dropped and lost ones (tcpdump stopping may cut its last record), never hidden."""
    seen = [(packets, dropped) for _, packets, dropped in xiaomi.progress if packets is not None]
    assert seen, "no progress report carried packet counts"
    counts = [p for p, _ in seen]
    assert counts == sorted(counts) and counts[0] < counts[-1]
    (stopped,) = events(xiaomi.records, "packets_stopped")
    assert seen[-1] == (stopped.data["packets"], stopped.data["dropped"] + stopped.data["lost"])


def test_xiaomi_audit_completes_restores_and_verifies(xiaomi: XiaomiAudit) -> None:
    res = xiaomi.result
    assert (res.status, res.stopped_by) == ("complete", "scenario_done")
    assert res.canary_seen
    assert_closed_and_restored(res, xiaomi.before, xiaomi.after)
    assert xiaomi.before["http_proxy"] is None and xiaomi.before["reverse"] == {}
    assert "tmpfs /system/etc/security/cacerts" not in xiaomi.after["mounts"]
    assert not pid_alive(mitmdump_pid(xiaomi.records))
    # mitmdump forwarded to the handset's own offline internet, trusting its CA.
    assert events(xiaomi.records, "upstream_mode")
    assert res.manifest["capture"]["upstream"] == xiaomi.world.internet.url
    assert (res.session / "upstream-ca.pem").read_bytes() == xiaomi.world.internet.ca.cert_pem


def test_xiaomi_uploads_the_imei_in_two_encodings(xiaomi: XiaomiAudit) -> None:
    imei = xiaomi.world.device.profile.identifiers.imei
    flows = https_flows(xiaomi.records, XIAOMI_HOSTS)
    assert {"tracking.miui.com", "globalapi.ad.xiaomi.com"} <= {f.host for f in flows}
    assert all(f.tls_version and f.sni == f.host for f in flows)
    bodies = Session(xiaomi.session).bodies

    encodings = {
        "plain": imei,
        "md5": hashlib.md5(imei.encode()).hexdigest(),
        "MD5": hashlib.md5(imei.encode()).hexdigest().upper(),
        "sha256": hashlib.sha256(imei.encode()).hexdigest(),
    }
    found: set[str] = set()
    for f in flows:
        text = f.url
        if f.request_body:
            decoded = bodies.decoded(f.request_body)
            assert decoded.error is None, (f.url, decoded.error)
            text += decoded.data.decode("latin-1")
        found |= {name for name, value in encodings.items() if value in text}
    assert len(found) >= 2, found

    # Precisely: tracking.miui.com gets the IMEI in its gzip JSON body and its MD5 in the URL.
    track = [f for f in flows if f.host == "tracking.miui.com" and f.method == "POST"]
    assert track
    for f in track:
        assert f.request_body and f.request_body.encoding == "gzip"
        body = json.loads(bodies.decoded(f.request_body).data)
        assert body["deviceInfo"]["imei"] == imei
        assert parse_qs(urlsplit(f.url).query)["imei_md5"] == [encodings["md5"]]


def test_xiaomi_downloads_the_449_entry_blocklist(xiaomi: XiaomiAudit) -> None:
    gets = [
        f
        for f in https_flows(xiaomi.records, "globalapi.ad.xiaomi.com")
        if f.method == "GET" and "MiAdBlacklistConfig" in f.url
    ]
    assert gets, "no decrypted MiAdBlacklistConfig download"
    bodies = Session(xiaomi.session).bodies
    for f in gets:
        assert f.response_body is not None
        doc = json.loads(bodies.decoded(f.response_body).data)
        lists = [
            v
            for v in walk(doc)
            if isinstance(v, list)
            and len(v) == BLOCKLIST_SIZE
            and all(isinstance(s, str) for s in v)
        ]
        assert len(lists) == 1
        assert "Free Tibet" in lists[0] and len(set(lists[0])) == BLOCKLIST_SIZE


def test_xiaomi_pinned_app_refuses_the_proxy(xiaomi: XiaomiAudit) -> None:
    failed = [r for r in tls_failed(xiaomi.records) if r.sni == "play.googleapis.com"]
    assert failed and all(r.side == "client" for r in failed)
    assert not https_flows(xiaomi.records, "play.googleapis.com")


def test_xiaomi_logcat_and_sockets_are_recorded(xiaomi: XiaomiAudit) -> None:
    session = xiaomi.session
    logcat = (session / "logcat.txt").read_text(errors="replace").splitlines()
    assert len(logcat) > 10
    assert any(
        re.search(r"analytics-track: POST https://tracking\.miui\.com\S* -> 200 via reverse", line)
        for line in logcat
    )
    assert any("Trust anchor for certification path not found" in line for line in logcat)

    port = xiaomi.port
    snaps = [json.loads(line) for line in (session / "sockets.jsonl").read_text().splitlines()]
    assert len(snaps) >= 5 and all(s["ts"] for s in snaps)
    toward_proxy = {
        e[6] for s in snaps for e in s["entries"] if e[3] == "127.0.0.1" and e[4] == port
    }
    plan = load_plan("xiaomi-mi10t")
    http_apps = {xiaomi.uid(j.app) for j in plan.jobs if j.transport == "http"}
    assert toward_proxy & http_apps, (toward_proxy, http_apps)
    assert xiaomi.uid("com.miui.analytics") in toward_proxy


def test_xiaomi_manifest_holds_device_and_scenario(xiaomi: XiaomiAudit) -> None:
    m = Session(xiaomi.session).manifest
    dev = m["device"]
    ids = xiaomi.world.device.profile.identifiers
    values = {i["name"]: i["value"] for i in dev["identifiers"]}
    assert values["imei"] == ids.imei
    assert values["android_id"] == ids.android_id
    assert values["serial"] == ids.serial
    assert values["wifi_mac"] == ids.wifi_mac
    assert (dev["manufacturer"], dev["model"], dev["virtual"]) == ("Xiaomi", "M2007J3SG", True)
    assert dev["properties"]["ro.auditor.virtual"] == "1"
    uids = {p["name"]: p["uid"] for p in dev["packages"]}
    assert uids["com.miui.analytics"] == xiaomi.uid("com.miui.analytics")
    sc = m["scenario"]
    assert (sc["name"], sc["source"]) == ("idle", "preset:idle")
    assert sc["parameters"] == {"duration": XIAOMI_DURATION}
    assert sc["steps"] == [{"kind": "idle", "duration": 15.0}]
    assert events(xiaomi.records, "scenario_step")


# ------------------------------------------------------------------------- --ca user / system


def test_ca_user_leaves_system_apps_opaque(
    make_world: WorldFactory, captures: Path, tmp_path: Path
) -> None:
    world, serial = make_world("xiaomi-mi10t", speed=4.0)
    before = device_state(world)
    res = audit(serial, captures, tmp_path, duration="8s", ca="user", **upstream_of(world))
    after = device_state(world)
    assert res.status == "complete"
    assert_closed_and_restored(res, before, after)
    recs = records(res.session)
    failed_snis = {r.sni for r in tls_failed(recs) if r.sni}
    assert {s for s in failed_snis if XIAOMI_HOSTS.search(s)}, failed_snis
    assert "tracking.miui.com" in failed_snis
    assert not https_flows(recs, "tracking.miui.com")
    system_hosts = {
        urlsplit(j.request.url).hostname
        for j in load_plan("xiaomi-mi10t").jobs
        if j.request and j.trust == "system"
    }
    assert not [f.host for f in https_flows(recs, re.compile(".")) if f.host in system_hosts]
    spotify = https_flows(recs, "spclient.wg.spotify.com")
    assert spotify, "the user app's upload was not decrypted"
    assert spotify[0].request_body and spotify[0].request_body.encoding == "zstd"


def test_ca_system_decrypts_system_apps(
    make_world: WorldFactory, captures: Path, tmp_path: Path
) -> None:
    world, serial = make_world("xiaomi-mi10t", speed=4.0)
    before = device_state(world)
    res = audit(serial, captures, tmp_path, duration="6s", ca="system", **upstream_of(world))
    after = device_state(world)
    assert res.status == "complete"
    assert_closed_and_restored(res, before, after)
    recs = records(res.session)
    assert https_flows(recs, "tracking.miui.com")


def test_an_app_reconnecting_on_proxy_change_is_decrypted(
    make_world: WorldFactory, captures: Path, tmp_path: Path
) -> None:
    world, serial = make_world("xiaomi-mi10t", traffic=False)
    assert world.network is not None
    net = world.network
    analytics = world.device.package_uid("com.miui.analytics")
    assert analytics is not None
    outcomes: list[object] = []

    def reconnect(kind: str, data: dict[str, Any]) -> None:
        # An app whose receiver of PROXY_CHANGE uploads at once, as the broadcast arrives.
        if kind == "proxy_changed" and str(data.get("value", "")).startswith("127.0.0.1:"):
            try:
                url = "https://tracking.miui.com/track/v4?on=proxy_change"
                outcomes.append(net.fetch(analytics, "POST", url, body=b"{}", timeout=5).status)
            except Exception as exc:
                outcomes.append(type(exc).__name__)

    world.device.add_listener(reconnect)
    res = audit(serial, captures, tmp_path, duration="1s", ca="system", **upstream_of(world))
    assert res.restored
    recs = records(res.session)
    assert outcomes == [200]
    assert not [r for r in tls_failed(recs) if r.sni == "tracking.miui.com"]
    assert https_flows(recs, "tracking.miui.com")


# ------------------------------------------------------------------- SIGINT and SIGTERM in CLI


def test_cli_upstream_options_reach_mitmdump(
    make_world: WorldFactory, captures: Path, tmp_path: Path
) -> None:
    """``auditor audit --upstream URL --upstream-ca FILE``: the running mitmdump is in upstream
    mode to URL and verifies the servers behind it with the session's copy of FILE; the flows
    went through the upstream (the offline internet saw them)."""
    world, serial = make_world("pixel-android14", speed=4.0)
    argv = [
        sys.executable, "-m", "auditor.cli", "audit", "-s", serial, "--duration", "3s",
        "--port", str(free_port()), "--out", str(captures), "--confdir", str(tmp_path / "mitm"),
        "--no-analyze", "--json", *upstream_args(world),
    ]  # fmt: skip
    env = {**os.environ, "HOME": str(tmp_path)}
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    cmdline: list[str] = []
    try:

        def mitmdump_running() -> bool:
            for flows in captures.glob("*/flows.jsonl"):
                for line in flows.read_text(errors="replace").splitlines():
                    if '"kind":"proxy_listening"' in line:
                        pid = int(json.loads(line)["data"]["pid"])
                        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
                        cmdline.extend(a.decode() for a in raw.split(b"\0") if a)
                        return True
            return False

        assert wait_until(mitmdump_running, 45.0, 0.05), proc.poll()
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        _kill_mitmdump(captures)
    assert proc.returncode == 0, err.decode(errors="replace")
    (session,) = captures.iterdir()
    mode = cmdline[cmdline.index("--mode") + 1]
    assert mode == f"upstream:{world.internet.url}"
    trusted = session / "upstream-ca.pem"
    assert f"ssl_verify_upstream_trusted_ca={trusted}" in cmdline
    assert trusted.read_bytes() == world.internet.ca.cert_pem
    assert Session(session).manifest["capture"]["upstream"] == world.internet.url
    assert world.internet.requests()  # what the phone sent reached the upstream


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_audit_restores_and_closes(
    sig: signal.Signals, make_world: WorldFactory, captures: Path, tmp_path: Path
) -> None:
    world, serial = make_world("xiaomi-mi10t", speed=4.0)
    before = device_state(world)
    argv = [
        sys.executable, "-m", "auditor.cli", "audit", "-s", serial, "--duration", "60s",
        "--port", str(free_port()), "--out", str(captures), "--confdir", str(tmp_path / "mitm"),
        "--json", *upstream_args(world),
    ]  # fmt: skip
    env = {**os.environ, "HOME": str(tmp_path)}  # its lock and nothing else under this HOME
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:

        def scenario_started() -> bool:
            return any(
                b'"kind":"scenario_step"' in p.read_bytes() for p in captures.glob("*/flows.jsonl")
            )

        assert wait_until(scenario_started, 45.0, 0.1), proc.poll()
        started = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        stop_seconds = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        _kill_mitmdump(captures)
    # An interrupted audit that restored the device exits 130 (interrupted), prints its
    # result (stopped_by "signal", status "incomplete") and leaves a closed session.
    assert proc.returncode == 130, err.decode(errors="replace")
    result = json.loads(out)
    assert (result["stopped_by"], result["status"], result["restored"]) == (
        "signal",
        "incomplete",
        True,
    )
    assert stop_seconds < 20
    after = device_state(world)
    assert after == before
    (session,) = captures.iterdir()
    assert result["session"] == str(session)
    m = Session(session).manifest
    assert (m["status"], m["stopped_by"], m["restored"]) == ("incomplete", "signal", True)
    assert m["ended_at"] and m["artifacts"]
    recs = records(session)
    assert events(recs, "audit_interrupted") and events(recs, "device_restored")
    assert not events(recs, "scenario_finished")
    assert not pid_alive(mitmdump_pid(recs))
    verify = subprocess.run(
        [sys.executable, "-m", "auditor.cli", "verify", str(session)],
        cwd=REPO,
        capture_output=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.startswith(b"OK:")


# ----------------------------------------------------------------------------- every profile


@pytest.mark.parametrize("profile", ["xiaomi-mi10t", "huawei-p40", "oneplus-8t", "pixel-android14"])
def test_every_profile_survives_a_short_audit(
    profile: str, make_world: WorldFactory, captures: Path, tmp_path: Path
) -> None:
    world, serial = make_world(profile, speed=4.0)
    before = device_state(world)
    res = audit(serial, captures, tmp_path, duration="5s", **upstream_of(world))
    after = device_state(world)
    assert (res.status, res.stopped_by) == ("complete", "scenario_done")
    assert res.canary_seen
    assert_closed_and_restored(res, before, after)
    recs = records(res.session)
    hosts = plan_hosts(profile)
    seen = {r.host for r in recs if isinstance(r, HttpRecord)}
    seen |= {r.sni for r in tls_failed(recs) if r.sni}
    assert seen & hosts, (seen, hosts)


# --------------------------------------------------------------------------------- auditor demo


def _processes() -> dict[int, str]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                raw = Path(f"/proc/{entry}/cmdline").read_bytes()
                if raw:
                    out[int(entry)] = raw.replace(b"\0", b" ").decode(errors="replace")
    return out


def test_demo_runs_the_whole_loop_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "captures"
    home = tmp_path / "home"  # its adb key, not the user's
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ANDROID_ADB_SERVER_PORT"}
    env["HOME"] = str(home)
    argv = [sys.executable, "-m", "auditor.cli", "demo", "--duration", "10s", "--json"]
    before = _processes()
    started = time.monotonic()
    proc = subprocess.Popen(
        [*argv, "--out", str(out), "--reports", str(tmp_path / "reports")],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate(timeout=10)
    wall = time.monotonic() - started
    err = stderr.decode(errors="replace")
    # adb prints the port of the server it starts; mitmdump's command line names the session.
    ports = set(re.findall(r"starting now at tcp:(\d+)", err))

    def leftovers() -> dict[int, str]:
        return {
            pid: cmd
            for pid, cmd in _processes().items()
            if pid not in before and (any(f"tcp:{p} " in cmd for p in ports) or str(out) in cmd)
        }

    gone = wait_until(lambda: not leftovers(), 5.0)
    strays = leftovers()
    for pid in strays:  # never leave them running, even when the test fails
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    print(f"auditor demo --duration 10s: {wall:.1f}s wall time")

    assert proc.returncode == 0, err
    assert len(ports) == 1, err
    assert gone, strays
    result = json.loads(stdout)
    assert result["verified"] is True and result["restored"] is True
    assert (result["status"], result["canary_seen"]) == ("complete", True)
    session = Path(result["session"])
    assert session.parent == out and verify_session(session).ok
    recs = records(session)
    assert https_flows(recs, XIAOMI_HOSTS)
    assert result["summary"]["flows"] == sum(isinstance(r, HttpRecord) for r in recs)
    assert not pid_alive(mitmdump_pid(recs))
    report = Path(result["report"])
    assert report == tmp_path / "reports" / session.name / "report.html" and report.exists()
    findings = json.loads((report.parent / "findings.json").read_text())["findings"]
    assert any(f["rule"] == "identifier-sent" and f["country"] == "CN" for f in findings)


def test_xiaomi_session_analysed_shows_the_xiaomi_findings(
    xiaomi: XiaomiAudit, tmp_path: Path
) -> None:
    from auditor.analysis.engine import report_session

    report = report_session(xiaomi.session, tmp_path / "reports")
    doc = json.loads((report / "findings.json").read_text())
    by_rule: dict[str, list[dict[str, Any]]] = {}
    for f in doc["findings"]:
        by_rule.setdefault(f["rule"], []).append(f)
    ident = by_rule["identifier-sent"]
    imei_to_xiaomi = [
        f for f in ident if "imei" in f["identifiers"] and f["organisation"] == "Xiaomi Corporation"
    ]
    assert imei_to_xiaomi and all(f["severity"] == "critical" for f in imei_to_xiaomi)
    assert {e for f in imei_to_xiaomi for e in f["encodings"]} >= {"gzip > json > plain"}
    assert any(f["data"]["count"] == 449 for f in by_rule["keyword-list"])
    assert any(f["host"] == "data.mistat.intl.xiaomi.com" for f in by_rule["encrypted-upload"])
    assert any(f["host"] == "play.googleapis.com" for f in by_rule["uninspected"])
    xiaomi_ep = [e for e in doc["endpoints"] if e["organisation_id"] == "xiaomi"]
    assert xiaomi_ep and all(e["country"] == "CN" and e["state_linked"] for e in xiaomi_ep)
    assert all(e["sources"] for e in xiaomi_ep)
    assert (report / "report.html").stat().st_size > 5000


def test_xiaomi_session_analysed_with_its_decrypt_rules(
    xiaomi: XiaomiAudit, tmp_path: Path
) -> None:
    """``auditor analyze --decrypt`` with the rules file the virtual Xiaomi's key is named in:
    its AES-CBC statistics upload is read (the IMEI found in the plaintext, under the rule's
    name), findings.json names the rules file and the decrypted flows; without the rules the
    same upload yields no identifier."""
    from click.testing import CliRunner

    from auditor.cli import main

    rules = Path(__file__).parents[2] / "docs" / "examples" / "decrypt-xiaomi-sim.yaml"
    docs = {}
    for name, extra in (("plain", []), ("decrypted", ["--decrypt", str(rules)])):
        out = tmp_path / name
        res = CliRunner().invoke(
            main, ["analyze", str(xiaomi.session), "--out", str(out), "--format", "json", *extra]
        )
        assert res.exit_code == 0, res.output
        docs[name] = json.loads((out / "findings.json").read_text())
    doc = docs["decrypted"]
    assert [r["rule"] for r in doc["method"]["decrypt_rules"]["rules"]] == ["xiaomi-sim-mistat"]
    assert (
        doc["method"]["decrypt_rules"]["sha256"] == hashlib.sha256(rules.read_bytes()).hexdigest()
    )
    mistat = {
        r.id
        for r in xiaomi.records
        if isinstance(r, HttpRecord) and r.host == "data.mistat.xiaomi.com"
    }
    assert mistat and set(doc["bodies_read"]["decrypted"]) <= mistat
    assert doc["bodies_read"]["decrypted"]

    def imei_places(d: dict[str, Any]) -> list[str]:
        return [
            json.dumps(f)
            for f in d["findings"]
            if f["rule"] == "identifier-sent" and set(f.get("flow_ids") or ()) & mistat
        ]

    assert any("decrypted:xiaomi-sim-mistat" in t for t in imei_places(doc))
    assert not imei_places(docs["plain"])

    def personal(d: dict[str, Any]) -> list[dict[str, Any]]:  # from the request's decoded view
        return [
            f
            for f in d["findings"]
            if f["rule"] == "personal-data" and set(f.get("flow_ids") or ()) & mistat
        ]

    assert personal(doc) and not personal(docs["plain"])  # the view was of the plaintext
    assert "decrypt_rules" not in docs["plain"]["method"]


def test_xiaomi_dns_and_push_bypass_the_proxy(xiaomi: XiaomiAudit) -> None:
    """With --packets auto (adb-tcpdump on the rooted Xiaomi), the analyser sees the DNS
    lookups and the push channel that never reached the proxy, as flows bypassing it."""
    from auditor.analysis.engine import analyze

    assert any(p.name.startswith("adb-tcpdump-") for p in (xiaomi.session / "packets").iterdir())
    res = analyze([xiaomi.session])
    flows = res.flows
    bypass = flows[flows["bypass"].astype(bool)]
    dns = bypass[bypass["server_port"] == 53]
    assert len(dns) and set(dns["transport"]) == {"udp"}
    asked = {q for v in dns["dns_queries"] for q in str(v).split(";") if q}
    assert "tracking.miui.com" in asked
    push = bypass[bypass["server_port"] == 5222]
    named = push[push["name_evidence"] == "tls-sni"]  # a channel open before tcpdump has no SNI
    assert len(named) and all(n.endswith("xmpush.global.xiaomi.com") for n in named["name"])
    # the owner comes from a socket snapshot taken while the channel was open; one opened
    # before the poller's first snapshot has none, so only the attributed ones are checked
    assert set(push["apps"]) - {""} == {"com.xiaomi.xmsf"}
    # what went through the proxy is not counted again from the packets
    assert not (flows.loc[flows["seen_by"] == "packets", "server_ip"] == "127.0.0.1").any()
    assert not flows.loc[flows["seen_by"] == "proxy", "bypass"].any()
    xmsf = [
        f for f in res.findings if f.rule == "proxy-bypass" and f.data["app"] == "com.xiaomi.xmsf"
    ]
    assert xmsf
    # one finding per app and recipient: each cites only flows that went to the one it names
    by_id = dict(zip(flows["flow_id"], flows["organisation_name"], strict=True))
    for f in xmsf:
        assert {by_id[i] if isinstance(by_id[i], str) else None for i in f.flow_ids} == {
            f.organisation
        }
    (stats,) = res.doc["packets"][xiaomi.session.name]["capture"]
    assert stats["source"] == "adb-tcpdump" and stats["packets"] > 0
    assert res.doc["coverage"]["packets_dropped"] == stats["dropped"] == 0
    assert "Xiaomi Corporation" in {f.organisation for f in xmsf}


def test_pcapdroid_audit_of_an_unrooted_phone_names_the_bypassing_apps(
    make_world: WorldFactory, captures: Path, tmp_path: Path
) -> None:
    """--packets pcapdroid on the unrooted OnePlus: PCAPdroid's export reaches the session
    through adb reverse, its trailer names each packet's app, and the analyser reports what
    bypassed the proxy per app; the device is left as it was."""
    from auditor.analysis.engine import analyze

    world, serial = make_world("oneplus-8t", speed=4.0)
    before = device_state(world)
    res = audit(
        serial, captures, tmp_path, duration="8s", packets="pcapdroid", **upstream_of(world)
    )
    after = device_state(world)
    assert (res.status, res.stopped_by) == ("complete", "scenario_done"), res.notes
    assert_closed_and_restored(res, before, after)
    assert not world.device.pcapdroid.status().running
    assert [p.name for p in (res.session / "packets").iterdir()] == ["pcapdroid-001.pcap"]
    flows = analyze([res.session]).flows
    droid = flows[flows["seen_by"] == "packets"]
    assert len(droid) and set(droid["app_evidence"]) == {"pcapdroid"}
    assert droid["bypass"].all()
    dns = droid[droid["server_port"] == 53]
    assert len(dns) and all(a for a in dns["apps"])  # each lookup names the asking app
