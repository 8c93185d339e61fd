"""Safety, proven with real parts (issue 7 §3).

1. Reports of a session full of hostile data are inert: ``report.html`` in a real headless
   Chromium fetches nothing and runs nothing (a loopback canary server and Chromium's own
   console say so) and shows the hostile text as text; no CSV cell starts a formula;
   ``summary.md`` holds no live link, image or HTML; ``findings.json`` keeps the data exactly.
2. Decompression bombs (gzip, deflate, br, zstd, nested) of 1 GiB each are analysed in bounded
   time and memory, and the report names the capped bodies.
3. One audit per device: a second is refused while the first runs; a dead holder's lock is
   taken over.
4. Everything auditor writes (mitmproxy's CA key, sessions, bodies, reports) is owner-only,
   even under a permissive umask.
5. Listeners bind to loopback by default; a non-loopback ``--listen-host`` is warned about.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import html.parser
import http.server
import ipaddress
import json
import os
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import brotli
import pytest
from markdown_it import MarkdownIt

from auditor.analysis.engine import analyze, write
from auditor.analysis.escape import visible
from auditor.decoders import zstd
from auditor.intel.lookalike import shown_names
from auditor.packets.live import PcapdroidCollector
from auditor.records import (
    DnsAnswer,
    DnsRecord,
    EventRecord,
    HttpRecord,
    TlsFailedRecord,
)
from auditor.session import SessionWriter
from tests.conftest import free_port
from tests.e2e.conftest import WorldFactory
from tests.origin import QuietHandler

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
IMEI = "490154203237518"
AID = "9774d56d682e549c"
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
FORMATS = ["json", "csv", "md", "html"]
PWNED = "PWNED"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "auditor.cli", *args]


# ------------------------------------------------------------------------ the canary server


class _Canary(http.server.ThreadingHTTPServer):
    """Records every connection and request made to it; any is a failure of the report."""

    daemon_threads = True

    def __init__(self) -> None:
        self.connections: list[tuple[str, int]] = []
        self.requests: list[str] = []
        super().__init__(("127.0.0.1", free_port()), _CanaryHandler)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.connections.append(client_address)
        return True

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _CanaryHandler(QuietHandler):
    server: _Canary

    def _hit(self) -> None:
        self.server.requests.append(f"{self.command} {self.path}")
        self.send_response(204)
        self.end_headers()

    do_GET = do_POST = do_HEAD = do_OPTIONS = _hit


@pytest.fixture(scope="module")
def canary() -> Iterator[_Canary]:
    server = _Canary()
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------- the hostile session


def markup(p: str) -> list[str]:
    """Markup that fetches ``p`` (the canary) or sets the title when it is live."""
    t = f"document.title='{PWNED}'"
    return [
        "<script>alert(1)</script>.example",
        f"\"><img src=x onerror=fetch('{p}/img')>",
        f"'><svg onload=\"fetch('{p}/svg');{t}\">",
        f"<script>fetch('{p}/script');{t}</script>",
        f"<style>@import url({p}/style);body{{background:url({p}/bg)}}</style>",
        f"<meta http-equiv=refresh content='0;url={p}/meta'>",
        f"<iframe src={p}/iframe></iframe>",
        f"<link rel=stylesheet href={p}/link>",
        f"<svg xmlns='http://www.w3.org/2000/svg'><image href='{p}/svgimage'/></svg>",
        f"<a href=\"javascript:fetch('{p}/jshref')\">click</a>",
        f"<base href='{p}/base/'><object data='{p}/object'></object>",
        f"<img src=x onerror={t}>",
        f"</title><script>{t}</script>",
        f"</pre></code></td></table><script>{t}</script>",
        f"<!--<img src={p}/comment>-->",
        f"<form action={p}/form><button formaction={p}/button>go</button></form>",
        f"<video><source onerror=\"fetch('{p}/video')\"></video>",
        f"javascript:fetch('{p}/jsurl')",
    ]


def formulas(p: str) -> list[str]:
    return [
        f'=HYPERLINK("{p}/csv","click")',
        "+1+cmd|' /C calc'!A0",
        "-2+3+cmd|' /C calc'!A0",
        "@SUM(1+1)*cmd|' /C calc'!A0",
        "\t=1+1",
        "\r=1+1",
    ]


def markdown_injection(p: str) -> list[str]:
    return [
        f"[click]({p}/md-link)",
        f"![img]({p}/md-image)",
        f"<{p}/md-autolink>",
        f"see {p}/md-bare",
        "www.canary-www.example",
        "mail canary@canary-mail.example",
        "| cell | break |",
        "**bold** _it_ `code` ~~s~~",
        "# heading",
        f"[ref]: {p}/md-ref",
    ]


UNICODE = [
    "evil\u202egnp.exe.example",
    "isolate\u2067rtl\u2069.example",
    "nul\x00byte.example",
    "esc\x1b[31mred.example",
    "bell\x07\x08\x7f\x85\x9b.example",
]


@dataclass
class Hostile:
    canary: str
    hosts: list[str] = field(default_factory=list)
    device: dict[str, Any] = field(default_factory=dict)
    session: Path = Path()
    report: Path = Path()
    doc: dict[str, Any] = field(default_factory=dict)


def _ts(i: int) -> str:
    return f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z"


def build_hostile_session(out: Path, p: str) -> Hostile:
    long_host = "<script>" + "A" * 20_000 + "</script>.example"
    hosts = [*markup(p), *formulas(p), *markdown_injection(p), *UNICODE, long_host]
    device = {
        "serial": f"<img src={p}/serial>",
        "manufacturer": f"<img src=x onerror=\"fetch('{p}/manufacturer')\">",
        "model": f'=HYPERLINK("{p}/model","x")',
        "android_release": f"![x]({p}/release)",
        "fingerprint": "evil\u202e\x00" + "F" * 5000,
        "identifiers": [
            {"name": "imei", "value": IMEI},
            {"name": "android_id", "value": AID},
        ],
    }
    scenario = {"name": f"[scenario]({p}/scenario) <b>x</b>", "steps": []}
    w = SessionWriter.create(out, device=device, scenario=scenario, notes=hosts[1])
    n = 0
    for h in hosts:
        body = json.dumps({h: IMEI, "note": [h, AID], "imei": IMEI}).encode()
        w.write(
            HttpRecord(
                id=f"h{n}",
                method="POST",
                scheme="https",
                host=h,
                port=443,
                path=f"/{h}?imei={IMEI}",
                url=f"https://{h}/{h}?imei={IMEI}&x={h}",
                request_start=_ts(n),
                response_end=_ts(n),
                sni=h,
                server_ip="203.0.113.7",
                server_port=443,
                request_headers=(
                    ("User-Agent", h),
                    ("Referer", f"javascript:fetch('{p}/referer')"),
                    ("X-Device", f"{h}{IMEI}{h}"),
                    ("Cookie", f"did={AID}; n={h}"),
                ),
                request_content_type="application/json",
                request_body=w.bodies.put(body),
                status=200,
                reason=h,
                response_headers=(("Location", f"javascript:fetch('{p}/location')"),),
                error=h,
            )
        )
        n += 1
    # a long URL, invalid UTF-8 and a hostile JSON document as bodies
    invalid = b"\xff\xfe\xfd<script>" + IMEI.encode() + b"\xc3\x28\x00\x1b[31m\xed\xa0\x80"
    hostile_json = json.dumps(
        {"<img src=x onerror=alert(1)>": IMEI, "=cmd": {"@x": [f"[a]({p}/json) {AID}"]}}
    ).encode()
    keywords = [*markup(p), *formulas(p), *markdown_injection(p), *UNICODE] * 3
    keyword_list = json.dumps({"MiAdBlackListConfig": {"keywords": keywords}}).encode()
    for body, ctype in (
        (invalid, "text/plain"),
        (hostile_json, "application/json"),
        (b"+" + IMEI.encode() * 3 + b"\x00" * 64, "application/octet-stream"),
    ):
        w.write(
            HttpRecord(
                id=f"h{n}",
                method="POST",
                scheme="http",
                host="body.example",
                port=80,
                path="/" + "x" * 50_000,
                url="http://body.example/" + "x" * 50_000,
                request_start=_ts(n),
                request_headers=(("User-Agent", "=" + "U" * 100_000),),
                request_content_type=ctype,
                request_body=w.bodies.put(body),
                status=200,
                response_content_type="application/json",
                response_body=w.bodies.put(keyword_list),
            )
        )
        n += 1
    for h in (*markup(p)[:4], *formulas(p)[:2], UNICODE[0]):
        w.write(
            TlsFailedRecord(
                id=f"t{n}",
                ts=_ts(n),
                side="client",
                client_ip="10.0.0.2",
                client_port=40000 + n,
                sni=h,
                error=h,
                server_ip="203.0.113.8",
                server_port=443,
                alpn_offers=(h,),
            )
        )
        n += 1
        w.write(
            DnsRecord(
                id=f"d{n}",
                ts=_ts(n),
                qname=h,
                qtype="A",
                answers=(DnsAnswer(h, "A", "203.0.113.8"), DnsAnswer(h, "CNAME", h)),
            )
        )
        w.write(EventRecord(ts=_ts(n), kind=h, message=h, data={"x": h}))
        n += 1
    w.close()
    return Hostile(p, hosts=hosts, device=device, session=w.path)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, canary: _Canary) -> Hostile:
    root = tmp_path_factory.mktemp("hostile")
    h = build_hostile_session(root / "captures", canary.base)
    h.report = root / "report"
    a = analyze([h.session], artifacts_dir=h.report / "artifacts")
    write(a, h.report, FORMATS)
    h.doc = a.doc
    return h


# ----------------------------------------------------------------------- 1a. report.html


class _Dom(html.parser.HTMLParser):
    """Elements, attributes and text of a document as Chromium serialised it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []
        self.in_body = False
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))
        self.in_body |= tag == "body"
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif self.in_body:
            self.text.append(data)


