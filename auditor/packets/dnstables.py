"""DNS as the name collector keeps it: packed records (a row per question, a record per
answer, what the answers taught) and the texts they refer to by number (:class:`DnsStore`),
and the tables a finished collection gives (:class:`DnsTables`)."""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
from dataclasses import dataclass, field
from typing import IO, Any, Final

import numpy as np

from auditor.packets.dns import TYPE_A, TYPE_AAAA, TYPE_CNAME, DnsMessage, DnsResource
from auditor.packets.spilldir import drop_pages, spill_dir

# DNS as a collector keeps it: packed records of the dtypes below, and the texts (names,
# addresses) they refer to by number, each distinct text kept once: a capture asks for the
# same names over and over, and a Python object per row and answer would be most of the
# memory of a DNS-heavy read. The compiled ``_dns.collect`` appends the same records.
# One row per question (the packet's time, flow, addresses and ports are the reading
# process's to add); ``qname`` is a text number.
DNS_ROW: Final = np.dtype(
    [
        ("packet", "<i8"),
        ("qtype", "<i4"),
        ("qname", "<i4"),
        ("id", "<u2"),
        ("rcode", "u1"),
        ("response", "u1"),
    ]
)
# One per resource record of the answer section, for each row of its message: the row's
# number (in the collector's order), the owner name, type, TTL, value and HTTPS/SVCB hints
# (text numbers; -1: none; the hints joined with ",")
DNS_ANSWER: Final = np.dtype(
    [
        ("row", "<i8"),
        ("ttl", "<i8"),
        ("name", "<i4"),
        ("rtype", "<i4"),
        ("value", "<i4"),
        ("hints", "<i4"),
    ]
)
# What answers taught: each address given (with the time and the name asked for it), and
# each (name, address) pair, the name being the question or a CNAME on the way to it
DNS_ANSWERED: Final = np.dtype([("ts", "<i8"), ("addr", "<i4"), ("asked", "<i4")])
DNS_PAIR: Final = np.dtype([("name", "<i4"), ("addr", "<i4")])
_ROW = struct.Struct("<qiiHBB")
_ANSWER = struct.Struct("<qqiiii")
_ANSWERED = struct.Struct("<qii")
_PAIR = struct.Struct("<ii")
assert _ROW.size == DNS_ROW.itemsize and _ANSWER.size == DNS_ANSWER.itemsize
assert _ANSWERED.size == DNS_ANSWERED.itemsize and _PAIR.size == DNS_PAIR.itemsize


#: Records a store holds in memory before :meth:`DnsStore.flush` writes them to its files
#: (``AUDITOR_DNS_FLUSH_BYTES`` sets another, in this process and the name worker: tests)
FLUSH_BYTES: Final = 4 << 20
FLUSH_ENV: Final = "AUDITOR_DNS_FLUSH_BYTES"
_RECORDS: Final = ("rows", "answers", "answered", "pairs")
_DTYPES: Final = {
    "rows": DNS_ROW,
    "answers": DNS_ANSWER,
    "answered": DNS_ANSWERED,
    "pairs": DNS_PAIR,
}


