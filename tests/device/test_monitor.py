"""auditor.device.monitor: the logcat stream and the socket poller, on a virtual handset through
a real adb server."""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from auditor.device.handset import Handset
from auditor.device.monitor import LOGCAT, SOCKETS, LogcatStream, SocketPoller
from auditor.device.parsers import parse_logcat_epoch_uid
from auditor.timeutil import parse_iso
from tests.e2e.conftest import WorldFactory, adb_server, make_world

__all__ = ["adb_server", "make_world"]  # fixtures, used by name

pytestmark = pytest.mark.e2e

PROMPT = 5.0  # seconds a monitor may take to stop


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def text_of(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def endpoint(spec: str) -> tuple[str, int]:
    """``[::ffff:1.2.3.4]:80`` or ``1.2.3.4:80`` -> ("1.2.3.4", 80), as the poller unmaps it."""
    host, _, port = spec.rpartition(":")
    ip = ipaddress.ip_address(host.strip("[]"))
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return str(ip), int(port)


def test_logcat_lines_land_in_the_session_and_parse(
    make_world: WorldFactory, tmp_path: Path
) -> None:
    world, serial = make_world("xiaomi-mi10t", traffic=False)
    dev = world.device
    uid = dev.package_uid("com.android.browser")
    assert uid is not None and uid >= 10000
    path = tmp_path / LOGCAT
    stream = LogcatStream(Handset(serial), tmp_path).start()
    try:
        t0 = time.time()
        for i in range(5):
            dev.log("AuditorProbe", f"probe line {i}", uid=uid, priority="W")
        assert wait_for(lambda: "probe line 4" in text_of(path)), text_of(path)[-2000:]
        t1 = time.time()
    finally:
        started = time.monotonic()
        stream.stop()
        stopped_in = time.monotonic() - started
    assert stopped_in < PROMPT
    assert stream.error is None

    text = path.read_text()
    assert stream.bytes == len(text.encode()) and stream.lines == text.count("\n")
    parsed = []
    for line in text.splitlines():
        if line.startswith("--------- beginning of "):
            continue
        rec = parse_logcat_epoch_uid(line)
        assert rec is not None, line
        parsed.append(rec)
    probes = [r for r in parsed if r.tag == "AuditorProbe"]
    assert [r.message for r in probes] == [f"probe line {i}" for i in range(5)]
    assert {r.uid for r in probes} == {uid}
    assert {r.level.value for r in probes} == {"W"}
    assert all(t0 - 1 <= r.timestamp <= t1 + 1 for r in probes)
    assert any(r.tag == "init" for r in parsed)  # the boot log, from the kernel buffer on

    dev.log("AuditorProbe", "after stop", uid=uid)
    time.sleep(0.3)
    assert "after stop" not in path.read_text()


def test_logcat_reopens_after_the_handset_reboots(make_world: WorldFactory, tmp_path: Path) -> None:
    world, serial = make_world("huawei-p40", traffic=False)
    dev = world.device
    h = Handset(serial)
    path = tmp_path / LOGCAT
    stream = LogcatStream(h, tmp_path).start()
    try:
        dev.log("AuditorProbe", "before reboot")
        assert wait_for(lambda: "before reboot" in text_of(path))
        h.reboot(timeout=30)
        dev.log("AuditorProbe", "after reboot")
        assert wait_for(lambda: "after reboot" in text_of(path)), text_of(path)[-2000:]
    finally:
        started = time.monotonic()
        stream.stop()
        assert time.monotonic() - started < PROMPT


@pytest.mark.parametrize("name", ["huawei-p40", "oneplus-8t", "pixel-android14", "xiaomi-mi10t"])
def test_socket_snapshots_list_the_profiles_sockets_by_app_uid(
    make_world: WorldFactory, tmp_path: Path, name: str
) -> None:
    world, serial = make_world(name)  # with background traffic: more sockets come and go
    spec = world.device.profile
    uids = {p.uid for p in spec.packages}
    path = tmp_path / SOCKETS
    poller = SocketPoller(Handset(serial), tmp_path, interval=0.2).start()
    try:
        assert wait_for(lambda: text_of(path).count("\n") >= 3)
    finally:
        started = time.monotonic()
        poller.stop()
        assert time.monotonic() - started < PROMPT

    lines = path.read_text().splitlines()
    assert poller.snapshots == len(lines) and poller.errors == 0
    snaps = [json.loads(line) for line in lines]
    for snap in snaps:
        parse_iso(snap["ts"])
        assert snap["entries"], snap
        assert {e[6] for e in snap["entries"]} <= uids
    first = {(e[0], e[1], e[2], e[3], e[4], e[6]) for e in snaps[0]["entries"]}
    for sock in spec.sockets:
        owner = spec.package(sock.package)
        assert owner is not None
        key = (sock.proto, *endpoint(sock.local), *endpoint(sock.remote), owner.uid)
        assert key in first, (key, first)


def test_monitors_stop_cleanly_when_the_disk_is_full(
    make_world: WorldFactory, tmp_path: Path
) -> None:
    """A file size limit (as a full disk) on logcat.txt and sockets.jsonl: each monitor stops,
    says why in ``disk_full`` (the audit stops as ``disk_full`` on it), and leaves a file
    that ends where its last whole write ended: no half snapshot line, no bytes uncounted."""
    import resource

    world, serial = make_world("xiaomi-mi10t", traffic=False)
    dev, h = world.device, Handset(serial)
    log_path, sock_path = tmp_path / LOGCAT, tmp_path / SOCKETS
    stream = LogcatStream(h, tmp_path).start()
    poller = SocketPoller(h, tmp_path, interval=0.1).start()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    try:
        dev.log("AuditorProbe", "before the disk fills")
        assert wait_for(lambda: "before the disk fills" in text_of(log_path))
        assert wait_for(lambda: text_of(sock_path).count("\n") >= 2)
        limit = max(log_path.stat().st_size, sock_path.stat().st_size) + 40
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        try:
            dev.log("AuditorProbe", "x" * 400)  # a logcat chunk that does not fit
            assert wait_for(lambda: bool(stream.disk_full and poller.disk_full), 10), (
                stream.error,
                poller.disk_full,
            )
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        dev.log("AuditorProbe", "after the limit is lifted")
        time.sleep(0.3)
    finally:
        stream.stop()
        poller.stop()
    assert "File too large" in stream.disk_full and LOGCAT in stream.disk_full
    assert "File too large" in poller.disk_full and SOCKETS in poller.disk_full
    text = log_path.read_bytes()
    assert stream.bytes == len(text) and b"after the limit is lifted" not in text
    lines = sock_path.read_text().splitlines()
    assert sock_path.read_text().endswith("\n") and len(lines) == poller.snapshots
    assert all(json.loads(line)["entries"] for line in lines)
    # the audit's watcher turns it into the session's stop reason
    from auditor.audit import AuditOptions, _Audit
    from auditor.device.scenario import load_scenario

    audit = _Audit(
        None,  # type: ignore[arg-type]  # the watcher's check needs no phone
        load_scenario("idle", {"duration": 1}),
        AuditOptions(serial=serial, scenario="idle", out=tmp_path),
        lambda p: None,
    )
    audit.sockets = poller
    audit._monitors_full()
    assert audit.proxy_exit is not None and audit.proxy_exit.stopped_by == "disk_full"
    assert poller.disk_full in audit.proxy_exit.message and audit.stop.is_set()
    assert audit.proxy_exit.data() == {"source": "sockets", "disk_full": True}
