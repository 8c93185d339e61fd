"""The compiled lookup index: the knowledge base and the data sets, validated once and kept
on disk, so that ``auditor intel lookup`` answers from a cold start in a fraction of a second.

Loading the knowledge base validates every YAML file, resolves every source and builds the
public suffix list's trie: about 0.3 s, more with data sets. The index is that finished
:class:`~auditor.intel.kb.KnowledgeBase` (with the suffix list) pickled into the user's cache
folder, under a name derived from the SHA-256 of everything it was built from: auditor's
version, Python's, the public suffix list's file, and the path, size and modification time of
every module of ``auditor.intel``, every file of the knowledge base, of the bundled data
sets and of the user's imported data sets (as make decides what to rebuild). Any change to
them gives another name, so a stale index is never read; it is rebuilt on first use and
older ones are removed.

The index is read only when its folder and file belong to the user and nobody else may
write them (mode 0700 / 0600); otherwise it is rebuilt in memory and a warning is logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from auditor.fsutil import replacing
from auditor.intel import psl
from auditor.intel.kb import DATA_DIR, KnowledgeBase

log = logging.getLogger(__name__)

CACHE_ENV = "AUDITOR_CACHE_DIR"
INDEX_PREFIX = "intel-index-"
FORMAT = 1  # bumped when the pickled layout changes


def cache_dir() -> Path:
    """``$AUDITOR_CACHE_DIR``, else ``$XDG_CACHE_HOME/auditor``, else ``~/.cache/auditor``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "auditor"


def _user_dataset_files() -> list[Path]:
    from auditor.intel.dataset_store import user_data_dir

    root = user_data_dir() / "intel"
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file())


def inputs_digest() -> str:
    """SHA-256 of everything the index is built from (see the module docstring)."""
    from auditor import __version__
    from auditor.intel.psl import snapshot_path

    h = hashlib.sha256()
    h.update(f"format {FORMAT}\0auditor {__version__}\0python {sys.version}\0".encode())
    snap = snapshot_path().stat()
    h.update(f"psl {snap.st_size} {snap.st_mtime_ns}\0".encode())
    code = sorted(Path(__file__).parent.glob("*.py"))  # the pickled classes' own code
    data = sorted(p for p in DATA_DIR.rglob("*") if p.is_file())
    for path in [*code, *data, *_user_dataset_files()]:
        st = path.stat()
        h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()


def _private_enough(path: Path, want: int) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    return st.st_uid == os.geteuid() and st.st_mode & 0o777 & ~want == 0


def owner_only(path: Path, what: str) -> bool:
    """A cached file may be read: it and its folder belong to the user and nobody else may
    write them (0600 / 0700). A file that is there but fails this is a warning."""
    if _private_enough(path.parent, 0o700) and _private_enough(path, 0o600):
        return True
    if path.exists():
        log.warning("%s: not owner-only; the %s is rebuilt", path, what)
    return False


def write_cache_file(
    path: Path, write: Callable[[IO[bytes]], None], *, stale: str, what: str
) -> None:
    """Write a cache file owner-only in an owner-only folder, through a temporary name (so a
    reader never sees half of it); then remove the older files matching ``stale`` and
    temporary files a writer killed before its rename left (older than an hour). A folder
    others may write, a read-only home or a full disk: a warning, and nothing is kept."""
    folder = path.parent
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _private_enough(folder, 0o700):
            log.warning("%s: not owner-only; the %s is not kept", folder, what)
            return
        with replacing(path) as fh:
            write(fh)
        for old in folder.glob(stale):
            if old != path:
                old.unlink(missing_ok=True)
        for left in folder.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                if time.time() - left.stat().st_mtime > 3600:
                    left.unlink()
    except OSError as exc:  # lookups still work, only slower
        log.warning("%s: %s not written: %s", folder, what, exc.strerror or exc)


def _read(path: Path) -> KnowledgeBase | None:
    if not owner_only(path, "lookup index"):
        return None
    try:
        with path.open("rb") as fh:
            data: Any = pickle.load(fh)  # noqa: S301 - owner-only file written by auditor
    except (Exception, MemoryError) as exc:  # noqa: BLE001 - a damaged pickle raises anything
        log.warning("%s: unreadable lookup index (%s); rebuilding", path, type(exc).__name__)
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    if not (isinstance(data, dict) and data.get("format") == FORMAT):
        return None
    kb = data.get("kb")
    if not isinstance(kb, KnowledgeBase):
        return None
    suffixes = data.get("psl")
    if isinstance(suffixes, psl.SuffixList):
        psl.seed(suffixes)
    return kb


def _write(path: Path, kb: KnowledgeBase) -> None:
    data = {"format": FORMAT, "kb": kb, "psl": psl.current()}
    write_cache_file(
        path,
        lambda fh: pickle.dump(data, fh, protocol=pickle.HIGHEST_PROTOCOL),
        stale=f"{INDEX_PREFIX}*.pickle",
        what="lookup index",
    )


def index_path() -> Path:
    return cache_dir() / f"{INDEX_PREFIX}{inputs_digest()[:32]}.pickle"


def load_index(*, rebuild: bool = False) -> KnowledgeBase:
    """The built-in knowledge base with the data sets, from the compiled index when it is
    current, else built (and the index written for the next call)."""
    path = index_path()
    if not rebuild:
        kb = _read(path)
        if kb is not None:
            return kb
    kb = KnowledgeBase.load()
    _write(path, kb)
    return kb
