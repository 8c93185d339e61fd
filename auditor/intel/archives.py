"""Reading what a user downloaded, which may be hostile: a folder, a zip or tar archive (gzip,
bzip2 or xz compressed or not), a gzip'd file or a plain file, as one file's bytes or a
mapping of relative path -> bytes (:class:`FileTree`).

Every member and the whole are capped (an archive bomb stops at the cap, not at the end of
the disk), member names that climb out of the archive are dropped, symlinks are not followed,
and a damaged stream is an :class:`IntelImportError` naming the file. Nothing is extracted to
disk. The caller decides what the files mean (:func:`auditor.intel.dataset_store.parse_source`).
"""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Final

from auditor.intel.model import IntelImportError
from auditor.intel.schema import MAX_FILE_BYTES, safe_text

MAX_MEMBER_BYTES: Final = MAX_FILE_BYTES
"""Larger files (or archive members, once expanded) are refused."""
MAX_TREE_BYTES: Final = 4 * 1024**3
"""A data set's files together, expanded: Tracker Radar's domain files are large."""
MAX_TREE_FILES: Final = 500_000


def gunzip(data: bytes, where: str, limit: int) -> bytes:
    """A gzip stream (or several members) expanded to at most ``limit`` bytes."""
    out = bytearray()
    while data:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += d.decompress(data, limit - len(out) + 1)
        except zlib.error as exc:
            raise IntelImportError(f"{where}: damaged gzip data: {exc}") from None
        if len(out) > limit or d.unconsumed_tail:
            raise IntelImportError(f"{where}: expands to over {limit} bytes")
        if not d.eof:
            raise IntelImportError(f"{where}: gzip data cut short")
        data = d.unused_data
    return bytes(out)


_STREAM_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError)
"""What a damaged compressed stream raises (bz2 raises OSError)."""


