"""The scenario's marks on the report's timeline (method.scenario_events): placed by time,
listed with their offsets, and escaped (a mark's label is recorded text)."""

from __future__ import annotations

import pandas as pd

from auditor import columns as C
from auditor.analysis.report.page import html_report


def test_marks_are_placed_listed_and_escaped() -> None:
    t0 = pd.Timestamp("2026-12-06T10:00:00Z")
    flows = pd.DataFrame(
        {
            C.FLOW_ID: ["f1", "f2"],
            C.START: [t0, t0 + pd.Timedelta(seconds=100)],
            C.ORGANISATION_NAME: ["Xiaomi", "Google"],
            C.RECORD_TYPE: ["http", "http"],
        }
    )
    events = [
        {"session": "s", "ts": "2026-12-06T10:00:50Z", "kind": "scenario_mark",
         "message": "", "mark": "analytics-off-set"},
        {"session": "s", "ts": "2026-12-06T10:00:25Z", "kind": "scenario_setting",
         "message": "", "namespace": "global", "key": "multi_cb", "found": "1", "set": "0"},
        {"session": "s", "ts": "2026-12-06T10:01:00Z", "kind": "scenario_mark",
         "message": "", "mark": "<script>x</script>"},
        {"session": "s", "ts": "not a time", "kind": "scenario_mark", "message": "", "mark": "bad"},
    ]  # fmt: skip
    page = html_report({"method": {"scenario_events": events}}, flows)
    timeline = page[page.index("id='timeline'") :]
    assert timeline.count("class='mark'") == 3  # the one without a time is left out
    assert "left:50.00%" in timeline and "left:25.00%" in timeline
    listed = timeline[timeline.index("<ol class='marks'>") : timeline.index("</ol>")]
    assert listed.index("+25 s") < listed.index("multi_cb: 1 -&gt; 0") < listed.index("+50 s")
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in listed
