from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from auditor import columns as C
from auditor.analysis.model import Evidence, Finding, Severity
from auditor.analysis.policy import PolicyError, load_policy
from auditor.analysis.rules import (
    Beacon,
    Context,
    IdentifiersSent,
    IdleTraffic,
    Match,
    PersonalValues,
    Rule,
    Shape,
    Thresholds,
    TransferWithoutAdequacy,
    default_rules,
    run_rules,
)

T0 = pd.Timestamp("2026-01-01T00:00:00Z")


def _flows(rows: list[dict]) -> pd.DataFrame:
    base = {
        C.FLOW_ID: "", C.RECORD_TYPE: "http", C.NAME: "", C.SCHEME: "https", C.START: T0,
        C.ORGANISATION: None, C.ORGANISATION_NAME: None, C.PARENT: None, C.COUNTRY: None,
        C.STATE_LINKED: False, C.STATE_CONTROL: False, C.LEGAL_EXPOSURE: None,
        C.CATEGORIES: "", C.BYTES_UP: 100, C.IDLE: False,
        C.ERROR: None, C.APPS: "",
    }  # fmt: skip
    return pd.DataFrame([{**base, **r} for r in rows])


XIAOMI = {C.ORGANISATION: "xiaomi", C.ORGANISATION_NAME: "Xiaomi Corporation",
          C.COUNTRY: "CN", C.STATE_LINKED: True, C.LEGAL_EXPOSURE: "CN",
          C.CATEGORIES: "vendor_telemetry"}  # fmt: skip
GOOGLE = {C.ORGANISATION: "google", C.ORGANISATION_NAME: "Google LLC", C.COUNTRY: "US",
          C.LEGAL_EXPOSURE: "US"}  # fmt: skip
CMCC = {C.ORGANISATION: "china-mobile", C.ORGANISATION_NAME: "China Mobile",
        C.COUNTRY: "CN", C.STATE_CONTROL: True, C.LEGAL_EXPOSURE: "CN;server:SG",
        C.CATEGORIES: "carrier"}  # fmt: skip


def _ctx(flows: pd.DataFrame, policy: str = "default", **kw) -> Context:
    return Context(flows=flows, policy=load_policy(policy), vendor="xiaomi", **kw)


def test_identifier_severity_follows_the_recipient() -> None:
    flows = _flows(
        [
            {C.FLOW_ID: "a", C.NAME: "tracking.miui.com", **XIAOMI},
            {C.FLOW_ID: "b", C.NAME: "android.clients.google.com", **GOOGLE},
        ]
    )
    m = Match("imei", "body", "$.imei", "gzip > json > plain")
    ctx = _ctx(flows, matches={"a": [m], "b": [m]})
    found = {f.host: f for f in IdentifiersSent().check(ctx)}
    assert found["tracking.miui.com"].severity is Severity.CRITICAL
    assert found["android.clients.google.com"].severity is Severity.MEDIUM
    assert found["tracking.miui.com"].flow_ids == ("a",)
    assert found["tracking.miui.com"].evidence[0].encoding == "gzip > json > plain"


def test_state_basis_is_in_words_and_follows_the_policy(tmp_path) -> None:
    """State control and the listed headquarters laws flag a recipient, each with its basis
    in words; US law is recorded but the default policy does not list it, a policy may."""
    from auditor.analysis.rules import StateLinkedContact

    flows = _flows(
        [
            {C.FLOW_ID: "a", C.NAME: "tracking.miui.com", **XIAOMI},
            {C.FLOW_ID: "b", C.NAME: "android.clients.google.com", **GOOGLE},
            {C.FLOW_ID: "c", C.NAME: "cmpassport.com", **CMCC},
        ]
    )
    concerns = {
        "xiaomi": {"legal_exposure": {"CN": "National Intelligence Law art. 7: applies ..."}},
        "china-mobile": {"state_control": ["a central SOE supervised by SASAC (SASAC, 2024)"]},
    }
    ctx = _ctx(flows, concerns=concerns)
    found = {f.organisation: f for f in StateLinkedContact().check(ctx)}
    assert set(found) == {"Xiaomi Corporation", "China Mobile"}
    assert found["China Mobile"].data["basis"] == [
        "a central SOE supervised by SASAC (SASAC, 2024)",
        "the law of CN, where it is headquartered",  # no words given for it: said plainly
    ]
    assert "National Intelligence Law art. 7" in found["Xiaomi Corporation"].title
    us = tmp_path / "us.yaml"
    us.write_text("name: us\nflag: {state_control: false, legal_exposure: [US]}\n")
    ctx = Context(flows=flows, policy=load_policy(str(us)), vendor=None, concerns=concerns)
    found = {f.organisation: f for f in StateLinkedContact().check(ctx)}
    assert set(found) == {"Google LLC"}
    assert "the law of US" in found["Google LLC"].data["basis"][0]