class _Budget:
    """Bytes and files read from one source, capped: an archive bomb stops here."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.bytes = 0

    def take(self, size: int, name: str) -> None:
        if size > MAX_MEMBER_BYTES:
            raise IntelImportError(f"{self.where}/{name}: over {MAX_MEMBER_BYTES} bytes")
        self.bytes += size
        if self.bytes > MAX_TREE_BYTES:
            raise IntelImportError(f"{self.where}: expands to over {MAX_TREE_BYTES} bytes")


class FileTree(Mapping[str, bytes]):
    """Relative path -> bytes of a folder or an archive, read when asked for (in the order
    listed, which for a tar archive is its own order), within one :class:`_Budget`."""

    def __init__(self, names: Sequence[str], read: Callable[[str], bytes]) -> None:
        self._names = list(dict.fromkeys(names))
        self._set = set(self._names)
        self._read = read

    def __getitem__(self, key: str) -> bytes:
        if key not in self._set:
            raise KeyError(key)
        return self._read(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _clean_member(name: str) -> str | None:
    p = PurePosixPath(name.replace("\\", "/"))
    parts = [x for x in p.parts if x not in ("", ".", "/")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _strip_top(names: Sequence[str]) -> dict[str, str]:
    """Shown name -> member name, without a top folder that every member shares (GitHub's
    ``repo-main/``)."""
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1 and all("/" in n for n in names):
        return {n.split("/", 1)[1]: n for n in names}
    return {n: n for n in names}


def _dir_tree(path: Path, budget: _Budget) -> FileTree:
    names: list[str] = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            full = Path(root) / f
            if f.startswith(".") or full.is_symlink() or not full.is_file():
                continue
            names.append(full.relative_to(path).as_posix())
            if len(names) > MAX_TREE_FILES:
                raise IntelImportError(f"{path}: over {MAX_TREE_FILES} files")

    def read(name: str) -> bytes:
        full = path / name
        try:
            budget.take(full.stat().st_size, name)
            with full.open("rb") as f:
                data = f.read(MAX_MEMBER_BYTES + 1)
        except OSError as exc:
            raise IntelImportError(f"{path}/{name}: cannot read: {exc.strerror or exc}") from None
        budget.take(len(data) - min(len(data), MAX_MEMBER_BYTES), name)
        return data

    return FileTree(names, read)


def _zip_tree(fileobj: io.BufferedReader, where: str, budget: _Budget) -> FileTree:
    import zipfile  # not at the top: see _tar_tree

    try:
        zf = zipfile.ZipFile(fileobj)
        infos = [i for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, ValueError, NotImplementedError, *_STREAM_ERRORS) as exc:
        raise IntelImportError(f"{where}: damaged zip archive: {exc}") from None
    if len(infos) > MAX_TREE_FILES:
        raise IntelImportError(f"{where}: over {MAX_TREE_FILES} files")
    members: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = _clean_member(info.filename)
        if name is not None:
            members.setdefault(name, info)
    shown = _strip_top(list(members))

    def read(name: str) -> bytes:
        info = members[shown[name]]
        try:
            with zf.open(info) as f:
                out = f.read(MAX_MEMBER_BYTES + 1)
        except (zipfile.BadZipFile, NotImplementedError, ValueError, *_STREAM_ERRORS) as exc:
            raise IntelImportError(f"{where}/{name}: damaged zip member: {exc}") from None
        except RuntimeError as exc:  # an encrypted member
            raise IntelImportError(f"{where}/{name}: {exc}") from None
        budget.take(len(out), name)
        return out

    return FileTree(list(shown), read)


def _tar_tree(fileobj: io.BufferedReader, where: str, budget: _Budget) -> FileTree:
    # Imported here, not at the top: every command that matches data sets imports this module
    # (the compiled form uses gunzip), tarfile and zipfile add about 5 ms to that, and only
    # `auditor intel import` reads archives.
    import tarfile

    members: dict[str, tarfile.TarInfo] = {}
    try:
        tf = tarfile.open(fileobj=fileobj, mode="r:*")
        count = total = 0
        for m in tf:  # reading the headers expands the stream: sizes are capped first
            count += 1
            if count > MAX_TREE_FILES:
                raise IntelImportError(f"{where}: over {MAX_TREE_FILES} files")
            if not m.isfile():
                continue
            if m.size > MAX_MEMBER_BYTES:
                raise IntelImportError(f"{where}/{m.name}: over {MAX_MEMBER_BYTES} bytes")
            total += m.size
            if total > MAX_TREE_BYTES:
                raise IntelImportError(f"{where}: expands to over {MAX_TREE_BYTES} bytes")
            name = _clean_member(m.name)
            if name is not None:
                members.setdefault(name, m)
    except (tarfile.TarError, ValueError, *_STREAM_ERRORS) as exc:
        raise IntelImportError(f"{where}: damaged tar archive: {exc}") from None
    shown = _strip_top(list(members))

    def read(name: str) -> bytes:
        m = members[shown[name]]
        try:
            f = tf.extractfile(m)
            out = f.read(MAX_MEMBER_BYTES + 1) if f is not None else b""
        except (tarfile.TarError, ValueError, *_STREAM_ERRORS) as exc:
            raise IntelImportError(f"{where}/{name}: damaged tar member: {exc}") from None
        budget.take(len(out), name)
        return out

    return FileTree(list(shown), read)


def _is_tar(head: bytes) -> bool:
    return len(head) > 262 and head[257:262] == b"ustar"


def _gunzip_head(data: bytes) -> bytes:
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, 512)
    except zlib.error:
        return b""


def read_source(path: Path) -> tuple[bytes | FileTree, str]:
    """What the user downloaded, as one file's bytes or a tree of files, and its SHA-256.

    A folder (its files; hidden ones left out, symlinks not followed), a zip or tar archive
    (gzip, bzip2 or xz compressed or not; a top folder that every member shares is dropped),
    a gzip'd file, or a plain file. Archives are read from disk as needed, every member and
    the whole capped. The SHA-256 is the file's, or for a folder the SHA-256 of its sorted
    ``sha256  relative/path`` lines (what ``sha256sum`` prints for each file)."""
    where = str(path)
    budget = _Budget(where)
    try:
        if path.is_dir():
            tree = _dir_tree(path, budget)
            lines = "".join(
                f"{hashlib.sha256(tree[name]).hexdigest()}  {name}\n" for name in sorted(tree)
            )
            budget.bytes = 0
            return tree, hashlib.sha256(lines.encode("utf-8")).hexdigest()
        size = path.stat().st_size
        if size > MAX_TREE_BYTES:
            raise IntelImportError(f"{where}: {size} bytes, over the {MAX_TREE_BYTES} limit")
        digest = hashlib.sha256()
        with path.open("rb") as f:
            head = f.read(1024)
            digest.update(head)
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        archive = head[:4] in (b"PK\x03\x04", b"PK\x05\x06") or _is_tar(head)
        archive = archive or head[:3] in (b"BZh", b"\xfd7z")
        if head[:2] == b"\x1f\x8b" and _is_tar(_gunzip_head(head)):
            archive = True
        if archive:
            fileobj = path.open("rb")  # the tree reads from it later
            if head[:2] == b"PK":
                return _zip_tree(fileobj, where, budget), digest.hexdigest()
            return _tar_tree(fileobj, where, budget), digest.hexdigest()
        if size > MAX_MEMBER_BYTES and head[:2] != b"\x1f\x8b":
            raise IntelImportError(f"{where}: {size} bytes, over the {MAX_MEMBER_BYTES} limit")
        data = path.read_bytes()
    except OSError as exc:
        raise IntelImportError(f"{where}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:  # a NUL in the path
        raise IntelImportError(f"{safe_text(where)}: cannot read: {exc}") from None
    if data[:2] == b"\x1f\x8b":
        data = gunzip(data, where, MAX_MEMBER_BYTES)
    return data, digest.hexdigest()
