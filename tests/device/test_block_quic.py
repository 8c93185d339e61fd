"""``--block-quic`` end to end: a real adb server, mitmdump, the virtual handset's iptables and
network stack, and tshark reading the session's packet capture.

The rules are read from the handset's own packet filter (not from what auditor believes it
did), and QUIC is counted by tshark, an independent reader: a QUIC client Initial with the
server's name when QUIC is not blocked, none (and the request through the proxy over TCP)
when it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import auditor.audit
from auditor.audit import AuditOptions, AuditResult, run_audit
from auditor.device.handset import Handset
from auditor.device.journal import RestoreJournal
from auditor.device.setup import QUIC_RULE, CaptureSetup, iptables_command
from auditor.errors import DeviceError
from auditor.evidence.verify import verify_session
from auditor.records import EventRecord, HttpRecord
from auditor.session import FLOWS, Session
from tests.conftest import free_port
from tests.e2e.conftest import adb_server
from tests.vhandset.adb_fixtures import AdbServer, pid_alive, wait_until
from tests.vhandset.upstream import upstream_args, upstream_of
from vhandset.world import VirtualWorld

__all__ = ["adb_server"]  # a fixture, used by name

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
TSHARK = shutil.which("tshark")
GMS = "com.google.android.gms"
CHECKIN = "https://android.clients.google.com/checkin"
CHECKIN_HOST = "android.clients.google.com"


@dataclass
class Rig:
    world: VirtualWorld
    serial: str
    confdir: Path

    def rules(self) -> dict[str, list[str]]:
        """The handset's OUTPUT rules, both families, as its own filter holds them."""
        nf = self.world.device.netfilter
        return {fam: [r.spec() for r in rules] for fam, rules in nf.rules.items()}

    def checkin(self) -> int | str:
        """Google Play services checks in: QUIC first, then HTTPS over TCP."""
        uid = self.world.device.package_uid(GMS)
        net = self.world.network
        assert uid is not None and net is not None
        try:
            return net.fetch(uid, "POST", CHECKIN, body=b"\x08\x01", timeout=10).status
        except Exception as exc:
            return type(exc).__name__


NO_RULES: dict[str, list[str]] = {"ipv4": [], "ipv6": []}
DROP = "-A OUTPUT -p udp -m udp --dport 443 -j DROP"


@pytest.fixture(autouse=True, scope="module")
def private_locks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(auditor.audit, "LOCK_DIR", tmp_path_factory.mktemp("locks"))
        yield


