"""Whole campaigns with every part real: one adb server, three virtual handsets of different
vendors each in a process of its own, an audit process (and a mitmdump) per handset, and the
analysis of each session.

1. Three handsets, one short scenario: one campaign folder holding the three closed,
   verifiable sessions and their reports; each handset back as it was (the proxy setting,
   private DNS and the reverse tunnels, read through adb itself); each audit's proxy port its
   own; the audits overlapping in time; and the matrix's cells equal to what each session's
   own findings.json says (read here with plain json, not with auditor's readers).
2. The same handsets again (not analysed): once the scenario runs, the Pixel's process is
   killed by its PID (unplugged) and so is the OnePlus's audit process (crashed). The Xiaomi
   completes and is restored; the Pixel's session is closed and recorded as ``device_lost``;
   the campaign stops the OnePlus audit's mitmdump, restores the OnePlus from the session's
   journal and seals its session; no audit process or mitmdump is left running.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from auditor.campaign.cli import campaign
from auditor.evidence.verify import verify_session
from tests.campaign.conftest import Phone, no_process_left, start_phone, stop_phone
from tests.vhandset.adb_fixtures import AdbServer, pid_alive, wait_until

pytestmark = pytest.mark.e2e

PROFILES = ("xiaomi-mi10t", "pixel-android14", "oneplus-8t")
IDENTIFIER_RULES = {"identifier-sent", "cleartext-identifier"}


def device_state(server: AdbServer, serial: str) -> dict[str, str]:
    """What an audit changes and must put back, as the adb client itself reads it."""

    def sh(cmd: str) -> str:
        return server.text("-s", serial, "shell", cmd).strip()

    return {
        "http_proxy": sh("settings get global http_proxy"),
        "private_dns_mode": sh("settings get global private_dns_mode"),
        "reverse": server.text("-s", serial, "reverse", "--list").strip(),
    }


@dataclass
class Run:
    result: Result
    doc: dict[str, Any]  # the --json output
    folder: Path
    manifest: dict[str, Any]
    matrix: dict[str, Any]


def run_campaign(
    out: Path, confdir: Path, serials: list[str], *extra: str, as_json: bool = True
) -> Run:
    args = ["--scenario", "idle", "--out", str(out), "--confdir", str(confdir)]
    args += ["--json"] if as_json else []
    for s in serials:
        args += ["--serial", s]
    result = CliRunner().invoke(campaign, [*args, *extra], catch_exceptions=False)
    if as_json:
        doc = json.loads(result.stdout)
        folder = Path(doc["campaign"])
    else:  # the report's path alone on standard output
        doc = {}
        folder = Path(result.stdout.strip()).parent
    manifest = json.loads((folder / "campaign.json").read_text())
    matrix = json.loads((folder / "matrix.json").read_text())
    return Run(result, doc, folder, manifest, matrix)


@pytest.fixture(scope="module")
def phones(
    adb_server: AdbServer, private_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Phone]]:
    work = tmp_path_factory.mktemp("phones")
    started: list[Phone] = []
    try:
        for profile in PROFILES:
            started.append(start_phone(adb_server, profile, work))
        yield started
    finally:
        for phone in started:
            stop_phone(adb_server, phone)


@pytest.fixture(scope="module")
def baseline(adb_server: AdbServer, phones: list[Phone]) -> dict[str, dict[str, str]]:
    return {p.serial: device_state(adb_server, p.serial) for p in phones}


@pytest.fixture(scope="module")
def confdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mitm")


@pytest.fixture(scope="module")
def three(
    phones: list[Phone],
    baseline: dict[str, dict[str, str]],
    confdir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Run:
    return run_campaign(
        tmp_path_factory.mktemp("campaigns"),
        confdir,
        [p.serial for p in phones],
        "--duration",
        "6s",
        # one offline internet serves every vendor's hosts: the lab's upstream proxy
        "--upstream",
        phones[0].upstream,
        "--upstream-ca",
        phones[0].upstream_ca,
    )


# ------------------------------------------------------------------------- 1. three handsets


def test_every_audit_completes_into_one_campaign_folder(three: Run, phones: list[Phone]) -> None:
    assert three.result.exit_code == 0, three.result.output
    m = three.manifest
    assert m["status"] == "done" and m["scenario_name"] == "idle"
    handsets = {h["serial"]: h for h in m["handsets"]}
    assert set(handsets) == {p.serial for p in phones}
    for h in handsets.values():
        assert (h["outcome"], h["status"], h["stopped_by"], h["restored"]) == (
            "complete",
            "complete",
            "scenario_done",
            True,
        ), h
        session = three.folder / h["session"]
        assert session.parent == three.folder / "sessions"
        ver = verify_session(session)
        assert ver.ok, ver.to_dict()
        sm = json.loads((session / "manifest.json").read_text())
        assert sm["status"] == "complete" and sm["device"]["serial"] == h["serial"]
        assert sm["capture"]["proxy"]["port"] == h["proxy_port"]
        assert (session / "restore.jsonl").is_file()
        assert (three.folder / h["report"]).is_file()
    # each its own proxy port; every audit process ended
    assert len({h["proxy_port"] for h in handsets.values()}) == len(handsets)
    assert no_process_left([h["pid"] for h in handsets.values()])


def test_the_audits_ran_at_the_same_time(three: Run) -> None:
    spans = []
    for h in three.manifest["handsets"]:
        sm = json.loads((three.folder / h["session"] / "manifest.json").read_text())
        spans.append((sm["started_at"], sm["ended_at"]))
    assert max(s for s, _ in spans) < min(e for _, e in spans), spans


def test_packet_capture_per_rooted_handset(three: Run) -> None:
    for h in three.manifest["handsets"]:
        sm = json.loads((three.folder / h["session"] / "manifest.json").read_text())
        pcaps = [a["path"] for a in sm["artifacts"] if a["path"].startswith("packets/")]
        if sm["device"].get("root"):
            assert pcaps, (h["serial"], sm["artifacts"])


def test_handsets_are_back_as_they_were(
    three: Run, adb_server: AdbServer, phones: list[Phone], baseline: dict[str, dict[str, str]]
) -> None:
    for p in phones:
        assert device_state(adb_server, p.serial) == baseline[p.serial]
        assert baseline[p.serial]["reverse"] == ""  # no tunnel left by the audit


def test_locks_are_released(three: Run, private_home: Path) -> None:
    locks = list((private_home / ".auditor" / "locks").glob("*.lock"))
    assert len(locks) == len(three.manifest["handsets"])
    assert all(lock.read_bytes() == b"" for lock in locks)  # no holder's pid left


def expected_cells(findings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What one handset sent to whom, from its findings.json, independently of auditor."""
    unknown = "(unknown operator)"
    out: dict[str, dict[str, Any]] = defaultdict(lambda: {"flows": 0, "up": 0, "ids": set()})
    for e in findings["endpoints"]:
        cell = out[e["organisation"] or unknown]
        cell["flows"] += e["flows"]
        cell["up"] += e["bytes_up"]
    for f in findings["findings"]:
        if f["rule"] in IDENTIFIER_RULES:
            out[f["organisation"] or unknown]["ids"].update(f["identifiers"])
    return dict(out)