def test_legacy_state_linked_policy_means_control_and_the_prc_law(tmp_path) -> None:
    p = tmp_path / "old.yaml"
    p.write_text("name: old\nflag: {state_linked: true}\n")
    pol = load_policy(str(p))
    assert pol.state_control and pol.legal_exposure == frozenset({"CN"})
    p.write_text("name: old\nflag: {state_linked: false}\n")
    pol = load_policy(str(p))
    assert not pol.state_control and not pol.legal_exposure


def test_a_broken_rule_is_reported_and_the_others_still_run() -> None:
    class Broken(Rule):
        id = "broken"
        title = "x"
        severity_key = "beacon"
        description = "x"
        citation = "x"

        def check(self, ctx: Context) -> Iterator[Finding]:
            raise RuntimeError("boom")
            yield  # pragma: no cover

    flows = _flows([{C.FLOW_ID: "a", C.NAME: "tracking.miui.com", C.IDLE: True, **XIAOMI}])
    findings, errors = run_rules([Broken(), *default_rules()], _ctx(flows))
    assert [e.rule for e in errors] == ["broken"] and "boom" in errors[0].error
    assert {f.rule for f in findings} >= {"idle-traffic", "state-linked-contact"}


def test_beacon_period_is_estimated() -> None:
    rows = [
        {C.FLOW_ID: f"f{i}", C.NAME: "tracking.miui.com", C.START: T0 + pd.Timedelta(seconds=30 * i
         + (1 if i % 2 else 0)), **XIAOMI}
        for i in range(6)
    ]  # fmt: skip
    (f,) = list(Beacon().check(_ctx(_flows(rows))))
    assert 29 <= f.data["period_s"] <= 31 and f.data["contacts"] == 6
    jittery = [dict(r, **{C.START: T0 + pd.Timedelta(seconds=s)}) for r, s in
               zip(rows, [0, 1, 50, 52, 200, 201], strict=True)]  # fmt: skip
    assert list(Beacon().check(_ctx(_flows(jittery)))) == []


def test_transfers_without_adequacy_only_in_the_eu_view() -> None:
    flows = _flows(
        [
            {C.FLOW_ID: "a", C.NAME: "tracking.miui.com", **XIAOMI},
            {C.FLOW_ID: "b", C.NAME: "x.google.com", **GOOGLE},
            {C.FLOW_ID: "c", C.NAME: "x.example.de", C.ORGANISATION_NAME: "DeCo", C.COUNTRY: "DE"},
        ]
    )
    adequacy = {"CN": False, "US": True, "DE": False}
    assert list(TransferWithoutAdequacy(adequacy).check(_ctx(flows))) == []
    eu = list(TransferWithoutAdequacy(adequacy | {"DE": True}).check(_ctx(flows, "eu-gdpr")))
    assert [f.organisation for f in eu] == ["Xiaomi Corporation"]


def test_finding_ids_are_stable_and_output_sorted() -> None:
    flows = _flows([{C.FLOW_ID: "a", C.NAME: "tracking.miui.com", C.IDLE: True, **XIAOMI}])
    one, _ = run_rules(default_rules(), _ctx(flows))
    two, _ = run_rules(default_rules(), _ctx(flows))
    assert [f.to_dict() for f in one] == [f.to_dict() for f in two]
    assert [f.severity.rank for f in one] == sorted(f.severity.rank for f in one)


# ------------------------------------------------------------------ evidence (issue 14)


def test_a_finding_without_evidence_is_not_reported() -> None:
    """run_rules enforces evidence centrally: a rule that cannot point at it loses the
    finding, and the loss is reported among the rule errors."""

    class Bare(Rule):
        id = "bare"
        title = "x"
        severity_key = "beacon"
        description = "x"
        citation = "x"

        def check(self, ctx: Context) -> Iterator[Finding]:
            row = ctx.row("a")
            yield self.finding(ctx, row, "no evidence", flow_ids=("a",))
            ev = (Evidence("b", "connection", "x", ""),)  # cites a flow it does not list
            yield self.finding(ctx, row, "foreign evidence", flow_ids=("a",), evidence=ev)
            ev = (Evidence("a", "connection", "x", ""),)
            yield self.finding(ctx, row, "kept", flow_ids=("a",), evidence=ev)

    flows = _flows([{C.FLOW_ID: "a", C.NAME: "tracking.miui.com", **XIAOMI}])
    findings, errors = run_rules([Bare()], _ctx(flows))
    assert [f.title for f in findings] == ["kept"]
    assert [(e.rule, e.error) for e in errors] == [
        ("bare", "2 finding(s) without evidence were not reported")
    ]


