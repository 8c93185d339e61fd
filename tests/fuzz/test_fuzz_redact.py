"""Redaction's decoder (``auditor.decoders.text_views``) and the redactor and check built on it.

- ``text_views`` on any text (random, and real URLs and headers of the HAR samples, mutated)
  raises nothing, undoes at most ``MAX_TEXT_LAYERS`` escape layers, never makes an escape
  layer longer than the one it came from, and points every decoded character back inside the
  string;
- a device's identifiers, spelled as people and SDKs write them and wrapped in random escape
  layers within the bound, among random and real text: the check sees them in the input, and
  finds nothing in what the redactor made of it (so it can never refuse a report for a value
  the redactor could not see);
- a whole redacted report with such strings in its flow table is written, never refused.
"""

from __future__ import annotations

import base64
import json
from functools import cache
from pathlib import Path
from urllib.parse import quote

import pandas as pd
from hypothesis import example
from hypothesis import strategies as st

from auditor import columns as C
from auditor.analysis.model import Analysis
from auditor.analysis.redact import Original, Redactor, write_redacted
from auditor.decoders import MAX_TEXT_LAYERS, text_views
from tests.fuzz.helpers import fuzz, mutated_text, sample_paths

IMEI = "352099001761481"
MAC = "00:12:34:56:78:9a"
EMAIL = "jane.reporter@example.org"
PHONE = "+33612345678"

# spellings of the identifiers met in SDKs' requests (#15), each still the value
SPELLINGS = [
    IMEI, "35-209900-176148-1", "35 209900 176148 1", "35+209900+176148+1", IMEI[:14],
    MAC, "0012.3456.789a", "00123456789A", "00-12-34-56-78-9A", "78187493530",
    EMAIL, "Jane.Reporter@Example.ORG", "JANE.REPORTER@EXAMPLE.ORG", "jane.reporter+a@example.org",
    PHONE, "+33 6 12 34 56 78", "06 12 34 56 78", "(06) 12-34-56-78", "0033612345678",
    "+33 (0)6 12 34 56 78",
]  # fmt: skip


def _layer(kind: str, text: str) -> str:
    if kind == "url":
        return quote(text, safe="")
    if kind == "url-all":
        return "".join(f"%{b:02x}" for b in text.encode())
    if kind == "json":
        return "".join(f"\\u{ord(c):04x}" if c in "@.:-+ " else c for c in text)
    if kind == "html":
        return "".join(f"&#{ord(c)};" if c in "@.:-+ %&" else c for c in text)
    if kind == "html-hex":
        return text.replace("@", "&#x40;").replace("%", "&#x25;").replace("&#x", "&#X", 1)
    if kind == "slash":
        return text.replace("/", "\\/").replace("@", "\\@").replace("%", "\\%")
    raise AssertionError(kind)


_LAYERS = ["url", "url-all", "json", "html", "html-hex", "slash"]


def _binary(kind: str, text: str) -> str:
    data = text.encode()
    if kind == "base64":
        return base64.b64encode(data).decode()
    if kind == "base64url":
        return base64.urlsafe_b64encode(b"\xfb" + data).decode().rstrip("=")
    if kind == "hex":
        return data.hex().upper()
    return text


@cache
def _seeds() -> list[str]:
    """Real URLs and header values from the HAR samples (other tools' exports)."""
    out: list[str] = []
    for path in sample_paths("imports/samples/*.har"):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            for entry in doc["log"]["entries"]:
                req = entry["request"]
                out.append(req["url"])
                out += [h["value"] for h in req.get("headers", [])][:6]
        except (ValueError, KeyError, TypeError):
            continue
    return out or ["https://example.org/?q=1"]


@cache
def _redactor() -> Redactor:
    return Redactor(
        [
            Original("imei", IMEI, "device"),
            Original("wifi_mac", MAC, "device"),
            Original("account", EMAIL, "searched"),
            Original("phone_number", PHONE, "searched"),
        ]
    )


@st.composite
def _planted(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(SPELLINGS))
    text = _binary(draw(st.sampled_from(["", "", "base64", "base64url", "hex"])), text)
    for kind in draw(st.lists(st.sampled_from(_LAYERS), max_size=MAX_TEXT_LAYERS)):
        text = _layer(kind, text)
    return text


_filler = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["&", "=", "?id=", "/", " ", "%", "\\", "&#", "0", "-", ".", "+", "Zm9v"]),
    st.deferred(lambda: mutated_text(_seeds(), max_ops=3)),
)


@example("\uff01")  # a fullwidth character is as long as what it reads as
@example("%" * 20 + "2540")
@example("\\u00" + "&#37;" * 30)
@fuzz(st.one_of(st.text(max_size=400), _filler), share=0.3)
def test_views_never_raise_and_point_inside(text: str) -> None:
    escapes = 0
    previous = len(text)
    for view in text_views(text):
        binary = view.layers[-1:] in (("base64",), ("hex",))
        if not binary and view.layers:
            escapes += 1
            assert len(view.text) <= previous  # no escape is shorter than what it stands for
            previous = len(view.text)
        last = 0
        for i in range(len(view.text)):
            start, end = view.origin(i, i + 1)
            assert 0 <= start < end <= len(text)
            if not binary:
                assert start >= last
                last = start
    assert escapes <= MAX_TEXT_LAYERS


@example(["352099001761481", "\ud800"])  # a lone surrogate: the automaton raised
@example(["x", "jane.reporter%2540example.org"])
@example(["\\u0025", "40", "%2540"])
@fuzz(st.lists(st.one_of(_planted(), _filler), max_size=6), share=0.68)
def test_the_check_finds_nothing_in_what_the_redactor_made(parts: list[str]) -> None:
    red = _redactor()
    text = "&".join(parts)
    out = red.redact_text(text)
    assert red.find(out) == [], (text, out)
    # a second pass only takes the placeholders' marks for captured ones
    assert red.redact_text(out) == out.replace("‹", "\\u2039").replace("›", "\\u203a")
    if any(red.find(p) for p in parts):
        assert red.find(text), text  # the check sees an original in the input


@fuzz(st.lists(st.one_of(_planted(), _filler), min_size=1, max_size=4), share=0.02)
def test_a_report_with_such_strings_is_never_refused(parts: list[str]) -> None:
    import tempfile

    urls = [f"https://t.example/?k={p}" for p in parts]
    t0 = pd.Timestamp("2026-01-01T00:00:00Z")
    flows = pd.DataFrame(
        [
            {C.FLOW_ID: f"f{i}", C.RECORD_TYPE: "http", C.NAME: "t.example", C.URL: u,
             C.PATH: u[17:], C.START: t0, C.BYTES_UP: i}
            for i, u in enumerate(urls)
        ]
    )  # fmt: skip
    doc = {
        "device": {"identifiers": [{"name": "imei", "value": IMEI}, {"name": "mac", "value": MAC}]},
        "findings": [],
        "warnings": parts,
        "_highlight": {"account": [EMAIL], "phone_number": [PHONE]},
    }
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pub"
        write_redacted(Analysis(doc, flows, [], warnings=list(parts)), out, ["json", "csv", "md"])
        assert (out / "flows.parquet").is_file()