@pytest.fixture(scope="module")
def rig(adb_server: AdbServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    world = VirtualWorld("xiaomi-mi10t", port=0, traffic=False).start()
    serial = world.info().adb_address
    try:
        adb_server.text("connect", serial)
        assert adb_server.wait_state(serial, "device", 15), adb_server.states()
        yield Rig(world, serial, tmp_path_factory.mktemp("mitm"))
    finally:
        adb_server.text("disconnect", serial)
        world.stop()


def on_scenario(out: Path, action: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``action`` once the session under ``out`` has started its scenario."""
    got: dict[str, Any] = {}

    def started() -> bool:
        return any(b'"kind":"scenario_step"' in p.read_bytes() for p in out.glob(f"*/{FLOWS}"))

    def go() -> None:
        if wait_until(started, 60, 0.05):
            got["result"] = action()

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread, got


def audit(rig: Rig, out: Path, **kw: Any) -> AuditResult:
    opts = AuditOptions(
        serial=rig.serial,
        scenario="idle",
        duration="3s",
        out=out,
        confdir=rig.confdir,
        port=free_port(),
        canary_timeout=10.0,
        **{**upstream_of(rig.world), **kw},
    )
    return run_audit(opts)


@dataclass
class Audited:
    result: AuditResult
    during: dict[str, Any]  # the rules and the check-in's outcome, mid-scenario
    after: dict[str, list[str]]


def audited(rig: Rig, out: Path, **kw: Any) -> Audited:
    def during() -> dict[str, Any]:
        return {"rules": rig.rules(), "checkin": rig.checkin()}

    thread, got = on_scenario(out, during)
    res = audit(rig, out, **kw)
    thread.join(15)
    return Audited(res, got.get("result", {}), rig.rules())


@pytest.fixture(scope="module")
def blocked(rig: Rig, tmp_path_factory: pytest.TempPathFactory) -> Audited:
    return audited(rig, tmp_path_factory.mktemp("blocked"))  # auto: the handset has root


@pytest.fixture(scope="module")
def unblocked(rig: Rig, tmp_path_factory: pytest.TempPathFactory) -> Audited:
    return audited(rig, tmp_path_factory.mktemp("unblocked"), block_quic=False)


def quic_names(session: Path) -> list[str]:
    """The server names of the QUIC Initials in the session's packet captures, by tshark."""
    assert TSHARK is not None
    names: list[str] = []
    pcaps = sorted((session / "packets").glob("*.pcap*"))
    assert pcaps, "no packet capture in the session"
    for pcap in pcaps:
        done = subprocess.run(
            [TSHARK, "-n", "-r", str(pcap), "-Y", "quic.long.packet_type == 0",
             "-T", "fields", "-e", "tls.handshake.extensions_server_name"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        names += [line for line in done.stdout.splitlines() if line.strip()]
    return names


def proxied_checkins(session: Path) -> list[HttpRecord]:
    return [
        r
        for r in Session(session).records()
        if isinstance(r, HttpRecord) and r.host == CHECKIN_HOST and r.scheme == "https"
    ]


def events(session: Path, kind: str) -> list[EventRecord]:
    return [r for r in Session(session).records() if isinstance(r, EventRecord) and r.kind == kind]


# ------------------------------------------------------------------------------- the rules


def test_rules_are_on_the_handset_during_the_audit_and_gone_after(
    rig: Rig, blocked: Audited
) -> None:
    assert blocked.during["rules"] == {"ipv4": [DROP], "ipv6": [DROP]}
    assert blocked.after == NO_RULES
    res = blocked.result
    assert (res.status, res.restored) == ("complete", True)
    journal = RestoreJournal.in_session(res.session)
    rules = [c for c in journal.changes() if c.undo.get("kind") == "iptables"]
    assert sorted(c.undo["binary"] for c in rules) == ["ip6tables", "iptables"]
    assert all(c.applied and c.undone for c in rules)
    assert verify_session(res.session).ok


def test_the_manifest_says_quic_was_blocked_and_how(blocked: Audited, unblocked: Audited) -> None:
    m = Session(blocked.result.session).manifest
    assert m["quic"]["blocked"] is True and m["quic"]["method"] == "iptables"
    assert m["quic"]["requested"] == "auto" and len(m["quic"]["rules"]) == 2
    assert events(blocked.result.session, "quic_blocked")
    m = Session(unblocked.result.session).manifest
    assert m["quic"] == {
        "blocked": False,
        "method": None,
        "why": "--no-block-quic",
        "requested": "off",
    }
    assert events(unblocked.result.session, "quic_not_blocked")
    assert unblocked.during["rules"] == NO_RULES


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
def test_quic_is_seen_when_not_blocked(unblocked: Audited) -> None:
    assert unblocked.during["checkin"] == 200
    assert CHECKIN_HOST in quic_names(unblocked.result.session)
    # the offline internet speaks no QUIC: the app went on over TCP, through the proxy
    assert proxied_checkins(unblocked.result.session)


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
def test_blocked_quic_falls_back_to_tcp_through_the_proxy(blocked: Audited) -> None:
    assert blocked.during["checkin"] == 200
    assert quic_names(blocked.result.session) == []
    (flow,) = proxied_checkins(blocked.result.session)
    assert flow.method == "POST" and flow.status == 200


def udp_443_packets(session: Path) -> int:
    """Packets to or from UDP port 443 in the session's packet captures, by tshark."""
    assert TSHARK is not None
    count = 0
    for pcap in sorted((session / "packets").glob("*.pcap*")):
        done = subprocess.run(
            [TSHARK, "-n", "-r", str(pcap), "-Y", "udp.port == 443", "-T", "fields",
             "-e", "frame.number"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        count += sum(1 for line in done.stdout.splitlines() if line.strip())
    return count


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
def test_the_analysis_says_whether_quic_was_blocked_and_counts_what_got_through(
    blocked: Audited, unblocked: Audited
) -> None:
    """findings.json coverage.quic, checked against the manifest and tshark's count of UDP
    443 packets; the summary says it in a sentence."""
    from auditor.analysis.engine import analyze
    from auditor.analysis.report.story import build_story

    for aud, is_blocked in ((blocked, True), (unblocked, False)):
        session = aud.result.session
        doc = analyze([session]).doc
        (row,) = doc["coverage"]["quic"]
        assert row["blocked"] is is_blocked
        assert row["method"] == ("iptables" if is_blocked else None)
        seen = row["seen"]
        assert seen["udp_443_packets"] == udp_443_packets(session)
        assert (seen["udp_443_flows"] > 0) is (not is_blocked)
        if not is_blocked:
            assert seen["quic_flows_named"] >= 1  # the Initial named its server
        sentences = [s.text for s in build_story(doc).gaps]
        wanted = "was blocked by iptables" if is_blocked else "QUIC was not blocked"
        assert any(wanted in t for t in sentences), sentences


# --------------------------------------------------------------------------- the ways out


def test_rules_are_removed_after_an_exception_mid_audit(
    rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def boom(self: Any, scenario: Any) -> None:
        seen["rules"] = rig.rules()
        raise RuntimeError("boom mid-scenario")

    monkeypatch.setattr(auditor.audit.StepRunner, "run", boom)
    out = tmp_path / "captures"
    out.mkdir()
    with pytest.raises(RuntimeError, match="boom"):
        audit(rig, out)
    assert seen["rules"] == {"ipv4": [DROP], "ipv6": [DROP]}
    assert rig.rules() == NO_RULES
    (session,) = [p for p in out.iterdir() if p.is_dir()]
    assert RestoreJournal.in_session(session).pending() == []
    assert Session(session).manifest["quic"]["blocked"] is True


def _kill_mitmdump(out: Path) -> None:
    for flows in out.glob(f"*/{FLOWS}"):
        for line in flows.read_text(errors="replace").splitlines():
            if '"kind":"proxy_listening"' in line:
                pid = int(json.loads(line)["data"]["pid"])
                if pid_alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


def test_a_killed_audit_leaves_rules_that_auditor_restore_removes(rig: Rig, tmp_path: Path) -> None:
    out = tmp_path / "captures"
    out.mkdir()
    argv = [
        sys.executable, "-m", "auditor.cli", "audit", "-s", rig.serial, "--duration", "60s",
        "--port", str(free_port()), "--out", str(out), "--confdir", str(rig.confdir),
        *upstream_args(rig.world),
    ]  # fmt: skip
    env = {**os.environ, "HOME": str(tmp_path)}  # its lock and nothing else under this HOME
    proc = subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:

        def quic_blocked() -> bool:
            return any(b'"kind":"quic_blocked"' in p.read_bytes() for p in out.glob(f"*/{FLOWS}"))

        assert wait_until(quic_blocked, 60, 0.1), proc.poll()
        proc.kill()  # SIGKILL: no restore runs
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        _kill_mitmdump(out)
    assert rig.rules() == {"ipv4": [DROP], "ipv6": [DROP]}  # left behind, as a crash would
    (session,) = [p for p in out.iterdir() if p.is_dir()]
    done = subprocess.run(
        [sys.executable, "-m", "auditor.cli", "restore", "-s", rig.serial, str(session), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    undone = json.loads(done.stdout)["sessions"][0]["undone"]
    assert sum("(QUIC forced to TCP)" in what for what in undone) == 2
    assert rig.rules() == NO_RULES
    assert rig.world.device.get_setting("global", "http_proxy") in (None, "", ":0")


# ------------------------------------------------------------------- a phone without ip6tables


@pytest.mark.parametrize("required", [False, True])
def test_without_ip6tables_ipv4_is_blocked_alone_or_the_setup_refuses(
    rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, required: bool
) -> None:
    nf = rig.world.device.netfilter
    real = nf.command

    def no_ip6tables(name: str, args: list[str], is_root: bool) -> tuple[int, str, str]:
        if name == "ip6tables":
            return 127, "", "/system/bin/sh: ip6tables: inaccessible or not found\n"
        return real(name, args, is_root)

    monkeypatch.setattr(nf, "command", no_ip6tables)
    journal = RestoreJournal(tmp_path / "restore.jsonl")
    setup = CaptureSetup(
        Handset(rig.serial),
        journal,
        proxy_port=free_port(),
        ca="none",
        block_quic=True,
        quic_required=required,
    )
    if required:
        with pytest.raises(DeviceError, match="ip6tables"):
            with setup:
                pass
    else:
        with setup:
            assert rig.rules() == {"ipv4": [DROP], "ipv6": []}
            assert setup.quic["blocked"] is True and len(setup.quic["rules"]) == 1
            assert "ip6tables" in setup.quic["failed"][0]
            assert any("QUIC only partly blocked" in n for n in setup.notes)
            rig.world.device.netfilter.flush_all()  # as a reboot step leaves it
            setup.reapply_after_reboot()  # the family that had no rule is not tried again
            assert rig.rules() == {"ipv4": [DROP], "ipv6": []}
        whats = [c.what for c in journal.changes()]
        assert [w for w in whats if "QUIC" in w] == [
            f"iptables -I {' '.join(QUIC_RULE)} (QUIC forced to TCP)"
        ]
    assert rig.rules() == NO_RULES
    assert journal.pending() == []


def test_the_phones_own_rule_is_left_as_it_was(rig: Rig, tmp_path: Path) -> None:
    """An owner who already drops UDP 443: auditor adds no copy and journals nothing for that
    family, so the restore leaves the owner's rule; if a reboot step loses it, auditor's own
    (journalled) rule takes its place until the end."""
    h = Handset(rig.serial)
    h.su(iptables_command("iptables", "-I", QUIC_RULE)).check()
    journal = RestoreJournal(tmp_path / "restore.jsonl")
    setup = CaptureSetup(h, journal, proxy_port=free_port(), ca="none", block_quic=True)
    try:
        with setup:
            assert rig.rules() == {"ipv4": [DROP], "ipv6": [DROP]}  # one copy each
            assert setup.quic["blocked"] is True
            assert any("the phone's own" in r for r in setup.quic["rules"])
        assert rig.rules() == {"ipv4": [DROP], "ipv6": []}  # the owner's, kept
        whats = [c.what for c in journal.changes() if "QUIC" in c.what]
        assert whats == [f"ip6tables -I {' '.join(QUIC_RULE)} (QUIC forced to TCP)"]
        journal2 = RestoreJournal(tmp_path / "restore2.jsonl")
        setup2 = CaptureSetup(h, journal2, proxy_port=free_port(), ca="none", block_quic=True)
        with setup2:
            rig.world.device.netfilter.flush_all()  # a reboot step: every rule gone
            setup2.reapply_after_reboot()
            assert rig.rules() == {"ipv4": [DROP], "ipv6": [DROP]}
        assert rig.rules() == NO_RULES  # as the reboot left the phone
        assert len([c for c in journal2.changes() if "after a reboot" in c.what]) == 1
    finally:
        rig.world.device.netfilter.flush_all()
