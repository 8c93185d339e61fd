"""``auditor audit``: from a handset to a closed, hashed capture session (and then a report).

Long because: the loop is one sequence whose every change to the phone must be undone on
every way out, and its steps share the restore journal, the signal guard and the session.

The loop: profile the device, open a session, start mitmdump with the recorder, set the device
up through the restore journal, check interception with a canary, run the scenario while
logcat and the socket table are recorded, restore the device, close the session.

The device is restored on every way out: normal end, exception, Ctrl-C and SIGTERM (the first
signal stops the audit where it is; later ones are held until the session is closed). The
capture stops early, and says why in the manifest's ``stopped_by`` and ``stop_detail``, when
mitmdump dies (``proxy_died``), when the session cannot be written (``disk_full``,
``write_failed``) and when the device goes away (``device_lost``): the session is then kept
with an event saying so, and the restore is retried when the device comes back (or left to
``auditor restore``).
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
from urllib.parse import urlsplit

from auditor.device.handset import Handset
from auditor.device.journal import RestoreJournal
from auditor.device.monitor import LogcatStream, SocketPoller
from auditor.device.profile import DeviceProfile, collect_profile
from auditor.device.runner import StepRunner
from auditor.device.scenario import Scenario, Step, load_scenario
from auditor.device.setup import (
    CaptureSetup,
    Interrupted,
    SignalGuard,
    ca_pem_from,
    undo_change,
)
from auditor.errors import AuditorError, CaptureError, DeviceError
from auditor.fsutil import private_mkdirs
from auditor.proxy.capture import (
    DEFAULT_CONFDIR,
    FlowTail,
    LiveCounts,
    Mitmdump,
    ProxyExit,
    ProxyOptions,
    ca_cert_path,
    write_keyed_captures,
)
from auditor.records import CANARY_HOST
from auditor.session import (
    MANIFEST,
    STATUS_COMPLETE,
    STATUS_INCOMPLETE,
    TLS_KEYLOG,
    SessionWriteError,
    SessionWriter,
    write_error,
)

log = logging.getLogger(__name__)

LOCK_DIR = Path.home() / ".auditor" / "locks"
UPSTREAM_CA = "upstream-ca.pem"

TEST_PAUSE_ENV = "AUDITOR_TEST_PAUSE_AT"
"""Test hook, for auditor's fault tests only (tests/e2e/test_faults.py): with
``AUDITOR_TEST_PAUSE_AT=POINT`` the audit writes a ``test_pause`` event at POINT and waits
there, up to TEST_PAUSE_SECONDS or until a signal arrives, so that a test can interrupt it at
a known step. Unset in real use. The points:

    proxy         mitmdump listens; nothing else started
    packets       the packet capture runs; the device not set up yet
    setup-ca      half way through installing the CA (the system store: an empty tmpfs)
    setup-proxy   the CA installed, private DNS off, the reverse tunnel up; no proxy yet
    canary        the canary request sent
    restore       the restore begun (signals held from here); nothing stopped or undone yet
