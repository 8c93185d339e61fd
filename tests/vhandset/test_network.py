"""The virtual handset's network stack against a real offline internet, DNS and mitmdump.

No adb here: a :class:`VirtualDevice` and a :class:`DeviceNetwork` in this process, talking to
a real :class:`OfflineInternet` and :class:`OfflineDns` on loopback, and, for the proxied
paths, a real mitmdump reached through the emulator's ``10.0.2.2`` alias.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from auditor.device.parsers import parse_proc_net, subject_hash_old
from auditor.proxy.capture import ca_cert_path
from auditor.records import HttpRecord, TlsFailedRecord
from auditor.session import Session
from tests.mitmlab import upstream_mitmdump
from vhandset import network
from vhandset.device import VirtualDevice
from vhandset.network import (
    TRUST_PINNED,
    TRUST_SYSTEM,
    TRUST_USER,
    DeviceNetwork,
    TlsRejected,
)
from vhandset.offline.dns import OfflineDns, resolve
from vhandset.offline.internet import Mode, OfflineInternet
from vhandset.world import install_public_ca

USER_CA_DIR = "/data/misc/user/0/cacerts-added"
TRACKING = "https://tracking.miui.com/track/v4?imei_md5=abc"
BLOCKLIST = "https://globalapi.ad.xiaomi.com/api/v4/config?tagId=MiAdBlacklistConfig"
PINNED = "https://play.googleapis.com/play/log/timestamp"


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


@pytest.fixture
def net(device: VirtualDevice, internet: OfflineInternet, dns: OfflineDns) -> DeviceNetwork:
    return DeviceNetwork(
        device,
        (internet.host, internet.port),
        dns=dns.address,
        resolve=resolve,
        pinned_ca=internet.ca_cert_path,
    )


@pytest.fixture(scope="module")
def mitm(
    internet: OfflineInternet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, Path, bytes]]:
    """A real mitmdump in upstream mode to the offline internet, as ``auditor audit`` runs it
    for a virtual handset: (port, session, mitmproxy's CA)."""
    tmp = tmp_path_factory.mktemp("mitm")
    with upstream_mitmdump(tmp, internet.url, internet.ca_cert_path) as (opts, session):
        yield opts.port, session, ca_cert_path(opts.confdir).read_bytes()


def uid(device: VirtualDevice, package: str) -> int:
    found = device.package_uid(package)
    assert found is not None, package
    return found


def add_user_ca(device: VirtualDevice, pem: bytes) -> None:
    device.vfs.mkdir(USER_CA_DIR, parents=True)
    device.vfs.write(f"{USER_CA_DIR}/{subject_hash_old(pem)}.0", pem, mode=0o644)


def wait_records(path: Path, predicate, timeout: float = 10.0) -> list:
    deadline = time.monotonic() + timeout
    while True:
        recs = list(Session(path).records())
        if predicate(recs) or time.monotonic() > deadline:
            return recs
        time.sleep(0.1)


# ----------------------------------------------------------------------------------- direct


def test_direct_https_needs_the_offline_ca_in_the_system_store(
    device: VirtualDevice, net: DeviceNetwork, internet: OfflineInternet
) -> None:
    analytics = uid(device, "com.miui.analytics")
    before = len(internet.requests())
    with pytest.raises(TlsRejected, match=r"tracking\.miui\.com"):
        net.fetch(analytics, "GET", TRACKING)
    assert len(internet.requests()) == before  # the handshake failed: no request was sent

    install_public_ca(device, internet.ca.cert_pem)
    res = net.fetch(analytics, "POST", TRACKING, body=b'{"imei":"864132058957347"}')
    assert (res.status, res.via) == (200, "direct")
    ex = internet.requests()[-1]
    assert (ex.host, ex.mode, ex.tls, ex.sni) == ("tracking.miui.com", Mode.DIRECT, True, ex.host)
    assert ex.method == "POST" and ex.path == "/track/v4?imei_md5=abc" and ex.request_size == 26

    # The packet log holds the connection's open and close and only ciphertext in between.
    remote = resolve("tracking.miui.com")[0]
    conn = [p for p in net.packets.snapshot() if remote in (p.src, p.dst) and p.proto == "tcp"]
    assert {"S", "F"} <= {p.flags for p in conn}
    data = b"".join(p.payload for p in conn)
    assert data and b"864132058957347" not in data and b"/track/v4" not in data


def test_a_cleartext_request_is_visible_in_the_packet_log(
    device: VirtualDevice, net: DeviceNetwork, internet: OfflineInternet
) -> None:
    weather = uid(device, "com.miui.weather2")
    url = "http://weatherapi.market.xiaomi.com/wtr-v3/weather/all?deviceId=5093efbfa90f7649"
    res = net.fetch(weather, "GET", url, trust="none")
    assert res.status == 200 and res.via == "direct"
    sent = b"".join(p.payload for p in net.packets.snapshot() if p.dport == 80)
    assert b"GET /wtr-v3/weather/all?deviceId=5093efbfa90f7649 HTTP/1.1" in sent
    assert internet.requests()[-1].mode == Mode.DIRECT


def test_user_store_is_trusted_by_user_apps_only(
    device: VirtualDevice, net: DeviceNetwork, internet: OfflineInternet
) -> None:
    add_user_ca(device, internet.ca.cert_pem)
    assert (
        subject_hash_old(internet.ca.cert_pem) + ".0" in device.run(f"su -c ls {USER_CA_DIR}").out
    )
    spotify = uid(device, "com.spotify.music")
    url = "https://spclient.wg.spotify.com/gabo-receiver-service/v3/events"
    assert net.fetch(spotify, "POST", url, body=b"{}", trust=TRUST_USER).status == 204
    with pytest.raises(TlsRejected):
        net.fetch(spotify, "POST", url, body=b"{}", trust=TRUST_SYSTEM)


def test_pinned_app_trusts_its_own_ca_only(
    device: VirtualDevice, net: DeviceNetwork, internet: OfflineInternet
) -> None:
    vending = uid(device, "com.android.vending")
    # No store holds the offline CA, but the app was built with it.
    assert net.fetch(vending, "GET", PINNED, trust=TRUST_PINNED).status == 200
    assert internet.requests()[-1].host == "play.googleapis.com"


def test_socket_is_listed_with_the_app_uid_while_kept_alive(
    device: VirtualDevice,
    net: DeviceNetwork,
    internet: OfflineInternet,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(network, "KEEPALIVE", 0.5)
    install_public_ca(device, internet.ca.cert_pem)
    msa = uid(device, "com.miui.msa.global")
    remote = resolve("globalapi.ad.xiaomi.com")[0]

    def ours() -> list:
        table = parse_proc_net(device.run("cat /proc/net/tcp").out, "tcp").items
        return [e for e in table if str(e.remote_ip) == remote and e.remote_port == 443]

    assert ours() == []
    assert net.fetch(msa, "GET", BLOCKLIST).status == 200
    (entry,) = ours()
    assert entry.uid == msa and entry.state.name == "ESTABLISHED"
    assert str(entry.local_ip) == device.profile.network.wlan_ipv4
    deadline = time.monotonic() + 5
    while ours() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ours() == [], "the socket outlived its keep-alive"


# ------------------------------------------------------------------------------ bypass paths


def test_dns_query_is_answered_and_logged(
    device: VirtualDevice, net: DeviceNetwork, dns: OfflineDns
) -> None:
    analytics = uid(device, "com.miui.analytics")
    reply = net.dns_query(analytics, "tracking.miui.com")
    assert reply is not None
    flags, _qd, ancount = struct.unpack_from("!HHH", reply, 2)
    assert flags & 0x8000 and flags & 0xF == 0 and ancount >= 1  # a response, NOERROR
    assert socket.inet_aton(resolve("tracking.miui.com")[0]) in reply
    assert any(q.name.rstrip(".") == "tracking.miui.com" for q in dns.queries())

    udp = [p for p in net.packets.snapshot() if p.proto == "udp"]
    query, answer = udp[-2:]
    assert (query.dst, query.dport) == (
        "10.0.0.53",
        53,
    ) and b"\x08tracking\x04miui" in query.payload
    assert (answer.src, answer.sport) == ("10.0.0.53", 53) and answer.payload == reply
    assert answer.dport == query.sport


def test_a_lan_proxy_is_refused_without_any_connection_attempt(
    device: VirtualDevice,
    net: DeviceNetwork,
    internet: OfflineInternet,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    device.put_setting("global", "http_proxy", "192.0.2.1:8080")

    def no_connect(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a connection was attempted: {args}")

    monkeypatch.setattr(socket, "create_connection", no_connect)
    packets, sockets, requests = net.packets.seq, dict(device.sockets), len(internet.requests())
    with pytest.raises(ConnectionRefusedError, match=r"192\.0\.2\.1:8080"):
        net.fetch(uid(device, "com.miui.analytics"), "GET", TRACKING)
    assert net.packets.seq == packets
    assert device.sockets == sockets
    assert len(internet.requests()) == requests


def test_a_loopback_proxy_needs_the_reverse_tunnel(
    device: VirtualDevice, net: DeviceNetwork
) -> None:
    device.put_setting("global", "http_proxy", "127.0.0.1:8080")
    with pytest.raises(ConnectionRefusedError, match="no transport"):
        net.fetch(uid(device, "com.miui.analytics"), "GET", TRACKING)


# --------------------------------------------------------------------------- through mitmdump


def test_through_mitmdump_via_10_0_2_2(
    device: VirtualDevice,
    net: DeviceNetwork,
    internet: OfflineInternet,
    mitm: tuple[int, Path, bytes],
) -> None:
    port, session, mitm_ca = mitm
    device.put_setting("global", "http_proxy", f"10.0.2.2:{port}")
    assert net.proxy() == ("10.0.2.2", port)
    vending = uid(device, "com.android.vending")
    analytics = uid(device, "com.miui.analytics")

    # Pinned: fine straight to the server above, rejected against mitmproxy's certificate.
    with pytest.raises(TlsRejected, match=r"play\.googleapis\.com"):
        net.fetch(vending, "GET", PINNED, trust=TRUST_PINNED)
    # A system app trusts mitmproxy once its CA is in the system store.
    with pytest.raises(TlsRejected):
        net.fetch(analytics, "GET", TRACKING)
    install_public_ca(device, mitm_ca)
    res = net.fetch(analytics, "POST", TRACKING, body=b'{"imei":"864132058957347"}')
    assert (res.status, res.via) == (200, "emulator-host")
    ex = internet.requests()[-1]
    assert ex.host == "tracking.miui.com" and ex.mode == Mode.CONNECT  # mitmdump's upstream

    sock = [s for s in device.sockets.values() if s.uid == analytics]
    assert any(s.remote == ("10.0.2.2", port) for s in sock)

    recs = wait_records(
        session,
        lambda rs: (
            any(isinstance(r, HttpRecord) and r.host == "tracking.miui.com" for r in rs)
            and any(isinstance(r, TlsFailedRecord) and r.sni == "play.googleapis.com" for r in rs)
        ),
    )
    failed = [r for r in recs if isinstance(r, TlsFailedRecord) and r.sni == "play.googleapis.com"]
    assert failed and all(r.side == "client" for r in failed)
    (flow,) = [r for r in recs if isinstance(r, HttpRecord) and r.host == "tracking.miui.com"]
    assert flow.scheme == "https" and flow.status == 200 and flow.request_body is not None
    assert Session(session).bodies.get(flow.request_body.sha256) == b'{"imei":"864132058957347"}'
