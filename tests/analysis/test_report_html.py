"""report.html and summary.md: the HTML in a real headless Chromium renders, runs no captured
script and fetches nothing, even from a session full of hostile strings; both tell the story
of real captures (a summary whose every sentence links to what it rests on, findings grouped
by recipient in severity order, what could not be inspected) and never leave a blank where
the device is unknown."""

from __future__ import annotations

import copy
import http.server
import os
import re
import shutil
import stat
import subprocess
import threading
from html.parser import HTMLParser
from pathlib import Path
from typing import ClassVar

import pandas as pd
import pytest

from auditor import columns as C
from auditor.analysis.escape import html_text, md_text
from auditor.analysis.report import html_report, markdown, write_report
from auditor.analysis.report.story import UNKNOWN, build_story, device_text, severity_rank
from tests.conftest import free_port
from tests.origin import QuietHandler

from .report_material import REAL, analyse, evil_strings, hostile

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _hostile_doc(leak: str) -> tuple[dict, pd.DataFrame]:
    evil = evil_strings(leak)
    host = evil[1]
    flows = pd.DataFrame(
        [
            {
                C.FLOW_ID: f"f{i}",
                C.RECORD_TYPE: "http",
                C.START: pd.Timestamp("2026-01-01T00:00:00Z") + pd.Timedelta(seconds=i),
                C.ORGANISATION: e,
                C.METHOD: "POST",
                C.URL: f"{leak}/u?x={e}",
                C.NAME: e,
            }
            for i, e in enumerate(evil)
        ]
    )
    finding = {
        "id": "x",
        "rule": "identifier-sent",
        "severity": "high",
        "title": evil[0],
        "host": host,
        "organisation": evil[2],
        "country": "CN",
        "identifiers": ["imei"],
        "encodings": [evil[3]],
        "flow_ids": ["f0", "f1"],
        "citations": [evil[4]],
        "description": evil[5],
        "evidence": [
            {
                "flow_id": "f1",
                "location": "body",
                "detail": evil[1],
                "encoding": "plain",
                "identifier": "imei",
                "excerpt": evil[0] + " 864132058957347 " + evil[1],
            }
        ],
        "data": {},
    }
    endpoint = {
        "host": host,
        "ip": "1.2.3.4",
        "organisation": evil[2],
        "parent": evil[3],
        "country": "CN",
        "server_country": "SG",
        "categories": [evil[0]],
        "state_linked": True,
        "flows": 2,
        "bytes_up": 10,
        "bytes_down": 20,
        "first_seen": None,
        "last_seen": None,
        "apps": [evil[6]],
        "sources": [{"title": evil[0]}],
    }
    doc = {
        "generated_at": "2026-01-01T00:00:00Z",
        "session": {"id": evil[0]},
        "device": {"manufacturer": evil[1], "model": evil[2]},
        "findings": [finding],
        "endpoints": [endpoint],
        "verdicts": [
            {
                "organisation": evil[2],
                "country": "CN",
                "state_linked": True,
                "identifiers": ["imei"],
                "flows": 2,
                "bytes_up": 10,
                "worst": "high",
            }
        ],
        "claims": [
            {
                "claim": evil[0],
                "verdict": "contradicted",
                "reason": evil[1],
                "flow_ids": ["f0"],
                "coverage": {},
            }
        ],
        "method": {"scenario": {"name": evil[0]}},
        "warnings": [evil[1]],
        "_bytes_by_org": [(evil[2], 10, 20)],
        "_bytes_by_country": [("CN", 10, 20)],
        "_highlight": {"imei": ["864132058957347"]},
    }
    return doc, flows


