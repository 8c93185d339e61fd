"""Packet captures in the analyser: which flows bypassed the proxy, their names and apps, and
the proxy-bypass finding. The captures are real pcap files written by auditor's pcap writer
(real checksums, SLL2 as ``tcpdump -i any`` gives) and read by the fast packet path."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from auditor import columns as C
from auditor.analysis.engine import analyze, write
from auditor.analysis.packetflows import (
    PATH_BYPASS,
    PATH_DIRECT,
    PATH_LOCAL,
    PATH_PROXY,
    _loopbacks,
    _with_names,
    codes_of,
    per_value,
    read_packet_flows,
    session_captures,
    text_array,
)
from auditor.evidence.verify import verify_session
from auditor.netutil import is_loopback
from auditor.packets.pcapwrite import LINKTYPE_LINUX_SLL2
from auditor.records import HttpRecord
from auditor.session import SessionWriter
from auditor.timeutil import iso
from tests.packets.helpers import (
    client_hello_body,
    dns_query,
    dns_response,
    ip4,
    quic_initials,
    rr,
    tls_records,
)
from vhandset.synth import write_pcap

PHONE = "192.168.1.23"
PROXY_PORT = 8080
RESOLVER = ("10.0.0.53", 53)
PUSH = ("198.18.158.58", 5222)
T0 = 1_796_000_000.0  # 2026-11-30


@dataclass(frozen=True)
class Seg:
    ts: float
    proto: str
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes
    flags: str = ""


def tcp_flow(t: float, src: tuple[str, int], dst: tuple[str, int], data: bytes) -> list[Seg]:
    return [
        Seg(t, "tcp", *src, *dst, b"", "S"),
        Seg(t + 0.01, "tcp", *src, *dst, data),
        Seg(t + 0.02, "tcp", *dst, *src, b"\x17\x03\x03\x00\x05hello"),
        Seg(t + 0.03, "tcp", *src, *dst, b"", "F"),
    ]


def phone_traffic() -> list[Seg]:
    """What tcpdump -i any on a phone set to a proxy through adb reverse would see."""
    segs: list[Seg] = []
    # 1. an app's request through the proxy: loopback to the reverse tunnel
    segs += tcp_flow(T0, ("127.0.0.1", 40001), ("127.0.0.1", PROXY_PORT), b"CONNECT a:443\r\n\r\n")
    # 2. loopback between two local services (never leaves the phone)
    segs += tcp_flow(T0 + 0.1, ("127.0.0.1", 40002), ("127.0.0.1", 5037), b"local")
    # 3. DNS straight to the resolver
    q = dns_query(0x4242, "push.vendor.example")
    a = dns_response(0x4242, "push.vendor.example", 1, [rr(b"\xc0\x0c", 1, ip4(PUSH[0]))])
    segs += [
        Seg(T0 + 0.2, "udp", PHONE, 40003, *RESOLVER, q),
        Seg(T0 + 0.21, "udp", *RESOLVER, PHONE, 40003, a),
    ]
    # 4. a push channel, TLS straight to the vendor, named by SNI
    hello = tls_records(client_hello_body("push.vendor.example", ["xmpp"]))
    segs += tcp_flow(T0 + 0.3, (PHONE, 40004), PUSH, hello)
    # 5. a TCP connection with no name but the DNS answer for its address
    segs += tcp_flow(T0 + 0.4, (PHONE, 40005), PUSH, b"\x00\x01binary")
    # 6. QUIC to a tracker
    for i, dgram in enumerate(quic_initials("quic.tracker.example")):
        segs.append(Seg(T0 + 0.5 + i / 1000, "udp", PHONE, 40006, "198.18.7.7", 443, dgram))
    return segs


def make_session(
    root: Path,
    *,
    proxy: bool = True,
    sockets: list[tuple[float, int, int]] | None = None,
    extra: dict[str, bytes] | None = None,
) -> Path:
    """A closed session with the phone's traffic in packets/, and ``extra`` files (name ->
    bytes) there too, written before the close so that they are hashed and read."""
    capture: dict[str, Any] = {"route": "reverse"}
    if proxy:
        capture["proxy"] = {"listen_host": "127.0.0.1", "port": PROXY_PORT}
    device = {
        "manufacturer": "Xiaomi",
        "packages": [{"name": "com.vendor.push", "uid": 10077}],
    }
    w = SessionWriter.create(root, device=device, capture=capture)
    (w.path / "packets").mkdir(mode=0o700)
    write_pcap(
        w.path / "packets" / "adb-tcpdump-001.pcap",
        phone_traffic(),
        linktype=LINKTYPE_LINUX_SLL2,
        local=[PHONE, "127.0.0.1"],
    )
    w.write(
        HttpRecord(
            id="h1",
            request_start=iso(T0),
            client_ip="127.0.0.1",
            client_port=40001,
            server_ip="198.18.1.1",
            server_port=443,
            scheme="https",
            method="GET",
            host="a",
            port=443,
            path="/",
            url="https://a/",
            http_version="HTTP/1.1",
            status=200,
        )
    )
    if sockets:
        with open(w.path / "sockets.jsonl", "w") as fh:
            for ts, lport, uid in sockets:
                entry = ["tcp", PHONE, lport, PUSH[0], PUSH[1], "ESTABLISHED", uid]
                fh.write(json.dumps({"ts": iso(ts), "entries": [entry]}) + "\n")
    for name, data in (extra or {}).items():
        (w.path / "packets" / name).write_bytes(data)
    w.close()
    return w.path


def test_flows_are_classified_by_path(tmp_path: Path) -> None:
    s = make_session(tmp_path)
    manifest = json.loads((s / "manifest.json").read_text())
    assert session_captures(s, manifest) == ["packets/adb-tcpdump-001.pcap"]
    data = read_packet_flows(s, manifest)
    (acct,) = data.files
    assert acct.error is None and acct.packets > 10
    assert acct.paths == {PATH_PROXY: 1, PATH_LOCAL: 1, PATH_BYPASS: 4}
    df = data.flows
    assert len(df) == 4 and df[C.BYPASS].all()
    assert set(df[C.SEEN_BY]) == {"packets"}
    by_port = {(r.server_ip, r.server_port, r.client_port): r for r in df.itertuples()}
    dns = by_port[(*RESOLVER, 40003)]
    assert dns.transport == "udp" and dns.dns_queries == "push.vendor.example"
    push = by_port[(*PUSH, 40004)]
    assert (push.name, push.name_evidence, push.alpn) == ("push.vendor.example", "tls-sni", "xmpp")
    assert push.tcp_state == "closed" and push.packets_up >= 3 and push.bytes_up > len(b"S")
    unnamed = by_port[(*PUSH, 40005)]
    assert (unnamed.name, unnamed.name_evidence) == ("push.vendor.example", "dns-answer")
    quic = by_port[("198.18.7.7", 443, 40006)]
    assert (quic.transport, quic.sni, quic.name, quic.name_evidence) == (
        "quic",
        "quic.tracker.example",
        "quic.tracker.example",
        "quic-sni",
    )
    assert all(f.startswith("packets/adb-tcpdump-001.pcap#") for f in df[C.FLOW_ID])
    assert data.addr_names[PUSH[0]] == "push.vendor.example"
    (lookup,) = data.lookups
    assert lookup["qname"] == "push.vendor.example" and lookup["answers"] == [f"A {PUSH[0]}"]


def test_analysis_reports_bypass_per_app(tmp_path: Path) -> None:
    s = make_session(tmp_path, sockets=[(T0 + 0.3, 40004, 10077), (T0 + 0.4, 40005, 10077)])
    assert verify_session(s).ok
    res = analyze([s])
    flows = res.flows
    assert set(flows[C.SEEN_BY]) == {"proxy", "packets"}
    assert not flows.loc[flows[C.SEEN_BY] == "proxy", C.BYPASS].any()
    push = flows[flows[C.CLIENT_PORT] == 40004].iloc[0]
    assert (push[C.APPS], push[C.APP_EVIDENCE]) == ("com.vendor.push", "local-port")
    bypass = [f for f in res.findings if f.rule == "proxy-bypass"]
    by_app = {f.data["app"]: f for f in bypass}
    assert set(by_app) == {"com.vendor.push", "(app unknown)"}
    push_f = by_app["com.vendor.push"]
    assert push_f.data["hosts"] == ["push.vendor.example"] and push_f.data["ports"] == [5222]
    assert len(push_f.flow_ids) == 2
    other = by_app["(app unknown)"]
    assert other.data["dns_queries"] == ["push.vendor.example"]
    assert {"quic", "udp"} <= set(other.data["transports"])
    cov = res.doc["coverage"]
    assert cov["packet_capture"] and cov["bypassed_proxy"] == 4 and cov["seen_only_in_packets"] == 4
    (pk,) = res.doc["packets"].values()
    assert pk["paths"] == {PATH_BYPASS: 4, PATH_LOCAL: 1, PATH_PROXY: 1}
    out = write(res, tmp_path / "report", ["json", "csv", "html", "md"])
    assert out
    doc = json.loads((tmp_path / "report" / "findings.json").read_text())
    assert any(f["rule"] == "proxy-bypass" for f in doc["findings"])
    assert "packets/adb-tcpdump-001.pcap#" in (tmp_path / "report" / "flows.csv").read_text()


def test_without_a_proxy_nothing_bypasses(tmp_path: Path) -> None:
    s = make_session(tmp_path, proxy=False)
    res = analyze([s])
    packets = res.flows[res.flows[C.SEEN_BY] == "packets"]
    assert len(packets) == 4  # no proxy: the loopback to 8080 is just another local flow
    data = read_packet_flows(s, json.loads((s / "manifest.json").read_text()))
    assert data.files[0].paths == {PATH_DIRECT: 4, PATH_LOCAL: 2}
    assert not res.flows[C.BYPASS].any()
    assert not [f for f in res.findings if f.rule == "proxy-bypass"]


def test_a_broken_capture_is_a_warning_and_the_rest_is_read(tmp_path: Path) -> None:
    s = make_session(tmp_path, extra={"adb-tcpdump-002.pcap": b"not a capture at all" * 4})
    res = analyze([s])
    assert any("adb-tcpdump-002.pcap: not read" in w for w in res.warnings)
    assert res.doc["coverage"]["bypassed_proxy"] == 4


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_a_truncated_capture_is_read_up_to_the_damage(tmp_path: Path, cut: float) -> None:
    s = make_session(tmp_path)
    cap = s / "packets" / "adb-tcpdump-001.pcap"
    data = cap.read_bytes()
    cap.write_bytes(data[: int(len(data) * cut)])
    res = analyze([s])
    assert any("packet warning" in w for w in res.warnings)
    assert 0 < res.doc["coverage"]["packets"]


def test_the_report_shows_the_packets_section(tmp_path: Path) -> None:
    s = make_session(tmp_path)
    res = analyze([s])
    write(res, tmp_path / "r", ["html", "md"])
    html = (tmp_path / "r" / "report.html").read_text()
    assert "id='packets'" in html and "push.vendor.example" in html
    assert "packets/adb-tcpdump-001.pcap" in html and "bypass 4" in html
    md = (tmp_path / "r" / "summary.md").read_text()
    assert "## Packets and the proxy" in md and "4 flow(s) bypassed the proxy" in md


# --------------------------------------------------------------- the columnar helpers (issue 14)

NAMES_WITH_GAPS = ["b.example", None, "a.example", "b.example", None, "Ünïcode.example", ""]


@pytest.mark.parametrize("dtype", ["category", "str", "object"])
def test_per_value_on_codes_gives_the_object_path(dtype: str) -> None:
    """The codes path (categorical and Arrow text) calls ``func`` as the object-array path
    does, missing values included."""
    col = pd.Series(NAMES_WITH_GAPS, dtype=dtype)

    def func(v: Any) -> str:
        return f"{type(v).__name__}:{v}"

    got = per_value(col, func).tolist()
    assert got == per_value(col.to_numpy(dtype=object), func).tolist()
    assert got[0] == "str:b.example" and got[1] in ("float:nan", "NoneType:None")


@pytest.mark.parametrize("dtype", ["category", "str", "object"])
def test_text_array_is_the_column_pandas_infers(dtype: str) -> None:
    col = pd.Series(NAMES_WITH_GAPS, dtype=dtype)
    codes, values = codes_of(col)
    built = pd.Series(text_array(codes, values))
    inferred = pd.Series(col.to_numpy(dtype=object).tolist())  # pandas' own inference
    pd.testing.assert_series_equal(built, inferred)
    # no rows: the object column an empty table of text gets (as the per-row path made it)
    assert text_array(np.zeros(0, dtype=np.intp), ["x"]).dtype == object


def test_the_loopback_prefilter_asks_every_value_that_may_be_one() -> None:
    values = ["127.0.0.1", "127.9.9.9", "128.0.0.1", "::1", "0::1", "0:0:0:0:0:0:0:1", "::1%lo"]
    values += ["::ffff:127.0.0.1", "0:0:0:0:0:ffff:7f00:1", "::", "1::1", "fe80::1", "[::1]"]
    values += ["::ffff:8.8.8.8", "2001:db8::1", "garbage:", ":", "0", "", "1.2.3.4", "12.7.0.0"]
    expect = [isinstance(v, str) and is_loopback(v) for v in values]
    assert _loopbacks(np.asarray(values, dtype=object)).tolist() == expect
    assert sum(expect) >= 5  # the list holds loopbacks


def test_dns_names_keep_the_first_name_of_an_address() -> None:
    names = {"a.example.": ["192.0.2.1", "192.0.2.2"], "B.example": ["192.0.2.2", "192.0.2.3"]}
    known = {"192.0.2.3": "earlier.example"}

    def reference(known: dict[str, str], names: dict[str, Any]) -> dict[str, str]:
        out = dict(known)
        for name, addrs in names.items():
            for a in addrs:
                out.setdefault(a, name.lower().rstrip("."))
        return out

    assert _with_names(known, names) == reference(known, names)
    assert _with_names({}, names) == reference({}, names)
    assert _with_names({}, names)["192.0.2.2"] == "a.example"


def test_a_capture_added_after_the_close_is_not_read(tmp_path: Path) -> None:
    """What is not hashed is not read: a capture slipped under packets/ of a closed session
    (a dot-file or a plain name) changes nothing the analysis reads; verify names it."""
    from auditor.evidence.verify import verify_session

    s = make_session(tmp_path)
    manifest = json.loads((s / "manifest.json").read_text())
    before = read_packet_flows(s, manifest)
    original = s / "packets" / "adb-tcpdump-001.pcap"
    for name in (".late.pcap", "later.pcap"):
        (s / "packets" / name).write_bytes(original.read_bytes())
    assert session_captures(s, manifest) == ["packets/adb-tcpdump-001.pcap"]
    after = read_packet_flows(s, manifest)
    assert [f.rel for f in after.files] == [f.rel for f in before.files]
    assert len(after.flows) == len(before.flows)
    problems = str(verify_session(s).to_dict())
    assert ".late.pcap" in problems and "later.pcap" in problems


def test_a_hostile_sockets_log_is_a_warning(tmp_path: Path) -> None:
    """A line nested 100,000 deep, or a FIFO in place of sockets.jsonl, is a warning: no
    RecursionError, no hang."""
    import os

    from auditor.analysis.flowtable import SocketIndex

    path = tmp_path / "sockets.jsonl"
    good = json.dumps({"ts": iso(T0), "entries": [["tcp", PHONE, 40004, *PUSH, "ESTABLISHED", 7]]})
    path.write_text(good + "\n" + "[" * 100_000 + "\n")
    idx = SocketIndex.load(path)
    assert idx.warnings == ["sockets.jsonl: line 2 unreadable, skipped"]
    path.unlink()
    os.mkfifo(path)
    idx = SocketIndex.load(path)
    assert idx.warnings and "not read" in idx.warnings[0]


def test_coverage_names_the_tls_key_log_without_reading_it(tmp_path: Path) -> None:
    """A session holding mitmdump's TLS key log: coverage gives its path, size and hash from
    the manifest (the report says Wireshark can decrypt the captures), never its content."""
    import hashlib

    from auditor.session import TLS_KEYLOG

    secret = b"CLIENT_TRAFFIC_SECRET_0 " + b"ab" * 32 + b" " + b"cd" * 48 + b"\n"
    s = make_session(tmp_path / "a")
    plain = analyze([s]).doc["coverage"]
    assert plain["tls_keylogs"] == []
    w = SessionWriter.create(tmp_path / "b")
    (w.path / "tls").mkdir(mode=0o700)
    (w.path / TLS_KEYLOG).write_bytes(secret)
    w.close()
    res = analyze([w.path])
    (entry,) = res.doc["coverage"]["tls_keylogs"]
    assert entry["path"] == TLS_KEYLOG and entry["size"] == len(secret)
    assert entry["sha256"] == hashlib.sha256(secret).hexdigest()
    assert "ab" * 32 not in json.dumps(res.doc)
