"""Background traffic: the shipped plans, their validation, and jobs run against a real
offline internet on loopback."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from vhandset.device import VirtualDevice
from vhandset.network import DeviceNetwork
from vhandset.offline.dns import OfflineDns, resolve
from vhandset.offline.internet import OfflineInternet
from vhandset.offline.pki import CertificateAuthority
from vhandset.payloads import build_body, facts_from_profile, render
from vhandset.profiles import list_profiles, load_profile
from vhandset.traffic import (
    TrafficError,
    TrafficGenerator,
    TrafficPlan,
    load_plan,
    parse_plan,
)
from vhandset.world import install_public_ca

TRAFFIC_DIR = resources.files("vhandset") / "traffic"
SHIPPED = sorted(
    p.name.removesuffix(".yaml") for p in TRAFFIC_DIR.iterdir() if p.name.endswith(".yaml")
)

SOURCES = "sources: {s: 'A. Author, A study, 2021'}\n"


def test_every_profile_has_a_plan_and_every_plan_a_profile() -> None:
    assert SHIPPED == list_profiles()
    assert len(SHIPPED) == 4


@pytest.mark.parametrize("profile_id", SHIPPED)
def test_shipped_plan_is_consistent_with_its_profile(profile_id: str) -> None:
    plan = load_plan(profile_id)
    profile = load_profile(profile_id)
    packages = {p.name for p in profile.packages}
    assert plan.profile == profile_id
    assert plan.jobs and len({j.name for j in plan.jobs}) == len(plan.jobs)
    assert all(text.strip() for text in plan.sources.values())
    for job in plan.jobs:
        assert job.app in packages, f"{job.name}: {job.app} is not installed on {profile_id}"
        assert job.source in plan.sources, job.name
        assert job.period > 0
        if job.transport == "http":
            assert job.request is not None
        elif job.transport == "dns":
            assert job.names
        else:
            assert job.host and job.port
    # Each plan shows what a vendor's handset does: at least one upload at boot, one pinned
    # app, one app that trusts the user store, one cleartext request and one DNS job.
    assert any(j.at_boot and j.transport == "http" for j in plan.jobs)
    assert {"pinned", "user", "none", "system"} <= {j.trust for j in plan.jobs}
    assert any(j.transport == "dns" for j in plan.jobs)


@pytest.mark.parametrize("profile_id", SHIPPED)
def test_every_request_renders_from_its_profile(profile_id: str) -> None:
    plan = load_plan(profile_id)
    facts = facts_from_profile(load_profile(profile_id))
    for job in plan.jobs:
        if job.request is None:
            continue
        url = render(job.request.url, facts)
        assert isinstance(url, str) and "{{" not in url
        parts = urlsplit(url)
        assert parts.scheme == ("http" if job.trust == "none" else "https"), job.name
        assert resolve(parts.hostname or ""), f"{job.name}: {parts.hostname} does not resolve"
        if job.request.body is not None:
            body, headers = build_body(
                job.request.body, job.request.kind, job.request.encoding, facts
            )
            assert body and headers["Content-Type"]


def test_unknown_profile_has_an_empty_plan() -> None:
    assert load_plan("no-such-phone") == TrafficPlan("no-such-phone", (), {})


GOOD = "  - {app: a, source: s, request: {url: 'https://x.example/'}}\n"


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ("  - just a string\n", "not a mapping"),
        ("  - {app: a, source: s, transport: carrier-pigeon}\n", "bad transport"),
        ("  - {app: a, source: s, trust: everything, request: {url: 'https://x/'}}\n", "trust"),
        ("  - {app: a, source: nowhere, request: {url: 'https://x/'}}\n", "'nowhere'"),
        ("  - {app: a, request: {url: 'https://x/'}}\n", "source ''"),
        ("  - {app: a, source: s}\n", "needs request.url"),
        ("  - {app: a, source: s, request: {method: GET}}\n", "needs request.url"),
        ("  - {app: a, source: s, trust: none, request: {url: 'https://x/'}}\n", "trust store"),
    ],
)
def test_malformed_job_is_refused_with_its_number(job: str, message: str) -> None:
    text = f"profile: p\n{SOURCES}jobs:\n{GOOD}{GOOD}{job}"
    with pytest.raises(TrafficError, match="job 3") as exc:
        parse_plan(text, "traffic/p.yaml")
    assert message in str(exc.value)
    assert str(exc.value).startswith("traffic/p.yaml: job 3:")


@pytest.mark.parametrize("text", ["", "jobs: 3\n", "- a\n- b\n", "profile: p\n"])
def test_a_plan_without_a_job_list_is_refused(text: str) -> None:
    with pytest.raises(TrafficError, match="needs a list of jobs"):
        parse_plan(text, "traffic/p.yaml")


# ------------------------------------------------------------------------------ running jobs


@pytest.fixture(scope="module")
def internet() -> Iterator[OfflineInternet]:
    with OfflineInternet() as net:
        yield net


@pytest.fixture(scope="module")
def dns() -> Iterator[OfflineDns]:
    with OfflineDns() as server:
        yield server


@pytest.fixture
def device() -> VirtualDevice:
    return VirtualDevice("xiaomi-mi10t")


def network(
    device: VirtualDevice, internet: OfflineInternet, dns: OfflineDns, pinned: Path | None = None
) -> DeviceNetwork:
    return DeviceNetwork(
        device,
        (internet.host, internet.port),
        dns=dns.address,
        resolve=resolve,
        pinned_ca=pinned or internet.ca_cert_path,
    )


def warnings(device: VirtualDevice) -> list[str]:
    return [f"{e.tag}: {e.message}" for _, e in device.log_entries() if e.priority == "W"]


def test_run_job_outcomes_and_stats(
    device: VirtualDevice, internet: OfflineInternet, dns: OfflineDns, tmp_path: Path
) -> None:
    other_ca = CertificateAuthority(tmp_path / "other-ca")
    gen = TrafficGenerator(device, network(device, internet, dns, other_ca.cert_path))
    jobs = {j.name: j for j in gen.plan.jobs}

    # No store holds the offline internet's CA yet: the system app refuses the server.
    assert gen.run_job(jobs["analytics-track"]) == "tls_rejected"
    assert any(
        "NetworkSecurityConfig: analytics-track: Trust anchor" in w for w in warnings(device)
    )

    install_public_ca(device, internet.ca.cert_pem)
    seen = len(internet.requests())
    assert gen.run_job(jobs["analytics-track"]) == "ok"
    assert gen.run_job(jobs["miadblacklistconfig"]) == "ok"
    assert gen.run_job(jobs["weather-cleartext"]) == "ok"
    new = internet.requests()[seen:]
    assert [(x.host, x.method, x.tls) for x in new] == [
        ("tracking.miui.com", "POST", True),
        ("globalapi.ad.xiaomi.com", "GET", True),
        ("weatherapi.market.xiaomi.com", "GET", False),
    ]
    imei_md5 = "5f3de29068d13287ae879c51c0592678"  # md5 of the profile's IMEI
    assert new[0].path == f"/track/v4?imei_md5={imei_md5}&aid=5093efbfa90f7649"
    assert new[0].request_size > 0

    # The pinning app was built with another CA than the one the server's chain ends in.
    assert gen.run_job(jobs["pinned-app"]) == "tls_rejected"
    assert any(w.startswith("vending: pinned-app: Trust anchor") for w in warnings(device))

    # DNS and push channels bypass any proxy.
    assert gen.run_job(jobs["dns"]) == "ok"
    assert gen.run_job(jobs["push-channel"]) == "ok"

    # A proxy the simulated phone cannot reach: the request fails, and the app says so.
    device.put_setting("global", "http_proxy", "192.0.2.1:8080")
    assert gen.run_job(jobs["installed-app-list"]) == "failed"
    assert any("installed-app-list: request failed" in w for w in warnings(device))

    st = gen.stats
    assert (st["analytics-track"].runs, st["analytics-track"].ok) == (2, 1)
    assert st["analytics-track"].tls_rejected == 1
    assert (st["pinned-app"].runs, st["pinned-app"].tls_rejected) == (1, 1)
    assert (st["installed-app-list"].runs, st["installed-app-list"].failed) == (1, 1)
    assert st["discover-protobuf"].runs == 0
    t = gen.totals()
    assert (t.runs, t.ok, t.tls_rejected, t.failed) == (8, 5, 2, 1)
    assert t.runs == t.ok + t.tls_rejected + t.failed


def test_a_job_whose_app_is_missing_fails(
    device: VirtualDevice, internet: OfflineInternet, dns: OfflineDns
) -> None:
    job = "{app: com.not.installed, source: s, request: {url: 'https://x.example/'}}"
    text = f"profile: xiaomi-mi10t\n{SOURCES}jobs:\n  - {job}\n"
    plan = parse_plan(text, "t.yaml")
    gen = TrafficGenerator(device, network(device, internet, dns), plan)
    assert gen.run_job(plan.jobs[0]) == "failed"


BURST_PLAN = f"""\
profile: xiaomi-mi10t
{SOURCES}jobs:
  - name: boot
    app: com.miui.msa.global
    at_boot: true
    period: 1h
    jitter: 0
    source: s
    request: {{url: 'https://globalapi.ad.xiaomi.com/api/v4/config'}}
  - name: later
    app: com.miui.analytics
    period: 100h
    source: s
    request: {{url: 'https://tracking.miui.com/track/v4'}}
