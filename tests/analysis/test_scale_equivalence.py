"""The vectorised analysis gives what the per-row analysis gave (issue 14).

The reference is the per-row code as it stood before it was vectorised (commit 14bbed2),
kept in :mod:`tests.analysis.slow_reference`: the packet rows, the flow table, the bulk
attribution (``KnowledgeBase.classify_hosts``) and the endpoint rows. Each real input is
imported as ``auditor import`` does and analysed twice, once as shipped and once with the
reference swapped in; the flow tables and findings.json (without ``generated_at``) must be
equal. Inputs are real captures made by other people's tools: the pcaps in
/work/shared/captures (read from there; skipped when absent, see its PROVENANCE.md) and the
browser and proxy HAR exports in tests/imports/samples (their PROVENANCE.md).

The bulk IP lookup (:mod:`auditor.intel.bulkip`) is compared with
:meth:`IpDatabase.lookup` on every server address of those captures and on a spread of
IPv4 addresses, edges of the special ranges and values that are not addresses.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from auditor.analysis import engine
from auditor.imports.session import import_files
from auditor.intel.ipdb import IpDatabase
from auditor.intel.kb import KnowledgeBase
from auditor.intel.model import IpFacts
from tests.analysis import slow_reference as ref

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "captures"
HARS = ROOT / "tests" / "imports" / "samples"
CAPTURES = sorted(SHARED.glob("*.pcap")) if SHARED.is_dir() else []
INPUTS = CAPTURES + [
    HARS / n for n in ("chrome.har", "firefox.har", "charles.har", "httptoolkit.har")
]


def _doc(analysis: engine.Analysis) -> dict[str, Any]:
    doc = dict(analysis.doc)
    doc.pop("generated_at")
    return json.loads(json.dumps(doc, sort_keys=True, default=str))


def _reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "read_packet_flows", ref.read_packet_flows)
    monkeypatch.setattr(engine, "build_flow_table", ref.build_flow_table)
    monkeypatch.setattr(engine, "_endpoints", ref._endpoints)

    def classify_hosts(
        kb: KnowledgeBase, hosts: Any, ips: Any = None, *, evidence: Any = None, wanted: Any = None
    ) -> pd.DataFrame:
        del wanted  # the reference gives every column; annotate reads those it asked for
        return ref.classify_hosts(kb, hosts, ips, evidence=evidence)

    monkeypatch.setattr(KnowledgeBase, "classify_hosts", classify_hosts)


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("scale")
    return {p.name: import_files([p], tmp / p.stem).session for p in INPUTS if p.is_file()}


@pytest.mark.parametrize("name", [p.name for p in INPUTS])
def test_fast_path_gives_the_reference_analysis(
    name: str, sessions: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    if name not in sessions:
        pytest.skip(f"{name} absent")
    fast = engine.analyze([sessions[name]])
    with monkeypatch.context() as m:
        _reference(m)
        slow = engine.analyze([sessions[name]])
    assert len(fast.flows) > 0
    pd.testing.assert_frame_equal(fast.flows, slow.flows)
    assert _doc(fast) == _doc(slow)


def test_the_reference_is_swapped_in(
    sessions: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The comparison compares something: with the reference in place, the fast functions
    are not called."""
    name = next(iter(sessions))
    _reference(monkeypatch)

    def boom(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("fast path called")

    monkeypatch.setattr("auditor.analysis.packetflows.path_codes", boom)
    monkeypatch.setattr("auditor.analysis.engine._group_attributions", boom)
    engine.analyze([sessions[name]])


def _capture_addresses() -> list[str]:
    from auditor.packets import read_capture

    out: set[str] = set()
    for p in CAPTURES:
        res = read_capture(p, keep_packets=False)
        for col in ("server_ip", "client_ip"):
            out |= {str(v) for v in res.flows[col].dropna().unique()}
    return sorted(out)


def test_bulk_ip_facts_equal_the_per_address_lookup() -> None:
    rng = random.Random(14)
    ips = _capture_addresses()
    ips += [".".join(str(rng.randrange(256)) for _ in range(4)) for _ in range(5_000)]
    # the edges of every special IPv4 range, and values that are not canonical addresses
    ips += ["0.0.0.0", "9.255.255.255", "10.0.0.0", "10.255.255.255", "11.0.0.0", "100.63.255.255"]
    ips += ["100.64.0.0", "127.255.255.255", "172.15.255.255", "172.31.255.255", "192.0.2.255"]
    ips += ["198.17.255.255", "198.19.255.255", "223.255.255.255", "224.0.0.0", "255.255.255.255"]
    ips += ["01.2.3.4", " 8.8.8.8", "8.8.8", "8.8.8.8.8", "256.1.1.1", "::ffff:8.8.8.8", "[::1]"]
    ips += ["2a00:1450:4001::1", "fe80::1%eth0", "", "not an address", "1.2.3.4\n"]
    from auditor.intel import bulkip

    assert bulkip._tables() is not None  # the bulk path runs, not its per-address fallback
    fast = [IpFacts(*row) for row in IpDatabase().lookup_rows(ips)]
    slow_db = IpDatabase()
    slow = [slow_db.lookup(ip) for ip in ips]
    assert sum(f.country is not None for f in slow) > 2_500  # the database answered
    assert [f for f, s in zip(fast, slow, strict=True) if f != s] == []


def test_bulk_ip_facts_without_networks_are_the_same_facts() -> None:
    """``networks=False`` (what attribution asks for) leaves the network out and nothing else,
    on the bulk path and on the per-address one."""
    rng = random.Random(6)
    ips = [".".join(str(rng.randrange(256)) for _ in range(4)) for _ in range(3_000)]
    ips += ["2a00:1450:4001::1", "::ffff:8.8.8.8", "10.0.0.1", "not an address", ""]
    for some in (ips, ips[-8:]):  # the bulk path, then fewer than it takes
        full = IpDatabase().lookup_columns(some)
        bare = IpDatabase().lookup_columns(some, networks=False)
        assert all(v is None for v in bare.network.tolist())
        assert any(v is not None for v in full.network.tolist())
        for field in ("ip", "country", "asn", "asn_org", "reason", "database"):
            assert getattr(bare, field).tolist() == getattr(full, field).tolist(), field


def test_many_addresses_give_the_reference_analysis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bench's capture (bench/analyze.py: DNS lookups, then flows to thousands of random
    addresses in hundreds of networks and countries), where rows share one lookup: the real
    captures above have too few addresses to tell a key that leaves out a country or an AS."""
    from bench.analyze import write_capture

    cap = tmp_path / "many.pcap"
    write_capture(cap, 20_000)
    session = import_files([cap], tmp_path / "s").session
    fast = engine.analyze([session])
    with monkeypatch.context() as m:
        _reference(m)
        slow = engine.analyze([session])
    assert fast.flows["server_country"].nunique() > 20
    pd.testing.assert_frame_equal(fast.flows, slow.flows)
    assert _doc(fast) == _doc(slow)
    # the endpoint rows sort Arrow string columns with Arrow, others with Python: the same
    assert isinstance(fast.flows["flow_id"].dtype, pd.StringDtype)
    texts = fast.flows.copy()
    for col in ("flow_id", "server_ip", "name"):
        texts[col] = texts[col].astype(object)
    kb = KnowledgeBase.load()
    assert engine._endpoints(texts, kb) == engine._endpoints(fast.flows, kb)


def test_distinct_rows_annotated_once_give_the_whole_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """engine.annotate_distinct (each distinct name, address and name evidence attributed
    once) gives KnowledgeBase.annotate of every row, on the bench's capture where thousands
    of DNS flows go to one resolver."""
    from auditor.analysis.flowtable import build_flow_table
    from auditor.analysis.packetflows import read_packet_flows
    from auditor.session import Session
    from bench.analyze import write_capture

    cap = tmp_path / "many.pcap"
    write_capture(cap, 12_000)
    sess = Session(import_files([cap], tmp_path / "s").session, lenient=True)
    table, _ = build_flow_table(sess, packets=read_packet_flows(sess.path, sess.manifest))
    assert len(table) >= engine.DISTINCT_MIN_ROWS
    kb = KnowledgeBase.load()
    whole = kb.annotate(table)
    seen: list[int] = []
    annotate = KnowledgeBase.annotation_columns  # what annotate() and the distinct rows call

    def counted(self: KnowledgeBase, flows: pd.DataFrame, **kw: Any) -> Any:
        seen.append(len(flows))
        return annotate(self, flows, **kw)

    monkeypatch.setattr(KnowledgeBase, "annotation_columns", counted)
    distinct = engine.annotate_distinct(kb, table)
    assert seen and seen[0] < 0.8 * len(table)  # the distinct rows were annotated
    pd.testing.assert_frame_equal(distinct, whole)
    assert whole["server_country"].nunique() > 10


def test_text_ranks_of_arrow_text_equal_those_of_objects() -> None:
    values = ["b", None, "a", "b", "é", "", "a", None, "Z", "10", "9"]
    out = []
    for dtype in ("string[pyarrow]", object):
        frame = pd.DataFrame({"c": pd.Series(values, dtype=dtype)})
        for missing in (None, "None"):
            ranks, texts = engine._text_ranks(
                frame, "c", lambda f=frame: f["c"].to_numpy(dtype=object), missing
            )
            listed = texts.tolist() if hasattr(texts, "tolist") else texts.to_pylist()
            out.append((dtype, missing, ranks.tolist(), listed))
    for arrow, plain in ((out[0], out[2]), (out[1], out[3])):
        assert arrow[2:] == plain[2:]
    assert out[0][3] == ["", "10", "9", "Z", "a", "b", "é"]
    assert out[0][2] == [5, -1, 4, 5, 6, 0, 4, -1, 3, 1, 2]


def test_names_the_knowledge_base_knows_nothing_of_share_one_attribution() -> None:
    """Endpoint groups of names nothing is known of are looked up once per address: each
    row's attribution is still the one its own lookup gives, and a name the knowledge base
    knows (or reaches through a CNAME) is never among them."""
    import numpy as np

    from auditor import columns
    from auditor.intel.cache import load_index

    kb = load_index()
    unknown = ["r1.example1.com", "r2.example2.com", "x.nothing-known.example"]
    assert all(kb.knows_nothing_of(h) for h in unknown)
    assert not kb.knows_nothing_of("tracking.miui.com")
    assert not kb.knows_nothing_of("r1.example1.com", cnames=["tracking.miui.com"])
    assert not kb.knows_nothing_of("not a host name")
    hosts = [unknown[0], "tracking.miui.com", unknown[1], unknown[2], unknown[0]]
    ips = ["8.8.8.8", "8.8.8.8", "8.8.8.8", "8.8.8.8", "1.1.1.1"]
    n = len(hosts)
    evidence = {c: np.full(n, None, dtype=object) for c in columns.NAME_EVIDENCE_COLUMNS}
    evidence[columns.CNAMES][3] = "x.nothing-known.example;tracking.miui.com"
    got = engine._group_attributions(
        kb, np.asarray(hosts, dtype=object), np.asarray(ips, dtype=object), evidence, np.arange(n)
    )
    assert got[0] is got[2]  # two unknown names at one address: one lookup, one JSON form
    assert got[3] is not got[0] and got[4] is not got[0]  # a CNAME to a known name; elsewhere
    for k in range(n):
        cnames = [x for x in str(evidence[columns.CNAMES][k] or "").split(";") if x]
        own = engine._row_json(kb.lookup(hosts[k], ips[k], cnames=cnames), {})
        assert json.dumps(got[k], sort_keys=True, default=str) == json.dumps(
            own, sort_keys=True, default=str
        )
    assert got[3]["organisation_name"] and not got[0]["organisation_name"]
