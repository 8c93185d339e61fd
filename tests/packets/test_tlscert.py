"""auditor.packets.tlscert and the server certificates the packet reader puts in the flows.

Real material: the Android captures in ``../shared/captures/`` (read in place) and the
public-domain TLS captures of ``samples/`` (see ``samples/PROVENANCE.md``). Every leaf the
reader finds, and every field of every certificate tshark finds in a Certificate message, is
compared with what tshark (Wireshark's dissectors, an independent reader: its own TCP
reassembly, its own ASN.1) reports. Then hostile input: flights cut anywhere, split over
many segments out of order, a certificate that is not one, lengths that lie.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import random
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from auditor.packets import flows as F
from auditor.packets import names as N
from auditor.packets import read_capture, tlscert
from auditor.packets.flows import CaptureResult
from tests.certs import self_signed
from tests.packets.helpers import SHARED_CAPTURES, ipv4, pcap, tcp

SAMPLES = Path(__file__).parent / "samples"
TSHARK = shutil.which("tshark") or ("/usr/bin/tshark" if Path("/usr/bin/tshark").exists() else None)
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")

# Captures with certificates in clear, and how many distinct leaf flows each holds.
WITH_CERTS = {
    "quicmitm_capture.pcap": 4,
    "quicmitm_goodali.pcap": 2,
    "apksherlock_dynamic_capture.pcap": 1,
    "pcpp_tls10.pcap": 2,
    "pcpp_tls2_handshakes.pcap": 15,
    "pcpp_ssl_multiple_records3.pcap": 1,
}


def _real() -> list[Path]:
    found = sorted(SAMPLES.glob("*.pcap"))
    if SHARED_CAPTURES.is_dir():
        found += sorted(SHARED_CAPTURES.glob("*.pcap"))
    return found


REAL = _real()


def _real_ids(p: Path) -> str:
    return p.name


# ------------------------------------------------------------------------------- tshark


@dataclass
class TsharkCert:
    der: bytes
    subject: dict[str, list[str]] = field(default_factory=dict)  # OID -> values in order
    issuer: dict[str, list[str]] = field(default_factory=dict)
    dns_names: list[str] = field(default_factory=list)
    not_before: str = ""
    not_after: str = ""


_O, _CN, _C = "2.5.4.10", "2.5.4.3", "2.5.4.6"


def _first(names: dict[str, list[str]], oid: str) -> str | None:
    values = names.get(oid)
    return values[0] if values else None


def _rdn(element: ET.Element | None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if element is None:
        return out
    for item in element.iter("field"):
        if item.get("name") != "x509if.RelativeDistinguishedName_item_element":
            continue
        kids = list(item)
        oid = next(k.get("show") for k in kids if k.get("name") == "x509if.oid")
        leaves = [e for e in item.iter("field") if not len(e) and e.get("name") != "x509if.oid"]
        out.setdefault(str(oid), []).append(str(leaves[0].get("show")))
    return out


def _time(element: ET.Element) -> str:
    (leaf,) = [e for e in element.iter("field") if not len(e)]
    return str(leaf.get("show"))  # "2026-06-15 08:41:26 (UTC)"


def _cert(element: ET.Element) -> TsharkCert:
    c = TsharkCert(der=bytes.fromhex(str(element.get("value"))))
    for e in element.iter("field"):
        name = e.get("name")
        if name == "x509af.subject" and not c.subject:
            c.subject = _rdn(e)
        elif name == "x509af.issuer" and not c.issuer:
            c.issuer = _rdn(e)
        elif name == "x509af.notBefore" and not c.not_before:
            c.not_before = _time(e)
        elif name == "x509af.notAfter" and not c.not_after:
            c.not_after = _time(e)
        elif name == "x509af.Extension_element":
            ids = [k.get("show") for k in e if k.get("name") == "x509af.extension.id"]
            if ids == ["2.5.29.17"]:  # subjectAltName
                c.dns_names += [
                    str(d.get("show")) for d in e.iter("field") if d.get("name") == "x509ce.dNSName"
                ]
    return c


FlowKey = tuple[str, int, str, int]  # client address and port, server address and port


def tshark_chains(path: Path) -> dict[FlowKey, list[TsharkCert]]:
    """Per TCP connection, the certificates of the first Certificate message tshark decodes
    (the server sends it: its address is the packet's source)."""
    assert TSHARK is not None
    pdml = subprocess.run(
        [TSHARK, "-n", "-o", "tcp.reassemble_out_of_order:TRUE", "-r", str(path),
         "-Y", "tls.handshake.type == 11 && tcp", "-T", "pdml"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    out: dict[FlowKey, list[TsharkCert]] = {}
    for packet in ET.fromstring(pdml).iter("packet"):  # noqa: S314 - tshark's own output
        shown = {f.get("name"): f.get("show") for f in packet.iter("field") if len(f) == 0}
        src = shown.get("ip.src") or shown.get("ipv6.src")
        dst = shown.get("ip.dst") or shown.get("ipv6.dst")
        key = (str(dst), int(str(shown["tcp.dstport"])), str(src), int(str(shown["tcp.srcport"])))
        certs = [
            _cert(f) for f in packet.iter("field") if f.get("name") == "tls.handshake.certificate"
        ]
        if certs and key not in out:
            out[key] = certs
    return out


def _tshark_time(ours: str | None) -> str:
    assert ours is not None and ours.endswith(".000000Z")
    return ours[:19].replace("T", " ") + " (UTC)"


# ------------------------------------------------------------------------- real captures


def _leaves(r: CaptureResult) -> dict[FlowKey, pd.Series]:
    fl = r.flows[r.flows[F.CERT_SHA256].notna()]
    out: dict[FlowKey, pd.Series] = {}
    for _, row in fl.iterrows():
        client = (str(row[F.CLIENT_IP]), int(row[F.CLIENT_PORT]))
        out[(*client, str(row[F.SERVER_IP]), int(row[F.SERVER_PORT]))] = row
    return out


@pytest.fixture(scope="module")
def read_real() -> dict[str, CaptureResult]:
    return {p.name: read_capture(p) for p in REAL}


@pytest.mark.parametrize("path", REAL, ids=_real_ids)
def test_the_reader_finds_each_leaf_of_the_real_captures(
    path: Path, read_real: dict[str, CaptureResult]
) -> None:
    r = read_real[path.name]
    assert len(_leaves(r)) == WITH_CERTS.get(path.name, 0)
    assert not {k for k in r.warnings if k.startswith("tls-certificate")}


@needs_tshark
@pytest.mark.parametrize("path", REAL, ids=_real_ids)
def test_leaves_match_tshark(path: Path, read_real: dict[str, CaptureResult]) -> None:
    """The same connections have a leaf, and each of its fields in the flow table is what
    tshark decodes from the Certificate message it reassembled itself."""
    theirs = tshark_chains(path)
    ours = _leaves(read_real[path.name])
    assert set(ours) == set(theirs)
    for key, row in ours.items():
        leaf = theirs[key][0]
        assert row[F.CERT_SHA256] == hashlib.sha256(leaf.der).hexdigest()
        assert _na(row[F.CERT_ORG]) == _first(leaf.subject, _O)
        assert _na(row[F.CERT_CN]) == _first(leaf.subject, _CN)
        assert _na(row[F.CERT_COUNTRY]) == _first(leaf.subject, _C)
        assert _na(row[F.CERT_NAMES]) == (";".join(leaf.dns_names) or None)
        assert row[F.CERT_ISSUER] == (_first(leaf.issuer, _O) or _first(leaf.issuer, _CN))


def _na(value: object) -> object:
    return None if value is None or (isinstance(value, float) and pd.isna(value)) else value


@needs_tshark
@pytest.mark.parametrize("path", [p for p in REAL if p.name in WITH_CERTS], ids=_real_ids)
def test_every_certificate_field_matches_tshark(path: Path) -> None:
    """Every certificate of every chain tshark decodes (leaves, intermediates, roots):
    certificate_info gives tshark's subject, issuer, SAN DNS names and validity."""
    chains = tshark_chains(path)
    assert chains
    for chain in chains.values():
        for c in chain:
            info = tlscert.certificate_info(c.der)
            assert info.error is None and not info.truncated
            assert info.sha256 == hashlib.sha256(c.der).hexdigest()
            assert (info.subject_o, info.subject_cn, info.subject_c) == (
                _first(c.subject, _O),
                _first(c.subject, _CN),
                _first(c.subject, _C),
            )
            assert (info.issuer_o, info.issuer_cn) == (_first(c.issuer, _O), _first(c.issuer, _CN))
            assert list(info.dns_names) == c.dns_names
            assert _tshark_time(info.not_before) == c.not_before
            assert _tshark_time(info.not_after) == c.not_after


def test_known_leaves() -> None:
    """Two of them by value: what the intel lead will read."""
    r = read_capture(SAMPLES / "pcpp_tls2_handshakes.pcap")
    fl = r.flows.set_index(F.SNI)
    mmstat = fl.loc["gj.mmstat.com"]
    assert mmstat[F.CERT_ORG] == "Alibaba (China) Technology Co., Ltd."
    assert (mmstat[F.CERT_COUNTRY], mmstat[F.CERT_CN]) == ("CN", "*.mmstat.com")
    assert mmstat[F.CERT_NAMES] == "*.mmstat.com;mmstat.com"
    assert mmstat[F.CERT_ISSUER] == "GlobalSign nv-sa"
    ant = fl.loc["www.ant.com"].iloc[0]  # two connections
    assert pd.isna(ant[F.CERT_ORG]) and ant[F.CERT_ISSUER] == "Let's Encrypt"  # DV: no O=
    hubspan = read_capture(SAMPLES / "pcpp_ssl_multiple_records3.pcap").flows.iloc[0]
    assert (hubspan[F.CERT_ORG], hubspan[F.CERT_CN]) == ("Hubspan, Inc.", "hs001244.hs.com")
    assert pd.isna(hubspan[F.CERT_NAMES])  # an old certificate without subjectAltName


def test_a_flight_cut_by_the_capture_is_counted_not_damage() -> None:
    for name in ("pcpp_ssl_partial_certificate1.pcap", "pcpp_ssl_partial_certificate2.pcap"):
        r = read_capture(SAMPLES / name)
        assert r.flows[F.CERT_SHA256].isna().all()
        assert r.counts["tls-certificate-incomplete"] == 1 and not r.warnings
    r = read_capture(SAMPLES / "pcpp_tls2_handshakes.pcap")
    assert r.counts["tls-certificate-incomplete"] == 2  # the segments the capture had lost


def test_worker_process_and_python_twins_give_the_same_certificates(tmp_path: Path) -> None:
    path = SAMPLES / "pcpp_tls2_handshakes.pcap"
    here = read_capture(path, workers=0).flows
    there = read_capture(path, workers=1, chunk_size=4096).flows
    pd.testing.assert_frame_equal(here[list(F.CERT_COLUMNS)], there[list(F.CERT_COLUMNS)])
    code = (
        "import sys; from auditor.packets import read_capture, flows as F; "
        "print(read_capture(sys.argv[1]).flows[list(F.CERT_COLUMNS)].to_json())"
    )
    twin = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2],
        env={**os.environ, "AUDITOR_PURE_PYTHON_SCAN": "1"},
    ).stdout  # fmt: skip
    assert twin.strip() == here[list(F.CERT_COLUMNS)].to_json()


# ------------------------------------------------------------------- the flight, by hand


def _real_flight() -> bytes:
    """The server's bytes of pcpp_ssl_multiple_records3.pcap (a whole TLS 1.2 flight in one
    segment), taken out by scapy, an independent dissector."""
    scapy = pytest.importorskip("scapy.all")
    (packet,) = scapy.rdpcap(str(SAMPLES / "pcpp_ssl_multiple_records3.pcap"))
    return bytes(packet[scapy.TCP].payload)


def _leaf_of(flight: bytes) -> bytes:
    got = tlscert.read_server_flight(flight)
    assert got.done and got.leaf is not None
    return got.leaf


def test_every_prefix_of_a_real_flight_asks_for_more_until_the_leaf_is_there() -> None:
    flight = _real_flight()
    leaf = _leaf_of(flight)
    end = flight.index(leaf) + len(leaf)
    for n in range(end):
        got = tlscert.read_server_flight(flight[:n])
        assert not got.done and got.leaf is None, n
    for n in (end, end + 1, len(flight)):
        assert tlscert.read_server_flight(flight[:n]).leaf == leaf
    assert tlscert.read_server_flight(flight).version == 0x0301  # TLS 1.0


def _records(handshake: bytes, size: int, version: bytes = b"\x03\x03") -> bytes:
    return b"".join(
        b"\x16"
        + version
        + len(handshake[i : i + size]).to_bytes(2, "big")
        + handshake[i : i + size]
        for i in range(0, len(handshake), size)
    )


def _messages(flight: bytes) -> bytes:
    """The handshake messages of a flight's records, joined."""
    out, pos = b"", 0
    while pos + 5 <= len(flight) and flight[pos] == 22:
        n = int.from_bytes(flight[pos + 3 : pos + 5], "big")
        out += flight[pos + 5 : pos + 5 + n]
        pos += 5 + n
    return out


@pytest.mark.parametrize("size", [1, 7, 300, 16384])
def test_records_of_any_size(size: int) -> None:
    """A handshake message may span records; a record may hold several messages."""
    flight = _real_flight()
    assert _leaf_of(_records(_messages(flight), size)) == _leaf_of(flight)


SERVER, PHONE = "198.51.100.7", "10.0.0.2"
T0 = 1_700_000_000_000_000_000


def _capture(segments: list[tuple[int, bytes]], *, isn: int = 5000) -> bytes:
    """A raw-IP capture: the client's SYN, the server's SYN-ACK, then ``segments`` (offset in
    the server's stream, bytes) in the order given."""
    frames = [
        (T0, ipv4(PHONE, SERVER, 6, tcp(40000, 443, flags=0x02, seq=100))),
        (T0 + 1, ipv4(SERVER, PHONE, 6, tcp(443, 40000, flags=0x12, seq=isn - 1, ack=101))),
    ]
    for i, (off, data) in enumerate(segments):
        frames.append((T0 + 2 + i, ipv4(SERVER, PHONE, 6, tcp(443, 40000, data, seq=isn + off))))
    return pcap(frames, 101)


def _read(data: bytes, **kw: object) -> CaptureResult:
    return read_capture(io.BytesIO(data), **kw)  # type: ignore[arg-type]


def _split(data: bytes, rng: random.Random, most: int) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        n = rng.randint(1, most)
        out.append((pos, data[pos : pos + n]))
        pos += n
    return out


@pytest.mark.parametrize("seed", range(6))
def test_a_real_flight_split_over_many_segments_out_of_order(seed: int) -> None:
    """Segments of 1 to 60 bytes, shuffled within each run of 12 (the reassembly holds up
    to 64 segments that arrive early), a fifth of them sent twice."""
    rng = random.Random(seed)
    flight = _real_flight()
    whole = _read(_capture([(0, flight)])).flows.iloc[0]
    segments = _split(flight, rng, 60)
    sent = segments[:1]
    for i in range(1, len(segments), 12):
        run = segments[i : i + 12]
        run += rng.sample(run, len(run) // 5)  # retransmissions
        rng.shuffle(run)
        sent += run
    assert len(sent) > 150
    r = _read(_capture(sent))
    (row,) = [row for _, row in r.flows.iterrows()]
    assert (
        row[F.CERT_SHA256] == whole[F.CERT_SHA256] == hashlib.sha256(_leaf_of(flight)).hexdigest()
    )
    assert row[F.CERT_ORG] == "Hubspan, Inc." and not r.warnings


def test_a_real_flight_in_segments_in_order_across_batches() -> None:
    flight = _real_flight()
    data = _capture([(i, flight[i : i + 100]) for i in range(0, len(flight), 100)])
    r = _read(data, chunk_size=4096)
    assert r.flows.iloc[0][F.CERT_ORG] == "Hubspan, Inc." and not r.warnings


def _server_hello(version: int = 0x0303, tls13: bool = False) -> bytes:
    exts = b"\x00\x2b\x00\x02\x03\x04" if tls13 else b"\xff\x01\x00\x01\x00"
    body = version.to_bytes(2, "big") + bytes(32) + b"\x00" + b"\xc0\x2f" + b"\x00"
    body += len(exts).to_bytes(2, "big") + exts
    return b"\x02" + len(body).to_bytes(3, "big") + body


def _certificate_message(*ders: bytes, list_len: int | None = None) -> bytes:
    entries = b"".join(len(d).to_bytes(3, "big") + d for d in ders)
    n = len(entries) if list_len is None else list_len
    body = n.to_bytes(3, "big") + entries
    return b"\x0b" + len(body).to_bytes(3, "big") + body


_2026 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _der(**subject: str) -> bytes:
    name = x509.Name([x509.NameAttribute(getattr(NameOID, k), v) for k, v in subject.items()])
    cert, _ = self_signed(name, valid_from=_2026, days=365, serial=1)
    return cert.public_bytes(Encoding.DER)


def test_tls13_and_resumed_sessions_have_no_leaf_and_are_not_read() -> None:
    hello13 = _records(_server_hello(tls13=True), 16384)
    assert tlscert.read_server_flight(hello13) == tlscert.ServerFlight(True, None, 0x0304)
    resumed = _records(_server_hello(), 16384) + b"\x14\x03\x03\x00\x01\x01"
    assert tlscert.read_server_flight(resumed) == tlscert.ServerFlight(True, None, 0x0303)
    anonymous = _records(_server_hello() + b"\x0e\x00\x00\x00", 16384)  # ServerHelloDone
    assert tlscert.read_server_flight(anonymous).done
    assert tlscert.read_server_flight(anonymous).leaf is None


def test_only_the_segments_up_to_the_leaf_reach_the_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flight's segments go to Python until the leaf's length is covered (and one more);
    the rest of the connection, and a TLS 1.3 connection, stay in numpy."""
    seen: list[int] = []
    parse = N.NameCollector._server_segment

    def spy(self: N.NameCollector, f: int, d: int, seq: int, payload: bytes, starts: bool) -> None:
        seen.append(len(payload))
        parse(self, f, d, seq, payload, starts)

    monkeypatch.setattr(N.NameCollector, "_server_segment", spy)
    flight = _real_flight()
    data = [(i, flight[i : i + 500]) for i in range(0, len(flight), 500)]
    tail = [(len(flight) + 1400 * i, b"\x17\x03\x03\x05\x73" + bytes(1395)) for i in range(200)]
    r = _read(_capture(data + tail))
    assert r.flows.iloc[0][F.CERT_ORG] == "Hubspan, Inc."
    leaf_end = flight.index(_leaf_of(flight)) + len(_leaf_of(flight))
    assert len(seen) <= -(-leaf_end // 500) + 1 and sum(seen) < len(flight) + 1400
    seen.clear()
    hello13 = _records(_server_hello(tls13=True), 16384) + b"\x14\x03\x03\x00\x01\x01"
    _read(_capture([(0, hello13), *[(len(hello13) + 1400 * i, bytes(1400)) for i in range(50)]]))
    real13 = read_capture(SAMPLES / "pcpp_tls1_3.pcap")
    assert seen == [] and real13.flows[F.CERT_SHA256].isna().all() and not real13.warnings
    # a ServerHello alone in its segment does not tell what follows: the next segments go to
    # Python until the parser has seen the ChangeCipherSpec, and no further batch sends more
    alone = _records(_server_hello(tls13=True), 16384)
    rest = [(len(alone), b"\x14\x03\x03\x00\x01\x01")]
    rest += [(len(alone) + 6 + 1400 * i, bytes(1400)) for i in range(200)]
    r = _read(_capture([(0, alone), *rest]), chunk_size=8192)
    assert len(seen) <= 8 and not r.warnings and not r.counts.get("tls-certificate-incomplete")


# ------------------------------------------------------------------------------- hostile


def test_a_garbage_certificate_is_counted_and_kept_by_its_hash() -> None:
    garbage = random.Random(1).randbytes(1500)
    flight = _records(_server_hello() + _certificate_message(garbage), 16384)
    r = _read(_capture([(0, flight)]))
    row = r.flows.iloc[0]
    assert r.warnings == {"tls-certificate-unreadable": 1}
    assert row[F.CERT_SHA256] == hashlib.sha256(garbage).hexdigest() and pd.isna(row[F.CERT_ORG])
    info = tlscert.certificate_info(garbage)
    assert info.error and info.error.startswith("not a certificate") and info.subject_cn is None


HUGE_LEAF = b"\x16\x03\x03\x00\x0a\x0b\xff\xff\xf9\xff\xff\xf6\xff\xff\xf3"  # a 16 MB leaf


@pytest.mark.parametrize(
    ("flight", "error"),
    [
        (_records(_server_hello() + _certificate_message(b"x" * 10, list_len=0xFFFFF0), 16384),
         tlscert.MalformedError),  # the list's length disagrees with its message
        (_records(_server_hello(), 16384) + HUGE_LEAF, tlscert.TooLargeError),
        (b"\x16\x03\x03\xff\xff\x02" + bytes(40), tlscert.MalformedError),  # a 64 KiB record
        (b"\x16\x03\x03\x00\x30\x02\xff\xff\xff" + bytes(44), tlscert.MalformedError),  # 16 MB
        (b"\x16\x03\x03\x00\x04\x0b\x00\x00\x00", tlscert.MalformedError),  # not a ServerHello
        (_records(_server_hello() + _server_hello(), 16384), tlscert.MalformedError),
        (b"\x16\x07\x03\x00\x04\x02\x00\x00\x00", tlscert.MalformedError),  # not TLS
        (_records(_server_hello() + _certificate_message(b""), 16384), tlscert.MalformedError),
    ],
)  # fmt: skip
def test_lengths_that_lie_raise_malformed(flight: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        tlscert.read_server_flight(flight)


def test_a_huge_leaf_length_in_a_capture_is_counted() -> None:
    announce = b"\x0b\x01\x00\x06\x01\x00\x03\x01\x00\x00"  # Certificate of 64 KiB + a bit
    flight = _records(_server_hello(), 16384) + b"\x16\x03\x03\x40\x00" + announce
    r = _read(
        _capture(
            [(0, flight + bytes(1200)), *((i, bytes(1400)) for i in range(1300, 80_000, 1400))]
        )
    )
    assert r.warnings == {"tls-certificate-too-large": 1}
    assert r.flows[F.CERT_SHA256].isna().all()


def test_a_truncated_flight_in_a_capture_is_incomplete_not_an_error() -> None:
    flight = _records(
        _server_hello() + _certificate_message(_der(COMMON_NAME="cut.example")), 16384
    )
    for n in (6, 9, 60, len(flight) // 2, len(flight) - 1):
        r = _read(_capture([(0, flight[:n])]))
        assert not r.warnings and r.flows[F.CERT_SHA256].isna().all(), n


def test_random_damage_raises_only_malformed() -> None:
    """Byte flips, cuts and insertions in a real flight and in real certificates."""
    rng = random.Random(7)
    flight = _real_flight()
    leaf = _leaf_of(flight)
    for _ in range(3000):
        b = bytearray(flight[: rng.randint(0, len(flight))])
        for _ in range(rng.randint(1, 6)):
            if b:
                b[rng.randrange(len(b))] = rng.randrange(256)
        try:
            got = tlscert.read_server_flight(bytes(b))
        except tlscert.MalformedError:
            continue
        assert got.leaf is None or len(got.leaf) <= tlscert.MAX_FLIGHT
    for _ in range(1500):
        d = bytearray(leaf)
        for _ in range(rng.randint(1, 4)):
            d[rng.randrange(len(d))] = rng.randrange(256)
        info = tlscert.certificate_info(bytes(d[: rng.randint(len(d) // 2, len(d))]))
        assert len(info.sha256) == 64


def test_hostile_text_is_escaped_and_capped() -> None:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Evil\x00\x1b[31m Corp" + "x" * 400),
            x509.NameAttribute(NameOID.COMMON_NAME, "a;b.example"),
        ]
    )
    sans = [f"n{i}.example" for i in range(1200)] + ["c;d.example"]
    cert, _ = self_signed(name, sans=sans[::-1], valid_from=_2026, days=365, serial=2)
    info = tlscert.certificate_info(cert.public_bytes(Encoding.DER))
    assert info.subject_o is not None and info.subject_o.startswith("Evil\\x00\\x1b[31m Corp")
    assert len(info.subject_o) == tlscert.MAX_TEXT and info.subject_o.endswith("…")
    assert info.truncated and len(info.dns_names) == tlscert.MAX_NAMES
    assert info.dns_names[0] == "c;d.example"
    fields = dict(zip(F.CERT_COLUMNS, tlscert.flow_fields(info), strict=True))
    assert fields[F.CERT_NAMES].startswith("c\\059d.example;n1199.example;")  # type: ignore[union-attr]
    assert fields[F.CERT_CN] == "a;b.example"  # one value: nothing to split


def test_the_recorder_and_the_packets_give_one_record_for_one_certificate() -> None:
    from mitmproxy import certs, connection

    from auditor.proxy import mitmconv

    leaf = _leaf_of(_real_flight())
    server = connection.Server(address=("hs001244.hs.com", 443))
    server.certificate_list = [certs.Cert(x509.load_der_x509_certificate(leaf))]
    server.timestamp_tls_setup = 1_767_225_600.0
    (recorded,) = mitmconv.tls_server_record(server).certificates
    assert recorded == tlscert.certificate_info(leaf)
    assert recorded.issuer_o == recorded.subject_o == "Hubspan, Inc."
