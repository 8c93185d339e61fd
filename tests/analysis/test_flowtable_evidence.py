"""Name evidence in the flow table: the server's certificate and the CNAME chain of each flow.

Proxy rows take the leaf of the ``tls_server`` record their ``server_conn_id`` names; packet
rows the leaf of a TLS <= 1.2 handshake in the capture. The CNAME chain follows every DNS
answer of the session (the proxy's DNS records, then the packets'). The packet side reads a
real capture of the Alibaba app in place (``../shared/captures/``), checked against tshark.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from auditor import columns as C
from auditor.analysis.flowtable import build_flow_table
from auditor.analysis.packetflows import cname_chain, cname_map, read_packet_flows
from auditor.packets.tlscert import chain_info
from auditor.records import (
    DnsAnswer,
    DnsRecord,
    HttpRecord,
    Record,
    TlsFailedRecord,
    TlsServerRecord,
)
from auditor.session import Session, SessionWriter
from tests.conftest import SHARED_CAPTURES
from vhandset.offline.pki import CertificateAuthority

T = "2026-12-01T10:00:00.000000Z"
CERT = (C.CERT_ORG, C.CERT_COUNTRY, C.CERT_CN, C.CERT_NAMES, C.CERT_ISSUER, C.CERT_SOURCE)
TSHARK = shutil.which("tshark")


def _http(fid: str, host: str, conn: str | None, scheme: str = "https") -> HttpRecord:
    return HttpRecord(
        id=fid,
        method="GET",
        scheme=scheme,
        host=host,
        port=443 if scheme == "https" else 80,
        path="/",
        url=f"{scheme}://{host}/",
        request_start=T,
        server_ip="203.0.113.9",
        server_port=443,
        server_conn_id=conn,
        proxy_mode="regular",
    )


def _session(root: Path, records: list[Record], *, capture: Path | None = None) -> Session:
    w = SessionWriter.create(root, capture={"route": "reverse"} if capture else None)
    for r in records:
        w.write(r)
    if capture is not None:  # a copy in the temporary session (a link is never read)
        (w.path / "packets").mkdir(mode=0o700)
        shutil.copyfile(capture, w.path / "packets" / "adb-tcpdump-001.pcap")
    w.detach()
    return Session(w.path)


def _table(s: Session, *, damaged: bool = False) -> pd.DataFrame:
    """The flow table with the session's packet flows, as the analyser builds it."""
    df, warnings = build_flow_table(s, packets=read_packet_flows(s.path, s.manifest))
    assert damaged or not warnings
    return df


def _row(df: pd.DataFrame, **match: object) -> pd.Series:
    rows = df
    for k, v in match.items():
        rows = rows[rows[k] == v]
    assert len(rows) == 1, match
    return rows.iloc[0]


def test_proxy_rows_carry_the_leaf_of_their_connection(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "ca")
    pem = ca.leaf("api.vendor.example")[0].read_bytes()
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    ders = [c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(pem)]
    chain = chain_info(ders)
    conn = TlsServerRecord(id="c1", ts=T, sni="api.vendor.example", certificates=chain)
    empty = TlsServerRecord(id="c2", ts=T, sni="no-chain.example")  # mitmproxy kept none
    s = _session(
        tmp_path / "captures",
        [
            conn,
            empty,
            _http("f1", "api.vendor.example", "c1"),
            _http("f2", "api.vendor.example", "c1"),  # the same connection, reused
            _http("f3", "plain.example", "c9", scheme="http"),  # no TLS: no tls_server record
            _http("f4", "no-chain.example", "c2"),
            _http("f5", "old.example", None),  # recorded before server_conn_id existed
            TlsFailedRecord(
                id="t1",
                ts=T,
                side="client",
                client_ip="10.0.0.2",
                client_port=1,
                sni="api.vendor.example",
                error="pinned",
                server_conn_id="c1",
            ),
        ],
    )
    df, warnings = build_flow_table(s)
    assert not warnings
    leaf = chain[0]
    for fid in ("f1", "f2", "t1"):
        row = _row(df, **{C.FLOW_ID: fid})
        assert tuple(row[c] for c in CERT) == (
            None,
            None,
            "api.vendor.example",
            "api.vendor.example",
            "auditor offline internet root CA",
            "proxy",
        )
        assert row[C.CERT_SHA256] == leaf.sha256
    for fid in ("f3", "f4", "f5"):
        row = _row(df, **{C.FLOW_ID: fid})
        assert all(row[c] is None for c in (*CERT, C.CERT_SHA256)), fid
    assert set(df[C.CNAMES]) == {""}  # no DNS in this session


