"""mitmproxy addon: record flows into an auditor capture session.

    mitmdump -s addons/recorder.py --set auditor_session=captures/my-session

``auditor capture`` and ``auditor audit`` have mitmdump load this module's own file
(:data:`auditor.proxy.capture.RECORDER_SCRIPT`), which an installed auditor holds;
``addons/recorder.py`` is a thin file that loads this addon for plain mitmdump in a checkout.

When mitmdump exits cleanly (Ctrl-C, SIGTERM, ``q``), the recorder closes the session: its end
time and artifact hashes go into the manifest, so ``auditor verify`` and ``auditor bundle`` work
at once. ``auditor capture`` and ``auditor audit`` set ``auditor_close_on_done=false``: they
close their sessions themselves. A session left open (``kill -9``, a crash) is sealed
afterwards with ``auditor close`` (:func:`auditor.evidence.close.seal_late`).

Thin by design: each hook turns mitmproxy's objects into auditor records
(:mod:`auditor.proxy.mitmconv`) and hands them to the session writer
(:mod:`auditor.session.writer`).

When the session cannot be written (the disk is full, a file reached its size limit, an I/O
error), the recorder logs one error, records nothing more and shuts mitmproxy down; mitmdump
then exits with :data:`EXIT_DISK_FULL` or :data:`EXIT_WRITE_FAILED`, which the controlling
``auditor`` process reads as the reason the capture stopped.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from mitmproxy import connection, ctx, dns, exceptions, http, tls

from auditor.errors import SessionError
from auditor.proxy import mitmconv
from auditor.records import Record
from auditor.session.bodies import DEFAULT_BODY_CAP
from auditor.session.layout import STATUS_COMPLETE, STATUS_INCOMPLETE
from auditor.session.writer import SessionWriteError, SessionWriter, write_error

log = logging.getLogger(__name__)

EXIT_WRITE_FAILED = 74  # EX_IOERR: the session could not be written
EXIT_DISK_FULL = 75  # the session's disk is full, or a file reached its size limit
RECORDER_SAYS = "auditor recorder:"  # begins the recorder's log lines


class Recorder:
    def __init__(self) -> None:
        self.writer: SessionWriter | None = None
        self.failure: SessionWriteError | None = None

    @property
    def exit_status(self) -> int | None:
        if self.failure is None:
            return None
        return EXIT_DISK_FULL if self.failure.disk_full else EXIT_WRITE_FAILED

    def load(self, loader):  # type: ignore[no-untyped-def]
        loader.add_option(
            "auditor_session", str, "", "Capture session folder to record into (created if new)."
        )
        loader.add_option(
            "auditor_body_cap",
            int,
            DEFAULT_BODY_CAP,
            "Bodies larger than this many bytes are stored truncated, and flagged.",
        )
        loader.add_option(
            "auditor_close_on_done",
            bool,
            True,
            "Close the session (end time, artifact hashes) when mitmproxy shuts down; "
            "'incomplete' if the recorder stopped on a write failure. Set to false when a "
            "controlling 'auditor' process closes it (auditor capture and audit do).",
        )

    def configure(self, updated: set[str]) -> None:
        if ctx.options.auditor_body_cap <= 0:
            raise exceptions.OptionsError("auditor_body_cap must be a positive number of bytes")
        if "auditor_session" in updated or "auditor_body_cap" in updated:
            if self.writer:
                self.writer.detach()
                self.writer = None
            if not ctx.options.auditor_session:
                return
            try:
                self.writer = SessionWriter.attach(
                    Path(ctx.options.auditor_session), body_cap=ctx.options.auditor_body_cap
                )
                self.writer.event("recorder_started", "mitmproxy recorder attached")
            except (SessionError, OSError) as exc:
                raise exceptions.OptionsError(f"auditor_session: {exc}") from None

    def response(self, flow: http.HTTPFlow) -> None:
        self._record(lambda w: mitmconv.http_record(flow, w.bodies))

    def error(self, flow: http.HTTPFlow) -> None:
        # mitmproxy sends each flow either `response` or `error`, never both.
        self._record(lambda w: mitmconv.http_record(flow, w.bodies))

    def tls_established_server(self, data: tls.TlsData) -> None:
        server = data.conn
        if isinstance(server, connection.Server):
            self._record(lambda w: mitmconv.tls_server_record(server))

    def tls_failed_client(self, data: tls.TlsData) -> None:
        self._record(lambda w: mitmconv.tls_failed_record(data, "client"))

    def tls_failed_server(self, data: tls.TlsData) -> None:
        self._record(lambda w: mitmconv.tls_failed_record(data, "server"))

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        if flow.websocket:
            ws = flow.websocket
            n, msg = len(ws.messages), ws.messages[-1]
            self._record(lambda w: mitmconv.websocket_record(flow, msg, n, w.bodies))

    def dns_response(self, flow: dns.DNSFlow) -> None:
        self._record(lambda w: mitmconv.dns_record(flow))

    def done(self) -> None:
        if self.writer:
            with contextlib.suppress(SessionWriteError):
                self.writer.event("recorder_stopped", "mitmproxy shutting down")
            if ctx.options.auditor_close_on_done:
                try:
                    self.writer.close(**close_status(self.failure))
                except (SessionError, OSError) as exc:
                    log.error("%s cannot close the session: %s", RECORDER_SAYS, exc)
            else:
                self.writer.detach()
            self.writer = None
        if self.exit_status is not None and _in_mitmdump():
            # mitmdump exits 0 whatever its addons do; the controlling auditor process reads
            # why the capture stopped from this status
            atexit.register(_exit_with, self.exit_status)

    def _record(self, make: Callable[[SessionWriter], Record]) -> None:
        writer = self.writer
        if writer is None or self.failure is not None:
            return
        try:
            writer.write(make(writer))
        except SessionWriteError as exc:
            self._fail(writer, exc)
        except OSError as exc:  # a body could not be stored
            self._fail(writer, write_error(Path(exc.filename or writer.bodies.root), exc))

    def _fail(self, writer: SessionWriter, exc: SessionWriteError) -> None:
        self.failure = exc
        log.error("%s %s", RECORDER_SAYS, exc)
        log.error(
            "nothing more is recorded; mitmproxy shuts down (exit status %s)", self.exit_status
        )
        with contextlib.suppress(SessionWriteError):
            writer.event("recorder_failed", str(exc), disk_full=exc.disk_full)
        ctx.master.shutdown()


def close_status(failure: SessionWriteError | None) -> dict[str, str]:
    """How a session the recorder closes itself ends: complete, or incomplete and why."""
    if failure is None:
        return {"status": STATUS_COMPLETE, "stopped_by": "stopped"}
    return {
        "status": STATUS_INCOMPLETE,
        "stopped_by": "disk_full" if failure.disk_full else "write_failed",
        "stop_detail": str(failure),
    }


def _in_mitmdump() -> bool:
    """Running inside mitmdump (not mitmproxy's test harness, nor another host)."""
    from mitmproxy.tools.dump import DumpMaster  # loaded already there; costly elsewhere

    return isinstance(ctx.master, DumpMaster)


def _exit_with(status: int) -> None:
    """At mitmdump's exit, once everything has shut down: exit with ``status``."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


addons = [Recorder()]
