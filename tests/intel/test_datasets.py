"""The open tracker/ownership data sets: each reader on real excerpts (MIT data sets) or
hand-written samples (the others), the compiled index, imports, and the bundled snapshots.

Tests marked ``mirrors`` read the full real copies when ``AUDITOR_DATASET_MIRRORS`` names a
folder of clones (``<owner>+<name>/repo``), and compare them with an independent reading."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import stat
import subprocess
import tarfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from auditor.intel import datasets as ds
from auditor.intel.datasets import (
    FORMATS,
    DatasetIndex,
    DatasetInfo,
    ParsedDataset,
    import_dataset,
    list_datasets,
    load_datasets,
    remove_dataset,
    user_data_dir,
)
from auditor.intel.formats.adguard import read_adguard
from auditor.intel.formats.exodus import read_exodus, signature_rules
from auditor.intel.formats.ghostery import read_ghostery
from auditor.intel.formats.nextdns import read_nextdns
from auditor.intel.formats.trackerradar import read_trackerradar
from auditor.intel.formats.v2fly import is_ownership_list, read_v2fly
from auditor.intel.formats.xray import read_xray
from auditor.intel.model import Category, IntelImportError

SAMPLES = Path(__file__).with_name("samples") / "datasets"
ADS = (Category.ADVERTISING,)
ANALYTICS = (Category.ANALYTICS_TRACKER,)


def tree(root: Path, under: str = "") -> dict[str, bytes]:
    """A sample folder as the loader gives it to a reader: relative path -> bytes."""
    base = root / under if under else root
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(base.rglob("*"))
        if p.is_file()
    }


def info_for(dataset_id: str, fmt: str) -> DatasetInfo:
    spec = FORMATS[fmt]
    return DatasetInfo(
        dataset_id, spec.title, fmt, None, None, spec.licence, spec.url, "0" * 64, False,
        None, 0, 0, 0, 0,
    )  # fmt: skip


def index_of(*items: tuple[str, str, ParsedDataset]) -> DatasetIndex:
    return DatasetIndex.build([(info_for(i, f), p) for i, f, p in items])


def by_id(parsed: ParsedDataset) -> dict[str, ds.DatasetEntity]:
    return {e.id: e for e in parsed.entities}


def rule_of(parsed: ParsedDataset, host: str, exact: bool = False) -> ds.DatasetRule:
    found = [r for r in parsed.rules if r.host == host and r.exact is exact]
    assert found, f"no rule for {host}"
    return found[0]


# --- v2fly (real excerpts) ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def v2fly() -> ParsedDataset:
    return read_v2fly(tree(SAMPLES / "v2fly", "data"), where="v2fly")


def test_v2fly_umeng_list_owns_umeng_com_under_alibaba(v2fly: ParsedDataset) -> None:
    assert rule_of(v2fly, "umeng.com").entity == "umeng"
    assert rule_of(v2fly, "umeng.com").categories == ()
    assert by_id(v2fly)["umeng"].parent == "alibaba"  # alibaba: include:umeng
    assert rule_of(v2fly, "56che.com").entity == "alibaba"


def test_v2fly_ads_attribute_is_advertising(v2fly: ParsedDataset) -> None:
    assert rule_of(v2fly, "alog.umeng.com").categories == ADS  # "alog.umeng.com @ads"
    assert rule_of(v2fly, "data.mistat.xiaomi.com").categories == ADS
    assert rule_of(v2fly, "xiaomi.com").categories == ()
    # "doubleclick.net @ads" and "full:doubleclick.net @cn": the host is in google@ads
    assert rule_of(v2fly, "doubleclick.net", exact=True).categories == ADS
    assert rule_of(v2fly, "doubleclick-cn.net", exact=True).categories == ADS


def test_v2fly_a_rule_belongs_to_the_list_stating_it(v2fly: ParsedDataset) -> None:
    ents = by_id(v2fly)
    assert rule_of(v2fly, "youtube-nocookie.com").entity == "youtube"  # not google's
    assert (ents["youtube"].parent, ents["google"].parent) == ("google", "alphabet")
    assert rule_of(v2fly, "waymo.com").entity == "alphabet"
    # xiaomi includes xiaomi-iot, which states account.xiaomi.com (under xiaomi.com)
    assert rule_of(v2fly, "account.xiaomi.com").entity == "xiaomi-iot"
    assert ents["xiaomi-iot"].parent == "xiaomi"


def test_v2fly_leaves_out_non_ownership_lists_tlds_keywords_and_regexps(
    v2fly: ParsedDataset,
) -> None:
    hosts = {r.host for r in v2fly.rules}
    assert "adcolony.com" not in hosts  # only in category-ads-all
    assert not {"cn", "category-ads-all"} & set(by_id(v2fly))
    assert not {h for h in hosts if "." not in h}  # "alibaba", "google", "youtube" TLDs
    # skipped: TLD lines of alibaba, google, youtube; regexps of hotstar and okaapps
    assert v2fly.skipped == 5
    assert not is_ownership_list("geolocation-!cn") and is_ownership_list("bytedance-ai-!cn")
    assert any("non-ownership lists left out" in n for n in v2fly.notes)


def test_v2fly_matches_through_the_index(v2fly: ParsedDataset) -> None:
    index = index_of(("v2fly", "v2fly", v2fly))
    (m,) = index.match_host("alogs.umeng.com")
    assert (m.entity.id, m.rule, m.exact, m.categories) == (
        "umeng",
        "domain:alogs.umeng.com",
        False,
        ADS,
    )
    (m,) = index.match_host("x.y.umeng.com")
    assert (m.rule, m.categories) == ("domain:umeng.com", ())
    (m,) = index.match_host("doubleclick.net")
    assert (m.rule, m.exact) == ("full:doubleclick.net", True)
    (m,) = index.match_host("ad.doubleclick.net")
    assert (m.rule, m.exact) == ("domain:doubleclick.net", False)
    assert index.match_host("example.org") == []
    assert index.entity("v2fly", "umeng") == by_id(v2fly)["umeng"]
    assert index.entity("v2fly", "nope") is None and index.entity("nope", "umeng") is None


def _v2(**files: str) -> dict[str, bytes]:
    return {f"data/{k.replace('_', '-')}": v.encode() for k, v in files.items()}


def test_v2fly_include_cycles_unknown_lists_and_bad_lines_are_counted() -> None:
    parsed = read_v2fly(
        _v2(
            acme="acme.example\ninclude:category-a\ninclude:missing\nfull:ok.acme.example @ads\n",
            category_a="include:category-b\nfrom-a.example\n",
            category_b="include:category-a\nfrom-b.example @x &acme\n",
            bad="dom ain.example\nwhat:ever\nfull:\nbad..name\nfine.example @a b\n",
        ),
        where="t",
    )
    owners = {r.host: r.entity for r in parsed.rules}
    # acme states its own; reaches from-a.example through category-a (a non-ownership list)
    assert owners["acme.example"] == "acme" and owners["from-a.example"] == "acme"
    assert owners["from-b.example"] == "acme"  # affiliation &acme
    assert "fine.example" not in owners
    text = "\n".join(parsed.warnings)
    assert "include cycle" in text and "'missing', which does not exist" in text
    assert "t/data/bad:1: " in text and "t/data/bad:3: empty full rule" in text
    assert "t/data/bad:4: not a host name" in text and "unknown field 'b'" in text


def test_v2fly_selective_includes_follow_upstream_filters() -> None:
    parsed = read_v2fly(
        _v2(
            owner="include:category-mixed @ads @-cn\n",
            category_mixed="plain.example\nads.example @ads\nadscn.example @ads @cn\n",
        ),
        where="t",
    )
    assert {r.host for r in parsed.rules} == {"ads.example"}


def test_v2fly_include_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from auditor.intel.formats import v2fly as mod

    monkeypatch.setattr(mod, "MAX_RULES", 1000)  # the same check at a testable size
    files = {"data/category-l0": "\n".join(f"h{i}.example" for i in range(40)).encode()}
    for level in range(1, 8):  # each level includes the one below four times over
        files[f"data/category-l{level}"] = (f"include:category-l{level - 1}\n" * 4).encode()
    files["data/owner"] = b"include:category-l7\n"
    with pytest.raises(IntelImportError, match="expand to over 1000 rules"):
        read_v2fly(files, where="bomb")


def test_v2fly_without_lists_is_an_error() -> None:
    with pytest.raises(IntelImportError, match="no v2fly list"):
        read_v2fly({"README.md/x": b""}, where="empty")
    with pytest.raises(IntelImportError, match=r"bin/data/x:1: not UTF-8"):
        read_v2fly({"data/x": b"\xff\xfe\xfa"}, where="bin")


# --- NextDNS (real excerpts) --------------------------------------------------------------------


def test_nextdns_vendor_lists_are_vendor_telemetry() -> None:
    parsed = read_nextdns(tree(SAMPLES / "nextdns", "domains"), where="nextdns")
    assert sorted(by_id(parsed)) == ["huawei", "samsung", "xiaomi"]
    r = rule_of(parsed, "tracking.miui.com")
    assert (r.entity, r.categories) == ("xiaomi", (Category.VENDOR_TELEMETRY,))
    assert rule_of(parsed, "metrics.data.hicloud.com").entity == "huawei"
    index = index_of(("nextdns-native", "nextdns", parsed))
    (m,) = index.match_host("x.tracking.intl.miui.com")
    assert m.rule == "domain:tracking.intl.miui.com" and m.entity.name == "Xiaomi"
    lines = {
        line.strip()
        for f in (SAMPLES / "nextdns" / "domains").iterdir()
        for line in f.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert parsed.warning_count == 0 and len(parsed.rules) == len(lines) == 50


# --- hand-written samples of the import-only data sets ------------------------------------------


def test_adguard_companies_trackers_and_categories() -> None:
    parsed = read_adguard(tree(SAMPLES / "adguard"), where="ag")
    ents = by_id(parsed)
    assert ents["exampleads"].name == "Example Ads <b>SAS</b>"  # markup kept as text
    assert ents["examplecorp"].name == "ExampleCorp\x07 Ltd" and ents["examplecorp"].url is None
    assert ents["tracker:lonely_sdk"].name == "Lonely SDK"
    assert "unused" not in ents  # no tracker domain
    assert rule_of(parsed, "ads.example-ads.example").categories == ADS
    assert rule_of(parsed, "metrics.examplecorp.example").categories == ANALYTICS
    assert rule_of(parsed, "player.examplecorp.example").categories == ()
    assert rule_of(parsed, "sdk.lonely.example").categories == ANALYTICS  # mobile_analytics
    assert (parsed.version, parsed.date) == ("2026-01-15T10:00:00.000Z", "2026-01-15")
    text = "\n".join(parsed.warnings)
    assert "'missingco' is not in companies.json" in text
    assert "not a host name: 'bad..host.example'" in text
    assert "unknown tracker 'no_such_tracker'" in text and "'broken': not an object" in text
    assert parsed.warning_count == 4


def test_ghostery_json_release_asset() -> None:
    parsed = read_ghostery(tree(SAMPLES / "ghostery", ""), where="gh")
    ents = by_id(parsed)
    assert (ents["example_org"].country, ents["uk_org"].country) == ("DE", "GB")
    assert ents["example_org"].url == "https://www.example-org.example/"
    assert rule_of(parsed, "analytics.example-org.example").categories == ANALYTICS
    assert rule_of(parsed, "extra.example-org.example").entity == "example_org"  # domains index
    assert rule_of(parsed, "pixel.example-org.example").entity == "example_org"  # via alias
    lonely = rule_of(parsed, "cdn.lonely.example")
    assert (lonely.entity, lonely.categories) == ("pattern:lonely_cdn", (Category.CDN_CLOUD,))
    assert rule_of(parsed, "widget.example-uk.example").categories == ()
    text = "\n".join(parsed.warnings)
    assert "unknown organization 'no_such_org'" in text and "organization 'broken'" in text
    assert "not a host name: 'not a host'" in text


def test_ghostery_eno_source_tree() -> None:
    files = {k: v for k, v in tree(SAMPLES / "ghostery").items() if k.endswith(".eno")}
    parsed = read_ghostery(files, where="gh")
    ents = by_id(parsed)
    assert ents["example_org"].country == "DE" and ents["dun_&_example"].country == "US"
    assert rule_of(parsed, "stats.example-org.example").categories == ANALYTICS
    assert rule_of(parsed, "widget.dun.example").categories == ADS
    assert rule_of(parsed, "cdn.lonely.example").entity == "pattern:lonely_cdn"
    assert parsed.warning_count == 0


def test_ghostery_eno_unclosed_block_is_a_warning() -> None:
    files = {
        "db/patterns/a.eno": b"name: A\ncategory: advertising\n--- domains\na.example\n",
        "db/patterns/b.eno": b"name: B\n--- domains\nb.example\n--- domains\n",
    }
    parsed = read_ghostery(files, where="gh")
    assert [r.host for r in parsed.rules] == ["b.example"]
    assert "gh/db/patterns/a.eno:4: block 'domains' is never closed" in parsed.warnings


def test_trackerradar_repository_tree() -> None:
    parsed = read_trackerradar(tree(SAMPLES / "trackerradar", ""), where="tr")
    ents = by_id(parsed)
    corp = ents["Example Corp, Inc."]
    assert (corp.name, corp.url) == ("Example Corp", "https://example-corp.example")
    assert rule_of(parsed, "examplecdn.example").entity == "Example Corp, Inc."
    # US says Advertising, GB says Analytics: both kept
    assert rule_of(parsed, "tracker.example-corp.example").categories == ANALYTICS + ADS
    assert rule_of(parsed, "other-metrics.example").entity == "Other Metrics Ltd"
    assert ents["Other Metrics Ltd"].name == "Other Metrics"
    assert parsed.skipped == 2  # nobody.example and the TDS's unowned.example have no owner
    assert any("broken.example.json:2: not valid JSON" in w for w in parsed.warnings)
    assert any("'stray.example' names an unknown entity" in w for w in parsed.warnings)


def test_trackerradar_tds_file() -> None:
    parsed = read_trackerradar(
        {"tds.json": (SAMPLES / "trackerradar" / "tds.json").read_bytes()}, where="tds"
    )
    assert sorted(r.host for r in parsed.rules) == [
        "example-corp.example",
        "examplecdn.example",
        "tracker.example-corp.example",
    ]
    assert rule_of(parsed, "tracker.example-corp.example").categories == ADS
    with pytest.raises(IntelImportError, match="no Tracker Radar entity"):
        read_trackerradar({"x.json": b"[]", "notes.txt": b"x"}, where="none")


def test_exodus_network_signatures_become_rules() -> None:
    parsed = read_exodus((SAMPLES / "exodus" / "trackers.json").read_bytes(), where="ex")
    assert rule_of(parsed, "api.example-sdk.example").entity == "1"
    assert rule_of(parsed, "example-sdk.example").categories == ANALYTICS
    exact = rule_of(parsed, "ads.exact.example", exact=True)
    assert (exact.entity, exact.categories) == ("2", ADS)
    assert rule_of(parsed, "cdn.weird.example").entity == "3"
    assert by_id(parsed)["3"].url is None and "4" not in by_id(parsed)  # code-only tracker
    assert parsed.skipped == 2  # "([a-z]+)\.weird\.example" and ".*\.wild\.example"
    assert parsed.warning_count == 2  # tracker 5 is no object, 6 has a number signature
    assert signature_rules(r"\.adcolony\.com|ads\-x\.example") == (
        [("adcolony.com", False), ("ads-x.example", False)],
        0,
    )
    assert signature_rules(r"a[bc]\.example|x+\.example")[1] == 2


def test_xray_owners_countries_and_parents() -> None:
    parsed = read_xray((SAMPLES / "xray" / "xray-blacklist.json").read_bytes(), where="xr")
    ents = by_id(parsed)
    child = ents["Example Child"]
    assert (child.country, child.parent) == ("GB", "Example Parent")  # "uk"
    assert ents["Example Parent"].parent == "Example Holdings"
    assert ents["Example Holdings"].country is None  # named as a parent only
    assert ents["Listless"].country is None  # "Atlantis" is no country code
    assert ents["Solo <script>Co</script>"].country == "CN"
    assert rule_of(parsed, "cdn.example-child.example").entity == "Example Child"
    text = "\n".join(parsed.warnings)
    assert "no `owner_name`" in text and "`doms` is not a list" in text
    assert 'not a host name: "bad host\'"' in text


@pytest.mark.parametrize(
    ("reader", "data", "message"),
    [
        (read_exodus, b"{", r"^ex:1: not valid JSON"),
        (read_exodus, b'{"trackers": 3}', "not an Exodus tracker list"),
        (read_xray, b'{"a": 1}', "not the X-Ray list"),
        (read_xray, b"[" * 100000 + b"]" * 100000, "nested too deeply"),
        (read_xray, b"\xef\xbb\xbf[1, \xff]", r"ex:1: not UTF-8"),
    ],
)
def test_one_file_readers_refuse_whole_file_problems(reader, data, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(IntelImportError, match=message):
        reader(data, where="ex")


@pytest.mark.parametrize(
    ("reader", "files", "message"),
    [
        (read_adguard, {"dist/companies.json": b"{}"}, "no trackers.json"),
        (read_adguard, {"dist/trackers.json": b'{"trackers": {}}'}, "no `trackerDomains`"),
        (read_ghostery, {"trackerdb.json": b'{"patterns": {}}'}, "no `organizations`"),
        (read_ghostery, {"README.md": b"x"}, "neither a trackerdb.json"),
        (read_nextdns, {"domains/x": b"# nothing\n"}, "no vendor list with a host"),
    ],
)
def test_tree_readers_refuse_whole_file_problems(reader, files, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(IntelImportError, match=message):
        reader(files, where="t")


# --- the index ----------------------------------------------------------------------------------


def test_index_order_and_precedence() -> None:
    a = read_nextdns({"domains/acme": b"t.acme.example\n"}, where="a")
    b = read_exodus(
        json.dumps(
            {
                "trackers": {
                    "9": {"name": "N", "network_signature": r"acme\.example|^x\.t\.acme\.example$"}
                }
            }
        ).encode(),
        where="b",
    )
    index = index_of(("zz-exodus", "exodus", b), ("aa-nextdns", "nextdns", a))
    got = [(m.dataset.id, m.rule) for m in index.match_host("x.t.acme.example")]
    assert got == [("zz-exodus", "full:x.t.acme.example"), ("aa-nextdns", "domain:t.acme.example")]
    got = [(m.dataset.id, m.rule) for m in index.match_host("y.t.acme.example")]
    assert got == [("zz-exodus", "domain:acme.example"), ("aa-nextdns", "domain:t.acme.example")]
    assert [m.to_json()["entity"]["id"] for m in index.match_host("acme.example")] == ["9"]


def test_info_json_has_every_field() -> None:
    info = info_for("x", "v2fly")
    assert list(info.to_json()) == list(ds.INFO_FIELDS)
    json.dumps(info.to_json())


# --- imports ------------------------------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    d = tmp_path / "data"
    monkeypatch.setenv("AUDITOR_DATA_DIR", str(d))
    yield d


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_import_list_load_remove_round_trip(data_dir: Path) -> None:
    assert user_data_dir() == data_dir
    info = import_dataset("exodus", SAMPLES / "exodus" / "trackers.json")
    assert (info.id, info.format, info.licence, info.bundled) == (
        "exodus",
        "exodus",
        "ODbL-1.0",
        False,
    )
    raw = (SAMPLES / "exodus" / "trackers.json").read_bytes()
    import hashlib

    assert info.sha256 == hashlib.sha256(raw).hexdigest()
    stored = data_dir / "intel" / "datasets" / "exodus"
    assert _mode(data_dir / "intel") == 0o700 and _mode(stored.parent) == 0o700
    assert _mode(stored) == 0o700
    assert {p.name: _mode(p) for p in stored.iterdir()} == {
        "dataset.json.gz": 0o600,
        "info.json": 0o600,
        "warnings.txt": 0o600,
    }
    assert info in list_datasets()
    index = load_datasets(include_bundled=False)
    assert [d.id for d in index.datasets] == ["exodus"]
    (m,) = index.match_host("api.example-sdk.example")
    assert m.entity.name == "Example Analytics SDK" and m.dataset == info
    again = import_dataset("exodus", SAMPLES / "exodus" / "trackers.json", name="exodus-2")
    assert again.id == "exodus-2"
    assert [d.id for d in load_datasets(include_bundled=False).datasets] == ["exodus", "exodus-2"]
    assert remove_dataset("exodus") and not remove_dataset("exodus")
    assert not remove_dataset("../etc") and not remove_dataset("v2fly")
    assert [d.id for d in list_datasets() if not d.bundled] == ["exodus-2"]


def test_reimport_replaces_and_user_copy_replaces_bundled(data_dir: Path) -> None:
    import_dataset("nextdns", SAMPLES / "nextdns", name="nextdns-native")
    index = load_datasets()
    ids = [(d.id, d.bundled) for d in index.datasets]
    assert ("nextdns-native", False) in ids and ("nextdns-native", True) not in ids
    assert ids[-1] == ("nextdns-native", False)  # user imports after the bundled ones
    (m,) = [m for m in index.match_host("nmetrics.samsung.com") if m.dataset.id == "nextdns-native"]
    assert not m.dataset.bundled
    small = data_dir / "one"
    small.mkdir()
    (small / "xiaomi").write_text("tracking.miui.com\n")
    import_dataset("nextdns", small, name="nextdns-native")
    (stored,) = [d for d in list_datasets() if not d.bundled]
    assert stored.rules == 1


def test_a_damaged_import_is_left_out(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    import_dataset("xray", SAMPLES / "xray" / "xray-blacklist.json")
    path = data_dir / "intel" / "datasets" / "xray" / "dataset.json.gz"
    path.write_bytes(gzip.compress(b'{"schema": "auditor-dataset/1"}'))
    assert [d.id for d in load_datasets(include_bundled=False).datasets] == []
    assert "data set xray left out" in caplog.text


def test_import_refuses_unknown_formats_ids_and_empty_data(data_dir: Path) -> None:
    with pytest.raises(IntelImportError, match="unknown data set format 'nope'"):
        import_dataset("nope", SAMPLES)
    with pytest.raises(IntelImportError, match="lower-case slug"):
        import_dataset("exodus", SAMPLES / "exodus" / "trackers.json", name="../x")
    empty = data_dir.parent / "empty.json"
    empty.write_text('{"trackers": {}}')
    with pytest.raises(IntelImportError, match="no usable rule"):
        import_dataset("exodus", empty)
    with pytest.raises(IntelImportError, match="cannot read"):
        import_dataset("exodus", data_dir.parent / "missing.json")


def _tar_gz(files: Mapping[str, bytes], top: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(f"{top}/{name}")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def test_imports_from_archives(data_dir: Path, tmp_path: Path) -> None:
    files = tree(SAMPLES / "adguard")
    tgz = tmp_path / "companiesdb-main.tar.gz"
    tgz.write_bytes(_tar_gz(files, "companiesdb-main"))  # GitHub's layout: one top folder
    assert import_dataset("adguard", tgz).rules == 6
    zpath = tmp_path / "trackerdb.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for name, data in tree(SAMPLES / "ghostery").items():
            zf.writestr(f"trackerdb-main/{name}", data)
    assert import_dataset("ghostery", zpath).rules == 8  # the JSON asset, not the .eno files
    gz = tmp_path / "trackers.json.gz"
    gz.write_bytes(gzip.compress((SAMPLES / "exodus" / "trackers.json").read_bytes()))
    assert import_dataset("exodus", gz).rules == 4
    two = tmp_path / "two.zip"
    with zipfile.ZipFile(two, "w") as zf:
        zf.writestr("a.json", "{}")
        zf.writestr("b.json", "{}")
    with pytest.raises(IntelImportError, match="several files could be the exodus list"):
        import_dataset("exodus", two)


def test_user_data_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AUDITOR_DATA_DIR", str(tmp_path / "a"))
    assert user_data_dir() == tmp_path / "a"
    monkeypatch.delenv("AUDITOR_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert user_data_dir() == tmp_path / "xdg" / "auditor"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/path")  # the spec says to ignore it
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_data_dir() == tmp_path / "home" / ".local" / "share" / "auditor"


# --- the bundled snapshots ----------------------------------------------------------------------


def test_bundled_snapshots_load_with_licence_and_commit() -> None:
    index = load_datasets(include_user=False)
    infos = {d.id: d for d in index.datasets}
    assert list(infos) == ["nextdns-native", "v2fly"]
    for info in infos.values():
        assert (
            info.bundled
            and info.licence == "MIT"
            and re.fullmatch(r"[0-9a-f]{40}", info.version or "")
        )
        assert info.path is not None and (Path(ds.__file__).parents[2] / info.path).is_file()
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", info.date or "")
    assert infos["v2fly"].rules > 20000 and infos["v2fly"].entities > 1000
    got = {(m.dataset.id, m.entity.id) for m in index.match_host("alog.umeng.com")}
    assert got == {("v2fly", "umeng")}
    assert index.entity("v2fly", "umeng").parent == "alibaba"  # type: ignore[union-attr]
    assert {m.dataset.id for m in index.match_host("tracking.miui.com")} == {
        "nextdns-native",
        "v2fly",
    }
    for name in ("LICENSE.v2fly.txt", "LICENSE.nextdns-native.txt", "PROVENANCE.md"):
        assert (ds.BUNDLED_DIR / name).is_file()
    assert "MIT License" in (ds.BUNDLED_DIR / "LICENSE.v2fly.txt").read_text()
    size = sum(p.stat().st_size for p in ds.BUNDLED_DIR.iterdir())
    assert size < 2 * 1024 * 1024


# --- the full real copies (optional) ------------------------------------------------------------

MIRRORS = os.environ.get("AUDITOR_DATASET_MIRRORS", "")


def mirror(name: str) -> Path:
    if not MIRRORS:
        pytest.skip("set AUDITOR_DATASET_MIRRORS=/work/.mirror to read the full real data sets")
    clone = Path(MIRRORS) / name / "repo"
    if not clone.is_dir():
        pytest.skip(f"no clone of {name} in {MIRRORS}")
    return clone


def git_tree(clone: Path, *paths: str) -> dict[str, bytes]:
    raw = subprocess.run(
        ["git", f"--git-dir={clone}", "archive", "--format=tar", "HEAD", *paths],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}  # type: ignore[union-attr]


def git_show(clone: Path, path: str) -> bytes:
    return subprocess.run(
        ["git", f"--git-dir={clone}", "show", f"HEAD:{path}"], capture_output=True, check=True
    ).stdout


def test_full_v2fly_against_a_plain_reading_and_the_bundle() -> None:
    clone = mirror("v2fly+domain-list-community")
    files = git_tree(clone, "data")
    parsed = read_v2fly(files, where="v2fly")
    # an independent reading: distinct (full?, host) of the ownership lists' own rules
    plain = set()
    for path, data in files.items():
        name = path.split("/", 1)[1]
        excluded = (
            "cn private test test-ipv6 connectivity-check archive anime tor google-registry-tld"
        )
        if name.startswith(("category-", "geolocation-", "tld-")) or name in excluded.split():
            continue
        for line in data.decode().splitlines():
            body = line.split("#")[0].split()
            if not body or body[0].startswith(("include:", "regexp:", "keyword:")):
                continue
            kind, _, host = body[0].rpartition(":")
            for aff in body[1:]:
                assert not aff.startswith("&"), "the plain reading ignores affiliations"
            if "." in host:
                plain.add((kind == "full", host.lower()))
    assert {(r.exact, r.host) for r in parsed.rules} == plain
    bundled = {d.id: d for d in load_datasets(include_user=False).datasets}["v2fly"]
    head = subprocess.run(
        ["git", f"--git-dir={clone}", "rev-parse", "HEAD"],
        capture_output=True,
        check=True,
        text=True,
    ).stdout.strip()
    if bundled.version == head:
        assert (bundled.rules, bundled.entities) == (len(parsed.rules), len(parsed.entities))


def test_full_ghostery_eno_against_a_plain_reading() -> None:
    clone = mirror("ghostery+trackerdb")
    files = git_tree(clone, "db")
    parsed = read_ghostery(files, where="gh")
    domains = set()
    for path, data in files.items():
        if path.startswith("db/patterns/") and path.endswith(".eno"):
            inside = False
            for line in data.decode().splitlines():
                if line.strip() == "--- domains":
                    inside = not inside
                elif inside and line.strip():
                    domains.add(line.strip().lower())
    assert {r.host for r in parsed.rules} == domains
    orgs = {p for p in files if p.startswith("db/organizations/") and p.endswith(".eno")}
    assert len([e for e in parsed.entities if not e.id.startswith("pattern:")]) <= len(orgs)
    assert by_id(parsed)["bytedance_inc"].country == "KY"


def test_full_adguard_against_a_plain_reading() -> None:
    clone = mirror("AdguardTeam+companiesdb")
    files = git_tree(clone, "dist")
    parsed = read_adguard(files, where="ag")
    doc = json.loads(files["dist/trackers.json"])
    assert len(parsed.rules) == len(doc["trackerDomains"])
    companies = {t["companyId"] for t in doc["trackers"].values() if t.get("companyId")}
    used = {doc["trackers"][t]["companyId"] for t in doc["trackerDomains"].values()}
    assert {e.id for e in parsed.entities if not e.id.startswith("tracker:")} == used & companies
    assert parsed.date == doc["timeUpdated"][:10]


def test_full_trackercontrol_copies_of_exodus_xray_and_tds() -> None:
    clone = mirror("TrackerControl+tracker-control-android")
    raw = git_show(clone, "app/src/main/assets/trackers.json")
    parsed = read_exodus(raw, where="exodus")
    doc = json.loads(raw)["trackers"]
    plain = set()  # an independent reading: unescape, then keep what is a host name
    skipped = 0
    for t in doc.values():
        for alt in filter(None, t["network_signature"].split("|")):
            host = alt.replace("\\.", ".").replace("\\-", "-").lower()
            exact = host.startswith("^") and host.endswith("$")
            host = host.strip("^$").lstrip(".")
            if re.fullmatch(r"[a-z0-9_-]+(\.[a-z0-9_-]+)+", host):
                plain.add((exact, host))
            else:
                skipped += 1
    assert {(r.exact, r.host) for r in parsed.rules} == plain
    assert parsed.skipped == skipped
    raw = git_show(clone, "app/src/main/assets/xray-blacklist.json")
    parsed = read_xray(raw, where="xray")
    owners = {o["owner_name"] for o in json.loads(raw) if o.get("owner_name")}
    assert owners <= {e.id for e in parsed.entities}
    raw = git_show(clone, "app/src/main/assets/duckduckgo-android-tds.json")
    parsed = read_trackerradar({"tds.json": raw}, where="tds")
    assert len(parsed.rules) == len(json.loads(raw)["trackers"])