class DnsStore:
    """DNS rows, answers and what they taught, as packed records (see :data:`DNS_ROW`),
    growing as messages are added; :meth:`tables` gives them as arrays. Past
    :data:`FLUSH_BYTES`, :meth:`flush` (called between jobs) moves the records to unnamed
    temporary files (``spilldir``), so that a long capture's DNS is not this process's
    memory; the texts stay (each distinct one once)."""

    __slots__ = (
        "_files",
        "_index",
        "_rows_out",
        "answered",
        "answers",
        "ids",
        "pairs",
        "rows",
        "texts",
    )

    def __init__(self) -> None:
        self._index: object = None  # what _dns.collect keeps to find the texts it made again
        self.ids: dict[str, int] = {}
        self.texts: list[str] = []
        self.rows = bytearray()
        self.answers = bytearray()
        self.answered = bytearray()
        self.pairs = bytearray()
        self._files: dict[str, IO[bytes]] = {}  # the records flushed, per kind
        self._rows_out = 0  # rows flushed: the first row in memory is this one

    def close(self) -> None:
        """Let the files of records flushed go (a read that ended early)."""
        for fh in self._files.values():
            fh.close()
        self._files = {}

    def held(self) -> int:
        """Bytes of records in memory."""
        return len(self.rows) + len(self.answers) + len(self.answered) + len(self.pairs)

    def flush(self, at_least: int | None = None) -> None:
        """Move the records in memory to the store's files, if they are ``at_least`` bytes
        (None: :data:`FLUSH_BYTES`). Rows are numbered across the files: an answer's row is
        made absolute as it goes."""
        if at_least is None:
            at_least = _flush_bytes()
        if self.held() < max(at_least, 1):
            return
        if not self._files:
            for k in _RECORDS:
                self._files[k] = tempfile.TemporaryFile(dir=spill_dir())
        if self._rows_out and self.answers:
            answers = np.frombuffer(self.answers, dtype=DNS_ANSWER).copy()
            answers["row"] += self._rows_out
            self._files["answers"].write(answers.tobytes())
            del answers
        else:
            self._files["answers"].write(self.answers)
        for k in ("rows", "answered", "pairs"):
            self._files[k].write(getattr(self, k))
        self._rows_out += len(self.rows) // _ROW.size
        for k in _RECORDS:
            del getattr(self, k)[:]  # the same bytearrays: _dns.collect appends to them

    def text_id(self, text: str) -> int:
        i = self.ids.get(text)
        if i is None:
            i = self.ids[text] = len(self.texts)
            self.texts.append(text)
        return i

    def add(self, m: DnsMessage, packet: int, ts: int) -> None:
        """A parsed message: a row per question (one with no name and type -1 for an answer
        without questions, as mDNS announces), its answers under each, and, for a NOERROR
        response, what its addresses answer."""
        tid = self.text_id
        questions = m.questions
        if not questions and m.answers:
            questions = (("", -1),)
        first = len(self.rows) // _ROW.size
        for qname, qtype in questions:
            self.rows += _ROW.pack(packet, qtype, tid(qname), m.id, m.rcode, m.response)
        for row in range(first, first + len(questions)):
            for a in m.answers:  # the texts _dns.collect numbers, in the same order
                name = tid(a.name)
                value = -1 if a.value is None else tid(a.value)
                hints = tid(",".join(a.hints)) if a.hints else -1
                self.answers += _ANSWER.pack(row, a.ttl, name, a.rtype, value, hints)
        if m.response and m.rcode == 0 and m.answers:
            self._learn(m, ts)

    def _learn(self, m: DnsMessage, ts: int) -> None:
        """Each address of an answer under the names that lead to it (the question, CNAMEs)
        and with the name asked for it (the compiled ``_dns.collect`` does the same)."""
        tid = self.text_id
        cname = {
            r.name.lower(): (r.value or "").lower() for r in m.answers if r.rtype == TYPE_CNAME
        }
        chains: list[list[str]] = []
        for qname, _ in m.questions:
            chain = [qname.lower()]
            while chain[-1] in cname and len(chain) < 16:
                chain.append(cname[chain[-1]])
            chains.append(chain)
        for r in m.answers:
            if r.rtype in (TYPE_A, TYPE_AAAA) and r.value:
                addrs: tuple[str, ...] = (r.value,)
            elif r.hints:
                addrs = r.hints
            else:
                continue
            owner = r.name.lower()
            names = [owner]
            asked = owner
            for chain in chains:
                if owner in chain:
                    names = chain[: chain.index(owner) + 1]
                    asked = chain[0]
                    break
            for a in addrs:
                aid = tid(a)
                for name in names:
                    self.pairs += _PAIR.pack(tid(name), aid)
                self.answered += _ANSWERED.pack(ts, aid, tid(asked))

    def tables(self) -> DnsTables:
        """What was added, as arrays, and the store emptied. Records flushed to files come
        back mapped read-only (their pages the file's, not this process's, until read)."""
        texts = np.empty(len(self.texts), dtype=object)
        texts[:] = self.texts
        if self._files:
            self.flush(0)
            arrays = {k: _mapped(self._files[k], _DTYPES[k]) for k in _RECORDS}
            for fh in self._files.values():
                fh.close()  # each map keeps its file
        else:  # the records' own memory, without a copy: the store lets go of it
            arrays = {k: np.frombuffer(getattr(self, k), dtype=_DTYPES[k]) for k in _RECORDS}
        self._files = {}
        self._rows_out = 0
        for k in _RECORDS:
            setattr(self, k, bytearray())
        self.ids, self.texts, self._index = {}, [], None
        return DnsTables(
            texts, arrays["rows"], arrays["answers"], arrays["answered"], arrays["pairs"]
        )


