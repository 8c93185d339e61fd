"""The OS log joined to a session's flows (auditor.analysis.appjoin): the rules on small
tables, then a session the virtual handset made, whose apps are known to the test."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from auditor import columns as C
from auditor.analysis import appjoin
from auditor.analysis.appjoin import AMBIGUOUS, CONNECT, DNS, NONE, Window
from auditor.analysis.flowtable import build_flow_table
from auditor.analysis.packetflows import read_packet_flows
from auditor.imports import ImportFormat, ImportReport
from auditor.imports.intrusion import OsNetworkEvent, intrusion_records, read_events
from auditor.imports.session import import_files
from auditor.session import Session

T = 1_778_572_800.0


def flows(*rows: dict) -> pd.DataFrame:
    base = {
        C.FLOW_ID: "f",
        C.RECORD_TYPE: "packet_flow",
        C.SEEN_BY: "packets",
        C.CLIENT_IP: "10.0.0.2",
        C.CLIENT_PORT: None,
        C.SERVER_PORT: 443,
        C.NAME: "",
        C.APPS: "",
        C.APP_EVIDENCE: NONE,
    }
    out = []
    for i, r in enumerate(rows):
        row = base | {C.FLOW_ID: f"f{i}"} | r
        row[C.START] = pd.Timestamp(row.pop("t"), unit="s", tz="UTC")
        out.append(row)
    return pd.DataFrame(out)


def connect(t: float, pkg: str, ip: str, port: int = 443, line: int = 1) -> OsNetworkEvent:
    return OsNetworkEvent("connect", t, pkg, line, ip=ip, port=port)


def lookup(t: float, pkg: str, host: str, *addrs: str, line: int = 1) -> OsNetworkEvent:
    return OsNetworkEvent("dns", t, pkg, line, hostname=host, addresses=addrs)


def test_a_connection_is_the_app_that_opened_it_within_the_window() -> None:
    df = flows(
        {"t": T, C.SERVER_IP: "192.0.2.1"},
        {"t": T + 100, C.SERVER_IP: "192.0.2.1"},  # 6 s after the only event: too late
        {"t": T + 200, C.SERVER_IP: "192.0.2.1", C.SERVER_PORT: 80},  # another port
        {"t": T + 300, C.SERVER_IP: "192.0.2.1"},  # the event is 3 s later (a slow clock)
    )
    events = [
        connect(T - 0.01, "com.a", "192.0.2.1", line=1),
        connect(T + 94, "com.b", "192.0.2.1", line=2),
        connect(T + 200, "com.c", "192.0.2.1", line=3),
        connect(T + 303, "com.d", "192.0.2.1", line=4),
    ]
    j = appjoin.join(df, events)
    assert j.apps.tolist() == ["com.a", "", "", ""]
    assert j.evidence.tolist() == [CONNECT, NONE, NONE, NONE]
    assert j.events.tolist()[0] == "1" and j.counts.tolist() == [1, 0, 0, 0]
    # the phone's clock 3 s ahead, said so (and a tight window): the last one fits, the
    # first no longer does
    j = appjoin.join(df, events, window=Window(before=1.0, clock_offset=3.0))
    assert j.evidence.tolist() == [NONE, NONE, NONE, CONNECT]
    assert j.apps[3] == "com.d"
    # a connection no flow fits is a row of its own
    assert appjoin.join(df, events).os_only[C.APPS].tolist() == ["com.b", "com.c", "com.d"]


def test_two_apps_at_one_address_and_time_are_ambiguous_never_one_of_them() -> None:
    df = flows({"t": T, C.SERVER_IP: "192.0.2.1"}, {"t": T + 0.5, C.SERVER_IP: "192.0.2.1"})
    events = [
        connect(T - 0.2, "com.b", "192.0.2.1", line=1),
        connect(T + 0.4, "com.a", "192.0.2.1", line=2),
        connect(T + 0.45, "com.b", "192.0.2.1", line=3),
    ]
    j = appjoin.join(df, events)
    assert j.evidence.tolist() == [AMBIGUOUS, AMBIGUOUS]
    assert j.apps.tolist() == ["com.a;com.b", "com.a;com.b"]
    assert j.stats["rows_ambiguous"] == 2 and j.os_only.empty


def test_the_proxys_rows_fit_the_phones_connection_to_the_proxy() -> None:
    proxy = ("127.0.0.1", 8080)
    common = {C.SEEN_BY: "proxy", C.RECORD_TYPE: "http", C.CLIENT_IP: "127.0.0.1"}
    df = flows(
        common | {"t": T + 0.3, C.SERVER_IP: "198.51.100.1", C.CLIENT_PORT: 40001},
        # the same kept-alive connection, a minute later: its connection started at T + 0.3
        common | {"t": T + 60, C.SERVER_IP: "198.51.100.1", C.CLIENT_PORT: 40001},
        common | {"t": T + 120, C.SERVER_IP: "198.51.100.2", C.CLIENT_PORT: 40002},
    )
    events = [
        connect(T, "com.a", "127.0.0.1", 8080, line=1),
        connect(T + 119.5, "com.b", "127.0.0.1", 8080, line=2),
        connect(T + 119.8, "com.c", "127.0.0.1", 8080, line=3),
    ]
    j = appjoin.join(df, events, proxy=proxy)
    assert j.apps.tolist() == ["com.a", "com.a", "com.b;com.c"]
    assert j.evidence.tolist() == [CONNECT, CONNECT, AMBIGUOUS]
    # an app that reached the server itself, bypassing the proxy, at that moment: the proxy's
    # row is ambiguous, not that app's
    bypass = connect(T + 0.1, "com.d", "198.51.100.1", 443, line=4)
    j = appjoin.join(df, [*events, bypass], proxy=proxy)
    assert j.apps.tolist()[0] == "com.a;com.d" and j.evidence.tolist()[0] == AMBIGUOUS
    assert j.counts.tolist()[0] == 2 and j.events.tolist()[0] == "4"
    # the same app both ways (a transparent proxy) is that app's
    j = appjoin.join(df, [*events, connect(T + 0.1, "com.a", "198.51.100.1", line=5)], proxy=proxy)
    assert (j.apps[0], j.evidence[0]) == ("com.a", CONNECT)
    # without the proxy's address the phone's connections fit nothing, and are no rows
    j = appjoin.join(df, events)
    assert j.evidence.tolist() == [NONE, NONE, NONE]
    assert j.os_only.empty and j.stats["os_only_loopback_skipped"] == 3


def test_a_lookup_names_the_app_when_no_connection_does() -> None:
    df = flows(
        {"t": T, C.SERVER_IP: "198.51.100.7", C.NAME: "198.51.100.7"},
        {"t": T, C.SERVER_IP: "203.0.113.5", C.NAME: "api.weather.example"},
        {"t": T, C.SERVER_IP: "203.0.113.6", C.NAME: "cdn.example"},
        {"t": T, C.SERVER_IP: "203.0.113.7", C.NAME: "old.example"},
    )
    events = [
        lookup(T - 60, "com.w", "x.example", "198.51.100.7", line=1),
        lookup(T - 1, "com.w", "API.Weather.example.", line=2),
        lookup(T - 2, "com.p", "cdn.example", "203.0.113.6", line=3),
        lookup(T - 3, "com.q", "cdn.example", line=4),
        lookup(T - 301, "com.o", "old.example", "203.0.113.7", line=5),
    ]
    j = appjoin.join(df, events)
    assert j.apps.tolist() == ["com.w", "com.w", "com.p;com.q", ""]
    assert j.evidence.tolist() == [DNS, DNS, AMBIGUOUS, NONE]
    assert (j.events[2], j.counts[2]) == ("3", 2)  # the latest of the two lookups
    # a connection that fits wins over lookups
    j = appjoin.join(df, [*events, connect(T, "com.z", "198.51.100.7", line=6)])
    assert (j.apps[0], j.evidence[0]) == ("com.z", CONNECT)


def test_a_captures_dns_query_is_the_app_that_looked_the_name_up() -> None:
    resolver = {C.SERVER_IP: "10.0.0.53", C.SERVER_PORT: 53, C.NAME: "10.0.0.53"}
    df = flows(
        resolver | {"t": T, C.DNS_QUERIES: "a.example"},
        resolver | {"t": T + 50, C.DNS_QUERIES: "b.example;A.example."},
        resolver | {"t": T + 100, C.DNS_QUERIES: "c.example"},  # its lookup is 10 s earlier
        resolver | {"t": T + 200},
    )
    events = [
        lookup(T + 0.01, "com.a", "a.example", "192.0.2.1", line=1),
        lookup(T + 50.01, "com.b", "b.example", line=2),
        lookup(T + 50.02, "com.a", "a.example", line=3),
        lookup(T + 90, "com.c", "c.example", line=4),
    ]
    j = appjoin.join(df, events)
    assert j.apps.tolist() == ["com.a", "com.a;com.b", "", ""]
    assert j.evidence.tolist() == [DNS, AMBIGUOUS, NONE, NONE]
    assert j.counts.tolist() == [1, 2, 0, 0]


def test_connections_no_flow_saw_become_rows_named_by_their_apps_lookup() -> None:
    df = flows({"t": T, C.SERVER_IP: "192.0.2.1"})
    events = [
        lookup(T + 9, "com.s", "spclient.example", "203.0.113.20", line=1),
        connect(T + 10, "com.s", "203.0.113.20", 443, line=2),
        lookup(T + 9, "com.t", "two.example", "203.0.113.21", line=3),
        lookup(T + 9.5, "com.t", "three.example", "203.0.113.21", line=4),
        connect(T + 10, "com.t", "203.0.113.21", 443, line=5),
        connect(T + 11, "android.uid.system:1000", "::1", 53, line=6),
        connect(T + 12, "com.u", "127.0.0.1", 8080, line=7),
        connect(T + 13, "com.v", "192.0.2.99", 8080, line=8),
    ]
    j = appjoin.join(df, events, proxy=("192.0.2.99", 8080))
    rows = j.os_only
    assert rows[C.FLOW_ID].tolist() == ["os-2", "os-5"]
    assert rows[C.NAME].tolist() == ["spclient.example", "203.0.113.21"]  # two names: no guess
    assert rows[C.NAME_EVIDENCE].tolist() == ["os-dns", "ip"]
    assert rows[C.SEEN_BY].tolist() == ["os-log", "os-log"]
    assert rows[C.APPS].tolist() == ["com.s", "com.t"]
    assert rows[C.START].iloc[0] == pd.Timestamp(T + 10, unit="s", tz="UTC")
    out = appjoin.apply(df, j)
    assert len(out) == 3 and out[C.SEEN_BY].tolist() == ["packets", "os-log", "os-log"]


def test_the_captures_own_evidence_is_kept_and_compared() -> None:
    df = flows(
        {"t": T, C.SERVER_IP: "192.0.2.1", C.APPS: "com.x", C.APP_EVIDENCE: "pcapdroid"},
        {"t": T, C.SERVER_IP: "192.0.2.2", C.APPS: "com.y", C.APP_EVIDENCE: "local-port"},
        {"t": T, C.SERVER_IP: "192.0.2.3"},
    )
    events = [
        connect(T, "com.x", "192.0.2.1", line=1),
        connect(T, "com.other", "192.0.2.2", line=2),
        connect(T, "com.z", "192.0.2.3", line=3),
    ]
    j = appjoin.join(df, events)
    out = appjoin.apply(df, j)
    assert out[C.APPS].tolist() == ["com.x", "com.y", "com.z"]
    assert out[C.APP_EVIDENCE].tolist() == ["pcapdroid", "local-port", CONNECT]
    assert out[appjoin.OS_APPS].tolist() == ["com.x", "com.other", "com.z"]
    assert (j.stats["os_agrees"], j.stats["os_disagrees"]) == (1, 1)


def test_a_session_without_an_os_log_is_left_as_it_is() -> None:
    df = flows({"t": T, C.SERVER_IP: "192.0.2.1"})
    out, warnings, stats = appjoin.attribute_session(df, [])
    assert out is df and warnings == [] and stats == {}


def test_rows_without_a_time_or_an_empty_table_fit_nothing() -> None:
    df = flows({"t": T, C.SERVER_IP: "192.0.2.1"})
    df[C.START] = pd.NaT
    j = appjoin.join(df, [connect(T, "com.a", "192.0.2.1")])
    assert j.evidence.tolist() == [NONE] and len(j.os_only) == 1
    empty = flows()
    j = appjoin.join(empty, [connect(T, "com.a", "192.0.2.1")])
    assert len(j.apps) == 0 and len(appjoin.apply(empty, j)) == 1


# ------------------------------------------------------------- a session the handset made


@dataclass
class HandsetRun:
    session: Path
    log: bytes
    truth: dict[tuple[str, int], str]  # (server address, port) -> the app the test drove
    unseen: tuple[str, str]  # (app, host) of the request made after the capture stopped


@pytest.fixture(scope="module")
def handset(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HandsetRun]:
    """The virtual Xiaomi's apps make requests with no proxy; its tcpdump's packets become a
    pcap, imported as a session; one more request comes after the capture stopped. The
    handset then writes its intrusion log of all of it."""
    from auditor.packets.pcapwrite import LINKTYPE_ETHERNET, global_header, record
    from vhandset import intrusion as handset_log
    from vhandset.device import VirtualDevice
    from vhandset.network import TRUST_NONE, TRUST_USER, DeviceNetwork
    from vhandset.offline.dns import OfflineDns, resolve
    from vhandset.offline.internet import OfflineInternet
    from vhandset.synth import LinkIface, PacketSynth, mac_bytes
    from vhandset.world import install_public_ca

    tmp = tmp_path_factory.mktemp("handset")
    with OfflineInternet() as inet, OfflineDns() as dns:
        dev = VirtualDevice("xiaomi-mi10t")
        install_public_ca(dev, inet.ca.cert_pem)
        net = DeviceNetwork(
            dev, (inet.host, inet.port), dns=dns.address, resolve=resolve,
            pinned_ca=inet.ca_cert_path,
        )  # fmt: skip
        dev.packet_log = net.packets
        uid = dev.package_uid
        truth = {}
        # (the app that sends, what Android calls its UID: a shared UID by its shared user)
        for app, named, url, trust in (
            ("com.miui.analytics", None, "https://tracking.miui.com/track/v4", "system"),
            ("com.miui.weather2", None, "http://weatherapi.market.xiaomi.com/w", TRUST_NONE),
            ("com.miui.securitycenter", "android.uid.system:1000", "https://api.sec.miui.com/a",
             "system"),
        ):  # fmt: skip
            assert net.fetch(uid(app) or -1, "GET", url, trust=trust).status == 200
            host = url.split("/")[2]
            truth[(resolve(host)[0], 443 if url.startswith("https") else 80)] = named or app
        net.dns_query(uid("com.xiaomi.discover") or -1, "sdkconfig.ad.intl.xiaomi.com")
        captured = net.packets.snapshot()
        unseen = ("com.spotify.music", "spclient.wg.spotify.com")
        net.fetch(uid(unseen[0]) or -1, "GET", f"https://{unseen[1]}/x", trust=TRUST_USER)
        everything = net.packets.snapshot()
    synth = PacketSynth(
        LINKTYPE_ETHERNET,
        local=[dev.profile.network.wlan_ipv4, "127.0.0.1"],
        iface=LinkIface("wlan0", 3, mac_bytes(dev.profile.identifiers.wifi_mac)),
        gateway_mac=b"\x02\x00\x00\x00\x00\x01",
    )
    pcap = bytearray(global_header(LINKTYPE_ETHERNET))
    for p in captured:
        for ts, frame in synth.frames(p):
            pcap += record(ts, frame)
    (tmp / "phone.pcap").write_bytes(bytes(pcap))
    res = import_files([tmp / "phone.pcap"], tmp / "captures")
    log = handset_log.encode(
        handset_log.intrusion_events(dev, everything, handset_log.plan_names(dev.profile.id))
    )
    yield HandsetRun(res.session, log, truth, unseen)


def test_the_handsets_log_attributes_every_flow_its_capture_saw(handset: HandsetRun) -> None:
    sess = Session(handset.session)
    records = list(sess.records())
    df, _ = build_flow_table(sess, records, read_packet_flows(sess.path, sess.manifest))
    assert set(df[C.APP_EVIDENCE]) == {"none"}  # an imported capture names no app by itself
    rep = ImportReport(ImportFormat.HAR)
    log_records = list(intrusion_records(io.BytesIO(handset.log), rep, "log.txt", "il-x"))
    assert rep.skipped_total == 0 and rep.counts["connect_event"] == 4
    out, warnings, stats = appjoin.attribute_session(df, [*records, *log_records])
    assert warnings == []
    seen = out[out[C.SEEN_BY] == "packets"]
    tcp = seen[seen[C.TRANSPORT] == "tcp"]
    got = {
        (ip, int(port)): (app, how)
        for ip, port, app, how in zip(
            tcp[C.SERVER_IP], tcp[C.SERVER_PORT], tcp[C.APPS], tcp[C.APP_EVIDENCE], strict=True
        )
    }
    assert got == {key: (app, CONNECT) for key, app in handset.truth.items()}
    # the DNS query over UDP went to the resolver: no connection, but the OS logged the lookup
    # of the name the query asked, by the app the test drove
    udp = seen[seen[C.TRANSPORT] == "udp"]
    assert udp[[C.DNS_QUERIES, C.APPS, C.APP_EVIDENCE]].values.tolist() == [
        ["sdkconfig.ad.intl.xiaomi.com", "com.xiaomi.discover", DNS]
    ]
    # the request after the capture stopped: only the OS saw it, with its app and name
    only = out[out[C.SEEN_BY] == "os-log"]
    assert only[[C.APPS, C.NAME]].values.tolist() == [list(handset.unseen)]
    assert stats["os_only_connections"] == 1 and stats["rows_by_os_connect"] == 3
    assert stats["rows_by_os_dns"] == 1 and stats["rows_without_os_evidence"] == 0
    assert np.all(out[appjoin.OS_EVENT].notna())


def test_the_handsets_log_reads_like_the_hand_written_one(handset: HandsetRun) -> None:
    rep = ImportReport(ImportFormat.HAR)
    events = list(read_events(io.BytesIO(handset.log), rep))
    assert rep.skipped_total == 0 and not rep.notes
    assert [e.event_id for e in events] == list(range(len(events)))
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    dns = {(e.package, e.hostname) for e in events if e.kind == "dns"}
    assert ("com.xiaomi.discover", "sdkconfig.ad.intl.xiaomi.com") in dns
    assert handset.unseen in dns


def test_the_handset_writes_its_log_where_the_phone_does() -> None:
    """``write_intrusion_log`` puts the log in the phone's storage, at the folder AndroidQF
    pulls (``/sdcard/Download/Intrusion Logging/``), holding what its apps did."""
    from vhandset.intrusion import DEVICE_DIR, write_intrusion_log
    from vhandset.world import VirtualWorld

    with VirtualWorld("pixel-android14", port=0, traffic=False) as world:
        assert world.network is not None
        gms = world.device.package_uid("com.google.android.gms") or -1
        world.network.dns_query(gms, "www.googleapis.com")
        path, data = write_intrusion_log(world)
        stored = world.device.vfs.read(path)
    assert path.startswith(DEVICE_DIR + "/") and path.endswith(".txt")
    assert stored == data
    events, rep = read_events_of(data)
    # Play services runs in the shared UID com.google.uid.shared, which Android names
    # "<sharedUserId>:<uid>" (PackageManager.getNameForUid), not by one of its packages
    assert [(e.kind, e.package, e.hostname) for e in events] == [
        ("dns", f"com.google.uid.shared:{gms}", "www.googleapis.com")
    ]
    assert events[0].addresses and rep.skipped_total == 0


def test_androidqfs_steps_on_the_handset_give_the_log() -> None:
    """With Intrusion Logging enabled, the handset answers AndroidQF's check (``settings get
    secure advanced_protection_mode``: 1) and writes its log when the retrieval page opens."""
    from vhandset.intrusion import (
        DEVICE_DIR,
        RETRIEVAL_ACTIVITY,
        enable_intrusion_logging,
    )
    from vhandset.world import VirtualWorld

    def sh(world: VirtualWorld, cmd: str) -> bytes:
        return b"".join(d for _, d in world.device.shell(cmd).chunks())

    with VirtualWorld("pixel-android14", port=0, traffic=False) as world:
        assert sh(world, "settings get secure advanced_protection_mode").strip() == b"null"
        enable_intrusion_logging(world)
        assert sh(world, "settings get secure advanced_protection_mode").strip() == b"1"
        assert world.network is not None
        world.network.dns_query(world.device.package_uid("com.android.vending") or -1, "x.example")
        assert not world.device.vfs.exists(DEVICE_DIR)
        pkg, activity = RETRIEVAL_ACTIVITY
        sh(world, f"am start -n {pkg}/{activity}")  # as AndroidQF opens the retrieval page
        (name,) = world.device.vfs.listdir(DEVICE_DIR)
        data = world.device.vfs.read(f"{DEVICE_DIR}/{name}")
    events, _ = read_events_of(data)
    assert [(e.package, e.hostname) for e in events] == [("com.android.vending", "x.example")]


def read_events_of(data: bytes) -> tuple[list[OsNetworkEvent], ImportReport]:
    rep = ImportReport(ImportFormat.HAR)
    return list(read_events(io.BytesIO(data), rep)), rep


PROXY = ("127.0.0.1", 8080)


def _plain_join(df: pd.DataFrame, events: list[OsNetworkEvent], w: Window) -> list[tuple]:
    """The rules of appjoin written plainly, row by row, for comparison."""
    out = []
    st = [t.timestamp() for t in df[C.START]]
    cport, sip, sport = (df[c].tolist() for c in (C.CLIENT_PORT, C.SERVER_IP, C.SERVER_PORT))
    name, seen = df[C.NAME].tolist(), df[C.SEEN_BY].tolist()
    for i in range(len(df)):
        # the connection's start: the earliest row with the same client port and server
        same = [
            j
            for j in range(len(df))
            if cport[j] == cport[i] and sip[j] == sip[i] and sport[j] == sport[i]
        ]  # NaN ports equal nothing
        s = min(st[j] for j in same) if same else st[i]
        fit = {
            e.package
            for e in events
            if e.kind == "connect"
            and (
                (e.ip, e.port) == (sip[i], sport[i])
                or (seen[i] == "proxy" and (e.ip, e.port) == PROXY)
            )
            and s - w.before <= e.ts - w.clock_offset <= s + w.after
        }
        how = CONNECT
        if not fit:
            how = DNS
            named = bool(name[i]) and name[i] != sip[i]  # a name, not the address as its name
            fit = {
                e.package
                for e in events
                if e.kind == "dns"
                and ((not named and sip[i] in e.addresses)
                     or (named and (e.hostname or "").lower().rstrip(".") == name[i]))
                and s - w.dns_before <= e.ts - w.clock_offset <= s + w.after
            }  # fmt: skip
        if not fit:
            out.append(("", NONE))
        else:
            out.append((";".join(sorted(fit)), how if len(fit) == 1 else AMBIGUOUS))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_join_gives_what_its_rules_written_plainly_give(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ips = ["192.0.2.1", "192.0.2.2", "198.51.100.3", "2001:db8::4", "203.0.113.5"]
    names = ["a.example", "b.example", "c.example"]
    pkgs = ["com.a", "com.b", "com.c", "android.uid.system:1000"]

    def pick(values: list) -> Any:
        return values[int(rng.integers(0, len(values)))]

    rows = []
    for _ in range(150):
        k = int(rng.integers(0, len(ips)))
        rows.append({
            "t": T + float(rng.uniform(0, 3600)), C.SERVER_IP: ips[k],
            C.SERVER_PORT: pick([443, 80]), C.NAME: names[k % 3] if rng.random() < 0.6 else ips[k],
            C.CLIENT_PORT: int(rng.integers(40000, 40040)) if rng.random() < 0.7 else None,
            C.SEEN_BY: pick(["packets", "proxy"]),
        })  # fmt: skip
    df = flows(*rows)
    events: list[OsNetworkEvent] = []
    for line in range(120):  # near a row, so that windows fit, miss and overlap
        row = pick(rows)
        ip = row[C.SERVER_IP] if rng.random() < 0.8 else pick(ips)
        if rng.random() < 0.5:
            port = row[C.SERVER_PORT] if rng.random() < 0.8 else pick([443, 80])
            if row[C.SEEN_BY] == "proxy" and rng.random() < 0.6:
                ip, port = PROXY
            t = row["t"] + float(rng.uniform(-8, 4))
            events.append(connect(t, pick(pkgs), ip, port, line=line))
        else:
            addrs = (ip,) if rng.random() < 0.6 else ()
            host = pick(names).upper() + ("." if rng.random() < 0.2 else "")
            t = row["t"] - float(rng.uniform(-3, 400))
            events.append(lookup(t, pick(pkgs), host, *addrs, line=line))
    for w in (Window(), Window(before=0.5, after=0.2, dns_before=30, clock_offset=1.5)):
        j = appjoin.join(df, events, window=w, proxy=PROXY)
        got = list(zip(j.apps.tolist(), j.evidence.tolist(), strict=True))
        assert got == _plain_join(df, events, w)
        if w == Window():  # the data holds every case
            assert set(j.evidence.tolist()) == {CONNECT, DNS, AMBIGUOUS, NONE}


def test_os_only_rows_carry_every_column_of_the_table_even_an_empty_one() -> None:
    empty = flows().reindex(columns=[*C.FLOW_COLUMNS, C.APPS, C.APP_EVIDENCE, C.SEEN_BY])
    j = appjoin.join(empty, [connect(T, "com.a", "192.0.2.1")])
    out = appjoin.apply(empty, j)
    assert set(C.FLOW_COLUMNS) <= set(out.columns)
    assert out[C.TRANSPORT].tolist() == ["tcp"] and out[C.BYTES_UP].isna().all()


def test_os_only_rows_of_two_daily_files_keep_ids_of_their_own() -> None:
    """Two files of one session, each with a connection on its line 1 that no flow fits: the
    rows only the OS saw are named by their records' ids (the file's hash and the line), so
    they do not share a flow id, nor an os_event."""
    from auditor.imports.intrusion import OsNetworkEvent

    records = [
        connect(T, "com.a", "192.0.2.1", line=1).to_record("2026-05-12.txt", "il-aaaaaaaaaaaa"),
        connect(T + 9, "com.b", "192.0.2.2", line=1).to_record("2026-05-13.txt", "il-bbbbbbbbbbbb"),
    ]
    assert all(OsNetworkEvent.from_record(r) is not None for r in records)
    empty = flows().reindex(columns=[*C.FLOW_COLUMNS, C.APPS, C.APP_EVIDENCE, C.SEEN_BY])
    out, _, stats = appjoin.attribute_session(empty, records)
    assert sorted(out[C.FLOW_ID].tolist()) == ["os-il-aaaaaaaaaaaa-1", "os-il-bbbbbbbbbbbb-1"]
    assert sorted(out[appjoin.OS_EVENT].tolist()) == ["il-aaaaaaaaaaaa-1", "il-bbbbbbbbbbbb-1"]
    assert stats


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, bytes, int]]:
    """Two apps of the virtual Xiaomi, 2 s apart, through a real mitmdump that the phone
    reaches at 10.0.2.2 (the emulator's alias of the host); the handset's intrusion log of it.
    Returns (mitmdump's session, the log, the proxy's port)."""
    from auditor.proxy.capture import ca_cert_path
    from auditor.records import HttpRecord
    from tests.mitmlab import upstream_mitmdump
    from vhandset import intrusion as handset_log
    from vhandset.device import VirtualDevice
    from vhandset.network import TRUST_NONE, DeviceNetwork
    from vhandset.offline.dns import OfflineDns, resolve
    from vhandset.offline.internet import OfflineInternet
    from vhandset.world import install_public_ca

    tmp = tmp_path_factory.mktemp("proxied")
    with (
        OfflineInternet() as inet,
        OfflineDns() as dns,
        upstream_mitmdump(tmp, inet.url, inet.ca_cert_path) as (opts, session),
    ):
        dev = VirtualDevice("xiaomi-mi10t")
        install_public_ca(dev, ca_cert_path(opts.confdir).read_bytes())
        net = DeviceNetwork(dev, (inet.host, inet.port), dns=dns.address, resolve=resolve)
        dev.packet_log = net.packets
        dev.put_setting("global", "http_proxy", f"10.0.2.2:{opts.port}")
        uid = dev.package_uid
        net.fetch(uid("com.miui.analytics") or -1, "GET", "https://tracking.miui.com/t")
        time.sleep(2.0)
        net.fetch(uid("com.miui.weather2") or -1, "GET", "http://weatherapi.market.xiaomi.com/w",
                  trust=TRUST_NONE)  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            recs = list(Session(session).records())
            if sum(isinstance(r, HttpRecord) for r in recs) >= 2:
                break
            time.sleep(0.1)
    log = handset_log.encode(handset_log.intrusion_events(dev, net.packets.snapshot()))
    yield session, log, opts.port


@pytest.mark.e2e
def test_the_proxys_flows_are_the_apps_that_connected_to_it(
    proxied: tuple[Path, bytes, int],
) -> None:
    path, log, port = proxied
    sess = Session(path)
    records = list(sess.records())
    df, _ = build_flow_table(sess, records)
    events, rep = read_events_of(log)
    assert rep.skipped_total == 0
    # the phone connected to the proxy, never to the servers: no lookup, no server address
    assert {(e.kind, e.ip, e.port) for e in events} == {("connect", "10.0.2.2", port)}
    j = appjoin.join(df, events, proxy=("10.0.2.2", port), window=Window(before=1.5, after=0.3))
    got = dict(zip(df[C.HOST].tolist(), zip(j.apps.tolist(), j.evidence.tolist(), strict=True),
                   strict=True))  # fmt: skip
    assert got == {
        "tracking.miui.com": ("com.miui.analytics", CONNECT),
        "weatherapi.market.xiaomi.com": ("com.miui.weather2", CONNECT),
    }
    # with the default window (5 s before, 2 s after) the second request's window holds both
    # connections, 2 s apart: ambiguous, both named; the first's holds only its own
    j = appjoin.join(df, events, proxy=("10.0.2.2", port))
    got = dict(zip(df[C.HOST].tolist(), zip(j.apps.tolist(), j.evidence.tolist(), strict=True),
                   strict=True))  # fmt: skip
    assert got == {
        "tracking.miui.com": ("com.miui.analytics", CONNECT),
        "weatherapi.market.xiaomi.com": ("com.miui.analytics;com.miui.weather2", AMBIGUOUS),
    }
    # without the proxy's address nothing fits, and nothing is invented
    assert set(appjoin.join(df, events).evidence.tolist()) == {NONE}


def test_a_named_row_is_not_given_the_app_of_another_names_lookup() -> None:
    """A lookup of a.example by one app answered an address that a QUIC row to
    tracker.b.example then used (a shared CDN address): the row has no app, not that one;
    a row named only by its address does take the lookup's app."""
    events = [lookup(T, "com.app.a", "a.example", "203.0.113.9", line=1)]
    df = flows(
        {"t": T + 120, C.SERVER_IP: "203.0.113.9", C.SERVER_PORT: 443,
         C.NAME: "tracker.b.example", C.SEEN_BY: "packets"},
        {"t": T + 120, C.SERVER_IP: "203.0.113.9", C.SERVER_PORT: 443,
         C.NAME: "203.0.113.9", C.SEEN_BY: "packets"},
    )  # fmt: skip
    j = appjoin.join(df, events)
    assert list(zip(j.apps.tolist(), j.evidence.tolist(), strict=True)) == [
        ("", NONE),
        ("com.app.a", DNS),
    ]
