"""VirtualWorld: the virtual handset, its ADB daemon, offline internet, DNS and background
traffic started and stopped together, on loopback, without an adb server."""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit

import pytest

from auditor.device.parsers import subject_hash_old
from vhandset import network
from vhandset.offline.internet import Mode
from vhandset.traffic import load_plan
from vhandset.world import APEX_CA_DIR, SYSTEM_CA_DIR, VirtualWorld


def tcp_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def udp_bound(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
        return False


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_start_and_stop_leave_nothing_running(monkeypatch: pytest.MonkeyPatch) -> None:
    # Closed connections linger in /proc/net for KEEPALIVE on a timer of their own; shorten it so
    # that the test need not wait for the pool's idle sockets to expire.
    monkeypatch.setattr(network, "KEEPALIVE", 0.5)
    before = set(threading.enumerate())
    world = VirtualWorld("xiaomi-mi10t", port=0, speed=4.0).start()
    info = world.info()
    host, adb_port = info.adb_address.rsplit(":", 1)
    dns_port = world.dns.port
    ports = [int(adb_port), world.internet.port, dns_port]
    try:
        assert all(tcp_open(host, p) for p in ports)
        assert udp_bound(host, dns_port)
        assert world.traffic is not None
        # The background traffic reaches the offline internet straight away (no proxy is set).
        reqs = world.internet.wait_for(lambda rs: len(rs) >= 2, 6.0)
        assert len(reqs) >= 2 and all(r.mode == Mode.DIRECT for r in reqs)
    finally:
        world.stop()
    assert not any(tcp_open(host, p) for p in ports)
    assert not udp_bound(host, dns_port)
    assert wait_until(lambda: set(threading.enumerate()) <= before, 8.0), [
        t.name for t in set(threading.enumerate()) - before
    ]


def test_without_traffic_the_handset_is_silent() -> None:
    with VirtualWorld("xiaomi-mi10t", port=0, traffic=False) as world:
        assert world.traffic is None
        time.sleep(0.5)
        assert world.internet.requests() == []
        assert world.dns.queries() == []


@pytest.mark.parametrize("profile", ["xiaomi-mi10t", "pixel-android14"])
def test_the_handset_trusts_its_offline_internet_and_says_where_it_is(profile: str) -> None:
    """Its info gives the offline internet an audit forwards to (``--upstream``); the only
    property it adds is the ``ro.auditor.virtual`` label, and no hook for auditor."""
    with VirtualWorld(profile, port=0, traffic=False) as world:
        dev = world.device
        info = world.info()
        assert dev.run("getprop ro.auditor.virtual").out.strip() == "1"
        assert "ro.auditor.upstream" not in dev.run("getprop").out
        upstream = info.upstream
        assert upstream == world.internet.url
        assert urlsplit(upstream).hostname == "127.0.0.1"
        assert urlsplit(upstream).port == world.internet.port

        pem = world.internet.ca.cert_pem
        ca_path = f"{SYSTEM_CA_DIR}/{subject_hash_old(pem)}.0"
        listed = dev.run(f"ls -l {ca_path}")
        assert listed.exit_code == 0 and listed.out.startswith("-rw-r--r--"), listed
        assert dev.run(f"cat {ca_path}").stdout == pem
        # Apps trust the store of their Android version: the conscrypt APEX from Android 14.
        trusted = dev.trusted_ca_files()
        if dev.profile.sdk >= 34:
            assert f"{APEX_CA_DIR}/{subject_hash_old(pem)}.0" in trusted
        else:
            assert ca_path in trusted
        assert info.ca == str(world.internet.ca_cert_path)
        assert info.adb_address == f"127.0.0.1:{world.adbd.port}"
        assert info.profile == profile and info.dns == f"127.0.0.1:{world.dns.port}"


def test_view_url_makes_the_browser_fetch_it() -> None:
    with VirtualWorld("xiaomi-mi10t", port=0, traffic=False) as world:
        dev = world.device
        res = dev.run("am start -a android.intent.action.VIEW -d http://auditor-canary.invalid/x")
        assert res.exit_code == 0 and "Starting: Intent" in res.out, res
        reqs = world.internet.wait_for(
            lambda rs: any(r.host == "auditor-canary.invalid" for r in rs), 5.0
        )
        (req,) = [r for r in reqs if r.host == "auditor-canary.invalid"]
        assert (req.method, req.path, req.tls, req.mode) == ("GET", "/x", False, Mode.DIRECT)
        browser = dev.package_uid(dev.profile.browser)

        def loaded() -> bool:
            return any(
                e.tag == "chromium"
                and e.uid == browser
                and "loaded http://auditor-canary" in e.message
                for _, e in dev.log_entries()
            )

        assert wait_until(loaded, 3.0)
        # A non-web URL opens nothing on the network.
        dev.run("am start -a android.intent.action.VIEW -d tel:123")
        time.sleep(0.3)
        assert len(world.internet.requests()) == 1


def test_screen_on_and_proxy_change_start_a_burst(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(network, "KEEPALIVE", 0.5)
    with VirtualWorld("xiaomi-mi10t", port=0, speed=4.0) as world:
        dev = world.device
        assert world.traffic is not None
        boot_jobs = [j.name for j in load_plan("xiaomi-mi10t").jobs if j.at_boot]

        def bursts() -> list[str]:
            return [
                e.message for _, e in dev.log_entries() if e.message.startswith("network burst")
            ]

        dev.run("input keyevent KEYCODE_POWER")  # screen off
        assert not dev.screen_on
        runs = {n: world.traffic.stats[n].runs for n in boot_jobs}
        dev.run("input keyevent KEYCODE_POWER")  # and on again
        assert wait_until(lambda: "network burst: screen_on" in bursts(), 2.0)
        # Every at_boot job runs again within (3 s / speed) of the burst.
        assert wait_until(
            lambda: all(world.traffic.stats[n].runs > runs[n] for n in boot_jobs), 3.0
        ), {n: world.traffic.stats[n] for n in boot_jobs}
        dev.put_setting("global", "http_proxy", "192.0.2.1:8080")
        assert wait_until(lambda: "network burst: proxy_changed" in bursts(), 2.0)
