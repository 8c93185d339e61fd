"""Tables written to disk as a read builds them (``auditor/packets/spill.py`` and
``read_capture(spill=True)``): on real captures (``tests/data``, ``../shared/captures``),
cut into pieces of a few rows so that every piece boundary is crossed, the tables read back
are the ones built in memory, dtypes and categories included."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from auditor.packets import flows as F
from auditor.packets.pcapfile import PcapError
from auditor.packets.spill import SPILL_DIR_ENV, FrameSpill
from tests.conftest import SHARED_CAPTURES
from tests.packets.helpers import (
    client_hello_body,
    dns_name,
    dns_query,
    dns_response,
    ether,
    ip4,
    ipv4,
    pcap,
    rr,
    same_read,
    tcp,
    tls_records,
    udp,
)

DATA = Path(__file__).resolve().parents[1] / "data"


def _real_captures() -> list[Path]:
    files = sorted(p for p in DATA.rglob("*") if p.suffix in (".pcap", ".pcapng", ".zst", ".gz"))
    if SHARED_CAPTURES.is_dir():
        files += sorted(SHARED_CAPTURES.glob("*.pcap*"))
    return files


# the captures with the most flows and DNS rows, and a few without any, at most a dozen: a
# table cut into pieces of 3 rows crosses a boundary every few rows
def _chosen() -> list[Path]:
    out = []
    for p in _real_captures():
        try:
            r = F.read_capture(p, keep_packets=False, spill=False)
        except PcapError:
            continue
        out.append((len(r.flows) + len(r.dns), p))
    out.sort(key=lambda t: -t[0])
    picked = [p for _, p in out[:10]] + [p for n, p in out if n == 0][:2]
    return picked


CHOSEN = _chosen()


@pytest.mark.parametrize("path", CHOSEN, ids=lambda p: p.name)
def test_a_spilled_read_gives_the_tables_of_a_read_in_memory(
    path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(SPILL_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(F, "SPILL_ROWS", 3)
    memory = F.read_capture(path, keep_packets=False, spill=False)
    spilled = F.read_capture(path, keep_packets=False, spill=True)
    assert spilled.spilled and not memory.spilled
    assert not list(tmp_path.iterdir())  # the files have no name on disk
    assert spilled.counts["flows"] == len(memory.flows)
    assert isinstance(spilled.flow_table, FrameSpill)
    assert spilled.flow_table.rows == len(memory.flows)
    assert spilled.flow_table.pieces_written >= max(1, -(-len(memory.flows) // 3))
    same_read(memory, spilled)
    # piece by piece, a piece's worth at a time: in the order the flows finished, each piece
    # sorted by flow id, with every category a column could have
    pieces = list(spilled.flow_pieces())
    assert all(len(p) <= 3 and p[F.FLOW_ID].is_monotonic_increasing for p in pieces)
    if len(memory.flows):
        joined = pd.concat(pieces, ignore_index=True)
        for c in (F.PROTO, F.CLIENT_EVIDENCE, F.NAME_EVIDENCE):
            joined[c] = joined[c].cat.remove_unused_categories()
        joined = joined.sort_values(F.FLOW_ID, ignore_index=True)
        assert joined[F.FLOW_ID].tolist() == list(range(len(memory.flows)))
        pd.testing.assert_frame_equal(joined, memory.flows)
    dns_pieces = list(spilled.dns_pieces())
    if len(memory.dns):
        pd.testing.assert_frame_equal(pd.concat(dns_pieces, ignore_index=True), memory.dns)


def test_the_real_captures_are_there() -> None:
    """The test above must have tables to cut: a dozen captures, most with flows and DNS."""
    assert len(CHOSEN) >= 10
    reads = [F.read_capture(p, keep_packets=False, spill=False) for p in CHOSEN[:10]]
    assert all(len(r.flows) > 3 for r in reads)  # every piece boundary of 3 rows crossed
    assert sum(1 for r in reads if len(r.dns) > 3) >= 5


def test_a_large_file_is_spilled_by_default_and_a_small_one_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    small = CHOSEN[0]
    assert not F.read_capture(small, keep_packets=False).spilled
    monkeypatch.setattr(F, "SPILL_MIN_BYTES", 1)
    monkeypatch.setattr(F, "WORKER_MIN_BYTES", 1 << 62)  # the threshold of the spill alone
    r = F.read_capture(small, keep_packets=False)
    assert r.spilled
    same_read(F.read_capture(small, keep_packets=False, spill=False), r)


def test_the_name_worker_s_arrays_come_back_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's reply crosses as a pickle and one frame per array (out-of-band
    buffers): a read with the worker gives what a read without it gives."""
    path = CHOSEN[0]
    monkeypatch.setattr(F, "SPILL_ROWS", 4)
    with_worker = F.read_capture(path, keep_packets=False, workers=1, spill=True)
    without = F.read_capture(path, keep_packets=False, workers=0, spill=False)
    same_read(without, with_worker)
    assert len(with_worker.dns_tables.answers) == len(without.dns_tables.answers) > 0


