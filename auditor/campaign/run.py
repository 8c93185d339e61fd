"""Run a campaign: one scenario on several handsets of one adb server at once.

Each handset's audit is a process of its own (``auditor.campaign.worker``) with its own proxy
port, reverse tunnel, device lock, packet capture and restore journal, all the audit's own
(``auditor.audit``). The campaign chooses the ports (another one when a port was taken
before the audit's mitmdump could bind it), starts the processes, relays their progress,
and stops them on every way out (SIGTERM, then SIGKILL after a grace period). A process
that ends without its result (killed, crashed) is cleaned up after: its mitmdump is
stopped, its device restored from the session's journal when it is still there, and its
session sealed as incomplete. One handset's failure never stops the others.

Then each handset's session report is read back and the matrix written (``report.py``).
The folder::

    CAMPAIGN/campaign.json           the manifest: each handset, its session, its outcome
    CAMPAIGN/report.html, matrix.json, summary.md
    CAMPAIGN/sessions/<session-id>/  the closed sessions
    CAMPAIGN/reports/<session-id>/   each session's report (findings.json, report.html, ...)
    CAMPAIGN/handsets/<serial>/      each audit process's log and result.json
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from auditor import jsonio
from auditor.campaign import matrix as mx
from auditor.errors import AuditorError, DeviceError
from auditor.fsutil import private_mkdirs
from auditor.timeutil import now_iso

log = logging.getLogger(__name__)

MANIFEST = "campaign.json"
CAMPAIGN_SCHEMA_VERSION = 1
SESSIONS, REPORTS, HANDSETS = "sessions", "reports", "handsets"
STOP_GRACE = 60.0  # seconds a stopped audit has to restore its device and close its session
# proxy ports tried per handset: a port is free when chosen but is only bound when its audit's
# mitmdump starts, so another process may take it in between; the audit then ends before it
# changes anything on the device, and starts again on another port
PORT_ATTEMPTS = 3

OUTCOME_COMPLETE = "complete"
OUTCOME_LOST = "device_lost"
OUTCOME_FAILED = "failed"
OUTCOME_INTERRUPTED = "interrupted"


class CampaignError(AuditorError):
    pass


@dataclass
class CampaignOptions:
    serials: list[str] = field(default_factory=list)
    all_devices: bool = False
    scenario: str = "idle"
    duration: str | None = None
    out: Path = Path("campaigns")
    confdir: Path | None = None  # mitmproxy's CA, shared by the campaign's proxies
    packets: str = "auto"
    ca: str = "auto"
    allow_shell: bool = False
    upstream: str | None = None  # as audit's --upstream and --upstream-ca, for every handset
    upstream_ca: Path | None = None
    restore_wait: float = 30.0
    canary_timeout: float = 15.0
    notes: str = ""
    analyze: bool = True


@dataclass(frozen=True, slots=True)
class Event:
    """A line of progress: one handset's (serial set) or the campaign's."""

    serial: str | None
    kind: str  # started | progress | closed | finished | error | note
    message: str
    data: dict[str, Any] = field(default_factory=dict)


EventFn = Callable[[Event], None]


@dataclass
class CampaignResult:
    folder: Path
    manifest: dict[str, Any]
    matrix: dict[str, Any]
    files: list[Path]
    seconds: float

    @property
    def outcomes(self) -> dict[str, str]:
        return {h["serial"]: h["outcome"] for h in self.manifest["handsets"]}


# ------------------------------------------------------------------------ before anything


def resolve_serials(serials: list[str], all_devices: bool) -> list[str]:
    """The handsets to audit: those named (each must be online), or every online one."""
    from auditor.device.handset import list_devices

    if serials and all_devices:
        raise CampaignError("give --serial or --all, not both")
    if not serials and not all_devices:
        raise CampaignError("name the handsets with --serial S (repeatable), or use --all")
    devices = {d.serial: d for d in list_devices()}
    if all_devices:
        online = sorted(s for s, d in devices.items() if d.state == "device")
        if not online:
            others = ", ".join(f"{s} ({d.state})" for s, d in sorted(devices.items()))
            raise CampaignError(
                "no devices online"
                + (f" ({others})" if others else "")
                + ": plug phones in, or start some with `auditor simulate`"
            )
        return online
    dupes = sorted({s for s in serials if serials.count(s) > 1})
    if dupes:
        raise CampaignError(f"handset named twice: {', '.join(dupes)}")
    for s in serials:
        d = devices.get(s)
        if d is None:
            known = ", ".join(sorted(devices)) or "none"
            raise CampaignError(f"unknown serial {s!r}: the adb server sees {known}")
        if d.state != "device":
            raise CampaignError(
                f"{s} is {d.state}, not online" + (f" ({d.hint})" if d.hint else "")
            )
    return list(serials)


def _not_online() -> list[str]:
    from auditor.device.handset import list_devices

    return [f"{d.serial} ({d.state})" for d in list_devices() if d.state != "device"]


def ensure_ca(confdir: Path) -> None:
    """Create mitmproxy's CA once, before the proxies start: several mitmdump processes
    creating it at the same time could each write a different one."""
    from mitmproxy.certs import CertStore
    from mitmproxy.options import CONF_BASENAME, KEY_SIZE

    private_mkdirs(confdir)
    CertStore.from_store(confdir, CONF_BASENAME, KEY_SIZE)


def slug(serial: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in serial) or "_"


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports, held open together while chosen."""
    import socket

    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def new_campaign_id() -> str:
    from auditor.session.writer import new_session_id

    return new_session_id()


