"""auditor.packets.gquic on real gQUIC captures (nDPI's test set), checked against tshark.

For every UDP datagram of every capture in tests/data/gquic, the server name, the UAID tag,
the TLS google_user_agent parameter, the header's version and the connection id that
:func:`parse_gquic` returns must be what tshark's gQUIC/QUIC dissectors show for that frame
(tshark decrypts the Q050/T05x Initials itself). Then hostile input: every capture's hellos cut
short at many lengths, bytes flipped, random bytes, absurd tag counts.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import UDP
from scapy.utils import rdpcap

from auditor.packets import gquic
from auditor.packets.gquic import MAX_TAGS, GquicHello, looks_like_gquic, parse_gquic
from auditor.packets.quic import open_initial

DATA = Path(__file__).resolve().parents[1] / "data" / "gquic"
TSHARK = shutil.which("tshark")
MERGECAP = shutil.which("mergecap")
FEW = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
FAST = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)

GQUIC_FILES = sorted(p.name for p in DATA.glob("ndpi_*") if "ietf" not in p.name)
IETF_FILES = sorted(p.name for p in DATA.glob("ndpi_ietf_*"))


@dataclass(frozen=True)
class Datagram:
    frame: int
    sport: int
    payload: bytes


def _datagrams(name: str) -> list[Datagram]:
    out = []
    for i, pkt in enumerate(rdpcap(str(DATA / name)), 1):
        if UDP in pkt:
            udp = pkt[UDP]
            # The UDP length, not scapy's payload: some frames carry an Ethernet trailer.
            out.append(Datagram(i, int(udp.sport), bytes(udp.payload)[: int(udp.len) - 8]))
    return out


@pytest.fixture(scope="module")
def captures() -> dict[str, list[Datagram]]:
    return {name: _datagrams(name) for name in GQUIC_FILES + IETF_FILES}


@pytest.fixture(scope="module")
def parsed(captures: dict[str, list[Datagram]]) -> dict[str, dict[int, GquicHello]]:
    out: dict[str, dict[int, GquicHello]] = {}
    for name, datagrams in captures.items():
        found = {}
        for d in datagrams:
            hello = parse_gquic(d.payload)
            if hello is not None:
                found[d.frame] = hello
        out[name] = found
    return out


# -------------------------------------------------------------------------------- tshark

_FIELDS = (
    "frame.number",
    "gquic.tag.sni",
    "gquic.tag.uaid",
    "tls.handshake.extensions_server_name",
    "tls.quic.parameter.google.user_agent",
    "gquic.version",
    "quic.version",
    "gquic.cid",
    "quic.dcid",
)


@pytest.fixture(scope="module")
def tshark_rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[int, dict[str, str]]]:
    """tshark's fields for every frame of every capture, from one run over the captures
    joined end to end (tshark's start-up is most of its time)."""
    if TSHARK is None or MERGECAP is None:
        pytest.skip("tshark or mergecap is not installed")
    names = GQUIC_FILES + IETF_FILES
    joined = tmp_path_factory.mktemp("gquic") / "all.pcapng"
    subprocess.run(
        [MERGECAP, "-a", "-w", str(joined), *(str(DATA / n) for n in names)],
        check=True,
        capture_output=True,
    )
    args = [TSHARK, "-n", "-r", str(joined), "-T", "fields", "-E", "occurrence=f"]
    for f in _FIELDS:
        args += ["-e", f]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    rows: dict[str, dict[int, dict[str, str]]] = {}
    start = 0
    for name in names:
        count = len(rdpcap(str(DATA / name)))
        rows[name] = {}
        for line in lines[start : start + count]:
            cols = line.split("\t")
            rows[name][int(cols[0]) - start] = dict(zip(_FIELDS[1:], cols[1:], strict=True))
        start += count
    assert start == len(lines)
    return rows


def _version_text(row: dict[str, str]) -> str | None:
    if row["gquic.version"]:
        return row["gquic.version"]
    if row["quic.version"]:
        return int(row["quic.version"], 16).to_bytes(4, "big").decode("ascii")
    return None


@pytest.mark.parametrize("name", GQUIC_FILES)
def test_every_gquic_datagram_matches_tshark(
    name: str,
    parsed: dict[str, dict[int, GquicHello]],
    tshark_rows: dict[str, dict[int, dict[str, str]]],
) -> None:
    rows = tshark_rows[name]
    mine = parsed[name]
    hellos = 0
    for frame, row in rows.items():
        hello = mine.get(frame)
        want_sni = row["gquic.tag.sni"] or row["tls.handshake.extensions_server_name"] or None
        want = (
            want_sni,
            row["gquic.tag.uaid"] or None,
            row["tls.quic.parameter.google.user_agent"] or None,
        )
        got = (hello.sni, hello.uaid, hello.user_agent) if hello else (None, None, None)
        assert got == want, f"{name} frame {frame}"
        if hello is None:
            continue
        hellos += 1
        assert hello.version == _version_text(row), f"{name} frame {frame}"
        if row["quic.dcid"]:
            assert hello.connection_id.hex() == row["quic.dcid"].replace(":", "")
        else:
            assert row["gquic.cid"], f"{name} frame {frame}: tshark sees no gQUIC header"
            # tshark reads the 8-byte CID in the version's byte order: network order since Q039
            order = "little" if hello.ver and hello.ver < "Q039" else "big"
            assert int.from_bytes(hello.connection_id, order) == int(row["gquic.cid"])
    assert hellos > 0, f"{name}: no client hello found"


@pytest.mark.parametrize("name", IETF_FILES)
def test_ietf_quic_is_left_alone(
    name: str,
    parsed: dict[str, dict[int, GquicHello]],
    tshark_rows: dict[str, dict[int, dict[str, str]]],
) -> None:
    """IETF QUIC (draft-29, v1, v2 with a greased fixed bit) is names.py's: tshark finds its
    ClientHellos, parse_gquic finds nothing."""
    rows = tshark_rows[name]
    assert any(r["tls.handshake.extensions_server_name"] for r in rows.values())
    assert not any(r["gquic.version"] for r in rows.values())
    assert parsed[name] == {}


# ------------------------------------------------------------ what the captures contain

# Per capture, what tshark shows (its 4.0 output, read once by hand): these pin the figures
# of the report even where tshark is not installed.
EXPECTED = {
    "ndpi_gquic_q050.pcap": {1: ("Q050", "www.gstatic.com")},
    "ndpi_quic_q43.pcap": {1: ("Q043", "dns.google.com")},
    "ndpi_quic_q46.pcap": {1: ("Q046", "play.google.com")},
    "ndpi_quic_q46_b.pcap": {1: ("Q046", "upload.youtube.com")},
    "ndpi_quic_q50.pcap": {
        1: ("Q050", "www.googletagmanager.com"),
        6: ("Q050", "www.googletagmanager.com"),
    },
    "ndpi_quic_t50.pcap": {1: ("T050", "fonts.googleapis.com")},
    "ndpi_quic_t51.pcap": {1: ("T051", "www.google.com")},
    "ndpi_quic_q39.pcap": {1: ("Q039", "s.youtube.com")},
    "ndpi_quic046_cut.pcap": {1: ("Q046", "i.ytimg.com"), 11: ("Q046", "i.ytimg.com")},
    "ndpi_youtube_quic_q035_cut.pcap": {
        1: ("Q035", "pagead2.googlesyndication.com"),
        11: ("Q035", "yt3.ggpht.com"),
        14: (None, "yt3.ggpht.com"),
    },
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hellos_with_a_name(name: str, parsed: dict[str, dict[int, GquicHello]]) -> None:
    got = {f: (h.version, h.sni) for f, h in parsed[name].items() if h.sni}
    assert got == EXPECTED[name]


def test_old_versions_and_hellos_without_a_name(
    parsed: dict[str, dict[int, GquicHello]],
) -> None:
    found = parsed["ndpi_quic_q024_q033_cut.pcap"]
    versions = {h.version or h.ver for h in found.values()}
    assert versions == {"Q024", "Q025", "Q030", "Q033"}
    # Q033 hellos to an address (no SNI); tshark shows these CHLOs without a name too.
    assert sum(1 for h in found.values() if h.ver == "Q033" and h.sni is None) == 5
    # After a REJ, the second CHLO rides in a packet without a version (little-endian Q025).
    assert any(h.version is None and h.sni == "www.youtube.com" for h in found.values())


def test_fields_of_a_full_chlo(parsed: dict[str, dict[int, GquicHello]]) -> None:
    q43 = parsed["ndpi_quic_q43.pcap"][1]
    assert (q43.ver, q43.aead, q43.kexs, q43.complete, q43.tls) == (
        "Q043",
        ("AESG",),
        ("C255",),
        True,
        False,
    )
    assert q43.connection_id.hex() == "e83c77bd8f8915f9"
    t50 = parsed["ndpi_quic_t50.pcap"][1]
    assert (t50.tls, t50.alpn, t50.ver) == (True, ("h3-T050",), "T050")
    assert t50.uaid == t50.user_agent == "Chrome/85.0.4183.83 Windows NT 6.1; Win64; x64"


def test_null_encryption_hash(captures: dict[str, list[Datagram]]) -> None:
    """The FNV-1a-128 hash of every null-encrypted hello checks; one flipped padding byte
    breaks it but the name is still read (and reported as unchecked)."""
    for name in ("ndpi_quic_q43.pcap", "ndpi_quic_q46_b.pcap", "ndpi_quic_q39.pcap"):
        payload = captures[name][0].payload
        hello = parse_gquic(payload)
        assert hello is not None and hello.checksum_ok
        bad = parse_gquic(payload[:-1] + bytes([payload[-1] ^ 0x01]))
        assert bad is not None and not bad.checksum_ok and bad.sni == hello.sni


def test_aead_protects_q050(captures: dict[str, list[Datagram]]) -> None:
    payload = captures["ndpi_quic_q50.pcap"][0].payload
    assert parse_gquic(payload[:-1] + bytes([payload[-1] ^ 0x01])) is None


def test_server_datagrams_give_nothing(
    captures: dict[str, list[Datagram]], parsed: dict[str, dict[int, GquicHello]]
) -> None:
    for name, datagrams in captures.items():
        for d in datagrams:
            if d.sport == 443:
                assert d.frame not in parsed[name], f"{name} frame {d.frame}"


# ----------------------------------------------------------------------------- hostile


def _hello_payloads(captures: dict[str, list[Datagram]]) -> list[bytes]:
    picks = [
        ("ndpi_quic_q43.pcap", 1),
        ("ndpi_quic_q46.pcap", 1),
        ("ndpi_quic_q50.pcap", 1),
        ("ndpi_quic_t51.pcap", 1),
        ("ndpi_youtube_quic_q035_cut.pcap", 14),
        ("ndpi_quic_q024_q033_cut.pcap", 1),
    ]
    frames = {name: {d.frame: d.payload for d in captures[name]} for name, _ in picks}
    return [frames[name][frame] for name, frame in picks]


def test_cut_short_anywhere(captures: dict[str, list[Datagram]]) -> None:
    for payload in _hello_payloads(captures):
        for n in [*range(0, 80), *range(80, len(payload), 37)]:
            hello = parse_gquic(payload[:n])
            assert hello is None or isinstance(hello, GquicHello)


def test_cut_chlo_keeps_what_it_read(captures: dict[str, list[Datagram]]) -> None:
    """A Q043 CHLO cut in its values: the tags before the cut are given, marked partial."""
    payload = captures["ndpi_quic_q43.pcap"][0].payload
    full = parse_gquic(payload)
    assert full is not None and full.sni
    cut = payload[: payload.index(full.sni.encode()) + len(full.sni)]
    hello = parse_gquic(cut)
    assert hello is not None and hello.sni == full.sni and not hello.complete
    hello = parse_gquic(cut[:-1])
    assert hello is not None and hello.sni is None and not hello.complete


def test_bytes_flipped(captures: dict[str, list[Datagram]]) -> None:
    for payload in _hello_payloads(captures):
        for i in range(0, min(len(payload), 400), 4):
            for mask in (0x01, 0xFF):
                changed = bytearray(payload)
                changed[i] ^= mask
                hello = parse_gquic(bytes(changed))
                assert hello is None or isinstance(hello, GquicHello)


def _chlo_at(payload: bytes) -> int:
    return payload.index(b"CHLO")


def test_huge_tag_count(captures: dict[str, list[Datagram]]) -> None:
    payload = bytearray(captures["ndpi_quic_q43.pcap"][0].payload)
    at = _chlo_at(bytes(payload))
    struct.pack_into("<H", payload, at + 4, 0xFFFF)
    hello = parse_gquic(bytes(payload))
    assert hello is not None and hello.sni is None and not hello.complete
    assert hello.problem is not None and str(MAX_TAGS) in hello.problem


def test_end_offsets_going_backwards(captures: dict[str, list[Datagram]]) -> None:
    payload = bytearray(captures["ndpi_quic_q43.pcap"][0].payload)
    at = _chlo_at(bytes(payload))
    second_end = struct.unpack_from("<I", payload, at + 8 + 8 + 4)[0]
    struct.pack_into("<I", payload, at + 8 + 4, second_end + 1)  # first tag ends after it
    hello = parse_gquic(bytes(payload))
    assert hello is not None and not hello.complete and hello.problem


@FAST
@given(st.binary(max_size=1500))
def test_random_bytes(data: bytes) -> None:
    hello = parse_gquic(data)
    assert hello is None or isinstance(hello, GquicHello)


@FAST
@given(
    st.sampled_from([b"\x09", b"\x0d", b"\x0c", b"\x19", b"\xc3", b"\xc0", b"\xc1"]),
    st.sampled_from([b"Q043", b"Q046", b"Q050", b"T050", b"T051", b"Q025"]),
    st.binary(max_size=1400),
)
def test_random_bytes_behind_gquic_headers(first: bytes, label: bytes, rest: bytes) -> None:
    data = first + rest[:8] + label + rest[8:] if first[0] < 0x80 else first + label + rest
    long_ok = first[0] < 0x80 or label in (b"Q046", b"Q050", b"T050", b"T051")
    assert looks_like_gquic(data) == (len(data) >= 14 and long_ok)
    hello = parse_gquic(data)
    assert hello is None or isinstance(hello, GquicHello)


@FEW
@given(st.integers(0, 1349), st.binary(min_size=1, max_size=64))
def test_real_hello_with_garbage_spliced_in(at: int, garbage: bytes) -> None:
    payload = _Q43_PAYLOAD
    data = payload[:at] + garbage + payload[at + len(garbage) :]
    hello = parse_gquic(data)
    assert hello is None or isinstance(hello, GquicHello)


_Q43_PAYLOAD = _datagrams("ndpi_quic_q43.pcap")[0].payload if DATA.exists() else b""


def _plaintexts() -> dict[bytes, bytes]:
    """The decrypted payloads of the Q050, T050 and T051 Initials: what follows the AEAD, which
    a flipped byte of the datagram never reaches."""
    out = {}
    for name, label in (
        ("ndpi_quic_q50.pcap", b"Q050"),
        ("ndpi_quic_t50.pcap", b"T050"),
        ("ndpi_quic_t51.pcap", b"T051"),
    ):
        datagram = _datagrams(name)[0].payload
        header = gquic._long_header(datagram, 0)
        assert header is not None
        out[label] = open_initial(datagram, header, gquic._protection(header.dcid, label)).payload
    return out


_PLAINTEXTS = _plaintexts() if DATA.exists() else {}


def test_plaintexts_read_back() -> None:
    for label, payload in _PLAINTEXTS.items():
        chunks = gquic._frames(payload, 0, endian="big", pn_len=0, ietf=True, old=False)
        assert chunks and chunks[0][0] == 0, label


@FEW
@given(
    st.sampled_from([b"Q050", b"T050", b"T051"]),
    st.lists(st.tuples(st.integers(0, 699), st.integers(0, 255)), min_size=1, max_size=6),
    st.integers(0, 1400),
)
def test_decrypted_hello_with_bytes_changed(
    label: bytes, changes: list[tuple[int, int]], keep: int
) -> None:
    payload = bytearray(_PLAINTEXTS[label])
    for at, value in changes:
        payload[at % len(payload)] = value
    chunks = gquic._frames(bytes(payload[:keep]), 0, endian="big", pn_len=0, ietf=True, old=False)
    if label == b"Q050":
        gquic._quic_crypto_hello(chunks)
    else:
        hello = gquic._tls_hello(label, b"\x00" * 8, chunks)
        assert hello is None or hello.tls


# ------------------------------------------------------------ in the capture reader


def _reader_sni(name: str) -> set[str]:
    from auditor.packets import flows as F
    from auditor.packets import read_capture

    fl = read_capture(DATA / name).flows
    return {v for x in fl[F.QUIC_SNI].dropna() for v in str(x).split(";") if v}


@pytest.mark.parametrize("name", GQUIC_FILES + IETF_FILES)
def test_the_capture_reader_names_every_quic_connection_tshark_names(
    name: str, tshark_rows: dict[str, dict[int, dict[str, str]]]
) -> None:
    """``read_capture`` gives gQUIC hellos' SNI (and that of IETF drafts, such as the
    draft-28 Initial of ndpi_ietf_quic_0rtt) in the flow's QUIC name column, as tshark
    shows them (``gquic.tag.sni``, or the TLS SNI of a T05x or IETF ClientHello)."""
    theirs = {
        v
        for r in tshark_rows[name].values()
        for v in (r["gquic.tag.sni"], r["tls.handshake.extensions_server_name"])
        if v
    }
    assert theirs
    assert _reader_sni(name) == theirs