# ---------------------------------------------------------------------------- FrameSpill


def _frame(n: int, cats: pd.CategoricalDtype) -> pd.DataFrame:
    rng = np.random.default_rng(n)
    text = np.array([f"host{i}.example" if i % 3 else None for i in range(n)], dtype=object)
    codes = rng.integers(-1, len(cats.categories), n)
    return pd.DataFrame(
        {
            "id": np.arange(n, dtype=np.int64),
            "small": rng.integers(0, 100, n).astype(np.int8),
            "ok": rng.integers(0, 2, n).astype(bool),
            "at": pd.to_datetime(rng.integers(0, 2**60, n), unit="ns", utc=True),
            "name": pd.Series(text, dtype="str"),
            "addr": pd.Categorical.from_codes(codes, dtype=cats),
        }
    )


def test_pieces_round_trip_with_missing_values_and_shared_categories(tmp_path: Path) -> None:
    cats = pd.CategoricalDtype(pd.Index(["10.0.0.1", "::1", "<b>x</b>"]))
    whole = _frame(1000, cats)
    spill = FrameSpill(str(tmp_path))
    for lo in range(0, 1000, 128):
        spill.append(whole.iloc[lo : lo + 128])
    spill.close()
    assert spill.rows == 1000 and spill.pieces_written == 8
    pd.testing.assert_frame_equal(spill.frame(), whole)
    sizes = [len(p) for p in spill.pieces()]
    assert sizes == [128] * 7 + [104]
    assert not list(tmp_path.iterdir())


def test_an_empty_table_round_trips(tmp_path: Path) -> None:
    cats = pd.CategoricalDtype(pd.Index([], dtype=object))
    empty = _frame(0, cats)
    spill = FrameSpill(str(tmp_path))
    spill.append(empty)
    pd.testing.assert_frame_equal(spill.close().frame(), empty)


def test_a_piece_that_does_not_match_the_first_is_refused(tmp_path: Path) -> None:
    cats = pd.CategoricalDtype(pd.Index(["a", "b"]))
    spill = FrameSpill(str(tmp_path))
    spill.append(_frame(10, cats))
    with pytest.raises(ValueError, match="categories"):
        spill.append(_frame(10, pd.CategoricalDtype(pd.Index(["a", "c"]))))
    with pytest.raises(ValueError, match="other columns"):
        spill.append(_frame(10, cats).drop(columns=["ok"]))
    other = _frame(10, cats)
    other["small"] = other["small"].astype(np.int64)
    with pytest.raises(ValueError, match="small"):
        spill.append(other)
    with pytest.raises(TypeError, match="not written"):
        FrameSpill(str(tmp_path)).append(pd.DataFrame({"x": np.array([{"a": 1}], dtype=object)}))
    with pytest.raises(ValueError, match="no piece"):
        FrameSpill(str(tmp_path)).close()


