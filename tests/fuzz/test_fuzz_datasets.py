"""The data set readers (``auditor.intel.formats``: v2fly, nextdns, adguard, ghostery,
trackerradar, exodus, xray) and the source reader of ``auditor.intel.datasets`` (folders,
zip and tar archives, gzip files): random bytes, mutated real v2fly and NextDNS lists,
generated v2fly include graphs, the hand-written JSON and .eno samples mutated as data and as
text, and damaged archives. Only IntelImportError (naming the file) may escape; what is read
can be compiled, loaded, matched and written as UTF-8 JSON."""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
import zipfile
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import example
from hypothesis import strategies as st

from auditor.intel import datasets as ds
from auditor.intel.datasets import FORMATS, DatasetIndex, DatasetInfo, ParsedDataset
from auditor.intel.formats.ghostery import read_ghostery
from auditor.intel.model import IntelImportError
from tests.fuzz.helpers import (
    TESTS,
    fuzz,
    json_bytes,
    mutated,
    mutated_json,
    mutated_text,
)

SAMPLES = TESTS / "intel" / "samples" / "datasets"
WHERE = "/fuzz/dataset"
KEYS = (
    "trackers",
    "trackerDomains",
    "companies",
    "companyId",
    "categoryId",
    "categories",
    "organizations",
    "patterns",
    "organization",
    "alias",
    "domains",
    "properties",
    "owner",
    "name",
    "displayName",
    "network_signature",
    "doms",
    "owner_name",
    "parent",
    "country",
    "timeUpdated",
    "entities",
    "domain",
    "website_url",
    "url",
)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@cache
def _v2fly() -> dict[str, bytes]:
    return {k: v for k, v in _tree(SAMPLES / "v2fly").items() if k.startswith("data/")}


@cache
def _nextdns() -> dict[str, bytes]:
    return {k: v for k, v in _tree(SAMPLES / "nextdns").items() if k.startswith("domains/")}


@cache
def _json_samples() -> list[tuple[str, str, Any]]:
    """(format, relative path, parsed JSON) of every valid JSON sample."""
    out = []
    for fmt, folder in (
        ("adguard", "adguard"),
        ("ghostery", "ghostery"),
        ("trackerradar", "trackerradar"),
        ("exodus", "exodus"),
        ("xray", "xray"),
    ):
        for rel, data in _tree(SAMPLES / folder).items():
            if rel.endswith(".json"):
                try:
                    out.append((fmt, rel, json.loads(data)))
                except ValueError:
                    pass  # the deliberately cut sample
    return out


@cache
def _eno() -> list[tuple[str, str]]:
    return [(k, v.decode()) for k, v in _tree(SAMPLES / "ghostery").items() if k.endswith(".eno")]


def _info(fmt: str) -> DatasetInfo:
    spec = FORMATS[fmt]
    return DatasetInfo(spec.id, spec.title, fmt, None, None, spec.licence, spec.url, "0" * 64,
                       False, None, 0, 0, 0, 0)  # fmt: skip


def assert_usable(fmt: str, parsed: ParsedDataset) -> None:
    """A parsed data set compiles, loads back, matches its own rules and writes as UTF-8."""
    index = DatasetIndex.build([(_info(fmt), parsed)])
    (info,) = index.datasets
    assert (info.rules, info.entities) == (len(parsed.rules), len(parsed.entities))
    exact = {r.host for r in parsed.rules if r.exact}
    for rule in parsed.rules[:20]:
        (m,) = index.match_host(rule.host)
        if rule.exact or rule.host not in exact:
            assert m.entity.id == rule.entity and m.exact is rule.exact, (rule, m)
        json.dumps(m.to_json(), ensure_ascii=False).encode("utf-8")
    out = {
        "entities": [e.to_json() for e in parsed.entities],
        "warnings": list(parsed.warnings),
        "notes": list(parsed.notes),
        "info": info.to_json(),
    }
    json.dumps(out, ensure_ascii=False).encode("utf-8")


def _read(fmt: str, arg: bytes | Mapping[str, bytes]) -> None:
    """Run a reader as the importer does: only an IntelImportError naming the source."""
    try:
        parsed = FORMATS[fmt].reader()(arg, where=WHERE)
    except IntelImportError as exc:
        assert str(exc).startswith(WHERE), str(exc)
        return
    assert_usable(fmt, parsed)


def _as_input(fmt: str, rel: str, data: bytes) -> bytes | dict[str, bytes]:
    return {rel: data} if FORMATS[fmt].tree else data