@dataclass(frozen=True)
class DnsTables:
    """A collector's DNS (see :data:`DNS_ROW`): ``texts`` (object array) and the records that
    refer to them by number. Pickled as a few buffers, whatever the number of rows."""

    texts: np.ndarray
    rows: np.ndarray
    answers: np.ndarray
    answered: np.ndarray
    pairs: np.ndarray
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @staticmethod
    def empty() -> DnsTables:
        return DnsStore().tables()

    def merge(self, other: DnsTables) -> DnsTables:
        """Both collectors' DNS, rows in packet order (a packet's rows all come from one
        collector, in their order), texts numbered again."""
        if not len(other.rows) and not len(other.answered):
            return self
        if not len(self.rows) and not len(self.answered):
            return other
        both = np.concatenate([self.texts, other.texts])
        codes, uniq = _factorize(both)
        mine, theirs = codes[: len(self.texts)], codes[len(self.texts) :]
        size = sum(
            a.nbytes for t in (self, other) for a in (t.rows, t.answers, t.answered, t.pairs)
        )
        mine_or_none = None if _identity(mine) else mine  # (the usual case: mine first)
        theirs_or_none = None if _identity(theirs) else theirs
        if size >= _flush_bytes():  # a long capture's: merged into files, a piece at a time
            return _merged_to_files(self, other, mine_or_none, theirs_or_none, uniq)

        def both_sides(name: str, fields: tuple[str, ...]) -> np.ndarray:
            """Self's records then other's, their texts numbered again (a new array)."""
            return np.concatenate(
                [
                    _renumbered(getattr(self, name), mine_or_none, fields),
                    _renumbered(getattr(other, name), theirs_or_none, fields),
                ]
            )

        rows = both_sides("rows", ("qname",))
        order = np.argsort(rows["packet"], kind="stable")
        position = np.empty(len(order), dtype=np.int64)
        position[order] = np.arange(len(order))
        answers = both_sides("answers", ("name", "value", "hints"))
        answers["row"][len(self.answers) :] += len(self.rows)
        answers["row"] = position[answers["row"]]
        answers = answers[np.argsort(answers["row"], kind="stable")]
        return DnsTables(
            uniq,
            rows[order],
            answers,
            both_sides("answered", ("addr", "asked")),
            both_sides("pairs", ("name", "addr")),
        )

    def name_addrs(self) -> dict[str, tuple[str, ...]]:
        """Each name answers gave addresses for (the question or a CNAME on the way), with
        those addresses: sorted, each once."""
        if not len(self.pairs):
            return {}
        key = (self.pairs["name"].astype(np.int64) << 32) | self.pairs["addr"].astype(np.int64)
        key.sort()
        key = key[np.concatenate([[True], key[1:] != key[:-1]])]
        name, addr = key >> 32, key & 0xFFFFFFFF
        rank = self.text_rank()
        order = np.lexsort((rank[addr], rank[name]))
        name, addr = name[order], addr[order]
        cut = np.flatnonzero(name[1:] != name[:-1]) + 1
        starts = np.concatenate([[0], cut]).tolist()
        ends = np.concatenate([cut, [len(name)]]).tolist()
        addrs = self.texts[addr].tolist()
        names = self.texts[name[starts]].tolist() if starts else []
        return {n: tuple(addrs[a:b]) for n, a, b in zip(names, starts, ends, strict=True)}

    def text_rank(self) -> np.ndarray:
        """The place of each text in the sorted texts (code point order, as Python sorts)."""
        rank = self._cache.get("rank")
        if rank is None:
            import pyarrow.compute as pc

            texts = self.arrow_texts()[: len(self.texts)]
            order = pc.array_sort_indices(texts).to_numpy()
            rank = self._cache["rank"] = np.empty(len(self.texts), dtype=np.int64)
            rank[order] = np.arange(len(self.texts))
        return rank

    def arrow_texts(self) -> Any:
        """The texts as one Arrow large_string array, with a null after the last."""
        table = self._cache.get("arrow")
        if table is None:
            import pyarrow as pa

            table = self._cache["arrow"] = pa.array(
                [*self.texts.tolist(), None], type=pa.large_string()
            )
        return table

    def python_rows(self) -> list[tuple[Any, ...]]:
        """Each row as (packet, id, response, rcode, qname, qtype, answers as DnsResource
        tuples): for tests and small captures."""
        t = self.texts.tolist()
        per_row: dict[int, list[DnsResource]] = {}
        for r in self.answers.tolist():
            row, ttl, name, rtype, value, hints = r
            per_row.setdefault(row, []).append(
                DnsResource(
                    t[name],
                    rtype,
                    ttl,
                    None if value < 0 else t[value],
                    tuple(t[hints].split(",")) if hints >= 0 else (),
                )
            )
        return [
            (p, i, bool(resp), rc, t[q], qt, tuple(per_row.get(k, ())))
            for k, (p, qt, q, i, rc, resp) in enumerate(self.rows.tolist())
        ]

    def python_answered(self) -> list[tuple[str, int, str]]:
        """(address, time, name asked) of each address answers gave, in order."""
        t = self.texts.tolist()
        return [(t[a], ts, t[q]) for ts, a, q in self.answered.tolist()]


