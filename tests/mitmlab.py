"""Real mitmdump processes for tests: waiting until one listens, and auditor's own mitmdump
in upstream mode in front of a given proxy or offline internet, recording into a new
session."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from auditor.proxy.capture import Mitmdump, ProxyOptions
from auditor.session import SessionWriter
from tests.conftest import free_port


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Return once something accepts connections on loopback ``port``; fail the test if
    ``proc`` exits first, or kill it and fail when ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"mitmdump exited with {proc.returncode}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("mitmdump did not listen")


@contextlib.contextmanager
def upstream_mitmdump(
    tmp: Path, upstream: str, upstream_ca: Path | None = None
) -> Iterator[tuple[ProxyOptions, Path]]:
    """auditor's mitmdump (recorder and all) on a free loopback port in upstream mode to the
    proxy at ``upstream`` (a URL), trusting ``upstream_ca`` for the certificates it presents,
    as ``auditor audit --upstream URL --upstream-ca FILE`` runs it; confdir in
    ``tmp/confdir``, its session under ``tmp/captures``: (its options, the session). Stopped
    on the way out."""
    writer = SessionWriter.create(tmp / "captures")
    writer.detach()
    extra = {} if upstream_ca is None else {"ssl_verify_upstream_trusted_ca": str(upstream_ca)}
    opts = ProxyOptions(
        port=free_port(), confdir=tmp / "confdir", mode=f"upstream:{upstream}", extra=extra
    )
    proc = Mitmdump(writer.path, opts)
    proc.start()
    try:
        yield opts, writer.path
    finally:
        proc.stop()
