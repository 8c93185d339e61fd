"""Redaction for publication: placeholders are stable and keep the link between encodings; a
report written redacted holds no original in any encoding the scanner knows, in any format;
the session it came from is untouched."""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import html
import io
import json
import re
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import pytest

from auditor import columns as C
from auditor.analysis import scanning
from auditor.analysis.engine import analyze, write
from auditor.analysis.escape import csv_cell, html_text, md_text
from auditor.analysis.identifiers import Encoding, Needle, build_needles
from auditor.analysis.model import Analysis, Evidence, Finding, Severity
from auditor.analysis.redact import (
    Original,
    Redactor,
    check_output,
    kind_of,
    redact_analysis,
    write_redacted,
)
from auditor.errors import AuditorError
from auditor.records import HttpRecord
from auditor.session import Session, SessionWriter

IMEI = "490154203237518"
SERIAL = "8A3X0L9QZ7"
AID = "9774d56d682e549c"
MAC = "3c:28:6d:11:22:33"
ADID = "38400000-8cf0-11bd-b23e-10b96e40000d"
EMAIL = "jane.reporter@example.org"
PHONE = "+33612345678"
# found by the scanner's personal-data patterns, never named to it
SOURCE_EMAIL = "undisclosed.source@example.net"  # in a URL
FRIEND_EMAIL = "whistle.blower@example.com"  # in a body only, right after the IMEI
OWNER = "Jane Q. Reporter"  # given to the redactor by the user
ALL_FORMATS = ["html", "json", "csv", "md"]

_BASE64_FAMILY = {
    Encoding.BASE64,
    Encoding.BASE64URL,
    Encoding.BASE64_UNPADDED,
    Encoding.BASE64URL_UNPADDED,
    Encoding.BASE64_INNER,
    Encoding.BASE64URL_INNER,
    Encoding.MD5_BASE64,
    Encoding.MD5_BASE64URL,
    Encoding.MD5_RAW,
    Encoding.SHA1_BASE64,
    Encoding.SHA1_BASE64URL,
    Encoding.SHA1_RAW,
    Encoding.SHA256_BASE64,
    Encoding.SHA256_BASE64URL,
    Encoding.SHA256_RAW,
    Encoding.VARINT,
}
TOKEN = re.compile(r"‹([A-Z][A-Z0-9-]*-\d+)(?::[a-z0-9:>-]+)?›")


def _texts(needle: Needle) -> list[str]:
    try:
        return [needle.pattern.decode("utf-8")]
    except UnicodeDecodeError:  # raw digests: as excerpts (backslashreplace) or Latin-1 show them
        return [
            needle.pattern.decode("utf-8", "backslashreplace"),
            needle.pattern.decode("latin-1"),
        ]


# ---------------------------------------------------------------------------------- unit tests


def _redactor(*extra: Original) -> Redactor:
    return Redactor(
        [
            Original("imei", IMEI, "device"),
            Original("serial", SERIAL, "device"),
            Original("android_id", AID, "device"),
            Original("wifi_mac", MAC, "device"),
            Original("advertising_id", ADID, "device"),
            Original("account", EMAIL, "searched"),
            Original("phone_number", PHONE, "searched"),
            *extra,
        ]
    )


@pytest.mark.parametrize(
    "name,value,kind",
    [
        ("imei", IMEI, "IMEI"),
        ("serial", SERIAL, "SERIAL"),
        ("android_id", AID, "ANDROID-ID"),
        ("wifi_mac", MAC, "MAC"),
        ("advertising_id", ADID, "AD-ID"),
        ("phone_number", PHONE, "PHONE"),
        ("account", EMAIL, "EMAIL"),
        ("account", "jane_r", "ACCOUNT"),
        ("custom_thing", "x-1234", "CUSTOM-THING"),
        ("owner", PHONE, "PHONE"),
    ],
)
def test_kind_comes_from_the_name_then_the_shape(name: str, value: str, kind: str) -> None:
    assert kind_of(name, value) == kind


def test_placeholders_are_stable_and_numbered_by_kind_then_hash() -> None:
    second = "356938035643809"
    originals = [
        Original("imei", IMEI, "device"),
        Original("imei2", second, "device"),
        Original("account", EMAIL, "searched"),
        Original("owner_mail", "other.person@example.com", "extra"),
        Original("serial", SERIAL, "device"),
    ]
    a, b = Redactor(originals), Redactor(list(reversed(originals)))
    for o in originals:
        assert a.token(o.value) == b.token(o.value)
        assert TOKEN.fullmatch(a.token(o.value) or "")
    order = sorted([IMEI, second], key=lambda v: hashlib.sha256(v.encode()).hexdigest())
    assert [a.token(v) for v in order] == ["‹IMEI-1›", "‹IMEI-2›"]
    assert {a.token(EMAIL), a.token("other.person@example.com")} == {"‹EMAIL-1›", "‹EMAIL-2›"}
    assert a.token(SERIAL) == "‹SERIAL-1›"
    # the same value under two names is one original
    c = Redactor([*originals, Original("serial", SERIAL, "searched")])
    assert c.token(SERIAL) == "‹SERIAL-1›" and len(c.placeholders) == 5


def test_every_encoding_the_scanner_knows_becomes_one_linked_placeholder() -> None:
    red = _redactor()
    ids = {"imei": IMEI, "serial": SERIAL, "android_id": AID, "wifi_mac": MAC,
           "advertising_id": ADID, "account": EMAIL, "phone_number": PHONE}  # fmt: skip
    needles = build_needles(ids).needles
    assert len(needles) > 1000  # every spelling, every encoding, every base64 alignment
    for needle in needles:
        base = (red.token(ids[needle.identifier]) or "")[1:-1]
        for text in _texts(needle):
            out = red.redact_text(f"<{text}>")
            m = TOKEN.fullmatch(out[1:-1])
            assert m and m.group(1) == base, (needle, out)
            assert red.find(out) == []
    b = IMEI.encode()
    assert red.redact_text(base64.b64encode(b).decode()) == "‹IMEI-1:base64›"
    assert red.redact_text(hashlib.sha256(b).hexdigest()) == "‹IMEI-1:sha256-hex›"
    assert red.redact_text(hashlib.md5(b).hexdigest().upper()) == "‹IMEI-1:md5-hex›"
    assert red.redact_text(b.hex()) == "‹IMEI-1:hex›"
    assert red.redact_text(quote(EMAIL, safe="")) == "‹EMAIL-1:url›"
    assert red.redact_text(MAC.upper().replace(":", "-")) == "‹MAC-1›"
    assert red.redact_text(PHONE[1:]) == "‹PHONE-1›"
    assert red.redact_text(ADID.replace("-", "").upper()) == "‹AD-ID-1›"