def test_cname_chains_follow_the_proxy_dns_records(tmp_path: Path) -> None:
    def dns(qname: str, *answers: tuple[str, str, str]) -> DnsRecord:
        return DnsRecord(
            id=f"d-{qname}",
            ts=T,
            qname=qname,
            qtype="A",
            rcode="NOERROR",
            answers=tuple(DnsAnswer(n, t, v, 60) for n, t, v in answers),
        )

    s = _session(
        tmp_path / "captures",
        [
            dns(
                "tracking.vendor.example",
                ("tracking.vendor.example", "CNAME", "tracking.vendor.example.cdn.example."),
                ("tracking.vendor.example.cdn.example", "CNAME", "e42.edge.example"),
                ("e42.edge.example", "A", "203.0.113.9"),
            ),
            dns(
                "loop.example",
                ("loop.example", "CNAME", "b.example"),
                ("b.example", "CNAME", "loop.example"),
            ),
            dns("semi.example", ("semi.example", "CNAME", "x;y.example")),
            dns("tracking.vendor.example", ("tracking.vendor.example", "CNAME", "later.example")),
            _http("f1", "Tracking.Vendor.Example", None),
            _http("f2", "loop.example", None),
            _http("f3", "semi.example", None),
            _http("f4", "direct.example", None),
        ],
    )
    df, _ = build_flow_table(s)
    cn = dict(zip(df[C.FLOW_ID], df[C.CNAMES], strict=True))
    assert cn == {
        # the first answer for a name is kept: the later one is not a second chain
        "f1": "tracking.vendor.example;tracking.vendor.example.cdn.example;e42.edge.example",
        "f2": "loop.example;b.example",
        "f3": "semi.example;x\\059y.example",
        "f4": "",
    }


def test_cname_chain_limits() -> None:
    long = {f"n{i}.example": f"n{i + 1}.example" for i in range(40)}
    assert cname_chain("n0.example", cname_map(long.items())).count(";") == 15
    assert cname_chain("203.0.113.9", {"a": "b"}) == ""
    assert cname_chain(None, {"a": "b"}) == ""
    assert cname_map([("A.example.", "A.example"), ("", "x")]) == {}


ALIBABA = SHARED_CAPTURES / "quicmitm_capture.pcap"
needs_capture = pytest.mark.skipif(
    not ALIBABA.is_file(), reason=f"real captures not present at {SHARED_CAPTURES}"
)
ADASH_CHAIN = (
    "h-adashx.ut.alibaba.com;h-adashx.ut.alibaba.com.gds.alibabadns.com;h-adashx.ut.taobao.com;"
    "h-adashx.ut.taobao.com.gds.alibabadns.com;h-adashx-hk.ut.hzshudian.com"
)