"""


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_burst_runs_the_at_boot_jobs_within_seconds(
    device: VirtualDevice, internet: OfflineInternet, dns: OfflineDns
) -> None:
    install_public_ca(device, internet.ca.cert_pem)
    plan = parse_plan(BURST_PLAN, "burst.yaml")
    gen = TrafficGenerator(device, network(device, internet, dns), plan, seed=7).start()
    try:
        # Starting counts as a boot.
        assert wait_until(lambda: gen.stats["boot"].ok == 1, 4.0), gen.stats
        started = time.monotonic()
        gen.burst("screen_on")
        # ok counts a finished run (runs counts it as it starts)
        assert wait_until(lambda: gen.stats["boot"].ok == 2, 4.0), gen.stats
        assert time.monotonic() - started <= 3.5
        assert gen.stats["boot"].runs == 2
        assert gen.stats["later"].runs == 0  # not an at_boot job; its period is 100 hours
        assert any(e.message == "network burst: screen_on" for _, e in device.log_entries())
    finally:
        gen.stop()
    assert not gen._thread.is_alive()


def test_no_traffic_while_the_device_is_offline(internet: OfflineInternet, dns: OfflineDns) -> None:
    device = VirtualDevice(dataclasses.replace(load_profile("xiaomi-mi10t"), boot_seconds=0.8))
    install_public_ca(device, internet.ca.cert_pem)
    plan = parse_plan(BURST_PLAN, "burst.yaml")
    device.reboot()
    assert not device.online
    gen = TrafficGenerator(device, network(device, internet, dns), plan, seed=7).start()
    try:
        time.sleep(0.5)
        assert gen.totals().runs == 0
        assert device.wait_online(10)
        # Back online: the pending boot burst runs.
        assert wait_until(lambda: gen.stats["boot"].ok == 1, 4.0), gen.stats
    finally:
        gen.stop()
