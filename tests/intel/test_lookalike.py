"""Lookalike host names (auditor.intel.lookalike): what is one, its key and how it is shown,
checked against independent tables (the UTS #46 table of the ``idna`` package, Python's
Unicode database, the ``idna`` encoder), then through the knowledge base and a whole
``auditor import`` + ``auditor analyze`` run on real HAR and mitmproxy flow files and on
packets written by scapy (TLS SNI, DNS)."""

from __future__ import annotations

import copy
import json
import subprocess
import unicodedata
from pathlib import Path
from typing import Any

import idna
import pandas as pd
import pytest

from auditor import columns
from auditor.analysis.escape import html_text, md_text
from auditor.intel.kb import KnowledgeBase
from auditor.intel.lookalike import (
    LATIN_DOUBLES,
    MARKER,
    Trick,
    inspect_host,
    key_of_shown,
    name_warnings,
    script_of,
    shown_url,
)
from auditor.intel.schema import normalise_host, safe_text

DATA = Path(__file__).resolve().parents[1] / "data"
IMEI = "490154203237518"
ZWSP = "\u200b"


def _tricks(name: str) -> set[Trick]:
    h = inspect_host(name)
    assert h is not None, name
    return {t for t, _ in h.tricks}


# --- invisible characters --------------------------------------------------------------------


def _uts46_rows(status: str) -> list[tuple[int, int, str]]:
    """Ranges (first, last, mapping) of one status in the idna package's UTS #46 table."""
    from idna import uts46data

    starts, statuses = uts46data.uts46_starts, uts46data.uts46_statuses
    out = []
    for i, first in enumerate(starts):
        if chr(statuses[i]) != status:
            continue
        last = starts[i + 1] - 1 if i + 1 < len(starts) else 0x10FFFF
        out.append((first, last, uts46data.uts46_replacements[i] or ""))
    return out


def test_no_character_uts46_ignores_is_dropped_from_a_name() -> None:
    """Every code point UTS #46 maps to nothing (its "I" rows: soft hyphen, zero-width
    characters, variation selectors, tag characters...) inside a label gives another key than
    the plain name, or no name at all: before, all of them gave tracking.miui.com."""
    ignored = [cp for first, last, _ in _uts46_rows("I") for cp in range(first, last + 1)]
    assert len(ignored) > 250 and 0x200B in ignored and 0xAD in ignored
    folded = []
    for cp in ignored:
        key = normalise_host(f"tracking.miui{chr(cp)}.com")
        if key == "tracking.miui.com":
            folded.append(f"U+{cp:04X}")
        elif key is not None:
            assert Trick.INVISIBLE in _tricks(f"tracking.miui{chr(cp)}.com") or Trick.VARIANT in (
                _tricks(f"tracking.miui{chr(cp)}.com")
            )
    assert folded == []


@pytest.mark.parametrize(
    "cp", [0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0x061C, 0x00AD, 0x034F, 0xFE0F, 0x180B]
)
def test_an_invisible_character_is_kept_named_and_shown(cp: int) -> None:
    raw = f"tracking.miui{chr(cp)}.com"
    h = inspect_host(raw)
    assert h is not None and h.suspicious
    assert h.key != "tracking.miui.com" and h.key.isascii()
    # the key is the Punycode of the label as written, as the idna package's own Punycode
    # codec makes it (no UTS #46 mapping on the way)
    label = "miui" + chr(cp)
    assert h.key == f"tracking.xn--{label.encode('punycode').decode()}.com"
    assert h.shown.startswith(f"{MARKER} tracking.xn--") and f"U+{cp:04X}" in h.shown
    assert h.looks_like == "tracking.miui.com"
    assert any(t in {Trick.INVISIBLE} for t, _ in h.tricks)


def test_every_format_character_is_caught() -> None:
    """Python's Unicode database, category Cf: none disappears from a name."""
    cf = [cp for cp in range(0x110000) if unicodedata.category(chr(cp)) == "Cf"]
    assert len(cf) > 150
    for cp in cf:
        assert normalise_host(f"a{chr(cp)}b.example") != "ab.example", hex(cp)


# --- variants: only RFC 5895's mapping folds ---------------------------------------------------