def test_a_discarded_table_cannot_be_read_and_its_file_is_gone(tmp_path: Path) -> None:
    spill = FrameSpill(str(tmp_path))
    spill.append(_frame(5, pd.CategoricalDtype(pd.Index(["a"]))))
    fd_dir = Path("/proc/self/fd")
    before = {os.readlink(fd_dir / f) for f in os.listdir(fd_dir) if (fd_dir / f).exists()}
    # while it is written: an open file with no name in the folder, readable by its owner only
    assert not list(tmp_path.iterdir())
    mode = os.fstat(spill._fh.fileno()).st_mode  # type: ignore[union-attr]
    assert stat.S_IMODE(mode) & 0o077 == 0
    assert any("(deleted)" in t or str(tmp_path) in t for t in before)
    spill.close()
    spill.discard()
    with pytest.raises(ValueError, match="discarded"):
        spill.frame()
    with pytest.raises(ValueError, match="closed"):
        spill.append(_frame(5, pd.CategoricalDtype(pd.Index(["a"]))))


# ----------------------------------------------------------------- flows written out as they go

S = 1_000_000_000
T0 = 1_700_000_000 * S


def _epochs(epochs: int = 6, sessions: int = 25, gap: int = 2000 * S) -> bytes:
    """Sessions in bursts ``gap`` apart (past the UDP timeout and the slack, short of the TCP
    one): each a DNS lookup over UDP, then a TLS connection to the address it gave, with its
    SNI; a TCP connection alive in every burst (one flow), one that resumes after more than
    an hour (two flows), a UDP port pair reused in every burst (a flow each)."""
    frames: list[tuple[int, bytes]] = []
    for e in range(epochs):
        t = T0 + e * gap
        for i in range(sessions):
            client, server = f"10.{e}.{i // 200}.{i % 200 + 1}", f"192.0.2.{i % 40 + 1}"
            name = f"h{i % 30}.example"
            sport = 40000 + i
            t += S // 100
            frames.append(
                (t, ether(ipv4(client, "8.8.8.8", 17, udp(sport, 53, dns_query(i, name)))))
            )
            ans = dns_response(i, name, 1, [rr(dns_name(name), 1, ip4(server))])
            frames.append((t + 1000, ether(ipv4("8.8.8.8", client, 17, udp(53, sport, ans)))))
            hello = tls_records(client_hello_body(name, ["h2"]))
            for dt, src, dst, seg in (
                (2000, client, server, tcp(sport + 1, 443, flags=0x02)),
                (3000, server, client, tcp(443, sport + 1, flags=0x12)),
                (4000, client, server, tcp(sport + 1, 443, hello, flags=0x18)),
                (5000, server, client, tcp(443, sport + 1, b"\x17\x03\x03\x00\x01x")),
                (6000, client, server, tcp(sport + 1, 443, flags=0x11)),
            ):
                frames.append((t + dt, ether(ipv4(src, dst, 6, seg))))
        for src, dst, sp, dp in (
            ("10.9.9.9", "198.51.100.1", 5000, 5228),
            ("198.51.100.1", "10.9.9.9", 5228, 5000),
        ):
            frames.append((t + S, ether(ipv4(src, dst, 6, tcp(sp, dp, b"k")))))
        frames.append(
            (t + 2 * S, ether(ipv4("10.9.9.8", "198.51.100.2", 17, udp(7000, 7001, b"u"))))
        )
        if e in (0, 3):  # silent for 3 bursts (6,000 s, past the TCP timeout): two flows
            frames.append(
                (t + 3 * S, ether(ipv4("10.9.9.7", "198.51.100.3", 6, tcp(6000, 443, b"x"))))
            )
    return pcap(frames, 1, nano=True)


