"""The packet flow cache (auditor.analysis.packetcache): an analysis from it gives the same
findings.json as one that reads the captures, on real public captures (nDPI's test captures
in tests/data/names, provenance there; and ../shared/captures when present); a capture that
changed, a damaged or foreign entry, or the cache turned off read the capture again."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from auditor.analysis import packetcache
from auditor.analysis.engine import analyze
from auditor.imports.session import import_files

DATA = Path(__file__).resolve().parents[1] / "data" / "names"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "captures"
REAL = [DATA / "android.pcap", DATA / "http_ua_splitted_in_two_pkts.pcapng", DATA / "xiaomi.pcap"]


def _doc(session: Path, tables: list[Any] | None = None) -> dict[str, Any]:
    """findings.json's document, without what two imports of the same files differ by: the
    time it was made, the session's id and its manifest's digest. ``tables``: gets the flow
    table, each value with its type (None and NaN are both "missing" to pandas' own
    comparisons, and not the same to the rules that read them)."""
    result = analyze([session])
    if tables is not None:
        flows = result.flows.drop(columns=["session"])
        tables.append(
            [
                (str(c), str(flows[c].dtype), [(type(v).__name__, repr(v)) for v in flows[c]])
                for c in flows.columns
            ]
        )
    doc = result.doc
    doc.pop("generated_at", None)
    doc["session"].pop("manifest_sha256")  # two imports of the same files: two manifests
    text = json.dumps(doc, sort_keys=True, default=str).replace(session.name, "SESSION")
    return dict(json.loads(text))


def _entries() -> list[Path]:
    return sorted((packetcache.cache_dir() / packetcache.FOLDER).glob("*" + packetcache.SUFFIX))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A packet flow cache of the test's own (the lookup index stays in the shared one)."""
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o700)
    real = packetcache.cache_dir
    monkeypatch.setattr(packetcache, "cache_dir", lambda: folder)
    assert real() != folder
    return folder / packetcache.FOLDER


@pytest.fixture(scope="module")
def cold(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], Any]:
    """A session of the real captures and its analysis with the cache off."""
    os.environ[packetcache.ENV] = "0"
    try:
        session = import_files(REAL, tmp_path_factory.mktemp("cold")).session
        tables: list[Any] = []
        return session, _doc(session, tables), tables[0]
    finally:
        del os.environ[packetcache.ENV]


def test_import_fills_the_cache_and_the_analysis_is_the_same(
    cache: Path, cold: tuple[Path, dict[str, Any], Any], tmp_path: Path
) -> None:
    session = import_files(REAL, tmp_path / "s").session
    entries = _entries()
    assert len(entries) == len(REAL)  # one per capture, written by the import
    assert all(e.stat().st_mode & 0o777 == 0o600 for e in entries)
    assert cache.stat().st_mode & 0o777 == 0o700
    before = {e: e.stat().st_mtime_ns for e in entries}
    time.sleep(0.01)
    tables: list[Any] = []
    warm = _doc(session, tables)
    assert all(e.stat().st_mtime_ns > before[e] for e in entries)  # each was read
    assert _entries() == entries  # and none written anew
    cold_doc = cold[1]
    assert warm == cold_doc
    assert tables[0] == cold[2]  # the flow table too, value by value with its type
    assert warm["endpoints"], "the real captures give endpoints"
    assert all(f["packets"] > 0 for f in warm["packets"]["SESSION"]["files"])
    assert warm["packets"]["SESSION"]["dns_lookups"]


def test_a_changed_capture_is_read_again(cache: Path, tmp_path: Path) -> None:
    session = import_files([DATA / "xiaomi.pcap"], tmp_path / "s").session
    first = _doc(session)
    (original,) = (session / "original").iterdir()
    original.chmod(0o600)
    original.write_bytes((DATA / "threema.pcap").read_bytes())  # tampered after sealing
    changed = _doc(session)
    assert len(_entries()) == 2  # a second entry, for the new bytes
    hosts = {e["ip"] for e in changed["endpoints"]}
    assert hosts != {e["ip"] for e in first["endpoints"]}
    with _off():
        assert _doc(session) == changed


def test_a_damaged_entry_is_removed_and_the_capture_read(cache: Path, tmp_path: Path) -> None:
    session = import_files([DATA / "android.pcap"], tmp_path / "s").session
    (entry,) = _entries()
    good = _doc(session)
    entry.write_bytes(entry.read_bytes()[:1000])  # cut
    assert _doc(session) == good
    (again,) = _entries()  # written anew, whole
    assert again.stat().st_size > 1000