def test_only_width_forms_and_case_fold_into_a_plain_letter() -> None:
    """Of every code point UTS #46 maps to one ASCII letter, only the upper-case letter and
    the fullwidth forms (RFC 5895's mapping) give xiaomi.com; mathematical, circled,
    modifier and other compatibility letters give a key of their own, marked."""
    folded: list[str] = []
    for first, last, mapping in _uts46_rows("M"):
        if mapping not in ("x",):
            continue
        for cp in range(first, last + 1):
            c = chr(cp)
            key = normalise_host(f"{c}iaomi.com")
            if key == "xiaomi.com":
                folded.append(unicodedata.name(c))
            elif key is not None:
                assert Trick.VARIANT in _tricks(f"{c}iaomi.com"), unicodedata.name(c)
    assert sorted(folded) == [
        "FULLWIDTH LATIN CAPITAL LETTER X",
        "FULLWIDTH LATIN SMALL LETTER X",
        "LATIN CAPITAL LETTER X",
    ]


@pytest.mark.parametrize(
    "raw",
    [
        "tracking\uff0emiui\uff0ecom",  # fullwidth full stop
        "tracking\u3002miui\u3002com",  # ideographic full stop
        "tracking\uff61miui\uff61com",  # halfwidth ideographic full stop
        "ＴＲＡＣＫＩＮＧ．miui．com",
        "TRACKING.MIUI.COM",
        "tracking.miui.com.",
        "tracking.miui.com\u3002",
        " tracking.miui.com:443 ",
    ],
)
def test_dots_width_case_and_the_root_are_the_plain_name(raw: str) -> None:
    """RFC 3490 and RFC 5895 make these dots label separators and these forms the letters
    they are wide forms of: the name is tracking.miui.com, and nothing is hidden by saying
    so (held, not a lookalike)."""
    h = inspect_host(raw)
    assert h is not None and h.key == "tracking.miui.com" and not h.suspicious


@pytest.mark.parametrize(
    "raw", ["tracking.miui.com..", "tracking..miui.com", ".", "tracking.miui.com:٤٤٣", "a b.com"]
)
def test_empty_labels_foreign_digits_in_ports_and_spaces_are_no_names(raw: str) -> None:
    assert normalise_host(raw) is None


def test_compatibility_letters_are_variants() -> None:
    for raw in ("ﬁ.example", "𝐱iaomi.com", "ⓧiaomi.com", "x\u00b9.com"):
        h = inspect_host(raw)
        assert h is not None and Trick.VARIANT in _tricks(raw), raw
        assert h.key != idna.encode(raw, uts46=True).decode(), raw


# --- scripts ------------------------------------------------------------------------------------


def test_cyrillic_x_in_xiaomi() -> None:
    h = inspect_host("хiaomi.com")
    assert h is not None
    assert h.key == idna.encode("хiaomi.com", uts46=True).decode() == "xn--iaomi-pze.com"
    assert h.tricks == ((Trick.MIXED_SCRIPTS, "mixed scripts: Latin+Cyrillic"),)
    assert h.shown == "⚠ xn--iaomi-pze.com (mixed scripts: Latin+Cyrillic)"
    assert h.looks_like == "xiaomi.com"
    # upper case, and the A-label DNS and TLS carry, are the same lookalike
    for other in ("ХIAOMI.COM", "XN--IAOMI-PZE.COM", "xn--iaomi-pze.com."):
        assert inspect_host(other) == h, other


@pytest.mark.parametrize("double", sorted(LATIN_DOUBLES))
def test_each_double_in_a_latin_name_is_mixed(double: str) -> None:
    """Every Cyrillic and Greek double of the table, put for its Latin letter in a Latin
    label, is caught (and the table holds what its provenance says)."""
    name = unicodedata.name(double)
    assert name.startswith(("CYRILLIC ", "GREEK ")) and double == double.lower()
    target = LATIN_DOUBLES[double]
    assert target.isascii() and target.isalnum()
    raw = f"zz{double}zz.com"
    h = inspect_host(raw)
    assert h is not None and Trick.MIXED_SCRIPTS in _tricks(raw)
    assert h.looks_like == f"zz{target}zz.com"
    assert h.key == idna.encode(raw, uts46=True).decode()