def _analyzed(
    data: bytes, *, expire: bool, compiled: bool | None = None, chunk: int = 8192
) -> tuple[F.CaptureAnalyzer, pd.DataFrame, pd.DataFrame]:
    import io

    from auditor.packets.decode import Decoder
    from auditor.packets.pcapfile import CaptureReader

    reader = CaptureReader(io.BytesIO(data), chunk_size=chunk)
    decoder = Decoder()
    analyzer = F.CaptureAnalyzer(keep_packets=False, expire=expire, compiled=compiled)
    for rb in reader:
        analyzer.feed(decoder.decode(rb))
    wrote = analyzer._finished is not None or bool(analyzer._pending)
    flows, dns = (
        FrameSpill(sort_by=F.FLOW_ID, prune=(F.PROTO, F.CLIENT_EVIDENCE, F.NAME_EVIDENCE)),
        FrameSpill(),
    )
    analyzer.finish_into(flows.append, dns.append, rows=F.SPILL_ROWS, apps=decoder.apps)
    analyzer.wrote_out = wrote  # type: ignore[attr-defined]
    return analyzer, flows.close().frame(), dns.close().frame()


def _recording(build: Any, into: list[pd.DataFrame]) -> Any:
    def recorded(*args: Any) -> pd.DataFrame:
        piece = build(*args)
        into.append(piece)
        return piece

    return recorded


@pytest.mark.skipif(F._flowtab is None, reason="the compiled flow table is not built")
@pytest.mark.parametrize("write_rows", [3, 4096])
def test_flows_written_out_as_they_finish_give_the_same_tables(
    monkeypatch: pytest.MonkeyPatch, write_rows: int
) -> None:
    data = _epochs()
    monkeypatch.setattr(F, "SPILL_ROWS", 16)
    monkeypatch.setattr(F, "_WRITE_ROWS", write_rows)
    pieces: list[pd.DataFrame] = []
    monkeypatch.setattr(F, "_flow_piece", _recording(F._flow_piece, pieces))
    out, flows, dns = _analyzed(data, expire=True)
    assert out.wrote_out  # type: ignore[attr-defined]
    # pieces of about 16 rows (two written out at most), each in id order
    assert len(pieces) >= len(flows) // 32
    assert all(0 < len(p) <= 32 and p[F.FLOW_ID].is_monotonic_increasing for p in pieces)
    assert sum(len(p) for p in pieces) == len(flows)
    _, flows_kept, dns_kept = _analyzed(data, expire=False)
    _, flows_numpy, dns_numpy = _analyzed(data, expire=False, compiled=False)
    for f in (flows_kept, flows_numpy):
        pd.testing.assert_frame_equal(f, flows)
    for d in (dns_kept, dns_numpy):
        pd.testing.assert_frame_equal(d, dns)
    # what the capture holds, as its comments say: names on every TLS flow, DNS on each
    tls = flows[flows[F.SERVER_PORT] == 443]
    assert len(tls) == 6 * 25 + 2
    named = tls[tls[F.SNI].notna()]
    assert len(named) == 6 * 25 and (named[F.NAME] == named[F.SNI]).all()
    assert (named[F.DNS_NAME] == named[F.SNI]).all()
    assert (named[F.CLIENT_EVIDENCE] == "tcp-syn").all()
    push = flows[flows[F.SERVER_PORT] == 5228]
    assert len(push) == 1 and push[F.PACKETS_UP].iloc[0] == 6
    assert len(flows[(flows[F.SERVER_PORT] == 443) & (flows[F.CLIENT_PORT] == 6000)]) == 2
    assert len(flows[flows[F.SERVER_PORT] == 7001]) == 6
    assert len(dns) == 2 * 6 * 25


