"""`auditor diff`: two analysed audits compared.

Three pairs, each built once per module:
- a firmware A / firmware B pair of the virtual handset: the Xiaomi Mi 10T's traffic plan
  (firmware A), and the same handset after an "opt-out" update (firmware B: the analytics
  job gone, the ad-config job half as often, and the OnePlus 8T profile's HeyTap and
  OnePlus jobs added), rendered from the simulator's own plans and profiles and written as
  flow files by mitmproxy's FlowWriter, then imported and analysed as `auditor analyze` does;
- real HAR files (mitmproxy's test data, tests/data/controls): a Chrome-sync upload, with and
  without an IMA SDK ad request that carries the device's IMEI;
- real packet captures (nDPI's test data, tests/data/names): an Android phone's boot traffic
  and a WhatsApp login, the recipients checked against tshark's reading of the same files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import http
from mitmproxy import io as mio
from mitmproxy.test import tflow

from auditor.analysis.diff import (
    DiffError,
    absence,
    diff_command,
    evaluate_claim,
    load_diff_claims,
    parse_claim,
)
from auditor.analysis.report.page import CSP
from auditor.imports.session import import_files
from auditor.timeutil import seconds_text
from vhandset.payloads import build_body, facts_from_profile, render
from vhandset.profiles import load_profile
from vhandset.traffic import Job, load_plan

DATA = Path(__file__).resolve().parents[1] / "data"
CONTROLS = DATA / "controls"
NAMES = DATA / "names"
FIXED = "2000-01-01T00:00:00Z"
CORRELATOR = "419772853168473"  # the Luhn-valid correlator, taken as the device's IMEI
ACCOUNT = "stanleygvi@gmail.com"  # the address in mitmproxy_diff_data.har's Chrome-sync upload
T0 = 1_750_000_000.0
A_SECONDS, B_SECONDS = 240.0, 480.0


# ------------------------------------------------------------------ the virtual handset pair


def _flow(job: Job, facts: dict[str, Any], t: float, n: int, side: str) -> http.HTTPFlow:
    assert job.request is not None
    url = str(render(job.request.url, facts))
    body, headers = b"", dict(job.request.headers)
    if job.request.body is not None:
        body, h = build_body(job.request.body, job.request.kind, job.request.encoding, facts)
        headers.update(h)
    f = tflow.tflow(resp=True)
    f.id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{side}/{job.name}/{n}"))
    f.request = http.Request.make(job.request.method, url, b"", headers)
    f.request.raw_content = body  # already encoded as its Content-Encoding says
    f.request.timestamp_start, f.request.timestamp_end = t, t + 0.05
    f.response = http.Response.make(200, b'{"ok":true}', {"Content-Type": "application/json"})
    f.response.timestamp_start, f.response.timestamp_end = t + 0.1, t + 0.2
    host = f.request.host
    f.server_conn.address = (host, f.request.port)
    f.server_conn.sni = host if f.request.scheme == "https" else None
    for conn in (f.client_conn, f.server_conn):
        conn.timestamp_start = t
        conn.timestamp_end = t + 0.3
    f.server_conn.timestamp_tcp_setup = f.server_conn.timestamp_tls_setup = t + 0.01
    f.client_conn.timestamp_tls_setup = t + 0.01
    return f


def _jobs(profile: str) -> list[Job]:
    # pinned apps are not decrypted by the proxy: they would not be in a flow file
    return [j for j in load_plan(profile).jobs if j.request is not None and j.trust != "pinned"]


def _firmware(
    path: Path, side: str, jobs: list[tuple[Job, float]], facts: dict[str, Any], seconds: float
) -> Path:
    flows = []
    for job, period in jobs:
        k = 0
        while k * period <= seconds - 1:  # no jitter: the beacon rule sees the period itself
            flows.append(_flow(job, facts, T0 + k * period + 0.5, k, side))
            k += 1
    flows.sort(key=lambda f: f.request.timestamp_start)
    with path.open("wb") as fh:
        w = mio.FlowWriter(fh)
        for f in flows:
            w.add(f)
    return path


@pytest.fixture(scope="module")
def firmware(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("firmware")
    facts = facts_from_profile(load_profile("xiaomi-mi10t"))
    ids = {k: str(facts[k]) for k in ("imei", "android_id", "wifi_mac", "advertising_id")}
    xiaomi = _jobs("xiaomi-mi10t")
    fw_a = [(j, j.period) for j in xiaomi]
    fw_b = [(j, j.period * 2 if j.name == "miadblacklistconfig" else j.period) for j in xiaomi]
    fw_b = [(j, p) for j, p in fw_b if j.name != "analytics-track"]
    fw_b += [
        (j, j.period) for j in _jobs("oneplus-8t") if urlhost(j) not in {urlhost(x) for x in xiaomi}
    ]
    sessions = {}
    for side, jobs, seconds in (("a", fw_a, A_SECONDS), ("b", fw_b, B_SECONDS)):
        flows = _firmware(root / f"firmware-{side}.mitm", side, jobs, facts, seconds)
        sessions[side] = import_files([flows], root / "captures", identifiers=ids).session
    out = root / "diff"
    res = diff_command(
        sessions["a"], sessions["b"], out, ["html", "json", "md"], False, generated_at=FIXED
    )
    return {
        "root": root,
        "sessions": sessions,
        "out": out,
        "res": res,
        "doc": res.doc,
        "facts": facts,
    }


def urlhost(job: Job) -> str:
    from urllib.parse import urlsplit

    assert job.request is not None
    return urlsplit(str(job.request.url)).hostname or ""


def _one(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    got = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    assert len(got) == 1, (match, [{k: r.get(k) for k in match} for r in rows])
    return got[0]


def _flow_file_hosts(path: Path) -> dict[str, str]:
    """flow id -> host, read back with mitmproxy's own reader."""
    with path.open("rb") as fh:
        return {f.id: f.request.host for f in mio.FlowReader(fh).stream()}  # type: ignore[attr-defined]


