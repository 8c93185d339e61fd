"""auditor's reading of the public suffix list against tldextract's, on the same snapshot."""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import pytest
import tldextract

from auditor.intel import kb, psl

EVAL = Path(__file__).with_name("eval") / "hosts.csv"

HOSTS = [
    "tracking.miui.com",
    "a.b.example.co.uk",
    "d111111abcdef8.cloudfront.net",
    "bucket.s3.amazonaws.com",
    "x.s3.eu-west-1.amazonaws.com",
    "myapp.appspot.com",
    "www.ck",  # exception rule !www.ck
    "a.b.ck",  # wildcard *.ck
    "foo.bar.kawasaki.jp",
    "city.kawasaki.jp",
    "com",
    "example.invalid",
    "xn--fiqs8s.xn--fiqz9s",
    "api.xiaomi.com.cn",
    "sub.github.io",
]


@functools.cache
def _extractor() -> tldextract.TLDExtract:
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def _reference(host: str) -> tuple[str | None, str | None]:
    ext = _extractor()
    icann = ext(host, include_psl_private_domains=False)
    full = ext(host, include_psl_private_domains=True)
    rd = f"{icann.domain}.{icann.suffix}" if icann.domain and icann.suffix else None
    return rd, (full.suffix if full.is_private and full.suffix else None)


def _hosts() -> list[str]:
    out = list(HOSTS)
    if EVAL.exists():
        with EVAL.open(encoding="utf-8") as fh:
            out += [row["host"] for row in csv.DictReader(fh)]
    return out


@pytest.mark.parametrize("host", HOSTS)
def test_known_cases(host: str) -> None:
    assert (kb.registrable_domain(host), kb.private_suffix(host)) == _reference(host)


def test_every_evaluation_host_agrees_with_tldextract() -> None:
    hosts = _hosts()
    wrong = [h for h in hosts if (kb.registrable_domain(h), kb.private_suffix(h)) != _reference(h)]
    assert not wrong, wrong[:20]


def test_the_list_has_both_sections() -> None:
    lst = psl.bundled()
    assert "co.uk" in lst.icann and "cloudfront.net" in lst.private
    assert "cloudfront.net" not in lst.icann
