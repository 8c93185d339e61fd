"""``--packets pcapdroid`` end to end: a real adb server, the virtual handset with PCAPdroid
installed, :func:`start_pcapdroid` setting up the collector, ``adb reverse`` and PCAPdroid's
TCP exporter, traffic from several apps, and the session's pcap read back into flows whose
``uid``/``app`` columns come from PCAPdroid's trailer. Every change to the phone is undone, by
``stop()`` or, when the run is cut short, by the restore journal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from auditor.device.handset import Handset
from auditor.device.journal import RestoreJournal
from auditor.device.setup import restore_device
from auditor.errors import CaptureError, DeviceError
from auditor.packets import read_capture
from auditor.packets.flows import APP, NAME, SERVER_PORT, UID
from auditor.packets.live import PcapdroidSource, start_pcapdroid
from tests.e2e.conftest import adb_server, make_world  # noqa: F401 - fixtures
from tests.vhandset.adb_fixtures import wait_until
from vhandset.traffic import TrafficGenerator
from vhandset.world import VirtualWorld

WHATSAPP = (10244, "com.whatsapp")
ODM = (10112, "net.oneplus.odm")
CHROME = (10141, "com.android.chrome")
SERVICES = "dumpsys activity services com.emanuelef.remote_capture"


def capturing(h: Handset) -> bool:
    """PCAPdroid's VPN service runs: what a host can see of a capture over adb."""
    return "CaptureService" in h.sh(SERVICES).stdout


def run_jobs(world: VirtualWorld, *names: str) -> None:
    assert world.network is not None
    gen = TrafficGenerator(world.device, world.network)
    jobs = {j.name: j for j in gen.plan.jobs}
    for name in names:
        assert gen.run_job(jobs[name]) == "ok", name


def journal_lines(session: Path) -> list[dict]:
    return [json.loads(line) for line in (session / "restore.jsonl").read_text().splitlines()]


def test_pcapdroid_capture_names_the_apps_and_leaves_nothing(
    make_world,  # noqa: F811
    tmp_path: Path,
):
    world, serial = make_world("oneplus-8t", traffic=False)
    h = Handset(serial)
    journal = RestoreJournal.in_session(tmp_path)
    source = start_pcapdroid(h, tmp_path, journal)
    try:
        port = source.port
        assert port is not None
        assert h.reverse_list() == {f"tcp:{port}": f"tcp:{port}"}
        assert capturing(h)
        settings = world.device.pcapdroid.settings
        assert settings is not None and settings.dump_mode == "tcp_exporter"
        assert settings.collector == ("127.0.0.1", port) and settings.trailer
        changes = journal.changes()
        assert [c.undo["kind"] for c in changes] == ["reverse", "am_start"]
        assert all(c.applied and c.serial == serial for c in changes)
        assert changes[1].undo == {
            "kind": "am_start",
            "component": "com.emanuelef.remote_capture/.activities.CaptureCtrl",
            "extras": {"action": "stop"},
        }
        run_jobs(world, "user-app", "dns")
        h.sh("am start -a android.intent.action.VIEW -d http://example.org/pcapdroid")
        assert wait_until(
            lambda: {WHATSAPP, ODM, CHROME} <= {(a.uid, a.app) for a in source.stats.apps}, 15
        ), source.stats
    finally:
        stats = source.stop()
    # undone on the phone, by stop()
    assert h.reverse_list() == {}
    assert not capturing(h) and not world.device.pcapdroid.running
    assert stats.files == ("packets/pcapdroid-001.pcap",)
    assert (stats.running, stats.errors, stats.interruptions, stats.lost) == (False, (), 0, 0)
    # every packet carried the trailer, and the counts agree with the file
    assert sum(a.packets for a in stats.apps) == stats.packets
    result = read_capture(tmp_path / stats.files[0])
    flows = result.flows
    assert len(flows) >= 3 and (flows[UID] >= 0).all()
    owners = {
        (int(port), int(uid), str(app))
        for port, uid, app in zip(flows[SERVER_PORT], flows[UID], flows[APP], strict=True)
    }
    assert (443, *WHATSAPP) in owners
    assert (53, *ODM) in owners
    assert (80, *CHROME) in owners
    whatsapp = flows[(flows[UID] == WHATSAPP[0]) & (flows[SERVER_PORT] == 443)]
    assert "crashlogs.whatsapp.net" in set(whatsapp[NAME])  # the real TLS ClientHello's SNI
    assert {app for _, _, app in owners} <= {WHATSAPP[1], ODM[1], CHROME[1]}
    # PCAPdroid wrote what it captured, as the phone counted it
    assert world.device.pcapdroid.status().packets == stats.packets


