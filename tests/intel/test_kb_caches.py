"""A knowledge base's lookups kept between calls (a name's rungs and evidence, what they say
of its recipient) give what a fresh lookup gives, whatever was asked before: a name alone,
then with an address, a certificate or CNAMEs, and in the other order."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditor.intel.ipdb import IpDatabase
from auditor.intel.kb import KnowledgeBase
from auditor.intel.model import CertSubject


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return KnowledgeBase.load()


def _cert(org: str, *names: str, seen_by: str = "proxy") -> CertSubject:
    return CertSubject(org, None, names[0], tuple(names), "DigiCert Inc", "cd" * 32, seen_by)


HOSTS = [
    "tracking.miui.com",  # a KB host
    "api.weibo.cn",  # a KB domain
    "d111111abcdef8.cloudfront.net",  # a cloud's customer: hosting only
    "r1.example7.com",  # nobody the KB knows
    "bücher.xiaomi.com",  # a lookalike (its key is the A-label)
    "xn--bcher-kva.xiaomi.com",
    "not a name!",
    "8.8.8.8",  # an address written as a name
    "2a00:1450:4001::1",
]
EVIDENCE = [
    {},
    {"cert": _cert("Xiaomi Inc.", "*.example7.com", "*.miui.com")},
    {"cert": _cert("Xiaomi Inc.", "*.example7.com", seen_by="packets")},
    {"cnames": ["tracking.miui.com"]},
    {"cnames": ["d111111abcdef8.cloudfront.net", "api.weibo.cn"]},
]
ADDRESSES = [None, "8.8.8.8", "47.246.1.1", "2a00:1450:4001::1", "10.0.0.1"]


def test_cached_lookups_give_fresh_lookups(kb: KnowledgeBase) -> None:
    db = IpDatabase()
    fresh = KnowledgeBase.load()  # its caches empty
    for order in (ADDRESSES, ADDRESSES[::-1]):
        for host in HOSTS:
            for ev in EVIDENCE:
                for ip in order:
                    known = db.lookup(ip) if ip else None
                    got = kb.lookup(host, ip, known=known, **ev)
                    want = fresh.lookup(host, ip, cache=False, **ev)
                    assert got == want, (host, ip, ev)
                    assert got.to_json() == want.to_json()
    assert kb._named_cache and kb._recipient_cache  # the caches were used


def test_the_lookup_index_form_holds_no_cache(kb: KnowledgeBase) -> None:
    kb.lookup("tracking.miui.com", "8.8.8.8")
    state = kb.__getstate__()
    assert state["_named_cache"] == {} and state["_recipient_cache"] == {}
    old = dict(state)
    del old["_named_cache"], old["_recipient_cache"]  # an index pickled before they existed
    again = KnowledgeBase.__new__(KnowledgeBase)
    again.__setstate__(old)
    assert again.lookup("tracking.miui.com") == kb.lookup("tracking.miui.com", cache=False)


SAMPLES = Path(__file__).parent / "samples"


def test_user_intel_on_addresses_reaches_a_cached_name(kb: KnowledgeBase) -> None:
    """A name looked up alone first, then with an address the user's intel knows: the
    address's labels and source are there, as on a first lookup with it (the name's part is
    what is kept; the address's part is added on each lookup)."""
    lab = KnowledgeBase.load([f"lab.intel={SAMPLES / 'lab.intel.yaml'}"])
    fresh = KnowledgeBase.load([f"lab.intel={SAMPLES / 'lab.intel.yaml'}"])
    for host in ("r1.example7.com", "tracking.miui.com", "sdk.example-ads.example"):
        alone = lab.lookup(host)
        assert "lab.intel" not in alone.labels or host.endswith("example-ads.example")
        with_ip = lab.lookup(host, "203.0.113.77")
        assert with_ip == fresh.lookup(host, "203.0.113.77", cache=False)
        assert "lab.intel" in with_ip.labels, (host, with_ip.labels)
        assert lab.lookup(host) == alone  # and the name alone again, after
    ads = lab.lookup("r1.example7.com", "198.51.100.9")  # the user's network of example-ads
    assert ads == fresh.lookup("r1.example7.com", "198.51.100.9", cache=False)
    assert "lab.intel" in ads.labels