def test_case_is_ignored_only_where_the_encoding_ignores_it() -> None:
    red = _redactor()
    md5 = hashlib.md5(IMEI.encode()).hexdigest()
    mixed = "".join(c.upper() if i % 2 else c for i, c in enumerate(md5))
    assert red.redact_text(f"h={mixed}") == "h=‹IMEI-1:md5-hex›"
    assert red.redact_text("Jane.Reporter@Example.ORG") == "‹EMAIL-1›"
    b64 = base64.b64encode(SERIAL.encode()).decode()
    swapped = b64.swapcase()
    assert red.redact_text(b64) == "‹SERIAL-1:base64›"
    assert red.redact_text(swapped) == swapped  # another value: base64 is case-sensitive


def test_longest_match_wins_and_leaves_no_fragment() -> None:
    red = Redactor(
        [Original("account_no", "12345678", "extra"), Original("customer", "9912345678", "extra")]
    )
    assert red.redact_text("a=9912345678&b=12345678") == "a=‹CUSTOMER-1›&b=‹ACCOUNT-NO-1›"
    # the padded base64 goes whole, not its unpadded prefix and a stray "="
    serial = Redactor([Original("serial", SERIAL, "device")])
    b64 = base64.b64encode(SERIAL.encode()).decode()
    assert b64.endswith("=")
    assert serial.redact_text(f"s={b64}&") == "s=‹SERIAL-1:base64›&"
    # inside a longer base64 blob, at any alignment
    for pad in (b"", b"x", b"xy"):
        blob = base64.b64encode(pad + b'{"sn":"' + SERIAL.encode() + b'","k":1}').decode()
        out = serial.redact_text(blob)
        assert "‹SERIAL-1:base64-inner" in out and serial.find(out) == []


def test_redaction_leaves_nothing_to_redact_again() -> None:
    red = _redactor()
    text = f"imei={IMEI}&h={hashlib.sha1(IMEI.encode()).hexdigest()}&m={MAC}"
    once = red.redact_text(text)
    assert once == "imei=‹IMEI-1›&h=‹IMEI-1:sha1-hex›&m=‹MAC-1›"
    assert red.find(once) == []
    # redacted again, its marks are taken for captured ones (below): nothing else changes
    assert red.redact_text(once) == once.replace("‹", "\\u2039").replace("›", "\\u203a")


def test_spellings_inside_base64_and_hex_are_found() -> None:
    red = _forms_redactor()
    hexed = b"35-209900-176148-1".hex()
    assert red.redact_text(f"h={hexed}") == "h=‹IMEI-1:hex›"
    blob = base64.b64encode(b'{"tel":"06 12 34 56 78"}').decode()
    out = red.redact_text(f"b={blob}")
    assert "‹PHONE-1:base64-inner:national›" in out and red.find(out) == []


def test_an_android_id_sent_as_a_java_long_is_redacted() -> None:
    red = Redactor([Original("android_id", AID, "device")])
    n = int(AID, 16)
    signed = n - (1 << 64) if n >= 1 << 63 else n
    out = red.redact_text(f"a={n}&b={signed}&c={AID.upper()}")
    assert out.startswith("a=‹ANDROID-ID-1:decimal›&b=") and out.endswith("&c=‹ANDROID-ID-1›")
    assert str(abs(signed)) not in out


def test_a_capture_cannot_forge_a_placeholder() -> None:
    """A request that sends ``imei=‹IMEI-1›`` to some host would read, in the redacted report,
    as the phone's IMEI sent there: captured marks are shown escaped."""
    red = _redactor()
    out = red.redact_text(f"https://evil.example/?imei=‹IMEI-1›&real={IMEI}")
    assert out == "https://evil.example/?imei=\\u2039IMEI-1\\u203a&real=‹IMEI-1›"
    assert out.count("‹") == 1


def test_values_cut_at_the_edge_of_an_excerpt_go_too() -> None:
    red = _redactor(Original("email", FRIEND_EMAIL, "personal"))
    ev = {"excerpt": f'aaa":"{IMEI}","friend":"whistle.blo', "flow_id": "f-49015420"}
    out = red.redact(ev)
    assert out["excerpt"].startswith('…":"‹IMEI-1›","friend":"‹EMAIL-')
    assert out["excerpt"].endswith(":cut›") and "whistle" not in out["excerpt"]
    assert red.redact({"excerpt": "4203237518 tail"})["excerpt"] == "‹IMEI-1:cut› …"
    assert out["flow_id"] == "f-49015420"  # only excerpts are cut text
    # a value nobody named, cut by the excerpt: the cut word at either end goes
    cut = {"excerpt": f"oot: imei {IMEI} used by someone.else@exa"}
    assert _redactor().redact(cut)["excerpt"] == "… imei ‹IMEI-1› used by …"
    assert _redactor().redact({"excerpt": IMEI})["excerpt"] == "‹IMEI-1›"


def test_personal_spellings_join_the_known_value() -> None:
    red = Redactor.with_personal(
        [Original("wifi_mac", MAC, "device")],
        [("mac", MAC.upper().replace(":", "-")), ("email", "bob@example.net")],
    )
    assert red.token(MAC.upper().replace(":", "-")) == red.token(MAC) == "‹MAC-1›"
    assert red.token("bob@example.net") == "‹EMAIL-1›"
    assert len(red.placeholders) == 2


def test_a_too_short_extra_value_is_refused() -> None:
    with pytest.raises(AuditorError, match="shorter than"):
        Redactor.from_analysis(Analysis({}, pd.DataFrame(), []), {"initials": "JR"})


