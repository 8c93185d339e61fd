"""Tables a read writes to disk as it builds them, so that building them needs memory for
one piece at a time, not for the whole table (see ``docs/packets.md``, "Reading a capture").

A :class:`FrameSpill` takes pieces of one table (DataFrames with the same columns and
dtypes, in row order) and writes each as an Arrow IPC record batch to an unnamed temporary
file: it has no name on disk, only its owner may read it (``0600``), and it goes when the
last reference to it does, a crash included. :meth:`FrameSpill.frame` reads the table back
as one DataFrame with the dtypes it was given; :meth:`FrameSpill.pieces` gives it piece by
piece. The file is mapped, not read: its pages are the file's, which the kernel may drop
and read again, not this process's own memory.

Only the column types the packet tables use are written (numbers, booleans, UTC times,
pandas' Arrow strings and categoricals whose categories are the same in every piece: the
categories are kept in memory once, each piece carries only the codes); any other raises
``TypeError``.
"""

from __future__ import annotations

import mmap
import tempfile
from collections.abc import Collection, Iterator
from typing import IO, Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc

from auditor.packets.spilldir import SPILL_DIR_ENV, spill_dir

__all__ = ["SPILL_DIR_ENV", "FrameSpill", "spill_dir"]

_STR: Final = pd.StringDtype("pyarrow", na_value=np.nan)