def test_every_default_rule_points_at_evidence() -> None:
    rows = [
        {C.FLOW_ID: f"f{i}", C.NAME: "tracking.miui.com", C.IDLE: True,
         C.START: T0 + pd.Timedelta(seconds=60 * i), **XIAOMI}
        for i in range(8)
    ] + [
        {C.FLOW_ID: "t", C.RECORD_TYPE: "tls_failed", C.NAME: "pinned.miui.com",
         C.ERROR: "certificate unknown", **XIAOMI},
        {C.FLOW_ID: "c", C.NAME: "cmpassport.com", C.SCHEME: "http", **CMCC},
    ]  # fmt: skip
    m = Match("imei", "body", "$.imei", "json > plain", "imei=1")
    ctx = _ctx(
        _flows(rows),
        "eu-gdpr",
        matches={"f0": [m], "c": [m]},
        personal={"f1": [Shape("imei", "490154203237518", "url", "query:x", "", ())]},
        characters={"f2": {"class": "encrypted_or_random", "entropy": 7.9, "opaque": []}},
        keyword_lists={"f3": {"path": "$.list", "count": 60, "sample": ["a"]}},
        app_lists={"f4": {"count": 9, "sample": ["com.a.b"]}},
    )
    findings, errors = run_rules(default_rules({"CN": False}), ctx)
    assert errors == []
    rules = {f.rule for f in findings}
    assert rules >= {
        "identifier-sent", "cleartext-identifier", "encrypted-upload", "keyword-list",
        "app-list", "personal-data", "state-linked-contact", "transfer-no-adequacy",
        "beacon", "idle-traffic", "uninspected",
    }  # fmt: skip
    for f in findings:
        assert f.evidence and {e.flow_id for e in f.evidence} <= set(f.flow_ids), f.rule


# ------------------------------------------------------------------ shapes and context


def test_a_shape_alone_is_info_and_context_takes_the_policy_severity() -> None:
    flows = _flows([{C.FLOW_ID: "a", C.NAME: "pubads.g.doubleclick.net", **XIAOMI}])
    bare = Shape("imei", "419772853168473", "url", "query:correlator", "", ())
    named = Shape("imei", "490154203237518", "body", "$.imei", "json", ("name:imei",))
    legacy = ("mac", "3c:5a:b4:01:02:03")  # a plain pair, as older callers give
    ctx = _ctx(flows, personal={"a": [bare, named, legacy]})
    found = {f.data["shape_only"]: f for f in PersonalValues().check(ctx)}
    assert found[True].severity is Severity.INFO and "shape only" in found[True].title
    assert found[True].data["kinds"] == {"imei": 1, "mac": 1}
    assert found[False].severity is Severity.CRITICAL  # Xiaomi: state-linked under the policy
    assert found[False].data["context"] == {"imei": ["name:imei"]}
    assert "name:imei" in found[False].title
    assert [e.detail for e in found[False].evidence] == ["$.imei"]


def test_a_shape_is_still_the_pair_redaction_reads() -> None:
    sh = Shape("email", "a@b.example", "body", "$.x", "json", ("name:email",), "x")
    assert sh == ("email", "a@b.example") and hash(sh) == hash(("email", "a@b.example"))
    kind, value = sh
    assert (kind, value, sh.detail) == ("email", "a@b.example", "$.x")
    import copy

    back = copy.deepcopy(sh)  # through __reduce__, as pickle and multiprocessing copy it
    assert back.context == ("name:email",) and back.location == "body"


# ------------------------------------------------------------------ beacons


def _beacon_rows(times: list[float], name: str = "tracking.miui.com", **kw: Any) -> list[dict]:
    return [
        {C.FLOW_ID: f"{name}-{i}", C.NAME: name, C.START: T0 + pd.Timedelta(seconds=s),
         C.SERVER_PORT: 443, C.DNS_QUERIES: "", **XIAOMI, **kw}
        for i, s in enumerate(times)
    ]  # fmt: skip


def _dns_rows(times: list[float], qname: str) -> list[dict]:
    return [
        {C.FLOW_ID: f"dns-{i}", C.NAME: "192.0.2.53", C.START: T0 + pd.Timedelta(seconds=s),
         C.SERVER_PORT: 53, C.DNS_QUERIES: qname, C.TRANSPORT: "udp"}
        for i, s in enumerate(times)
    ]  # fmt: skip


def test_four_contacts_in_two_seconds_with_dns_are_no_beacon() -> None:
    """Issue 14: "beacon every ~1 s" from 4 contacts in 2 s, DNS queries among them."""
    rows = _beacon_rows([0.0, 1.1, 2.2]) + _dns_rows([0.5], "tracking.miui.com")
    assert list(Beacon().check(_ctx(_flows(rows)))) == []


