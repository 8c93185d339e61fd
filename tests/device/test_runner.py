"""auditor.device.runner: scenario steps on a virtual handset through a real adb server.

Each step's effect is read on the handset itself (its foreground activity, its settings), and
each step's record in the session's flows.jsonl.
"""

from __future__ import annotations

import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from auditor.device.handset import Handset
from auditor.device.journal import RestoreJournal
from auditor.device.runner import PNG_MAGIC, SCREENSHOTS, StepRunner
from auditor.device.scenario import Scenario, parse_scenario
from auditor.device.setup import restore_device
from auditor.errors import DeviceError, ScenarioError
from auditor.records import EventRecord
from auditor.session import Session, SessionWriter
from tests.e2e.conftest import WorldFactory, adb_server, make_world
from tests.vhandset.adb_fixtures import AdbServer
from vhandset.world import VirtualWorld

__all__ = ["adb_server", "make_world"]  # fixtures, used by name

pytestmark = pytest.mark.e2e


@dataclass
class Rig:
    world: VirtualWorld
    handset: Handset
    writer: SessionWriter
    journal: RestoreJournal

    def runner(self, **kw: object) -> StepRunner:
        return StepRunner(self.handset, self.writer, self.journal, **kw)  # type: ignore[arg-type]

    def events(self, kind: str | None = None) -> list[EventRecord]:
        recs = [r for r in Session(self.writer.path).records() if isinstance(r, EventRecord)]
        return [r for r in recs if kind is None or r.kind == kind]


@pytest.fixture
def rig(make_world: WorldFactory, tmp_path: Path) -> Iterator[Rig]:
    world, serial = make_world("xiaomi-mi10t", traffic=False)
    writer = SessionWriter.create(tmp_path / "captures")
    yield Rig(world, Handset(serial), writer, RestoreJournal.in_session(writer.path))
    writer.detach()


def scenario(steps: str) -> Scenario:
    return parse_scenario(f"name: test\nsteps:\n{steps}", "test.yaml")