_MERGE_ROWS: Final = 1 << 16  # records copied at a time by _merged_to_files


def _renumbered(a: np.ndarray, table: np.ndarray | None, fields: tuple[str, ...]) -> np.ndarray:
    """A copy of records ``a`` with the text numbers of ``fields`` looked up in ``table``
    (-1 stays), or ``a`` itself when ``table`` is None (every text numbered as it was)."""
    if table is None or not len(a) or not len(table):
        return a
    a = a.copy()
    for f in fields:
        v = a[f]
        a[f] = np.where(v >= 0, table[np.maximum(v, 0)], -1)
    return a


def _identity(table: np.ndarray) -> bool:
    return bool((table == np.arange(len(table))).all())


def _file_array(n: int, dtype: np.dtype) -> tuple[np.ndarray, IO[bytes] | None]:
    """``n`` records in a new unnamed temporary file, mapped for writing (no map for none)."""
    if not n:
        return np.zeros(0, dtype=dtype), None
    fh = tempfile.TemporaryFile(dir=spill_dir())
    try:
        fh.truncate(n * dtype.itemsize)
        mm = mmap.mmap(fh.fileno(), n * dtype.itemsize, access=mmap.ACCESS_WRITE)
    except BaseException:
        fh.close()
        raise
    return np.frombuffer(mm, dtype=dtype), fh