def _small_analysis() -> Analysis:
    ev = Evidence("f1", "url", "imei", "plain", "imei", f"?imei={IMEI}&sn={SERIAL}")
    finding = Finding(
        rule="identifier-sent",
        severity=Severity.HIGH,
        title=f"imei sent to t.example ({IMEI})",
        host="t.example",
        organisation=None,
        country=None,
        identifiers=("imei",),
        encodings=("plain",),
        flow_ids=("f1",),
        evidence=(ev,),
        data={IMEI: [SERIAL, 7], "n": 12},
    )
    doc = {
        "device": {
            "manufacturer": "Xiaomi",
            "serial": SERIAL,
            "identifiers": [
                {"name": "imei", "value": IMEI, "source": "service call", "reason": None},
                {"name": "serial", "value": SERIAL, "source": "getprop", "reason": None},
                {"name": "android_id", "value": "ab", "source": "settings", "reason": None},
            ],
            "warnings": [f"imei {IMEI} read as root"],
        },
        "identifiers_searched": ["imei", "serial"],
        "findings": [finding.to_dict()],
        "warnings": [f"s1: odd line near {base64.b64encode(IMEI.encode()).decode()}"],
        "_highlight": {"imei": [IMEI], "serial": [SERIAL]},
    }
    t0 = pd.Timestamp("2026-01-01T00:00:00Z")
    base = {C.RECORD_TYPE: "http", C.METHOD: "GET", C.NAME: "t.example", C.START: t0,
            C.ORGANISATION: None, C.ORGANISATION_NAME: None}  # fmt: skip
    flows = pd.DataFrame(
        [
            {**base, C.FLOW_ID: "f1", C.URL: f"http://t.example/?imei={IMEI}", C.BYTES_UP: 10},
            {**base, C.FLOW_ID: "f2", C.BYTES_UP: 20,
             C.URL: "http://t.example/?c=bob%40example.net&lat=48.8566&lng=2.3522"},
            {**base, C.FLOW_ID: "f3", C.URL: None, C.BYTES_UP: 30},
        ]
    )  # fmt: skip
    return Analysis(doc, flows, [finding], warnings=[str(w) for w in doc["warnings"]])


def test_redact_analysis_covers_doc_flows_and_findings_and_leaves_the_input() -> None:
    analysis = _small_analysis()
    before = json.dumps(analysis.doc, sort_keys=True, default=str)
    red, rmap = redact_analysis(analysis)
    assert json.dumps(analysis.doc, sort_keys=True, default=str) == before
    dev = red.doc["device"]
    assert dev["serial"] == "‹SERIAL-1›"
    assert [i["value"] for i in dev["identifiers"]] == ["‹IMEI-1›", "‹SERIAL-1›", "‹REDACTED›"]
    assert red.doc["_highlight"]["imei"][0] == "‹IMEI-1›"
    assert red.flows[C.URL][0] == "http://t.example/?imei=‹IMEI-1›"
    url2 = red.flows[C.URL][1]
    assert "bob" not in url2 and "48.8566" not in url2 and "2.3522" not in url2, url2
    assert pd.isna(red.flows[C.URL][2]) and red.flows[C.BYTES_UP].tolist() == [10, 20, 30]
    assert red.findings[0].severity is Severity.HIGH
    assert IMEI not in red.findings[0].title and IMEI not in red.findings[0].evidence[0].excerpt
    assert "‹IMEI-1›" in red.findings[0].data
    assert red.warnings[0] == "s1: odd line near ‹IMEI-1:base64›"
    # the map: placeholders, kinds, sources and encodings, never a value
    assert red.doc["redaction"] == rmap.to_dict() and rmap.count > 8
    imei = next(p for p in rmap.placeholders if p.placeholder == "‹IMEI-1›")
    assert imei.kind == "IMEI" and {"base64", "plain"} <= set(imei.encodings)
    assert "device:imei" in imei.sources and "searched:imei" in imei.sources
    assert {p.kind for p in rmap.placeholders} >= {"IMEI", "SERIAL", "EMAIL", "GPS"}
    shown = json.dumps(red.doc, default=str) + red.flows.to_csv()
    checker = Redactor.from_analysis(analysis)
    assert checker.find(shown) == []
    assert checker.find(json.dumps(analysis.doc, default=str))  # the check can fail


def test_fields_read_by_schema_keep_their_path_and_size_not_their_value() -> None:
    """bodies_read.by_schema samples hold decoded fields: tokens, cookies and account names
    the redactor does not know, and values cut short; a redacted report keeps none of them."""
    analysis = _small_analysis()
    token = "oauth2rt_1.AbCdEfGh-secret-refresh-token"
    analysis.doc["bodies_read"] = {
        "by_schema": {
            "f1": [
                {
                    "message": "CheckinRequest",
                    "sample": [
                        {"path": "security_token", "kind": "int", "value": "7226551961190826498"},
                        {"path": "account_cookie[0]", "kind": "string", "value": token},
                        {"path": "imei", "kind": "string", "value": IMEI[:9]},  # cut short
                        {"path": "locale", "kind": "bytes", "size": 48},
                    ],
                }
            ]
        },
        "decrypted": {},
    }
    red, _ = redact_analysis(analysis)
    sample = red.doc["bodies_read"]["by_schema"]["f1"][0]["sample"]
    assert [f["path"] for f in sample] == ["security_token", "account_cookie[0]", "imei", "locale"]
    assert all("value" not in f for f in sample)
    assert [f["size"] for f in sample] == [19, len(token), 9, 48]
    shown = json.dumps(red.doc, default=str)
    assert token not in shown and "7226551961190826498" not in shown and IMEI[:9] not in shown
    # the analysis itself keeps them (only what is published is redacted)
    assert token in json.dumps(analysis.doc)


def test_artifacts_are_redacted_in_place_and_binary_ones_omitted(tmp_path: Path) -> None:
    out = tmp_path / "pub"
    art = out / "artifacts"
    art.mkdir(parents=True)
    (art / "keyword-list-f1-0.json").write_text(
        json.dumps({"flow_id": "f1", "url": f"http://t/?imei={IMEI}", "entries": ["a", SERIAL]})
    )
    (art / "blob.bin").write_bytes(b"\xff\xfe" + IMEI.encode())
    written, rmap = write_redacted(_small_analysis(), out, ALL_FORMATS, artifacts_src=art)
    assert not (art / "blob.bin").exists()
    kept = json.loads((art / "keyword-list-f1-0.json").read_text())
    assert kept["url"] == "http://t/?imei=‹IMEI-1›" and kept["entries"] == ["a", "‹SERIAL-1›"]
    doc = json.loads((out / "findings.json").read_text())
    assert doc["redaction"]["omitted_artifacts"] == [
        {"path": "artifacts/blob.bin", "reason": "not text: cannot be redacted safely"}
    ]
    assert doc["redaction"]["count"] == rmap.count
    assert check_output(out, Redactor.from_analysis(_small_analysis())) == []
    assert {p.name for p in written} >= {"findings.json", "flows.csv", "keyword-list-f1-0.json"}