def test_matrix_cells_match_each_sessions_findings(three: Run) -> None:
    mat = three.matrix
    got = {(c["serial"], c["recipient"]): c for c in mat["cells"]}
    columns = {r["recipient"] for r in mat["recipients"]}
    identifiers_seen = 0
    for h in three.manifest["handsets"]:
        report = three.folder / h["report"]
        findings = json.loads((report.parent / "findings.json").read_text())
        want = expected_cells(findings)
        mine = {rec: c for (serial, rec), c in got.items() if serial == h["serial"]}
        assert set(mine) == set(want), h["serial"]
        seconds = findings["coverage"]["duration_seconds"]
        for rec, w in want.items():
            c = mine[rec]
            assert rec in columns
            assert (c["flows"], c["bytes_up"]) == (w["flows"], w["up"]), (h["serial"], rec)
            assert c["identifiers"] == sorted(w["ids"]), (h["serial"], rec)
            assert c["flows_per_hour"] == pytest.approx(w["flows"] * 3600 / seconds, rel=1e-3)
            assert c["report"] == h["report"]
            identifiers_seen += len(c["identifiers"])
        row = next(x for x in mat["handsets"] if x["serial"] == h["serial"])
        dev = findings["device"]
        assert (row["vendor"], row["model"]) == (dev["manufacturer"], dev["model"])
        assert row["build"] and row["build"] in dev["fingerprint"]
    assert identifiers_seen > 0  # the short scenario still shows identifiers sent
    # a recipient that two vendors' handsets both reach is one column
    per_column = defaultdict(set)
    for serial, rec in got:
        per_column[rec].add(serial)
    assert any(len(s) > 1 for s in per_column.values())


def test_reports_link_into_each_session_report(three: Run) -> None:
    html = (three.folder / "report.html").read_text()
    md = (three.folder / "summary.md").read_text()
    for h in three.manifest["handsets"]:
        assert f'href="{h["report"]}"' in html
        assert f"]({h['report']})" in md
    for r in three.matrix["recipients"]:
        assert r["recipient"].split()[0] in html


# -------------------------------------------------------------------- 2. one handset is lost