@pytest.mark.skipif(F._flowtab is None, reason="the compiled flow table is not built")
def test_what_was_kept_to_parse_finished_flows_is_let_go() -> None:
    """Six bursts of 25 TLS sessions 2,000 s apart: as flows are given up (past TCP's hour
    and the slack), the collector lets go of which ClientHello it read and which flows'
    client side it knows; what stays is the last two bursts' (not all six), and the tables
    are those of a read that keeps every flow."""
    import io

    from auditor.packets.decode import Decoder
    from auditor.packets.pcapfile import CaptureReader

    data = _epochs()
    analyzer = F.CaptureAnalyzer(keep_packets=False, expire=True)
    decoder = Decoder()
    for rb in CaptureReader(io.BytesIO(data), chunk_size=8192):
        analyzer.feed(decoder.decode(rb))
    collector = analyzer._collector
    assert 0 < len(collector._tls_read) <= 2 * 25  # the last two bursts' ClientHellos
    assert 0 < len(collector._hinted) <= 2 * (25 + 3)
    assert len(collector._hint_rows[0]) >= 6 * 25  # what they told stays
    flows: list[pd.DataFrame] = []
    analyzer.finish_into(flows.append, lambda _: None)
    _, kept, _ = _analyzed(data, expire=False)
    got = pd.concat(flows).sort_values(F.FLOW_ID).reset_index(drop=True)
    for c in (F.SNI, F.NAME, F.CLIENT_EVIDENCE, F.CLIENT_IP):
        assert got[c].astype(object).tolist() == kept[c].astype(object).tolist(), c


@pytest.mark.skipif(F._flowtab is None, reason="the compiled flow table is not built")
@pytest.mark.parametrize("workers", [0, 1])
def test_a_clienthello_finished_by_a_late_packet_names_its_flow(workers: int) -> None:
    """A ClientHello cut after 40 bytes; its flow given up when time jumps two hours; the
    rest of it comes late (time goes back): the flow comes back with what was kept to parse
    it, in this process and in the name worker, and the tables are those of a read that
    keeps every flow (review finding: the waits for the rest were dropped, and the SNI was
    lost)."""
    import io

    hello = tls_records(client_hello_body("split.example", ["h2"]))
    c, srv = "10.0.0.1", "192.0.2.1"
    frames = [
        (T0, ether(ipv4(c, srv, 6, tcp(40000, 443, flags=0x02, seq=1000)))),
        (T0 + 1000, ether(ipv4(srv, c, 6, tcp(443, 40000, flags=0x12)))),
        (T0 + 2000, ether(ipv4(c, srv, 6, tcp(40000, 443, hello[:40], flags=0x18, seq=1001)))),
    ]
    filler = [udp(1000 + i % 50, 2000, b"x" * 100) for i in range(3000)]  # two hours later
    frames += [
        (T0 + 7200 * S + i * 1000, ether(ipv4("10.1.0.1", "10.2.0.1", 17, u)))
        for i, u in enumerate(filler)
    ]
    frames.append(
        (T0 + 3000, ether(ipv4(c, srv, 6, tcp(40000, 443, hello[40:], flags=0x18, seq=1041))))
    )
    data = pcap(frames, 1, nano=True)
    out, _, _ = _analyzed(data, expire=True)
    assert not out._expire  # the flows were given up, then brought back
    kept = F.read_capture(io.BytesIO(data), keep_packets=False, spill=False, workers=0)
    spilled = F.read_capture(
        io.BytesIO(data), keep_packets=False, spill=True, workers=workers, chunk_size=8192
    )
    same_read(kept, spilled)
    tls = spilled.flows[spilled.flows[F.SERVER_PORT] == 443]
    assert tls[F.SNI].tolist() == ["split.example"]
    assert not spilled.warnings


def test_what_a_collector_forgot_comes_back_when_recalled() -> None:
    from auditor.packets import names as N

    c = N.NameCollector()
    c._tls_read.update({1: 100, 2: 200})
    c._quic_done.add(3)
    c.flights_read.add(1)
    c._hinted.update({1, 4})
    before = (dict(c._tls_read), set(c._quic_done), set(c.flights_read), set(c._hinted))
    c.forget(np.array([1, 3, 4, 9], dtype=np.int64))
    assert c._tls_read == {2: 200} and not c._quic_done and not c.flights_read
    assert not c._hinted
    c.recall()
    assert (c._tls_read, c._quic_done, c.flights_read, c._hinted) == before
    c.recall()  # nothing more to put back
    assert (c._tls_read, c._quic_done, c.flights_read, c._hinted) == before


