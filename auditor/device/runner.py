"""Runs a scenario's steps on a handset, writing each step into the session as an event.

Besides the ``scenario_step`` events, some steps write marks for the report's timeline:
``scenario_mark`` (a ``mark`` step, and the moments of ``sim_insert``: the prompt and the SIM
state change) and ``scenario_setting`` (a ``setting`` step: the value found and the value
set, with where the setting's name comes from).
"""

from __future__ import annotations

import logging
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from auditor.device import parsers
from auditor.device.handset import Handset
from auditor.device.journal import RestoreJournal
from auditor.device.scenario import Scenario, Step
from auditor.errors import DeviceError, ScenarioError
from auditor.fsutil import private_mkdirs, write_private
from auditor.session.writer import SessionWriter

log = logging.getLogger(__name__)

SCREENSHOTS = "screenshots"
PRESENCE_INTERVAL = 1.0  # seconds between checks that the device is still there, while waiting
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SIM_TIMEOUT = 120.0
SIM_POLL = 0.5
# gsm.sim.state (TelephonyProperties; one entry per slot, comma-separated): the states in which
# a card is in the slot and read, or being read
SIM_PRESENT = frozenset({"READY", "LOADED", "PIN_REQUIRED", "PUK_REQUIRED", "NETWORK_LOCKED"})


@dataclass
class RunReport:
    completed: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)
    stopped: bool = False