def test_the_sides_say_how_long_each_recorded(firmware: dict[str, Any]) -> None:
    sides = firmware["doc"]["sides"]
    # the span of the traffic: first to last request (ends included), as planned
    assert A_SECONDS - 60 < sides["a"]["duration_seconds"] <= A_SECONDS
    assert B_SECONDS - 60 < sides["b"]["duration_seconds"] <= B_SECONDS
    assert sides["a"]["input"] == sides["b"]["input"] == "session"
    assert {p.name for p in firmware["res"].files} == {"diff.json", "diff.md", "diff.html"}
    assert (firmware["out"] / "sides" / "a" / "findings.json").is_file()


def test_recipients_that_appear_only_after_the_update(firmware: dict[str, Any]) -> None:
    doc = firmware["doc"]
    appeared = {r["recipient"]: r for r in doc["recipients"] if r["status"] == "appeared"}
    # the OnePlus plan's own vendors, absent from the Xiaomi plan
    assert any("OnePlus" in k or "Oppo" in k or "OPPO" in k for k in appeared), sorted(appeared)
    hosts_b = set(_flow_file_hosts(firmware["root"] / "firmware-b.mitm").values())
    hosts_a = set(_flow_file_hosts(firmware["root"] / "firmware-a.mitm").values())
    for r in appeared.values():
        assert r["a"] is None and r["flow_ids"]["a"] == []
        assert set(r["b"]["hosts"]) <= hosts_b - hosts_a
        assert r["flow_ids"]["b"]
        # absent before, and before recorded half as long: a weak absence, said so
        assert r["absence"]["weak"]
        before = seconds_text(doc["sides"]["a"]["duration_seconds"])
        assert any(
            w.startswith(f"that side recorded {before}, the other") for w in r["absence"]["why"]
        )
    assert not [r for r in doc["recipients"] if r["status"] == "disappeared"]