def test_a_leaking_output_is_refused_and_deleted(tmp_path: Path) -> None:
    out = tmp_path / "pub"
    out.mkdir()
    stale = out / "notes.txt"  # e.g. an earlier, unredacted export left in the folder
    stale.write_text(f"old: {hashlib.md5(IMEI.encode()).hexdigest()}\n")
    with pytest.raises(AuditorError) as err:
        write_redacted(_small_analysis(), out, ALL_FORMATS)
    message = str(err.value)
    assert "‹IMEI-1:md5-hex›" in message and "notes.txt" in message
    assert Redactor.from_analysis(_small_analysis()).find(message) == []
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # what it wrote is gone


def test_the_check_sees_through_the_reports_escapes(tmp_path: Path) -> None:
    red = _redactor()
    raw = hashlib.md5(IMEI.encode()).digest()
    excerpt = (b"k=" + raw + b";").decode("utf-8", "backslashreplace")  # as the scanner cuts it
    text = f"sent {EMAIL} and {PHONE} in {excerpt}"
    writers = {
        "summary.md": md_text,
        "report.html": html_text,
        "findings.json": lambda t: json.dumps({"excerpt": t}),
        "flows.csv": lambda t: f"url\n{csv_cell(PHONE if t == text else red.redact_text(PHONE))}\n",
    }
    for name, show in writers.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / name).write_text(show(text), encoding="utf-8")
        found = {leak.placeholder for leak in check_output(folder, red)}
        assert "‹PHONE-1›" in found, (name, show(text))
        if name != "flows.csv":
            assert {"‹EMAIL-1›", "‹IMEI-1:md5-raw›"} <= found, (name, show(text))
        # redacted before it is escaped, as write_redacted does: nothing left
        (folder / name).write_text(show(red.redact_text(text)), encoding="utf-8")
        assert check_output(folder, red) == [], name


# ------------------------------------------------------------------------------- end to end

HOSTS = ("tracking.miui.com", "data.mistat.xiaomi.com", "api.ad.xiaomi.com")


def _record(**kw: object) -> HttpRecord:
    return HttpRecord(**kw)  # type: ignore[arg-type]


def _make_session(root: Path) -> Path:
    b = IMEI.encode()
    device = {
        "manufacturer": "Xiaomi",
        "model": "M2007J3SG",
        "android_release": "10",
        "serial": SERIAL,
        "identifiers": [
            {"name": "android_id", "value": AID, "source": "settings get", "reason": None},
            {"name": "serial", "value": SERIAL, "source": "getprop ro.serialno", "reason": None},
            {"name": "imei", "value": IMEI, "source": "service call", "reason": None},
            {"name": "wifi_mac", "value": MAC, "source": "cat", "reason": None},
            {"name": "advertising_id", "value": ADID, "source": "su: cat", "reason": None},
        ],
    }
    w = SessionWriter.create(root, device=device, notes="redaction test")
    body = json.dumps(
        {
            "d": base64.b64encode(b).decode(),
            "a": base64.urlsafe_b64encode(AID.encode()).decode().rstrip("="),
            "e": base64.b64encode(EMAIL.encode()).decode(),
            "x": b.hex(),
            "imei": IMEI,
            "friend": FRIEND_EMAIL,
        }
    ).encode()
    inner = json.dumps({"v": 3, "sn": SERIAL, "aid": AID, "imei": IMEI}).encode()
    blob = base64.urlsafe_b64encode(inner).decode().rstrip("=")
    keywords = json.dumps(
        {"MiAdBlackListConfig": {"keywords": [f"word{i}" for i in range(60)]}}
    ).encode()
    flows: list[dict] = [
        {"host": HOSTS[0], "path": f"/track?imei={IMEI}&sn={SERIAL}"
         f"&contact={quote(SOURCE_EMAIL, safe='')}&who={quote(OWNER)}"},
        {"host": HOSTS[1], "path": f"/c?i={IMEI}&h={SERIAL.encode().hex()}&blob={blob}"},
        {"host": HOSTS[2], "path": f"/v2?imei={IMEI}&m={hashlib.md5(AID.encode()).hexdigest()}"
         f"&s={hashlib.sha256(EMAIL.encode()).hexdigest()}"
         f"&p={hashlib.sha256(PHONE.encode()).hexdigest().upper()}&mac={MAC.upper()}"},
        {"host": HOSTS[0], "path": "/json", "method": "POST", "body": gzip.compress(body),
         "encoding": "gzip", "ctype": "application/json"},
        {"host": HOSTS[2], "path": "/log", "method": "POST", "ctype": "text/plain",
         "body": f"boot: imei {IMEI} used by {FRIEND_EMAIL} today".encode()},
        {"host": "sdkconfig.ad.xiaomi.com", "path": "/cfg", "headers": (
            ("X-Account", quote(EMAIL, safe="")),
            ("Cookie", f"ph={quote(PHONE, safe='')}; adid={ADID.upper()}; s={SERIAL}"),
        )},
        {"host": "globalapi.ad.xiaomi.com", "path": f"/config?imei={IMEI}", "scheme": "http",
         "response": keywords},
    ]  # fmt: skip
    for n, f in enumerate(flows):
        scheme = str(f.get("scheme", "https"))
        host, path = str(f["host"]), str(f["path"])
        req = w.bodies.put(f["body"], f.get("encoding")) if "body" in f else None
        resp = w.bodies.put(f["response"]) if "response" in f else None
        headers = (("Host", host), *f.get("headers", ()))
        if "encoding" in f:
            headers += (("Content-Encoding", str(f["encoding"])),)
        w.write(
            _record(
                id=f"flow-{n:02d}",
                method=str(f.get("method", "GET")),
                scheme=scheme,
                host=host,
                port=443 if scheme == "https" else 80,
                path=path,
                url=f"{scheme}://{host}{path}",
                request_start=f"2026-01-01T00:00:{n:02d}.000000Z",
                request_end=f"2026-01-01T00:00:{n:02d}.100000Z",
                response_end=f"2026-01-01T00:00:{n:02d}.200000Z",
                server_ip="203.0.113.7",
                server_port=443 if scheme == "https" else 80,
                request_headers=headers,
                request_content_type=f.get("ctype"),
                request_body=req,
                status=200,
                response_headers=(("Content-Type", "application/json"),),
                response_content_type="application/json" if resp else None,
                response_body=resp,
            )
        )
    w.close()
    return w.path