def test_a_beacon_says_what_it_rests_on_and_dns_is_counted_apart() -> None:
    times = [60.0 * i + (2 if i % 3 else 0) for i in range(8)]
    bursts = [t + 0.2 for t in times[:3]]  # parallel connections: the same contact
    rows = _beacon_rows(times + bursts) + _dns_rows([t - 0.1 for t in times], "tracking.miui.com")
    (f,) = list(Beacon().check(_ctx(_flows(rows))))
    assert f.data["contacts"] == 8 and f.data["flows"] == 11 and f.data["dns_lookups"] == 8
    assert 58 <= f.data["period_s"] <= 62 and 415 <= f.data["span_s"] <= 425
    assert "8 contacts over 42" in f.title
    assert not any(fid.startswith("dns-") for fid in f.flow_ids)
    assert len(f.evidence) == 8 and all(e.location == "timing" for e in f.evidence)


def test_beacon_thresholds_each_bite() -> None:
    assert list(Beacon().check(_ctx(_flows(_beacon_rows([60.0 * i for i in range(5)]))))) == []
    fast = [2.0 * i for i in range(60)]  # 2 s period: under beacon_min_period_s
    assert list(Beacon().check(_ctx(_flows(_beacon_rows(fast))))) == []
    short = [6.0 * i for i in range(8)]  # 42 s: under beacon_min_span_s
    assert list(Beacon().check(_ctx(_flows(_beacon_rows(short))))) == []
    unflagged = _beacon_rows([60.0 * i for i in range(8)], **GOOGLE, **{C.CATEGORIES: ""})
    assert list(Beacon().check(_ctx(_flows(unflagged)))) == []


def test_beacon_thresholds_come_from_the_policy(tmp_path) -> None:
    p = tmp_path / "quick.yaml"
    p.write_text(
        "name: quick\nthresholds:\n  beacon: {min_contacts: 3, min_span_s: 2, min_period_s: 1,"
        " min_periods: 2}\n"
    )
    rows = _beacon_rows([0.0, 1.1, 2.2])
    ctx = Context(flows=_flows(rows), policy=load_policy(str(p)), vendor="xiaomi")
    (f,) = list(Beacon().check(ctx))
    assert f.data["thresholds"]["min_contacts"] == 3
    assert Thresholds.from_mapping({"beacon": {"min_contacts": 9}}, "x").beacon_min_contacts == 9
    for bad in ({"beacon": {"min_contact": 9}}, {"beacon": {"min_contacts": "9"}}, ["x"]):
        with pytest.raises(PolicyError, match="x: "):
            Thresholds.from_mapping(bad, "x")
    # a bad threshold stops the policy from loading, naming the file
    p.write_text("name: bad\nthresholds:\n  beacon: {min_contacts: -1}\n")
    with pytest.raises(PolicyError, match=r"quick\.yaml: threshold beacon\.min_contacts"):
        load_policy(str(p))


def test_idle_traffic_cites_only_flagged_recipients_flows() -> None:
    rows = [
        {C.FLOW_ID: "a", C.NAME: "tracking.miui.com", C.IDLE: True, C.BYTES_UP: 10, **XIAOMI},
        {C.FLOW_ID: "b", C.NAME: "tracking.miui.com", C.IDLE: True, C.BYTES_UP: 5, **XIAOMI},
        {C.FLOW_ID: "c", C.NAME: "tracking.miui.com", C.IDLE: False, **XIAOMI},
        {C.FLOW_ID: "d", C.NAME: "example.org", C.IDLE: True},
    ]
    (f,) = list(IdleTraffic().check(_ctx(_flows(rows))))
    assert f.flow_ids == ("a", "b") and f.data["bytes_up"] == 15
    assert [e.flow_id for e in f.evidence] == ["a", "b"]


def test_proxy_bypass_counts_flagged_flows_and_cites_them() -> None:
    from auditor.analysis.rules import ProxyBypass

    base = {C.BYPASS: True, C.APPS: "com.miui.analytics", C.TRANSPORT: "udp",
            C.SERVER_PORT: 443, C.BYTES_DOWN: 0, C.DNS_QUERIES: ""}  # fmt: skip
    rows = [
        {C.FLOW_ID: "a", C.NAME: "tracking.miui.com", **base, **XIAOMI},
        {C.FLOW_ID: "b", C.NAME: "data.mistat.xiaomi.com", **base, **XIAOMI},
        {C.FLOW_ID: "c", C.NAME: "203.0.113.9", **base},
    ]
    found = {f.organisation: f for f in ProxyBypass().check(_ctx(_flows(rows)))}
    assert found["Xiaomi Corporation"].data["flagged_recipients"] == 2
    assert found[None].data["flagged_recipients"] == 0
    assert [e.flow_id for e in found["Xiaomi Corporation"].evidence] == ["a", "b"]