class FrameSpill:
    """One table, written piece by piece (see the module's docstring)."""

    def __init__(
        self,
        folder: str | None = None,
        *,
        sort_by: str | None = None,
        prune: Collection[str] = (),
        mapped: bool = True,
    ) -> None:
        """``sort_by``: the column :meth:`frame` sorts the table by (pieces written in
        another order); ``prune``: categorical columns whose categories no row uses are
        dropped by :meth:`frame` (pieces may carry every category there could be);
        ``mapped``: False reads the file (a piece at a time) instead of mapping it, so that
        what was read is this process's memory only while it is in use."""
        self._sort_by = sort_by
        self._mapped = mapped
        self._prune = tuple(prune)
        self._fh: IO[bytes] | None = tempfile.TemporaryFile(dir=folder or spill_dir())
        self._writer: Any = None
        self._columns: list[str] = []
        self._dtypes: dict[str, Any] = {}
        self._map: mmap.mmap | None = None
        self._closed = False
        self._discarded = False
        self.rows = 0
        self.pieces_written = 0

    # ------------------------------------------------------------------------------ writing

    def append(self, frame: pd.DataFrame) -> None:
        """Write one piece (its columns and dtypes those of the first piece)."""
        if self._fh is None or self._closed:
            raise ValueError("this table is closed")
        if self._writer is None:
            self._columns = [str(c) for c in frame.columns]
            self._dtypes = {c: frame[c].dtype for c in self._columns}
        elif [str(c) for c in frame.columns] != self._columns:
            raise ValueError("a piece with other columns than the first")
        arrays = [self._arrow(c, frame[c]) for c in self._columns]
        batch = pa.RecordBatch.from_arrays(arrays, names=self._columns)
        if self._writer is None:
            self._writer = ipc.new_file(self._fh, batch.schema)
        self._writer.write_batch(batch)
        self.rows += len(frame)
        self.pieces_written += 1

    def _arrow(self, name: str, col: pd.Series) -> pa.Array:
        dtype, want = col.dtype, self._dtypes[name]
        if isinstance(want, pd.CategoricalDtype):
            if not isinstance(dtype, pd.CategoricalDtype) or (
                dtype is not want and not dtype.categories.equals(want.categories)
            ):
                raise ValueError(f"column {name}: other categories than in the first piece")
            return pa.array(np.asarray(col.cat.codes))
        if dtype != want:
            raise ValueError(f"column {name}: {dtype}, not {want} as in the first piece")
        if dtype == _STR:
            arr = col.array._pa_array  # a ChunkedArray of (large) strings: no copy
            return arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
        if isinstance(dtype, pd.DatetimeTZDtype):
            if dtype.unit != "ns" or str(dtype.tz) != "UTC":
                raise TypeError(f"column {name}: {dtype} is not written")
            return pa.array(col.array.asi8)
        if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
            return pa.array(col.to_numpy())
        raise TypeError(f"column {name}: {dtype} is not written")

    def close(self) -> FrameSpill:
        """Finish the file (a table with no piece is an error) and map it for reading."""
        if not self._closed:
            if self._writer is None or self._fh is None:
                raise ValueError("no piece was written")
            self._writer.close()
            self._writer = None
            self._fh.flush()
            if self._mapped:
                self._map = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ)
                self._fh.close()  # the map keeps the (unnamed) file
                self._fh = None
            self._closed = True
        return self

    def discard(self) -> None:
        """Let the file go now (also what happens when the object is collected)."""
        self._closed = True
        self._discarded = True
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # a frame still points into it: the file goes with it
                pass
            self._map = None

    # ------------------------------------------------------------------------------ reading

    def _reader(self) -> Any:
        if not self._closed or self._discarded:
            raise ValueError("the table is not closed (or was discarded)")
        if self._map is not None:
            return ipc.open_file(pa.py_buffer(self._map))
        assert self._fh is not None
        self._fh.seek(0)
        # malloc's memory, not Arrow's pool: a piece read and let go is given back
        # malloc's memory, not Arrow's pool: a piece read and let go is given back
        return ipc.open_file(self._fh, memory_pool=pa.system_memory_pool())

    def _table(self) -> pa.Table:
        return self._reader().read_all()

    def frame(self) -> pd.DataFrame:
        """The whole table, with the dtypes it was written with (sorted, and its unused
        categories dropped, as the table was made to)."""
        return tidy(self._frame(self._table()), self._prune, self._sort_by)

    def pieces(self) -> Iterator[pd.DataFrame]:
        """The table piece by piece, as written (each with the dtypes it was written with,
        neither sorted nor pruned)."""
        reader = self._reader()
        for i in range(reader.num_record_batches):
            yield self._frame(pa.Table.from_batches([reader.get_batch(i)]))

    def arrays(self) -> Iterator[dict[str, np.ndarray]]:
        """The pieces of a table of numbers only, each as numpy arrays (no pandas, no copy
        of what was read)."""
        reader = self._reader()
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i)
            yield {
                name: batch.column(j)
                .to_numpy(zero_copy_only=False)
                .astype(self._dtypes[name], copy=False)
                for j, name in enumerate(self._columns)
            }
            del batch

    def _frame(self, table: pa.Table) -> pd.DataFrame:
        data: dict[str, Any] = {}
        for name in self._columns:
            col = table.column(name)
            dtype = self._dtypes[name]
            if isinstance(dtype, pd.CategoricalDtype):
                data[name] = pd.Categorical.from_codes(_numpy(col), dtype=dtype, validate=False)
            elif dtype == _STR:
                data[name] = pd.arrays.ArrowStringArray(col, dtype=_STR)  # type: ignore[call-arg]
            elif isinstance(dtype, pd.DatetimeTZDtype):
                data[name] = pd.to_datetime(_numpy(col), unit="ns", utc=True)
            else:
                data[name] = _numpy(col).astype(dtype, copy=False)
        return pd.DataFrame(data, columns=self._columns)


def _numpy(col: pa.ChunkedArray) -> np.ndarray:
    """A column without nulls as numpy (a view of the map when it is one piece)."""
    if col.num_chunks == 1:
        return col.chunk(0).to_numpy(zero_copy_only=False)
    return col.to_numpy()


def tidy(frame: pd.DataFrame, prune: Collection[str], sort_by: str | None) -> pd.DataFrame:
    """A table joined from pieces as it would have been made whole: the categories no row
    uses dropped from the ``prune`` columns (none left: an empty ``object`` index, as pandas
    makes of no labels), sorted by ``sort_by`` when it is not already."""
    for name in prune:
        col = frame[name].cat.remove_unused_categories()
        if not len(col.cat.categories):
            col = col.cat.set_categories(pd.Index([], dtype=object))
        frame[name] = col
    if sort_by is not None and not frame[sort_by].is_monotonic_increasing:
        frame = frame.sort_values(sort_by, kind="stable", ignore_index=True)
    return frame