@pytest.mark.parametrize(
    ("raw", "flagged"),
    [
        ("аррӏе.com", True),  # all Cyrillic, each letter with a Latin double
        ("сосо.com", True),
        ("аррӏе.ru", False),  # Cyrillic is expected under .ru
        ("аррӏе.xn--p1ai", False),  # and under .рф
        ("пример.com", False),  # п has no Latin double
        ("αβγ.com", False),
    ],
)
def test_whole_script_lookalikes(raw: str, flagged: bool) -> None:
    assert (Trick.WHOLE_SCRIPT in _tricks(raw)) is flagged


@pytest.mark.parametrize(
    "raw",
    [
        "例子.中国",
        "bücher.de",
        "straße.de",
        "пример.рф",
        "ελληνικά.gr",
        "日本語のテスト.jp",
        "한국어.kr",
        "العربية.com",
        "नमस्ते.in",
        "ｶﾀｶﾅ.jp",
        "xn--bcher-kva.de",
        "xn--fiqs8s",
    ],
)
def test_correct_names_in_one_script_keep_working(raw: str) -> None:
    h = inspect_host(raw)
    assert h is not None and not h.suspicious, (raw, h)
    assert h.key == idna.encode(raw, uts46=True).decode()
    assert h.shown == h.key


def test_mixed_script_pairs_follow_uts39_highly_restrictive() -> None:
    assert Trick.MIXED_SCRIPTS in _tricks("аα.com")  # Cyrillic + Greek
    assert Trick.MIXED_SCRIPTS in _tricks("trackୃiୂng.com")  # Latin + Oriya marks
    assert not _tricks("abc漢字ひらがな.jp")  # Latin + Han + Hiragana: allowed
    assert script_of("х") == "Cyrillic" and script_of("x") == "Latin" and script_of("-") is None


# --- A-labels ------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["xn--zz.com", "xn--abc.com"])
def test_an_invalid_a_label_is_marked_and_matched_as_itself(raw: str) -> None:
    h = inspect_host(raw)
    assert h is not None and h.key == raw.lower()
    assert Trick.BAD_A_LABEL in _tricks(raw)


def test_a_valid_a_label_in_capitals_is_the_plain_name() -> None:
    h = inspect_host("xn--bcher-KVA.de")  # bücher.de, the A-label written in capitals
    assert h is not None and h.key == "xn--bcher-kva.de" and not h.suspicious


def test_a_shown_form_reads_back_only_when_it_is_exact() -> None:
    for raw in ("хiaomi.com", f"tracking.miui{ZWSP}.com", "аррӏе.com", "ﬁ.example", "xn--zz.com"):
        h = inspect_host(raw)
        assert h is not None and h.suspicious
        assert key_of_shown(h.shown) == h.key
        again = inspect_host(h.key)
        assert again is not None and again.shown == h.shown
    assert key_of_shown("⚠ tracking.miui.com (invisible U+200B)") is None
    assert key_of_shown("⚠ xn--iaomi-pze.com") is None
    assert key_of_shown("xn--iaomi-pze.com") is None


def test_warnings_are_one_per_name_and_say_what_it_imitates() -> None:
    ws = name_warnings(["хiaomi.com", "xn--iaomi-pze.com", "tracking.miui.com", None, ""])
    assert ws == [
        "look-alike host name ⚠ xn--iaomi-pze.com (mixed scripts: Latin+Cyrillic), written to "
        "pass for xiaomi.com: shown by its A-label and matched to the knowledge base only as "
        "itself"
    ]


def test_urls_show_a_lookalike_host_by_its_shown_form() -> None:
    assert shown_url("https://хiaomi.com:8443/a?b=c") == (
        "https://⚠ xn--iaomi-pze.com (mixed scripts: Latin+Cyrillic):8443/a?b=c"
    )
    assert shown_url("https://bücher.de/x") == "https://bücher.de/x"
    assert shown_url(None) is None


def test_safe_text_names_each_code_point() -> None:
    """The escape of an unprintable character was its low byte (U+200B showed as \\x0b)."""
    assert safe_text(f"a{ZWSP}b\x07") == "a\\u200bb\\x07"


# --- the knowledge base ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return KnowledgeBase.default()