def test_a_forgotten_flow_s_clienthello_seen_again_names_it_once() -> None:
    """A retransmitted ClientHello of a flow forgotten (a file whose time goes back) is parsed
    as new: the flow keeps its one SNI and its first client side."""
    from auditor.packets import names as N

    hello = tls_records(client_hello_body("a.example", ["h2"]))

    def job(order: int, direction: int, forget: tuple[int, ...] = ()) -> N.NameJob:
        return N.NameJob(
            kind=np.array([N.KIND_TLS], dtype=np.int8),
            flow=np.array([7], dtype=np.int64),
            direction=np.array([direction], dtype=np.int8),
            seq=np.array([1000], dtype=np.int64),
            ts=np.array([order], dtype=np.int64),
            tcp=np.array([True]),
            order=np.array([order], dtype=np.int64),
            ends=np.array([len(hello)], dtype=np.int64),
            blob=hello,
            dns=np.array([-1], dtype=np.int64),
            forget=np.array(forget, dtype=np.int64),
        )

    c = N.NameCollector()
    c.feed(job(1, 0, forget=(7,)))
    assert 7 not in c._tls_read and 7 not in c._hinted
    c.feed(job(2, 1))  # the same ClientHello again, later, the other way
    r = c.result()
    flows, joined, first = r.names[N.NAME_SNI]
    assert flows.tolist() == [7] and joined.tolist() == ["a.example"]
    assert first.tolist() == ["a.example"]
    hf, ho, hs = r.hints
    assert hf.tolist() == [7] and ho.tolist() == [1] and hs.tolist() == [0]


@pytest.mark.skipif(F._flowtab is None, reason="the compiled flow table is not built")
@pytest.mark.parametrize("write_rows", [1, 4096])
def test_a_packet_too_late_for_flows_written_out_brings_them_back(
    monkeypatch: pytest.MonkeyPatch, write_rows: int
) -> None:
    """Found in review: a flow given up, then a packet of its key from earlier than the
    time it was given up at (a file whose time goes back). Each packet is a batch of its own
    (3 KB in chunks of 4 KiB); the flows given up come back, on disk (``write_rows`` 1) or
    not yet, and the late packet joins its flow as in a read that kept every flow."""
    monkeypatch.setattr(F, "_WRITE_ROWS", write_rows)
    pad = b"q" * 3000
    frames = [
        (T0, ether(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1000, 53, pad)))),
        (T0 + 10 * S, ether(ipv4("10.0.0.5", "10.0.0.6", 6, tcp(3000, 443, pad)))),
        (T0 + 2000 * S, ether(ipv4("10.0.0.3", "10.0.0.4", 17, udp(2000, 53, pad)))),
        (T0 + 60 * S, ether(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1000, 53, pad)))),  # late
        (T0 + 2100 * S, ether(ipv4("10.0.0.5", "10.0.0.6", 6, tcp(3000, 443, pad)))),
        (T0 + 9000 * S, ether(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1000, 53, pad)))),
    ]
    data = pcap(frames, 1, nano=True)
    given_up: list[int] = []
    expire = F.CaptureAnalyzer._expire_flows

    def counting(self: F.CaptureAnalyzer, pb: object) -> np.ndarray:
        before = self._pending_rows + (self._finished.rows if self._finished else 0)
        ids = expire(self, pb)  # type: ignore[arg-type]
        given_up.append(
            self._pending_rows + (self._finished.rows if self._finished else 0) - before
        )
        assert len(ids) == given_up[-1]  # the flows given up, to be forgotten
        return ids

    monkeypatch.setattr(F.CaptureAnalyzer, "_expire_flows", counting)
    out, flows, _ = _analyzed(data, expire=True, chunk=4096)
    assert sum(given_up) >= 1  # the first flow was given up before the late packet came
    assert not out._expire  # ... and none after it
    _, kept, _ = _analyzed(data, expire=False, chunk=4096)
    _, numpy_kept, _ = _analyzed(data, expire=False, compiled=False, chunk=4096)
    pd.testing.assert_frame_equal(kept, flows)
    pd.testing.assert_frame_equal(numpy_kept, flows)
    port = flows[flows[F.CLIENT_PORT] == 1000]
    assert port[F.PACKETS_UP].tolist() == [2, 1]  # the late packet joined the first flow
    assert flows[flows[F.SERVER_PORT] == 443][F.PACKETS_UP].tolist() == [2]


