"""auditor.packets against tshark (Wireshark) on every real capture and on a generated one.

For each capture: the set of TLS SNI (ClientHellos over TCP), of QUIC SNI (tshark decrypts
QUIC Initials), of DNS query names, of HTTP Host headers, the number of frames, and every TCP
and UDP conversation with its frames in each direction must be exactly what tshark reports.

Known, narrow differences (asserted as such, not tolerated in general):
- auditor ends a UDP flow after 120 s of silence and starts another; tshark keeps one
  conversation. Flows are compared per 5-tuple, summing auditor's.
- tshark's ``tls.handshake.type == 1`` also matches ClientHellos inside QUIC; TLS is compared
  with ``&& tcp`` and QUIC with the brief's ``-Y quic`` command, joined with the SNI of
  Google QUIC hellos (``gquic.tag.sni``), which auditor gives in the same column.

tshark runs with ``tcp.reassemble_out_of_order`` on (its default is off): auditor puts a
ClientHello's segments in order by sequence number, and so does tshark when asked.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from auditor.packets import flows as F
from auditor.packets import read_capture
from tests.packets.helpers import SHARED_CAPTURES

TSHARK = shutil.which("tshark") or ("/usr/bin/tshark" if Path("/usr/bin/tshark").exists() else None)
pytestmark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")

FlowKey = tuple[str, frozenset[tuple[str, int]]]


def _tshark(path: Path, *args: str) -> str:
    assert TSHARK is not None
    out = subprocess.run(
        [TSHARK, "-n", "-o", "tcp.reassemble_out_of_order:TRUE", "-r", str(path), *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def _values(out: str) -> set[str]:
    return {v for line in out.splitlines() for v in line.split(",") if v}


_CONV = re.compile(
    r"^(\S+):(\d+)\s+<->\s+(\S+):(\d+)\s+(\d+)\s+[\d.]+\s+(?:bytes|kB|MB|GB)\s+(\d+)\s"
)


def _conversations(out: str) -> dict[FlowKey, Counter[tuple[str, int]]]:
    """tshark -z conv: per conversation, frames sent by each endpoint."""
    found: dict[FlowKey, Counter[tuple[str, int]]] = {}
    proto = ""
    for line in out.splitlines():
        if line.startswith(("TCP Conversations", "UDP Conversations")):
            proto = line[:3].lower()
        m = _CONV.match(line)
        if m:
            a, pa, b, pb, b_to_a, a_to_b = m.groups()
            ea, eb = (a, int(pa)), (b, int(pb))
            key = (proto, frozenset((ea, eb)))
            assert key not in found, f"tshark lists {key} twice"
            found[key] = +Counter({ea: int(a_to_b), eb: int(b_to_a)})
    return found


def tshark_view(path: Path) -> dict[str, object]:
    jobs = {
        "tls": ("-Y", "tls.handshake.type == 1 && tcp", "-T", "fields",
                "-e", "tls.handshake.extensions_server_name"),
        "quic": ("-Y", "quic", "-T", "fields", "-e", "tls.handshake.extensions_server_name"),
        "gquic": ("-Y", "gquic.tag.sni", "-T", "fields", "-e", "gquic.tag.sni"),
        "dns": ("-Y", "dns.flags.response == 0", "-T", "fields", "-e", "dns.qry.name"),
        "frames": ("-T", "fields", "-e", "http.request", "-e", "http.host"),
        "conv": ("-q", "-z", "conv,tcp", "-z", "conv,udp"),
    }  # fmt: skip
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        outs = dict(zip(jobs, pool.map(lambda a: _tshark(path, *a), jobs.values()), strict=True))
    frames = outs["frames"].splitlines()
    return {
        "tls": _values(outs["tls"]),
        "quic": _values(outs["quic"]) | _values(outs["gquic"]),  # auditor: one column
        "dns": _values(outs["dns"]),
        "http": {line.split("\t")[1] for line in frames if line.startswith("1\t") and "\t" in line}
        - {""},
        "frames": len(frames),
        "conv": _conversations(outs["conv"]),
    }


def auditor_view(path: Path) -> dict[str, object]:
    r = read_capture(path)
    fl = r.flows

    def split(col: str) -> set[str]:
        return {v for x in fl[col].dropna() for v in x.split(";")}

    conv: dict[FlowKey, Counter[tuple[str, int]]] = {}
    for row in fl[fl[F.PROTO].isin(["tcp", "udp"])].itertuples(index=False):
        c = (getattr(row, F.CLIENT_IP), getattr(row, F.CLIENT_PORT))
        s = (getattr(row, F.SERVER_IP), getattr(row, F.SERVER_PORT))
        counts = conv.setdefault((getattr(row, F.PROTO), frozenset((c, s))), Counter())
        counts[c] += getattr(row, F.PACKETS_UP)
        counts[s] += getattr(row, F.PACKETS_DOWN)
    return {
        "tls": split(F.SNI),
        "quic": split(F.QUIC_SNI),
        "dns": set(r.dns.loc[~r.dns[F.RESPONSE].astype(bool), F.QNAME]),
        "http": split(F.HTTP_HOST),
        "frames": r.counts["packets"],
        "conv": {k: +v for k, v in conv.items()},
    }


def _compare(path: Path) -> dict[str, object]:
    theirs, ours = tshark_view(path), auditor_view(path)
    for key in ("tls", "quic", "dns", "http", "frames"):
        assert ours[key] == theirs[key], (path.name, key, ours[key], theirs[key])
    conv_ours = ours["conv"]
    conv_theirs = theirs["conv"]
    assert isinstance(conv_ours, dict) and isinstance(conv_theirs, dict)
    assert set(conv_ours) == set(conv_theirs), (
        path.name,
        set(conv_ours) ^ set(conv_theirs),
    )
    for key, counts in conv_theirs.items():
        assert conv_ours[key] == counts, (path.name, key, conv_ours[key], counts)
    return ours


REAL = sorted(SHARED_CAPTURES.glob("*.pcap")) if SHARED_CAPTURES.is_dir() else []


@pytest.mark.parametrize("path", REAL, ids=[p.name for p in REAL])
def test_real_capture_matches_tshark(path: Path) -> None:
    ours = _compare(path)
    assert ours["frames"]


def test_the_real_captures_are_all_there(shared_captures: Path) -> None:
    assert len(REAL) == len(list(shared_captures.glob("*.pcap"))) >= 8


def test_real_captures_carry_names(shared_captures: Path) -> None:
    """The comparison above is only worth something if there were names to find."""
    found = {p.name: auditor_view(p) for p in REAL}
    assert found["quicmitm_capture.pcap"]["quic"] == {"acs.m.alibaba.com"}
    # the YouTube app's Google QUIC (gQUIC) hellos
    assert found["apksherlock_dynamic_capture.pcap"]["quic"] == {
        "www.youtube.com",
        "youtubei.googleapis.com",
    }
    assert "www.google.com" in found["apksherlock_capture.pcap"]["tls"]  # type: ignore[operator]
    assert found["pcapdroid_http_proxy.pcap"]["http"] == {"weberblog.net:443"}


def test_generated_scenario_matches_tshark(tmp_path: Path) -> None:
    from tests.packets.test_flows import scenario, write

    path = tmp_path / "scenario.pcap"
    path.write_bytes(write(scenario(), 1, "pcap-le-ns"))
    theirs, ours = tshark_view(path), auditor_view(path)
    for key in ("tls", "quic", "dns", "http", "frames"):
        assert ours[key] == theirs[key], (key, ours[key], theirs[key])
    assert ours["tls"] == {"api.example.com"}  # the split, reordered ClientHello
    assert ours["quic"] == {"quic.example", "v2.example"}  # v1 over two Initials, and v2
    assert ours["http"] == {"Web.Example:80"}
    assert set(ours["conv"]) == set(theirs["conv"])  # type: ignore[arg-type]
    assert ours["conv"] == theirs["conv"]  # the NTP flow split by the idle timeout, summed