def test_lookalikes_of_a_xiaomi_host_are_not_xiaomi(kb: KnowledgeBase) -> None:
    assert kb.lookup_host("tracking.miui.com").organisation == "xiaomi"
    for raw in (f"tracking.miui{ZWSP}.com", "tracking.m\u0456ui.com", "tracking.miui.c\u043em"):
        a = kb.lookup_host(raw)
        assert a.organisation is None, raw
        assert a.note and "look-alike host name ⚠" in a.note


def test_annotate_shows_lookalikes_and_lookup_reads_them_back(kb: KnowledgeBase) -> None:
    names = ["tracking.miui.com", f"tracking.miui{ZWSP}.com", "хiaomi.com", "bücher.de"]
    out = kb.annotate(pd.DataFrame({columns.NAME: names}))
    assert out[columns.NAME].tolist() == [
        "tracking.miui.com",
        "⚠ tracking.xn--miui-y76a.com (invisible U+200B)",
        "⚠ xn--iaomi-pze.com (mixed scripts: Latin+Cyrillic)",
        "bücher.de",
    ]
    assert out[columns.ORGANISATION].tolist()[:3] == ["xiaomi", None, None]
    again = kb.lookup_host(out[columns.NAME][1])
    assert again.host == "tracking.xn--miui-y76a.com" and again.organisation is None


def test_intel_on_the_lookalike_itself_matches(tmp_path: Path) -> None:
    """An intel file that lists the lookalike (by its A-label or as written) matches it, and
    only it: the lookalike is matched as itself."""
    blocklist = tmp_path / "lookalikes.hosts"
    blocklist.write_text("0.0.0.0 xn--iaomi-pze.com\n0.0.0.0 tracking.miui\u200b.com\n")
    kb = KnowledgeBase.load(extra=[f"phish={blocklist}"], datasets=False)
    assert kb.lookup_host("хiaomi.com").labels == ("phish",)
    assert kb.lookup_host("xn--iaomi-pze.com").labels == ("phish",)
    assert kb.lookup_host(f"tracking.miui{ZWSP}.com").labels == ("phish",)
    assert kb.lookup_host("xiaomi.com").labels == ()
    assert kb.lookup_host("tracking.miui.com").labels == ()


# --- a whole run: auditor import + analyze on real HAR and flow files ---------------------


def _har(path: Path) -> None:
    """mitmproxy's savehar output (tests/data/har/websocket.har), its hosts made lookalikes and
    the IMEI put in each query."""
    doc = json.loads((DATA / "har" / "websocket.har").read_text())
    entry = doc["log"]["entries"][1]
    entries = []
    for host in (f"tracking.miui{ZWSP}.com", "хiaomi.com", "tracking.miui.com"):
        e = copy.deepcopy(entry)
        e["request"]["url"] = f"https://{host}/v3/channel_123?imei={IMEI}"
        for h in e["request"]["headers"]:
            if h["name"].lower() == "host":
                h["value"] = host
        entries.append(e)
    doc["log"]["entries"] = entries
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")


def _flows(path: Path) -> None:
    """mitmproxy's dumpfile-7.mitm (2 HTTP flows), read and written by mitmproxy 12 itself,
    sent to the A-label of a Cyrillic lookalike and to a name with a word joiner."""
    from mitmproxy import io

    with (DATA / "mitm" / "dumpfile-7.mitm").open("rb") as f:
        flows = list(io.FlowReader(f).stream())
    with path.open("wb") as f:
        w = io.FlowWriter(f)
        for flow, host in zip(flows, ("api.xn--iaomi-pze.com", "api.miui\u2060.com"), strict=True):
            req = flow.request  # type: ignore[attr-defined]
            req.host = host
            # as a client sent it: the host setter writes the HTTP/2 :authority through
            # Python's IDNA 2003 codec, which drops the word joiner
            req.data.authority = host.encode()
            req.headers["host"] = host
            req.path = f"/submit?imei={IMEI}"
            w.add(flow)


PCAP_SNIS = ("sdk.xn--iaomi-pze.com", "data.miui\u200d.com")


