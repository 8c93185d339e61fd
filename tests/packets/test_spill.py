"""Tables written to disk as a read builds them (``auditor/packets/spill.py`` and
``read_capture(spill=True)``): on real captures (``tests/data``, ``../shared/captures``),
cut into pieces of a few rows so that every piece boundary is crossed, the tables read back
are the ones built in memory, dtypes and categories included."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from auditor.packets import flows as F
from auditor.packets.pcapfile import PcapError
from auditor.packets.spill import SPILL_DIR_ENV, FrameSpill
from tests.conftest import SHARED_CAPTURES

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


def _same(a: F.CaptureResult, b: F.CaptureResult) -> None:
    pd.testing.assert_frame_equal(a.flows, b.flows)
    pd.testing.assert_frame_equal(a.dns, b.dns)
    pd.testing.assert_frame_equal(a.dns_answers, b.dns_answers)
    assert a.names == b.names
    assert a.warnings == b.warnings and a.counts == b.counts


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
    assert spilled.flow_table.pieces_written == max(1, -(-len(memory.flows) // 3))
    _same(memory, spilled)
    # piece by piece, in row order, a piece's worth at a time
    pieces = list(spilled.flow_pieces())
    assert all(len(p) <= 3 for p in pieces)
    if len(memory.flows):
        joined = pd.concat(pieces, ignore_index=True)
        pd.testing.assert_frame_equal(joined, memory.flows)
        assert joined[F.FLOW_ID].tolist() == list(range(len(memory.flows)))
    dns_pieces = list(spilled.dns_pieces())
    if len(memory.dns):
        pd.testing.assert_frame_equal(pd.concat(dns_pieces, ignore_index=True), memory.dns)


def test_the_real_captures_are_there() -> None:
    """The test above must have tables to cut: a dozen captures, most with flows and DNS."""
    assert len(CHOSEN) >= 10
    assert sum(1 for p in CHOSEN[:10] if p.stat().st_size > 0) == 10


def test_a_large_file_is_spilled_by_default_and_a_small_one_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    small = CHOSEN[0]
    assert not F.read_capture(small, keep_packets=False).spilled
    monkeypatch.setattr(F, "SPILL_MIN_BYTES", 1)
    monkeypatch.setattr(F, "WORKER_MIN_BYTES", 1 << 62)  # the threshold of the spill alone
    r = F.read_capture(small, keep_packets=False)
    assert r.spilled
    _same(F.read_capture(small, keep_packets=False, spill=False), r)


def test_the_name_worker_s_arrays_come_back_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's reply crosses as a pickle and one frame per array (out-of-band
    buffers): a read with the worker gives what a read without it gives."""
    path = CHOSEN[0]
    monkeypatch.setattr(F, "SPILL_ROWS", 4)
    with_worker = F.read_capture(path, keep_packets=False, workers=1, spill=True)
    without = F.read_capture(path, keep_packets=False, workers=0, spill=False)
    _same(without, with_worker)
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
