"""v2fly domain-list-community (``data/<list>`` files): which company or service a domain
belongs to, one list per owner (``umeng``, ``xiaomi``, ``huawei``, ``google``...).

Syntax (upstream README and ``main.go``): ``domain:x`` or a bare ``x`` (x and its subdomains),
``full:x`` (that host), ``keyword:`` and ``regexp:`` (counted as skipped: never scanned),
``include:other [@attr] [@-attr]`` (the other list's rules, optionally filtered by attribute),
attributes ``@ads``, ``@cn``, ``@!cn`` after a rule, affiliations ``&list`` (the rule is also
in that list), ``#`` comments anywhere.

Ownership, as auditor reads it:

- only *ownership lists* count; :func:`is_ownership_list` leaves out the category, region,
  TLD and other non-company lists;
- a rule belongs to the list that states it (in its file or by affiliation), not to the lists
  that include that one: ``youtube.com`` is ``youtube``'s, not ``google``'s or ``alphabet``'s.
  When several ownership lists state it, the one included by the others wins, else the first
  by name (a counted warning). A rule reached only through an included non-ownership list
  belongs to the ownership list that includes it;
- an ownership list's parent is the one ownership list with rules of its own that includes it
  (``umeng`` under ``alibaba``, ``google`` under ``alphabet``); none when several do;
- ``@ads`` makes a rule ``advertising``, and every rule of the same list under it (a host is
  in ``google@ads`` when any ``@ads`` rule of ``google`` covers it); ``@cn``/``@!cn`` say where
  a service is reachable, not who owns it, and are ignored;
- single-label rules (top-level domains such as ``google`` or ``app``) are skipped: a TLD names
  its registry operator, not the owner of the hosts under it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from auditor.intel.datasets import (
    MAX_RULES,
    DatasetEntity,
    ParsedDataset,
    RuleBuilder,
    decode_text,
    finish,
)
from auditor.intel.model import Category, IntelImportError
from auditor.intel.schema import Warnings, normalise_host, safe_text

log = logging.getLogger(__name__)

NON_OWNERSHIP_PREFIXES = ("category-", "geolocation-", "tld-")
"""Lists named for what the domains are about or where they are, not whose they are."""

NON_OWNERSHIP_LISTS = frozenset(
    {
        "cn",  # geolocation-cn + tld-cn, kept upstream for V2Ray compatibility
        "private",  # special-use and private names (lan, local, home.arpa...)
        "test",  # V2Ray core's test list
        "test-ipv6",  # mirrors of a test service, run by many organisations
        "connectivity-check",  # captive-portal probes of many vendors
        "archive",  # an alias of category-web-archive
        "anime",  # a genre: many unrelated sites
        "tor",  # the onion and exit pseudo-TLDs
        "google-registry-tld",  # open TLDs Google's registry runs (.app, .dev, .zip...)
    }
)
"""Lists without a category prefix that still say nothing about ownership (reviewed by hand
against each list's own comments, upstream commit c975ccef, 2026-08-19)."""

_LIST_NAME_RE = re.compile(r"^[a-z0-9!-]{1,100}$")
_ATTR_RE = re.compile(r"^[a-z0-9!]{1,64}$")
_MAX_LINE = 4096


def is_ownership_list(name: str) -> bool:
    """Whether a v2fly list names an owner (a company or a service), not a category, a
    region, a TLD set or a test list."""
    return not name.startswith(NON_OWNERSHIP_PREFIXES) and name not in NON_OWNERSHIP_LISTS


@dataclass(frozen=True, slots=True)
class _Rule:
    exact: bool
    host: str
    ads: bool
    where: str


@dataclass(frozen=True, slots=True)
class _Include:
    name: str
    must: frozenset[str]
    ban: frozenset[str]
    where: str


@dataclass
class _List:
    rules: list[_Rule] = field(default_factory=list)
    attrs: list[frozenset[str]] = field(default_factory=list)  # each rule's attributes
    includes: list[_Include] = field(default_factory=list)
    has_file: bool = False


def read_v2fly(files: Mapping[str, bytes], *, where: str = "v2fly") -> ParsedDataset:
    """Ownership lists of a domain-list-community checkout (its ``data/`` folder, or the
    folder itself): one entity per list, one rule per domain or full rule."""
    warnings = Warnings()
    lists: dict[str, _List] = {}
    skipped = 0
    names = _list_files(files)
    if not names:
        raise IntelImportError(f"{where}: no v2fly list in it (expected data/<list> files)")
    for name, path in names:
        lst = lists.setdefault(name, _List())
        lst.has_file = True
        own = is_ownership_list(name)
        text = decode_text(files[path], f"{where}/{path}")
        for lineno, line in enumerate(text.splitlines(), 1):
            at = f"{where}/{path}:{lineno}"
            body = line.split("#", 1)[0].strip()
            if not body:
                continue
            if len(body) > _MAX_LINE:
                warnings.add(f"{at}: line over {_MAX_LINE} characters")
                continue
            skipped += _parse_line(body, name, lists, own, warnings, at)
    owners = sorted(n for n in lists if is_ownership_list(n))
    dropped = sorted(n for n in lists if not is_ownership_list(n) and lists[n].has_file)
    parents = _parents(lists, owners, warnings, where)
    claims = _claims(lists, owners, warnings, where)
    rules = RuleBuilder(warnings)
    owning: set[str] = set()
    ancestors = _ancestors(lists, owners)
    chosen = {
        key: (*_owner(found, ancestors, warnings, key[1]), found[0][2])
        for key, found in sorted(claims.items())
    }
    ads_domains = {(o, h) for (exact, h), (o, ads, _) in chosen.items() if ads and not exact}
    for (exact, host), (owner, ads, at) in chosen.items():
        ads = ads or _under_ads(owner, host, ads_domains)
        rules.add(
            host,
            owner,
            exact=exact,
            categories=(Category.ADVERTISING,) if ads else (),
            where=at,
        )
        owning.add(owner)
    keep = set(owning)
    for name in list(owning):  # and the parents of the lists that own something
        seen = {name}
        while (p := parents.get(name)) is not None and p not in seen:
            keep.add(p)
            seen.add(p)
            name = p
    entities = [
        DatasetEntity(
            id=n,
            name=n,
            country=None,
            parent=parents.get(n) if parents.get(n) in keep else None,
            categories=(),
            url=None,
        )
        for n in sorted(keep)
    ]
    notes = (
        f"{len(dropped)} non-ownership lists left out (prefixes "
        f"{', '.join(NON_OWNERSHIP_PREFIXES)}; and {', '.join(sorted(NON_OWNERSHIP_LISTS))})",
        f"{len(owners) - len(keep)} ownership lists own no usable rule of their own "
        "(aliases that only include other lists, or only keyword/regexp/TLD rules)",
    )
    return finish(entities, rules, warnings, skipped=skipped, notes=notes)


def _list_files(files: Mapping[str, bytes]) -> list[tuple[str, str]]:
    """(list name, path) of the list files: those in the ``data`` folder closest to the top
    of the tree, else the files at the top of the tree (the user gave the data folder)."""
    in_data = [p for p in files if p.rsplit("/", 2)[-2:-1] == ["data"] or p.startswith("data/")]
    if in_data:
        top = min(p.count("/") for p in in_data)
        paths = [p for p in in_data if p.count("/") == top and p.rsplit("/", 2)[-2] == "data"]
    else:
        paths = [p for p in files if "/" not in p]
    out = []
    for path in paths:
        name = path.rsplit("/", 1)[-1].lower()
        if _LIST_NAME_RE.match(name):
            out.append((name, path))
    return sorted(out)


def _parse_line(
    body: str, name: str, lists: dict[str, _List], own: bool, warnings: Warnings, at: str
) -> int:
    """One rule line into ``lists``; returns 1 when an ownership list's rule is skipped."""
    typ, sep, rest = body.partition(":")
    if not sep or " " in typ or "\t" in typ:
        typ, rest = "domain", body
    typ = typ.strip().lower()
    parts = rest.split()
    if not parts:
        warnings.add(f"{at}: empty {safe_text(typ)} rule")
        return 0
    if typ == "include":
        target = parts[0].lower()
        must, ban = set(), set()
        for part in parts[1:]:
            attr = part[1:].lower()
            if part.startswith("@-") and _ATTR_RE.match(attr[1:]):
                ban.add(attr[1:])
            elif part.startswith("@") and _ATTR_RE.match(attr):
                must.add(attr)
            else:
                warnings.add(f"{at}: unknown field {safe_text(part)!r} in an include")
                return 0
        if not _LIST_NAME_RE.match(target):
            warnings.add(f"{at}: not a list name: {safe_text(target)!r}")
            return 0
        lists[name].includes.append(_Include(target, frozenset(must), frozenset(ban), at))
        return 0
    if typ in ("keyword", "regexp"):
        return 1 if own else 0
    if typ not in ("domain", "full"):
        warnings.add(f"{at}: unknown rule type {safe_text(typ)!r}")
        return 0
    attrs: set[str] = set()
    affiliations: list[str] = []
    for part in parts[1:]:
        if part.startswith("@") and _ATTR_RE.match(part[1:].lower()):
            attrs.add(part[1:].lower())
        elif part.startswith("&") and _LIST_NAME_RE.match(part[1:].lower()):
            affiliations.append(part[1:].lower())
        else:
            warnings.add(f"{at}: unknown field {safe_text(part)!r}")
            return 0
    host = normalise_host(parts[0])
    if host is None:
        warnings.add(f"{at}: not a host name: {safe_text(parts[0])!r}")
        return 0
    for target in (name, *affiliations):
        lst = lists.setdefault(target, _List())
        if len(lst.rules) >= MAX_RULES:
            raise IntelImportError(f"{at}: over {MAX_RULES} rules in list {target}")
        lst.rules.append(_Rule(typ == "full", host, "ads" in attrs, at))
        lst.attrs.append(frozenset(attrs))
    skip = "." not in host  # a TLD: its registry, not the owner of the hosts under it
    return 1 if skip and (own or any(is_ownership_list(a) for a in affiliations)) else 0


def _parents(
    lists: Mapping[str, _List], owners: list[str], warnings: Warnings, where: str
) -> dict[str, str]:
    """An ownership list's parent: the one ownership list with rules of its own that includes
    it. Cycles (a includes b includes a) are broken with a warning."""
    includers: dict[str, set[str]] = {}
    for name in owners:
        lst = lists[name]
        if not any("." in r.host for r in lst.rules):
            continue  # an alias that only includes others says nothing about parents
        for inc in lst.includes:
            if inc.name != name and is_ownership_list(inc.name) and inc.name in lists:
                includers.setdefault(inc.name, set()).add(name)
    parents = {child: next(iter(ps)) for child, ps in includers.items() if len(ps) == 1}
    for child in sorted(parents):
        seen = [child]
        cur = child
        while cur in parents:
            cur = parents[cur]
            if cur in seen:
                warnings.add(f"{where}: include cycle among {', '.join(seen)}; no parent for them")
                for n in seen:
                    parents.pop(n, None)
                break
            seen.append(cur)
    return parents


def _ancestors(lists: Mapping[str, _List], owners: list[str]) -> dict[str, set[str]]:
    """For each ownership list, the ownership lists that include it, directly or not."""
    direct: dict[str, set[str]] = {}
    for name in owners:
        for inc in lists[name].includes:
            if is_ownership_list(inc.name):
                direct.setdefault(inc.name, set()).add(name)
    out: dict[str, set[str]] = {}
    for name in owners:
        seen: set[str] = set()
        stack = list(direct.get(name, ()))
        while stack:
            cur = stack.pop()
            if cur not in seen:
                seen.add(cur)
                stack.extend(direct.get(cur, ()))
        seen.discard(name)
        out[name] = seen
    return out


_Claim = tuple[str, bool, str, bool]  # (list, ads, where, stated by the list itself)


def _claims(
    lists: Mapping[str, _List], owners: list[str], warnings: Warnings, where: str
) -> dict[tuple[bool, str], list[_Claim]]:
    """Who claims each (exact, host): ownership lists stating it, then (if none does) those
    reaching it through an included non-ownership list."""
    claims: dict[tuple[bool, str], list[_Claim]] = {}
    for name in owners:
        for r in lists[name].rules:
            if "." in r.host:
                claims.setdefault((r.exact, r.host), []).append((name, r.ads, r.where, True))
    budget = [MAX_RULES]
    memo: dict[str, list[tuple[_Rule, frozenset[str]]]] = {}
    for name in owners:
        for inc in lists[name].includes:
            if is_ownership_list(inc.name):
                continue
            for r, attrs in _resolve(inc.name, lists, memo, warnings, budget, where):
                if "." in r.host and _passes(attrs, inc):
                    found = claims.setdefault((r.exact, r.host), [])
                    if not any(c[3] for c in found):
                        found.append((name, r.ads, inc.where, False))
    for name in owners:
        for inc in lists[name].includes:
            if inc.name not in lists:
                warnings.add(f"{inc.where}: includes {inc.name!r}, which does not exist")
    return claims


def _passes(attrs: frozenset[str], inc: _Include) -> bool:
    """The upstream filter of a selective include (``isMatchAttrFilters``)."""
    if not attrs:
        return not inc.must
    return inc.must <= attrs and not (inc.ban & attrs)


def _resolve(
    start: str,
    lists: Mapping[str, _List],
    memo: dict[str, list[tuple[_Rule, frozenset[str]]]],
    warnings: Warnings,
    budget: list[int],
    where: str,
) -> list[tuple[_Rule, frozenset[str]]]:
    """A non-ownership list's rules with its includes expanded (the ownership lists it
    includes keep their own rules), depth-first without recursion; a cycle is a counted
    warning, and an expansion past ``MAX_RULES`` rules in all spoils the file."""
    if start in memo:
        return memo[start]
    stack = [start]
    on_stack = {start}
    next_include: dict[str, int] = {}
    partial: dict[str, list[tuple[_Rule, frozenset[str]]]] = {}
    while stack:
        name = stack[-1]
        lst = lists.get(name)
        if name not in partial:
            partial[name] = list(zip(lst.rules, lst.attrs, strict=True)) if lst else []
        incs = lst.includes if lst else []
        i = next_include.get(name, 0)
        if i < len(incs):
            inc = incs[i]
            if is_ownership_list(inc.name) or inc.name not in lists:
                next_include[name] = i + 1
            elif inc.name in on_stack:
                warnings.add(f"{inc.where}: include cycle through {inc.name!r}")
                next_include[name] = i + 1
            elif inc.name not in memo:
                stack.append(inc.name)  # this include is applied once the child is done
                on_stack.add(inc.name)
            else:
                got = [x for x in memo[inc.name] if _passes(x[1], inc)]
                budget[0] -= len(got)
                if budget[0] < 0:
                    raise IntelImportError(f"{where}: includes expand to over {MAX_RULES} rules")
                partial[name].extend(got)
                next_include[name] = i + 1
            continue
        stack.pop()
        on_stack.discard(name)
        memo[name] = partial.pop(name)
    return memo[start]


def _under_ads(owner: str, host: str, ads_domains: set[tuple[str, str]]) -> bool:
    """Whether an ``@ads`` domain rule of the same list covers ``host`` (``google`` states
    ``doubleclick.net @ads`` and ``full:doubleclick.net @cn``: the host is in google@ads)."""
    name = host
    while True:
        if (owner, name) in ads_domains:
            return True
        dot = name.find(".")
        if dot < 0:
            return False
        name = name[dot + 1 :]


def _owner(
    found: list[_Claim], ancestors: Mapping[str, set[str]], warnings: Warnings, host: str
) -> tuple[str, bool]:
    """The list a rule belongs to, and whether that list marks it ``@ads``."""
    stated = [c for c in found if c[3]] or found
    names = sorted({c[0] for c in stated})
    if len(names) > 1:  # the list that the others include is the most specific
        inner = [n for n in names if not any(n in ancestors.get(o, ()) for o in names if o != n)]
        names = inner or names
        if len(names) > 1:
            warnings.add(
                f"{found[0][2]}: {host} is stated by {', '.join(names[:4])}; kept {names[0]}"
            )
    owner = names[0]
    return owner, any(c[1] for c in stated if c[0] == owner)
