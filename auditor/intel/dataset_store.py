"""Where the data sets are kept, and how they get there: the bundled snapshots under
``auditor/intel/data/datasets/`` and the user's imports under
``<data dir>/intel/datasets/<id>/`` (folders 0700, files 0600). Loading them for matching
(:func:`load_datasets`), listing them, importing the copy of a data set the user downloaded
(read by :mod:`auditor.intel.archives` and the format's reader) and removing an import."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Final

from auditor.fsutil import private_dir, write_private
from auditor.intel.archives import FileTree, read_source
from auditor.intel.dataset_compiled import (
    COMPILED_SUFFIX,
    LoadedDataset,
    compile_dataset,
    compiled_bytes,
    load_compiled,
)
from auditor.intel.dataset_index import DatasetIndex
from auditor.intel.dataset_model import FORMATS, DatasetFormat, DatasetInfo, ParsedDataset
from auditor.intel.model import IntelImportError
from auditor.intel.schema import ID_RE, safe_text
from auditor.intel.stamps import StampedCache

log = logging.getLogger(__name__)

BUNDLED_DIR: Final = Path(__file__).resolve().parent / "data" / "datasets"
"""Where ``scripts/build_datasets`` writes the bundled snapshots."""


# --- loading ------------------------------------------------------------------------------------


def user_data_dir() -> Path:
    """auditor's per-user data: ``$AUDITOR_DATA_DIR``, else ``$XDG_DATA_HOME/auditor``, else
    ``~/.local/share/auditor``."""
    explicit = os.environ.get("AUDITOR_DATA_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "auditor"
    return Path.home() / ".local" / "share" / "auditor"


def _datasets_dir(data_dir: Path | None) -> Path:
    return (data_dir if data_dir is not None else user_data_dir()) / "intel" / "datasets"


def _bundled_files() -> list[Path]:
    return sorted(BUNDLED_DIR.glob(f"*{COMPILED_SUFFIX}")) if BUNDLED_DIR.is_dir() else []


def _read_bundled() -> tuple[LoadedDataset, ...]:
    return tuple(
        load_compiled(path.read_bytes(), str(path), bundled=True, path=_shown(path))
        for path in _bundled_files()
    )


# the bundled snapshots, read once per process and again when a file of them changes
_bundled_cache = StampedCache(_bundled_files, _read_bundled)


def _bundled() -> tuple[LoadedDataset, ...]:
    return _bundled_cache.get()


def dataset_files(*, data_dir: Path | None = None) -> list[Path]:
    """The files :func:`load_datasets` reads: the bundled snapshots and the user's imports."""
    return _bundled_files() + _user_files(data_dir)


def _shown(path: Path) -> str:
    """A bundled file's path relative to the package's parent (``auditor/intel/data/...``)."""
    root = Path(__file__).resolve().parents[2]
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


_user_cache: dict[str, tuple[tuple[int, int], LoadedDataset]] = {}


def _load_user(path: Path) -> LoadedDataset:
    st = path.stat()
    key = (st.st_mtime_ns, st.st_size)
    hit = _user_cache.get(str(path))
    if hit is not None and hit[0] == key:
        return hit[1]
    loaded = load_compiled(path.read_bytes(), str(path), bundled=False, path=None)
    _user_cache[str(path)] = (key, loaded)
    return loaded


def _user_files(data_dir: Path | None) -> list[Path]:
    root = _datasets_dir(data_dir)
    if not root.is_dir():
        return []
    return sorted(
        p / f"dataset{COMPILED_SUFFIX}"
        for p in root.iterdir()
        if ID_RE.match(p.name) and (p / f"dataset{COMPILED_SUFFIX}").is_file()
    )


def load_datasets(
    *, data_dir: Path | None = None, include_bundled: bool = True, include_user: bool = True
) -> DatasetIndex:
    """The bundled snapshots and the user's imports, ready for matching.

    A user import with the id of a bundled data set replaces it (a newer snapshot). A user
    import that cannot be read is logged and left out; a bundled one that cannot be read is
    an error (the package is broken)."""
    start = time.perf_counter()
    sets: dict[str, LoadedDataset] = {}
    if include_bundled:
        for ds in _bundled():
            sets[ds.info.id] = ds
    users: list[LoadedDataset] = []
    if include_user:
        for path in _user_files(data_dir):
            try:
                ds = _load_user(path)
            except (OSError, IntelImportError) as exc:
                log.warning("data set %s left out: %s", path.parent.name, exc)
                continue
            if ds.info.id in sets:
                log.info("data set %s: the user's import replaces the bundled one", ds.info.id)
                del sets[ds.info.id]
            users.append(ds)
    ordered = sorted(sets.values(), key=lambda d: d.info.id) + sorted(
        users, key=lambda d: d.info.id
    )
    log.debug("data sets loaded in %.1f ms", (time.perf_counter() - start) * 1000)
    return DatasetIndex(ordered)


def list_datasets(*, data_dir: Path | None = None) -> list[DatasetInfo]:
    """Every data set: the bundled snapshots, then the user's imports (by id)."""
    out = [ds.info for ds in _bundled()]
    for path in _user_files(data_dir):
        info_path = path.with_name("info.json")
        try:
            meta = json.loads(info_path.read_text(encoding="utf-8"))
            out.append(DatasetInfo.from_json(meta))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("data set %s: unreadable info.json: %s", path.parent.name, exc)
    return out


