"""Each parser's fuzz tests together ask for at least the examples its run is given: the shares
of its ``@fuzz`` tests add up to 1 or more (a long run of N examples then tries N or more
inputs, unless a test's input space is smaller than its share, which the test must avoid)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from tests.fuzz.helpers import SHARES

MODULES = sorted(p.stem for p in Path(__file__).parent.glob("test_fuzz_*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_a_parsers_shares_add_up_to_its_examples(module: str) -> None:
    importlib.import_module(f"tests.fuzz.{module}")
    parser = module.removeprefix("test_fuzz_")
    shares = SHARES.get(parser)
    assert shares, f"{module} declares no @fuzz test"
    assert sum(shares.values()) >= 1 - 1e-9, shares
