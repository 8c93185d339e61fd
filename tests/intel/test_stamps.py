"""The knowledge base's in-process caches (auditor.intel.stamps) in a process that keeps
running: a file of the knowledge base or of its data sets edited, replaced, added or removed
on disk is read again, as a new process would read it; files left alone are not."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from auditor.intel import dataset_store, kb
from auditor.intel.kb import KnowledgeBase
from auditor.intel.stamps import StampedCache, stamp


def test_the_cache_builds_again_on_every_kind_of_change(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("one")
    builds: list[str] = []

    def build() -> str:
        builds.append(a.read_text())
        return builds[-1]

    cache = StampedCache(lambda: sorted(tmp_path.glob("*.yaml")), build)
    assert cache.get() == "one" and cache.get() == "one" and len(builds) == 1
    a.write_text("one, edited")  # edited in place
    assert cache.get() == "one, edited" and len(builds) == 2
    b.write_text("x")  # added
    cache.get()
    b.unlink()  # removed
    cache.get()
    assert len(builds) == 4
    new = tmp_path / "a.new"
    new.write_text("two")
    st = a.stat()
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(new, a)  # replaced by a file of the same size and time: another inode
    assert cache.get() == "two" and len(builds) == 5
    cache.clear()
    cache.get()
    assert len(builds) == 6


def test_a_stamp_leaves_out_what_is_gone(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a")
    assert [s[0] for s in stamp([tmp_path / "a", tmp_path / "gone", tmp_path / "a"])] == [
        str(tmp_path / "a")
    ]


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the knowledge base's data, read in its place."""
    copy = tmp_path / "data"
    shutil.copytree(kb.DATA_DIR, copy)
    monkeypatch.setattr(kb, "DATA_DIR", copy)
    return copy


def test_the_default_knowledge_base_sees_its_files_edited(data_dir: Path) -> None:
    first = KnowledgeBase.default()
    assert KnowledgeBase.default() is first  # loaded once while nothing changes
    assert first.lookup_host("t.lo6-telemetry-test.com").organisation is None
    sources = data_dir / "sources.yaml"
    text = sources.read_text()
    sources.write_text(text.replace(f'version: "{first.version}"', 'version: "edited"', 1))
    (data_dir / "lo6.yaml").write_text(
        "organisations:\n"
        "  - {id: lo6, name: Lo6 Telemetry Ltd, country: DE, categories: [analytics_tracker],\n"
        "     sources: [site-sentry]}\n"
        "domains:\n"
        "  - {domain: lo6-telemetry-test.com, organisation: lo6, source: site-sentry}\n"
    )
    edited = KnowledgeBase.default()
    assert edited is not first and edited.version == "edited"
    assert edited.lookup_host("t.lo6-telemetry-test.com").organisation == "lo6"
    (data_dir / "lo6.yaml").unlink()
    assert KnowledgeBase.default().lookup_host("t.lo6-telemetry-test.com").organisation is None


def test_the_bundled_data_sets_are_read_again_when_they_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundled = sorted(dataset_store.BUNDLED_DIR.glob("*.json.gz"))
    assert len(bundled) >= 2
    copy = tmp_path / "datasets"
    copy.mkdir()
    shutil.copy(bundled[0], copy)
    monkeypatch.setattr(dataset_store, "BUNDLED_DIR", copy)
    ids = [d.id for d in dataset_store.load_datasets(include_user=False).datasets]
    assert len(ids) == 1
    shutil.copy(bundled[1], copy)
    more = [d.id for d in dataset_store.load_datasets(include_user=False).datasets]
    assert len(more) == 2 and ids[0] in more