def test_identifiers_no_longer_sent_carry_their_encodings_and_flows(
    firmware: dict[str, Any],
) -> None:
    doc = firmware["doc"]
    by_host_a = _flow_file_hosts(firmware["root"] / "firmware-a.mitm")
    # only tracking.miui.com got the MAC address (base64, in gzip'd JSON): gone with its job
    mac = _one(doc["identifiers"], recipient="Xiaomi Corporation", identifier="wifi_mac")
    assert mac["status"] == "no_longer_sent" and mac["hosts"]["a"] == ["tracking.miui.com"]
    assert [e for e in mac["encodings"]["a"] if e.startswith("gzip") and e.endswith("base64")]
    assert mac["encodings"]["b"] == [] and mac["flow_ids"]["b"] == []
    # its evidence is flows of firmware A to that host, as mitmproxy's own reader reads them
    assert mac["flow_ids"]["a"] and {by_host_a[f] for f in mac["flow_ids"]["a"]} == {
        "tracking.miui.com"
    }
    # after recorded twice as long, at 4 flows a minute before: the absence is not weak
    assert mac["absence"]["weak"] is False and mac["absence"]["expected_flows"] > 3
    assert mac["few_flows"] is False
    # the IMEI still goes to Xiaomi (push registration, app list), but no longer as the MD5
    # of tracking.miui.com's imei_md5= parameter
    imei = _one(doc["identifiers"], recipient="Xiaomi Corporation", identifier="imei")
    assert imei["status"] == "still_sent" and imei["encodings_changed"]
    assert "md5-hex" in imei["encodings"]["a"] and "md5-hex" not in imei["encodings"]["b"]
    assert "tracking.miui.com" not in imei["hosts"]["b"]


def test_newly_sent_identifier_names_its_new_encoding(firmware: dict[str, Any]) -> None:
    new = [i for i in firmware["doc"]["identifiers"] if i["status"] == "newly_sent"]
    heytap = [i for i in new if "conn.heytapmobile.com" in i["hosts"]["b"]]
    aid = _one(heytap, identifier="android_id")  # ?aid={{android_id|b64url}}
    assert any("base64" in e for e in aid["encodings"]["b"]), aid["encodings"]


def test_rates_are_normalised_by_each_sides_duration(firmware: dict[str, Any]) -> None:
    doc = firmware["doc"]
    a, b = doc["sides"]["a"]["duration_seconds"], doc["sides"]["b"]["duration_seconds"]
    spotify = _one(doc["recipients"], recipient="Spotify AB", status="present")
    # the same job at the same period: twice the flows in twice the time, the same rate
    assert spotify["b"]["flows"] >= 1.8 * spotify["a"]["flows"]
    assert 0.8 < spotify["rate_ratio"]["flows"] < 1.25 and not spotify["rate_changed"]
    assert spotify["a"]["flows_per_hour"] == pytest.approx(
        spotify["a"]["flows"] * 3600 / a, abs=1e-3
    )
    assert spotify["b"]["flows_per_hour"] == pytest.approx(
        spotify["b"]["flows"] * 3600 / b, abs=1e-3
    )
    # Google also gets the OnePlus plan's connectivity checks after: a rate change per hour
    google = _one(doc["recipients"], recipient="Google LLC", status="present")
    ratio = (google["b"]["flows"] / b) / (google["a"]["flows"] / a)
    assert google["rate_ratio"]["flows"] == pytest.approx(ratio, abs=1e-2)
    assert ratio >= 2 and google["rate_changed"]


def test_beacons_stopped_and_changed_period(firmware: dict[str, Any]) -> None:
    beacons = firmware["doc"]["beacons"]
    stopped = _one(beacons, host="tracking.miui.com")
    assert stopped["status"] == "stopped" and stopped["period_s"]["b"] is None
    assert stopped["period_s"]["a"] == pytest.approx(15, rel=0.1)
    slower = _one(beacons, host="globalapi.ad.xiaomi.com")
    assert slower["status"] == "period_changed"
    assert slower["period_s"]["b"] == pytest.approx(2 * slower["period_s"]["a"], rel=0.1)
    assert slower["flow_ids"]["a"] and slower["flow_ids"]["b"]


def test_findings_by_rule(firmware: dict[str, Any]) -> None:
    rules = {r["rule"]: r for r in firmware["doc"]["findings"]}
    ident = rules["identifier-sent"]
    gone_hosts = {x["host"] for x in ident["only_in"]["a"]}
    new_hosts = {x["host"] for x in ident["only_in"]["b"]}
    assert "tracking.miui.com" in gone_hosts and "conn.heytapmobile.com" in new_hosts
    assert ident["count"]["a"] == sum(
        1 for f in _findings(firmware, "a") if f["rule"] == "identifier-sent"
    )