def _chromium(page: Path, profile: Path) -> tuple[str, str]:
    """The DOM after load (scripts, if any, had 3 s of virtual time) and Chromium's log."""
    assert CHROMIUM is not None
    flags = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-extensions", f"--user-data-dir={profile}",
        "--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000", "--dump-dom",
    ]  # fmt: skip
    done = subprocess.run(
        [*flags, page.as_uri()], capture_output=True, text=True, timeout=120, errors="replace"
    )
    return done.stdout, done.stderr


def _console(log: str) -> list[str]:
    """Console messages, CSP violations among them (Chromium logs them as CONSOLE lines)."""
    return [line for line in log.splitlines() if "CONSOLE" in line or "Security Policy" in line]


# Elements auditor's report is made of; captured data must never add another.
REPORT_TAGS = {
    "html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "code", "pre",
    "mark", "table", "thead", "tbody", "tr", "th", "td", "span", "section", "ul", "li", "nav",
    "div", "details", "summary", "dl", "dt", "dd", "strong", "i", "a",
}  # fmt: skip
# the report's only links: to an id in the page itself (its summary to its findings)
_FRAGMENT = re.compile(r"#[A-Za-z0-9_-]+")
URL_ATTRS = {"href", "src", "action", "formaction", "data", "xlink:href", "srcset", "poster"}


