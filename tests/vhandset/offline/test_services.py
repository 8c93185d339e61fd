"""The services catalogue: the data file, its validation, and respond() without sockets."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest
import yaml

from vhandset.offline.services import (
    SERVICES_FILE,
    ServicesError,
    accepts_gzip,
    load_services,
    normalize_host,
    parse_services,
    respond,
)

REPORTED = [
    "Free Tibet",
    "Long live Taiwan independence",
    "democracy movement",
    "Voice of America",
]

MINIMAL = """\
version: 1
defaults:
  upload: {status: 204}
  fetch: {status: 200, json: {ok: true}}
services:
  - name: one
    hosts: [one.example]
    source: A test fixture (2024).
    routes:
      - path: /x
        text: x
"""


def _blacklist(body: bytes) -> list[str]:
    return json.loads(body)["data"]["config"]["blacklist"]


@pytest.mark.parametrize("host", ["globalapi.ad.xiaomi.com", "api.ad.xiaomi.com"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_mi_ad_blacklist_config_has_449_keywords(host: str, method: str) -> None:
    r = respond(host, method, "/api/v4/config?packageName=com.miui.securitycenter", {})
    assert r.status == 200 and r.service == "xiaomi-ad-blacklist-config"
    assert (r.header("content-type") or "").startswith("application/json")
    doc = json.loads(r.body)
    assert doc["data"]["name"] == "MiAdBlacklistConfig"
    words = doc["data"]["config"]["blacklist"]
    assert len(words) == 449 and len(set(words)) == 449
    assert all(isinstance(w, str) and 0 < len(w) <= 40 for w in words)
    for reported in REPORTED:
        assert reported in words
    fillers = [w for w in words if re.fullmatch(r"keyword-\d{4}", w)]
    assert len(fillers) == 449 - 5 and fillers[-1] == "keyword-0449"


def test_the_data_file_says_which_keywords_are_synthetic() -> None:
    raw = yaml.safe_load(SERVICES_FILE.read_text())
    (entry,) = [s for s in raw["services"] if s["name"] == "xiaomi-ad-blacklist-config"]
    assert "NCSC" in entry["source"] and "2021" in entry["source"]
    assert "synthetic fillers" in " ".join(entry["note"].split())
    assert "keyword-0006 to keyword-0449" in " ".join(entry["note"].split())


def test_every_service_cites_a_source_with_a_year() -> None:
    cat = load_services()
    assert len(cat.services) >= 15
    for s in cat.services:
        assert re.search(r"\b(19|20)\d\d\b", s.source), s.name


def test_android_checkin_is_a_protobuf() -> None:
    r = respond("android.clients.google.com", "POST", "/checkin", {"Content-Type": "x"}, b"\x0a")
    assert r.status == 200 and r.header("Content-Type") == "application/x-protobuffer"
    assert r.body[:2] == b"\x08\x01"  # field 1 (statsOk), varint, true
    assert b"auditor-offline" in r.body


@pytest.mark.parametrize(
    "host,path",
    [
        ("connectivitycheck.gstatic.com", "/generate_204"),
        ("connectivitycheck.android.com", "/generate_204"),
        ("www.google.com", "/gen_204"),
        ("play.googleapis.com", "/generate_204"),
    ],
)
def test_connectivity_probes_get_204_without_a_body(host: str, path: str) -> None:
    r = respond(host, "GET", path, {"Accept-Encoding": "gzip"})
    assert r.status == 204 and r.body == b"" and r.header("Content-Type") is None


@pytest.mark.parametrize("method", ["GET", "POST", "HEAD"])
def test_canary(method: str) -> None:
    r = respond("auditor-canary.invalid", method, "/auditor-canary/3f2a?x=1", {})
    assert (r.status, r.body, r.service) == (200, b"canary ok", "auditor-canary")


@pytest.mark.parametrize(
    "host,method,service,body",
    [
        ("tracking.miui.com", "POST", "xiaomi-tracking", {"code": 0}),
        ("tracking.intl.miui.com", "POST", "xiaomi-tracking", {"code": 0}),
        ("data.mistat.xiaomi.com", "POST", "xiaomi-mistat", {"code": 0}),
        ("data.mistat.intl.xiaomi.com", "POST", "xiaomi-mistat", {"code": 0}),
        ("sdkconfig.ad.xiaomi.com", "GET", "xiaomi-ad-sdk-config", None),
        ("sdkconfig.ad.intl.xiaomi.com", "POST", "xiaomi-ad-sdk-config", None),
        ("api.sec.miui.com", "GET", "xiaomi-security-center", None),
        ("update.miui.com", "POST", "xiaomi-ota", None),
        ("register.xmpush.global.xiaomi.com", "POST", "xiaomi-push-register", None),
        ("fr.register.xmpush.global.xiaomi.com", "POST", "xiaomi-push-register", None),
        ("www.googleapis.com", "POST", "google-apis", {}),
        ("resolver.msg.xiaomi.net", "GET", "xiaomi-other", {"code": 0}),
    ],
)
def test_vendor_hosts_are_answered_by_their_service(
    host: str, method: str, service: str, body: object
) -> None:
    r = respond(host, method, "/some/path", {})
    assert r.service == service and r.status == 200
    parsed = json.loads(r.body)
    if body is not None:
        assert parsed == body
    else:
        assert parsed["code"] == 0


def test_push_register_has_the_documented_reply_shape() -> None:
    r = respond("fr.register.xmpush.global.xiaomi.com", "POST", "/pass/v2/register", {})
    doc = json.loads(r.body)
    assert {"result", "code", "description", "trace_id"} <= set(doc)


@pytest.mark.parametrize(
    "host,service",
    [
        ("grs.hicloud.com", "huawei-grs"),
        ("grs.dbankcloud.com", "huawei-grs"),
        ("metrics1.data.hicloud.com", "huawei-hianalytics"),
        ("metrics-drcn.data.hicloud.com", "huawei-hianalytics"),
        ("query.hicloud.com", "huawei-cloud"),
        ("store-dre.hispace.dbankcloud.com", "huawei-cloud"),
        ("open.oneplus.net", "oneplus"),
        ("www.oneplus.com", "oneplus"),
        ("ifs.heytapmobile.com", "heytap"),
        ("cdn.heytapdl.com", "heytap"),
        ("app-measurement.com", "firebase-analytics"),
    ],
)
def test_patterns_pick_the_most_specific_service(host: str, service: str) -> None:
    assert respond(host, "GET", "/", {}).service == service


def test_a_bare_domain_does_not_match_its_star_pattern() -> None:
    assert respond("hicloud.com", "GET", "/", {}).service == "default"


def test_firebase_upload_is_204() -> None:
    assert respond("app-measurement.com", "POST", "/a", {}, b"\x01" * 40).status == 204


def test_generic_default_204_for_uploads_small_json_for_gets() -> None:
    for method in ("POST", "PUT", "PATCH"):
        r = respond("unknown.example.org", method, "/upload", {}, b"x")
        assert (r.status, r.body, r.service) == (204, b"", "default")
    r = respond("unknown.example.org", "GET", "/", {})
    assert r.status == 200 and json.loads(r.body) == {"code": 0, "result": "ok"}
    assert len(r.body) < 100


def test_huawei_cloud_uploads_get_the_default_204() -> None:
    assert respond("query.hicloud.com", "POST", "/x", {}).status == 204


def test_gzip_only_when_accepted_and_worth_it() -> None:
    plain = respond("globalapi.ad.xiaomi.com", "GET", "/", {})
    zipped = respond("globalapi.ad.xiaomi.com", "GET", "/", {"accept-encoding": "br, gzip"})
    assert zipped.header("Content-Encoding") == "gzip"
    assert gzip.decompress(zipped.body) == plain.body
    assert len(zipped.body) < len(plain.body)
    refused = respond("globalapi.ad.xiaomi.com", "GET", "/", {"Accept-Encoding": "gzip;q=0"})
    assert refused.header("Content-Encoding") is None
    small = respond("tracking.miui.com", "POST", "/", {"Accept-Encoding": "gzip"})
    assert small.header("Content-Encoding") is None and small.body == b'{"code":0}'
    # Deterministic bytes: the same request gives the same gzip stream.
    again = respond("globalapi.ad.xiaomi.com", "GET", "/", {"accept-encoding": "gzip"})
    assert again.body == zipped.body


@pytest.mark.parametrize(
    "value,ok",
    [("gzip", True), ("gzip, deflate", True), ("*", True), ("gzip;q=0", False),
     ("gzip;q=0.5", True), ("identity", False), ("", False), ("br", False)],
)  # fmt: skip
def test_accepts_gzip(value: str, ok: bool) -> None:
    assert accepts_gzip(value) is ok


@pytest.mark.parametrize(
    "raw,norm",
    [("GlobalAPI.ad.Xiaomi.com.", "globalapi.ad.xiaomi.com"), ("a.example:8443", "a.example"),
     ("[::1]:443", "::1"), ("::1", "::1")],
)  # fmt: skip
def test_normalize_host(raw: str, norm: str) -> None:
    assert normalize_host(raw) == norm


def test_host_lookup_ignores_case_port_and_trailing_dot() -> None:
    assert respond("GLOBALAPI.AD.XIAOMI.COM.", "GET", "/", {}).service == (
        "xiaomi-ad-blacklist-config"
    )


def test_a_custom_catalogue() -> None:
    cat = parse_services(MINIMAL, "mini.yaml")
    assert respond("one.example", "GET", "/x", {}, catalogue=cat).body == b"x"
    assert respond("one.example", "GET", "/y", {}, catalogue=cat).body == b'{"ok":true}'
    assert respond("one.example", "PUT", "/y", {}, catalogue=cat).status == 204


def _broken(old: str, new: str) -> str:
    assert old in MINIMAL
    return MINIMAL.replace(old, new)


@pytest.mark.parametrize(
    "text,message",
    [
        (_broken("    source: A test fixture (2024).\n", ""), "mini.yaml:6: service #1 (one)"),
        (_broken("A test fixture (2024).", "A test fixture."), "with its year"),
        (_broken("[one.example]", "[one..example]"), "not a host name"),
        (_broken("[one.example]", "[]"), "non-empty list"),
        (_broken("    routes:", "    ipv4: 8.8.8.8\n    routes:"), "outside the synthetic"),
        (_broken("    routes:", "    ipv6: '2001:4860::8888'\n    routes:"), "outside"),
        (_broken("        text: x", "        status: 204\n        text: x"), "has no body"),
        (_broken("        text: x", "        text: x\n        json: {}"), "not several"),
        (_broken("        text: x", "        hex: zz"), "does not decode"),
        (_broken("      - path: /x", "      - path: x"), "must start with '/'"),
        (_broken("    routes:", "    colour: red\n    routes:"), "unknown fields: colour"),
        (_broken("        text: x", "        text: x\n        headers: {Connection: close}"),
         "server's to set"),
        (_broken("version: 1", "version: 2"), "version: 1"),
        (_broken("  upload: {status: 204}\n", ""), "defaults.upload"),
        (MINIMAL + "  - name: two\n    hosts: [one.example]\n    source: Again (2024).\n",
         "already served by 'one'"),
        ("version: 1\nservices: [\n", "not valid YAML"),
    ],
)  # fmt: skip
def test_validation_errors_are_clear(text: str, message: str) -> None:
    with pytest.raises(ServicesError) as info:
        parse_services(text, "mini.yaml")
    assert message in str(info.value)
    assert str(info.value).startswith("mini.yaml")


def test_errors_name_the_line_of_the_service(tmp_path: Path) -> None:
    text = MINIMAL + "  - name: two\n    hosts: [two.example]\n    source: no year here\n"
    p = tmp_path / "services.yaml"
    p.write_text(text)
    with pytest.raises(ServicesError, match=rf"^{re.escape(str(p))}:12: service #2 \(two\)"):
        load_services(p)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ServicesError, match="cannot read"):
        load_services(tmp_path / "nope.yaml")