@fuzz(st.sampled_from(sorted(FORMATS)), st.binary(max_size=2000), share=0.1)
def test_random_bytes_into_every_reader(fmt: str, data: bytes) -> None:
    name = "data/random" if fmt == "v2fly" else "domains/random" if fmt == "nextdns" else "x.json"
    _read(fmt, _as_input(fmt, name, data))


@fuzz(
    st.deferred(lambda: st.sampled_from(sorted(_v2fly()))),
    st.deferred(lambda: mutated_text([v.decode() for v in _v2fly().values()])),
    share=0.2,
)
def test_mutated_real_v2fly_lists(path: str, text: str) -> None:
    files = dict(_v2fly())
    files[path] = text.encode("utf-8", "surrogatepass")
    _read("v2fly", files)


_NAMES = ("acme", "beta", "category-x", "category-y", "geolocation-z", "cn", "tld-q")
_rule_lines = st.one_of(
    st.builds(
        "include:{} {}".format,
        st.sampled_from(_NAMES),
        st.sampled_from(["", "@ads", "@-cn", "@ads @-ads"]),
    ),
    st.builds(
        "{}{}.example {}".format,
        st.sampled_from(["", "domain:", "full:", "keyword:", "regexp:", "bogus:"]),
        st.sampled_from(["a", "b.a", "c", "x.c", "é", "a-", "_"]),
        st.sampled_from(["", "@ads", "@cn", "&acme", "&category-x", "&", "@", "@ads &beta"]),
    ),
    st.sampled_from(["", "# comment", "tld", "full:tld", "include:", "include:acme &x"]),
)


@fuzz(
    st.dictionaries(
        st.sampled_from(_NAMES),
        st.lists(_rule_lines, max_size=12).map("\n".join),
        min_size=1,
        max_size=len(_NAMES),
    ),
    share=0.1,
)
def test_generated_v2fly_include_graphs(lists: dict[str, str]) -> None:
    _read("v2fly", {f"data/{k}": v.encode() for k, v in lists.items()})


@fuzz(
    st.deferred(lambda: st.sampled_from(sorted(_nextdns()))),
    st.deferred(lambda: mutated_text([v.decode() for v in _nextdns().values()])),
    share=0.05,
)
def test_mutated_real_nextdns_lists(path: str, text: str) -> None:
    files = dict(_nextdns())
    files[path] = text.encode("utf-8", "surrogatepass")
    _read("nextdns", files)


@example(("exodus", "trackers.json", {"trackers": {"1": {"network_signature": "a\\.b|" * 3}}}))
@fuzz(
    st.deferred(
        lambda: st.sampled_from(_json_samples()).flatmap(
            lambda s: mutated_json([s[2]], keys=KEYS).map(lambda doc: (s[0], s[1], doc))
        )
    ),
    share=0.3,
)
def test_mutated_json_samples(sample: tuple[str, str, Any]) -> None:
    fmt, rel, doc = sample
    data = json_bytes(doc)
    if fmt == "adguard":  # beside its real partner file
        files = {k: v for k, v in _tree(SAMPLES / "adguard").items()}
        files[rel] = data
        _read(fmt, files)
    else:
        _read(fmt, _as_input(fmt, rel, data))


@fuzz(
    st.deferred(lambda: st.sampled_from(_eno())),
    st.deferred(lambda: mutated_text([t for _, t in _eno()])),
    share=0.1,
)
def test_mutated_eno_files(target: tuple[str, str], text: str) -> None:
    files = {k: v.encode() for k, v in _eno()}
    files[target[0]] = text.encode("utf-8", "surrogatepass")
    try:
        parsed = read_ghostery(files, where=WHERE)
    except IntelImportError as exc:
        assert str(exc).startswith(WHERE)
        return
    assert_usable("ghostery", parsed)


_TMP = tempfile.TemporaryDirectory(prefix="fuzz-datasets-")


@cache
def _archives() -> list[bytes]:
    files = _tree(SAMPLES / "adguard") | _tree(SAMPLES / "ghostery")
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(f"top/{name}", data)
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w:gz") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(f"top/{name}")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return [zbuf.getvalue(), tbuf.getvalue()]


@fuzz(
    st.sampled_from(["adguard", "ghostery", "exodus"]),
    st.deferred(lambda: mutated(_archives(), max_ops=4)),
    share=0.15,
)
def test_damaged_archives(fmt: str, data: bytes) -> None:
    path = Path(_TMP.name) / "source.bin"
    path.write_bytes(data)
    try:
        _, parsed, digest = ds.parse_source(fmt, path)
    except IntelImportError as exc:
        assert str(exc).startswith(str(path)), str(exc)
        return
    assert len(digest) == 64
    assert_usable(fmt, parsed)