def _tree_hash(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _views(path: Path) -> list[str]:
    """What a reader of ``path`` can see: its bytes, its text with the report's escapes
    undone, its JSON strings, CSV cells, Parquet cells."""
    data = path.read_bytes()
    views = [data.decode("latin-1")]
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
        return (
            views
            + [" ".join(map(str, df.columns))]
            + ["\n".join(df[c].dropna().astype(str)) for c in df.columns]
        )
    text = data.decode("utf-8")
    unescaped = re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", html.unescape(text))
    unescaped = re.sub(r"\\u([0-9a-f]{4})", lambda m: chr(int(m.group(1), 16)), unescaped)
    views += [text, unescaped]
    if path.suffix == ".json":
        views.append(json.dumps(json.loads(text), ensure_ascii=False))
        strings: list[str] = []
        stack = [json.loads(text)]
        while stack:
            o = stack.pop()
            if isinstance(o, str):
                strings.append(o)
            elif isinstance(o, dict):
                stack += [*o.keys(), *o.values()]
            elif isinstance(o, list):
                stack += o
        views.append("\n".join(strings))
    if path.suffix == ".csv":
        views.append("\n".join(c for row in csv.reader(io.StringIO(text)) for c in row))
    return views


def _originals_in(folder: Path, originals: dict[str, str]) -> dict[str, set[str]]:
    """Which originals (by name) each file under ``folder`` still shows, in any encoding the
    scanner searches for; case-insensitively except in base64, raw and varint forms."""
    needles = build_needles(originals).needles
    found: dict[str, set[str]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        views = _views(path)
        lowered = [v.lower() for v in views]
        for needle in needles:
            sensitive = needle.chain[0] in _BASE64_FAMILY
            for text in _texts(needle):
                hay = views if sensitive else lowered
                t = text if sensitive else text.lower()
                if any(t in v for v in hay):
                    found.setdefault(str(path.relative_to(folder)), set()).add(needle.identifier)
    return found


def test_a_published_report_holds_no_original_in_any_encoding(tmp_path: Path) -> None:
    session = _make_session(tmp_path / "captures")
    sealed = _tree_hash(session)
    work = tmp_path / "work"
    analysis = analyze(
        [session],
        identifiers={"account": EMAIL, "phone_number": PHONE},
        artifacts_dir=work / "artifacts",
    )
    assert list((work / "artifacts").glob("keyword-list-*.json"))
    # what the scanner itself found without knowing the values (what the engine keeps)
    personal = scanning.scan_sessions([Session(session)], {}).personal
    found = {v for values in personal.values() for _, v in values}
    assert {SOURCE_EMAIL, FRIEND_EMAIL} <= found
    originals = {
        "imei": IMEI, "serial": SERIAL, "android_id": AID, "wifi_mac": MAC,
        "advertising_id": ADID, "account": EMAIL, "phone_number": PHONE,
        "source": SOURCE_EMAIL, "friend": FRIEND_EMAIL, "owner": OWNER,
    }  # fmt: skip

    # The unredacted report shows the originals, so the search below can fail.
    plain = write(analysis, tmp_path / "plain", ALL_FORMATS)
    assert {p.name for p in plain} == {
        "findings.json", "flows.csv", "flows.parquet", "endpoints.csv", "summary.md",
        "report.html",
    }  # fmt: skip
    leaked = _originals_in(tmp_path / "plain", originals)
    assert {"imei", "serial", "android_id", "account", "source", "owner"} <= leaked["flows.csv"]
    assert {"imei", "android_id", "account", "phone_number"} <= leaked["findings.json"]
    # the personal-data finding's evidence shows the e-mail address it found
    assert "friend" in leaked["findings.json"]
    assert " used by whistle.blo" in (tmp_path / "plain" / "findings.json").read_text()
    assert {"imei", "serial"} <= leaked["flows.parquet"] and "imei" in leaked["report.html"]

    pub = tmp_path / "pub"
    written, rmap = write_redacted(
        analysis,
        pub,
        ALL_FORMATS,
        artifacts_src=work / "artifacts",
        extra={"owner": OWNER},
        personal=[kv for values in personal.values() for kv in values],
    )
    names = {str(p.relative_to(pub)) for p in written}
    assert {p.name for p in plain} <= names
    assert any(n.startswith("artifacts/keyword-list-") for n in names)
    assert _originals_in(pub, originals) == {}
    for path in pub.rglob("*"):
        if path.is_file() and path.suffix != ".parquet":
            assert "whistle" not in path.read_text(encoding="utf-8"), path

    # one placeholder per original, the same in every place it was sent
    red = Redactor.from_analysis(
        analysis, {"owner": OWNER}, personal=[kv for vs in personal.values() for kv in vs]
    )
    imei = red.token(IMEI)
    assert imei and red.token(SOURCE_EMAIL) and red.token(FRIEND_EMAIL)
    with open(pub / "flows.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for host in HOSTS:
        assert any(r[C.NAME] == host and f"={imei}&" in r[C.URL] for r in rows), host
    doc = json.loads((pub / "findings.json").read_text(encoding="utf-8"))
    sent = [
        f
        for f in doc["findings"]
        if f["rule"] == "identifier-sent" and f["identifiers"] == ["imei"]
    ]
    assert {f["host"] for f in sent} >= set(HOSTS)
    for f in sent:
        for ev in f["evidence"]:
            assert imei[:-1] in ev["excerpt"], ev
    assert any("‹IMEI-1:base64›" in ev["excerpt"] for f in sent for ev in f["evidence"])
    dev = doc["device"]
    assert dev["serial"] == red.token(SERIAL)
    assert {i["name"]: i["value"] for i in dev["identifiers"]} == {
        "android_id": red.token(AID), "serial": red.token(SERIAL), "imei": imei,
        "wifi_mac": red.token(MAC), "advertising_id": red.token(ADID),
    }  # fmt: skip
    assert doc["identifiers_searched"] == sorted(
        ["account", "advertising_id", "android_id", "imei", "phone_number", "serial", "wifi_mac"]
    )
    # the map names placeholders, kinds and encodings, and counts them
    assert doc["redaction"] == rmap.to_dict() and rmap.count > 20
    kinds = {p["placeholder"]: p for p in doc["redaction"]["placeholders"]}
    assert kinds[imei]["kind"] == "IMEI" and {"plain", "base64", "hex"} <= set(
        kinds[imei]["encodings"]
    )
    assert kinds[red.token(OWNER) or ""]["sources"] == ["extra:owner"]
    html_text = (pub / "report.html").read_text(encoding="utf-8")
    assert f"<mark>{imei}</mark>" in html_text
    artifact = next((pub / "artifacts").glob("keyword-list-*.json"))
    assert f"imei={imei}" in json.loads(artifact.read_text(encoding="utf-8"))["url"]

    # The analysis can be written redacted into its own artifacts folder as well.
    pub2 = tmp_path / "pub2"
    again = analyze(
        [session], identifiers={"account": EMAIL, "phone_number": PHONE},
        artifacts_dir=pub2 / "artifacts",
    )  # fmt: skip
    write_redacted(again, pub2, ["json", "csv"], artifacts_src=pub2 / "artifacts")
    assert _originals_in(pub2, {k: v for k, v in originals.items() if k != "owner"}) == {}
    assert "whistle" not in (pub2 / "findings.json").read_text(encoding="utf-8")

    # sealed evidence keeps its originals, untouched
    assert _tree_hash(session) == sealed


def test_the_cli_writes_the_redacted_report_and_keeps_originals_out(tmp_path: Path) -> None:
    """``auditor analyze --redact``: what the engine keeps of personal values is enough, the
    extracted artifacts never reach the report folder unredacted, and the terminal output is
    redacted too."""
    from click.testing import CliRunner

    import auditor.cli

    session = _make_session(tmp_path / "captures")
    sealed = _tree_hash(session)
    out = tmp_path / "pub"
    args = ["analyze", str(session), "--out", str(out), "--redact", "--json"]
    args += ["--identifier", f"account={EMAIL}", "--identifier", f"phone_number={PHONE}"]
    res = CliRunner().invoke(auditor.cli.main, [*args, "--redact-value", f"owner={OWNER}"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["findings"] > 0
    originals = {
        "imei": IMEI, "serial": SERIAL, "android_id": AID, "wifi_mac": MAC,
        "advertising_id": ADID, "account": EMAIL, "phone_number": PHONE,
        "source": SOURCE_EMAIL, "friend": FRIEND_EMAIL, "owner": OWNER,
    }  # fmt: skip
    assert list((out / "artifacts").glob("keyword-list-*.json"))
    assert _originals_in(out, originals) == {}
    after = _tree_hash(session)
    assert after.pop("custody.jsonl")  # the command was logged, and nothing else changed
    assert after == sealed  # the sealed session keeps the originals
    plain_args = [a for a in args if a != "--json"]
    text = CliRunner().invoke(auditor.cli.main, [*plain_args, "--out", str(tmp_path / "p2")])
    assert text.exit_code == 0 and IMEI not in text.output
    bad = CliRunner().invoke(auditor.cli.main, ["analyze", str(session), "--redact-value", "a=bcd"])
    assert bad.exit_code == 1 and "--redact-value needs --redact" in bad.output


# ------------------------------------------------------ the forms people and SDKs write (#15)

IMEI_B = "352099001761481"  # 35-209900-176148-1, as GSMA writes it
MAC_B = "00:12:34:56:78:9a"  # 0012.3456.789a in Cisco's dotted form, 78187493530 in decimal
MIXED_EMAIL = "Jane.Reporter@Example.ORG"  # the searched e-mail, as a user typed it


def _pct(text: str) -> str:
    return "".join(f"%{b:02X}" for b in text.encode())


# name -> (the form as planted, what may not remain of it in any output)
FORMS: dict[str, tuple[str, str]] = {
    "email-url-url": (quote(quote(EMAIL, safe=""), safe=""), "reporter%2540example"),
    "imei-url-url": (quote(_pct(IMEI_B), safe=""), "%2533%2535%2532%2530"),
    "imei-14": (IMEI_B[:14], IMEI_B[:14]),
    "imei-dashes": ("35-209900-176148-1", "209900-176148"),
    "imei-spaces": (quote("35 209900 176148 1"), "209900%20176148"),
    "imei-plus": ("35+209900+176148+1", "209900+176148"),
    "mac-cisco": ("0012.3456.789a", "3456.789a"),
    "mac-bare": ("00123456789A", "123456789a"),
    "mac-decimal": ("78187493530", "78187493530"),
    "phone-national": (quote("06 12 34 56 78"), "12%2034%2056"),
    "phone-parens": (quote("(06) 12-34-56-78"), "12-34-56-78"),
    "phone-spaces": (quote("+33 6 12 34 56 78"), "12%2034%2056"),
    "phone-trunk": ("+33+(0)6+12+34+56+78", "12+34+56+78"),
    "email-base64-mixed": (
        base64.b64encode(MIXED_EMAIL.encode()).decode(),
        base64.b64encode(MIXED_EMAIL.encode()).decode()[4:20],
    ),
    "email-base64url-mixed": (
        base64.urlsafe_b64encode(b"~~" + MIXED_EMAIL.encode()).decode().rstrip("="),
        base64.urlsafe_b64encode(b"~~" + MIXED_EMAIL.encode()).decode()[4:20],
    ),
    "email-hex-mixed": (MIXED_EMAIL.encode().hex(), MIXED_EMAIL.encode().hex()[6:30]),
    "email-json-escaped": (r"jane.reporter\u0040example.org", r"reporter\u0040example"),
    "email-html-entity": ("jane.reporter&#64;example.org", "reporter&#64;example"),
    "email-zero-width": ("jane.reporter@exa\u200bmple.org", "reporter@exa\u200bmple"),
    # the other invisibles every display escapes: combining grapheme joiner, variation
    # selector, tag character (the decoder and escape.visible share one set)
    "email-cgj": ("jane.repor\u034fter@example.org", "repor\u034fter@example"),
    "email-vs16": ("jane.reporter\ufe0f@example.org", "reporter\ufe0f@example"),
    "email-tag": ("jane.report\U000e0041er@example.org", "report\U000e0041er@example"),
    "imei-fullwidth": ("３５２０９９００１７６１４８１", "２０９９００１７６１"),
    "email-tagged": (quote("Jane.Reporter+app@example.org"), "reporter%2Bapp%40"),
}


def _make_forms_session(root: Path) -> Path:
    device = {
        "manufacturer": "Xiaomi",
        "model": "M2007J3SG",
        "android_release": "10",
        "serial": SERIAL,
        "identifiers": [
            {"name": "imei", "value": IMEI_B, "source": "service call", "reason": None},
            {"name": "wifi_mac", "value": MAC_B, "source": "cat", "reason": None},
            {"name": "serial", "value": SERIAL, "source": "getprop", "reason": None},
        ],
    }
    w = SessionWriter.create(root, device=device, notes="forms")
    for n, (name, (form, _)) in enumerate(sorted(FORMS.items())):
        host = HOSTS[n % len(HOSTS)]
        path = f"/t/{n}?v=2&sn={SERIAL}&{name.split('-')[0]}={form}&ts=1767225600"
        body = f'{{"imei":"{IMEI_B}","k":"{form}","sn":"{SERIAL}"}}'.encode()
        w.write(
            _record(
                id=f"flow-{n:02d}",
                method="POST",
                scheme="https",
                host=host,
                port=443,
                path=path,
                url=f"https://{host}{path}",
                request_start=f"2026-01-01T00:00:{n:02d}.000000Z",
                request_end=f"2026-01-01T00:00:{n:02d}.100000Z",
                response_end=f"2026-01-01T00:00:{n:02d}.200000Z",
                server_ip="203.0.113.7",
                server_port=443,
                request_headers=(("Host", host), ("X-Id", form)),
                request_content_type="application/json",
                request_body=w.bodies.put(body),
                status=204,
                response_headers=(),
            )
        )
    w.close()
    return w.path


def _all_text(path: Path) -> list[str]:
    """A file as a reader sees it: bytes, text with the report's escapes undone, and every
    cell of a Parquet file read with pyarrow (not through auditor or pandas)."""
    import pyarrow.parquet as pq

    if path.suffix == ".parquet":
        table = pq.read_table(path)
        cells = [str(v) for col in table.columns for v in col.to_pylist() if v is not None]
        return [path.read_bytes().decode("latin-1"), "\n".join(table.column_names), *cells]
    return _views(path)


@pytest.fixture(scope="module")
def forms_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    from click.testing import CliRunner

    import auditor.cli

    root = tmp_path_factory.mktemp("forms")
    session = _make_forms_session(root / "captures")
    out = root / "pub"
    args = ["analyze", str(session), "--out", str(out), "--redact", "--json"]
    args += ["--identifier", f"account={EMAIL}", "--identifier", f"phone_number={PHONE}"]
    return out, CliRunner().invoke(auditor.cli.main, args)


def test_a_double_url_encoded_email_does_not_block_publication(forms_report) -> None:  # type: ignore[no-untyped-def]
    out, res = forms_report
    assert res.exit_code == 0, res.output
    assert {p.name for p in out.iterdir()} >= {
        "findings.json", "flows.csv", "flows.parquet", "report.html", "summary.md",
    }  # fmt: skip


@pytest.mark.parametrize("name", sorted(FORMS))
def test_realistic_forms_are_gone_from_every_output(forms_report, name: str) -> None:  # type: ignore[no-untyped-def]
    out, res = forms_report
    assert res.exit_code == 0, res.output
    _, rest = FORMS[name]
    sensitive = "base64" in name
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        for view in _all_text(path):
            hay, needle = (view, rest) if sensitive else (view.lower(), rest.lower())
            assert needle not in hay, (name, path.name)
    # the flow tables still show the request, with a placeholder where the form was
    rows = pd.read_parquet(out / "flows.parquet")
    assert rows[C.URL].str.contains(f"{name.split('-')[0]}=‹", regex=False).any(), name


def _forms_redactor() -> Redactor:
    return Redactor(
        [
            Original("imei", IMEI_B, "device"),
            Original("wifi_mac", MAC_B, "device"),
            Original("account", EMAIL, "searched"),
            Original("phone_number", PHONE, "searched"),
        ]
    )


@pytest.mark.parametrize(
    "text",
    [
        "ts=1767225600&seq=35209900",  # a timestamp; the IMEI's first 8 digits alone
        "id=35209900176149",  # 14 digits, one off
        "n=612345670&m=0612345679",  # one digit off the national number
        "id=9612345678&t=06123456789",  # the national number inside longer numbers
        "sum=78187493531&mac=0012.3456.789b",  # one off the MAC and its decimal
        "v=1.2.3.4&ip=192.168.1.10&size=(1024) 768-99",
        "e=" + base64.b64encode(b"Jane.Doe@Example.ORG").decode(),  # someone else
        "p=%2B33%206%2012%2034%2056%2079",  # another phone number
    ],
)
def test_ordinary_numbers_and_other_values_are_left_alone(text: str) -> None:
    red = _forms_redactor()
    assert red.redact_text(text) == text
    assert red.find(text) == []


def test_a_placeholder_value_of_one_digit_has_no_spellings() -> None:
    """An emulator's IMEI of zeros is redacted as itself, not as every run of 14 zeros."""
    red = Redactor([Original("imei", "000000000000000", "device")])
    assert red.redact_text("imei=000000000000000") == "imei=‹IMEI-1›"
    assert red.redact_text("t=1700000000000000&x=0 0 0 0 0 0 0 0 0 0 0 0 0 0") == (
        "t=1700000000000000&x=0 0 0 0 0 0 0 0 0 0 0 0 0 0"
    )


def test_the_redactor_and_the_check_undo_the_same_layers(tmp_path: Path) -> None:
    """An original wrapped in as many escape layers as the decoder undoes (and then in one of
    the scanner's encodings: URL here) is redacted; one wrapped in more is neither redacted
    nor seen by the check, which therefore never refuses a report for what the redactor could
    not see (the double-encoded e-mail of issue #15)."""
    from auditor.decoders import MAX_TEXT_LAYERS

    def wrap(n: int) -> str:
        text = EMAIL
        for i in range(n):
            text = quote(text, safe="") if i % 2 == 0 else text.replace("%", "&#37;")
        return text

    red = _forms_redactor()
    at_bound, past = wrap(MAX_TEXT_LAYERS + 1), wrap(MAX_TEXT_LAYERS + 2)
    assert red.find(at_bound) and red.find(red.redact_text(at_bound)) == []
    assert red.redact_text(at_bound).startswith("‹EMAIL-1:")
    assert red.redact_text(past) == past and red.find(past) == []
    analysis = _small_analysis()
    analysis.flows.loc[2, C.URL] = f"http://t.example/?a={at_bound}&b={past}"
    write_redacted(analysis, tmp_path / "pub", ALL_FORMATS)  # not refused
    shown = (tmp_path / "pub" / "flows.csv").read_text(encoding="utf-8")
    assert at_bound not in shown and "?a=‹EMAIL-1:" in shown


@pytest.mark.parametrize(
    "form",
    [
        "jane.reporter%2540example.org",  # URL-encoded twice
        "jane.reporter&#64;example.org",  # an HTML entity
        "jane.reporter\\u0040example.org",  # a JSON escape
        "jane.reporter\\@example.org",  # a backslash before punctuation
        "jane.reporter%26%2364%3Bexample.org",  # an entity, URL-encoded
        "jane.reporter&#64example.org",  # a numeric entity without its ';' (browsers read it)
        "jane.reporter%u0040example.org",  # JavaScript's escape()
    ],
)
def test_an_escaped_original_is_redacted_and_does_not_block_the_check(
    tmp_path: Path, form: str
) -> None:
    """Each of these made the check (which undid these escapes) refuse what the redactor
    (which did not) had written."""
    red = _forms_redactor()
    out = red.redact_text(f"https://t.example/?c={form}&n=1")
    assert out.startswith("https://t.example/?c=‹EMAIL-1") and out.endswith("›&n=1"), out
    (tmp_path / "flows.csv").write_text(f"url\n{csv_cell(out)}\n", encoding="utf-8")
    (tmp_path / "summary.md").write_text(md_text(out), encoding="utf-8")
    (tmp_path / "report.html").write_text(html_text(out), encoding="utf-8")
    assert check_output(tmp_path, red) == []


def test_an_excerpt_cut_through_a_spaced_number_keeps_none_of_its_digits() -> None:
    red = _forms_redactor()
    # the scanner's window ends (or starts) inside the IMEI; the word cut at the other end
    # goes too, as for any excerpt
    assert red.redact({"excerpt": "imei 35 209900 17"})["excerpt"] == "… ‹IMEI-1:cut›"
    assert red.redact({"excerpt": "9900 176148 1, ok"})["excerpt"] == "‹IMEI-1:cut›, …"
    assert red.redact({"excerpt": "tel. 06 12 34 5"})["excerpt"] == "… ‹PHONE-1:national:cut›"
    assert red.redact({"excerpt": "at 2026 01 01 12 00"})["excerpt"] == "… 2026 01 01 12 …"


def test_a_long_text_is_read_in_pieces_of_whole_lines() -> None:
    """The views' offsets cost memory per character: a long text (an artifact, a whole
    report for the check) is searched a piece of lines at a time, with the same result."""
    red = _forms_redactor()
    line = f"k={quote(quote(EMAIL, safe=''), safe='')}&i=35-209900-176148-1 " + "x" * 300
    text = "\n".join([line] * 200 + ["y" * 70_000, line])  # ~150 KB, one line past a piece
    out = red.redact_text(text)
    assert out.count("‹EMAIL-1:url:url›") == 201 and out.count("‹IMEI-1›") == 201
    assert red.find(out) == [] and red.find(text) == ["‹EMAIL-1:url:url›", "‹IMEI-1›"]
    assert out.split("\n")[200] == "y" * 70_000


def test_a_lone_surrogate_does_not_stop_redaction() -> None:
    """A JSON artifact may hold ``\\ud800``: the automaton raised UnicodeEncodeError."""
    red = _forms_redactor()
    doc = json.loads(f'{{"k": "\\ud800 {IMEI_B}"}}')
    assert red.redact(doc) == {"k": "\ud800 ‹IMEI-1›"}


def test_a_url_past_the_csv_modules_field_limit_is_checked(tmp_path: Path) -> None:
    """The check read flows.csv with the csv module's default limit of 128 KiB a field: one
    long captured URL made ``analyze --redact`` fail with "field larger than field limit"."""
    analysis = _small_analysis()
    analysis.flows.loc[2, C.URL] = "http://t.example/?blob=" + "A" * 200_000 + f"&i={IMEI}"
    limit = csv.field_size_limit()
    write_redacted(analysis, tmp_path / "pub", ["csv"])
    assert csv.field_size_limit() == limit
    shown = (tmp_path / "pub" / "flows.csv").read_text(encoding="utf-8")
    assert IMEI not in shown and "&i=‹IMEI-1›" in shown


def test_a_deeply_nested_json_artifact_is_redacted_as_text(tmp_path: Path) -> None:
    """Parsed, a JSON document 1,000 levels deep passed the json module but not the
    redactor's walk: RecursionError out of ``write_redacted``."""
    art = tmp_path / "artifacts"
    art.mkdir()
    (art / "deep.json").write_text("[" * 1000 + json.dumps(f"imei {IMEI}") + "]" * 1000)
    write_redacted(_small_analysis(), tmp_path / "pub", ["json"], artifacts_src=art)
    kept = (tmp_path / "pub" / "artifacts" / "deep.json").read_text(encoding="utf-8")
    assert IMEI not in kept and "imei ‹IMEI-1›" in kept


def test_the_check_decodes_values_in_html_attributes_and_markdown_cells(tmp_path: Path) -> None:
    red = _forms_redactor()
    twice = quote(quote(EMAIL, safe=""), safe="")
    (tmp_path / "report.html").write_text(
        f'<table><tr><td title="{html_text(twice)}">x</td></tr></table>', encoding="utf-8"
    )
    (tmp_path / "summary.md").write_text(f"| host | url |\n|---|---|\n| a | {md_text(twice)} |\n")
    leaks = {(x.path.name, x.placeholder) for x in check_output(tmp_path, red)}
    assert leaks == {("report.html", "‹EMAIL-1:url:url›"), ("summary.md", "‹EMAIL-1:url:url›")}


def test_a_redacted_file_cut_short_leaves_no_temporary_file(tmp_path: Path) -> None:
    """A write failing part-way (a file size limit, as a full disk) raises, keeps the file
    that was there and leaves no ``.tmp`` beside it."""
    import subprocess
    import sys

    target = tmp_path / "out" / "flows.csv"
    target.parent.mkdir()
    target.write_text("old\n")
    code = (
        "import resource, sys; from pathlib import Path\n"
        "from auditor.analysis.redact import _write_private\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))\n"
        "try:\n"
        f"    _write_private(Path({str(target)!r}), b'x' * 1_000_000)\n"
        "except OSError as exc:\n"
        "    print('OSError', exc.errno); sys.exit(0)\n"
        "sys.exit(3)\n"
    )
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert got.returncode == 0 and got.stdout.startswith("OSError"), got.stdout + got.stderr
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["flows.csv"]