def test_an_interrupted_run_is_undone_by_the_journal(
    make_world,  # noqa: F811
    tmp_path: Path,
):
    world, serial = make_world("oneplus-8t", traffic=False)
    h = Handset(serial)
    journal = RestoreJournal.in_session(tmp_path)
    source = start_pcapdroid(h, tmp_path, journal)
    try:
        with pytest.raises(RuntimeError):
            try:
                run_jobs(world, "dns")
                raise RuntimeError("the audit fails between start and stop")
            finally:
                # what `auditor restore` does after a crash: only the journal, no stop()
                report = restore_device(h, journal)
        assert report.ok, report.failed
        assert {c.undo["kind"] for c in report.undone} == {"reverse", "am_start"}
        assert h.reverse_list() == {}
        assert not capturing(h) and not world.device.pcapdroid.running
        assert journal.pending() == []
    finally:
        source.stop()


def test_start_undoes_itself_when_pcapdroid_never_connects(
    make_world,  # noqa: F811
    tmp_path: Path,
):
    """A real phone waits for the user to allow the request; here the request fails because
    PCAPdroid is disabled (its activity does not resolve)."""
    world, serial = make_world("oneplus-8t", traffic=False)
    h = Handset(serial)
    world.device.packages["com.emanuelef.remote_capture"].enabled = 2
    journal = RestoreJournal.in_session(tmp_path)
    source = PcapdroidSource(h, tmp_path, journal, connect_timeout=2)
    with pytest.raises(DeviceError, match="PCAPdroid did not start"):
        source.start()
    assert h.reverse_list() == {}
    assert not source.stats.running
    assert [c.undo["kind"] for c in journal.changes()] == ["reverse", "am_start"]
    assert [line["op"] for line in journal_lines(tmp_path)] == ["change", "applied", "change"]


def test_start_waits_for_pcapdroid_to_connect(
    make_world,  # noqa: F811
    tmp_path: Path,
):
    """PCAPdroid started but its exporter cannot connect (the VPN has no network here): the
    collector never hears from it, and start() fails with what to do on the phone."""
    world, serial = make_world("oneplus-8t", traffic=False)
    world.device.packet_log = None
    h = Handset(serial)
    source = PcapdroidSource(h, tmp_path, RestoreJournal.in_session(tmp_path), connect_timeout=2)
    with pytest.raises(CaptureError, match="allow PCAPdroid's request"):
        source.start()
    assert h.reverse_list() == {} and not capturing(h)


def test_without_pcapdroid_the_error_says_how_to_install_it(
    make_world,  # noqa: F811
    tmp_path: Path,
):
    _, serial = make_world("xiaomi-mi10t", traffic=False)
    journal = RestoreJournal.in_session(tmp_path)
    with pytest.raises(DeviceError, match=r"not installed: install PCAPdroid 1\.8\.6 or later"):
        start_pcapdroid(Handset(serial), tmp_path, journal)
    assert journal.changes() == []
    assert not (tmp_path / "packets").exists()


def test_an_app_filter_that_is_not_installed_is_refused(
    make_world,  # noqa: F811
    tmp_path: Path,
):
    _, serial = make_world("oneplus-8t", traffic=False)
    journal = RestoreJournal.in_session(tmp_path)
    with pytest.raises(DeviceError, match=r"org\.example\.absent is not installed"):
        start_pcapdroid(Handset(serial), tmp_path, journal, app_filter="org.example.absent")
    assert journal.changes() == []


def test_auto_without_root_names_pcapdroid_and_does_not_start_it(
    make_world,  # noqa: F811
    tmp_path: Path,
):
    """``--packets auto`` on an unrooted phone that has PCAPdroid: no capture, and the note
    says how to get one; PCAPdroid is not started behind the user's back (on a real phone it
    asks for a VPN). A phone without PCAPdroid gets no such hint."""
    from auditor.audit import _pcapdroid_hint, _start_packets
    from auditor.session import SessionWriter

    _, xiaomi = make_world("xiaomi-mi10t", traffic=False)
    assert _pcapdroid_hint(Handset(xiaomi)) == ""
    for profile in ("oneplus-8t", "huawei-p40"):
        _, serial = make_world(profile, traffic=False)
        h = Handset(serial)
        assert h.root_method() is None
        writer = SessionWriter.create(tmp_path / profile)
        journal = RestoreJournal.in_session(writer.path)
        notes: list[str] = []
        assert _start_packets(h, writer, journal, "auto", notes) is None
        assert len(notes) == 1 and "no packet capture" in notes[0]
        assert "PCAPdroid is installed: --packets pcapdroid" in notes[0]
        assert journal.changes() == [] and not capturing(h)
        writer.close()