def _findings(fw: dict[str, Any], side: str) -> list[dict[str, Any]]:
    return json.loads((fw["out"] / "sides" / side / "findings.json").read_text())["findings"]


def test_two_runs_give_identical_bytes_and_reports_read_as_sessions(
    firmware: dict[str, Any], tmp_path: Path
) -> None:
    s = firmware["sessions"]
    again = diff_command(s["a"], s["b"], tmp_path / "again", ["json"], True, generated_at=FIXED)
    assert again.files[0].read_bytes() == (firmware["out"] / "diff.json").read_bytes()
    # the side reports, given as report folders, give the same changes
    sides = firmware["out"] / "sides"
    rep = diff_command(
        sides / "a", sides / "b", tmp_path / "rep", ["json"], True, generated_at=FIXED
    ).doc
    for key in ("recipients", "identifiers", "beacons", "hosts_moved", "findings", "changes"):
        assert rep[key] == firmware["doc"][key], key
    assert rep["sides"]["a"]["input"] == "report"


def test_markdown_and_html_show_every_change(firmware: dict[str, Any]) -> None:
    md = (firmware["out"] / "diff.md").read_text()
    page = (firmware["out"] / "diff.html").read_text()
    # md_text escapes what Markdown would read: the underscore of an identifier's name
    for text in ("tracking.miui.com", "no longer sent", "period changed", "weak absence"):
        assert text in md, text
    assert "wifi\\_mac" in md and "Xiaomi Corporation" in md
    assert "<script" not in page and f'content="{CSP}"' in page  # the report's own policy
    for text in ("tracking.miui.com", "no longer sent", "period changed", "weak absence"):
        assert text in page, text


# ------------------------------------------------------------------ claims about a diff


def test_claims_on_the_firmware_pair(firmware: dict[str, Any], tmp_path: Path) -> None:
    doc = firmware["doc"]
    # the IMEI went to Xiaomi before and to no one of Xiaomi's after? The weather API still
    # gets the Android ID in cleartext: "no identifiers to Xiaomi" after is contradicted.
    c = evaluate_claim(doc, parse_claim("after: no identifiers to Xiaomi"))
    assert c["verdict"] == "contradicted" and c["flow_ids"]["b"]
    assert "android_id" in c["reason"]
    c = evaluate_claim(doc, parse_claim("after: no new recipients"))
    assert c["verdict"] == "contradicted" and c["flow_ids"]["b"] and not c["flow_ids"]["a"]
    # nothing was ever sent to Russia: supported, and said so
    c = evaluate_claim(doc, parse_claim("after: no data to RU"))
    assert c["verdict"] == "supported_by_this_capture", c
    # a file of claims, evaluated into the diff document by the command
    path = tmp_path / "claims.yaml"
    path.write_text(
        "claims:\n  - 'before/after: identifiers to Xiaomi stopped'\n"
        "  - {claim: no identifiers to China after, kind: no_identifiers_to,"
        " side: after, country: CN}\n"
    )
    assert [c.kind for c in load_diff_claims(path)] == [
        "stopped_identifiers_to",
        "no_identifiers_to",
    ]
    rep = diff_command(
        firmware["out"] / "sides" / "a",
        firmware["out"] / "sides" / "b",
        tmp_path / "d",
        ["md"],
        False,
        claims=path,
    )
    verdicts = [c["verdict"] for c in rep.doc["claims"]]
    assert verdicts[0] == "contradicted"  # android_id still goes to Xiaomi's weather API
    assert verdicts[1] == "contradicted"  # OnePlus (CN) gets the IMEI after the update
    assert rep.doc["claims"][1]["flow_ids"]["b"]
    assert any(line.startswith("claim: ") for line in rep.lines)
    assert "Claims" in (tmp_path / "d" / "diff.md").read_text()


