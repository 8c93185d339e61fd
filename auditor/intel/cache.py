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
import json
import logging
import pickle
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from auditor.cachedir import add_file_stats, cache_dir, owner_only, write_cache_file
from auditor.intel import psl
from auditor.intel.kb import DATA_DIR, KnowledgeBase, format_attribution

log = logging.getLogger(__name__)

INDEX_PREFIX = "intel-index-"
FORMAT = 1  # bumped when the pickled layout changes


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
    add_file_stats(h, [*code, *data, *_user_dataset_files()])
    return h.hexdigest()


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


def lookup_command(
    targets: Sequence[str], intel: Sequence[Path | str], as_json: bool
) -> Iterator[tuple[dict[str, Any], str]]:
    """``auditor intel lookup HOST|IP... [--intel LABEL=FILE ...] [--json]``.

    Yields, per target, the JSON form of its attribution (with the provenance of the
    knowledge base and data sets under ``kb``) and the text to print: one line of JSON with
    ``as_json``, else a human summary. Without user intel the compiled lookup index is used
    (:func:`load_index`), which answers from a cold start in a fraction of a second.
    """
    if intel:
        kb = KnowledgeBase.load(extra=list(intel))
    else:
        kb = load_index()
    for target in targets:
        attribution = kb.lookup_host(target)
        data = attribution.to_json()
        data["kb"] = kb.provenance(ip=attribution.ip is not None)
        if as_json:
            yield data, json.dumps(data, sort_keys=True, ensure_ascii=True)
        else:
            yield data, format_attribution(attribution, kb)
