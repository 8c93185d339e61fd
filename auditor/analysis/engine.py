"""``auditor analyze``: from saved sessions to findings, with their evidence.

Long because: the analysis and the document it writes read the same flow table; the endpoint
rows (one pass over arrays sorted by group) are most of it.

Analysis reads only saved sessions (collect, then analyse), so every report can be
reproduced from its evidence. The same input gives byte-identical ``findings.json`` apart
from ``generated_at``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from auditor import __version__, columns
from auditor.analysis import appjoin, conditions, scanning
from auditor.analysis.claims import Claim, evaluate
from auditor.analysis.coverage import build_coverage, capture_stats, incomplete, skipped_warnings
from auditor.analysis.flowtable import build_flow_table, proxy_endpoint
from auditor.analysis.model import FINDINGS_SCHEMA_VERSION, Analysis, Finding, RuleError, Severity
from auditor.analysis.packetflows import (
    LOOKUPS_KEPT,
    PacketData,
    distinct_sorted,
    empty_frame,
    read_packet_flows,
)
from auditor.analysis.policy import Policy, load_policy
from auditor.analysis.report import write_report
from auditor.analysis.rules import Context, default_rules, run_rules
from auditor.errors import AuditorError
from auditor.gcpause import gc_paused
from auditor.intel.cache import load_index
from auditor.intel.kb import KnowledgeBase, cert_from_columns, show_lookalikes
from auditor.intel.lookalike import name_warnings
from auditor.intel.model import Attribution, Exposure
from auditor.records import CANARY_HOST
from auditor.session import Session
from auditor.timeutil import now_iso

log = logging.getLogger(__name__)

UNKNOWN_RECIPIENT = "(unknown operator)"
MAX_LOOKUPS = (
    LOOKUPS_KEPT  # DNS answers listed per session in findings.json (all are in the captures)
)


def identifiers_of(manifest: dict[str, Any], extra: dict[str, str]) -> dict[str, str]:
    """Identifier name -> value, from the session's device profile and ``--identifier``."""
    out: dict[str, str] = {}
    for ident in (manifest.get("device") or {}).get("identifiers") or []:
        if isinstance(ident, dict) and ident.get("value"):
            out[str(ident["name"])] = str(ident["value"])
    out.update(extra)
    return out


def analyze(
    sessions: list[Path],
    *,
    policy: Policy | None = None,
    intel: list[Path] | None = None,
    identifiers: dict[str, str] | None = None,
    claims: list[Claim] | None = None,
    artifacts_dir: Path | None = None,
    decrypt: Any = None,
) -> Analysis:
    """Analyse sessions into findings (see the module's text). ``decrypt``: the rules of a
    ``--decrypt`` file (:func:`auditor.analysis.decrypt.load_rules`)."""
    with gc_paused():
        return _analyze(
            sessions, policy=policy, intel=intel, identifiers=identifiers, claims=claims,
            artifacts_dir=artifacts_dir, decrypt=decrypt,
        )  # fmt: skip


def _analyze(
    sessions: list[Path],
    *,
    policy: Policy | None,
    intel: list[Path] | None,
    identifiers: dict[str, str] | None,
    claims: list[Claim] | None,
    artifacts_dir: Path | None,
    decrypt: Any,
) -> Analysis:
    if not sessions:
        raise AuditorError("no session to analyse")
    policy = policy or load_policy("default")
    tables, warnings = [], []
    # lenient: a damaged manifest is a warning, and what can be read is still reported
    opened = [Session(p, lenient=True) for p in sessions]
    # flows.jsonl is read once per session; every later step works on these records
    records = {sess.id: list(sess.records()) for sess in opened}
    packets: dict[str, PacketData] = {}
    quic: dict[str, dict[str, int] | None] = {}
    os_log: dict[str, dict[str, int]] = {}
    for sess in opened:
        warnings += incomplete(sess)
        warnings += skipped_warnings(sess)
        packets[sess.id] = read_packet_flows(sess.path, sess.manifest)
        quic[sess.id] = conditions.quic_seen(packets[sess.id].flows)
        _release_arrow_memory()
        df, w = build_flow_table(sess, records[sess.id], packets[sess.id])
        # the packet rows are in the flow table now: the columns it rebuilt (names, CNAME
        # chains) are not kept twice to the end of the analysis
        packets[sess.id].flows = empty_frame()
        # the OS's own log (Android 16 intrusion logs) names the apps of the flows it saw
        df, w_os, os_stats = appjoin.attribute_session(
            df, records[sess.id], proxy_endpoint(sess.manifest)
        )
        w += w_os
        if os_stats:
            os_log[sess.id] = os_stats
        df.insert(0, "session", sess.id)
        tables.append(df)
        warnings += [f"{sess.id}: {x}" for x in w]
    flows = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    _release_arrow_memory()
    # loaded after the captures were read: the reader's peak memory and the knowledge
    # base's are not held at once; without user intel, from the compiled lookup index
    # (auditor.intel.cache: 0.4 s of YAML checks saved)
    kb = KnowledgeBase.load(extra=list(intel)) if intel else load_index()
    # auditor's own interception check (the canary) is not the phone's traffic
    if len(flows):  # each distinct name looked at once
        hits = [
            v
            for v in flows[columns.NAME].dropna().unique().tolist()
            if str(v) == CANARY_HOST or str(v).endswith("." + CANARY_HOST)
        ]
        canary = flows[columns.NAME].isin(hits) if hits else pd.Series(False, index=flows.index)
    else:
        canary = pd.Series(dtype=bool)
    if canary.any():
        flows = flows[~canary].reset_index(drop=True)
    flows = annotate_distinct(kb, flows)
    _release_arrow_memory()
    if len(flows):  # a lookalike host name is a counted warning
        warnings += name_warnings(flows[columns.NAME].dropna().unique().tolist())
    first = opened[0]
    manifest = first.manifest
    device = manifest.get("device") or {}
    ids = identifiers_of(manifest, identifiers or {})
    scan = scanning.scan_sessions(
        opened, ids, artifacts_dir=artifacts_dir, records=records, decrypt=decrypt
    )
    warnings += scan.warnings
    vendor = kb.organisation_of_vendor(str(device.get("manufacturer") or ""))
    ctx = Context(
        flows=flows,
        policy=policy,
        vendor=vendor,
        matches=scan.matches,
        personal=scan.personal,
        characters=scan.characters,
        keyword_lists=scan.keyword_lists,
        app_lists=scan.app_lists,
        concerns={
            str(o): kb.concerns(str(o)) for o in flows[columns.ORGANISATION].dropna().unique()
        }
        if len(flows)
        else {},
    )
    findings, rule_errors = run_rules(default_rules(kb.adequacy()), ctx)
    _release_arrow_memory()  # before the endpoint rows, the analysis's peak
    stats = capture_stats(records)
    coverage = build_coverage(opened, flows, packets, stats)
    claim_results = []
    if claims:
        by_flow: dict[str, set[str]] = defaultdict(set)
        for fid, ms in scan.matches.items():
            by_flow[fid] |= {m.identifier for m in ms}
        # a value seen only by its shape (a Luhn-valid number, an e-mail-like string) with no
        # context is not evidence that personal data was sent (findings give it as info)
        personal = set(by_flow) | {
            f for f, vs in scan.personal.items() if any(getattr(v, "context", ()) for v in vs)
        }
        claim_results = evaluate(claims, flows, by_flow, personal, coverage)
    doc = _document(
        opened, flows, findings, rule_errors, claim_results, coverage, policy, kb, ids, warnings,
        _boot_times(records), packets, stats,
    )  # fmt: skip
    # the conditions of the capture (auditor.analysis.conditions) and what was read of bodies
    doc["coverage"]["quic"] = conditions.quic_rows(((s.id, s.manifest) for s in opened), quic)
    if os_log:
        doc["coverage"]["os_log"] = os_log
    doc["method"]["scenario_events"] = conditions.scenario_events(records)
    rules = conditions.decrypt_rules(decrypt)
    if rules is not None:
        doc["method"]["decrypt_rules"] = rules
    doc["bodies_read"] = {
        "by_schema": dict(sorted(scan.decoded.items())),
        "decrypted": dict(sorted(scan.decrypted.items())),
    }
    return Analysis(doc, flows, findings, rule_errors, warnings, dict(scan.personal))