# ------------------------------------------------------------------------------ the workers


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the audit process gets SIGTERM (restores and closes) if the campaign dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Worker:
    serial: str
    port: int
    folder: Path  # handsets/<serial>/
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    reader: threading.Thread | None = None
    started: float = 0.0
    ended: float = 0.0
    returncode: int | None = None
    phase: str = ""
    taken: list[int] = field(default_factory=list)  # its proxy ports found taken, in order
    left: list[Path] = field(default_factory=list)  # the sessions of those attempts

    @property
    def result_path(self) -> Path:
        return self.folder / "result.json"


def _argv(w: Worker, opts: CampaignOptions, folder: Path, confdir: Path) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "auditor.campaign.worker",
        "--serial", w.serial,
        "--scenario", opts.scenario,
        "--out", str(folder / SESSIONS),
        "--reports", str(folder / REPORTS),
        "--result", str(w.result_path),
        "--port", str(w.port),
        "--confdir", str(confdir),
        "--packets", opts.packets,
        "--ca", opts.ca,
        "--restore-wait", str(opts.restore_wait),
        "--canary-timeout", str(opts.canary_timeout),
        "--notes", opts.notes or f"campaign {folder.name}",
    ]  # fmt: skip
    if opts.duration:
        argv += ["--duration", opts.duration]
    if opts.allow_shell:
        argv.append("--allow-shell")
    if opts.upstream:
        argv += ["--upstream", opts.upstream]
    if opts.upstream_ca:
        argv += ["--upstream-ca", str(opts.upstream_ca)]
    if not opts.analyze:
        argv.append("--no-analyze")
    return argv


def _relay(w: Worker, on_event: EventFn) -> None:
    """The worker's progress lines, as events."""
    assert w.proc is not None and w.proc.stdout is not None
    for raw in w.proc.stdout:
        try:
            msg = jsonio.loads(raw.decode("utf-8", "replace"), "a progress line", expect=dict)
        except ValueError:
            continue  # not ours (a stray print): the log keeps stderr anyway
        kind = str(msg.pop("kind", "progress"))
        if kind == "progress":
            w.phase = str(msg.get("phase") or "")
            text = w.phase
            if w.phase == "scenario" and msg.get("step"):
                text += f" step {msg.get('step_index')}/{msg.get('steps')} {msg['step']}"
            text += f" ({msg['flows']} flows)" if msg.get("flows") else ""
        elif kind == "closed":
            text = f"session closed: {msg.get('status')} ({msg.get('stopped_by')})"
        else:
            text = str(msg.get("message") or kind)
        on_event(Event(w.serial, kind, text, msg))


