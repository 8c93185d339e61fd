"""The dataset folder: its version file, its partitions and which of its files count.

Layout::

    DATASET/fleet.json                       {"fleet_schema_version": 1, ...}
    DATASET/<table>/vendor=V/model=M/build=B/month=YYYY-MM/part-<id>.parquet

One export writes, per partition it touches, one file per table, all named ``part-<id>``
(``id``: a hash of the session keys in it). The ``sessions`` file is written last and
commits the part: a file of another table counts only when the ``sessions`` file of the same
partition and name is there. An export that died half-way leaves uncommitted files, which
readers ignore and the next export removes (and counts).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from auditor import jsonio
from auditor.errors import AuditorError
from auditor.fleet.schema import (
    COMMIT_TABLE,
    FLEET_SCHEMA_VERSION,
    PARTITION_KEYS,
    SESSION_KEY,
    TABLES,
)
from auditor.fsutil import private_dir, replacing, write_private

log = logging.getLogger(__name__)

VERSION_FILE = "fleet.json"
LOCK_FILE = ".lock"
_SLUG_BAD = re.compile(r"[^a-z0-9._-]+")
SLUG_MAX = 48


class FleetError(AuditorError):
    pass


def slug(value: str) -> str:
    """A partition value as a folder name: lower-case ``[a-z0-9._-]``; a value that had to be
    changed beyond its case (or cut) gets 8 hex digits of its SHA-256. Values that differ
    only in case share a folder: the folder is a layout, the files hold the values."""
    s = _SLUG_BAD.sub("_", value.lower()).strip("._") or "_"
    if s == value.lower() and len(s) <= SLUG_MAX:
        return s
    return f"{s[:SLUG_MAX]}-{hashlib.sha256(value.encode('utf-8')).hexdigest()[:8]}"


def partition_dir(values: tuple[str, str, str, str]) -> Path:
    return Path(*(f"{k}={slug(v)}" for k, v in zip(PARTITION_KEYS, values, strict=True)))


def part_name(keys: list[str]) -> str:
    digest = hashlib.sha256("\n".join(sorted(keys)).encode("ascii")).hexdigest()
    return f"part-{digest[:24]}.parquet"


@dataclass
class Dataset:
    root: Path
    version: int
    _commits: set[Path] | None = field(default=None, repr=False)

    @classmethod
    def open(cls, path: Path, *, create: bool = False) -> Dataset:
        """The dataset at ``path``; with ``create``, a new one when ``path`` is missing or an
        empty folder. FleetError for anything else."""
        root = Path(path)
        vfile = root / VERSION_FILE
        if not vfile.is_file():
            if root.exists() and not root.is_dir():
                raise FleetError(f"{root}: not a folder")
            if not create:
                raise FleetError(f"{root}: not a fleet dataset (no {VERSION_FILE})")
            if root.is_dir() and any(root.iterdir()):
                raise FleetError(f"{root}: not empty and not a fleet dataset (no {VERSION_FILE})")
            private_dir(root)
            write_private(
                vfile,
                jsonio_dump(
                    {
                        "fleet_schema_version": FLEET_SCHEMA_VERSION,
                        "tables": sorted(TABLES),
                        "partitioning": list(PARTITION_KEYS),
                        "docs": "docs/fleet.md",
                    }
                ),
            )
        try:
            doc = jsonio.load(vfile, expect=dict, max_bytes=1 << 20)
        except OSError as exc:
            raise FleetError(f"{vfile}: cannot read it ({exc.strerror or exc})") from None
        version = doc.get("fleet_schema_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise FleetError(f"{vfile}: no fleet_schema_version")
        if version > FLEET_SCHEMA_VERSION:
            raise FleetError(
                f"{root}: fleet schema {version} is newer than this auditor reads "
                f"({FLEET_SCHEMA_VERSION}); upgrade auditor"
            )
        if version < 1:
            raise FleetError(f"{vfile}: fleet_schema_version {version} is not valid")
        return cls(root, version)

    def table_dir(self, table: str) -> Path:
        return self.root / table

    def _all(self, table: str) -> list[Path]:
        # the layout's depth is fixed (one folder per partition key): a glob of that depth
        # lists 5,000 parts in milliseconds, where rglob walked for a second
        pattern = glob.escape(str(self.table_dir(table))) + "/*" * len(PARTITION_KEYS)
        return sorted(Path(p) for p in glob.glob(pattern + "/part-*.parquet"))

    def _committed(self) -> set[Path]:
        if self._commits is None:
            top = self.table_dir(COMMIT_TABLE)
            self._commits = {p.relative_to(top) for p in self._all(COMMIT_TABLE)}
        return self._commits

    def files(self, table: str) -> list[Path]:
        """The committed files of ``table``, sorted (listed once per Dataset object)."""
        if table not in TABLES:
            raise FleetError(f"no table {table!r} (tables: {', '.join(sorted(TABLES))})")
        committed = self._committed()
        if table == COMMIT_TABLE:
            return [self.table_dir(table) / p for p in sorted(committed)]
        return [p for p in self._all(table) if p.relative_to(self.table_dir(table)) in committed]

    def orphans(self) -> list[Path]:
        """Files an interrupted export left uncommitted (and temporary files)."""
        out = []
        for table in TABLES:
            if table == COMMIT_TABLE:
                continue
            keep = set(self.files(table))
            out += [p for p in self._all(table) if p not in keep]
        for table in TABLES:
            d = self.table_dir(table)
            if d.is_dir():
                out += sorted(p for p in d.rglob(".part-*.tmp") if p.is_file())
        return out

    def session_keys(self) -> set[str]:
        keys: set[str] = set()
        for f in self.files(COMMIT_TABLE):
            keys |= set(read_table(f, [SESSION_KEY]).column(SESSION_KEY).to_pylist())
        return keys

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One writer at a time: an export holds the dataset's lock until it ends."""
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise FleetError(f"{self.root}: another export is writing to it") from None
            yield
        finally:
            os.close(fd)

    def write_part(self, table: str, partition: Path, name: str, data: pa.Table) -> Path:
        folder = self.table_dir(table) / partition
        private_dir(folder)
        path = folder / name
        meta = {b"auditor.fleet_schema_version": str(FLEET_SCHEMA_VERSION).encode()}
        data = data.replace_schema_metadata(meta)
        with replacing(path) as fh:
            pq.write_table(data, fh, compression="zstd")
        return path


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
    except (OSError, pa.ArrowException) as exc:
        raise FleetError(f"{path}: not a readable Parquet file ({str(exc)[:160]})") from None


def jsonio_dump(doc: object) -> str:
    import json

    return json.dumps(doc, indent=2, sort_keys=True) + "\n"