def _pcap(path: Path) -> None:
    """Packets written by scapy (not auditor's own writer): a DNS answer for an A-label that
    decodes to a lookalike, and TLS ClientHellos whose SNI is that A-label or a name with a
    zero-width joiner (UTF-8, as a hostile client may send it)."""
    from scapy.layers.dns import DNS, DNSQR, DNSRR
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Ether
    from scapy.layers.tls.extensions import ServerName, TLS_Ext_ServerName
    from scapy.layers.tls.handshake import TLSClientHello
    from scapy.layers.tls.record import TLS
    from scapy.packet import Raw
    from scapy.utils import wrpcap

    phone, resolver, server = "10.0.0.2", "10.0.0.1", "203.0.113.7"
    qd = DNSQR(qname="sdk.xn--iaomi-pze.com")
    packets = [
        Ether() / IP(src=phone, dst=resolver) / UDP(sport=5353, dport=53) / DNS(id=1, qd=qd),
        Ether()
        / IP(src=resolver, dst=phone)
        / UDP(sport=53, dport=5353)
        / DNS(id=1, qr=1, qd=qd, an=DNSRR(rrname="sdk.xn--iaomi-pze.com", rdata=server)),
    ]
    for port, sni in enumerate(PCAP_SNIS, start=40001):
        hello = TLSClientHello(
            ext=[TLS_Ext_ServerName(servernames=[ServerName(servername=sni.encode())])]
        )
        out = Ether() / IP(src=phone, dst=server)
        back = Ether() / IP(src=server, dst=phone)
        packets += [
            out / TCP(sport=port, dport=443, flags="S", seq=100),
            back / TCP(sport=443, dport=port, flags="SA", seq=500, ack=101),
            out / TCP(sport=port, dport=443, flags="A", seq=101, ack=501),
            out
            / TCP(sport=port, dport=443, flags="PA", seq=101, ack=501)
            / Raw(bytes(TLS(msg=[hello]))),
        ]
    for i, p in enumerate(packets):
        p.time = 1_700_000_000 + i / 100
    wrpcap(str(path), packets)