class _Recorder(QuietHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Recorder.hits.append(self.path)
        self.send_response(204)
        self.end_headers()


def test_static_html_has_no_live_markup(tmp_path: Path) -> None:
    doc, flows = _hostile_doc("http://127.0.0.1:9")
    page = html_report(doc, flows)
    assert len(re.findall(r"<script", page, re.I)) == 0
    assert not re.search(r"<(img|iframe|link)\b", page, re.I)
    assert "onerror=" not in page.replace("onerror=&quot;", "")
    assert "\u202e" not in page
    assert "Content-Security-Policy" in page
    assert "<mark>864132058957347</mark>" in page
    for hostile_page in (page, html_report(*hostile())):
        # the only links are to ids in the page, and never made from captured text
        hrefs = re.findall(r"<[a-z]+\b[^<>]*\bhref=['\"]?([^'\" >]*)", hostile_page)
        assert hrefs and all(re.fullmatch(r"#[a-z0-9-]+", h) for h in hrefs), hrefs[:5]
        assert not re.search(r"<(script|img|iframe|link)\b", hostile_page, re.I)
    md = markdown(doc)
    assert "<script" not in md and "\u202e" not in md
    written = write_report(tmp_path / "r", doc, flows, ["json", "csv", "md", "html"])
    assert {p.name for p in written} >= {"findings.json", "report.html", "summary.md"}
    assert "_highlight" not in (tmp_path / "r" / "findings.json").read_text()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_report_in_headless_chromium(tmp_path: Path) -> None:
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Recorder)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    _Recorder.hits = []
    try:
        doc, flows = _hostile_doc(f"http://127.0.0.1:{port}")
        out = tmp_path / "report"
        write_report(out, doc, flows, ["html"])
        page = out / "report.html"
        shot = tmp_path / "shot.png"
        assert CHROMIUM is not None
        flags = [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1280,2400", "--virtual-time-budget=3000",
        ]  # fmt: skip
        dom = subprocess.run(
            [*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
        ).stdout
        subprocess.run(
            [*flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120
        )
    finally:
        server.shutdown()
        server.server_close()
    sections = (
        "summary", "verdicts", "findings", "claims", "coverage", "timeline", "bytes",
        "endpoints", "device", "method", "warnings",
    )  # fmt: skip
    for section in sections:
        assert f'id="{section}"' in dom, section
    title = re.search(r"<title>(.*?)</title>", dom, re.S)
    assert title and "PWNED" not in title.group(1)
    assert not re.search(r"<(script|img|iframe|link)\b", dom.split("</head>", 1)[-1], re.I)
    assert _Recorder.hits == []
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000


def test_report_is_owner_only_under_any_umask(tmp_path: Path) -> None:
    doc, flows = _hostile_doc("http://127.0.0.1:9")
    out = tmp_path / "reports" / "new" / "r"
    old = os.umask(0)
    try:
        write_report(out, doc, flows, ["json", "csv", "md", "html"])
    finally:
        os.umask(old)
    for p in [tmp_path / "reports", out.parent, out, *out.iterdir()]:
        want = 0o700 if p.is_dir() else 0o600
        assert stat.S_IMODE(p.stat().st_mode) == want, p
    assert {p.name for p in out.iterdir()} == {
        "findings.json", "flows.csv", "flows.parquet", "endpoints.csv", "summary.md",
        "report.html",
    }  # fmt: skip


def test_markdown_lists_the_warnings_inertly() -> None:
    doc, _ = _hostile_doc("http://127.0.0.1:9")
    md = markdown(doc)
    section = md.split("## Warnings", 1)[1].split("## Method", 1)[0]
    assert section.strip().startswith("- ")
    assert "&lt;img" in section and "<img" not in section and "http\\://" in section


# ------------------------------------------------------------------ the story of real captures


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, pd.DataFrame]]:
    root = tmp_path_factory.mktemp("real")
    out = {}
    for name, path in REAL.items():
        if path.exists():
            a = analyse(path, root / name)
            out[name] = (a.doc, a.flows)
    if not out:
        pytest.skip("no real capture present")
    return out


