"""The bounded JSON loader: hostile nesting, bad syntax and wrong types give JsonError."""

from __future__ import annotations

import json

import pytest

from auditor import jsonio


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000, "[" * 65 + "]" * 65],
)
def test_deep_nesting_is_a_clear_error(text: str) -> None:
    with pytest.raises(jsonio.JsonError, match="nested"):
        jsonio.loads(text, "manifest.json")


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"k": "[" * 1000 + "{" * 1000})
    assert jsonio.loads(text, "x") == {"k": "[" * 1000 + "{" * 1000}
    assert jsonio.nesting(text) == 1
    assert jsonio.nesting(json.dumps({"a": '\\"[['})) == 1


def test_depth_at_the_limit_is_read() -> None:
    text = "[" * 64 + "]" * 64
    assert jsonio.nesting(text) == 64
    assert jsonio.loads(text, "x") is not None


def test_not_json_and_wrong_type(tmp_path) -> None:
    with pytest.raises(jsonio.JsonError, match=r"bundle\.json: not JSON"):
        jsonio.loads(b"{oops", "bundle.json")
    with pytest.raises(jsonio.JsonError, match="not JSON"):
        jsonio.loads(b"\xff\xfe", "x")
    with pytest.raises(jsonio.JsonError, match="expected a JSON dict, found list"):
        jsonio.loads("[]", "x", expect=dict)
    p = tmp_path / "big.json"
    p.write_text("[" + "1," * 100 + "1]")
    with pytest.raises(jsonio.JsonError, match="203 bytes is more than the 10 allowed"):
        jsonio.load(p, max_bytes=10)
    assert jsonio.load(p, expect=list)[0] == 1
