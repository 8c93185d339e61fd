"""The geoip tables of :mod:`auditor.intel.bulkip` kept in the intel cache folder (issue 14:
building them from geoip2fast's lists cost 0.7 s of every analysis): the tables read back
equal the tables built from geoip2fast's data, and a damaged, foreign or stale file is
never trusted."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from auditor.intel import bulkip
from auditor.intel.ipdb import _Geoip2fast


@pytest.fixture(scope="module")
def built() -> bulkip._Tables:
    tables = bulkip._build(_Geoip2fast.get())
    assert tables is not None
    return tables


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("AUDITOR_CACHE_DIR", str(folder))
    monkeypatch.setattr(bulkip, "_cached", {})
    return folder


def _equal(a: bulkip._Tables, b: bulkip._Tables) -> bool:
    for name in bulkip._ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        if x.dtype != y.dtype or x.shape != y.shape or x.tolist() != y.tolist():
            return False
    return (a.not_found_country, a.database) == (b.not_found_country, b.database)


def test_the_tables_read_back_equal_the_tables_built(built: bulkip._Tables, cache: Path) -> None:
    first = bulkip._tables()  # built, then written
    files = list(cache.glob(f"{bulkip.TABLES_PREFIX}*.npz"))
    assert len(files) == 1 and files[0].stat().st_mode & 0o777 == 0o600
    assert first is not None and _equal(first, built)
    bulkip._cached.clear()
    again = bulkip._tables()  # read from the file
    assert again is not None and again is not first and _equal(again, built)
    ips = ["8.8.8.8", "10.0.0.1", "1.1.1.1", "223.5.5.5"]
    found = [bulkip._v4_rows(t, ips) for t in (built, again)]
    assert found[0] is not None and found[1] is not None
    assert [c.tolist() for c in found[0][1]] == [c.tolist() for c in found[1][1]]


def test_a_damaged_file_is_rebuilt(built: bulkip._Tables, cache: Path) -> None:
    bulkip._tables()
    (path,) = cache.glob(f"{bulkip.TABLES_PREFIX}*.npz")
    path.write_bytes(path.read_bytes()[:100_000])
    bulkip._cached.clear()
    again = bulkip._tables()
    assert again is not None and _equal(again, built)
    assert path.stat().st_size > 1_000_000  # written again whole


def test_a_file_others_may_write_is_not_read(built: bulkip._Tables, cache: Path) -> None:
    bulkip._tables()
    (path,) = cache.glob(f"{bulkip.TABLES_PREFIX}*.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["first"] = np.zeros_like(arrays["first"])  # someone else's tables
    with path.open("wb") as fh:
        np.savez(fh, **arrays)
    os.chmod(path, 0o666)  # noqa: S103 - the point of the test
    bulkip._cached.clear()
    again = bulkip._tables()
    assert again is not None and _equal(again, built)


def test_the_name_changes_with_the_data(tmp_path: Path, cache: Path) -> None:
    a, b = tmp_path / "a.dat.gz", tmp_path / "b.dat.gz"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    assert bulkip._tables_path(a) != bulkip._tables_path(b)
    assert bulkip._tables_path(a).parent == cache


def test_tables_read_back_without_running_geoip2fast(built: bulkip._Tables, cache: Path) -> None:
    import subprocess
    import sys

    bulkip._tables()  # written to the test's cache folder
    code = (
        "import sys; from auditor.intel import bulkip; t = bulkip._tables(); "
        "print(t is not None, 'geoip2fast' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ
    ).stdout.split()
    assert out == ["True", "False"]  # read from the file; the library's imports never ran


def test_the_name_changes_with_geoip2fast_s_code(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = tmp_path / "geoip2fast"
    lib.mkdir()
    data = lib / "data.dat.gz"
    data.write_bytes(b"same data")
    for module in ("__init__.py", "geoip2fast.py"):
        (lib / module).write_text("__version__ = '1'\n")
    monkeypatch.setattr(_Geoip2fast, "path", classmethod(lambda cls: data))
    first = bulkip._tables_path(data)
    (lib / "geoip2fast.py").write_text("__version__ = '1'  # another layout\n")
    assert bulkip._tables_path(data) != first