def test_the_packets_hold_the_names_as_written(report: Path) -> None:
    """tshark, an independent reader, finds the SNIs as they were written (it shows the bytes
    of the zero-width joiner as U+FFFD, and gives the SNI's length in bytes)."""
    import shutil

    if not shutil.which("tshark"):
        pytest.skip("tshark is not installed")
    out = subprocess.run(
        ["tshark", "-r", str(report.parent / "phone.pcap"), "-Y", "tls.handshake", "-T",
         "fields", "-e", "tls.handshake.extensions_server_name_len", "-e",
         "tls.handshake.extensions_server_name"],
        capture_output=True, timeout=60, check=True, text=True,
    ).stdout  # fmt: skip
    rows = [line.split("\t") for line in out.splitlines()]
    assert rows[0] == [str(len(PCAP_SNIS[0])), PCAP_SNIS[0]]
    assert rows[1][0] == str(len(PCAP_SNIS[1].encode()))
    assert rows[1][1].replace("\ufffd", "") == "data.miui.com"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``auditor import`` then ``auditor analyze``, through the CLI (in this process: two
    more interpreters would double the time)."""
    from click.testing import CliRunner

    from auditor.cli import main

    tmp = tmp_path_factory.mktemp("lookalike")
    _har(tmp / "phone.har")
    _flows(tmp / "phone.mitm")
    _pcap(tmp / "phone.pcap")
    files = [str(tmp / f"phone.{x}") for x in ("har", "mitm", "pcap")]
    caps = tmp / "caps"
    res = CliRunner().invoke(
        main, ["import", *files, "--out", str(caps), "--identifier", f"imei={IMEI}"]
    )
    assert res.exit_code == 0, res.output
    (session,) = caps.iterdir()
    res = CliRunner().invoke(main, ["analyze", str(session), "--out", str(tmp / "rep")])
    assert res.exit_code == 0, res.output
    return tmp / "rep"


def _puny(label: str) -> str:
    return "xn--" + label.encode("punycode").decode()


LOOKALIKES = {
    f"⚠ tracking.{_puny('miui' + ZWSP)}.com (invisible U+200B)",
    f"⚠ {idna.encode('хiaomi.com').decode()} (mixed scripts: Latin+Cyrillic)",
    "⚠ api.xn--iaomi-pze.com (mixed scripts: Latin+Cyrillic)",
    f"⚠ api.{_puny('miui' + chr(0x2060))}.com (invisible U+2060)",
    "⚠ sdk.xn--iaomi-pze.com (mixed scripts: Latin+Cyrillic)",
    f"⚠ data.{_puny('miui' + chr(0x200D))}.com (invisible U+200D)",
}


def test_no_lookalike_is_attributed_to_xiaomi(report: Path) -> None:
    doc: dict[str, Any] = json.loads((report / "findings.json").read_text())
    by_host = {e["host"]: e for e in doc["endpoints"]}
    assert LOOKALIKES <= set(by_host)
    for host in LOOKALIKES:
        assert by_host[host]["organisation_id"] is None, host
    assert by_host["tracking.miui.com"]["organisation_id"] == "xiaomi"  # the control
    xiaomi = [f for f in doc["findings"] if f.get("organisation") and "Xiaomi" in f["organisation"]]
    assert xiaomi and all(f["host"] == "tracking.miui.com" for f in xiaomi)
    sent = {f["host"] for f in doc["findings"] if f["rule"] == "identifier-sent"}
    assert {h for h in LOOKALIKES if "sdk." not in h and "data." not in h} <= sent


def test_every_report_shows_the_marker_and_never_the_lookalike(report: Path) -> None:
    html = (report / "report.html").read_text()
    md = (report / "summary.md").read_text()
    raw_json = (report / "findings.json").read_text()
    for text in (html, md, raw_json):
        assert "хiaomi" not in text and "miui\u200b" not in text and "miui\u2060" not in text
        assert "miui\u200d" not in text
        assert "\\u0445iaomi" not in text  # nor the Cyrillic letter as a JSON escape
    assert "6 host names were written to pass for another" in md
    assert "6</span> host names were written to pass for another" in html
    for host in LOOKALIKES:
        assert html_text(host) in html, host
        assert md_text(host) in md, host
    doc = json.loads(raw_json)
    shown = {f["host"] for f in doc["findings"]} | {e["host"] for e in doc["endpoints"]}
    assert LOOKALIKES <= shown
    # the URL of a cited flow shows its host as the marked A-label
    assert "https://⚠ xn--iaomi-pze.com (mixed scripts: Latin+Cyrillic)/v3/" in html


def test_the_lookalikes_are_counted_warnings_of_findings_json(report: Path) -> None:
    doc = json.loads((report / "findings.json").read_text())
    lines = [w for w in doc["warnings"] if "look-alike host name" in w]
    assert len(lines) == len(LOOKALIKES)


def test_the_flow_tables_show_the_marker_too(report: Path) -> None:
    """flows.csv and flows.parquet: the name, host, SNI and URL columns carry the shown form
    (the lookalike itself was in their host and url columns)."""
    import pyarrow.parquet as pq

    csv_text = (report / "flows.csv").read_text()
    table = pq.read_table(report / "flows.parquet").to_pydict()
    cells = " ".join(str(v) for col in table.values() for v in col)
    for text in (csv_text, cells):
        assert "хiaomi" not in text and "miui\u200b" not in text and "miui\u2060" not in text
    assert "xn--iaomi-pze.com" in csv_text


def test_a_large_table_shows_the_marker_in_every_row() -> None:
    """From 2,000 rows the engine attributes each distinct (name, address) once and spreads
    the result: the shown form must reach every row there as well."""
    import pandas as pd

    from auditor import columns
    from auditor.analysis.engine import DISTINCT_MIN_ROWS, annotate_distinct
    from auditor.intel.kb import KnowledgeBase

    n = DISTINCT_MIN_ROWS + 500
    names = ["хiaomi.com" if i % 2 else "tracking.miui.com" for i in range(n)]
    flows = pd.DataFrame(
        {
            columns.NAME: names,
            columns.SERVER_IP: ["203.0.113.9"] * n,
            columns.URL: [f"https://{h}/v3/x" for h in names],
        }
    )
    out = annotate_distinct(KnowledgeBase.load(), flows)
    odd = out.iloc[1::2]
    assert odd[columns.NAME].str.startswith("\u26a0 xn--iaomi-pze.com").all()
    assert odd[columns.URL].str.startswith("https://\u26a0 xn--iaomi-pze.com").all()
    assert (out.iloc[::2][columns.NAME] == "tracking.miui.com").all()
    assert not out[columns.NAME].str.contains("хiaomi").any()
