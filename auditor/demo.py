"""``auditor demo``: the whole audit loop on this machine alone.

It starts the virtual handset (default: the Xiaomi Mi 10T) with its offline internet, an adb
server of its own on a free port, connects the two, runs ``auditor audit`` on it for about a
minute (``--upstream`` set to the offline internet, ``--upstream-ca`` to its CA), stops
everything it started, and says where to look. It imports ``vhandset`` only when it runs.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from auditor.audit import AuditOptions, Progress, run_audit
from auditor.errors import AuditorError, DeviceError
from auditor.evidence.verify import verify_session
from auditor.netutil import free_port


@contextlib.contextmanager
def private_adb_server() -> Iterator[int]:
    """An adb server on a free port for the duration, killed afterwards; the user's own adb
    server (5037), if any, is not touched."""
    from adbutils import AdbClient

    old = os.environ.get("ANDROID_ADB_SERVER_PORT")
    port = free_port()
    os.environ["ANDROID_ADB_SERVER_PORT"] = str(port)
    client = AdbClient(host="127.0.0.1", port=port)
    try:
        client.server_version()  # adbutils starts the server when none answers
        yield port
    finally:
        with contextlib.suppress(Exception):
            client.server_kill()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _listening(port):
            time.sleep(0.1)
        if old is None:
            os.environ.pop("ANDROID_ADB_SERVER_PORT", None)
        else:
            os.environ["ANDROID_ADB_SERVER_PORT"] = old


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def run_demo(
    out: Path,
    *,
    reports: Path = Path("reports"),
    profile: str = "xiaomi-mi10t",
    duration: str = "60s",
    echo: Callable[[str], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> dict[str, Any]:
    from auditor.device.handset import client
    from vhandset.errors import VhandsetError
    from vhandset.world import VirtualWorld

    say = echo or (lambda _m: None)
    started = time.monotonic()
    try:
        world = VirtualWorld(profile, port=0)
    except VhandsetError as exc:
        raise AuditorError(str(exc)) from exc
    with private_adb_server() as adb_port, world:
        info = world.info()
        say(f"demo: virtual {info.profile} on {info.adb_address}, adb server on port {adb_port}")
        client().connect(info.adb_address, timeout=10)
        deadline = time.monotonic() + 15
        while not any(
            d.serial == info.adb_address and d.state == "device" for d in client().list()
        ):
            if time.monotonic() > deadline:
                raise DeviceError(f"the adb server did not bring {info.adb_address} online")
            time.sleep(0.2)
        with tempfile.TemporaryDirectory(prefix="auditor-demo-") as tmp:
            opts = AuditOptions(
                serial=info.adb_address,
                scenario="idle",
                duration=duration,
                out=out,
                port=free_port(),
                confdir=Path(tmp) / "mitmproxy",
                notes=f"auditor demo on the virtual {info.profile}",
                # the virtual world's offline internet stands in for a lab's upstream proxy
                upstream=world.internet.url,
                upstream_ca=world.internet.ca_cert_path,
            )
            res = run_audit(opts, on_progress)
    ver = verify_session(res.session)
    summary = res.manifest.get("summary", {})
    from auditor.analysis.engine import report_session

    report = report_session(res.session, reports)
    say(
        f"demo: {summary.get('flows', 0)} flows to {summary.get('hosts', 0)} hosts, "
        f"{summary.get('tls_failed', 0)} TLS failures; device restored: {res.restored}; "
        f"verify {'OK' if ver.ok else 'FAILED'}; {time.monotonic() - started:.0f}s"
    )
    say(f"demo: report {report / 'report.html'} (findings.json, summary.md beside it)")
    return {
        "session": str(res.session),
        "report": str(report / "report.html"),
        "status": res.status,
        "restored": res.restored,
        "canary_seen": res.canary_seen,
        "verified": ver.ok,
        "summary": summary,
        "seconds": round(time.monotonic() - started, 1),
    }