def test_an_entry_others_may_write_is_not_read(
    cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    session = import_files([DATA / "android.pcap"], tmp_path / "s").session
    (entry,) = _entries()
    good = _doc(session)
    entry.chmod(0o666)
    stamp = entry.stat().st_mtime_ns
    with caplog.at_level("WARNING"):
        assert _doc(session) == good
    assert "not owner-only" in caplog.text
    assert entry.stat().st_mtime_ns != stamp  # replaced by the new read, owner-only again
    assert entry.stat().st_mode & 0o777 == 0o600


def test_off_keeps_nothing(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(packetcache.ENV, "0")
    session = import_files([DATA / "xiaomi.pcap"], tmp_path / "s").session
    _doc(session)
    assert not cache.exists() or not _entries()


def test_prune_keeps_the_recent_within_the_bound(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    now = time.time()
    for i, age_days in enumerate([30, 3, 2, 1]):
        p = folder / f"{i}{packetcache.SUFFIX}"
        p.write_bytes(b"x" * 1000)
        os.utime(p, (now - age_days * 86400, now - age_days * 86400))
    (folder / "other.txt").write_text("not an entry")
    assert packetcache.prune(folder, max_bytes=2500, max_age_days=14) == 2
    assert sorted(p.name for p in folder.iterdir()) == [
        f"2{packetcache.SUFFIX}",
        f"3{packetcache.SUFFIX}",
        "other.txt",
    ]


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/captures is absent")
def test_shared_captures_same_from_the_cache(cache: Path, tmp_path: Path) -> None:
    captures = sorted(SHARED.glob("*.pcap"))[:6]
    assert captures
    with _off():
        cold_session = import_files(captures, tmp_path / "cold").session
        cold_doc = _doc(cold_session)
    session = import_files(captures, tmp_path / "warm").session
    assert len(_entries()) == len(captures)
    assert _doc(session) == cold_doc


class _off:
    """The cache turned off for a block."""

    def __enter__(self) -> None:
        self.saved = os.environ.get(packetcache.ENV)
        os.environ[packetcache.ENV] = "0"

    def __exit__(self, *exc: object) -> None:
        if self.saved is None:
            os.environ.pop(packetcache.ENV, None)
        else:
            os.environ[packetcache.ENV] = self.saved


def test_a_capture_that_changes_while_it_is_imported_is_refused(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The import's read is kept under the SHA-256 it computes next: a capture rewritten in
    between (same size) would put flows the sealed copy does not hold into the cache."""
    from auditor.imports import ImportFileError
    from auditor.imports import session as importer

    cap = tmp_path / "android.pcap"
    cap.write_bytes((DATA / "android.pcap").read_bytes())
    real = importer._read_packets

    def read_then_rewrite(path: Path) -> Any:
        got = real(path)
        data = bytearray(path.read_bytes())
        data[len(data) // 2 :] = b"\xff" * (len(data) - len(data) // 2)
        path.write_bytes(bytes(data))
        return got

    monkeypatch.setattr(importer, "_read_packets", read_then_rewrite)
    with pytest.raises(ImportFileError, match="changed while it was read"):
        import_files([cap], tmp_path / "s")
    assert not _entries()


def test_entries_arrow_cannot_keep_exactly_are_neither_kept_nor_trusted(
    cache: Path, tmp_path: Path
) -> None:
    import pandas as pd

    mixed = pd.DataFrame({"v": pd.Series([1, 2.5, None], dtype=object)})  # 1 would become 1.0
    packetcache.store(cache / f"mixed{packetcache.SUFFIX}", mixed, {})
    huge = pd.DataFrame({"v": pd.Series([2**70, None], dtype=object)})  # past int64
    packetcache.store(cache / f"huge{packetcache.SUFFIX}", huge, {})
    assert not _entries()
    plain = pd.DataFrame({"v": pd.Series(["a", None, float("nan")], dtype=object)})
    entry = cache / f"plain{packetcache.SUFFIX}"
    packetcache.store(entry, plain, {"n": 1})
    got = packetcache.load(entry)
    assert got is not None and got[1] == {"n": 1}
    assert [type(v).__name__ for v in got[0]["v"]] == ["str", "NoneType", "float"]
    # an entry of the right format without its facts is removed, not a crash
    import json

    import pyarrow as pa
    import pyarrow.ipc as ipc

    table = pa.table({"v": ["a"]}).replace_schema_metadata(
        {packetcache.META: json.dumps({"format": packetcache.FORMAT, "has_frame": False}).encode()}
    )
    with entry.open("wb") as fh, ipc.new_file(fh, table.schema) as w:
        w.write_table(table)
    assert packetcache.load(entry) is None and not entry.exists()


def _digests() -> list[Path]:
    folder = packetcache.cache_dir() / packetcache.FOLDER / packetcache.DIGESTS
    return sorted(folder.glob("*" + packetcache.DIGEST_SUFFIX))


def test_a_capture_is_hashed_again_only_when_it_changed(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(packetcache, "SETTLED_S", 0.0)  # written a moment ago: settled
    capture = tmp_path / "a.pcap"
    capture.write_bytes((DATA / "android.pcap").read_bytes())
    hashed: list[Path] = []
    real = packetcache.file_sha256

    def counted(path: Path) -> str:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(packetcache, "file_sha256", counted)
    first = packetcache.capture_sha256(capture)
    assert first == real(capture) and len(hashed) == 1
    (kept,) = _digests()
    assert kept.stat().st_mode & 0o777 == 0o600
    assert packetcache.capture_sha256(capture) == first and len(hashed) == 1  # not hashed
    # other bytes of the same size, the modification time set back: the change time moved
    st = capture.stat()
    data = bytearray(capture.read_bytes())
    data[-1] ^= 0xFF
    time.sleep(0.01)
    capture.write_bytes(bytes(data))
    os.utime(capture, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert capture.stat().st_size == st.st_size and capture.stat().st_mtime_ns == st.st_mtime_ns
    second = packetcache.capture_sha256(capture)
    assert len(hashed) == 2 and second == real(capture) != first
    # a kept digest others may write is not read
    for p in _digests():
        p.chmod(0o666)
    assert packetcache.capture_sha256(capture) == second and len(hashed) == 3


def test_a_capture_changed_just_now_keeps_no_digest(cache: Path, tmp_path: Path) -> None:
    capture = tmp_path / "a.pcap"
    capture.write_bytes((DATA / "android.pcap").read_bytes())
    assert packetcache.capture_sha256(capture) == packetcache.file_sha256(capture)
    assert not _digests()  # it could change again within the clock's tick, unseen


def test_off_hashes_every_time(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(packetcache.ENV, "0")
    monkeypatch.setattr(packetcache, "SETTLED_S", 0.0)
    capture = tmp_path / "a.pcap"
    capture.write_bytes(b"x" * 100)
    assert packetcache.capture_sha256(capture) == packetcache.file_sha256(capture)
    assert not _digests()