def _merged_to_files(
    a: DnsTables,
    b: DnsTables,
    mine: np.ndarray | None,
    theirs: np.ndarray | None,
    uniq: np.ndarray,
) -> DnsTables:
    """:meth:`DnsTables.merge` (the same tables) with the merged records written to unnamed
    temporary files a piece at a time, then mapped: what it holds in memory is a few integers
    per row and answer (where each goes), not the records. Rows in packet order, a's first
    among equal packets (a sort of their packet numbers, stable); answers follow their rows,
    in their order; what answers taught and the pairs: a's, then b's."""
    n_a, n = len(a.rows), len(a.rows) + len(b.rows)
    keys = np.concatenate([a.rows["packet"], b.rows["packet"]]).astype(np.int64)
    order = np.argsort(keys, kind="stable")
    del keys
    position = np.empty(n, dtype=np.int64)  # each row's place in the merged rows
    position[order] = np.arange(n)
    del order
    files: list[IO[bytes]] = []

    def out(k: int, dtype: np.dtype) -> np.ndarray:
        arr, fh = _file_array(k, dtype)
        if fh is not None:
            files.append(fh)
        return arr

    try:
        rows = out(n, DNS_ROW)
        for src, table, base in ((a.rows, mine, 0), (b.rows, theirs, n_a)):
            for lo in range(0, len(src), _MERGE_ROWS):
                piece = _renumbered(src[lo : lo + _MERGE_ROWS], table, ("qname",))
                rows[position[base + lo : base + lo + len(piece)]] = piece
                drop_pages(src, rows)
        # answers by their rows' new places, stably (each side's in its order)
        new_row = np.concatenate(
            [
                position[a.answers["row"].astype(np.int64)],
                position[b.answers["row"].astype(np.int64) + n_a],
            ]
        )
        del position
        order = np.argsort(new_row, kind="stable")
        at = np.empty(len(order), dtype=np.int64)
        at[order] = np.arange(len(order))
        del order
        answers = out(len(new_row), DNS_ANSWER)
        start = 0
        for src, table in ((a.answers, mine), (b.answers, theirs)):
            for lo in range(0, len(src), _MERGE_ROWS):
                chunk = src[lo : lo + _MERGE_ROWS]
                piece = _renumbered(chunk, table, ("name", "value", "hints"))
                if piece is chunk:  # (its row numbers change: a copy of its own)
                    piece = chunk.copy()
                piece["row"] = new_row[start + lo : start + lo + len(piece)]
                answers[at[start + lo : start + lo + len(piece)]] = piece
                drop_pages(src, answers)
            start += len(src)
        del new_row, at
        taught = {}
        for name, dtype, fields in (
            ("answered", DNS_ANSWERED, ("addr", "asked")),
            ("pairs", DNS_PAIR, ("name", "addr")),
        ):
            dst = out(len(getattr(a, name)) + len(getattr(b, name)), dtype)
            start = 0
            for src, table in ((getattr(a, name), mine), (getattr(b, name), theirs)):
                for lo in range(0, len(src), _MERGE_ROWS):
                    piece = _renumbered(src[lo : lo + _MERGE_ROWS], table, fields)
                    dst[start + lo : start + lo + len(piece)] = piece
                    drop_pages(src, dst)
                start += len(src)
            taught[name] = dst
    finally:
        for fh in files:
            fh.close()  # each map keeps its file
    for m in (rows, answers, *taught.values()):
        m.flags.writeable = False
    return DnsTables(uniq, rows, answers, taught["answered"], taught["pairs"])


def _flush_bytes() -> int:
    """:data:`FLUSH_BYTES`, or ``AUDITOR_DNS_FLUSH_BYTES`` when it is a whole number."""
    try:
        return int(os.environ.get(FLUSH_ENV) or FLUSH_BYTES)
    except ValueError:
        return FLUSH_BYTES


def _mapped(fh: IO[bytes], dtype: np.dtype) -> np.ndarray:
    """A file's records as a read-only array over a map of it (no map for an empty file)."""
    fh.flush()
    size = os.fstat(fh.fileno()).st_size
    if not size:
        return np.zeros(0, dtype=dtype)
    return np.frombuffer(mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_READ), dtype=dtype)


def _factorize(texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes into the distinct texts (in first-seen order) and those texts: pandas' hash
    table in C (imported here: a worker process that only parses names never merges)."""
    import pandas as pd

    codes, uniq = pd.factorize(texts)
    out = np.empty(len(uniq), dtype=object)
    out[:] = uniq
    return codes.astype(np.int64), out