def _start(w: Worker, argv: list[str], on_event: EventFn) -> None:
    private_mkdirs(w.folder)
    w.log = open(w.folder / "audit.log", "ab")
    w.proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=w.log,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )
    w.started = time.monotonic()
    w.reader = threading.Thread(target=_relay, args=(w, on_event), daemon=True)
    w.reader.start()
    on_event(Event(w.serial, "started", f"audit pid {w.proc.pid}, proxy port {w.port}",
                   {"pid": w.proc.pid, "port": w.port}))  # fmt: skip


def _stop(workers: list[Worker], grace: float) -> None:
    """SIGTERM every audit still running (it restores its device and closes its session),
    then SIGKILL what is left after ``grace`` seconds."""
    live = [w for w in workers if w.proc is not None and w.proc.poll() is None]
    for w in live:
        assert w.proc is not None
        with contextlib.suppress(ProcessLookupError):
            w.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for w in live:
        assert w.proc is not None
        try:
            w.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("audit of %s (pid %s) did not stop: killed", w.serial, w.proc.pid)
            w.proc.kill()
            w.proc.wait(10)


def _finish(w: Worker) -> None:
    if w.proc is not None:
        w.returncode = w.proc.wait()
        w.ended = w.ended or time.monotonic()
    if w.reader is not None:
        w.reader.join(5)
    if w.proc is not None and w.proc.stdout is not None:
        w.proc.stdout.close()
    if w.log is not None:
        w.log.close()


def _port_taken(w: Worker) -> bool:
    """The audit ended before it began because its mitmdump found its proxy port taken."""
    from auditor.campaign.worker import PORT_TAKEN

    try:
        r = jsonio.load(w.result_path, "an audit's result", expect=dict)
    except (OSError, ValueError):
        return False
    return r.get("session") is None and r.get("error_kind") == PORT_TAKEN


def _port_notes(w: Worker, folder: Path) -> list[str]:
    """What the ports taken did to this handset's audit, for its record."""
    if not w.taken:
        return []
    taken = ", ".join(map(str, w.taken))
    notes = [f"proxy port(s) {taken} taken by another process before mitmdump could listen"]
    for s in w.left:
        notes.append(f"the attempt on a taken port left session {s.relative_to(folder)} "
                     "(incomplete; nothing on the device was changed)")  # fmt: skip
    return notes


# ------------------------------------------------------------------ after a worker is gone


def _session_of(sessions: Path, serial: str, since: str) -> Path | None:
    """The session an audit of ``serial`` made in this campaign (for an audit that died
    before saying which): the newest whose manifest names that device."""
    from auditor.session.layout import MANIFEST as SESSION_MANIFEST
    from auditor.session.manifest import read_manifest_lenient

    found = []
    for d in sorted(sessions.iterdir()) if sessions.is_dir() else []:
        if not (d / SESSION_MANIFEST).is_file():
            continue
        m, _ = read_manifest_lenient(d)
        device = m.get("device")
        if not isinstance(device, dict):
            continue
        if device.get("serial") == serial and str(m.get("started_at") or "") >= since:
            found.append(d)
    return found[-1] if found else None