def _inert(dom: _Dom) -> list[str]:
    """What in a parsed DOM could fetch or run something."""
    bad = [tag for tag, _ in dom.tags if tag not in REPORT_TAGS]
    for tag, attrs in dom.tags:
        for name, value in attrs:
            fragment = tag == "a" and name == "href" and _FRAGMENT.fullmatch(value or "")
            if name.startswith("on") or (name in URL_ATTRS and not fragment):
                bad.append(f"{tag}[{name}={value}]")
            csp = (value or "").lower() == "content-security-policy"
            if tag == "meta" and name == "http-equiv" and not csp:
                bad.append(f"meta[http-equiv={value}]")
    return bad


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_report_html_is_inert_in_chromium(
    hostile: Hostile, canary: _Canary, tmp_path: Path
) -> None:
    page = hostile.report / "report.html"
    canary.connections.clear()
    canary.requests.clear()
    dom_text, log = _chromium(page, tmp_path / "profile")
    assert canary.connections == [] and canary.requests == []
    assert _console(log) == []  # no CSP violation: nothing even tried to load or run
    dom = _Dom()
    dom.feed(dom_text)
    assert dom.in_body, dom_text[:500]
    assert _inert(dom) == []
    assert dom.title == f"auditor report {hostile.doc['session']['id']}"
    assert PWNED not in dom.title
    text = "".join(dom.text)
    # every hostile host is shown, as text, with its unsafe characters made visible
    shown = [h for h in hostile.hosts if len(h) < 400]
    missing = [h for h in shown if visible(h.lower()) not in text]
    assert missing == []
    assert "\\u202e" in text and "\u202e" not in dom_text and "\x00" not in dom_text
    # the long host is cut, not dropped
    assert "<script>" + "a" * 300 in text
    for value in (hostile.device["manufacturer"], hostile.device["model"]):
        assert value in text
    # the hostile keyword list and JSON keys reached the page as text too
    assert "onerror=alert(1)" in text and "MiAdBlackListConfig" in text


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_the_browser_checks_can_fail(hostile: Hostile, canary: _Canary, tmp_path: Path) -> None:
    """The detectors above see live markup: one unescaped payload in the same report is
    caught by the canary without the CSP, and by Chromium's console with it."""
    report = (hostile.report / "report.html").read_text(encoding="utf-8")
    live = f"<img src='{canary.base}/control' onerror=\"document.title='{PWNED}'\">"
    no_csp = re.sub(r"<meta http-equiv='Content-Security-Policy'[^>]*>", "", report)
    assert no_csp != report
    (tmp_path / "a.html").write_text(no_csp.replace("</body>", live + "</body>"))
    (tmp_path / "b.html").write_text(report.replace("</body>", live + "</body>"))
    canary.connections.clear()
    canary.requests.clear()
    dom_a, _ = _chromium(tmp_path / "a.html", tmp_path / "pa")
    assert canary.requests == ["GET /control"]
    parsed = _Dom()
    parsed.feed(dom_a)
    assert parsed.title == PWNED and _inert(parsed)
    canary.connections.clear()
    canary.requests.clear()
    _, log_b = _chromium(tmp_path / "b.html", tmp_path / "pb")
    assert canary.requests == []
    assert any("Content Security Policy" in line for line in _console(log_b)), log_b[-2000:]


