"""Findings documents for the report's tests, made by analysing real captures nobody here
made (the public Android captures in ../shared/captures and the browser/tool HAR files in
tests/imports/samples, see their PROVENANCE.md), plus a hostile one: long unbroken hosts and
URLs, markup, bidi controls, huge numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from auditor import columns as C
from auditor.analysis.engine import analyze
from auditor.analysis.model import Analysis
from auditor.imports.session import import_files

from ..conftest import SHARED_CAPTURES

HARS = Path(__file__).resolve().parents[1] / "imports" / "samples"
# chosen for what they hold: a CN recipient, unknown operators hosted by named networks and
# packet-only flows (quicmitm); many hosts and medium-confidence data-set names
# (apksherlock, chrome); findings with evidence and an undecrypted flow (httptoolkit); three
# entries the importer skips, each for its own reason (malformed_3_of_10)
REAL = {
    "quicmitm_capture": SHARED_CAPTURES / "quicmitm_capture.pcap",
    "apksherlock_dynamic_capture": SHARED_CAPTURES / "apksherlock_dynamic_capture.pcap",
    "httptoolkit": HARS / "httptoolkit.har",
    "chrome": HARS / "chrome.har",
    "malformed_3_of_10": HARS / "malformed_3_of_10.har",
}


def import_session(path: Path, root: Path) -> Path:
    """``path`` imported as a session under ``root/captures``; the session's folder."""
    return Path(import_files([path], root / "captures").session)


def analyse(path: Path, root: Path, identifiers: dict[str, str] | None = None) -> Analysis:
    return analyze([import_session(path, root)], identifiers=identifiers)


def evil_strings(leak: str) -> list[str]:
    """Markup, script, a CSV formula and a bidi override: what a capture may hold, each
    asking for ``leak`` if it ever runs or loads."""
    return [
        f"<script>fetch('{leak}/script')</script>",
        f'"><img src="{leak}/img" onerror="document.title=\'PWNED\'">',
        f"<iframe src='{leak}/iframe'></iframe>",
        f"<link rel=stylesheet href='{leak}/css'>",
        "javascript:alert(1)",
        '=HYPERLINK("http://x")',
        "evil\u202egnp.exe",
    ]