def test_a_stopped_claim_is_undetermined_when_the_after_side_is_short() -> None:
    doc = {
        "sides": {"a": {"duration_seconds": 600.0}, "b": {"duration_seconds": 60.0}},
        "recipients": [],
        "identifiers": [
            {
                "recipient": "Xiaomi Inc.",
                "organisation_id": "xiaomi",
                "parent": None,
                "country": "CN",
                "identifier": "imei",
                "status": "no_longer_sent",
                "flows": {"a": 10, "b": 0},
                "absence": absence(10, 600.0, 60.0),
                "flow_ids": {"a": ["f1", "f2"], "b": []},
            }
        ],
    }
    c = evaluate_claim(doc, parse_claim("before/after: identifiers to xiaomi stopped"))
    assert c["verdict"] == "undetermined" and "weak" in c["reason"]
    assert c["flow_ids"] == {"a": ["f1", "f2"], "b": []}
    doc["sides"]["b"]["duration_seconds"] = 900.0
    doc["identifiers"][0]["absence"] = absence(10, 600.0, 900.0)
    c = evaluate_claim(doc, parse_claim("before/after: identifiers to xiaomi stopped"))
    assert c["verdict"] == "supported_by_this_capture", c


@pytest.mark.parametrize(
    "text",
    [
        "no identifiers to Xiaomi",
        "after no identifiers",
        "later: no identifiers to X",
        "after: send less",
    ],
)
def test_a_claim_that_is_not_a_form_is_refused(text: str) -> None:
    with pytest.raises(DiffError):
        parse_claim(text)


def test_absence_rule() -> None:
    assert absence(40, 600.0, 1200.0)["weak"] is False
    assert absence(40, 600.0, 500.0)["weak"] is True  # recorded less than the side that saw it
    assert absence(40, 600.0, 200.0)["weak"] is True  # under the floor
    weak = absence(1, 1221.0, 1300.0)  # one flow in 20 minutes: one expected in 21
    assert weak["weak"] is True and weak["expected_flows"] == pytest.approx(1.06, abs=0.01)


# ------------------------------------------------------------------ real public material


@pytest.fixture(scope="module")
def har_pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("har")
    ids = {"imei": CORRELATOR, "account": ACCOUNT}
    a = import_files(
        [CONTROLS / "mitmproxy_diff_data.har", CONTROLS / "doubleclick_correlator.har"],
        root / "c",
        identifiers=ids,
    )
    b = import_files([CONTROLS / "mitmproxy_diff_data.har"], root / "c", identifiers=ids)
    return diff_command(
        a.session, b.session, root / "diff", ["json", "md", "html"], False, generated_at=FIXED
    ).doc


def test_real_har_pair_imei_no_longer_sent_on_one_flow(har_pair: dict[str, Any]) -> None:
    # the HAR's own entries: the IMA ad request carries correlator=<the IMEI>
    har = json.loads((CONTROLS / "doubleclick_correlator.har").read_text())
    urls = [e["request"]["url"] for e in har["log"]["entries"]]
    assert any(CORRELATOR in u and "pubads.g.doubleclick.net" in u for u in urls)
    imei = _one(har_pair["identifiers"], identifier="imei")
    assert imei["status"] == "no_longer_sent" and imei["recipient"] == "Google LLC"
    assert imei["hosts"]["a"] == ["pubads.g.doubleclick.net"] and imei["encodings"]["a"] == [
        "plain"
    ]
    assert len(imei["flow_ids"]["a"]) == 1 and imei["few_flows"] is True
    # one flow in 20 minutes cannot show that the after side (as long) would have had one
    assert imei["absence"]["weak"] is True
    account = _one(har_pair["identifiers"], identifier="account")
    assert (
        account["status"] == "still_sent" and account["flow_ids"]["a"] == account["flow_ids"]["b"]
    )


def _tshark_names(path: Path) -> set[str]:
    done = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "tls.handshake.extensions_server_name",
         "-e", "dns.qry.name", "-e", "http.host"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return {
        n
        for line in done.stdout.splitlines()
        for cell in line.split("\t")
        for n in cell.split(",")
        if n
    }


