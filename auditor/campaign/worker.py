"""One handset's audit inside a campaign, as a process of its own.

``auditor campaign`` starts one of these per handset (``python -m auditor.campaign.worker``),
so that each audit has its own main thread for the signal handling that guards its restore
(``auditor.device.setup.SignalGuard``), its own mitmdump, and nothing in common with the
others but the adb server: a crash or a lost device ends this process's audit alone.

It runs :func:`auditor.audit.run_audit` (the lock, the proxy, the reverse tunnel, the packet
capture and the restore journal are the audit's own), prints its progress as JSON lines on
standard output, writes ``result.json`` (atomically) once the session is closed, and then
analyses the session as ``auditor audit`` does at its end.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from auditor.errors import AuditorError

log = logging.getLogger(__name__)

RESULT = "result.json"


def _say(kind: str, **data: Any) -> None:
    """One progress line for the campaign, on standard output."""
    try:
        sys.stdout.write(json.dumps({"kind": kind, **data}, ensure_ascii=True) + "\n")
        sys.stdout.flush()
    except (OSError, ValueError):
        pass  # the campaign went away: the audit goes on and writes its result


def write_result(path: Path, result: dict[str, Any]) -> None:
    from auditor.session.writer import write_json_atomic

    write_json_atomic(path, result)


class _Progress:
    """Audit progress as a line per phase or scenario step, and counts every few seconds."""

    def __init__(self) -> None:
        self.last: tuple[str, int] = ("", -1)
        self.next_counts = 0.0

    def __call__(self, p: Any) -> None:
        key = (p.phase, p.step_index)
        now = time.monotonic()
        if key == self.last and now < self.next_counts:
            return
        self.last, self.next_counts = key, now + 5.0
        _say(
            "progress",
            phase=p.phase,
            step=p.step,
            step_index=p.step_index,
            steps=p.steps,
            elapsed=round(p.elapsed, 1),
            flows=p.counts.flows,
            hosts=len(p.counts.hosts),
            packets=p.packets,
        )


#: ``error_kind`` in result.json of an audit whose mitmdump found its proxy port taken by
#: another program (the campaign starts it again on another port)
PORT_TAKEN = "proxy-port-taken"


def error_kind(exc: BaseException) -> str | None:
    """What kind of error ended an audit before it began, for the campaign to act on
    (None: one it has nothing to do about). The error or what caused it is looked at."""
    from auditor.proxy.capture import ProxyPortInUse

    seen: BaseException | None = exc
    for _ in range(8):  # (a chain of causes, bounded)
        if seen is None:
            break
        if isinstance(seen, ProxyPortInUse):
            return PORT_TAKEN
        seen = seen.__cause__ or seen.__context__
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m auditor.campaign.worker")
    ap.add_argument("--serial", required=True)
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--duration", default=None)
    ap.add_argument("--out", type=Path, required=True, help="the campaign's sessions folder")
    ap.add_argument("--reports", type=Path, required=True)
    ap.add_argument("--result", type=Path, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--confdir", type=Path, required=True)
    ap.add_argument("--packets", default="auto")
    ap.add_argument("--ca", default="auto")
    ap.add_argument("--allow-shell", action="store_true")
    ap.add_argument("--upstream", default=None)
    ap.add_argument("--upstream-ca", type=Path, default=None)
    ap.add_argument("--restore-wait", type=float, default=30.0)
    ap.add_argument("--canary-timeout", type=float, default=15.0)
    ap.add_argument("--notes", default="")
    ap.add_argument("--no-analyze", action="store_true")
    args = ap.parse_args(argv)
    faulthandler.enable()  # a crash leaves its stack in the handset's audit.log
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from auditor.audit import AuditOptions, run_audit

    opts = AuditOptions(
        serial=args.serial,
        scenario=args.scenario,
        duration=args.duration,
        ca=args.ca,
        out=args.out,
        port=args.port,
        confdir=args.confdir,
        packets=args.packets,
        allow_shell=args.allow_shell,
        upstream=args.upstream,
        upstream_ca=args.upstream_ca,
        restore_wait=args.restore_wait,
        canary_timeout=args.canary_timeout,
        notes=args.notes,
    )
    result: dict[str, Any] = {"serial": args.serial, "port": args.port}
    try:
        res = run_audit(opts, _Progress())
    except KeyboardInterrupt:
        # interrupted before a session existed: nothing was changed on the device
        result.update(outcome_error="interrupted before the audit began", session=None)
        write_result(args.result, result)
        return 130
    except AuditorError as exc:
        result.update(outcome_error=str(exc), error_kind=error_kind(exc), session=None)
        write_result(args.result, result)
        _say("error", message=str(exc))
        return 1
    result.update(
        session=str(res.session),
        status=res.status,
        stopped_by=res.stopped_by,
        restored=res.restored,
        canary_seen=res.canary_seen,
        detail=res.detail,
        notes=res.notes,
        summary=res.manifest.get("summary", {}),
        report=None,
    )
    write_result(args.result, result)
    _say("closed", session=str(res.session), status=res.status, stopped_by=res.stopped_by)
    if not args.no_analyze:
        _say("progress", phase="analysing")
        try:
            from auditor.analysis.engine import report_session

            report = report_session(res.session, args.reports)
            result["report"] = str(report)
        except Exception as exc:
            log.exception("analysing %s", res.session)
            result["analysis_error"] = f"{type(exc).__name__}: {exc}"
        write_result(args.result, result)
    return 130 if res.stopped_by == "signal" else 0


def _exit(code: int) -> None:  # pragma: no cover - ends the process
    """Leave at once once the result is on disk: tearing the interpreter down would only free,
    one by one, what the audit and the analysis built, while the campaign waits (as the name
    worker of auditor.packets.flows does)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover - run by the campaign as a process
    _exit(main())