def audit_process(serial: str) -> int | None:
    """The PID of the campaign's audit process for ``serial``, from /proc."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"auditor.campaign.worker" in argv and serial.encode() in argv:
            return int(pid)
    return None


def scenario_running(out: Path, serial: str) -> bool:
    for flows in out.glob("*/sessions/*/flows.jsonl"):
        manifest = (flows.parent / "manifest.json").read_text(errors="replace")
        if serial in manifest and '"kind":"scenario_step"' in flows.read_text(errors="replace"):
            return True
    return False


@dataclass
class Faults:
    run: Run
    lost: Phone  # its handset process killed: unplugged
    crashed: Phone  # its audit process killed: the campaign cleans up after it
    survivor: Phone


@pytest.fixture(scope="module")
def faults(
    three: Run,
    phones: list[Phone],
    confdir: Path,
    adb_server: AdbServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Faults:
    """A second campaign on the same handsets, not analysed. Once its scenario runs, the
    Pixel's process is killed (the handset is gone), and so is the audit process of the
    OnePlus (the handset stays)."""
    out = tmp_path_factory.mktemp("campaigns-lost")
    by = {p.profile: p for p in phones}
    lost, crashed = by["pixel-android14"], by["oneplus-8t"]
    done: dict[str, bool] = {}

    def unplug() -> None:
        if wait_until(lambda: scenario_running(out, lost.serial), 60, 0.1):
            lost.kill()
            done["lost"] = True

    def crash() -> None:
        if wait_until(lambda: scenario_running(out, crashed.serial), 60, 0.1):
            pid = audit_process(crashed.serial)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            done["crashed"] = True

    threads = [threading.Thread(target=f, daemon=True) for f in (unplug, crash)]
    for t in threads:
        t.start()
    run = run_campaign(
        out,
        confdir,
        [p.serial for p in phones],
        "--duration",
        "8s",
        "--restore-wait",
        "1",
        "--no-analyze",  # the analysis is the first campaign's to test; here, the faults
        as_json=False,
    )
    for t in threads:
        t.join(5)
    assert done == {"lost": True, "crashed": True}, "a scenario never ran"
    return Faults(run, lost, crashed, by["xiaomi-mi10t"])


def test_a_lost_handset_ends_its_own_audit_only(
    faults: Faults, phones: list[Phone], adb_server: AdbServer, baseline: dict[str, dict[str, str]]
) -> None:
    run, lost = faults.run, faults.lost
    assert run.result.exit_code == 1
    # progress and the end, one line per handset, on standard error
    ends = [(lost, "device_lost"), (faults.crashed, "failed"), (faults.survivor, "complete")]
    for serial, end in ((p.serial, end) for p, end in ends):
        lines = [x for x in run.result.stderr.splitlines() if x.startswith(f"[{serial}] ")]
        assert any("audit pid" in x for x in lines), run.result.stderr
        assert any(x.startswith(f"[{serial}] scenario step 1/1") for x in lines), lines
        assert lines[-1].startswith(f"[{serial}] {end}"), lines
    assert run.result.stderr.splitlines()[-1].startswith("error: not every audit completed")
    handsets = {h["serial"]: h for h in run.manifest["handsets"]}
    v = handsets[lost.serial]
    assert (v["outcome"], v["stopped_by"], v["restored"]) == ("device_lost", "device_lost", False)
    assert f"auditor restore -s {lost.serial}" in " ".join(v["notes"])
    session = run.folder / v["session"]
    sm = json.loads((session / "manifest.json").read_text())
    assert (sm["status"], sm["stopped_by"]) == ("incomplete", "device_lost")
    assert verify_session(session).ok
    # the untouched handset completed, as if nothing had happened beside it
    s = handsets[faults.survivor.serial]
    assert (s["outcome"], s["stopped_by"], s["restored"]) == ("complete", "scenario_done", True)
    assert verify_session(run.folder / s["session"]).ok
    assert device_state(adb_server, faults.survivor.serial) == baseline[faults.survivor.serial]
    # the matrix has the lost handset's row, marked so
    row = next(x for x in run.matrix["handsets"] if x["serial"] == lost.serial)
    assert (row["outcome"], row["model"]) == ("device_lost", "Pixel 7")
    assert row["report"] is None and run.matrix["cells"] == []  # --no-analyze
    assert run.manifest["outcomes"] == {"complete": 1, "device_lost": 1, "failed": 1}


def test_a_dead_audit_process_is_cleaned_up_after(
    faults: Faults, adb_server: AdbServer, baseline: dict[str, dict[str, str]]
) -> None:
    """Its handset restored from the session's journal, its session sealed as left open."""
    c = next(h for h in faults.run.manifest["handsets"] if h["serial"] == faults.crashed.serial)
    assert (c["outcome"], c["exit_status"], c["restored"]) == ("failed", -9, True)
    assert "ended without a result" in c["detail"]
    assert device_state(adb_server, faults.crashed.serial) == baseline[faults.crashed.serial]
    session = faults.run.folder / c["session"]
    sm = json.loads((session / "manifest.json").read_text())
    assert (sm["status"], sm["stopped_by"]) == ("incomplete", "left_open")
    assert sm["sealed_late"]["by"] == "auditor campaign"
    assert verify_session(session).ok


def test_no_audit_process_or_proxy_is_left(faults: Faults) -> None:
    run = faults.run
    pids = []
    for h in run.manifest["handsets"]:
        pids.append(h["pid"])
        for line in (run.folder / h["session"] / "flows.jsonl").read_text().splitlines():
            if '"kind":"proxy_listening"' in line:
                pids.append(json.loads(line)["data"]["pid"])
    assert len(pids) == 2 * len(run.manifest["handsets"])
    assert no_process_left(pids), [p for p in pids if pid_alive(p)]