"""
TEST_PAUSE_POINTS = ("proxy", "packets", "setup-ca", "setup-proxy", "canary", "restore")
TEST_PAUSE_SECONDS = 30.0


@contextmanager
def device_lock(serial: str) -> Iterator[None]:
    """One audit per device at a time, across processes."""
    private_mkdirs(LOCK_DIR)
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
        stale = os.pread(fd, 64, 0).decode(errors="replace").strip()
        if stale and stale != str(os.getpid()):
            # the kernel released the flock of a holder that died without cleaning up
            log.warning("stale lock on %s of pid %s (no longer running) taken over", serial, stale)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # released cleanly: no pid left behind to look stale
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
    restore_wait: float = 30.0  # how long to wait for a device that went away, to restore it
    # QUIC forced to TCP (UDP 443 dropped): None = on when the phone has root (iptables) or
    # PCAPdroid captures (its own blocking); True = required; False = --no-block-quic
    block_quic: bool | None = None
    # each packet capture copied into tls/NAME.pcapng with the TLS key log embedded (Wireshark)
    keyed_pcapng: bool = True
    # an upstream HTTP proxy mitmdump forwards to (a lab's corporate proxy, the virtual
    # handset's offline internet), and the CA file that verifies the servers seen through it
    upstream: str | None = None
    upstream_ca: Path | None = None


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
    # the packet capture, when there is one: packets, and those dropped or lost (never hidden)
    packets: int | None = None
    packets_dropped: int = 0


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
    detail: str = ""  # why the capture stopped early, in one line (the manifest's stop_detail)


class CaptureStopped(AuditorError):
    """The capture cannot go on: mitmdump ended by itself (see :class:`ProxyExit`)."""

    def __init__(self, ended: ProxyExit):
        super().__init__(ended.message)
        self.ended = ended


def planned_seconds(scenario: Scenario) -> float:
    return sum(float(s.args.get("duration") or 0) for s in scenario.steps)


def check_upstream(upstream: str | None, upstream_ca: Path | None) -> None:
    """``--upstream`` is an ``http://`` or ``https://`` proxy URL with a host that mitmproxy's
    upstream mode takes (no path, a valid port) and no user name or password: credentials
    would be written into the session's manifest; ``--upstream-ca`` needs it and is a
    readable file. Checked before anything is written or the device is touched."""
    if upstream is not None:
        from mitmproxy.proxy.mode_specs import ProxyMode

        parts = urlsplit(upstream)
        if parts.username is not None or parts.password is not None:
            raise CaptureError(
                "--upstream: give the proxy without a user name or password (they would be "
                "written into the session); e.g. http://proxy.lan:3128"
            )
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CaptureError(
                f"--upstream {upstream!r}: give the proxy as a URL, e.g. http://proxy.lan:3128"
            )
        try:
            ProxyMode.parse(f"upstream:{upstream}")
        except ValueError as exc:
            raise CaptureError(f"--upstream {upstream!r}: {exc}") from None
    if upstream_ca is not None:
        if upstream is None:
            raise CaptureError("--upstream-ca verifies an upstream proxy: give --upstream too")
        if not upstream_ca.is_file():
            raise CaptureError(f"--upstream-ca {upstream_ca}: no such file")


def run_audit(opts: AuditOptions, on_progress: ProgressFn | None = None) -> AuditResult:
    # Everything that can be checked without touching the device is checked first.
    scenario = load_scenario(opts.scenario, {"duration": opts.duration} if opts.duration else None)
    check_upstream(opts.upstream, opts.upstream_ca)
    if scenario.needs_shell and not opts.allow_shell:
        StepRunner.refuse_shell(scenario)
    handset = Handset(opts.serial)
    if opts.block_quic and opts.packets != "pcapdroid" and handset.root_method() is None:
        raise DeviceError(
            f"{handset.serial}: --block-quic drops UDP 443 with iptables, which needs root; "
            "on a phone without root use --packets pcapdroid (its VPN blocks QUIC) or "
            "--no-block-quic"
        )
    with device_lock(handset.serial):
        return _Audit(handset, scenario, opts, on_progress or (lambda p: None)).run()


class _Audit:
    """One audit, from the profile to the closed session; :meth:`run` is the whole of it."""

    def __init__(self, h: Handset, scenario: Scenario, opts: AuditOptions, report: ProgressFn):
        self.h = h
        self.scenario = scenario
        self.opts = opts
        self.report = report
        self.prog = Progress(steps=len(scenario.steps), planned=planned_seconds(scenario))
        self.guard = SignalGuard()
        self.stop = threading.Event()  # set when mitmdump ends: the scenario stops at once
        self.profile: DeviceProfile | None = None
        self.writer: SessionWriter | None = None
        self.journal: RestoreJournal | None = None
        self.mitm: Mitmdump | None = None
        self.tail: FlowTail | None = None
        self.setup: CaptureSetup | None = None
        self.logcat: LogcatStream | None = None
        self.sockets: SocketPoller | None = None
        self.packets: Any = None
        self.status, self.stopped_by, self.detail = STATUS_INCOMPLETE, "error", ""
        self.restored = False
        self.canary_seen = False
        self.notes: list[str] = []
        self.proxy_exit: ProxyExit | None = None
        self.manifest: dict[str, Any] = {}
        self.quic: dict[str, Any] = {"blocked": False, "method": None}
        self.keyed: list[dict[str, Any]] = []
        self.ticking = False
        self.started = time.monotonic()
        self._quit = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="audit-watch", daemon=True)
        self._paused: set[str] = set()

    # ---------------------------------------------------------------------------------- run
    def run(self) -> AuditResult:
        error: BaseException | None = None
        with self.guard:
            try:
                try:
                    self._open()
                    self._capture()
                finally:
                    self.guard.hold()  # from here on nothing interrupts the way out
            except (KeyboardInterrupt, Interrupted) as exc:
                if self.writer is None:
                    raise KeyboardInterrupt from None  # no session yet, nothing changed
                self.stopped_by = "signal"
                self._event("audit_interrupted", str(exc) or type(exc).__name__)
            except CaptureStopped as exc:
                self._proxy_ended(exc.ended)
                self.stopped_by, self.detail = exc.ended.stopped_by, exc.ended.message
            except DeviceError as exc:
                if self.writer is None:
                    raise
                self._device_failed(exc)
            except SessionWriteError as exc:
                if self.writer is None:
                    raise
                self.stopped_by = "disk_full" if exc.disk_full else "write_failed"
                self.detail = f"auditor could not write to the session: {exc}"
                self.notes.append(self.detail)
                self._event("session_write_failed", str(exc), disk_full=exc.disk_full)
            except BaseException as exc:
                if self.writer is None:
                    raise
                error = exc
                self.stopped_by, self.detail = "error", f"{type(exc).__name__}: {exc}"
                self._event("audit_failed", self.detail)
            self._shutdown()
        if error is not None:
            raise error
        assert self.writer is not None and self.profile is not None
        return AuditResult(
            self.writer.path,
            self.status,
            self.stopped_by,
            self.profile,
            self.restored,
            self.canary_seen,
            self.notes,
            self.manifest,
            self.detail,
        )

    def _open(self) -> None:
        self._enter("profiling")
        self.profile = profile = collect_profile(self.h)
        opts = self.opts
        with self.guard.deferred():  # a session is created whole, or not at all
            self.writer = SessionWriter.create(
                opts.out,
                notes=opts.notes,
                device=profile.to_dict(),
                scenario=self.scenario.to_manifest(),
                body_cap=opts.body_cap,
                capture={
                    "route": opts.route,
                    "ca": opts.ca,
                    "upstream": opts.upstream,
                    "proxy": {"listen_host": opts.listen_host, "port": opts.port},
                },
            )
        self.journal = RestoreJournal.in_session(self.writer.path)
        self.tail = FlowTail(self.writer.path)

    def _capture(self) -> None:
        h, opts, writer = self.h, self.opts, self.writer
        assert writer is not None and self.journal is not None and self.profile is not None
        self._enter("starting proxy")
        self.mitm = self._proxy()
        self.mitm.start()
        writer.event(
            "proxy_listening",
            f"mitmdump pid {self.mitm.pid}",
            pid=self.mitm.pid,
            mode=self.mitm.opts.mode,
            tls_keylog=TLS_KEYLOG,
        )
        self._watcher.start()
        self._pause("proxy")

        self._enter("starting packet capture")
        want_quic_blocked = opts.block_quic is not False
        with self.guard.deferred():  # a capture that started is one that gets stopped
            self.packets = _start_packets(
                h, writer, self.journal, opts.packets, self.notes, block_quic=want_quic_blocked
            )
        self._pause("packets")
        self._check_proxy()
        by_pcapdroid = bool(getattr(self.packets, "blocks_quic", False))
        by_iptables = want_quic_blocked and not by_pcapdroid and h.root_method() is not None

        self.setup = CaptureSetup(
            h,
            self.journal,
            proxy_host=opts.listen_host,
            proxy_port=opts.port,
            route=opts.route,
            ca=opts.ca,
            ca_pem=ca_pem_from(ca_cert_path(opts.confdir)) if opts.ca != "none" else None,
            private_dns_off=opts.private_dns_off,
            block_quic=by_iptables,
            quic_required=opts.block_quic is True,
            checkpoint=lambda name: self._pause(f"setup-{name}"),
        )
        self._enter("setting up the device")
        try:
            self.setup.apply()
        finally:
            self._quic_decided(by_pcapdroid)
        for n in self.setup.notes:
            writer.event("setup_note", n)
        self.notes += self.setup.notes
        self._check_proxy()

        self.ticking = True
        self._enter("canary")
        self.canary_seen = self._canary()
        if not self.canary_seen:
            self.notes.append(
                "interception not confirmed: the canary request never reached the proxy"
            )
        self._check_proxy()

        with self.guard.deferred():
            self.logcat = LogcatStream(h, writer.path).start()
            self.sockets = SocketPoller(h, writer.path).start()
        self._enter("scenario")

        def on_step(step: Step, state: str) -> None:
            self.prog.step, self.prog.step_index = step.describe(), step.index + 1
            self.prog.phase, self.prog.message = "scenario", ""
            self.report(self.prog)

        def operator(text: str) -> None:
            """A step needs the operator's hands (``sim_insert``): say so where progress shows."""
            log.warning("operator: %s", text)
            self.prog.message = text
            self._enter(f"OPERATOR: {text}")

        def after_reboot() -> None:
            assert self.setup is not None
            self.setup.reapply_after_reboot()

        runner = StepRunner(
            h,
            writer,
            self.journal,
            allow_shell=opts.allow_shell,
            stop=self.stop,
            on_step=on_step,
            after_reboot=after_reboot,
            system_packages=[p.name for p in self.profile.packages if p.system],
            prompt=operator,
        )
        run = runner.run(self.scenario)
        self._check_proxy()
        self.status = STATUS_COMPLETE
        self.stopped_by = "stopped" if run.stopped else "scenario_done"

    def _quic_decided(self, by_pcapdroid: bool) -> None:
        """What the manifest says of QUIC (``quic``), and an event for the timeline."""
        assert self.writer is not None and self.setup is not None
        requested = {None: "auto", True: "on", False: "off"}[self.opts.block_quic]
        quic: dict[str, Any]
        if by_pcapdroid:
            quic = {"blocked": True, "method": "pcapdroid"}
        elif self.setup.quic.get("blocked"):
            quic = dict(self.setup.quic)
        elif requested == "off":
            quic = {"blocked": False, "method": None, "why": "--no-block-quic"}
        elif self.setup.block_quic:
            why = "; ".join(self.setup.quic.get("failed") or []) or "the setup stopped first"
            quic = {"blocked": False, "method": None, "why": f"iptables rules not in: {why}"}
        else:
            quic = {"blocked": False, "method": None, "why": "no root for iptables"}
        self.quic = {**quic, "requested": requested}
        if quic["blocked"]:
            self._event("quic_blocked", f"UDP 443 dropped by {quic['method']}", **self.quic)
        else:
            why = quic.get("why", "")
            self._event("quic_not_blocked", f"QUIC may bypass the proxy: {why}", **self.quic)
            if requested == "auto" and why != "--no-block-quic":
                self.notes.append(
                    f"QUIC not blocked ({why}): apps that speak it bypass the proxy; the "
                    "packet capture, if any, shows how much"
                )

    def _proxy(self) -> Mitmdump:
        """mitmdump's options: upstream mode when ``--upstream`` names a proxy, trusting
        ``--upstream-ca`` (copied into the session) for the servers seen through it."""
        assert self.writer is not None and self.profile is not None
        writer, opts = self.writer, self.opts
        upstream = opts.upstream
        extra: dict[str, str] = {}
        mode = "regular"
        if upstream:
            mode = f"upstream:{upstream}"
            if opts.upstream_ca is not None:
                (writer.path / UPSTREAM_CA).write_bytes(opts.upstream_ca.read_bytes())
                (writer.path / UPSTREAM_CA).chmod(0o600)
                extra["ssl_verify_upstream_trusted_ca"] = str(writer.path / UPSTREAM_CA)
            writer.event("upstream_mode", f"mitmdump forwards to the upstream proxy {upstream}")
        proxy = ProxyOptions(
            listen_host=opts.listen_host,
            port=opts.port,
            confdir=opts.confdir,
            body_cap=opts.body_cap,
            mode=mode,
            extra=extra,
        )
        return Mitmdump(writer.path, proxy)

    def _canary(self) -> bool:
        assert self.writer is not None
        h, writer, timeout = self.h, self.writer, self.opts.canary_timeout
        token = secrets.token_hex(8)
        url = f"http://{CANARY_HOST}/auditor-canary/{token}"
        writer.event("canary_sent", url)
        h.sh(f"am start -a android.intent.action.VIEW -d {url}")
        self._pause("canary")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stop.is_set():
            # scan the new lines only: FlowTail keeps hosts, so look at the file's tail directly
            with open(writer.path / "flows.jsonl", "rb") as fh:
                fh.seek(max(0, os.fstat(fh.fileno()).st_size - 200_000))
                text = fh.read()
            if token.encode() in text:
                writer.event("canary_seen", url)
                h.sh("input keyevent KEYCODE_HOME")
                return True
            time.sleep(0.3)
        if not self.stop.is_set():
            writer.event("canary_missing", f"no request for {url} within {timeout:.0f}s")
        h.sh("input keyevent KEYCODE_HOME")
        return False

    # ----------------------------------------------------------------------------- way out
    def _shutdown(self) -> None:
        """Stop what runs beside the capture, restore the device, stop mitmdump, close the
        session. Runs with signals held, whatever happened before."""
        assert self.writer is not None
        self._enter("restoring the device")
        self._pause("restore")
        for monitor in (self.logcat, self.sockets):
            if monitor is not None:
                try:
                    monitor.stop()
                except Exception as exc:  # noqa: BLE001 - the restore comes first
                    log.warning("stopping %s: %s", type(monitor).__name__, exc)
        self._monitors_full()  # one found full at the very end still counts
        if self.packets is not None:
            try:
                stats = self.packets.stop()
                self._event("packets_stopped", type(self.packets).__name__, **stats.to_dict())
                self._packet_counts()  # a full disk found at the very end still counts
                self.report(self.prog)  # and the final counts (a last record cut) are shown
            except Exception as exc:  # noqa: BLE001 - the restore comes first
                self._event("packets_stop_failed", f"{type(self.packets).__name__}: {exc}")
        try:
            self.restored = self._restore()
        except Exception as exc:  # the session must still be closed
            log.exception("restoring the device")
            self._event("restore_error", f"{type(exc).__name__}: {exc}")
        if not self.restored:
            self.notes.append(
                f"device {self.h.serial} NOT restored: reconnect it and run "
                f"`auditor restore -s {self.h.serial} {self.writer.path}`"
            )
        self._quit.set()
        if self._watcher.is_alive():
            self._watcher.join(5)
        rc: int | None = None
        if self.mitm is not None:
            listened = self._watcher.ident is not None  # (not one that failed to start)
            ended = self.mitm.exited() if listened else None
            if ended is not None and self.proxy_exit is None:
                self._proxy_ended(ended)
            rc = self.mitm.stop()
        self._keyed_captures()  # the key log is whole once mitmdump has stopped
        if self.proxy_exit is not None:
            self.status = STATUS_INCOMPLETE
            if self.stopped_by in ("scenario_done", "stopped"):
                self.stopped_by, self.detail = self.proxy_exit.stopped_by, self.proxy_exit.message
        if rc not in (0, None):
            self.status = STATUS_INCOMPLETE
        if self.guard.held and self.stopped_by != "signal":
            self._event(
                "signal_during_restore",
                "acted on after the restore",
                signals=sorted(set(self.guard.held)),
            )
            self.stopped_by = "signal"
        self._event("capture_stopped", self.stopped_by, exit_status=rc, restored=self.restored)
        updates: dict[str, Any] = {
            "stopped_by": self.stopped_by,
            "restored": self.restored,
            "quic": self.quic,
        }
        if self.detail:
            updates["stop_detail"] = self.detail
        if self.keyed:
            updates["tls_keyed_captures"] = self.keyed
        try:
            self.manifest = self.writer.close(status=self.status, **updates)
        except OSError as exc:
            raise write_error(self.writer.path / MANIFEST, exc) from None

    def _keyed_captures(self) -> None:
        """The packet captures with the TLS secrets embedded, for Wireshark (see
        :func:`auditor.proxy.capture.write_keyed_captures`); a failure is an event, never the end
        of the way out."""
        if not self.opts.keyed_pcapng or self.packets is None or self.writer is None:
            return
        if "disk_full" in (self.stopped_by, getattr(self.proxy_exit, "stopped_by", "")):
            self._event("keyed_capture_skipped", "the disk is full: no copy with the secrets")
            return
        try:
            done = write_keyed_captures(self.writer.path)
        except Exception as exc:  # noqa: BLE001 - a copy for Wireshark never stops the way out
            self._event("keyed_capture_failed", f"{type(exc).__name__}: {exc}")
            return
        for k in done:
            self._event(
                "keyed_capture",
                f"{k.capture} with the TLS key log: {k.keyed} ({k.packets} packets)",
                **k.to_dict(),
            )
        self.keyed = [k.to_dict() for k in done]

    def _restore(self) -> bool:
        """Undo every journalled change; wait up to ``restore_wait`` for a device that went
        away to come back."""
        assert self.journal is not None
        h, journal = self.h, self.journal
        if not [c for c in journal.pending() if c.serial == h.serial]:
            return True  # nothing was changed, or all of it is undone already

        wait = self.opts.restore_wait
        deadline = time.monotonic() + wait
        while True:
            try:
                if h.state() == "device":
                    rep = journal.undo_all(lambda undo: undo_change(h, undo), serial=h.serial)
                    self._event(
                        "device_restored" if rep.ok else "restore_incomplete",
                        f"undid {len(rep.undone)} change(s)",
                        failed=[f"{c.what}: {e}" for c, e in rep.failed],
                        unrecorded=[c.what for c in rep.unrecorded],
                    )
                    if rep.ok:
                        return True
            except DeviceError as exc:
                self._event("restore_error", str(exc))
            if time.monotonic() >= deadline:
                pending = [c.what for c in journal.pending() if c.serial == h.serial]
                assert self.writer is not None
                self._event(
                    "restore_pending",
                    f"device {h.serial} not back in {wait:.0f}s; once it is, run "
                    f"`auditor restore -s {h.serial} {self.writer.path}`",
                    pending=pending,
                )
                return False
            time.sleep(1.0)

    # ------------------------------------------------------------------------------ faults
    def _device_failed(self, exc: DeviceError) -> None:
        try:
            state = self.h.state()
        except DeviceError:
            state = "unknown (the adb server cannot be reached)"
        if state == "device":
            self.stopped_by, self.detail = "device_error", str(exc)
        else:
            self.stopped_by = "device_lost"
            self.detail = (
                f"device {self.h.serial} went away during the {self.prog.phase} "
                f"(it is {state}): {exc}"
            )
        self.notes.append(self.detail)
        self._event("audit_failed", self.detail, state=state)

    def _proxy_ended(self, ended: ProxyExit) -> None:
        """mitmdump ended by itself: say so once, and stop the scenario."""
        if self.proxy_exit is not None:
            return
        self.proxy_exit = ended
        self.stop.set()
        log.error("%s", ended.message)
        self.notes.append(ended.message)
        self._event(ended.event, ended.message, **ended.data())

    def _check_proxy(self) -> None:
        if self.proxy_exit is not None:
            raise CaptureStopped(self.proxy_exit)

    def _watch(self) -> None:
        """Beside the main thread: notice at once when mitmdump ends, and show progress."""
        assert self.mitm is not None and self.tail is not None
        next_tick = time.monotonic()
        while not self._quit.wait(0.2):
            if self.proxy_exit is None:
                ended = self.mitm.exited()
                if ended is not None:
                    self._proxy_ended(ended)
            if self.ticking and time.monotonic() >= next_tick:
                next_tick = time.monotonic() + 0.5
                self.prog.elapsed = time.monotonic() - self.started
                self.prog.counts = self.tail.poll()
                self._packet_counts()
                self._monitors_full()
                self.report(self.prog)

    # ----------------------------------------------------------------------------- helpers
    def _packet_counts(self) -> None:
        source = self.packets
        if source is None:
            return
        try:
            st = source.stats
        except Exception:  # noqa: BLE001 - progress must never stop the audit
            return
        self.prog.packets = int(st.packets)
        self.prog.packets_dropped = int(st.dropped + st.lost)
        self._disk_full("packets", "the packet capture", getattr(st, "disk_full", ""))

    def _monitors_full(self) -> None:
        for source, name, monitor in (
            ("logcat", "logcat", self.logcat),
            ("sockets", "the socket poller", self.sockets),
        ):
            if monitor is not None:
                self._disk_full(source, name, monitor.disk_full)

    def _disk_full(self, source: str, what: str, error: str) -> None:
        """Something beside mitmdump (the packet capture, logcat, the socket poller) could
        not grow its file in the session: the disk is as full for the proxy's records, so
        the capture stops as it would for them (``disk_full``), keeping what is written."""
        if not error or self.proxy_exit is not None:
            return
        self._proxy_ended(
            ProxyExit(
                stopped_by="disk_full",
                exit_status=0,
                signal=None,
                pid=None,
                message=f"{what} stopped: {error}",
                source=source,
            )
        )

    def _enter(self, phase: str) -> None:
        self.prog.phase = phase
        self.report(self.prog)

    def _event(self, kind: str, message: str = "", **data: Any) -> None:
        """An event on the way out: one that cannot be written (the disk is full) is kept
        for the manifest (``unwritten_events``) instead, and the way out goes on."""
        if self.writer is None:
            return
        try:
            self.writer.event(kind, message, **data)
        except SessionWriteError as exc:
            log.error("%s (event %s kept in the manifest)", exc, kind)

    def _pause(self, point: str) -> None:
        """The test hook (see TEST_PAUSE_ENV); once per point."""
        if os.environ.get(TEST_PAUSE_ENV) != point or point in self._paused:
            return
        self._paused.add(point)
        self._event("test_pause", f"{TEST_PAUSE_ENV}={point}: waiting for a signal", at=point)
        deadline = time.monotonic() + TEST_PAUSE_SECONDS
        while time.monotonic() < deadline and not self.guard.held:
            time.sleep(0.05)  # a signal raises here, or is held (then the loop ends)