@needs_capture
def test_packet_rows_of_a_real_capture(tmp_path: Path) -> None:
    """The Alibaba app's telemetry host: its certificate names Alibaba and its CNAME chain
    leaves alibaba.com for taobao.com and hzshudian.com, all from the packets."""
    s = _session(tmp_path / "captures", [], capture=ALIBABA)
    df = _table(s)
    packets = df[df[C.SEEN_BY] == "packets"]
    adash = packets[packets[C.SNI] == "h-adashx.ut.alibaba.com"]
    assert len(adash) == 1
    row = adash.iloc[0]
    assert row[C.CERT_ORG] == "Alibaba (China) Technology Co., Ltd."
    assert (row[C.CERT_COUNTRY], row[C.CERT_CN]) == ("CN", "*.ut.hzshudian.com")
    assert row[C.CERT_NAMES].split(";")[:3] == [
        "*.ut.hzshudian.com",
        "*.ut.9game.cn",
        "*.ut.alibaba.com",
    ]
    assert (row[C.CERT_ISSUER], row[C.CERT_SOURCE]) == ("GlobalSign nv-sa", "packets")
    assert row[C.CNAMES] == ADASH_CHAIN
    with_cert = packets[C.CERT_SHA256].notna()
    assert with_cert.sum() == 4 and (packets.loc[with_cert, C.CERT_SOURCE] == "packets").all()
    assert packets.loc[~with_cert, C.CERT_SOURCE].isna().all()
    # a TLS 1.3 connection to the same organisation has no certificate in clear, but a chain
    amdc = packets[(packets[C.NAME] == "s.alicdn.com") & packets[C.CERT_SHA256].isna()]
    assert set(amdc[C.CNAMES]) == {
        "s.alicdn.com;s.alicdn.com.gds.alibabadns.com;www.alibaba.com.edgekey.net;"
        "e11983.x.akamaiedge.net"
    }


REAL = sorted(SHARED_CAPTURES.glob("*.pcap")) if SHARED_CAPTURES.is_dir() else []
CHAINS = {"quicmitm_capture.pcap": 8, "quicmitm_goodali.pcap": 9}  # flows with a chain


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
@pytest.mark.parametrize("capture", REAL, ids=lambda p: p.name)
def test_packet_cname_chains_match_tshark(tmp_path: Path, capture: Path) -> None:
    """Every packet flow's chain, against the CNAMEs tshark decodes for its name (the first
    answer for that name, as auditor keeps it)."""
    assert TSHARK is not None
    out = subprocess.run(
        [TSHARK, "-n", "-r", str(capture), "-Y", "dns.flags.response == 1 && dns.cname",
         "-T", "fields", "-e", "dns.qry.name", "-e", "dns.cname"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    theirs: dict[str, str] = {}
    for line in out.splitlines():
        qname, cnames = line.split("\t")
        theirs.setdefault(qname.lower(), ";".join([qname.lower(), *cnames.lower().split(",")]))
    s = _session(tmp_path / "captures", [], capture=capture)
    df = _table(s, damaged=True)
    compared = 0
    for name, chain in zip(df[C.NAME], df[C.CNAMES], strict=True):
        assert chain == theirs.get(name, ""), name
        compared += bool(chain)
    assert compared == CHAINS.get(capture.name, 0)


@needs_capture
def test_proxy_and_packet_dns_make_one_chain(tmp_path: Path) -> None:
    """A proxy flow's name is followed through the packets' answers, and a packet flow's
    chain goes on through the proxy's DNS records."""
    extend = DnsRecord(
        id="d1",
        ts=T,
        qname="h-adashx-hk.ut.hzshudian.com",
        qtype="A",
        answers=(DnsAnswer("h-adashx-hk.ut.hzshudian.com", "CNAME", "edge.hzshudian.example", 60),),
    )
    s = _session(
        tmp_path / "captures",
        [extend, _http("f1", "h-adashx.ut.alibaba.com", None)],
        capture=ALIBABA,
    )
    df = _table(s)
    longer = ADASH_CHAIN + ";edge.hzshudian.example"
    assert _row(df, **{C.FLOW_ID: "f1"})[C.CNAMES] == longer
    packets = df[(df[C.SEEN_BY] == "packets") & (df[C.SNI] == "h-adashx.ut.alibaba.com")]
    assert set(packets[C.CNAMES]) == {longer}