@pytest.fixture(scope="module")
def pcap_pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("pcap")
    a = import_files([NAMES / "android.pcap"], root / "c").session
    b = import_files([NAMES / "whatsapp_login_chat.pcap"], root / "c").session
    return diff_command(a, b, root / "diff", ["json"], True, generated_at=FIXED).doc


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_real_pcap_pair_recipients_against_tshark(pcap_pair: dict[str, Any]) -> None:
    names_a, names_b = (
        _tshark_names(NAMES / "android.pcap"),
        _tshark_names(NAMES / "whatsapp_login_chat.pcap"),
    )
    rows = {r["recipient"]: r for r in pcap_pair["recipients"]}
    wa = rows["WhatsApp LLC"]
    assert wa["status"] == "appeared"
    assert set(wa["b"]["hosts"]) <= names_b and not set(wa["b"]["hosts"]) & names_a
    google = rows["Google LLC"]
    assert google["status"] == "disappeared" and set(google["a"]["hosts"]) <= names_a
    assert google["a"]["flows"] >= 10 and google["flow_ids"]["b"] == []
    # the WhatsApp capture lasted 54 s: Google's absence there is no evidence
    assert google["absence"]["weak"] is True
    assert any("under 300 s" in w for w in google["absence"]["why"])
    sides = pcap_pair["sides"]
    assert sides["a"]["duration_seconds"] == pytest.approx(102.3, abs=0.5)
    assert sides["b"]["duration_seconds"] == pytest.approx(53.7, abs=0.5)


def test_a_folder_that_is_neither_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    with pytest.raises(DiffError, match="neither a report folder"):
        diff_command(tmp_path / "x", tmp_path / "x", tmp_path / "o", ["json"], True)
    with pytest.raises(DiffError, match="unknown format"):
        diff_command(tmp_path / "x", tmp_path / "x", tmp_path / "o", ["pdf"], True)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "findings.json").write_text('{"endpoints": 1}')
    with pytest.raises(DiffError, match=r"not a findings\.json"):
        diff_command(tmp_path / "r", tmp_path / "r", tmp_path / "o", ["json"], True)


def test_captured_text_is_escaped_in_markdown_and_html(tmp_path: Path) -> None:
    from auditor.analysis.diff import Side, build_diff
    from auditor.analysis.diff_report import render_html, render_md

    evil = "<script>alert(1)</script>|**x**\x1b[2J"
    ep = {
        "host": evil,
        "organisation": evil,
        "flows": 1,
        "flow_ids": ["1"],
        "bytes_up": 1,
        "hosting": [],
    }
    a = Side("a", "report", {"endpoints": [], "findings": [], "coverage": {"duration_seconds": 10}})
    b = Side(
        "b", "report", {"endpoints": [ep], "findings": [], "coverage": {"duration_seconds": 10}}
    )
    doc = build_diff(a, b, generated_at=FIXED)
    page, md = render_html(doc), render_md(doc)
    assert "<script>" not in page and "\x1b" not in page and "&lt;script&gt;" in page
    assert "<script>" not in md and "\x1b" not in md and "|**x**" not in md
    assert page == render_html(build_diff(a, b, generated_at=FIXED))


def _schema() -> dict[str, Any]:
    text = (Path(__file__).resolve().parents[2] / "docs" / "diff.md").read_text()
    block = text.split("```json\n", 1)[1].split("\n```", 1)[0]
    return json.loads(block)


def test_every_diff_made_here_follows_the_documented_schema(
    firmware: dict[str, Any], har_pair: dict[str, Any], pcap_pair: dict[str, Any]
) -> None:
    import jsonschema

    schema = _schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    for doc in (firmware["doc"], har_pair, pcap_pair):
        jsonschema.validate(json.loads(json.dumps(doc)), schema)
    bad = json.loads(json.dumps(firmware["doc"]))
    bad["identifiers"][0]["status"] = "sent"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def _endpoint(host: str, org: str | None, country: str, flows: int, **kw: Any) -> dict[str, Any]:
    return {
        "host": host,
        "organisation": org,
        "country": "CN" if org else None,
        "flows": flows,
        "flow_ids": [f"{host}#{i}" for i in range(flows)],
        "bytes_up": 100 * flows,
        "hosting": [{"country": country, "label": f"net ({country})"}],
        "hosted_by": f"net ({country})",
        **kw,
    }