def _pcapdroid_hint(h: Handset) -> str:
    """What to say when ``auto`` finds no root: PCAPdroid, if the phone has it, is the way to
    packets without root. ``auto`` does not start it by itself: on a real phone it asks the
    user to accept a VPN, which an unattended audit should not spring on anyone."""
    from auditor.packets.live import PCAPDROID_PACKAGE, PCAPDROID_TCP_EXPORTER, _installed

    try:
        if not _installed(h, PCAPDROID_PACKAGE):
            return ""
    except Exception:  # noqa: BLE001 - only a hint
        return ""
    need = ".".join(map(str, PCAPDROID_TCP_EXPORTER))
    return f"PCAPdroid is installed: --packets pcapdroid captures without root (needs {need}+)"


def _start_packets(
    h: Handset,
    writer: SessionWriter,
    journal: RestoreJournal,
    spec: str,
    notes: list[str],
    *,
    block_quic: bool = False,
) -> Any:
    """Start the packet capture ``--packets`` asks for (``auto``: adb-tcpdump when the device
    has root and tcpdump, else none, and say so). With ``block_quic`` and no root, PCAPdroid
    is asked to block QUIC itself; its source then has ``blocks_quic`` set."""
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
            hint = _pcapdroid_hint(h)
            if hint:
                note += f"; {hint}"
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
        from auditor.packets.live import start_pcapdroid

        # PCAPdroid's TCP exporter through adb reverse; its start and the reverse are
        # journalled, and undone on the way out if it fails half-way. Its own QUIC blocking
        # (the block_quic extra of its API, from version code 51; docs/app_api.md) when there
        # is no root to drop it with iptables.
        blocks = block_quic and h.root_method() is None
        source = start_pcapdroid(h, writer.path, journal, block_quic=blocks)
    writer.event("packets_started", spec)
    return source
