"""The packet flows of a capture, kept between analyses in the user's cache folder.

Reading a capture is most of what analysing a packet-only session costs (a 1,000,000-packet
capture: 2.2 s to read, then about 1 s to turn its flows into the analyser's rows). The
result depends on nothing but the capture's bytes, the code that reads it, and three facts of
the session (the capture's path in it and the proxy the phone used), so it is kept under a
name derived from the SHA-256 of all of them:

- the capture's own SHA-256 (0.1 s for 90 MB), kept beside the entries under the file's
  identity and stats (path, device, inode, size, modification and change times: the change
  time moves on every write and cannot be set back), so a capture that changed is hashed and
  read again whatever its name, size or modification time (:func:`capture_sha256`);
- auditor's version, Python's, and the path, size and modification time of every module of
  the ``auditor`` package (the compiled readers included): any change of the code reads
  again;
- the capture's path in the session, the proxy addresses and whether the session had one.

``auditor import`` keeps what its own read of a capture gives, so the first analysis of an
imported session does not read the capture again; a live audit's first analysis reads it and
keeps it for the next. The cache never changes a result: an analysis from it and one from
the capture give the same ``findings.json`` (``tests/analysis/test_packetcache.py``).

The entries hold captured traffic (addresses, names, certificates). They are owner-only
(mode 0600 in a 0700 folder, as the lookup index: :mod:`auditor.intel.cache`) and are read
only when nobody else may write them; an entry not used for :data:`MAX_AGE_DAYS` days is
removed, and the folder is kept under :data:`MAX_BYTES` (the least recently used go first).
``AUDITOR_PACKET_CACHE=0`` turns the cache off; ``auditor`` then reads every capture on
every analysis, as it did before.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc

from auditor.cachedir import add_file_stats, cache_dir, owner_only, write_cache_file

log = logging.getLogger(__name__)

FORMAT = 2  # bumped when the stored layout changes
ENV = "AUDITOR_PACKET_CACHE"
FOLDER = "packetflows"
SUFFIX = ".arrow"
META = b"auditor.packetcache"
MAX_BYTES = 2 << 30  # the folder's bound; the least recently used entries go first
MAX_AGE_DAYS = 14
_CHUNK = 1 << 22


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "no", "off", "false")


@functools.cache
def code_digest() -> str:
    """SHA-256 of auditor's and Python's versions and of the path, size and modification time
    of every module of the package (as make decides what to rebuild). Once per process."""
    import auditor

    root = Path(auditor.__file__).parent
    h = hashlib.sha256(f"format {FORMAT}\0auditor {auditor.__version__}\0{sys.version}\0".encode())
    # the libraries the tables are made with, and the switch to the pure-Python readers
    for lib in (np, pd, pa):
        h.update(f"{lib.__name__} {lib.__version__}\0".encode())
    h.update(f"pure {os.environ.get('AUDITOR_PURE_PYTHON_SCAN', '')}\0".encode())
    code = sorted(p for p in root.rglob("*") if p.suffix in (".py", ".so", ".pyd"))
    add_file_stats(h, code, missing_ok=True)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


DIGESTS = "digests"  # subfolder of FOLDER: a capture's SHA-256 by its stats
DIGEST_SUFFIX = ".sha256"
DIGESTS_MAX_BYTES = 1 << 20  # 64 bytes each: the last 16,000 or so captures
SETTLED_S = 2.0  # a file changed more recently than this may change again within one tick


def capture_sha256(path: Path) -> str:
    """:func:`file_sha256` of a capture, hashed only when the file's identity or stats changed
    since it was last hashed (the cache off: always). As git's index does, a digest is kept
    only for a file last changed :data:`SETTLED_S` before it was hashed: a file written again
    within one tick of the clock, to the same size, would otherwise keep its old digest."""
    if not enabled():
        return file_sha256(path)
    st = path.stat()
    key = hashlib.sha256(
        f"{path.resolve()}\0{st.st_dev}\0{st.st_ino}\0{st.st_size}\0"
        f"{st.st_mtime_ns}\0{st.st_ctime_ns}\0".encode()
    ).hexdigest()[:40]
    kept = cache_dir() / FOLDER / DIGESTS / f"{key}{DIGEST_SUFFIX}"
    if kept.is_file() and owner_only(kept, "capture digest"):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            text = kept.read_bytes().decode("ascii")
            if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
                with contextlib.suppress(OSError):
                    os.utime(kept)  # used: the least recently used go first
                return text
    started = time.time()
    digest = file_sha256(path)
    if started - max(st.st_mtime_ns, st.st_ctime_ns) / 1e9 >= SETTLED_S:
        after = path.stat()
        if (after.st_size, after.st_mtime_ns, after.st_ctime_ns) == (
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
        ):

            def write(fh: IO[bytes]) -> None:
                fh.write(digest.encode())

            write_cache_file(kept, write, stale=kept.name, what="capture digest")
            prune(kept.parent, max_bytes=DIGESTS_MAX_BYTES, suffix=DIGEST_SUFFIX)
    return digest


def entry_path(capture_sha256: str, facts: Iterable[Any]) -> Path:
    """Where the entry for a capture (by its SHA-256) read under ``facts`` is kept."""
    h = hashlib.sha256(f"{code_digest()}\0{capture_sha256}\0".encode())
    for fact in facts:
        h.update(repr(fact).encode() + b"\0")
    return cache_dir() / FOLDER / f"{h.hexdigest()[:40]}{SUFFIX}"


def load(path: Path) -> tuple[pd.DataFrame | None, dict[str, Any]] | None:
    """The entry at ``path`` as (table, facts) when it is there, owner-only and whole; else
    None (a damaged entry is removed and logged)."""
    if not enabled() or not path.is_file() or not owner_only(path, "packet flow cache entry"):
        return None
    try:
        with pa.memory_map(str(path)) as src:
            table = ipc.open_file(src).read_all()
        meta = json.loads((table.schema.metadata or {})[META])
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            return None
        frame = _frame(table, meta["dtypes"], meta["objects"]) if meta.get("has_frame") else None
        facts = meta["facts"]
        if not isinstance(facts, dict):
            raise ValueError("facts are not an object")
    except (Exception, MemoryError) as exc:  # noqa: BLE001 - a damaged file raises anything
        log.warning(
            "%s: unreadable packet flow cache entry (%s); removed", path, type(exc).__name__
        )
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # used: the least recently used go first
    return frame, facts


# what a column of Python objects may hold, as pandas infers it (in C; missing values aside):
# one plain type, which Arrow gives back as it was (1 and 2.5 together would come back floats)
_PLAIN = frozenset({"string", "integer", "floating", "boolean", "bytes", "empty"})
_NAN = "\0nan:"  # the column of where an object column held NaN (and not None)


def _objects_as_stored(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]] | None:
    """The frame with, beside each column of Python objects that holds NaN for missing, a
    column of where (Arrow keeps a missing value, not which one); None when such a column
    holds anything but values of one plain type (text, whole numbers, ...), which Arrow may
    not give back as they were."""
    extra: dict[str, np.ndarray] = {}
    objects = []
    for name in frame.columns:
        if frame[name].dtype != object:
            continue
        objects.append(str(name))
        values = frame[name].to_numpy(dtype=object)
        missing = pd.isna(values)
        if pd.api.types.infer_dtype(values, skipna=True) not in _PLAIN:
            return None
        nan = missing & ~(values == None)  # noqa: E711 - elementwise
        if nan.any():
            extra[_NAN + str(name)] = nan
    return (frame.assign(**extra) if extra else frame), objects


def _frame(table: pa.Table, dtypes: list[str], objects: list[str]) -> pd.DataFrame:
    """The table as the frame it was made from: Arrow keeps pandas' own description of each
    column; a column of Python objects is made objects again, NaN where it held NaN."""
    nan_columns = [c for c in table.column_names if c.startswith(_NAN)]
    n = table.num_rows
    rest = table.drop_columns(nan_columns + objects)
    # a table of object columns only has no column to give pandas its length
    frame = rest.to_pandas() if rest.num_columns else pd.DataFrame(index=pd.RangeIndex(n))
    for name in objects:
        col = table.column(name)
        if pa.types.is_null(col.type):
            values = np.full(n, None, dtype=object)
        elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            values = col.to_numpy(zero_copy_only=False).astype(object, copy=False)
        else:
            values = np.empty(n, dtype=object)
            values[:] = col.to_pylist()
        if _NAN + name in nan_columns:
            values[table.column(_NAN + name).to_numpy(zero_copy_only=False)] = np.nan
        frame[name] = pd.Series(values, dtype=object, index=frame.index)  # never inferred
    frame = frame[[c for c in table.column_names if not c.startswith(_NAN)]]
    for name, dtype in zip(list(frame.columns), dtypes, strict=True):
        if str(frame[name].dtype) != dtype:
            raise ValueError(f"column {name}: {frame[name].dtype}, not {dtype}")
    return frame


def store(path: Path, frame: pd.DataFrame | None, facts: dict[str, Any]) -> None:
    """Keep (``frame``, ``facts``: JSON) at ``path`` (owner-only, through a temporary name),
    then bound the folder. Nothing is kept when the cache is off; a table Arrow cannot give
    back as it was, or a failure to write, is a logged warning."""
    if not enabled():
        return
    try:
        stored = _objects_as_stored(frame) if frame is not None else (None, [])
        if stored is None:
            log.warning("packet flows not cached: a column holds values Arrow may change")
            return
        as_stored, objects = stored
        table = (
            pa.Table.from_pandas(as_stored, preserve_index=False)
            if as_stored is not None
            else pa.table({})
        )
        meta = {
            "format": FORMAT,
            "has_frame": frame is not None,
            "dtypes": [str(t) for t in frame.dtypes] if frame is not None else [],
            "objects": objects,
            "facts": facts,
        }
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), META: json.dumps(meta).encode()}
        )
    except Exception as exc:  # noqa: BLE001 - an accelerator: the analysis goes on without it
        log.warning("packet flows not cached: %s: %s", type(exc).__name__, exc)
        return

    def write(fh: IO[bytes]) -> None:
        with ipc.new_file(fh, table.schema) as w:
            w.write_table(table)

    write_cache_file(path, write, stale=path.name, what="packet flow cache entry")
    prune(path.parent)


def prune(
    folder: Path,
    *,
    max_bytes: int = MAX_BYTES,
    max_age_days: float = MAX_AGE_DAYS,
    suffix: str = SUFFIX,
) -> int:
    """Remove entries (files ending ``suffix``) unused for ``max_age_days``, then the least
    recently used until the folder holds at most ``max_bytes``. Returns how many were
    removed."""
    try:
        entries = []
        for p in folder.glob(f"*{suffix}"):
            with contextlib.suppress(OSError):
                st = p.stat()
                entries.append((st.st_mtime, st.st_size, p))
    except OSError:
        return 0
    entries.sort()
    total = sum(e[1] for e in entries)
    cutoff = time.time() - max_age_days * 86400
    removed = 0
    for mtime, size, p in entries:
        if mtime >= cutoff and total <= max_bytes:
            break
        with contextlib.suppress(OSError):
            p.unlink()
            removed += 1
            total -= size
    return removed
