"""The public suffix list, offline: registrable domains and private suffixes of host names.

The list is the snapshot bundled in tldextract's wheel (``tldextract/.tld_set_snapshot``, the
Mozilla public suffix list as text), read without importing tldextract. Why not call
tldextract: importing it costs about 170 ms here (it imports requests) and building its trie
another 60 ms, against a 300 ms budget for a cold ``auditor intel lookup``; the rules below
are the list's own algorithm (https://publicsuffix.org/list/, "Algorithm") on two sets, and
``tests/intel/test_psl.py`` checks them against tldextract on every host of the evaluation
set and of the data sets.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

SNAPSHOT = ".tld_set_snapshot"


@dataclass(frozen=True, slots=True)
class SuffixList:
    """Rules of the two sections of the list: plain (``co.uk``), wildcard (``*.ck``) and
    exception (``!www.ck``) rules, each section on its own."""

    icann: frozenset[str]
    private: frozenset[str]
    source: str

    @classmethod
    def parse(cls, text: str, source: str) -> SuffixList:
        icann: set[str] = set()
        private: set[str] = set()
        target = icann
        for raw in text.splitlines():
            line = raw.strip()
            if "===BEGIN PRIVATE DOMAINS===" in line:
                target = private
                continue
            if "===BEGIN ICANN DOMAINS===" in line:
                target = icann
                continue
            if not line or line.startswith("//"):
                continue
            rule = line.split()[0].lower()
            try:
                rule = ".".join(
                    p if p in ("*", "") or p.startswith("!") else p.encode("idna").decode()
                    for p in rule.split(".")
                )
            except UnicodeError:
                continue
            target.add(rule)
        return cls(frozenset(icann), frozenset(private), source)

    def suffix(self, host: str, *, private: bool = False) -> tuple[str | None, bool]:
        """The longest public suffix of ``host`` and whether it came from the private
        section (only searched with ``private``). ``(None, False)``: no rule matches."""
        # each suffix of the host's labels, longest first, as slices of the host (no split
        # and join per suffix: thousands of names per analysis)
        sections = (
            ((self.icann, False), (self.private, True)) if private else ((self.icann, False),)
        )
        start = 0
        while True:
            name = host[start:]
            dot = host.find(".", start)
            tail = host[dot + 1 :] if dot >= 0 else None  # the name without its first label
            wild = "*." + tail if tail is not None else None
            for rules, is_private in sections:
                if "!" + name in rules:
                    return tail or None, is_private
                if name in rules or (wild is not None and wild in rules):
                    return name, is_private
            if dot < 0:
                return None, False
            start = dot + 1

    def registrable_domain(self, host: str) -> str | None:
        """The suffix (ICANN section) and one more label: ``a.b.example.co.uk`` ->
        ``example.co.uk``; None for a suffix itself or a name under no known suffix."""
        suffix, _ = self.suffix(host)
        if suffix is None or suffix == host or not host.endswith("." + suffix):
            return None
        head = host[: -len(suffix) - 1]
        return f"{head.rsplit('.', 1)[-1]}.{suffix}"

    def private_suffix(self, host: str) -> str | None:
        suffix, is_private = self.suffix(host, private=True)
        return suffix if is_private else None


def snapshot_path() -> Path:
    spec = importlib.util.find_spec("tldextract")
    if spec is None or spec.origin is None:
        raise RuntimeError("tldextract (which carries the public suffix list) is not installed")
    return Path(spec.origin).with_name(SNAPSHOT)


@functools.cache
def bundled() -> SuffixList:
    path = snapshot_path()
    return SuffixList.parse(path.read_text(encoding="utf-8"), str(path))


_current: list[SuffixList] = []


def current() -> SuffixList:
    """The list in use: one seeded from the lookup index, else the bundled snapshot."""
    if not _current:
        _current.append(bundled())
    return _current[0]


def seed(psl: SuffixList) -> None:
    _current[:] = [psl]