def _salvage(w: Worker, session: Path | None, notes: list[str]) -> dict[str, Any]:
    """An audit process ended without its result: stop its mitmdump, restore its device
    from the journal when it can be reached, and seal its session as incomplete."""
    from auditor.evidence.close import seal_late
    from auditor.session.layout import STATUS_OPEN
    from auditor.session.manifest import read_manifest_lenient

    out: dict[str, Any] = {"serial": w.serial, "session": str(session) if session else None}
    why = f"the audit process of {w.serial} ended without a result (exit status {w.returncode})"
    if w.proc is None:
        why = f"the audit process of {w.serial} did not start"
    notes.append(why)
    if session is None:
        out["outcome_error"] = why
        return out
    pid = _mitmdump_pid(session)
    if pid is not None and _is_mitmdump(pid):
        _end_process(pid)
        notes.append(f"its mitmdump (pid {pid}) stopped")
    out["restored"] = _restore_from_journal(w.serial, session, notes)
    m, _ = read_manifest_lenient(session)
    if m.get("status") == STATUS_OPEN:
        try:
            sealed = seal_late(session, by="auditor campaign", reason=why)
            m = sealed.manifest
        except AuditorError as exc:
            notes.append(f"session {session.name} not sealed: {exc}")
    out.update(status=m.get("status"), stopped_by=m.get("stopped_by"), detail=why)
    summary = m.get("summary")
    out["summary"] = summary if isinstance(summary, dict) else {}
    return out