# --- reading what the user downloaded -----------------------------------------------------------


def _one_file(tree: Mapping[str, bytes], fmt: DatasetFormat, where: str) -> tuple[bytes, str]:
    """The one file of a one-file format found in a folder or archive."""
    names = list(tree)
    for pattern in fmt.file_patterns:
        found = [n for n in names if PurePosixPath(n).match(pattern)]
        if len(found) == 1:
            return tree[found[0]], f"{where}/{found[0]}"
        if len(found) > 1:
            shown = ", ".join(sorted(found)[:5])
            raise IntelImportError(f"{where}: several files could be the {fmt.name} list: {shown}")
    raise IntelImportError(
        f"{where}: no {fmt.name} file in it (looked for {', '.join(fmt.file_patterns)})"
    )


def parse_source(fmt: str, path: Path) -> tuple[DatasetFormat, ParsedDataset, str]:
    """Read ``path`` with the reader of ``fmt``: (format, parsed data set, SHA-256)."""
    spec = FORMATS.get(fmt)
    if spec is None:
        raise IntelImportError(f"unknown data set format {fmt!r} (one of: {', '.join(FORMATS)})")
    source, digest = read_source(path)
    where = str(path)
    if spec.tree:
        tree: Mapping[str, bytes] = (
            source if isinstance(source, FileTree) else {_single_name(path): source}
        )
        parsed = spec.reader()(tree, where=where)
    else:
        if isinstance(source, FileTree):
            data, where = _one_file(source, spec, where)
        else:
            data = source
        parsed = spec.reader()(data, where=where)
    return spec, parsed, digest


def _single_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".gzip"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


# --- imports ------------------------------------------------------------------------------------


def import_dataset(
    fmt: str, path: Path, *, name: str | None = None, data_dir: Path | None = None
) -> DatasetInfo:
    """Parse the copy of a data set the user downloaded, compile it and store it under
    ``<data dir>/intel/datasets/<id>/`` (folders 0700, files 0600), replacing an earlier
    import of the same id. ``name`` is the id (a lower-case slug) instead of the format's."""
    spec = FORMATS.get(fmt)
    if spec is None:
        raise IntelImportError(f"unknown data set format {fmt!r} (one of: {', '.join(FORMATS)})")
    dataset_id = name if name is not None else spec.id
    if not ID_RE.match(dataset_id):
        raise IntelImportError(f"data set id {safe_text(dataset_id)!r} must be a lower-case slug")
    spec, parsed, digest = parse_source(fmt, path)
    if not parsed.rules:
        raise IntelImportError(f"{path}: no usable rule in it (is it a {fmt} data set?)")
    source = str(path.resolve())
    doc = compile_dataset(
        parsed,
        id=dataset_id,
        name=spec.title,
        format=spec.name,
        licence=spec.licence,
        url=spec.url,
        version=parsed.version,
        date=parsed.date,
        sha256=digest,
        source=source,
    )
    info = DatasetInfo(
        id=dataset_id,
        name=spec.title,
        format=spec.name,
        version=parsed.version,
        date=parsed.date,
        licence=spec.licence,
        url=spec.url,
        sha256=digest,
        bundled=False,
        path=source,
        entities=len(parsed.entities),
        rules=len(parsed.rules),
        skipped=parsed.skipped,
        warnings=parsed.warning_count,
    )
    root = _datasets_dir(data_dir)
    for d in (root.parent, root):  # the folders up to ``intel`` owner-only
        private_dir(d)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dataset_id}.", dir=root))
    try:
        write_private(tmp / f"dataset{COMPILED_SUFFIX}", compiled_bytes(doc))
        meta = json.dumps(info.to_json(), ensure_ascii=False, indent=1, sort_keys=True) + "\n"
        write_private(tmp / "info.json", meta.encode("utf-8"))
        if parsed.warnings:
            text = "".join(f"{w}\n" for w in parsed.warnings)
            write_private(tmp / "warnings.txt", text.encode("utf-8"))
        final = root / dataset_id
        old = None
        if final.exists():
            old = root / f".{dataset_id}.old-{os.getpid()}"
            final.rename(old)
        tmp.rename(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise IntelImportError(f"{root}: cannot store the data set: {exc}") from None
    log.info(
        "data set %s: %d entities, %d rules, %d skipped, %d warnings from %s",
        dataset_id,
        info.entities,
        info.rules,
        info.skipped,
        info.warnings,
        path,
    )
    for note in parsed.notes:
        log.info("data set %s: %s", dataset_id, note)
    return info


def remove_dataset(dataset_id: str, *, data_dir: Path | None = None) -> bool:
    """Remove the user's import ``dataset_id``; False when there is none (a bundled data set
    cannot be removed, only replaced by an import of the same id)."""
    if not ID_RE.match(dataset_id):
        return False
    target = _datasets_dir(data_dir) / dataset_id
    if not target.is_dir() or target.is_symlink():
        return False
    shutil.rmtree(target)
    _user_cache.pop(str(target / f"dataset{COMPILED_SUFFIX}"), None)
    return True