def hostile(leak: str = "http://127.0.0.1:9") -> tuple[dict[str, Any], pd.DataFrame]:
    """A findings document whose every captured string is hostile or too long to fit."""
    long_host = "a" * 180 + ".telemetry-" + "b" * 150 + ".example.com"
    long_url = f"https://{long_host}/upload?" + "&".join(f"k{i}=" + "9" * 40 for i in range(12))
    evil = evil_strings(leak)
    org = evil[2] + " Holdings " + "Z" * 120
    flows = pd.DataFrame(
        [
            {
                C.FLOW_ID: f"f{i}/{'x' * 90}#{i}",
                C.RECORD_TYPE: "http" if i % 3 else "tls_failed",
                C.START: pd.Timestamp("2026-01-01T00:00:00Z") + pd.Timedelta(seconds=7 * i),
                C.ORGANISATION_NAME: org if i % 2 else None,
                C.METHOD: "POST",
                C.URL: long_url if i % 2 else f"{leak}/u?x={e}",
                C.NAME: long_host,
                C.BYTES_UP: 10**9 + i,
                C.BYTES_DOWN: 10**8,
            }
            for i, e in enumerate(evil)
        ]
    )
    ids = list(flows[C.FLOW_ID])
    finding = {
        "id": "identifier-sent-" + "q" * 10,
        "rule": "identifier-sent",
        "severity": "critical",
        "title": evil[0] + " imei sent to " + long_host,
        "host": long_host,
        "organisation": org,
        "country": "CN",
        "identifiers": ["imei"],
        "encodings": [evil[3], "gzip > json > " + "base64 > " * 20 + "plain"],
        "flow_ids": ids,
        "citations": [evil[4]],
        "description": evil[5] + " " + long_url,
        "evidence": [
            {
                "flow_id": ids[1],
                "location": "body",
                "detail": "$." + ".".join(["deviceInfo"] * 30),
                "encoding": "plain",
                "identifier": "imei",
                "excerpt": evil[0] + " 864132058957347 " + "Q" * 500,
            }
        ],
        "data": {"hosts": [long_host] * 3, "bytes_up": 10**12},
    }
    unknown = {
        **finding,
        "id": "proxy-bypass-" + "r" * 10,
        "rule": "proxy-bypass",
        "severity": "medium",
        "title": "1 connection(s) from " + evil[6] + " bypassed the proxy (" + long_host + ")",
        "organisation": None,
        "country": None,
        "identifiers": [],
        "evidence": [],
        "flow_ids": ids[:1],
        "data": {"dns_queries": [long_host] * 30, "recipients": []},
    }
    hosting = [{"label": evil[1] + " (AS" + "9" * 30 + ", SG)", "flows": 1, "country": "SG"}]
    endpoint = {
        "host": long_host,
        "ip": "1.2.3.4",
        "organisation": org,
        "parent": evil[3],
        "country": "CN",
        "server_country": "SG",
        "basis": "certificate",
        "confidence": "low",
        "evidence": [{"basis": "certificate", "name": org, "detail": long_host}],
        "conflicts": [{"basis": "dataset", "name": evil[0], "matched": long_host}],
        "categories": [evil[0]],
        "state_control": [],
        "legal_exposure": [
            {
                "country": "CN",
                "country_name": "China",
                "via": "headquarters",
                "organisation": org,
                "basis": "National Intelligence Law art. 7: applies to organisations "
                "headquartered in China (CN)",
            }
        ],
        "hosted_by": hosting[0]["label"],
        "hosting": hosting,
        "flows": 4,
        "bytes_up": 4 * 10**9,
        "bytes_down": 20,
        "first_seen": "2026-01-01T00:00:00Z",
        "last_seen": "2026-01-01T00:00:42Z",
        "apps": [evil[6], "com." + "long" * 40],
        "sources": [{"title": evil[0]}],
    }
    unknown_endpoint = {
        **endpoint,
        "organisation": None,
        "country": None,
        "basis": "none",
        "confidence": "none",
        "evidence": [],
        "conflicts": [],
        "legal_exposure": [],
        "flows": 3,
    }
    doc = {
        "generated_at": "2026-01-01T00:00:00Z",
        "session": {"id": evil[0], "ids": [evil[0]]},
        "device": {"manufacturer": evil[1], "model": evil[2]},
        "identifiers_searched": ["imei"],
        "findings": [finding, unknown],
        "endpoints": [endpoint, unknown_endpoint],
        "verdicts": [
            {
                "organisation": org,
                "country": "CN",
                "state_control": [],
                "legal_exposure": endpoint["legal_exposure"],
                "identifiers": ["imei"],
                "flows": 4,
                "bytes_up": 4 * 10**9,
                "worst": "critical",
            },
            {
                "organisation": "(unknown operator)",
                "country": None,
                "state_control": [],
                "legal_exposure": [],
                "identifiers": [],
                "flows": 3,
                "bytes_up": 3 * 10**9,
                "worst": "medium",
            },
        ],
        "claims": [
            {
                "claim": evil[0],
                "verdict": "contradicted",
                "reason": evil[1],
                "flow_ids": ids[:1],
                "coverage": {},
            }
        ],
        "coverage": {
            "connections": 7,
            "not_decrypted": 3,
            "not_decrypted_share": 0.429,
            "bypassed_proxy": 1,
            "seen_only_in_packets": 1,
            "packet_capture": True,
            "sessions_incomplete": [
                {"session": evil[0], "status": "incomplete", "stopped_by": evil[1]}
            ],
            "skipped": [
                {
                    "session": evil[0],
                    "file": "original/" + long_host + ".har",
                    "kind": "har-entry",
                    "reason": evil[1],
                    "count": 123456789,
                    "examples": [long_url, evil[0]],
                }
            ],
            "skipped_total": 123456789,
        },
        "method": {"scenario": {"name": evil[0]}},
        "warnings": [evil[1], long_url],
        "_bytes_by_org": [(org, 4 * 10**9, 20), ("(unknown operator)", 3 * 10**9, 10**9)],
        "_bytes_by_country": [(long_host, 10**12, 10**11), ("CN", 10, 20)],
        "_highlight": {"imei": ["864132058957347"]},
    }
    return doc, flows