def _mitmdump_pid(session: Path) -> int | None:
    from auditor.session.layout import FLOWS

    with contextlib.suppress(OSError), open(session / FLOWS, "rb") as fh:
        for line in fh:
            if b'"kind":"proxy_listening"' in line:
                with contextlib.suppress(ValueError):
                    pid = jsonio.loads(line.decode(), "an event", expect=dict)["data"]["pid"]
                    return int(pid)
    return None


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _end_process(pid: int, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; returns once it is gone."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.1)


def _is_mitmdump(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"mitmdump" in cmd or b"mitmproxy" in cmd


def _restore_from_journal(serial: str, session: Path, notes: list[str]) -> bool:
    from auditor.device.handset import Handset
    from auditor.device.journal import RestoreJournal
    from auditor.device.setup import restore_device

    journal = RestoreJournal.in_session(session)
    if not [c for c in journal.pending() if c.serial == serial]:
        return True
    try:
        rep = restore_device(Handset(serial), journal)
    except DeviceError as exc:
        notes.append(f"{serial} not restored ({exc}): run `auditor restore -s {serial} {session}`")
        return False
    return bool(rep.ok)


def _outcome(r: dict[str, Any]) -> str:
    if r.get("session") is None:
        return OUTCOME_INTERRUPTED if "interrupted" in str(r.get("outcome_error")) else "failed"
    stopped = r.get("stopped_by")
    if stopped == "device_lost":
        return OUTCOME_LOST
    if stopped == "signal":
        return OUTCOME_INTERRUPTED
    if (
        r.get("status") == "complete"
        and r.get("restored")
        and stopped
        in (
            "scenario_done",
            "stopped",
        )
    ):
        return OUTCOME_COMPLETE
    return OUTCOME_FAILED


def _handset_record(w: Worker, r: dict[str, Any], folder: Path) -> dict[str, Any]:
    def rel(p: Any) -> str | None:
        if not p:
            return None
        with contextlib.suppress(ValueError):
            return str(Path(p).resolve().relative_to(folder.resolve()))
        return str(p)

    session = rel(r.get("session"))
    report = rel(r.get("report"))
    summary = r.get("summary")
    if not isinstance(summary, dict):
        summary = {}
    return {
        "serial": w.serial,
        "outcome": _outcome(r),
        "session": session,
        "report": f"{report}/report.html" if report else None,
        "status": r.get("status"),
        "stopped_by": r.get("stopped_by"),
        "restored": r.get("restored"),
        "canary_seen": r.get("canary_seen"),
        "detail": r.get("detail") or r.get("outcome_error") or "",
        "notes": list(r.get("notes") or []),
        "analysis_error": r.get("analysis_error"),
        "proxy_port": w.port,
        "pid": w.proc.pid if w.proc is not None else None,
        "exit_status": w.returncode,
        "seconds": round(w.ended - w.started, 1) if w.ended else None,
        "flows": summary.get("flows"),
        "log": rel(w.folder / "audit.log"),
    }


# ------------------------------------------------------------------------------ the campaign


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM to the campaign stops it as Ctrl-C does (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    from auditor.session.writer import write_json_atomic

    write_json_atomic(folder / MANIFEST, manifest)


def run_campaign(
    opts: CampaignOptions,
    on_event: EventFn | None = None,
    *,
    pick_ports: Callable[[int], list[int]] = free_ports,
) -> CampaignResult:
    """Audit every handset at once; then analyse and write the matrix. ``pick_ports(n)``
    chooses ``n`` proxy ports (free ones, by default)."""
    from auditor.audit import check_upstream
    from auditor.device.scenario import load_scenario
    from auditor.proxy.capture import DEFAULT_CONFDIR

    say = on_event or (lambda e: None)
    started = time.monotonic()
    # everything that can be checked before touching a device is checked first
    scenario = load_scenario(opts.scenario, {"duration": opts.duration} if opts.duration else None)
    check_upstream(opts.upstream, opts.upstream_ca)
    if scenario.needs_shell and not opts.allow_shell:
        from auditor.device.runner import StepRunner

        StepRunner.refuse_shell(scenario)
    serials = resolve_serials(opts.serials, opts.all_devices)
    if opts.all_devices:
        for d in _not_online():
            say(Event(None, "note", f"{d} left out: not online"))
    confdir = opts.confdir or DEFAULT_CONFDIR
    ensure_ca(confdir)

    campaign_id = new_campaign_id()
    folder = private_mkdirs(Path(opts.out) / campaign_id)
    for sub in (SESSIONS, REPORTS, HANDSETS):
        private_mkdirs(folder / sub)
    since = now_iso()
    manifest: dict[str, Any] = {
        "schema_version": CAMPAIGN_SCHEMA_VERSION,
        "campaign_id": campaign_id,
        "status": "running",
        "started_at": since,
        "ended_at": None,
        "scenario": scenario.to_manifest(),
        "scenario_name": opts.scenario,
        "duration": opts.duration,
        "notes": opts.notes,
        "adb_server_port": _adb_port(),
        "handsets": [{"serial": s, "outcome": "running"} for s in serials],
    }
    _write_manifest(folder, manifest)
    say(Event(None, "note", f"campaign {campaign_id}: {len(serials)} handset(s), "
                            f"scenario {opts.scenario}", {"folder": str(folder)}))  # fmt: skip

    workers = [
        Worker(s, port, folder / HANDSETS / slug(s))
        for s, port in zip(serials, pick_ports(len(serials)), strict=True)
    ]

    def again(w: Worker) -> bool:
        """Start ``w``'s audit again on another port if its mitmdump found its port taken
        (at most PORT_ATTEMPTS ports in all): whether it was started again."""
        if not _port_taken(w):
            return False
        _finish(w)
        w.ended, w.returncode = 0.0, None  # the next attempt's, once it ends
        w.taken.append(w.port)
        left = _session_of(folder / SESSIONS, w.serial, since)
        if left is not None and left not in w.left:
            w.left.append(left)
        if len(w.taken) >= PORT_ATTEMPTS:
            return False
        w.port = pick_ports(1)[0]
        w.result_path.unlink(missing_ok=True)
        say(Event(w.serial, "note", f"proxy port {w.taken[-1]} was taken by another process: "
                                    f"its audit starts again on port {w.port}",
                  {"taken": w.taken[-1], "port": w.port}))  # fmt: skip
        try:
            _start(w, _argv(w, opts, folder, confdir), say)
        except OSError as exc:
            w.proc = None  # what is said of it after: it did not start
            say(Event(w.serial, "error", f"its audit process did not start: {exc}"))
            return False
        return True

    interrupted = False
    with _sigterm_as_interrupt():
        try:
            for w in workers:
                try:
                    _start(w, _argv(w, opts, folder, confdir), say)
                except OSError as exc:  # this handset's audit only: the others go on
                    say(Event(w.serial, "error", f"its audit process did not start: {exc}"))
            _wait(workers, again)
        except KeyboardInterrupt:
            interrupted = True
            say(Event(None, "note", "interrupted: stopping every audit (each restores its device)"))
        finally:
            with _signals_ignored():  # a second Ctrl-C must not leave an audit running
                _stop(workers, STOP_GRACE)  # on any way out, no audit process is left behind
                for w in workers:
                    _finish(w)

    records = []
    for w in workers:
        notes: list[str] = []
        try:
            r = jsonio.load(w.result_path, "an audit's result", expect=dict)
        except (OSError, ValueError):
            r = _salvage(w, _session_of(folder / SESSIONS, w.serial, since), notes)
        if opts.analyze and not interrupted and r.get("session") and not r.get("report"):
            r = _analyse_late(r, folder, notes)
        if w.returncode is not None and w.returncode < 0 and "outcome_error" not in r:
            notes.append(f"the audit process ended by signal {-w.returncode} after its result")
        rec = _handset_record(w, r, folder)
        rec["notes"] += _port_notes(w, folder) + notes
        if len(w.taken) >= PORT_ATTEMPTS:
            rec["detail"] = (
                f"mitmdump could not listen: each of the {len(w.taken)} proxy ports tried "
                f"({', '.join(map(str, w.taken))}) was taken by another process"
            )
        records.append(rec)
        say(Event(w.serial, "finished", _finished_text(rec), rec))
    manifest["handsets"] = records
    manifest["ended_at"] = now_iso()
    manifest["status"] = "interrupted" if interrupted else "done"
    manifest["outcomes"] = _count(r["outcome"] for r in records)

    from auditor.campaign.report import write_reports

    mat, files = write_reports(folder, manifest)
    _write_manifest(folder, manifest)
    return CampaignResult(folder, manifest, mat, files, round(time.monotonic() - started, 1))


def _wait(workers: list[Worker], again: Callable[[Worker], bool] = lambda w: False) -> None:
    """Until every audit process has ended; ``again(w)`` may start an ended one anew."""
    pending = [w for w in workers if w.proc is not None]
    while pending:
        for w in list(pending):
            assert w.proc is not None
            if w.proc.poll() is not None and not again(w):
                w.ended = time.monotonic()
                pending.remove(w)
        time.sleep(0.2)


def _analyse_late(r: dict[str, Any], folder: Path, notes: list[str]) -> dict[str, Any]:
    """The session of an audit that ended before analysing it (or whose analysis failed)."""
    if r.get("analysis_error"):
        return r
    try:
        from auditor.analysis.engine import report_session

        r["report"] = str(report_session(Path(r["session"]), folder / REPORTS))
    except Exception as exc:  # noqa: BLE001 - one session's analysis never stops the campaign
        r["analysis_error"] = f"{type(exc).__name__}: {exc}"
        notes.append(f"analysis failed: {r['analysis_error']}")
    return r


def _finished_text(rec: dict[str, Any]) -> str:
    text = f"{rec['outcome']}"
    if rec.get("stopped_by") and rec["outcome"] != OUTCOME_COMPLETE:
        text += f" ({rec['stopped_by']})"
    if rec.get("flows") is not None:
        text += f", {rec['flows']} flows"
    if rec.get("restored") is not None:
        text += ", device " + ("restored" if rec["restored"] else "NOT restored")
    if rec.get("detail") and rec["outcome"] != OUTCOME_COMPLETE:
        text += f": {rec['detail']}"
    return text


def _count(values: Iterator[str] | Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


def _adb_port() -> int:
    from auditor.device.handset import adb_server_port

    return adb_server_port()


def read_manifest(folder: Path) -> dict[str, Any]:
    return jsonio.load(Path(folder) / MANIFEST, "a campaign manifest", expect=dict)


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


__all__ = ["CampaignOptions", "CampaignResult", "Event", "mx", "run_campaign"]
