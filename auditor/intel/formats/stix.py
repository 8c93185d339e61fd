"""STIX 2.1 bundles: domain, URL and address indicators and observables, object by object."""

from __future__ import annotations

import ipaddress
import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from auditor.intel.ipdb import parse_ip
from auditor.intel.model import (
    IntelImportError,
    Source,
)
from auditor.intel.schema import (
    MAY_HOLD_SURROGATE,
    IndicatorKind,
    IntelEntry,
    IntelFile,
    IntelFormat,
    Warnings,
    finish_file,
    normalise_host,
    safe_text,
    scrub,
)

log = logging.getLogger(__name__)

# --- STIX 2.1 -----------------------------------------------------------------------------------

_STIX_NETWORK_TYPES = frozenset({"domain-name", "ipv4-addr", "ipv6-addr", "url"})


def _stix_value_entry(
    obj_type: str, value: str, *, label: str, source: Source, where: str, **meta: Any
) -> IntelEntry | str:
    """An entry for one observable value, or the reason it was refused."""
    if obj_type == "domain-name":
        host = normalise_host(value)
        if host is None:
            return f"not a domain name: {safe_text(value)!r}"
        return IntelEntry(IndicatorKind.DOMAIN, host, label, source, where=where, **meta)
    if obj_type == "url":
        try:
            netloc_host = urlsplit(value).hostname
        except ValueError:
            netloc_host = None
        meta["note"] = "; ".join(x for x in (f"url {safe_text(value, 200)}", meta.get("note")) if x)
        ip = parse_ip(netloc_host) if netloc_host else None
        if ip is not None:
            return IntelEntry(IndicatorKind.IP, str(ip), label, source, where=where, **meta)
        host = normalise_host(netloc_host) if netloc_host else None
        if host is None:
            return f"no host in url {safe_text(value)!r}"
        return IntelEntry(IndicatorKind.HOST, host, label, source, where=where, **meta)
    # ipv4-addr / ipv6-addr: an address or a CIDR block
    try:
        if "/" in value:
            net = ipaddress.ip_network(value, strict=False)
            if net.num_addresses == 1:
                return IntelEntry(
                    IndicatorKind.IP, str(net.network_address), label, source, where=where, **meta
                )
            return IntelEntry(IndicatorKind.NETWORK, str(net), label, source, where=where, **meta)
        addr = ipaddress.ip_address(value)
    except ValueError:
        return f"not an address: {safe_text(value)!r}"
    return IntelEntry(IndicatorKind.IP, str(addr), label, source, where=where, **meta)


def _pattern_values(pattern: str) -> tuple[list[tuple[str, str]], int]:
    """(object type, value) pairs an indicator pattern compares for equality, and the number of
    comparisons it has that cannot be turned into a host or address (hashes, LIKE, MATCHES...).
    """
    import stix2.patterns as sp
    from stix2.pattern_visitor import create_pattern_object

    tree = create_pattern_object(pattern, version="2.1")
    found: list[tuple[str, str]] = []
    other = 0
    stack: list[Any] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, sp._ComparisonExpression):
            lhs = node.lhs
            path = [getattr(c, "property_name", None) for c in getattr(lhs, "property_path", [])]
            obj_type = getattr(lhs, "object_type_name", None)
            usable = obj_type in _STIX_NETWORK_TYPES and path == ["value"] and not node.negated
            if usable and node.operator == "=" and isinstance(node.rhs, sp.StringConstant):
                found.append((str(obj_type), str(node.rhs.value)))
            elif usable and node.operator == "IN" and isinstance(node.rhs, sp.ListConstant):
                found.extend(
                    (str(obj_type), str(c.value))
                    for c in node.rhs.value
                    if isinstance(c, sp.StringConstant)
                )
            else:
                other += 1
            continue
        for attr in ("operands", "operand", "expression"):
            child = getattr(node, attr, None)
            if isinstance(child, list):
                stack.extend(reversed(child))
            elif child is not None:
                stack.append(child)
    found.reverse()
    return found, other