# ---------------------------------------------------------------------------- 1b. the CSVs

_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")


def _cells(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [cell for row in csv.reader(fh) for cell in row]


@pytest.mark.parametrize("name", ["flows.csv", "endpoints.csv"])
def test_no_csv_cell_starts_a_formula(hostile: Hostile, name: str) -> None:
    cells = _cells(hostile.report / name)
    live = [c for c in cells if c.startswith(FORMULA_START) and not _NUMBER.fullmatch(c)]
    assert live == []
    # the hostile values are there, neutralised the OWASP way (a leading quote)
    present = set(cells)
    for f in formulas(hostile.canary):
        shown = visible(f.lower())  # a CR is shown as \u000d: no formula either
        assert ("'" + shown if shown.startswith(FORMULA_START) else shown) in present, f
    if name == "flows.csv":
        assert "'" + formulas(hostile.canary)[0] in present  # the SNI, as sent


# ---------------------------------------------------------------------------- 1c. summary.md

# GFM's extended autolinks (https://github.github.com/gfm/#autolinks-extension-): a URL, a
# www. domain or an e-mail address in running text becomes a link.
_GFM_AUTOLINK = re.compile(
    r"(?:https?|ftp)://[^\s<]+|(?<![\w.])www\.[\w-]+\.[\w.-]+|[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
    r"|(?:mailto|xmpp|javascript):\S+",
    re.I,
)


def test_summary_md_has_no_live_links_images_or_html(hostile: Hostile) -> None:
    text = (hostile.report / "summary.md").read_text(encoding="utf-8")
    assert "\u202e" not in text and "\x00" not in text and "\x1b" not in text
    md = MarkdownIt("commonmark", {"html": True}).enable("table")
    # Without text_join escaped characters stay tokens of their own, as GFM's autolinker and
    # markdown-it's linkify see them: an escaped ':' or '@' breaks an autolink.
    md.disable("text_join")
    live: list[str] = []
    rows = 0

    def walk(tokens: list[Any]) -> None:
        nonlocal rows
        for t in tokens:
            if t.type in ("link_open", "image", "html_inline", "html_block"):
                live.append(f"{t.type}: {t.content or t.attrs}")
            if t.type == "tr_open":
                rows += 1
            if t.type == "text":
                live.extend(f"autolink: {m.group()}" for m in _GFM_AUTOLINK.finditer(t.content))
            if t.children:
                walk(t.children)

    walk(md.parse(text))
    assert live == []
    # Tables were not broken: one row per endpoint, plus the header row; one item per finding.
    assert rows == len(hostile.doc["endpoints"]) + 1
    assert len(re.findall(r"^- \*\*F\d+\*\* ", text, re.M)) == len(hostile.doc["findings"])
    rendered = MarkdownIt("commonmark", {"html": True}).enable("table").render(text)
    assert not re.search(r"<(a|img|script|iframe|style|svg|meta|link)\b", rendered)
    assert "<td>&lt;script&gt;alert(1)&lt;/script&gt;.example</td>" in rendered
    assert f"<td>see {hostile.canary}/md-bare</td>" in rendered


# ------------------------------------------------------------------------ 1d. findings.json


def test_findings_json_round_trips_the_hostile_data(hostile: Hostile) -> None:
    raw = (hostile.report / "findings.json").read_text(encoding="utf-8")
    doc = json.loads(raw)  # strict: a raw control character would be an error
    public = {k: v for k, v in hostile.doc.items() if not k.startswith("_")}
    assert doc == json.loads(json.dumps(public, default=str))
    for key in ("serial", "manufacturer", "model", "android_release", "fingerprint"):
        assert doc["device"][key] == hostile.device[key]
    hosts = {e["host"] for e in doc["endpoints"]}
    # a name holding invisible or bidi characters is shown by its A-label with a marker
    # (issue 15: it must never read as the plain name); every other name as it was sent
    shown = shown_names(h.lower() for h in hostile.hosts)
    assert shown, "the hostile hosts include bidi names"
    assert {shown.get(h.lower(), h.lower()) for h in hostile.hosts} <= hosts
    assert all(v.startswith("\u26a0 xn--") for v in shown.values())
    excerpts = [ev["excerpt"] for f in doc["findings"] for ev in f.get("evidence", [])]
    assert any("\ufffd" not in e and "\\xff\\xfe\\xfd<script>" in e for e in excerpts)
    assert doc["method"]["scenario"]["name"].startswith("[scenario](")


# ----------------------------------------------------------------- 2. decompression bombs

GiB = 1 << 30
_MiB_ZEROS = bytes(1 << 20)


def _deflate_bomb() -> bytes:
    """Raw deflate of 1 GiB of zeros in ~1 MiB, made in a fraction of a second: after a full
    flush the compressor starts afresh, so every MiB of zeros compresses to the same
    byte-aligned blocks, which are repeated."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    unit = c.compress(_MiB_ZEROS) + c.flush(zlib.Z_FULL_FLUSH)
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # an empty final block
    assert zlib.decompress(unit + end, -15) == _MiB_ZEROS
    return unit * (GiB // len(_MiB_ZEROS)) + end


def bombs() -> dict[str, tuple[str, bytes]]:
    """Flow id -> (Content-Encoding, body); each body expands to at least 1 GiB."""
    raw = _deflate_bomb()
    crc = 0
    for _ in range(GiB // len(_MiB_ZEROS)):
        crc = zlib.crc32(_MiB_ZEROS, crc)
    gz = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + raw + struct.pack("<II", crc, GiB % 2**32)
    zl = b"\x78\xda" + raw + struct.pack(">I", (GiB % 65521) << 16 | 1)  # adler32 of zeros
    br = brotli.Compressor(quality=1)
    brb = b"".join(br.process(_MiB_ZEROS) for _ in range(GiB // len(_MiB_ZEROS))) + br.finish()
    zs = zstd.ZstdCompressor(level=1)
    zsb = b"".join(zs.compress(_MiB_ZEROS) for _ in range(GiB // len(_MiB_ZEROS)))
    zsb += zs.flush()
    return {
        "bomb-gzip": ("gzip", gz),
        "bomb-deflate-zlib": ("deflate", zl),
        "bomb-deflate-raw": ("deflate", raw),
        "bomb-br": ("br", brb),
        "bomb-zstd": ("zstd", zsb),
        "bomb-nested": ("gzip", gzip.compress(gz, 9)),  # gzip in gzip, one layer declared
        "bomb-stacked": ("gzip, gzip", gzip.compress(gz, 9)),  # both declared
    }


_MEASURE = """
import json, resource, sys, time
from pathlib import Path
from auditor.analysis.engine import analyze, write

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

def hwm():
    # this process's own peak: ru_maxrss is not, on Linux it keeps the high-water mark of the
    # address space that exec replaced (the parent's, spawned by vfork)
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024

before = rss()
t = time.monotonic()
out = Path(sys.argv[2])
a = analyze([Path(sys.argv[1])], artifacts_dir=out / "artifacts")
write(a, out, ["json", "csv", "md", "html"])
print(json.dumps({
    "seconds": time.monotonic() - t,
    "before": before,
    "peak": hwm(),
}))
"""


def test_decompression_bombs_are_bounded_and_reported(tmp_path: Path) -> None:
    made = bombs()
    w = SessionWriter.create(
        tmp_path / "captures", device={"identifiers": [{"name": "imei", "value": IMEI}]}
    )
    # The capture's own bounded size check (bodies.py) costs a second a bomb; not tested here.
    w.bodies.decode_sizes = False
    for i, (fid, (enc, body)) in enumerate(sorted(made.items())):
        assert len(body) < 2 * 1024 * 1024  # small on the wire (and on disk)
        ref = w.bodies.put(body, enc)
        response = fid in ("bomb-br", "bomb-deflate-zlib")
        w.write(
            HttpRecord(
                id=fid,
                method="POST",
                scheme="https",
                host=f"{fid}.example",
                port=443,
                path="/up",
                url=f"https://{fid}.example/up",
                request_start=_ts(i),
                request_headers=(("Content-Encoding", enc),),
                request_content_type="application/json",
                request_body=None if response else ref,
                status=200,
                response_headers=(("Content-Encoding", enc),) if response else (),
                response_content_type="application/json",
                response_body=ref if response else None,
            )
        )
    w.close()
    stored = sum(f.stat().st_size for f in (w.path / "bodies").iterdir())
    assert stored < 1024 * 1024
    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(w.path), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    m = json.loads(done.stdout.strip().splitlines()[-1])
    grown = (m["peak"] - m["before"]) >> 20
    print(f"analysis of {len(made)} bombs: {m['seconds']:.1f} s, +{grown} MiB")
    assert m["seconds"] < 60, m
    assert m["peak"] - m["before"] < 300 * 1024 * 1024, m
    doc = json.loads((out / "findings.json").read_text())
    named = {fid for fid in made if any(fid in w for w in doc["warnings"])}
    assert named == set(made), doc["warnings"]
    page = (out / "report.html").read_text()
    warnings_html = page.split("id='warnings'", 1)[-1]
    assert all(fid in warnings_html for fid in made), warnings_html[:3000]
    summary = (out / "summary.md").read_text().split("## Warnings", 1)[-1]
    assert all(fid in summary for fid in made), summary[:3000]


# ------------------------------------------------------------------------- 3. the device lock

_LOCKER = """
import logging, sys
from auditor.audit import device_lock
from auditor.errors import AuditorError
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
held = {}
print("ready", flush=True)
for line in sys.stdin:
    cmd, _, serial = line.strip().partition(" ")
    if cmd == "hold":
        lock = device_lock(serial)
        try:
            lock.__enter__()
        except AuditorError as exc:
            print(f"refused: {exc}", flush=True)
            continue
        held[serial] = lock
        print("held", flush=True)
    elif cmd == "release":
        held.pop(serial).__exit__(None, None, None)
        print("released", flush=True)
"""
SERIAL = "emulator-5554"


class Locker:
    """A process that takes and releases device locks as told (one line in, one line out)."""

    def __init__(self, home: Path) -> None:
        # the locks live in ~/.auditor/locks: a HOME of the test's own
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _LOCKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_lock_env(home),
        )
        assert self.ask("") == "ready"

    def ask(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if line:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def hold(self, serial: str = SERIAL) -> str:
        return self.ask(f"hold {serial}")

    def finish(self) -> tuple[int, str]:
        """End the process normally (as an audit that completes); its status and log."""
        _, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=30)


def _lock_env(home: Path) -> dict[str, str]:
    return {**os.environ, "HOME": str(home)}


def _lock_file(home: Path, serial: str = SERIAL) -> Path:
    return home / ".auditor" / "locks" / f"{serial}.lock"


def test_a_second_audit_of_the_same_device_is_refused(tmp_path: Path) -> None:
    first, second = Locker(tmp_path), Locker(tmp_path)
    try:
        assert first.hold() == "held"
        assert second.hold() == (
            f"refused: another audit is running on {SERIAL} (pid {first.proc.pid}); "
            "wait for it to finish"
        )
        assert second.hold("other-device") == "held"  # the lock is per device
        # the first is unaffected: it holds the lock still, and the lock still names it
        assert first.proc.poll() is None
        assert _lock_file(tmp_path).read_text() == str(first.proc.pid)
        assert second.hold().startswith("refused")
        assert first.ask(f"release {SERIAL}") == "released"
        assert second.hold() == "held"  # free once the first is done
        assert first.hold().startswith("refused")
        assert first.finish()[0] == 0 and second.finish()[0] == 0
    finally:
        first.kill()
        second.kill()


def _stale_lock(home: Path) -> tuple[int, Locker]:
    dead, taker = Locker(home), Locker(home)
    assert dead.hold() == "held"
    dead.proc.send_signal(signal.SIGKILL)  # dies holding it: no clean-up ran
    dead.kill()
    assert _lock_file(home).read_text() == str(dead.proc.pid)
    return dead.proc.pid, taker


def test_a_stale_lock_is_taken_over(tmp_path: Path) -> None:
    _, taker = _stale_lock(tmp_path)
    try:
        assert taker.hold() == "held"
        assert _lock_file(tmp_path).read_text() == str(taker.proc.pid)
    finally:
        taker.kill()


def test_a_stale_lock_takeover_is_noted(tmp_path: Path) -> None:
    dead, taker = _stale_lock(tmp_path)
    try:
        assert taker.hold() == "held"
        status, log = taker.finish()
    finally:
        taker.kill()
    assert status == 0 and str(dead) in log  # e.g. "stale lock of pid N taken over"


def test_cli_refuses_a_second_audit(tmp_path: Path, make_world: WorldFactory) -> None:
    _, serial = make_world("pixel-android14", traffic=False)
    first = Locker(tmp_path)
    try:
        assert first.hold(serial) == "held"
        out = tmp_path / "captures"
        args = [
            "audit", "-s", serial, "--no-analyze", "--out", str(out), "--port",
            str(free_port()), "--confdir", str(tmp_path / "conf"), "--duration", "1s",
        ]  # fmt: skip
        done = subprocess.run(
            _cli(*args),
            capture_output=True,
            text=True,
            timeout=120,
            env=_lock_env(tmp_path),
        )
        assert first.proc.poll() is None
    finally:
        first.kill()
    assert done.returncode == 1, done.stderr
    running = f"another audit is running on {serial} (pid {first.proc.pid})"
    assert done.stderr.strip().splitlines()[-1] == f"error: {running}; wait for it to finish"
    assert not out.exists() or not any(out.iterdir())  # no session was started


# ------------------------------------------------------------------- 4. and 5. files, sockets


def _process_tree(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat_line = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat_line.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = set(), [pid]
    while todo:
        p = todo.pop()
        tree.add(p)
        todo += children.get(p, [])
    return tree


def listening(pids: set[int]) -> list[tuple[str, str, int]]:
    """(protocol, address, port) of every socket of ``pids`` that waits for others: TCP in
    LISTEN, UDP bound and unconnected (from /proc/net and each process's fds)."""
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
    out = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/net/{proto}").read_text().splitlines()[1:]:
            f = line.split()
            local, state, inode = f[1], f[3], f[9]
            if inode not in inodes or state != ("0A" if proto.startswith("tcp") else "07"):
                continue
            addr, port = local.split(":")
            raw = bytes.fromhex(addr)  # 32-bit words in host (little-endian) order
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            out.append((proto, str(ipaddress.ip_address(raw)), int(port, 16)))
    return sorted(out)


def _not_loopback(socks: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    return [s for s in socks if not ipaddress.ip_address(s[1]).is_loopback]


def _modes(root: Path) -> dict[str, str]:
    """Relative path -> octal mode of ``root`` and everything under it."""
    out = {".": oct(stat.S_IMODE(root.stat().st_mode))}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = oct(stat.S_IMODE(p.lstat().st_mode))
    return out


def _owner_only(modes: dict[str, str], root: Path) -> list[str]:
    bad = []
    for rel, mode in modes.items():
        want = "0o700" if (root / rel).is_dir() else "0o600"
        if mode != want:
            bad.append(f"{rel}: {mode} (want {want})")
    return bad


KEY_FILES = ("mitmproxy-ca.pem", "mitmproxy-ca.p12")


@pytest.fixture(scope="module")
def umask0_capture(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real `auditor capture --no-device --duration 2s` under umask 0, in a fresh HOME (so
    with the default confdir, ~/.auditor/mitmproxy, made anew) and a request through it; its
    listening sockets are read while it runs."""
    from tests.proxied import proxied_request
    from vhandset.offline.origin import OriginServer

    root = tmp_path_factory.mktemp("umask0")
    port = free_port()
    args = [
        "capture", "--no-device", "--duration", "2s", "--port", str(port),
        "--out", str(root / "captures"), "--json",
    ]  # fmt: skip
    proc = subprocess.Popen(
        _cli(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        umask=0,
        env={**os.environ, "HOME": str(root / "home")},
    )
    socks: list[tuple[str, str, int]] = []
    try:
        with OriginServer() as origin:
            deadline = time.monotonic() + 30
            while not any(s[2] == port for s in socks):
                assert time.monotonic() < deadline and proc.poll() is None, "no proxy"
                time.sleep(0.1)
                socks = listening(_process_tree(proc.pid))
            status, _ = proxied_request(
                port, "POST", f"http://localhost:{origin.port}/up", b"x" * 1000
            )
            assert status == 200
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    return {
        "root": root,
        "conf": root / "home" / ".auditor" / "mitmproxy",
        "session": Path(json.loads(stdout)["session"]),
        "sockets": socks,
        "stderr": stderr,
    }


def test_mitmproxy_ca_key_and_sessions_are_owner_only(umask0_capture: dict[str, Any]) -> None:
    conf = umask0_capture["conf"]
    modes = _modes(conf)
    assert modes["."] == "0o700"
    for name in KEY_FILES:
        assert modes[name] == "0o600", (name, modes)
    session = umask0_capture["session"]
    assert any((session / "bodies").iterdir())
    assert _owner_only(_modes(session), session) == []


def test_the_captures_folder_auditor_creates_is_owner_only(
    umask0_capture: dict[str, Any],
) -> None:
    captures = umask0_capture["root"] / "captures"
    assert oct(stat.S_IMODE(captures.stat().st_mode)) == "0o700"


def test_the_auditor_home_folder_is_owner_only(umask0_capture: dict[str, Any]) -> None:
    home = umask0_capture["conf"].parent
    assert oct(stat.S_IMODE(home.stat().st_mode)) == "0o700"


def test_mitmproxy_public_files_are_not_world_writable(umask0_capture: dict[str, Any]) -> None:
    conf = umask0_capture["conf"]
    writable = {k: v for k, v in _modes(conf).items() if int(v, 8) & 0o022}
    assert writable == {}


def test_reports_are_owner_only(hostile: Hostile, tmp_path: Path) -> None:
    out = tmp_path / "reports" / "r"
    done = subprocess.run(
        _cli("analyze", str(hostile.session), "--out", str(out)),
        capture_output=True,
        text=True,
        timeout=120,
        umask=0,
    )
    assert done.returncode == 0, done.stderr
    modes = _modes(out)
    assert {"findings.json", "report.html", "flows.csv", "flows.parquet", "endpoints.csv",
            "summary.md", "artifacts"} <= set(modes)  # fmt: skip
    assert any(k.startswith("artifacts/keyword-list-") for k in modes)
    assert _owner_only(modes, out) == []
    assert oct(stat.S_IMODE(out.parent.stat().st_mode)) == "0o700"  # it made reports/ too


def test_capture_listens_on_loopback_by_default(umask0_capture: dict[str, Any]) -> None:
    socks = umask0_capture["sockets"]
    assert socks and _not_loopback(socks) == [], socks
    assert "warning" not in umask0_capture["stderr"]


def test_a_non_loopback_listen_host_is_warned_about(tmp_path: Path) -> None:
    args = [
        "capture", "--no-device", "--listen-host", "0.0.0.0", "--duration", "1s",
        "--port", str(free_port()), "--out", str(tmp_path / "c"),
        "--confdir", str(tmp_path / "conf"),
    ]  # fmt: skip
    done = subprocess.run(
        _cli(*args),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (
        "warning: listening on 0.0.0.0: anyone who can reach this address can use the proxy "
        "and read what passes through it"
    ) in done.stderr


def test_the_virtual_handset_listens_on_loopback_by_default() -> None:
    proc = subprocess.Popen(
        _cli("simulate", "--no-connect", "--no-traffic", "--port", str(free_port()), "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        text = ""
        while not text.endswith("}\n"):  # one indented JSON object
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            text += line
        info = json.loads(text)
        socks = listening(_process_tree(proc.pid))
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    ports = {p for _, _, p in socks}
    adb_port = int(info["adb_address"].rsplit(":", 1)[1])
    dns_port = int(info["dns"].rsplit(":", 1)[1])
    assert {adb_port, dns_port} <= ports, (info, socks)
    assert _not_loopback(socks) == [], socks
    assert "warning" not in stderr


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_the_pcapdroid_collector_listens_on_loopback_by_default(
    tmp_path: Path, transport: str
) -> None:
    collector = PcapdroidCollector(0, tmp_path, transport=transport).start()
    try:
        mine = [s for s in listening({os.getpid()}) if s[2] == collector.port]
    finally:
        collector.stop()
    assert mine and _not_loopback(mine) == [] and collector.address[0] == "127.0.0.1"
