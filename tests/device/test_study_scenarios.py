"""The studies' scenarios as presets (idle-after-boot, sim-insert, analytics-off) on the virtual
handset through a real adb server: what each step did is read on the handset itself (its
settings, its SIM properties, its logcat, its boot count, its packet filter), and the marks
each writes are read back from the session."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

import auditor.audit
from auditor.audit import AuditOptions, run_audit
from auditor.device.handset import Handset
from auditor.device.journal import RestoreJournal
from auditor.device.runner import StepRunner
from auditor.device.scenario import load_scenario, parse_scenario
from auditor.device.setup import restore_device
from auditor.errors import ScenarioError
from auditor.records import EventRecord
from auditor.session import Session, SessionWriter
from tests.conftest import free_port
from tests.e2e.conftest import adb_server
from tests.vhandset.adb_fixtures import AdbServer
from tests.vhandset.upstream import upstream_of
from vhandset.world import VirtualWorld

__all__ = ["adb_server"]  # a fixture, used by name

pytestmark = pytest.mark.e2e

STUDIES = ("Liu, P. Patras, D. J. Leith", "D. J. Leith", "Lithuania", "Under the Loupe")
PRESETS = ("idle-after-boot", "sim-insert", "analytics-off")


@dataclass
class Rig:
    world: VirtualWorld
    serial: str


@pytest.fixture(scope="module")
def rig(adb_server: AdbServer) -> Iterator[Rig]:
    world = VirtualWorld("xiaomi-mi10t", port=0, traffic=False).start()
    serial = world.info().adb_address
    try:
        adb_server.text("connect", serial)
        assert adb_server.wait_state(serial, "device", 15), adb_server.states()
        yield Rig(world, serial)
    finally:
        adb_server.text("disconnect", serial)
        world.stop()


@dataclass
class Run:
    writer: SessionWriter
    journal: RestoreJournal
    report: Any

    def events(self, kind: str) -> list[EventRecord]:
        recs = Session(self.writer.path).records()
        return [r for r in recs if isinstance(r, EventRecord) and r.kind == kind]

    def marks(self) -> list[str]:
        return [str(e.data["mark"]) for e in self.events("scenario_mark")]


def run_preset(rig: Rig, tmp: Path, name: str, prompt: Any = None, **params: str) -> Run:
    writer = SessionWriter.create(tmp / "captures")
    journal = RestoreJournal.in_session(writer.path)
    runner = StepRunner(Handset(rig.serial), writer, journal, prompt=prompt)
    report = runner.run(load_scenario(name, params))
    writer.detach()
    return Run(writer, journal, report)


# ------------------------------------------------------------------------------- the files


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_cites_the_studies_and_its_citations_reach_the_manifest(name: str) -> None:
    sc = load_scenario(name)
    for study in STUDIES:
        assert any(study in c for c in sc.citations), (name, study)
    assert sc.to_manifest()["citations"] == list(sc.citations)
    assert sc.steps[0].kind == "mark"


def test_a_setting_step_takes_a_value_or_bits_to_clear() -> None:
    head = "name: t\nsteps:\n  - setting: {namespace: global, key: k"
    for bad in (", value: '0', clear_bits: 1}", "}", ", value: '0', default: 1}"):
        with pytest.raises(ScenarioError, match=r"test.yaml:3: step 1 \(setting\)"):
            parse_scenario(head + bad + "\n", "test.yaml")
    with pytest.raises(ScenarioError, match="positive bit mask"):
        parse_scenario(head + ", clear_bits: 0}\n", "test.yaml")
    with pytest.raises(ScenarioError, match="a mark is a short name"):
        parse_scenario("name: t\nsteps:\n  - mark: 'two words'\n", "test.yaml")
    with pytest.raises(ScenarioError, match="citations"):
        parse_scenario("name: t\ncitations: a study\nsteps:\n  - idle: 1s\n", "test.yaml")


# ------------------------------------------------------------------------------ analytics-off


def test_analytics_off_records_what_it_found_and_set_and_is_undone(
    rig: Rig, tmp_path: Path
) -> None:
    dev = rig.world.device
    dev.put_setting("global", "personalized_ad_enabled", "3")  # enabled, dialog promoted
    before = {ns: dict(v) for ns, v in dev.settings.items()}
    run = run_preset(rig, tmp_path, "analytics-off", duration="0s")
    assert run.report.failed == [] and run.report.completed == 8
    got = {(e.data["namespace"], e.data["key"]): e.data for e in run.events("scenario_setting")}
    assert {k: (v["found"], v["set"]) for k, v in got.items()} == {
        ("global", "multi_cb"): (before["global"].get("multi_cb"), "0"),
        ("secure", "upload_log_pref"): (before["secure"].get("upload_log_pref"), "0"),
        ("secure", "upload_debug_log_pref"): (before["secure"].get("upload_debug_log_pref"), "0"),
        ("global", "personalized_ad_enabled"): ("3", "2"),  # only the enabled bit cleared
    }
    assert all(v["source"] for v in got.values())
    # on the handset itself
    assert dev.get_setting("global", "multi_cb") == "0"
    assert dev.get_setting("secure", "upload_log_pref") == "0"
    assert dev.get_setting("global", "personalized_ad_enabled") == "2"
    assert run.marks() == ["analytics-off-begin", "analytics-off-set", "idle-done"]
    # what the report's method section lists of it (auditor.analysis.conditions)
    from auditor.analysis.conditions import scenario_events

    listed = scenario_events({"s": list(Session(run.writer.path).records())})
    assert [e["mark"] for e in listed if e["kind"] == "scenario_mark"] == run.marks()
    settings = {(e["namespace"], e["key"]): (e["found"], e["set"]) for e in listed
                if e["kind"] == "scenario_setting"}  # fmt: skip
    assert settings == {k: (v["found"], v["set"]) for k, v in got.items()}
    report = restore_device(Handset(rig.serial), run.journal)
    assert report.ok and len(report.undone) == 4
    assert {ns: dict(v) for ns, v in dev.settings.items()} == before
    dev.delete_setting("global", "personalized_ad_enabled")


# --------------------------------------------------------------------------------- sim-insert


def test_sim_insert_in_an_audit_prompts_and_marks_when_the_handset_reads_the_card(
    rig: Rig, tmp_path: Path
) -> None:
    """The preset's steps (its waits shortened) in a whole audit: the prompt reaches the
    audit's progress, where the terminal shows it, and the operator (here, this test) puts
    the card in."""
    dev = rig.world.device
    dev.remove_sim()
    preset = (resources.files("auditor") / "scenarios" / "sim-insert.yaml").read_text()
    short = preset.replace("before: 1m", "before: 0s").replace(
        "sim_timeout: 2m", "sim_timeout: 20s"
    )
    assert short != preset
    scenario = tmp_path / "sim-insert.yaml"
    scenario.write_text(short)
    prompts: list[str] = []

    def progress(p: Any) -> None:  # the operator reads the prompt, and inserts the card
        if p.phase.startswith("OPERATOR:") and not prompts:
            prompts.append(p.message)
            threading.Timer(0.5, dev.insert_sim).start()

    try:
        res = run_audit(audit_options(rig, tmp_path, str(scenario), "0s"), progress)
    finally:
        dev.insert_sim(step=0)
    assert (res.status, res.restored) == ("complete", True)
    assert len(prompts) == 1 and "insert the SIM card" in prompts[0]
    marks = [
        r
        for r in Session(res.session).records()
        if isinstance(r, EventRecord) and r.kind == "scenario_mark"
    ]
    assert [m.data["mark"] for m in marks] == [
        "no-sim",
        "sim_insert_prompt",
        "sim_inserted",
        "sim-idle-done",
    ]
    prompt, inserted = marks[1:3]
    assert prompt.data["sim_state"] == ["ABSENT"]
    assert inserted.data["before"] == ["ABSENT"]
    assert inserted.data["sim_state"][0] in ("READY", "LOADED")
    assert 0.4 < inserted.data["seconds"] < 10
    assert prompt.ts <= inserted.ts
    # the handset really changed state, and said so in its log
    logged = [e.message for _, e in dev.log_entries() if e.tag == "IccCardProxy"]
    assert any("ACTION_SIM_STATE_CHANGED value=LOADED" in m for m in logged)


def test_sim_insert_with_a_card_in_already_fails_its_step_and_the_scenario_goes_on(
    rig: Rig, tmp_path: Path
) -> None:
    prompts: list[str] = []
    run = run_preset(
        rig, tmp_path, "sim-insert", prompts.append, before="0s", duration="0s", sim_timeout="5s"
    )
    ((index, why),) = run.report.failed
    assert index == 2 and "a SIM card is in already" in why
    assert prompts == [] and run.marks() == ["no-sim", "sim-idle-done"]


# ---------------------------------------------------------------------------- idle-after-boot


@pytest.fixture(autouse=True, scope="module")
def private_locks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(auditor.audit, "LOCK_DIR", tmp_path_factory.mktemp("locks"))
        yield


def audit_options(rig: Rig, tmp_path: Path, scenario: str, duration: str) -> AuditOptions:
    return AuditOptions(
        serial=rig.serial,
        scenario=scenario,
        duration=duration,
        out=tmp_path / "captures",
        confdir=tmp_path / "mitm",
        port=free_port(),
        canary_timeout=10.0,
        **upstream_of(rig.world),
    )


def test_idle_after_boot_in_an_audit_reboots_marks_and_keeps_quic_blocked(
    rig: Rig, tmp_path: Path
) -> None:
    dev = rig.world.device
    boots = dev.boot_count
    during: dict[str, Any] = {}

    def after_boot() -> None:  # once the boot-completed mark is written: the handset's state
        flows = tmp_path / "captures"
        for _ in range(300):
            if any(
                b'"mark":"boot-completed"' in p.read_bytes() for p in flows.glob("*/flows.jsonl")
            ):
                during["rules"] = {
                    f: [r.spec() for r in rs] for f, rs in dev.netfilter.rules.items()
                }
                during["proxy"] = dev.get_setting("global", "http_proxy")
                return
            threading.Event().wait(0.05)

    watcher = threading.Thread(target=after_boot, daemon=True)
    watcher.start()
    opts = audit_options(rig, tmp_path, "idle-after-boot", "2s")
    res = run_audit(opts)
    watcher.join(5)
    assert (res.status, res.restored) == ("complete", True)
    assert dev.boot_count == boots + 1
    sess = Session(res.session)
    kinds = [
        (r.kind, r.data.get("mark"))
        for r in sess.records()
        if isinstance(r, EventRecord) and r.kind in ("scenario_mark", "device_rebooted")
    ]
    assert kinds == [
        ("scenario_mark", "before-reboot"),
        ("device_rebooted", None),
        ("scenario_mark", "boot-completed"),
        ("scenario_mark", "idle-done"),
    ]
    assert sess.manifest["scenario"]["citations"] == list(
        load_scenario("idle-after-boot").citations
    )
    # the reboot dropped the rules; they were put back, and removed again at the end
    drop = "-A OUTPUT -p udp -m udp --dport 443 -j DROP"
    assert during["rules"] == {"ipv4": [drop], "ipv6": [drop]}
    assert during["proxy"] and during["proxy"].endswith(f":{opts.port}")
    assert dev.netfilter.rules == {"ipv4": [], "ipv6": []}
    assert dev.get_setting("global", "http_proxy") in (None, "", ":0")
