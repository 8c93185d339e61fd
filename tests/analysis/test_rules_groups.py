"""How the rules that group flows by (name, recipient) tell the groups apart
(auditor.analysis.rules._text_codes): by the text of a value, as a finding names it, so that
0, 0.0 and False (one value to Python's equality and hashing) are three names, and 0 and "0"
one."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditor import columns as C
from auditor.analysis.policy import load_policy
from auditor.analysis.rules import Context, IdleTraffic, _text_codes


def _texts(values: list[Any]) -> list[str]:
    """What the rules name a value by: its ``str``, "" for a missing one."""
    return ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values]


def _same_where_texts_are(values: list[Any]) -> None:
    codes = _text_codes(pd.Series(values, dtype=object)).tolist()
    texts = _texts(values)
    for i in range(len(values)):
        for j in range(len(values)):
            assert (codes[i] == codes[j]) == (texts[i] == texts[j]), (values[i], values[j])


@pytest.mark.parametrize(
    "values",
    [
        [0, 0.0, False, "0", "0.0", "False"],
        [1, True, 1.0, "1", "True", np.int64(1), np.float64(1.0), np.bool_(True)],
        [False, 0, None, "", float("nan"), "a", 0.0],
        ["a", "b", "a"],
    ],
)
def test_codes_are_equal_exactly_where_the_texts_are(values: list[Any]) -> None:
    _same_where_texts_are(values)


@given(
    st.lists(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-2, 2),
            st.sampled_from([0.0, 1.0, -1.0, 2.5]),
            st.sampled_from(["", "0", "1", "True", "False", "0.0", "x.example"]),
        ),
        max_size=12,
    )
)
def test_codes_follow_the_texts_for_any_mix(values: list[Any]) -> None:
    _same_where_texts_are(values)


def test_idle_traffic_to_names_equal_in_python_but_not_in_text_is_three_findings() -> None:
    """Three idle flows whose names are 0, 0.0 and False (an odd import): three endpoints,
    each its own finding citing its own flow, not one named "0" citing all three."""
    base = {
        C.RECORD_TYPE: "http", C.SCHEME: "https", C.START: pd.Timestamp("2026-01-01", tz="UTC"),
        C.ORGANISATION: "xiaomi", C.ORGANISATION_NAME: "Xiaomi Corporation", C.PARENT: None,
        C.COUNTRY: "CN", C.STATE_LINKED: True, C.STATE_CONTROL: False,
        C.LEGAL_EXPOSURE: "CN", C.CATEGORIES: "vendor_telemetry", C.BYTES_UP: 10,
        C.IDLE: True, C.ERROR: None, C.APPS: "",
    }  # fmt: skip
    names: list[Any] = [0, 0.0, False]
    flows = pd.DataFrame(
        [{**base, C.FLOW_ID: f"f{i}", C.NAME: n} for i, n in enumerate(names)]
    ).astype({C.NAME: object})
    ctx = Context(flows=flows, policy=load_policy("default"), vendor="xiaomi")
    found = list(IdleTraffic().check(ctx))
    assert sorted(f.flow_ids for f in found) == [("f0",), ("f1",), ("f2",)]