class StepRunner:
    def __init__(
        self,
        handset: Handset,
        writer: SessionWriter,
        journal: RestoreJournal,
        *,
        allow_shell: bool = False,
        stop: threading.Event | None = None,
        on_step: Callable[[Step, str], None] | None = None,
        after_reboot: Callable[[], None] | None = None,
        system_packages: list[str] | None = None,
        prompt: Callable[[str], None] | None = None,
    ):
        self.h = handset
        self.writer = writer
        self.journal = journal
        self.allow_shell = allow_shell
        self.stop = stop or threading.Event()
        self.on_step = on_step
        self.after_reboot = after_reboot
        self.system_packages = system_packages or []
        # asks the operator to do something by hand (the terminal, in an audit)
        self.prompt = prompt or (lambda text: log.warning("%s", text))

    @staticmethod
    def refuse_shell(scenario: Scenario) -> None:
        step = next(s for s in scenario.steps if s.kind == "shell")
        raise ScenarioError(
            f"{scenario.source}:{step.line}: step {step.index + 1} (shell) runs arbitrary "
            "commands on the device; allow it with --allow-shell"
        )

    def run(self, scenario: Scenario) -> RunReport:
        if scenario.needs_shell and not self.allow_shell:
            self.refuse_shell(scenario)
        report = RunReport()
        self.writer.event("scenario_started", scenario.name, steps=len(scenario.steps))
        for step in scenario.steps:
            if self.stop.is_set():
                report.stopped = True
                break
            self.writer.event(
                "scenario_step",
                step.describe(),
                index=step.index,
                step=step.kind,
                args=step.args,
                line=step.line,
                status="started",
            )
            if self.on_step:
                self.on_step(step, "started")
            try:
                getattr(self, f"_{step.kind}")(**step.args)
            except DeviceError as exc:
                report.failed.append((step.index, str(exc)))
                self.writer.event(
                    "scenario_step", str(exc), index=step.index, step=step.kind, status="failed"
                )
                if self.on_step:
                    self.on_step(step, "failed")
                if self.h.state() != "device":
                    self.writer.event("device_lost", f"{self.h.serial} is {self.h.state()}")
                    raise
                continue
            report.completed += 1
            self.writer.event("scenario_step", "", index=step.index, step=step.kind, status="done")
            if self.on_step:
                self.on_step(step, "done")
        # stopped during the last step (its wait cut short) is stopped too
        report.stopped = report.stopped or self.stop.is_set()
        self.writer.event(
            "scenario_finished",
            scenario.name,
            completed=report.completed,
            failed=len(report.failed),
            stopped=report.stopped,
        )
        return report

    # ------------------------------------------------------------------------------- steps
    def _sleep(self, seconds: float) -> None:
        """Wait, unless stopped; and check that the device is still there every
        PRESENCE_INTERVAL, so that one gone mid-wait ends the step at once, not at its end."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self.stop.wait(min(left, PRESENCE_INTERVAL)):
                return
            state = self.h.state()
            if state != "device":
                raise DeviceError(f"{self.h.serial} went away during the step (it is {state})")

    def _idle(self, duration: float) -> None:
        self._sleep(duration)

    def _launch(self, package: str, duration: float | None = None) -> None:
        r = self.h.sh(f"monkey -p {shlex.quote(package)} -c android.intent.category.LAUNCHER 1")
        if "No activities found" in r.stdout + r.stderr or not r.ok:
            raise DeviceError(f"{package} has no launcher activity")
        if duration:
            self._sleep(duration)

    def _stop(self, package: str) -> None:
        self.h.sh(f"am force-stop {shlex.quote(package)}").check()

    def _tap(self, x: int, y: int) -> None:
        self.h.sh(f"input tap {x} {y}").check()

    def _swipe(self, x1: int, y1: int, x2: int, y2: int, duration: float | None = None) -> None:
        ms = int((duration or 0.3) * 1000)
        self.h.sh(f"input swipe {x1} {y1} {x2} {y2} {ms}").check()

    def _text(self, text: str) -> None:
        # `input text` takes %s for a space; everything else is shell-quoted
        self.h.sh(f"input text {shlex.quote(text.replace(' ', '%s'))}").check()

    def _keyevent(self, key: str | int) -> None:
        self.h.sh(f"input keyevent {key}").check()

    def _open_url(self, url: str, package: str | None = None) -> None:
        cmd = f"am start -a android.intent.action.VIEW -d {shlex.quote(url)}"
        if package:
            cmd += f" {shlex.quote(package)}"
        self.h.sh(cmd).check()

    def _wait_for(
        self, activity: str | None = None, package: str | None = None, timeout: float | None = None
    ) -> None:
        deadline = time.monotonic() + (timeout or 30.0)
        while time.monotonic() < deadline and not self.stop.is_set():
            ref = parsers.parse_dumpsys_activity_resumed(
                self.h.sh("dumpsys activity activities").stdout
            ) or parsers.parse_dumpsys_window_focus(self.h.sh("dumpsys window").stdout)
            if ref is not None:
                if package and ref.package == package and not activity:
                    return
                if activity and activity in (ref.component, f"{ref.package}/{ref.class_name}"):
                    return
            self._sleep(0.5)
        raise DeviceError(f"timed out waiting for {activity or package}")

    def _screenshot(self, name: str | None = None) -> None:
        data = self.h.device.shell("screencap -p", encoding=None, timeout=30)
        if not isinstance(data, bytes) or not data.startswith(PNG_MAGIC):
            raise DeviceError("screencap did not return a PNG")
        folder = self.writer.path / SCREENSHOTS
        private_mkdirs(folder)
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in (name or "screen"))[:60]
        path = folder / f"{int(time.time() * 1000)}-{stem}.png"
        write_private(path, data)
        self.writer.event("screenshot", str(Path(SCREENSHOTS) / path.name), bytes=len(data))

    def _reboot(self, timeout: float | None = None) -> None:
        took = self.h.reboot(timeout or 180.0)
        self.writer.event("device_rebooted", f"boot completed after {took:.1f}s")
        if self.after_reboot:
            self.after_reboot()

    def _setting(
        self,
        namespace: str,
        key: str,
        value: str | None = None,
        clear_bits: int | None = None,
        default: int | None = None,
        source: str | None = None,
    ) -> None:
        before = self.h.setting_get(namespace, key)
        if clear_bits is not None:
            value = str(_cleared(before, clear_bits, default))
        assert value is not None  # the scenario gives one or the other
        if value != before:
            cid = self.journal.record(
                self.h.serial,
                f"scenario: settings put {namespace} {key} {value}",
                {"kind": "setting", "namespace": namespace, "key": key, "value": before},
            )
            self.h.setting_put(namespace, key, value)
            self.journal.applied(cid)
        self.writer.event(
            "scenario_setting",
            f"{namespace} {key}: {before if before is not None else '(unset)'} -> {value}",
            namespace=namespace,
            key=key,
            found=before,
            set=value,
            changed=value != before,
            source=source,
        )

    def _mark(self, label: str, note: str | None = None) -> None:
        self.writer.event("scenario_mark", note or label, mark=label, note=note)

    def _sim_state(self) -> list[str]:
        return [s.strip().upper() for s in self.h.getprop("gsm.sim.state").split(",")]

    def _sim_insert(self, timeout: float | None = None) -> None:
        """Ask the operator to insert a SIM card, and mark when the phone reads it: the moment
        ``gsm.sim.state`` shows a card in a slot that had none."""
        wait = timeout or SIM_TIMEOUT
        before = self._sim_state()
        if any(s in SIM_PRESENT for s in before):
            raise DeviceError(
                f"a SIM card is in already (gsm.sim.state={','.join(before)}): take it out "
                "before the audit, then start it again"
            )
        text = f"insert the SIM card into {self.h.serial} now (waiting up to {wait:.0f}s)"
        self.writer.event("scenario_mark", text, mark="sim_insert_prompt", sim_state=before)
        self.prompt(text)
        started = time.monotonic()
        deadline = started + wait
        while time.monotonic() < deadline:
            now = self._sim_state()
            if now != before and any(s in SIM_PRESENT for s in now):
                took = time.monotonic() - started
                self.writer.event(
                    "scenario_mark",
                    f"SIM read after {took:.1f}s: gsm.sim.state {','.join(now)}",
                    mark="sim_inserted",
                    sim_state=now,
                    before=before,
                    seconds=round(took, 3),
                )
                return
            if self.stop.is_set():
                return
            self._sleep(SIM_POLL)
        self.writer.event("scenario_mark", "no SIM read in time", mark="sim_insert_timeout")
        raise DeviceError(f"no SIM card was read within {wait:.0f}s")

    def _airplane_mode(self, on: bool) -> None:
        self._setting("global", "airplane_mode_on", "1" if on else "0")
        r = self.h.sh(f"cmd connectivity airplane-mode {'enable' if on else 'disable'}")
        if not r.ok:  # before Android 11: the setting plus the broadcast
            self.h.sh(
                "am broadcast -a android.intent.action.AIRPLANE_MODE --ez state "
                + ("true" if on else "false")
            )

    def _shell(self, cmd: str) -> None:
        r = self.h.sh(cmd, timeout=120)
        self.writer.event(
            "shell_output",
            cmd,
            returncode=r.returncode,
            stdout=r.stdout[-4000:],
            stderr=r.stderr[-4000:],
        )

    def _launch_system_apps(
        self, duration: float | None = None, limit: int | None = None, exclude: object = None
    ) -> None:
        skip = set(exclude) if isinstance(exclude, list) else set()
        launched = 0
        for pkg in self.system_packages:
            if self.stop.is_set() or (limit is not None and launched >= limit):
                break
            if pkg in skip:
                continue
            try:
                self._launch(pkg, duration or 10.0)
            except DeviceError:
                continue
            launched += 1
            self.writer.event("app_launched", pkg)
            self.h.sh("input keyevent KEYCODE_HOME")


def _cleared(found: str | None, bits: int, default: int | None) -> int:
    """``found`` (an integer setting) with ``bits`` cleared; ``default`` when it is unset or
    not a number (as the platform reads it), else 0."""
    try:
        base = int(found) if found is not None else None
    except ValueError:
        base = None
    if base is None:
        base = default if default is not None else 0
    return base & ~bits
