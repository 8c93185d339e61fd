"""Reading what a user downloaded: folders, zip and tar archives (plain, gzip, bzip2, xz),
gzip'd and plain files; hostile names, symlinks, compression bombs and damaged streams."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import tarfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import pytest

from auditor.intel.archives import MAX_MEMBER_BYTES, FileTree, read_source
from auditor.intel.model import IntelImportError

FILES = {"dist/companies.json": b'{"a": 1}', "dist/trackers.json": b"[]", "README.md": b"x"}


def _tar(files: Mapping[str, bytes], top: str = "", mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:  # type: ignore[call-overload]
        for name, data in files.items():
            ti = tarfile.TarInfo(f"{top}/{name}" if top else name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _zip(files: Mapping[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _read(path: Path, data: bytes) -> tuple[bytes | FileTree, str]:
    path.write_bytes(data)
    return read_source(path)


def _as_dict(source: bytes | FileTree) -> dict[str, bytes]:
    assert isinstance(source, FileTree)
    return dict(source.items())


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("repo.tar", _tar(FILES, "repo-main")),
        ("repo.tar.gz", _tar(FILES, "repo-main", "w:gz")),
        ("repo.tar.bz2", _tar(FILES, "repo-main", "w:bz2")),
        ("repo.tar.xz", _tar(FILES, "repo-main", "w:xz")),
        ("repo.zip", _zip({f"repo-main/{k}": v for k, v in FILES.items()})),
    ],
)
def test_archives_drop_the_top_folder_every_member_shares(
    tmp_path: Path, name: str, data: bytes
) -> None:
    source, digest = _read(tmp_path / name, data)
    assert _as_dict(source) == FILES  # GitHub's "repo-main/" is gone
    assert digest == hashlib.sha256(data).hexdigest()


def test_member_names_cannot_climb_out(tmp_path: Path) -> None:
    hostile = {"../evil": b"1", "a/../../b": b"2", "/etc/passwd": b"3", "ok/x": b"4"}
    zsource, _ = _read(tmp_path / "a.zip", _zip(hostile))
    tsource, _ = _read(tmp_path / "a.tar", _tar(hostile))
    for source in (zsource, tsource):
        assert _as_dict(source) == {"etc/passwd": b"3", "ok/x": b"4"}


def test_a_folder_leaves_out_hidden_files_and_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "dist").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_bytes(b"ref")
    (root / ".hidden").write_bytes(b"h")
    for name, data in FILES.items():
        (root / name).write_bytes(data)
    (tmp_path / "secret").write_bytes(b"s")
    (root / "dist" / "link.json").symlink_to(tmp_path / "secret")
    source, digest = read_source(root)
    assert _as_dict(source) == FILES
    lines = "".join(f"{hashlib.sha256(FILES[n]).hexdigest()}  {n}\n" for n in sorted(FILES))
    assert digest == hashlib.sha256(lines.encode()).hexdigest()  # as `sha256sum` lists them


def test_plain_and_gzipd_files_are_one_files_bytes(tmp_path: Path) -> None:
    raw = b'{"trackers": {}}'
    assert _read(tmp_path / "t.json", raw) == (raw, hashlib.sha256(raw).hexdigest())
    packed = gzip.compress(raw) + gzip.compress(b"\n")  # several members
    assert _read(tmp_path / "t.json.gz", packed) == (
        raw + b"\n",
        hashlib.sha256(packed).hexdigest(),
    )


def test_compression_bombs_are_refused(tmp_path: Path) -> None:
    big = bytes(MAX_MEMBER_BYTES + 1)  # 64 MiB of NULs: about 64 KB compressed
    bomb = tmp_path / "trackers.json.gz"
    bomb.write_bytes(gzip.compress(big, compresslevel=1))
    with pytest.raises(IntelImportError, match="expands to over"):
        read_source(bomb)
    zpath = tmp_path / "bomb.zip"
    with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("trackers.json", big)
    tree, _ = read_source(zpath)
    assert isinstance(tree, FileTree)  # its members are read when asked for
    with pytest.raises(IntelImportError, match="over 67108864 bytes"):
        tree["trackers.json"]


NOISE = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(1000))  # incompressible


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("cut.tar.gz", _half(_tar({"a.json": NOISE}, "top", "w:gz")), "damaged tar archive"),
        ("cut.tar.xz", _half(_tar({"a.json": NOISE}, "top", "w:xz")), "damaged tar archive"),
        ("cut.zip", _half(_zip({"a.json": NOISE})), "damaged zip archive"),
        ("cut.json.gz", _half(gzip.compress(NOISE)), "gzip data cut short"),
        ("bad.json.gz", b"\x1f\x8b\x08\x00" + bytes(20), "damaged gzip data"),
    ],
)
def test_damaged_streams_are_errors_naming_the_file(
    tmp_path: Path, name: str, data: bytes, message: str
) -> None:
    path = tmp_path / name
    with pytest.raises(IntelImportError, match=message) as info:
        _read(path, data)
    assert str(info.value).startswith(str(path))


def test_a_missing_file_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(IntelImportError, match=r"missing\.json: cannot read"):
        read_source(tmp_path / "missing.json")


def test_the_compression_formats_are_detected_by_content(tmp_path: Path) -> None:
    """An archive is told by its bytes, not its name."""
    data = bz2.compress(_tar(FILES)), lzma.compress(_tar(FILES))
    for i, blob in enumerate(data):
        source, _ = _read(tmp_path / f"download-{i}.bin", blob)
        assert _as_dict(source) == FILES
