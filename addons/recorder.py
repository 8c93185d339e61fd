"""mitmproxy addon: record flows into an auditor capture session.

    mitmdump -s addons/recorder.py --set auditor_session=captures/my-session

Thin by design: each hook turns mitmproxy's objects into auditor records
(:mod:`auditor.mitmconv`) and hands them to the session writer (:mod:`auditor.session`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from mitmproxy import ctx, dns, exceptions, http, tls

from auditor import mitmconv
from auditor.bodies import DEFAULT_BODY_CAP
from auditor.errors import SessionError
from auditor.session import SessionWriter

log = logging.getLogger(__name__)


class Recorder:
    def __init__(self) -> None:
        self.writer: SessionWriter | None = None

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
            False,
            "Close the session (end time, artifact hashes) when mitmproxy shuts down. "
            "Leave off when a controlling 'auditor' process closes it.",
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
            except SessionError as exc:
                raise exceptions.OptionsError(f"auditor_session: {exc}") from None
            self.writer.event("recorder_started", "mitmproxy recorder attached")

    def response(self, flow: http.HTTPFlow) -> None:
        if self.writer:
            self.writer.write(mitmconv.http_record(flow, self.writer.bodies))

    def error(self, flow: http.HTTPFlow) -> None:
        # mitmproxy sends each flow either `response` or `error`, never both.
        if self.writer:
            self.writer.write(mitmconv.http_record(flow, self.writer.bodies))

    def tls_failed_client(self, data: tls.TlsData) -> None:
        if self.writer:
            self.writer.write(mitmconv.tls_failed_record(data, "client"))

    def tls_failed_server(self, data: tls.TlsData) -> None:
        if self.writer:
            self.writer.write(mitmconv.tls_failed_record(data, "server"))

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        if self.writer and flow.websocket:
            n = len(flow.websocket.messages)
            msg = flow.websocket.messages[-1]
            self.writer.write(mitmconv.websocket_record(flow, msg, n, self.writer.bodies))

    def dns_response(self, flow: dns.DNSFlow) -> None:
        if self.writer:
            self.writer.write(mitmconv.dns_record(flow))

    def done(self) -> None:
        if not self.writer:
            return
        self.writer.event("recorder_stopped", "mitmproxy shutting down")
        if ctx.options.auditor_close_on_done:
            self.writer.close()
        else:
            self.writer.detach()
        self.writer = None


addons = [Recorder()]
