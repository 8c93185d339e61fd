"""NextDNS native tracking domains (``domains/<vendor>`` files): the hosts through which a
vendor's own operating system or devices report on their users (Apple, Huawei, Samsung,
Xiaomi, Windows, Alexa, Roku, Sonos).

One host per line, ``#`` comments. NextDNS blocks each listed name and the names under it, so
each line is a domain rule (the host and its subdomains). The vendor file is the entity; every
rule is ``vendor_telemetry``: the list exists to name the vendor's own tracking.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from auditor.intel.datasets import (
    DatasetEntity,
    ParsedDataset,
    RuleBuilder,
    decode_text,
    finish,
)
from auditor.intel.model import Category, IntelImportError
from auditor.intel.schema import Warnings, safe_text

log = logging.getLogger(__name__)

_VENDOR_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def read_nextdns(files: Mapping[str, bytes], *, where: str = "nextdns") -> ParsedDataset:
    """The vendor lists of a native-tracking-domains checkout (``domains/<vendor>``, or the
    ``domains`` folder itself)."""
    warnings = Warnings()
    paths = [p for p in files if p.startswith("domains/") and p.count("/") == 1]
    if not paths:
        paths = [p for p in files if "/" not in p and p.upper() not in ("LICENSE", "README.MD")]
    rules = RuleBuilder(warnings)
    entities = []
    for path in sorted(paths):
        vendor = path.rsplit("/", 1)[-1].lower()
        if not _VENDOR_RE.match(vendor):
            warnings.add(f"{where}/{path}: not a vendor list name: {safe_text(vendor)!r}")
            continue
        text = decode_text(files[path], f"{where}/{path}")
        count = 0
        for lineno, line in enumerate(text.splitlines(), 1):
            body = line.split("#", 1)[0].strip()
            if not body:
                continue
            at = f"{where}/{path}:{lineno}"
            if len(body.split()) != 1:
                warnings.add(f"{at}: expected one host name, got {safe_text(body)!r}")
                continue
            if rules.add(body, vendor, categories=(Category.VENDOR_TELEMETRY,), where=at):
                count += 1
        if count:
            entities.append(
                DatasetEntity(
                    id=vendor,
                    name=vendor.capitalize(),
                    country=None,
                    parent=None,
                    categories=(Category.VENDOR_TELEMETRY,),
                    url=None,
                )
            )
    if not entities:
        raise IntelImportError(f"{where}: no vendor list with a host in it (domains/<vendor>)")
    return finish(entities, rules, warnings)