def test_a_host_that_moved_country_and_a_recipient_whose_exposure_changed() -> None:
    from auditor.analysis.diff import Side, build_diff

    law = [{"country": "CN", "via": "headquarters"}]
    a = Side("a", "report", {
        "endpoints": [_endpoint("api.example.cn", "Example Co.", "SG", 5, legal_exposure=law),
                      _endpoint("cdn.example.net", None, "US", 2)],
        "findings": [], "coverage": {"duration_seconds": 600},
    })  # fmt: skip
    b = Side("b", "report", {
        "endpoints": [_endpoint("api.example.cn", "Example Co.", "DE", 4, legal_exposure=law),
                      _endpoint("cdn.example.net", None, "US", 2)],
        "findings": [], "coverage": {"duration_seconds": 600},
    })  # fmt: skip
    doc = build_diff(a, b, generated_at=FIXED)
    moved = _one(doc["hosts_moved"], host="api.example.cn")
    assert moved["countries"] == {"a": ["SG"], "b": ["DE"]} and not moved["few_flows"]
    assert (
        moved["flow_ids"]["a"][0].startswith("api.example.cn#") and len(moved["flow_ids"]["b"]) == 4
    )
    assert [h["host"] for h in doc["hosts_moved"]] == ["api.example.cn"]  # the CDN stayed
    row = _one(doc["recipients"], recipient="Example Co.")
    assert row["status"] == "present" and row["changed"] == ["server_countries"]
    unknown = _one(doc["recipients"], recipient="(unknown operator)")
    assert unknown["few_flows"] is True  # two flows on each side
    assert doc["changes"]["hosts_moved"] == 1


def test_a_claim_on_a_short_real_capture_is_undetermined(pcap_pair: dict[str, Any]) -> None:
    # Google got data in the Android capture (102 s); the WhatsApp capture (54 s) has none,
    # which does not show that the phone stopped sending to Google
    c = evaluate_claim(pcap_pair, parse_claim("after: no data to Google"))
    assert c["verdict"] == "undetermined" and "under 300 s" in c["reason"], c
    assert c["flow_ids"]["a"] and not c["flow_ids"]["b"]
    c = evaluate_claim(pcap_pair, parse_claim("before: no data to WhatsApp"))
    assert c["verdict"] == "undetermined", c
    c = evaluate_claim(pcap_pair, parse_claim("after: no data to WhatsApp"))
    assert c["verdict"] == "contradicted" and c["flow_ids"]["b"], c


def test_the_cli_command_on_the_real_har_pair(tmp_path: Path) -> None:
    """``auditor diff A B`` through the CLI: the same document on stdout with --json as in
    diff.json, the changes listed on the terminal, a hostile path escaped."""
    from click.testing import CliRunner

    from auditor.cli import main

    ids = {"imei": CORRELATOR, "account": ACCOUNT}
    root = tmp_path / "c"
    a = import_files(
        [CONTROLS / "mitmproxy_diff_data.har", CONTROLS / "doubleclick_correlator.har"],
        root,
        identifiers=ids,
    )
    b = import_files([CONTROLS / "mitmproxy_diff_data.har"], root, identifiers=ids)
    out = tmp_path / "d\x1b[2J"  # a hostile folder name, quoted on the terminal
    args = ["diff", str(a.session), str(b.session), "--out", str(out)]
    args += ["--identifier", f"imei={CORRELATOR}"]
    runner = CliRunner()
    got = runner.invoke(main, [*args, "--json"])
    assert got.exit_code == 0, got.output
    doc = json.loads(got.stdout)
    assert doc == json.loads((out / "diff.json").read_text())
    text = runner.invoke(main, args)
    assert text.exit_code == 0, text.output
    assert "\x1b" not in text.output and "\\u001b" in text.output
    assert {"diff.json", "diff.md", "diff.html"} <= {p.name for p in out.iterdir()}
    bad = runner.invoke(main, ["diff", str(tmp_path), str(b.session)])
    assert bad.exit_code == 1 and bad.output.startswith("error: ")
