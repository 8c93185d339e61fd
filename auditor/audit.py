"""``auditor audit``: from a handset to a closed, hashed capture session (and then a report).

The loop: profile the device, open a session, start mitmdump with the recorder, set the device
up through the restore journal, check interception with a canary, run the scenario while
logcat and the socket table are recorded, restore the device, close the session.

The device is restored on every way out: normal end, exception, Ctrl-C and SIGTERM. If the
device disappears, the session is kept with an event saying so, and the restore is retried
when it comes back (or left to ``auditor restore``).
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.capture import (
    DEFAULT_CONFDIR,
    FlowTail,
    LiveCounts,
    Mitmdump,
    ProxyOptions,
    ca_cert_path,
)
from auditor.device.handset import Handset
from auditor.device.journal import RestoreJournal
from auditor.device.monitor import LogcatStream, SocketPoller
from auditor.device.profile import DeviceProfile, collect_profile
from auditor.device.runner import StepRunner
from auditor.device.scenario import Scenario, Step, load_scenario
from auditor.device.setup import (
    CaptureSetup,
    Interrupted,
    ca_pem_from,
    raise_held,
    sigterm_raises,
)
from auditor.errors import AuditorError, DeviceError
from auditor.records import CANARY_HOST
from auditor.session import STATUS_COMPLETE, STATUS_INCOMPLETE, SessionWriter

log = logging.getLogger(__name__)

LOCK_DIR = Path.home() / ".auditor" / "locks"
UPSTREAM_CA = "upstream-ca.pem"


@contextmanager
def device_lock(serial: str) -> Iterator[None]:
    """One audit per device at a time, across processes."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in serial)
    fd = os.open(LOCK_DIR / f"{safe}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            raise AuditorError(
                f"another audit is running on {serial}"
                + (f" (pid {holder})" if holder else "")
                + "; wait for it to finish"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


@dataclass
class AuditOptions:
    serial: str | None = None
    scenario: str = "idle"
    duration: str | None = None
    route: str = "reverse"
    ca: str = "auto"
    out: Path = Path("captures")
    listen_host: str = "127.0.0.1"
    port: int = 8080
    confdir: Path = DEFAULT_CONFDIR
    body_cap: int = 64 * 1024 * 1024
    allow_shell: bool = False
    private_dns_off: bool = True
    canary_timeout: float = 15.0
    notes: str = ""
    packets: str = "auto"  # auto | off | iface:NAME | adb-tcpdump | pcapdroid


@dataclass
class Progress:
    phase: str = ""
    step: str = ""
    step_index: int = 0
    steps: int = 0
    elapsed: float = 0.0
    planned: float | None = None
    counts: LiveCounts = field(default_factory=LiveCounts)
    message: str = ""


ProgressFn = Callable[[Progress], None]


@dataclass
class AuditResult:
    session: Path
    status: str
    stopped_by: str
    profile: DeviceProfile
    restored: bool
    canary_seen: bool
    notes: list[str]
    manifest: dict[str, Any]


def planned_seconds(scenario: Scenario) -> float:
    return sum(float(s.args.get("duration") or 0) for s in scenario.steps)


def upstream_of(profile: DeviceProfile) -> str | None:
    """The virtual handset's offline internet (``ro.auditor.upstream``), if it is one."""
    if not profile.virtual:
        return None
    up = profile.properties.get("ro.auditor.upstream", "")
    return up if up.startswith(("http://127.", "http://[::1]", "http://localhost")) else None


def run_audit(opts: AuditOptions, on_progress: ProgressFn | None = None) -> AuditResult:
    # Everything that can be checked without touching the device is checked first.
    scenario = load_scenario(opts.scenario, {"duration": opts.duration} if opts.duration else None)
    if scenario.needs_shell and not opts.allow_shell:
        StepRunner.refuse_shell(scenario)
    handset = Handset(opts.serial)
    with device_lock(handset.serial):
        return _audit_locked(handset, scenario, opts, on_progress or (lambda p: None))


def _audit_locked(
    h: Handset, scenario: Scenario, opts: AuditOptions, report: ProgressFn
) -> AuditResult:
    prog = Progress(phase="profiling", steps=len(scenario.steps), planned=planned_seconds(scenario))
    report(prog)
    profile = collect_profile(h)
    upstream = upstream_of(profile)
    writer = SessionWriter.create(
        opts.out,
        notes=opts.notes,
        device=profile.to_dict(),
        scenario=scenario.to_manifest(),
        body_cap=opts.body_cap,
        capture={
            "route": opts.route,
            "ca": opts.ca,
            "upstream": upstream,
            "proxy": {"listen_host": opts.listen_host, "port": opts.port},
        },
    )
    journal = RestoreJournal.in_session(writer.path)
    extra: dict[str, str] = {}
    mode = "regular"
    if upstream:
        mode = f"upstream:{upstream}"
        ca_device_path = profile.properties.get("ro.auditor.upstream_ca", "")
        if ca_device_path:
            (writer.path / UPSTREAM_CA).write_bytes(h.pull_bytes(ca_device_path))
            (writer.path / UPSTREAM_CA).chmod(0o600)
            extra["ssl_verify_upstream_trusted_ca"] = str(writer.path / UPSTREAM_CA)
        writer.event(
            "upstream_mode",
            f"virtual handset: mitmdump forwards to its offline internet at {upstream}",
        )
    proxy = ProxyOptions(
        listen_host=opts.listen_host,
        port=opts.port,
        confdir=opts.confdir,
        body_cap=opts.body_cap,
        mode=mode,
        extra=extra,
    )
    mitm = Mitmdump(writer.path, proxy)
    tail = FlowTail(writer.path)
    status, stopped_by = STATUS_INCOMPLETE, "error"
    restored = False
    canary_seen = False
    notes: list[str] = []
    setup: CaptureSetup | None = None
    logcat: LogcatStream | None = None
    sockets: SocketPoller | None = None
    packets: Any = None
    stop = threading.Event()
    started = time.monotonic()
    ticker_stop = threading.Event()

    def tick() -> None:
        while not ticker_stop.wait(0.5):
            prog.elapsed = time.monotonic() - started
            prog.counts = tail.poll()
            report(prog)

    ticker = threading.Thread(target=tick, daemon=True)
    try:
        with sigterm_raises():
            try:
                prog.phase = "starting proxy"
                report(prog)
                mitm.start()
                writer.event("proxy_listening", f"mitmdump pid {mitm.pid}", pid=mitm.pid, mode=mode)
                packets = _start_packets(h, writer, journal, opts.packets, notes)
                setup = CaptureSetup(
                    h,
                    journal,
                    proxy_host=opts.listen_host,
                    proxy_port=opts.port,
                    route=opts.route,
                    ca=opts.ca,
                    ca_pem=ca_pem_from(ca_cert_path(opts.confdir)) if opts.ca != "none" else None,
                    private_dns_off=opts.private_dns_off,
                )
                prog.phase = "setting up the device"
                report(prog)
                setup.apply()
                for n in setup.notes:
                    writer.event("setup_note", n)
                notes += setup.notes
                ticker.start()
                prog.phase = "canary"
                report(prog)
                canary_seen = _canary(h, writer, tail, opts.canary_timeout)
                if not canary_seen:
                    notes.append(
                        "interception not confirmed: the canary request never reached the proxy"
                    )
                logcat = LogcatStream(h, writer.path).start()
                sockets = SocketPoller(h, writer.path).start()
                prog.phase = "scenario"

                def on_step(step: Step, state: str) -> None:
                    prog.step, prog.step_index = step.describe(), step.index + 1
                    report(prog)

                def after_reboot() -> None:
                    assert setup is not None
                    setup.reapply_after_reboot()

                runner = StepRunner(
                    h,
                    writer,
                    journal,
                    allow_shell=opts.allow_shell,
                    stop=stop,
                    on_step=on_step,
                    after_reboot=after_reboot,
                    system_packages=[p.name for p in profile.packages if p.system],
                )
                run = runner.run(scenario)
                status = STATUS_COMPLETE
                stopped_by = "stopped" if run.stopped else "scenario_done"
            finally:
                prog.phase = "restoring the device"
                report(prog)
                for monitor in (logcat, sockets):
                    if monitor is not None:
                        monitor.stop()
                if packets is not None:
                    stats = packets.stop()
                    writer.event("packets_stopped", type(packets).__name__, **stats.to_dict())
                if setup is not None:
                    restored = _restore(h, setup, writer)
                    held, setup.held_signals = setup.held_signals, []
                    if held:
                        writer.event("signal_during_restore", "acted on after the restore")
                        raise_held(held)
    except (KeyboardInterrupt, Interrupted) as exc:
        stopped_by = "signal"
        writer.event("audit_interrupted", str(exc) or type(exc).__name__)
    except DeviceError as exc:
        stopped_by = "device_error"
        writer.event("audit_failed", str(exc))
        notes.append(str(exc))
    finally:
        ticker_stop.set()
        rc = mitm.stop()
        if rc not in (0, None) and status == STATUS_COMPLETE:
            status = STATUS_INCOMPLETE
        writer.event("capture_stopped", stopped_by, exit_status=rc, restored=restored)
        manifest = writer.close(status=status, stopped_by=stopped_by, restored=restored)
    return AuditResult(
        writer.path, status, stopped_by, profile, restored, canary_seen, notes, manifest
    )


def _start_packets(
    h: Handset, writer: SessionWriter, journal: RestoreJournal, spec: str, notes: list[str]
) -> Any:
    """Start the packet capture ``--packets`` asks for (``auto``: adb-tcpdump when the device
    has root and tcpdump, else none, and say so)."""
    from auditor.packets.live import TCPDUMP_ERR, AdbTcpdump, IfaceSniffer, PacketsSpec

    def tcpdump() -> Any:
        if h.root_method() is None:
            raise DeviceError(f"{h.serial}: --packets adb-tcpdump needs root, and there is none")
        # tcpdump's stderr goes to a file on the device: journalled, so it is removed again
        cid = journal.record(
            h.serial,
            f"tcpdump writes {TCPDUMP_ERR}",
            {"kind": "remove_file", "path": TCPDUMP_ERR, "root": True},
        )
        source = AdbTcpdump(h, writer.path).start()
        journal.applied(cid)
        return source

    if spec == "auto":
        try:
            source: Any = tcpdump()
        except DeviceError as exc:
            note = f"no packet capture: {exc}"
            notes.append(note)
            writer.event("packets_off", note)
            return None
        writer.event("packets_started", "adb-tcpdump (auto: the device has root and tcpdump)")
        return source
    parsed = PacketsSpec.parse(spec)
    if parsed.kind == "off":
        writer.event("packets_off", "--packets off")
        return None
    if parsed.kind == "adb-tcpdump":
        source = tcpdump()
    elif parsed.kind == "iface":
        ip = h.sh("ip -4 addr show wlan0").stdout
        addr = next((w.split("/")[0] for w in ip.split() if w.count(".") == 3), None)
        bpf = f"host {addr}" if addr else ""
        source = IfaceSniffer(parsed.iface or "", bpf, writer.path).start()
    else:
        raise AuditorError(
            "--packets pcapdroid: start PCAPdroid's TCP exporter toward auditor yourself for "
            "now (see auditor/packets/live.py); the audit loop does not drive it yet"
        )
    writer.event("packets_started", spec)
    return source


def _canary(h: Handset, writer: SessionWriter, tail: FlowTail, timeout: float) -> bool:
    token = secrets.token_hex(8)
    url = f"http://{CANARY_HOST}/auditor-canary/{token}"
    writer.event("canary_sent", url)
    h.sh(f"am start -a android.intent.action.VIEW -d {url}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # scan the new lines only: FlowTail keeps hosts, so look at the file's tail directly
        text = (writer.path / "flows.jsonl").read_bytes()[-200_000:]
        if token.encode() in text:
            writer.event("canary_seen", url)
            h.sh("input keyevent KEYCODE_HOME")
            return True
        time.sleep(0.3)
    writer.event("canary_missing", f"no request for {url} within {timeout:.0f}s")
    h.sh("input keyevent KEYCODE_HOME")
    return False


def _restore(h: Handset, setup: CaptureSetup, writer: SessionWriter, wait: float = 30.0) -> bool:
    deadline = time.monotonic() + wait
    while True:
        try:
            if h.state() == "device":
                rep = setup.restore(act_on_signals=False)
                writer.event(
                    "device_restored" if rep.ok else "restore_incomplete",
                    f"undid {len(rep.undone)} change(s)",
                    failed=[f"{c.what}: {e}" for c, e in rep.failed],
                )
                if rep.ok:
                    return True
        except DeviceError as exc:
            writer.event("restore_error", str(exc))
        if time.monotonic() >= deadline:
            writer.event(
                "restore_pending",
                f"device {h.serial} not back in {wait:.0f}s; run `auditor restore -s {h.serial}`",
            )
            return False
        time.sleep(1.0)
