"""The analysis at its edges, on real inputs: which socket may own a flow (never one the
kernel no longer ties to a process), what an import skipped reaches the report's warnings,
and a value seen only by its shape does not contradict a claim.

Sockets are read on a real phone's tables
(``tests/device/samples/proc_net_tcp{,6}_xcrash65.txt``, quoted in bug report
iqiyi/xCrash#65; see that folder's README): its TIME_WAIT row prints uid 0 and
inode 0 whatever app opened the connection. Sessions recorded before the socket poller kept
such rows apart (``ownerless``) hold them among the ``entries``; the analysis must skip them
there too.
"""

from __future__ import annotations

import json
from pathlib import Path

from auditor.analysis.flowtable import SocketIndex
from auditor.device import parsers
from auditor.device.model import SocketState

SAMPLES = Path(__file__).resolve().parents[1] / "device" / "samples"


def _rows() -> list[list[object]]:
    out: list[list[object]] = []
    for proto in ("tcp", "tcp6"):
        text = (SAMPLES / f"proc_net_{proto}_xcrash65.txt").read_text(encoding="utf-8")
        out += [
            [proto, str(e.local_ip_unmapped), e.local_port, str(e.remote_ip_unmapped),
             e.remote_port, e.state.value, e.uid, e.inode]
            for e in parsers.parse_proc_net(text, proto).items  # type: ignore[arg-type]
        ]  # fmt: skip
    return out


def test_a_time_wait_row_among_old_entries_owns_no_flow(tmp_path: Path) -> None:
    rows = _rows()
    waiting = [r for r in rows if r[5] == SocketState.TIME_WAIT.value]
    assert waiting and all(r[6] == 0 and r[7] == 0 for r in waiting)  # as the kernel prints it
    owned = [r for r in rows if r[5] != SocketState.TIME_WAIT.value and r[6] != 0]
    assert owned
    path = tmp_path / "sockets.jsonl"
    # the layout of a session recorded before the poller split ownerless rows out
    path.write_text(json.dumps({"ts": "2026-01-01T00:00:00Z", "entries": rows}) + "\n")
    idx = SocketIndex.load(path)
    ts = idx.times[0]
    for r in waiting:
        assert idx.by_port(ts, int(r[2])) is None  # type: ignore[call-overload]
        assert 0 not in idx.toward(ts, (str(r[3]), int(r[4])))  # type: ignore[call-overload]
    for r in owned:
        assert idx.by_port(ts, int(r[2])) == r[6]  # type: ignore[call-overload]


def test_items_an_import_skipped_are_warnings_of_the_report(tmp_path: Path) -> None:
    """A real HAR export of which 3 of 10 entries are malformed: the report's warnings name
    the skipped entries (before, they were only in the import's output: ``warnings: 0``)."""
    from auditor.analysis.engine import analyze
    from auditor.imports.session import import_files

    har = Path(__file__).resolve().parents[1] / "imports" / "samples" / "malformed_3_of_10.har"
    res = import_files([har], tmp_path)
    doc = analyze([res.session]).doc
    lines = [w for w in doc["warnings"] if "not imported" in w]
    assert lines and all("malformed_3_of_10.har" in w for w in lines)
    assert sum(int(w.split(": ")[2].split()[0]) for w in lines) == 3
    assert doc["coverage"]["skipped_total"] == 3


def test_a_shape_without_context_does_not_contradict_a_personal_data_claim(
    tmp_path: Path,
) -> None:
    """The IMA SDK ad request of tests/data/controls (a Luhn-valid ``correlator``, sent to
    Google in the US): its number alone is no evidence that personal data left the EU; the
    same request contradicts the claim once that number is the device's IMEI."""
    from auditor.analysis.claims import load_claims
    from auditor.analysis.engine import analyze
    from auditor.imports.session import import_files

    har = Path(__file__).resolve().parents[1] / "data" / "controls" / "doubleclick_correlator.har"
    claims_file = tmp_path / "claims.yaml"
    claims_file.write_text(
        "claims:\n  - claim: No personal data leaves the EU\n"
        "    kind: no_personal_data_outside\n    region: EU\n"
    )
    claims = load_claims(claims_file)
    verdicts = {}
    for label, ids in (("shape", {}), ("device", {"imei": "419772853168473"})):
        res = import_files([har], tmp_path / label, identifiers=ids)
        (verdict,) = analyze([res.session], claims=claims).doc["claims"]
        verdicts[label] = verdict["verdict"]
    assert verdicts["device"] == "contradicted"
    assert verdicts["shape"] != "contradicted"


def test_endpoint_times_are_the_flows_times_whatever_unit_pandas_parses_to(
    tmp_path: Path,
) -> None:
    """A real HAR export analysed: each endpoint's first_seen and last_seen are among its
    flows' own start times (pandas 3 parses ISO text to microseconds, and a division that
    assumed nanoseconds put every endpoint in January 1970)."""
    import pandas as pd

    from auditor import columns as C
    from auditor.analysis.engine import analyze
    from auditor.imports.session import import_files

    har = Path(__file__).resolve().parents[1] / "imports" / "samples" / "malformed_3_of_10.har"
    a = analyze([import_files([har], tmp_path).session])
    starts = pd.to_datetime(a.flows[C.START], utc=True).dropna()
    assert len(starts) and a.doc["endpoints"]
    lo, hi = starts.min(), starts.max()
    for e in a.doc["endpoints"]:
        for key in ("first_seen", "last_seen"):
            t = pd.Timestamp(e[key])
            assert lo - pd.Timedelta(seconds=1) <= t <= hi + pd.Timedelta(seconds=1), (key, t)
