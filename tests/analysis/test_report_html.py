"""The HTML report in a real headless Chromium: it renders, runs no captured script and
fetches nothing, even from a session full of hostile strings."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import stat
import subprocess
import threading
from pathlib import Path
from typing import ClassVar

import pandas as pd
import pytest

from auditor import columns as C
from auditor.analysis.report import html_report, markdown, write_report
from tests.conftest import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _hostile_doc(leak: str) -> tuple[dict, pd.DataFrame]:
    evil = [
        f"<script>fetch('{leak}/script')</script>",
        f'"><img src="{leak}/img" onerror="document.title=\'PWNED\'">',
        f"<iframe src='{leak}/iframe'></iframe>",
        f"<link rel=stylesheet href='{leak}/css'>",
        "javascript:alert(1)",
        '=HYPERLINK("http://x")',
        "evil\u202egnp.exe",
    ]
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


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Recorder.hits.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


def test_static_html_has_no_live_markup(tmp_path: Path) -> None:
    doc, flows = _hostile_doc("http://127.0.0.1:9")
    page = html_report(doc, flows)
    assert len(re.findall(r"<script", page, re.I)) == 0
    assert not re.search(r"<(img|iframe|link)\b", page, re.I)
    assert "onerror=" not in page.replace("onerror=&quot;", "")
    assert "\u202e" not in page
    assert "Content-Security-Policy" in page
    assert "<mark>864132058957347</mark>" in page
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
    for section in ("verdicts", "timeline", "bytes", "findings", "endpoints", "device", "method"):
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
