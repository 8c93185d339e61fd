"""User intel: auditor's own YAML format, STIX 2.1 bundles, hosts files and adblock lists.

``auditor intel lookup --intel LABEL=FILE`` (and ``KnowledgeBase.load(extra=...)``) read these.
Each parser takes text and gives an :class:`IntelFile` of :class:`IntelEntry` records; only
:func:`load_intel` touches the file system. Problems that spoil a whole file raise
:class:`IntelImportError` naming the file and line; problems with one line or object become
counted warnings, so one bad rule never hides the rest.

Matching, as :class:`IntelIndex` does it:

- ``host`` entries (hosts files, STIX ``url:value``): that exact host only;
- ``domain`` entries (adblock ``||host^``, STIX ``domain-name:value``, YAML ``domain:``): the
  name and every host under it;
- ``ip`` / ``network`` entries (STIX ``ipv4-addr``/``ipv6-addr``, YAML ``ip:``/``network:``).

The parsing helpers shared with the knowledge base live in :mod:`auditor.intel.schema`;
one module per format in :mod:`auditor.intel.formats`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from auditor.intel.model import (
    IntelImportError,
    Source,
)
from auditor.intel.schema import (
    LABEL_RE,
    MAX_FILE_BYTES,
    IndicatorKind,
    IntelEntry,
    IntelFile,
    IntelFormat,
    safe_text,
)

log = logging.getLogger(__name__)

# --- reading files ------------------------------------------------------------------------------


def parse_intel_spec(spec: str | Path) -> tuple[str, Path]:
    """``label=path`` (or a bare path, labelled by its stem) as (label, path)."""
    text = str(spec)
    label, sep, rest = text.partition("=")
    if sep and LABEL_RE.match(label) and not Path(text).exists():
        return label, Path(rest)
    path = Path(text)
    stem = re.sub(r"[^A-Za-z0-9_.-]", "-", path.stem)[:64].strip("-.") or "intel"
    return stem, path


def file_source(path: Path, label: str, data: bytes, *, publisher: str = "user intel") -> Source:
    """The source that entries of a user file cite: the file itself, with its SHA-256."""
    digest = hashlib.sha256(data).hexdigest()
    return Source(
        id=f"intel:{label}",
        title=f"{label} ({path.name})",
        publisher=publisher,
        year=None,
        url=path.resolve().as_uri(),
        note=f"user intel file, sha256 {digest}",
    )


def detect_format(path: Path, text: str) -> IntelFormat:
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return IntelFormat.YAML
    if suffix in (".json", ".stix"):
        return IntelFormat.STIX
    head = text.lstrip()
    if head.startswith("[Adblock") or head.startswith("!"):
        return IntelFormat.ADBLOCK
    if head[:1] in ("{", "["):
        return IntelFormat.STIX
    for line in text.splitlines()[:200]:
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith(("||", "!", "[Adblock", "@@")) or "##" in s:
            return IntelFormat.ADBLOCK
        return IntelFormat.HOSTS
    return IntelFormat.HOSTS


def load_intel(
    spec: str | Path,
    *,
    sources: Mapping[str, Source] | None = None,
    fmt: IntelFormat | None = None,
) -> IntelFile:
    """Read and parse one intel file given as ``label=path`` or a path.

    ``sources`` are the knowledge base's sources, which a YAML intel file may cite by id.
    """
    label, path = parse_intel_spec(spec)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise IntelImportError(f"{path}: {size} bytes, over the {MAX_FILE_BYTES}-byte limit")
        data = path.read_bytes()
    except OSError as exc:
        raise IntelImportError(f"{path}: cannot read intel file: {exc.strerror or exc}") from exc
    except ValueError as exc:  # a NUL in the path
        raise IntelImportError(f"{safe_text(str(path))}: cannot read intel file: {exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise IntelImportError(f"{path}:{line}: not UTF-8 text (byte {exc.start})") from exc
    kind = fmt or detect_format(path, text)
    from auditor.intel.formats.adblock import parse_adblock
    from auditor.intel.formats.hosts import parse_hosts
    from auditor.intel.formats.stix import parse_stix
    from auditor.intel.formats.yaml import parse_intel_yaml

    parsers: dict[IntelFormat, Callable[..., IntelFile]] = {
        IntelFormat.YAML: parse_intel_yaml,
        IntelFormat.STIX: parse_stix,
        IntelFormat.HOSTS: parse_hosts,
        IntelFormat.ADBLOCK: parse_adblock,
    }
    src = file_source(path, label, data)
    result = parsers[kind](text, path=path, label=label, source=src, sources=sources or {})
    log.info("%s", result.summary())
    return result


# --- matching -----------------------------------------------------------------------------------


@dataclass
class IntelIndex:
    """Entries of several intel files, indexed for matching hosts and addresses."""

    files: Sequence[IntelFile] = ()
    _hosts: dict[str, list[IntelEntry]] = field(default_factory=dict)
    _domains: dict[str, list[IntelEntry]] = field(default_factory=dict)
    _ips: dict[str, list[IntelEntry]] = field(default_factory=dict)
    _networks: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, IntelEntry]] = field(
        default_factory=list
    )

    def __post_init__(self) -> None:
        for f in self.files:
            for e in f.entries:
                if e.kind is IndicatorKind.HOST:
                    self._hosts.setdefault(e.value, []).append(e)
                elif e.kind is IndicatorKind.DOMAIN:
                    self._domains.setdefault(e.value, []).append(e)
                elif e.kind is IndicatorKind.IP:
                    self._ips.setdefault(e.value, []).append(e)
                else:
                    self._networks.append((ipaddress.ip_network(e.value), e))

    def __bool__(self) -> bool:
        return bool(self._hosts or self._domains or self._ips or self._networks)

    def match_host(self, host: str) -> list[IntelEntry]:
        """Entries for ``host``, most specific first (exact host, then longest domain)."""
        out = list(self._hosts.get(host, ()))
        name = host
        while True:
            out.extend(self._domains.get(name, ()))
            dot = name.find(".")
            if dot < 0:
                break
            name = name[dot + 1 :]
        return out

    def match_ip(self, ip: str) -> list[IntelEntry]:
        out = list(self._ips.get(ip, ()))
        if self._networks:
            addr = ipaddress.ip_address(ip)
            nets = [(n, e) for n, e in self._networks if n.version == addr.version and addr in n]
            nets.sort(key=lambda t: -t[0].prefixlen)
            out.extend(e for _, e in nets)
        return out