def test_the_worker_s_arrays_kept_in_files_give_the_same_tables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Each array of the name worker's reply written to an unnamed file and mapped (every
    one, whatever its size): the tables are those of a read without the worker, and nothing
    is left in the folder."""
    import mmap

    from auditor.packets import workerpipe

    monkeypatch.setattr(workerpipe, "FILE_BUFFER", 0)
    monkeypatch.setenv(SPILL_DIR_ENV, str(tmp_path))
    read = workerpipe.read_frame_into
    mapped: list[int] = []

    def counted(stream: object, file_from: int | None = None) -> object:
        out = read(stream, file_from)  # type: ignore[arg-type]
        if isinstance(out, mmap.mmap):
            mapped.append(len(out))
        return out

    monkeypatch.setattr(workerpipe, "read_frame_into", counted)
    path = CHOSEN[0]
    with_worker = F.read_capture(path, keep_packets=False, workers=1, spill=True)
    without = F.read_capture(path, keep_packets=False, workers=0, spill=False)
    same_read(without, with_worker)
    assert not list(tmp_path.iterdir())
    assert len(mapped) >= 4 and sum(mapped) >= with_worker.dns_tables.rows.nbytes > 0


@pytest.mark.skipif(F._flowtab is None, reason="the compiled flow table is not built")
def test_finish_gives_the_whole_table_when_flows_were_written_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found in review: ``finish()`` gave the first piece only when flows were written out."""
    import io

    from auditor.packets.decode import Decoder
    from auditor.packets.pcapfile import CaptureReader

    monkeypatch.setattr(F, "SPILL_ROWS", 16)
    monkeypatch.setattr(F, "_WRITE_ROWS", 3)
    data = _epochs()
    _, whole, dns_whole = _analyzed(data, expire=False)
    decoder = Decoder()
    analyzer = F.CaptureAnalyzer(keep_packets=False, expire=True)
    for rb in CaptureReader(io.BytesIO(data), chunk_size=8192):
        analyzer.feed(decoder.decode(rb))
    assert analyzer._finished is not None
    flows, dns, _ = analyzer.finish()
    flows[F.APP] = decode_apps(flows, decoder.apps)
    pd.testing.assert_frame_equal(flows, whole)
    pd.testing.assert_frame_equal(dns, dns_whole)


def decode_apps(flows: pd.DataFrame, apps: list[str]) -> pd.Categorical:
    from auditor.packets.decode import app_names

    return app_names(flows[F.APP].to_numpy(np.int32), apps)


@pytest.mark.skipif(F._flowtab is None, reason="the compiled flow table is not built")
def test_finish_with_flows_given_up_in_one_piece_has_the_categories_of_a_read_in_memory() -> None:
    """Found in the second review: with flows given up but the whole table one piece,
    ``finish()`` kept every category there could be."""
    import io

    from auditor.packets.decode import Decoder
    from auditor.packets.pcapfile import CaptureReader

    data = pcap(
        [
            (T0, ether(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1000, 53, b"q" * 3000)))),
            (T0 + 2000 * S, ether(ipv4("10.0.0.3", "10.0.0.4", 17, udp(2000, 53, b"q" * 3000)))),
        ],
        1,
        nano=True,
    )
    tables = []
    for expire in (True, False):
        analyzer = F.CaptureAnalyzer(keep_packets=False, expire=expire)
        for rb in CaptureReader(io.BytesIO(data), chunk_size=4096):
            analyzer.feed(Decoder().decode(rb))
        if expire:
            assert analyzer._pending  # the first flow was given up
        tables.append(analyzer.finish()[0])
    pd.testing.assert_frame_equal(tables[0], tables[1])
    assert list(tables[0][F.PROTO].cat.categories) == ["udp"]
