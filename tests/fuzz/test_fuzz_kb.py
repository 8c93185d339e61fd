"""The knowledge base's loader: extra intel files given to ``KnowledgeBase.load(extra=...)``
(any format, any label), and the KB's own data files (``sources.yaml``, ``jurisdictions.yaml``,
organisation files) mutated as text and as data. Only the intel errors (KnowledgeBaseError,
IntelImportError) may escape; a KB that loads answers lookups."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import example
from hypothesis import strategies as st

from auditor.intel import kb as kb_module
from auditor.intel.kb import DATA_DIR, JURISDICTIONS_FILE, SOURCES_FILE, KnowledgeBase
from auditor.intel.model import IntelError
from auditor.intel.schema import IndicatorKind
from tests.fuzz.helpers import fuzz, mutated, mutated_json, mutated_text, plain_data, sample_paths

ORG_FILES = ("huawei.yaml", "alibaba.yaml", "zte.yaml", "xiaomi.yaml")
KB_KEYS = (
    "organisations",
    "domains",
    "hosts",
    "asns",
    "asn",
    "names",
    "domain",
    "host",
    "id",
    "name",
    "country",
    "categories",
    "state_linked",
    "sources",
    "source",
    "parent",
    "manufacturers",
    "countries",
    "eu_eea",
    "adequacy",
    "facts",
    "intelligence_obligation",
    "adequacy_as_of",
    "version",
    "updated",
    "title",
    "publisher",
    "year",
    "url",
)


@cache
def _workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="auditor-fuzz-kb-"))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


@cache
def _mini_data() -> dict[str, Any]:
    """A small but valid data folder: a few organisation files, the countries and sources
    they need. Loads in milliseconds, where the whole KB takes ~0.1 s."""
    orgs = {n: plain_data(yaml.safe_load((DATA_DIR / n).read_text())) for n in ORG_FILES}
    jur = plain_data(yaml.safe_load((DATA_DIR / JURISDICTIONS_FILE).read_text()))
    wanted = {o["country"] for d in orgs.values() for o in d.get("organisations", [])}
    wanted |= {"FR", "DE", "US", "CN", "GB"}
    jur["countries"] = {c: v for c, v in jur["countries"].items() if c in wanted}
    src = plain_data(yaml.safe_load((DATA_DIR / SOURCES_FILE).read_text()))
    cited = set(_strings([jur, *orgs.values()]))
    src["sources"] = {k: v for k, v in src["sources"].items() if k in cited}
    return {SOURCES_FILE: src, JURISDICTIONS_FILE: jur, **orgs}


def _dump(doc: Any) -> str:
    try:
        return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    except (yaml.YAMLError, UnicodeError):
        return ""


@cache
def _mini_texts() -> dict[str, str]:
    return {k: _dump(v) for k, v in _mini_data().items()}


_ON_DISK: dict[str, str] = {}


def _write_data(files: dict[str, str]) -> Path:
    """The data folder holding ``files``; only what changed since the last call is written."""
    folder = _workdir() / "data"
    if not _ON_DISK:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
    for name in set(_ON_DISK) - set(files):
        (folder / name).unlink()
        del _ON_DISK[name]
    for name, text in files.items():
        if _ON_DISK.get(name) != text:
            (folder / name).write_text(text, encoding="utf-8", errors="surrogatepass")
            _ON_DISK[name] = text
    return folder


def _use(kb: KnowledgeBase) -> None:
    for host in ("www.huawei.com", "metrics1.data.hicloud.com", "a.b.zte.com.cn", "x.example"):
        kb.lookup_host(host, cache=False)
    kb.lookup(host="api.xiaomi.com", ip="8.8.8.8")
    kb.info()
    for f in kb.intel_files:
        for e in f.entries[:10]:
            if e.kind in (IndicatorKind.HOST, IndicatorKind.DOMAIN):
                kb.lookup_host(e.value, cache=False)
            elif e.kind is IndicatorKind.IP:
                kb.lookup_ip(e.value)


def _load_data_dir(files: dict[str, str]) -> None:
    folder = _write_data(files)
    try:
        kb = KnowledgeBase.load(data_dir=folder)
    except IntelError:
        return
    _use(kb)


def test_the_mini_data_folder_loads() -> None:
    """The seed of the data fuzz is itself a valid KB (or the fuzz would test refusals only)."""
    kb = KnowledgeBase.load(data_dir=_write_data({k: _dump(v) for k, v in _mini_data().items()}))
    assert kb.lookup_host("a.b.zte.com.cn").organisation == "zte"


@fuzz(
    st.sampled_from([SOURCES_FILE, JURISDICTIONS_FILE, *ORG_FILES]),
    st.data(),
    share=0.4,
)
def test_mutated_data_files(name: str, data: st.DataObject) -> None:
    docs = _mini_data()
    files = dict(_mini_texts())
    if data.draw(st.booleans(), label="as text"):
        files[name] = data.draw(mutated_text([files[name]]), label="text")
    else:
        files[name] = _dump(data.draw(mutated_json([docs[name]], keys=KB_KEYS), label="doc"))
    _load_data_dir(files)


@pytest.mark.parametrize("value", [True, 5, "zte", {"id": "zte"}])
def test_organisations_that_are_not_a_list(value: Any) -> None:
    """Found by the fuzz: iterating ``organisations: true`` raised TypeError."""
    files = {k: _dump(v) for k, v in _mini_data().items()}
    files["zte.yaml"] = _dump(_mini_data()["zte.yaml"] | {"organisations": value})
    with pytest.raises(IntelError, match="`organisations:` must be a list"):
        KnowledgeBase.load(data_dir=_write_data(files))


# --- extra intel files -------------------------------------------------------------------------


_LOAD_DATA = kb_module._load_data


@cache
def _base() -> dict[str, Any]:
    """The built-in data, loaded once: the fuzz is of the extra file, not of these."""
    return _LOAD_DATA(DATA_DIR)


@cache
def _intel_seeds() -> list[bytes]:
    return [p.read_bytes() for p in sample_paths("intel/samples/*") if p.is_file()]


_suffixes = st.sampled_from([".yaml", ".yml", ".json", ".stix", ".hosts", ".txt", ""])
_labels = st.one_of(
    st.sampled_from(["lab", "a" * 64, "a" * 65, "-x", "x.y", ""]), st.text(max_size=20)
)


@example(b"0.0.0.0 a.example\n", ".yaml", "\x00")  # ValueError (a NUL in the path) escaped
@fuzz(
    st.deferred(lambda: mutated(_intel_seeds(), max_ops=6)),
    _suffixes,
    _labels,
    share=0.6,
)
def test_extra_intel_files(data: bytes, suffix: str, label: str) -> None:
    path = _workdir() / f"intel{suffix}"
    path.write_bytes(data)
    spec = f"{label}={path}" if label else str(path)
    with mock.patch.object(kb_module, "_load_data", lambda _dir: _base()):
        try:
            kb = KnowledgeBase.load(extra=[spec])
        except IntelError:
            return
    _use(kb)