def _need(real: dict[str, tuple[dict, pd.DataFrame]], name: str) -> tuple[dict, pd.DataFrame]:
    if name not in real:
        pytest.skip(f"{name} is absent")
    doc, flows = real[name]
    return copy.deepcopy(doc), flows


class _Page(HTMLParser):
    """ids, fragment links, and the text of the summary's sentences with their links."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.hrefs: list[str] = []
        self.sentences: list[tuple[str, list[str]]] = []
        self._section: list[str] = []
        self._li: list[tuple[list[str], list[str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(str(a["id"]))
        if tag == "section":
            self._section.append(str(a.get("id") or ""))
        if tag == "a" and a.get("href"):
            self.hrefs.append(str(a["href"]))
            if self._li:
                self._li[-1][1].append(str(a["href"]))
        if tag == "li" and "summary" in self._section:
            self._li.append(([], []))

    def handle_endtag(self, tag: str) -> None:
        if tag == "section" and self._section:
            self._section.pop()
        if tag == "li" and self._li:
            text, links = self._li.pop()
            self.sentences.append((" ".join("".join(text).split()), links))

    def handle_data(self, data: str) -> None:
        if self._li:
            self._li[-1][0].append(data)


def test_every_summary_sentence_links_to_what_it_rests_on(real: dict) -> None:
    for name, (doc, flows) in real.items():
        page = html_report(doc, flows)
        parsed = _Page()
        parsed.feed(page)
        assert len(parsed.ids) == len(set(parsed.ids)), name  # anchors are unique
        assert all(h.startswith("#") for h in parsed.hrefs), name  # links stay in the page
        missing = {h for h in parsed.hrefs if h[1:] not in parsed.ids}
        assert missing == set(), (name, missing)
        assert parsed.sentences, name
        for text, links in parsed.sentences:
            assert links, (name, text)  # no claim without its source
        story = build_story(doc)
        # every finding is linked from the summary or its recipient's line links to it
        linked = {h[1:] for _, links in parsed.sentences for h in links}
        for g in story.groups:
            assert g.anchor in linked
            assert {i.anchor for i in g.items[:8]} & linked, (name, g.name)


def test_findings_are_grouped_by_recipient_most_severe_first(real: dict) -> None:
    doc, flows = _need(real, "quicmitm_capture")
    story = build_story(doc)
    assert sum(len(g.items) for g in story.groups) == len(doc["findings"])
    ranks = [severity_rank(g.worst) for g in story.groups]
    assert ranks == sorted(ranks)
    for g in story.groups:
        sev = [severity_rank(i.finding["severity"]) for i in g.items]
        assert sev == sorted(sev) and g.worst == g.items[0].finding["severity"]
        for i in g.items:
            assert (i.finding["organisation"] or UNKNOWN) == g.key
    page = html_report(doc, flows)
    labels = re.findall(r"<span class='label'>(F\d+)</span>", page)
    assert labels == [f"F{n}" for n in range(1, len(doc["findings"]) + 1)]
    # the evidence is folded: each finding is a <details> whose <summary> holds its title
    assert page.count("<details class='finding'") == len(doc["findings"])
    md = markdown(doc)
    assert md.index("## Summary") < md.index("## Findings by recipient") < md.index("## Endpoints")
    assert re.findall(r"\*\*(F\d+)\*\*", md) == labels  # the same labels, in the same order
    for n, g in enumerate(story.groups, 1):
        assert f"### {n}. {md_text(g.name)}" in md


def test_the_summary_says_who_where_and_how_often(real: dict) -> None:
    doc, _ = _need(real, "quicmitm_capture")
    story = build_story(doc)
    cn = [g for g in story.groups if g.country == "CN"]
    assert cn, "the capture's Alibaba hosts"
    text = " ".join(s.text for s in cn[0].sentences)
    assert f"{cn[0].name} is headquartered in China (CN)" in text
    assert "National Intelligence Law" in text and "can compel it to give access" in text
    assert f"{cn[0].verdict['flows']} connections" in text
    # hosting networks are never named as recipients: only as "hosted by" or not at all
    summary = " ".join(s.text for s in [*story.overview, *story.others])
    for e in doc["endpoints"]:
        if not e["organisation"]:
            for h in e["hosting"]:
                if h.get("name"):
                    assert h["name"] not in summary, h["name"]
    # packet-only flows: the gap is said, and no sentence claims their content was read
    gaps = " ".join(s.text for s in story.gaps)
    assert f"{doc['coverage']['seen_only_in_packets']} connections were seen only" in gaps
    assert "auditor found no device identifier" not in text


def test_weak_attributions_are_hedged(real: dict) -> None:
    doc, _ = _need(real, "chrome")
    weak = {e["organisation"] for e in doc["endpoints"] if e["confidence"] == "medium"}
    assert weak, "chrome.har has hosts named by a data set only"
    others = " ".join(s.text for s in build_story(doc).others)
    for org in weak:
        assert f"{org}, partly attributed with medium confidence" in others or (
            f"{org}, attributed with medium confidence" in others
        )
    # a group named on low-confidence evidence that another rung contradicts
    hdoc, _ = hostile()
    g = build_story(hdoc).groups[0]
    text = " ".join(s.text for s in g.sentences)
    assert text.startswith(f"Servers attributed to {g.key} received the IMEI")
    assert "low confidence): possible, not established" in text
    assert "other evidence names" in text
    assert any(s.hedged for s in g.sentences)
    unknown = build_story(hdoc).groups[1]
    assert unknown.sentences[0].text.startswith("An unknown operator, hosted by ")


def test_no_device_profile_is_an_unknown_device_not_empty_commas(real: dict) -> None:
    doc, flows = _need(real, "httptoolkit")
    assert doc["device"] == {}  # an imported session has no profile
    page = html_report(doc, flows)
    head = page.split("<p class='meta'>", 1)[1].split("</p>", 1)[0]
    assert "unknown device" in head and ", ," not in head and "; ;" not in head
    assert not re.search(r",\s*,|\(\s*\)|Android\s*\)", head)
    md = markdown(doc)
    meta = md.splitlines()[2]
    assert meta.startswith("Device: unknown device") and "Android" not in meta
    assert "  " not in meta and "scenario ." not in meta
    assert "a device whose profile is unknown" in md
    # a profile, when there is one, is shown whole
    doc["device"] = {"manufacturer": "Xiaomi", "model": "M2007J3SG", "android_release": "10"}
    assert "Xiaomi M2007J3SG (Android 10)" in html_report(doc, flows)
    assert "Device: Xiaomi M2007J3SG \\(Android 10\\)" in markdown(doc)
    assert device_text({"manufacturer": "Google", "model": ""}) == "Google"


def test_what_could_not_be_inspected_lists_skipped_items(real: dict) -> None:
    doc, flows = _need(real, "malformed_3_of_10")
    skipped = doc["coverage"]["skipped"]
    assert doc["coverage"]["skipped_total"] == 3 and len(skipped) == 3  # the file's 3 bad entries
    story = build_story(doc)
    gaps = " ".join(s.text for s in story.gaps)
    assert "3 items were skipped while reading the sessions (har-entry 3)" in gaps
    assert "No packet capture was made" in gaps
    page = html_report(doc, flows)
    section = page.split("id='coverage'", 1)[1].split("<h2", 1)[0]
    assert "id='skipped'" in section and "malformed_3_of_10.har" in section
    for x in skipped:
        assert html_text(x["reason"]) in section and html_text(x["examples"][0]) in section
    assert "href='#skipped'" in page.split("id='summary'", 1)[1].split("</section>", 1)[0]
    md = markdown(doc)
    cov = md.split("## What could not be inspected", 1)[1].split("## Endpoints", 1)[0]
    lines = [x for x in cov.splitlines() if x.startswith("- skipped: 1 har-entry in ")]
    assert len(lines) == 3 and all("malformed\\_3\\_of\\_10.har" in x for x in lines)
    for x in skipped:
        assert md_text(x["reason"], 300) in cov
    # captured text in a skipped item's reason or examples is shown inertly
    doc["coverage"]["skipped"][0]["examples"] = ["<b>entry 2</b>"]
    assert "&lt;b&gt;entry 2&lt;/b&gt;" in html_report(doc, flows)
    assert "<b>" not in markdown(doc)


def test_a_session_that_did_not_end_is_said(real: dict) -> None:
    doc, flows = _need(real, "httptoolkit")
    doc["coverage"]["sessions_incomplete"] = [
        {"session": doc["session"]["id"], "status": "open", "stopped_by": None}
    ]
    gaps = " ".join(s.text for s in build_story(doc).gaps)
    assert "did not end as planned (status open)" in gaps
    assert "could not be decrypted" in gaps  # httptoolkit's pinned host
    page = html_report(doc, flows)
    assert "Sessions that did not end as planned" in page


def test_claims_are_said_in_words(real: dict) -> None:
    doc, _ = _need(real, "quicmitm_capture")
    doc["claims"] = [
        {
            "claim": "Alibaba receives no device identifiers",
            "verdict": "undetermined",
            "reason": "the flows were seen only as packets",
            "flow_ids": [],
            "coverage": {},
        }
    ]
    (s,) = build_story(doc).claims
    assert s.text.startswith("The claim “Alibaba receives no device identifiers” could not be")
    assert s.hedged and s.links[0].anchor == "claims"


def test_identifiers_are_named_in_words_with_their_form(tmp_path: Path) -> None:
    """httptoolkit.har carries an IMEI in a JSON body; told the value (--identifier), the
    summary says who received it, and says so when only a hash of it was seen."""
    path = REAL["httptoolkit"]
    a = analyse(path, tmp_path, identifiers={"imei": "490154203237518"})
    sent = [f for f in a.doc["findings"] if f["rule"] == "identifier-sent"]
    assert sent and all(f["identifiers"] == ["imei"] for f in sent)
    story = build_story(a.doc)
    (g,) = [g for g in story.groups if g.key == sent[0]["organisation"]]
    first = g.sentences[0]
    assert first.text.startswith(f"{g.key} received the IMEI")
    assert "hashed" not in first.text  # it went as plain JSON
    assert {x.label for x in first.links} >= {story.items[f["id"]].label for f in sent}
    for f in sent:
        for ev in f["evidence"]:
            ev["encoding"] = "form > md5-hex"
    assert "received the IMEI (hashed)" in build_story(a.doc).groups[0].sentences[0].text
    sent[0]["evidence"].append({**sent[0]["evidence"][0], "encoding": "gzip > json > plain"})
    assert "IMEI (in clear and hashed)" in build_story(a.doc).groups[0].sentences[0].text


def test_a_report_cut_short_leaves_the_previous_one_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write failing part-way (here the summary, after findings.json and the tables were
    written) keeps the previous report's files as they were: no new findings.json beside
    an old summary.md, and no staging folder left."""
    import errno

    import auditor.analysis.report as R

    doc, flows = _hostile_doc("http://127.0.0.1:9")
    out = tmp_path / "r"
    write_report(out, doc, flows, ["json", "csv", "md", "html"])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    doc2 = dict(doc, generated_at="2030-01-01T00:00:00Z")

    def full(_doc: object) -> str:
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "summary.md"))

    monkeypatch.setattr(R, "markdown", full)
    with pytest.raises(OSError):
        write_report(out, doc2, flows, ["json", "csv", "md", "html"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    monkeypatch.undo()
    write_report(out, doc2, flows, ["json", "md"])
    assert b"2030-01-01" in (out / "findings.json").read_bytes()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