def launchable(world: VirtualWorld) -> tuple[str, str]:
    """A launchable package that is not the launcher, and its activity class."""
    home = world.device.profile.launcher.split("/")[0]
    pkg = next(p for p in world.device.profile.packages if p.launchable and p.name != home)
    assert pkg.activity
    return pkg.name, pkg.activity


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG, after checking its signature, every chunk's CRC, the chunk
    order and that the image data inflates to exactly the size its header announces."""
    assert data[:8] == PNG_MAGIC
    pos, kinds, idat = 8, [], b""
    width = height = depth = colour = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, payload = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + payload) & 0xFFFFFFFF == crc, kind
        if kind == b"IHDR":
            width, height, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", payload)
        elif kind == b"IDAT":
            idat += payload
        kinds.append(kind)
        pos += 12 + length
    assert pos == len(data) and kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    assert len(zlib.decompress(idat)) == height * (1 + width * channels * depth // 8)
    return width, height


def test_launch_brings_the_app_to_the_foreground_and_wait_for_sees_it(rig: Rig) -> None:
    pkg, activity = launchable(rig.world)
    assert rig.world.device.foreground[0] != pkg
    report = rig.runner().run(
        scenario(f"  - launch: {pkg}\n  - wait_for: {{package: {pkg}, timeout: 5s}}\n")
    )
    assert (report.completed, report.failed, report.stopped) == (2, [], False)
    assert rig.world.device.foreground == (pkg, activity)
    assert any(p.name == pkg for p in rig.world.device.processes.values())


def test_a_failing_step_is_recorded_and_the_next_one_still_runs(rig: Rig) -> None:
    pkg, _ = launchable(rig.world)
    no_launcher = next(
        p.name for p in rig.world.device.profile.packages if not p.launchable and "." in p.name
    )
    started = time.monotonic()
    report = rig.runner().run(
        scenario(
            f"  - launch: {no_launcher}\n"
            f"  - wait_for: {{package: {pkg}, timeout: 1s}}\n"
            f"  - launch: {pkg}\n"
        )
    )
    assert time.monotonic() - started < 10
    assert report.completed == 1
    assert [i for i, _ in report.failed] == [0, 1]
    assert "has no launcher activity" in report.failed[0][1]
    assert report.failed[1][1] == f"timed out waiting for {pkg}"
    assert rig.world.device.foreground[0] == pkg
    failed = [e for e in rig.events("scenario_step") if e.data["status"] == "failed"]
    assert [(e.data["index"], e.message) for e in failed] == [(i, m) for i, m in report.failed]


def test_screenshot_writes_a_valid_png_into_the_session(rig: Rig) -> None:
    report = rig.runner().run(scenario("  - screenshot: home screen\n"))
    assert report.completed == 1
    shots = list((rig.writer.path / SCREENSHOTS).iterdir())
    assert len(shots) == 1 and shots[0].name.endswith("-home_screen.png")
    data = shots[0].read_bytes()
    display = rig.world.device.profile.display
    assert png_size(data) == (display.width // 10, display.height // 10)
    (event,) = rig.events("screenshot")
    assert event.message == f"{SCREENSHOTS}/{shots[0].name}"
    assert event.data["bytes"] == len(data)


def test_setting_steps_are_journalled_and_restore_device_undoes_them(rig: Rig) -> None:
    settings = rig.world.device.settings
    before = {ns: dict(v) for ns, v in settings.items()}
    assert settings["global"]["stay_on_while_plugged_in"] == "0"
    assert "auditor_probe" not in settings["secure"]
    report = rig.runner().run(
        scenario(
            "  - setting: {namespace: global, key: stay_on_while_plugged_in, value: 3}\n"
            "  - setting: {namespace: secure, key: auditor_probe, value: on duty}\n"
        )
    )
    assert report.completed == 2
    assert settings["global"]["stay_on_while_plugged_in"] == "3"
    assert settings["secure"]["auditor_probe"] == "on duty"
    assert [c.what for c in rig.journal.changes()] == [
        "scenario: settings put global stay_on_while_plugged_in 3",
        "scenario: settings put secure auditor_probe on duty",
    ]
    assert all(c.applied for c in rig.journal.changes())

    undone = restore_device(rig.handset, rig.journal)

    assert undone.ok and len(undone.undone) == 2
    assert {ns: dict(v) for ns, v in settings.items()} == before


def test_input_steps_succeed_and_home_returns_to_the_launcher(rig: Rig) -> None:
    pkg, _ = launchable(rig.world)
    report = rig.runner().run(
        scenario(
            f"  - launch: {pkg}\n"
            "  - text: hello world\n"
            "  - tap: {x: 540, y: 1200}\n"
            "  - swipe: {x1: 540, y1: 1800, x2: 540, y2: 400, duration: 0.2}\n"
            "  - keyevent: KEYCODE_HOME\n"
        )
    )
    assert (report.completed, report.failed) == (5, [])
    home = rig.world.device.profile.launcher.split("/")[0]
    assert rig.world.device.foreground[0] == home


def test_every_step_is_recorded_started_then_done(rig: Rig) -> None:
    pkg, _ = launchable(rig.world)
    sc = scenario(f"  - launch: {pkg}\n  - idle: 0.1s\n  - keyevent: 3\n")
    rig.runner().run(sc)

    events = rig.events()
    assert events[0].kind == "scenario_started" and events[0].data["steps"] == 3
    assert events[-1].kind == "scenario_finished"
    assert events[-1].data == {"completed": 3, "failed": 0, "stopped": False}
    steps = [e for e in events if e.kind == "scenario_step"]
    assert [(e.data["index"], e.data["status"]) for e in steps] == [
        (0, "started"),
        (0, "done"),
        (1, "started"),
        (1, "done"),
        (2, "started"),
        (2, "done"),
    ]
    started = [e for e in steps if e.data["status"] == "started"]
    assert [e.data["step"] for e in started] == ["launch", "idle", "keyevent"]
    assert [e.data["line"] for e in started] == [s.line for s in sc.steps] == [3, 4, 5]
    assert started[0].data["args"] == {"package": pkg}
    assert started[0].message == f"launch(package={pkg})"


def test_shell_steps_need_allow_shell(rig: Rig) -> None:
    sc = scenario("  - shell: settings put global auditor_shell yes\n")
    with pytest.raises(ScenarioError, match=r"test\.yaml:3: step 1 \(shell\).*--allow-shell"):
        rig.runner().run(sc)
    assert rig.events() == []
    assert "auditor_shell" not in rig.world.device.settings["global"]

    report = rig.runner(allow_shell=True).run(sc)
    assert report.completed == 1
    assert rig.world.device.settings["global"]["auditor_shell"] == "yes"
    (out,) = rig.events("shell_output")
    assert out.data["returncode"] == 0


def test_stop_ends_a_long_step_promptly_and_skips_the_rest(rig: Rig) -> None:
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    started = time.monotonic()
    try:
        report = rig.runner(stop=stop).run(scenario("  - idle: 30s\n  - keyevent: HOME\n"))
    finally:
        timer.cancel()
    assert time.monotonic() - started < 5
    assert report.stopped and report.completed == 1
    assert rig.events("scenario_finished")[0].data["stopped"] is True


def test_a_device_lost_mid_step_is_recorded_as_device_lost(rig: Rig, adb_server: AdbServer) -> None:
    serial = rig.handset.serial
    unplug = threading.Timer(0.5, adb_server.text, ("disconnect", serial))
    unplug.start()
    try:
        with pytest.raises(DeviceError):
            rig.runner(allow_shell=True).run(scenario("  - shell: sleep 5\n  - keyevent: HOME\n"))
    finally:
        unplug.join(10)
    kinds = [(e.kind, e.data.get("status")) for e in rig.events()]
    assert ("scenario_step", "failed") in kinds
    assert kinds[-1] == ("device_lost", None)