def parse_stix(text: str, *, path: Path, label: str, source: Source, **_: Any) -> IntelFile:
    """A STIX 2.1 bundle, parsed object by object with the ``stix2`` library.

    Indicators with STIX patterns over ``domain-name:value``, ``ipv4-addr:value``,
    ``ipv6-addr:value`` and ``url:value`` (``=`` and ``IN``) become entries carrying the
    indicator's name, labels, indicator types and creation time; so do such observables
    (SCOs) given directly in the bundle. The bundle's identities name the publisher.
    """
    import stix2
    from stix2.exceptions import STIXError

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise IntelImportError(f"{path}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}") from exc
    except RecursionError:
        raise IntelImportError(f"{path}: not JSON: nested too deeply") from None
    if MAY_HOLD_SURROGATE.search(text):
        data = scrub(data)
    if not isinstance(data, dict) or data.get("type") != "bundle":
        kind = data.get("type") if isinstance(data, dict) else type(data).__name__
        raise IntelImportError(f"{path}: not a STIX 2.1 bundle (type {safe_text(kind)!r})")
    objects = data.get("objects", [])
    if not isinstance(objects, list):
        raise IntelImportError(f"{path}: the bundle's `objects` must be a list")
    bundle_id = safe_text(data.get("id", "bundle"))
    warnings = Warnings()
    ignored = 0
    parsed: list[Any] = []
    # What stix2 (and stix2-patterns, antlr) raise on hostile objects goes beyond its own
    # STIXError: an empty pattern gives UnboundLocalError, for one. One bad object must not
    # lose the bundle, so each becomes a warning whatever the library raises.
    stix_errors = (
        STIXError,
        ValueError,
        TypeError,
        LookupError,
        AttributeError,
        NameError,
        ArithmeticError,
        RecursionError,
    )
    for i, raw in enumerate(objects):
        oid = safe_text(raw.get("id", f"#{i + 1}")) if isinstance(raw, dict) else f"#{i + 1}"
        try:
            parsed.append(stix2.parse(raw, allow_custom=True, version="2.1"))
        except stix_errors as exc:
            warnings.add(f"{path}: object {oid}: not valid STIX 2.1: {safe_text(str(exc), 300)}")
    identities = {o["id"]: str(o.get("name", "")) for o in parsed if o.get("type") == "identity"}
    publishers = sorted({n for n in identities.values() if n})
    if publishers:
        source = Source(
            id=source.id,
            title=source.title,
            publisher=", ".join(publishers),
            year=source.year,
            url=source.url,
            note=f"STIX bundle {bundle_id}; {source.note}",
        )
    entries: list[IntelEntry] = []
    for obj in parsed:
        otype = obj.get("type")
        oid = str(obj.get("id", ""))
        where = f"{path.name}#{oid}"
        if otype == "indicator":
            if obj.get("pattern_type") != "stix":
                ignored += 1
                continue
            try:
                values, other = _pattern_values(str(obj.get("pattern")))
            except stix_errors as exc:
                warnings.add(f"{path}: {oid}: bad pattern: {safe_text(str(exc), 300)}")
                continue
            if not values:
                ignored += 1
                continue
            created = obj.get("created")
            tags = tuple(
                sorted(
                    {
                        *map(str, obj.get("labels") or ()),
                        *map(str, obj.get("indicator_types") or ()),
                    }
                )
            )
            meta: dict[str, Any] = {
                "name": str(obj["name"]) if obj.get("name") else None,
                "tags": tags,
                "created": created.isoformat() if created is not None else None,
                "note": identities.get(str(obj.get("created_by_ref", ""))) or None,
            }
            if other:
                meta["note"] = "; ".join(
                    x for x in (meta["note"], f"{other} other comparisons not used") if x
                )
            for obj_type, value in values:
                entry = _stix_value_entry(
                    obj_type, value, label=label, source=source, where=where, **meta
                )
                if isinstance(entry, str):
                    warnings.add(f"{path}: {oid}: {entry}")
                else:
                    entries.append(entry)
        elif otype in _STIX_NETWORK_TYPES:
            entry = _stix_value_entry(
                str(otype), str(obj.get("value", "")), label=label, source=source, where=where
            )
            if isinstance(entry, str):
                warnings.add(f"{path}: {oid}: {entry}")
            else:
                entries.append(entry)
        elif otype not in ("identity", "marking-definition"):
            ignored += 1
    return finish_file(path, label, IntelFormat.STIX, source, entries, warnings, ignored)