def _release_arrow_memory() -> None:
    """Give back what Arrow's allocator kept of the step that ended: its temporaries (the
    texts gathered, encoded and ranked) are freed, but the allocator holds their pages for
    reuse, beside the next step's own (15 to 30 MiB of the peak on a million packets)."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def annotate_distinct(kb: KnowledgeBase, flows: pd.DataFrame) -> pd.DataFrame:
    """:meth:`KnowledgeBase.annotate` of the flow table, each distinct (name, server address,
    name evidence) attributed once and its columns spread to every flow that has it: the
    attribution of a row reads only those columns, and a capture's DNS flows to one
    resolver, or its flows to one server, are thousands of rows with one answer."""
    keys = [
        c
        for c in (columns.NAME, columns.SERVER_IP, *columns.NAME_EVIDENCE_COLUMNS)
        if c in flows.columns
    ]
    if len(flows) < DISTINCT_MIN_ROWS or columns.NAME not in keys or columns.SERVER_IP not in keys:
        return kb.annotate(flows)
    limit = 0.8 * len(flows)  # hardly fewer rows than that: not worth the gathering
    keys.sort(key=lambda c: c != columns.SERVER_IP)  # the most varied first: it decides soonest
    codes = np.zeros(len(flows), dtype=np.int64)
    radix = 1  # codes < radix: one mixed-radix code, made dense again only before overflow
    for c in keys:
        column = flows[c]
        if column.dtype == object and not column.notna().any():
            continue  # no value at all (most evidence columns): one code for every row
        vcodes, uniq = pd.factorize(column, use_na_sentinel=True)
        if len(uniq) > limit:  # a capture of many servers: every row is (nearly) distinct
            return kb.annotate(flows)
        if len(uniq) == 0:
            continue
        if radix * (len(uniq) + 1) >= 2**62:
            dense, seen = pd.factorize(codes)
            codes, radix = dense.astype(np.int64), len(seen)
        codes = codes * (len(uniq) + 1) + (vcodes.astype(np.int64) + 1)
        radix *= len(uniq) + 1
    codes = pd.factorize(codes)[0].astype(np.int64)
    n_keys = int(codes.max()) + 1
    if n_keys > limit:
        return kb.annotate(flows)
    first = np.zeros(n_keys, dtype=np.int64)
    first[codes[::-1]] = np.arange(len(flows) - 1, -1, -1)  # each key's first row
    done = kb.annotation_columns(flows[keys].iloc[first].reset_index(drop=True), spread=codes)
    out = flows.copy(deep=False)  # copy-on-write: the new columns never reach ``flows``
    for c, (categorical, values) in done.items():
        out[c] = pd.Series(values, index=out.index, dtype=object) if categorical else values
    return show_lookalikes(out)  # as annotate() shows them


DISTINCT_MIN_ROWS = 2000  # below this the table is annotated as it is


def _boot_times(records: dict[str, list[Any]]) -> list[float]:
    """When each reboot of the scenario completed (``device_rebooted`` events)."""
    from auditor.records import EventRecord
    from auditor.timeutil import parse_iso

    return sorted(
        parse_iso(r.ts)
        for recs in records.values()
        for r in recs
        if isinstance(r, EventRecord) and r.kind == "device_rebooted"
    )


def _endpoints(
    flows: pd.DataFrame, kb: KnowledgeBase, boots: list[float] | None = None
) -> list[dict[str, Any]]:
    """One row per host and recipient: every flow is attributed on its own evidence, and a
    row groups the flows of one host that went to one recipient (a host whose flows met
    different evidence, e.g. another certificate, gives several rows). The hosting of each
    row is listed per network and country, with its flows, and its legal exposure covers
    every country its servers stood in.

    One pass over the table: rows are sorted by group once and each group is read from
    plain arrays (pandas per group costs about 5 ms, 40 s on 7,000 groups)."""
    out: list[dict[str, Any]] = []
    n = len(flows)
    if n == 0:
        return out

    def coded(name: str, missing: Any = None, text: bool = False) -> tuple[np.ndarray, Any]:
        """A column as integer codes and the value of each code (code -1, the last value:
        ``missing``). Each distinct value is made a Python object once, and no column is
        made an object array of 400,000 rows (22 of them held 70 MB at the peak)."""
        if name not in flows.columns:
            return np.full(n, -1, dtype=np.intp), np.full(1, missing, dtype=object)
        codes, uniques = pd.factorize(flows[name], use_na_sentinel=True)
        values = np.empty(len(uniques) + 1, dtype=object)
        values[:-1] = [str(u) if text else u for u in np.asarray(uniques, dtype=object)]
        values[-1] = missing
        return codes, values

    def col(name: str, missing: Any = None, text: bool = False) -> np.ndarray:
        """A column as an object array (``missing`` where it has no value)."""
        codes, values = coded(name, missing, text)
        return np.asarray(values[codes], dtype=object)

    def merged(name: str, missing: Any, text: bool) -> tuple[np.ndarray, np.ndarray]:
        """:func:`coded` with one code per distinct value (``missing`` may equal a value)."""
        codes, values = coded(name, missing, text)
        same, _ = pd.factorize(values)
        return same[codes], values[codes]

    name_codes, names_of = merged(columns.NAME, _NO_NAME, True)
    org_codes, orgs_of = merged(columns.ORGANISATION, "", True)
    gcodes, _ = pd.factorize(name_codes.astype(np.int64) * (int(org_codes.max()) + 1) + org_codes)
    del name_codes, org_codes
    order = np.argsort(gcodes, kind="stable")
    gs = gcodes[order].astype(np.int64)  # each flow's group, flows sorted by group
    n_groups = int(gs[-1]) + 1
    starts = np.flatnonzero(np.r_[True, np.diff(gs) != 0])
    sizes = np.diff(np.r_[starts, n])
    firsts = order[starts]
    names, orgs = names_of[firsts], orgs_of[firsts]  # per group, from its first flow
    del names_of, orgs_of

    def at_firsts(name: str) -> np.ndarray:
        if name not in flows.columns:
            return np.full(n_groups, None, dtype=object)
        codes, uniques = pd.factorize(flows[name].iloc[firsts], use_na_sentinel=True)
        values = np.empty(len(uniques) + 1, dtype=object)
        values[:-1] = list(np.asarray(uniques, dtype=object))
        values[-1] = None
        return np.asarray(values[codes], dtype=object)

    start_ts = pd.to_datetime(flows[columns.START], utc=True, errors="coerce")
    # in nanoseconds whatever unit the text parsed to (pandas 3 keeps microseconds)
    secs = np.where(start_ts.isna(), np.nan, start_ts.dt.as_unit("ns").astype("int64") / 1e9)
    del start_ts
    up = flows[columns.BYTES_UP].fillna(0).to_numpy(dtype="float64")
    down = flows[columns.BYTES_DOWN].fillna(0).to_numpy(dtype="float64")
    idle = flows[columns.IDLE].fillna(False).astype(bool).to_numpy()
    linked = flows[columns.STATE_LINKED].fillna(False).astype(bool).to_numpy()
    ips = at_firsts(columns.SERVER_IP)
    org_name, parent, country, cats = (
        at_firsts(columns.ORGANISATION_NAME), at_firsts(columns.PARENT), at_firsts(columns.COUNTRY),
        at_firsts(columns.CATEGORIES),
    )  # fmt: skip
    hosting_codes, hosting_keys = _hosting_codes(
        [
            coded(c)
            for c in (
                columns.ASN,
                columns.HOSTING_NAME,
                columns.HOSTING_ORG,
                columns.ASN_ORG,
                columns.SERVER_COUNTRY,
            )
        ]
    )
    hostings, host_countries = _group_hostings(gs, hosting_codes[order], hosting_keys, n_groups)
    del hosting_codes
    evidence_cols = {c: at_firsts(c) for c in columns.NAME_EVIDENCE_COLUMNS}
    rows: list[tuple[str, str, dict[str, Any]]] = []
    attributions = _group_attributions(kb, names, ips, evidence_cols, np.arange(n_groups))
    # per group sums and counts over the flows sorted by group (all in C)
    bytes_up = np.add.reduceat(up[order], starts).tolist()
    bytes_down = np.add.reduceat(down[order], starts).tolist()
    idle_n = np.add.reduceat(idle[order].astype(np.int64), starts).tolist()
    any_linked = np.logical_or.reduceat(linked[order], starts).tolist()
    # each group's start times sorted, NaN (no time) last
    times = secs[order]
    times = times[np.lexsort((times, gs))]
    timed = np.add.reduceat((~np.isnan(times)).astype(np.int64), starts)
    t_first = np.where(timed > 0, times[starts], np.nan)
    t_last = np.where(timed > 0, times[starts + np.maximum(timed, 1) - 1], np.nan)
    first_seen, last_seen = _ts_many(t_first.tolist()), _ts_many(t_last.tolist())
    spans = np.where(timed > 1, t_last - t_first, 0.0).tolist()
    after_boot = _after_boot(times, starts, timed, boots or [])
    ip_ranks, ip_texts = _text_ranks(flows, columns.SERVER_IP, lambda: col(columns.SERVER_IP), None)
    group_ips = _texts_per_group(gs, (ip_ranks[order], ip_texts), n_groups, limit=MAX_IPS)
    fid_ranks, fid_texts = _text_ranks(flows, columns.FLOW_ID, lambda: col(columns.FLOW_ID), "None")
    flow_ids = _texts_per_group(
        gs, (fid_ranks[order], fid_texts), n_groups, limit=MAX_FLOW_IDS, distinct=False
    )
    del ip_ranks, fid_ranks
    app_codes, app_values = coded(columns.APPS)
    group_apps = _apps_per_group(gs, app_codes[order], app_values, n_groups)
    server_exposure: dict[str, dict[str, Any] | None] = {}
    timed_l, sizes_l, spans_l, linked_l = timed.tolist(), sizes.tolist(), spans, any_linked
    host_l = [str(x) for x in names.tolist()]
    org_l = [str(x) for x in orgs.tolist()]
    org_name_l, parent_l, country_l = (
        [x if isinstance(x, str) and x else None for x in c.tolist()]
        for c in (org_name, parent, country)
    )
    cat_codes, cat_values = pd.factorize(cats, use_na_sentinel=True)
    cat_lists = [sorted(c for c in str(v or "").split(";") if c) for v in cat_values.tolist()]
    cat_lists.append(sorted(c for c in str(None or "").split(";") if c))
    cat_l = cat_codes.tolist()
    for g in range(n_groups):
        host = host_l[g]
        attribution = attributions[g]
        hosting = hostings[g]
        exposure = list(attribution["legal_exposure"])
        countries = host_countries[g]
        if countries:
            have = {e["country"] for e in exposure}
            for c in countries:  # every server country of the group, not only the first flow's
                if c not in have:
                    if c not in server_exposure:  # one JSON form per country, shared (read)
                        e = kb.exposure_of(c, "server location")
                        server_exposure[c] = e.to_json() if e is not None else None
                    e_json = server_exposure[c]
                    if e_json is not None:
                        exposure.append(e_json)
        span = spans_l[g]
        hosted_by = "; ".join([h["label"] for h in hosting])
        ips_g = group_ips[g]
        record = {
            "host": host,
            "ip": ips_g[0] if ips_g else None,
            "ips": ips_g,
            "organisation": org_name_l[g],
            "organisation_id": _s(org_l[g]) or None,
            "parent": parent_l[g],
            "country": country_l[g],
            "categories": list(cat_lists[cat_l[g]]),
            "basis": attribution["basis"],
            "confidence": attribution["confidence"],
            "evidence": attribution["evidence"],
            "conflicts": attribution["conflicts"],
            "recipient": _recipient_text(attribution, hosting, hosted_by),
            "hosting": hosting,
            "hosted_by": hosted_by or None,
            "server_country": hosting[0]["country"] if hosting else None,
            "state_control": attribution["state_control"],
            "legal_exposure": exposure,
            "state_linked": bool(linked_l[g]),
            "flows": sizes_l[g],
            "flow_ids": flow_ids[g],
            "bytes_up": int(bytes_up[g]),
            "bytes_down": int(bytes_down[g]),
            "first_seen": first_seen[g],
            "last_seen": last_seen[g],
            "apps": group_apps[g],
            "per_minute": round(60 * (timed_l[g] - 1) / span, 2) if span else None,
            "idle_flows": int(idle_n[g]),
            "first_contact_after_boot_s": after_boot[g],
            "sources": attribution.get("sources") or [],
            "jurisdiction": attribution.get("jurisdiction") or [],
            "state_link": attribution.get("state_link") or [],
        }
        rows.append((host, org_l[g], record))
    rows.sort(key=lambda r: (r[0], r[1]))
    return [r[2] for r in rows]


_NO_NAME = "(no name)"


MAX_IPS = 50  # addresses listed per endpoint row
MAX_FLOW_IDS = 200  # flow ids listed per endpoint row (``flows`` counts them all)


def _texts_per_group(
    gs: np.ndarray,
    ranked: tuple[np.ndarray, Any],
    n_groups: int,
    *,
    limit: int,
    distinct: bool = True,
) -> list[list[str]]:
    """Each group's first ``limit`` texts, sorted (distinct when ``distinct``), from the
    flows sorted by group and each flow's rank among the sorted texts (:func:`_text_ranks`;
    -1: left out). The (group, rank) pairs are sorted as one integer each, and only the
    texts kept are made Python strings."""
    ranks, texts = ranked
    keep = ranks >= 0
    width = max(len(texts), 1)
    key = np.sort(gs[keep].astype(np.int64) * width + ranks[keep])
    if distinct and len(key):
        key = key[np.r_[True, key[1:] != key[:-1]]]
    g, r = np.divmod(key, width)
    bounds = np.searchsorted(g, np.arange(n_groups + 1))
    within = np.arange(len(g)) - bounds[:-1].repeat(np.diff(bounds))
    if len(within) and within.max() >= limit:
        g, r = g[within < limit], r[within < limit]
        bounds = np.searchsorted(g, np.arange(n_groups + 1))
    b = bounds.tolist()
    if isinstance(texts, np.ndarray):
        flat = texts[r].tolist()
    else:  # Arrow text (_text_ranks)
        import pyarrow as pa

        flat = texts.take(pa.array(r, type=pa.int64())).to_pylist()
    return [flat[b[k] : b[k + 1]] for k in range(n_groups)]


def _text_ranks(
    flows: pd.DataFrame, name: str, values: Callable[[], np.ndarray], missing: str | None
) -> tuple[np.ndarray, Any]:
    """Each row's rank among the distinct texts (``str(v)``) of a column, and those texts
    sorted (an object array, or an Arrow array when the column is Arrow text); a missing
    value ranks -1, or is the text ``missing``. ``values`` gives the
    column as :func:`_endpoints` reads it (object), made only when needed. A column of
    Arrow strings is sorted by Arrow (its byte order is the code point order Python sorts
    by), any other once per distinct value by Python."""
    series = flows[name] if name in flows.columns else None
    dtype = series.dtype if series is not None else None
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        import pyarrow as pa
        import pyarrow.compute as pc

        arr = pa.chunked_array([pa.array(series)]) if series is not None else None
        assert arr is not None
        if missing is not None:
            arr = pc.fill_null(arr, missing)
        # dense ranks (equal texts rank equal), nulls last: the rows are never gathered in
        # sorted order, only one row of each distinct text (half the time of a sort, a take
        # of every row and a comparison of neighbours)
        ranks = pc.rank(arr, sort_keys="ascending", tiebreaker="dense").to_numpy()
        ranks = ranks.astype(np.int64) - 1
        if arr.null_count:
            ranks[np.asarray(arr.is_null())] = -1
        valid = np.flatnonzero(ranks >= 0)
        at = np.empty(int(ranks.max(initial=-1)) + 1, dtype=np.int64)
        at[ranks[valid]] = valid  # a row of each text
        # left in Arrow: only the texts a group lists become Python strings
        return ranks, arr.take(pa.array(at)).combine_chunks()
    codes, uniq = pd.factorize(values(), use_na_sentinel=True)
    text = [str(u) for u in np.asarray(uniq, dtype=object)]
    if missing is not None:
        text.append(missing)
        codes = np.where(codes < 0, len(text) - 1, codes)
    by_text = sorted(range(len(text)), key=text.__getitem__)
    sorted_all = np.asarray([text[i] for i in by_text], dtype=object)
    new_text = np.r_[True, sorted_all[1:] != sorted_all[:-1]] if len(text) else np.zeros(0, bool)
    rank_of = np.empty(len(text) + 1, dtype=np.int64)
    rank_of[by_text] = np.cumsum(new_text) - 1
    rank_of[-1] = -1  # a missing value (code -1)
    return rank_of[codes], sorted_all[new_text]


def _apps_per_group(
    gs: np.ndarray, codes: np.ndarray, values: np.ndarray, n_groups: int
) -> list[list[str]]:
    """Each group's apps: the ";"-joined app lists of its flows (``codes`` into ``values``,
    -1: none), split, distinct, sorted; each distinct list split once."""
    out: list[list[str]] = [[] for _ in range(n_groups)]
    parts = [[a for a in str(v).split(";") if a] if v else [] for v in values[:-1].tolist()]
    some = np.asarray([bool(p) for p in parts] + [False], dtype=bool)
    keep = some[codes]  # code -1 reads the last entry: no app
    if not keep.any():
        return out
    width = len(parts)
    pairs = distinct_sorted(gs[keep].astype(np.int64) * width + codes[keep])
    found: dict[int, set[str]] = {}
    for g, c in zip(*(x.tolist() for x in np.divmod(pairs, width)), strict=True):
        found.setdefault(g, set()).update(parts[c])
    for g, apps in found.items():
        out[g] = sorted(apps)
    return out


def _after_boot(
    times: np.ndarray, starts: np.ndarray, timed: np.ndarray, boots: list[float]
) -> list[float | None]:
    """Seconds from the last boot before a group's flows to its first flow after that boot
    (``times``: each group's start times sorted, NaN last), for every group at once."""
    n_groups = len(starts)
    if not boots or not n_groups:
        return [None] * n_groups
    found = np.zeros(n_groups, dtype=bool)
    seconds = np.zeros(n_groups, dtype="float64")
    for boot in boots:  # the last boot with a flow after it decides
        after = np.flatnonzero(times >= boot)  # NaN is never
        pos = np.searchsorted(after, starts)
        first = after[np.minimum(pos, max(len(after) - 1, 0))] if len(after) else starts
        hit = (pos < len(after)) & (first < starts + timed)
        seconds[hit] = times[first[hit]] - boot
        found |= hit
    return [
        round(s, 1) if f else None for s, f in zip(seconds.tolist(), found.tolist(), strict=True)
    ]


_YEAR_1000_US = -30_610_224_000_000_000  # 1000-01-01 in microseconds since the epoch
_YEAR_10000_US = 253_402_300_800_000_000  # 10000-01-01


def _ts_many(seconds: list[float]) -> list[str | None]:
    """Each time (seconds since the epoch) as ISO-8601 UTC text with microseconds (None for
    NaN), as ``strftime("%Y-%m-%dT%H:%M:%S.%fZ")`` writes it: the date formatted once per
    distinct day, the time of day from integers."""
    arr = np.asarray(seconds, dtype="float64")
    ok = ~np.isnan(arr)
    us = pd.to_datetime(arr[ok], unit="s", utc=True).as_unit("us").asi8
    if len(us) and _YEAR_1000_US <= us.min() and us.max() < _YEAR_10000_US:
        # four-digit years, as strftime writes them: numpy writes the same text in C
        iso = np.datetime_as_string(us.astype("datetime64[us]"), unit="us").tolist()
        if ok.all():
            return [t + "Z" for t in iso]
        done: list[str | None] = [None] * len(arr)
        for i, t in zip(np.flatnonzero(ok).tolist(), iso, strict=True):
            done[i] = t + "Z"
        return done
    day, rem = np.divmod(us, 86_400_000_000)
    days, day_codes = np.unique(day, return_inverse=True)
    dates = pd.to_datetime(days, unit="D").strftime("%Y-%m-%d").tolist()
    hour, rem = np.divmod(rem, 3_600_000_000)
    minute, rem = np.divmod(rem, 60_000_000)
    sec, micro = np.divmod(rem, 1_000_000)
    text = [
        f"{dates[d]}T{h:02d}:{m:02d}:{s:02d}.{f:06d}Z"
        for d, h, m, s, f in zip(
            day_codes.tolist(), hour.tolist(), minute.tolist(), sec.tolist(), micro.tolist(),
            strict=True,
        )
    ]  # fmt: skip
    out: list[str | None] = [None] * len(arr)
    for i, t in zip(np.flatnonzero(ok).tolist(), text, strict=True):
        out[i] = t
    return out


def _group_attributions(
    kb: KnowledgeBase,
    names: np.ndarray,
    ips: np.ndarray,
    evidence_cols: dict[str, np.ndarray],
    firsts: np.ndarray,
) -> list[dict[str, Any]]:
    """The attribution (JSON form) of each group's first flow. Groups whose host and name
    evidence agree and whose addresses have the same facts share one lookup, and one JSON
    form: the fields an endpoint row reads of it do not name the address (``host`` and ``ip``
    differ, unread); so do the groups of names nothing is known of, whatever the name
    (:meth:`KnowledgeBase.knows_nothing_of`). Shared, not copied (a copy per row held 130 MB
    per 100,000 flows): the document is read, never changed in place (redaction builds a new
    one)."""
    from auditor.intel.bulkip import address_kinds
    from auditor.intel.kb import _ip_literal
    from auditor.intel.model import IpFacts

    out: list[dict[str, Any]] = []
    hosts = [str(names[i]) for i in firsts.tolist()]
    own = [x if isinstance(x, str) and x else None for x in ips[firsts].tolist()]
    # canonical IPv4 text is its own literal (found by Arrow); anything else is parsed
    v4, _ = address_kinds(hosts)
    literal = [
        h if is_v4 else (None if h == _NO_NAME else _ip_literal(h))
        for h, is_v4 in zip(hosts, v4.tolist(), strict=True)
    ]
    eff = [o if literal[k] is None else (o or literal[k]) for k, o in enumerate(own)]
    distinct = sorted({e for e in eff if e is not None} | {o for o in own if o is not None})
    at = {ip: j for j, ip in enumerate(distinct)}
    facts = kb.ipdb.lookup_columns(distinct, networks=False)
    # Each group keyed on (its host when named, its address's facts, its name evidence when
    # named) as one integer: the facts key (KnowledgeBase._facts_codes, equal where
    # _facts_key is) leaves out the country, which the legal exposure reads. The first group
    # of each key is looked up, the others share its JSON form.
    country, _ = pd.factorize(facts.country, use_na_sentinel=True)
    sig_codes = pd.factorize(
        kb._facts_codes(facts) * (int(country.max(initial=-1)) + 2) + (country + 1)
    )[0].tolist()
    named = np.asarray(
        [h != _NO_NAME and lit is None for h, lit in zip(hosts, literal, strict=True)], dtype=bool
    )

    def evidence(i0: int) -> tuple[Any, list[str]]:
        """The certificate and CNAME chain of group ``i0``'s first flow, as lookup reads them."""
        cert = cert_from_columns({c: v[i0] for c, v in evidence_cols.items()})
        return cert, [x for x in str(evidence_cols[columns.CNAMES][i0] or "").split(";") if x]

    host_codes = np.where(named, pd.factorize(np.asarray(hosts, dtype=object))[0], -1)
    ev_key = np.zeros(len(hosts), dtype=np.int64)
    for v in evidence_cols.values():
        vcodes, uniq = pd.factorize(v[firsts], use_na_sentinel=True)
        ev_key = pd.factorize(ev_key * (len(uniq) + 1) + (vcodes + 1))[0].astype(np.int64)
    # A name the knowledge base knows nothing of (with its evidence) is attributed as any
    # other such name at the same address: those groups share one key, one lookup and one
    # JSON form (most names of a large capture; each name was looked up once already, by
    # the flow table's annotation, and is read here from the lookup's cache).
    name_ev = np.where(named, host_codes * (int(ev_key.max(initial=0)) + 1) + ev_key, -1)
    ne_codes, ne_values = pd.factorize(name_ev)
    ne_first = np.zeros(len(ne_values), dtype=np.int64)
    ne_first[ne_codes[::-1]] = np.arange(len(hosts) - 1, -1, -1)  # each pair's first group
    blank = np.zeros(len(ne_values), dtype=bool)
    for j, (g, v) in enumerate(zip(ne_first.tolist(), ne_values.tolist(), strict=True)):
        if v >= 0:
            blank[j] = kb.knows_nothing_of(hosts[g], *evidence(int(firsts[g])))
    is_blank = blank[ne_codes]
    key = np.zeros(len(hosts), dtype=np.int64)
    parts = [
        np.where(is_blank, int(host_codes.max(initial=-1)) + 1, host_codes),
        np.asarray([-1 if ip is None else sig_codes[at[ip]] for ip in eff], dtype=np.int64),
        np.where(named & ~is_blank, ev_key, np.where(is_blank, 0, -1)),
    ]
    for p in parts:
        key = pd.factorize(key * (int(p.max(initial=-1)) + 2) + (p + 1))[0].astype(np.int64)
    _, first = np.unique(key, return_index=True)  # dense codes: the first group of each
    made: list[dict[str, Any]] = []
    memo: dict[Any, tuple[Any, dict[str, Any]]] = {}
    for k in first.tolist():
        host, own_ip, i0 = hosts[k], own[k], int(firsts[k])
        cert, cnames = evidence(i0)
        attribution = kb.lookup(
            None if host == _NO_NAME else host,
            own_ip,
            cert=cert,
            cnames=cnames,
            known=IpFacts(*(c[at[own_ip]] for c in facts)) if own_ip is not None else None,
        )
        made.append(_row_json(attribution, memo))
    out.extend(made[c] for c in key.tolist())
    return out


def _row_json(a: Attribution, memo: dict[Any, tuple[Any, dict[str, Any]]]) -> dict[str, Any]:
    """The fields of ``a.to_json()`` an endpoint row reads. A fact, source, exposure or piece
    of evidence is made JSON once per call of :func:`_group_attributions` and its JSON form
    shared (thousands of names share their organisation's facts and the server countries'
    laws): read, never changed in place, as the attributions themselves."""

    def js(x: Any) -> dict[str, Any]:
        if isinstance(x, Exposure):  # made afresh per lookup for a server's country
            k: Any = (x.country, x.country_name, x.via, x.organisation, id(x.facts),
                      x.intelligence_obligation)  # fmt: skip
        else:
            k = id(x)
        hit = memo.get(k)
        if hit is None:  # the object is kept beside its JSON: its id is never reused
            hit = memo[k] = (x, x.to_json())
        return hit[1]

    return {
        "organisation_name": a.organisation_name,
        "basis": str(a.basis),
        "confidence": str(a.confidence),
        "evidence": [js(e) for e in a.evidence],
        "conflicts": [js(e) for e in a.conflicts],
        "state_control": [js(f) for f in a.state_control],
        "legal_exposure": [js(e) for e in a.legal_exposure],
        "state_link": [js(f) for f in a.state_link],
        "jurisdiction": [js(f) for f in a.jurisdiction],
        "sources": [js(s) for s in a.sources],
    }


def _hosting_codes(
    cols: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, list[tuple[Any, ...]]]:
    """One integer per row for its (AS, hosting name, hosting organisation, AS organisation,
    server country), and the tuple each integer stands for; each column given as codes and
    the value of each code (code -1: the last value)."""
    codes = np.zeros(len(cols[0][0]), dtype=np.int64)
    radix = 1  # one mixed-radix code, made dense again only before it could overflow
    for c, values in cols:
        same, uniq = pd.factorize(values, use_na_sentinel=True)  # values equal as values
        if radix * (len(uniq) + 1) >= 2**62:
            dense, seen = pd.factorize(codes)
            codes, radix = dense.astype(np.int64), len(seen)
        codes = codes * (len(uniq) + 1) + (same[c].astype(np.int64) + 1)
        radix *= len(uniq) + 1
    codes = pd.factorize(codes)[0].astype(np.int64)
    _, first = np.unique(codes, return_index=True)
    keys = list(zip(*(values[c[first]].tolist() for c, values in cols), strict=True))
    return codes, keys


def _group_hostings(
    group: np.ndarray, codes: np.ndarray, keys: list[tuple[Any, ...]], n_groups: int
) -> tuple[list[list[dict[str, Any]]], list[list[str]]]:
    """The networks each group's flows went to (AS, its organisation, the server's country,
    with their flows: :func:`_hosting_entries` of its flows' counts), every group at once,
    from the flows sorted by group (in flow order within a group): the (group, network)
    pairs counted on one integer each, and ordered by group, flows (most first), label,
    then the order the flows first reach them.
    An entry is a dict shared by the entries of one network and count (read, never changed
    in place, as the attributions: 266,000 entries of 20,000 endpoints are a few thousand
    distinct dicts).
    Also each group's server countries: those of its entries, each once, in their order
    (its rows' hosting entries are 6 a group, their countries 3)."""
    if len(group) == 0:
        return [[] for _ in range(n_groups)], [[] for _ in range(n_groups)]
    width = len(keys)
    pair, uniq = pd.factorize(group.astype(np.int64) * width + codes)
    counts = np.bincount(pair)
    p_group, p_key = np.divmod(np.asarray(uniq, dtype=np.int64), width)
    entries = [_hosting_entry(k, 0) for k in keys]
    shown = np.asarray([e is not None for e in entries], dtype=bool)
    labels = np.asarray([e["label"] if e else "" for e in entries], dtype=object)
    _, label_rank = np.unique(labels, return_inverse=True)
    keep = np.flatnonzero(shown[p_key])
    # factorize numbers pairs in the order they first appear: group, then first reach
    rank = np.lexsort((keep, label_rank[p_key[keep]], -counts[keep], p_group[keep]))
    sel = keep[rank]
    # one dict per distinct (network, count), gathered into the pairs' order by numpy
    kc, kc_first = np.unique(p_key[sel] * (int(counts.max()) + 1) + counts[sel], return_index=True)
    made = np.empty(len(kc), dtype=object)
    for j, (k, c) in enumerate(
        zip(p_key[sel][kc_first].tolist(), counts[sel][kc_first].tolist(), strict=True)
    ):
        made[j] = {**entries[k], "flows": c}
    which = np.searchsorted(kc, p_key[sel] * (int(counts.max()) + 1) + counts[sel])
    flat = made[which].tolist()
    bounds = np.searchsorted(p_group[sel], np.arange(n_groups + 1)).tolist()
    # the first entry of each (group, country), a country being any text but ""
    ccodes, cvals = pd.factorize(
        np.asarray([k[4] if k[4] else None for k in keys], dtype=object), use_na_sentinel=True
    )
    sel_group, sel_country = p_group[sel], ccodes[p_key[sel]]
    pos = np.flatnonzero(sel_country >= 0)
    _, first = np.unique(sel_group[pos] * (len(cvals) + 1) + sel_country[pos], return_index=True)
    pos = np.sort(pos[first])
    cflat = np.asarray(cvals, dtype=object)[sel_country[pos]].tolist()
    cb = np.searchsorted(sel_group[pos], np.arange(n_groups + 1)).tolist()
    return (
        [flat[bounds[g] : bounds[g + 1]] for g in range(n_groups)],
        [cflat[cb[g] : cb[g + 1]] for g in range(n_groups)],
    )


def _hosting_entries(counts: Any) -> list[dict[str, Any]]:
    out = [e for key, n in counts if (e := _hosting_entry(key, n)) is not None]
    out.sort(key=lambda h: (-int(str(h["flows"])), str(h["label"])))
    return out


def _hosting_entry(key: tuple[Any, ...], n: int) -> dict[str, Any] | None:
    """One network of an endpoint row, with its flows; None when nothing is known of it."""
    asn_v, hosting_name, hosting_org, asn_org, country = key
    asn = int(asn_v) if asn_v is not None else None
    name = hosting_name or asn_org
    if asn is None and name is None and country is None:
        return None
    inner = ", ".join(x for x in (f"AS{asn}" if asn else None, country) if x)
    label = f"{name or 'unknown network'} ({inner})" if inner else str(name)
    return {
        "asn": asn,
        "asn_org": asn_org,
        "organisation_id": hosting_org,
        "name": name,
        "country": country,
        "label": label,
        "flows": n,
    }


def _recipient_text(
    attribution: dict[str, Any], hosting: list[dict[str, Any]], hosted_by: str | None = None
) -> str:
    """The recipient in words, never the hosting network in its place (``hosted_by``: the
    hosting's labels joined, when the caller has them)."""
    name = attribution.get("organisation_name")
    if name:
        return f"{name} ({attribution.get('basis')}, {attribution.get('confidence')} confidence)"
    if hosting:
        if hosted_by is None:
            hosted_by = "; ".join(h["label"] for h in hosting)
        return "unknown operator, hosted by " + hosted_by
    return "unknown operator"


def _s(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _ts(t: Any) -> str | None:
    return None if pd.isna(t) else t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _verdicts(endpoints: list[dict[str, Any]], findings: list[Finding]) -> list[dict[str, Any]]:
    by_org: dict[tuple[str, str], dict[str, Any]] = {}
    for e in endpoints:
        key = (e["organisation"] or UNKNOWN_RECIPIENT, e["country"] or "")
        v = by_org.setdefault(
            key,
            {
                "organisation": key[0],
                "country": key[1] or None,
                "state_linked": False,
                "state_control": {},
                "legal_exposure": {},
                "identifiers": set(),
                "flows": 0,
                "bytes_up": 0,
                "worst": "none",
            },
        )
        v["state_linked"] |= e["state_linked"]
        for f in e.get("state_control") or []:
            v["state_control"].setdefault(f["statement"], f)
        for x in e.get("legal_exposure") or []:
            v["legal_exposure"].setdefault(x["basis"], x)
        v["flows"] += e["flows"]
        v["bytes_up"] += e["bytes_up"]
    rank = {s.value: s.rank for s in Severity}
    for f in findings:
        key = (f.organisation or UNKNOWN_RECIPIENT, f.country or "")
        if key not in by_org:
            continue
        v = by_org[key]
        v["identifiers"] |= set(f.identifiers)
        if v["worst"] == "none" or rank[f.severity.value] < rank[v["worst"]]:
            v["worst"] = f.severity.value
    out = []
    for v in by_org.values():
        out.append(
            {
                **v,
                "identifiers": sorted(v["identifiers"]),
                "state_control": list(v["state_control"].values()),
                "legal_exposure": list(v["legal_exposure"].values()),
            }
        )
    out.sort(key=lambda v: (rank.get(v["worst"], 9), -v["bytes_up"], v["organisation"]))
    return out


def _document(
    sessions: list[Session],
    flows: pd.DataFrame,
    findings: list[Finding],
    rule_errors: list[RuleError],
    claims: list[Any],
    coverage: dict[str, Any],
    policy: Policy,
    kb: KnowledgeBase,
    ids: dict[str, str],
    warnings: list[str],
    boots: list[float],
    packets: dict[str, PacketData] | None = None,
    capture_stats: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    capture_stats = capture_stats or {}
    first = sessions[0].manifest
    device = dict(first.get("device") or {})
    device.pop("properties", None)
    device.pop("packages", None)
    endpoints = _endpoints(flows, kb, boots)
    by_org: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_country: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for e in endpoints:
        for table, key in (
            (by_org, e["organisation"] or UNKNOWN_RECIPIENT),
            (by_country, e["server_country"] or "(unknown)"),  # where it went, not the HQ
        ):
            table[key][0] += e["bytes_up"]
            table[key][1] += e["bytes_down"]
    return {
        "schema_version": FINDINGS_SCHEMA_VERSION,
        "generated_at": now_iso(),
        "session": {
            "id": sessions[0].id,
            "ids": [s.id for s in sessions],
            "manifest_sha256": [_manifest_hash(s) for s in sessions],
        },
        "device": device,
        "identifiers_searched": sorted(ids),
        "endpoints": endpoints,
        "findings": [f.to_dict() for f in findings],
        "verdicts": _verdicts(endpoints, findings),
        "claims": [c.to_dict() for c in claims],
        "coverage": coverage,
        "packets": {
            sid: {
                **p.describe(),
                "capture": capture_stats.get(sid, []),
                "dns_lookups": p.lookups[:MAX_LOOKUPS],
            }
            for sid, p in sorted((packets or {}).items())
            if p.files
        },
        "rule_errors": [{"rule": e.rule, "error": e.error} for e in rule_errors],
        "warnings": sorted(set(warnings)),
        "method": {
            "auditor_version": __version__,
            "versions": first.get("versions") or {},
            "scenario": first.get("scenario") or {},
            "policy": policy.to_dict(),
            "knowledge_base": _portable(kb.describe()),
            "ip_database": _portable(kb.ip_database()),
        },
        "_bytes_by_org": sorted(
            ((k, v[0], v[1]) for k, v in by_org.items()), key=lambda x: (-x[1] - x[2], x[0])
        ),
        "_bytes_by_country": sorted(
            ((k, v[0], v[1]) for k, v in by_country.items()), key=lambda x: (-x[1] - x[2], x[0])
        ),
        "_highlight": _highlights(ids),
    }


def _portable(obj: Any) -> Any:
    """Data files named by their file name, not where this machine keeps them: re-analysis on
    another machine must give the same findings.json (the files carry their dates and, for
    intel files, their SHA-256)."""
    if isinstance(obj, dict):
        return {
            k: (Path(v).name if k == "path" and isinstance(v, str) else _portable(v))
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_portable(v) for v in obj]
    return obj


def _manifest_hash(s: Session) -> str:
    from auditor.session import MANIFEST, sha256_file

    return sha256_file(s.path / MANIFEST)


def _highlights(ids: dict[str, str]) -> dict[str, list[str]]:
    return {k: [v] for k, v in ids.items()}


def write(analysis: Analysis, out: Path, formats: list[str]) -> list[Path]:
    return write_report(out, analysis.doc, analysis.flows, formats)


def report_session(
    session: Path,
    reports: Path,
    formats: list[str] | None = None,
    *,
    redact: bool = False,
    decrypt: Any = None,
) -> Path:
    """Analyse one session with the default policy into ``reports/<session-id>/``; returns
    the report folder (used at the end of ``auditor audit`` and ``auditor demo``). With
    ``redact``, the report is the shareable one (``auditor.analysis.redact``), and the
    originals stay only in the sealed session."""
    target = Path(reports) / Path(session).name
    fmts = formats or ["html", "json", "csv", "md"]
    if not redact:
        result = analyze([Path(session)], artifacts_dir=target / "artifacts", decrypt=decrypt)
        write(result, target, fmts)
        return target
    import tempfile

    from auditor.analysis.redact import write_redacted

    with tempfile.TemporaryDirectory(prefix="auditor-redact-") as tmp:
        art = Path(tmp) / "artifacts"  # the originals never touch the report folder
        result = analyze([Path(session)], artifacts_dir=art, decrypt=decrypt)
        write_redacted(result, target, fmts, artifacts_src=art)
    return target
