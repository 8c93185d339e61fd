"""How the offline internet answers each host: a catalogue of services loaded from data.

``services.yaml`` beside this module lists the hosts a handset talks to (exact names and
``*`` patterns), what each answers per path and method, and the study or vendor document that
each entry stands for. :func:`load_services` validates it, naming the file and line of any
problem. :func:`respond` is a pure function from a request to a :class:`Response`, so the
answers can be tested without sockets; :mod:`vhandset.offline.internet` serves them.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import functools
import gzip
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vhandset.errors import VhandsetError

SERVICES_FILE = Path(__file__).with_name("services.yaml")

GZIP_MIN_SIZE = 256
"""Smaller bodies are sent as they are even when the client accepts gzip."""

_BODYLESS = frozenset({204, 304})
_LABEL_RE = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_PATTERN_LABEL_RE = re.compile(r"^[a-z0-9_*-]{1,63}$")
_METHOD_RE = re.compile(r"^[A-Z]{1,20}$")
_HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_YEAR_RE = re.compile(r"\b(19|20)\d\d\b")
_UPLOAD_METHODS = frozenset({"POST", "PUT", "PATCH"})
_BODY_KEYS = ("json", "text", "hex", "base64")

# Synthetic addresses must never route anywhere real: benchmarking (RFC 2544) and
# documentation (RFC 5737, RFC 3849) ranges only.
SAFE_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in ("198.18.0.0/15", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
)
SAFE_V6 = (ipaddress.IPv6Network("2001:db8::/32"),)


class ServicesError(VhandsetError):
    """The services catalogue is missing or malformed."""


@dataclass(frozen=True, slots=True)
class Response:
    """An answer, before framing: the server adds Content-Length and Connection."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    service: str = ""

    def header(self, name: str) -> str | None:
        lname = name.lower()
        return next((v for k, v in self.headers if k.lower() == lname), None)


@dataclass(frozen=True, slots=True)
class Reply:
    """What a route answers, as written in the catalogue."""

    status: int
    body: bytes
    content_type: str | None
    headers: tuple[tuple[str, str], ...] = ()
    note: str = ""


@dataclass(frozen=True, slots=True)
class Route:
    path: str  # a glob on the path without its query; "*" matches "/" too
    methods: frozenset[str] | None  # None: any method
    reply: Reply

    def matches(self, method: str, path: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        return fnmatch.fnmatchcase(path, self.path)


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    hosts: tuple[str, ...]  # exact names and patterns with "*"
    source: str
    note: str
    routes: tuple[Route, ...]
    default: Reply | None = None
    ipv4: str | None = None
    ipv6: str | None = None
    cname: str | None = None
    line: int = 0


@dataclass(frozen=True)
class Catalogue:
    services: tuple[Service, ...]
    upload: Reply  # POST/PUT/PATCH that no route answers
    fetch: Reply  # every other method that no route answers
    source: str = ""

    @functools.cached_property
    def _exact(self) -> dict[str, Service]:
        return {h: s for s in self.services for h in s.hosts if "*" not in h}

    @functools.cached_property
    def _patterns(self) -> list[tuple[int, int, str, Service]]:
        found = [
            (-len(h.replace("*", "")), i, h, s)
            for i, s in enumerate(self.services)
            for h in s.hosts
            if "*" in h
        ]
        return sorted(found, key=lambda t: (t[0], t[1]))

    def service_for(self, host: str) -> Service | None:
        """The service answering ``host``: an exact name, else the most specific pattern."""
        host = normalize_host(host)
        exact = self._exact.get(host)
        if exact is not None:
            return exact
        for _, _, pattern, service in self._patterns:
            if fnmatch.fnmatchcase(host, pattern):
                return service
        return None

    def reply_for(self, host: str, method: str, path: str) -> tuple[Reply, str]:
        """(reply, service name) for a request; the catalogue's defaults when nothing matches."""
        method = method.upper()
        path = path.split("?", 1)[0].split("#", 1)[0] or "/"
        service = self.service_for(host)
        if service is not None:
            for route in service.routes:
                if route.matches(method, path):
                    return route.reply, service.name
            if service.default is not None:
                return service.default, service.name
        name = service.name if service else "default"
        return (self.upload if method in _UPLOAD_METHODS else self.fetch), name


def normalize_host(host: str) -> str:
    """Lower case, no trailing dot, no port, no IPv6 brackets."""
    h = host.strip().lower()
    if h.startswith("["):
        h = h[1:].split("]", 1)[0]
    elif h.count(":") == 1:
        h = h.split(":", 1)[0]
    return h.rstrip(".")


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding value admits gzip (``q=0`` refuses it)."""
    for item in accept_encoding.split(","):
        token, _, params = item.strip().partition(";")
        if token.strip().lower() not in ("gzip", "x-gzip", "*"):
            continue
        q = params.strip().lower()
        if q.startswith("q="):
            try:
                return float(q[2:]) > 0
            except ValueError:
                return False
        return True
    return False


def respond(
    host: str,
    method: str,
    path: str,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    *,
    catalogue: Catalogue | None = None,
) -> Response:
    """The answer of the service named ``host`` to one request. Pure: no sockets, no clock.

    ``body`` is the request body; today no entry depends on it, but the signature is the one
    the server calls so that one can.
    """
    del body
    cat = catalogue if catalogue is not None else default_catalogue()
    reply, service = cat.reply_for(host, method, path)
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    out: list[tuple[str, str]] = []
    if reply.content_type and reply.status not in _BODYLESS:
        out.append(("Content-Type", reply.content_type))
    out.extend(reply.headers)
    payload = b"" if reply.status in _BODYLESS else reply.body
    already = any(k.lower() == "content-encoding" for k, _ in reply.headers)
    if (
        len(payload) >= GZIP_MIN_SIZE
        and not already
        and accepts_gzip(lowered.get("accept-encoding", ""))
    ):
        payload = gzip.compress(payload, mtime=0)
        out.append(("Content-Encoding", "gzip"))
        out.append(("Vary", "Accept-Encoding"))
    out.append(("X-Auditor-Service", service))
    return Response(reply.status, tuple(out), payload, service)


@functools.cache
def default_catalogue() -> Catalogue:
    """``services.yaml`` beside this module, loaded once."""
    return load_services()


def load_services(path: str | Path | None = None) -> Catalogue:
    """Load and validate a catalogue (``services.yaml`` beside this module by default)."""
    p = Path(path) if path is not None else SERVICES_FILE
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ServicesError(f"{p}: cannot read the services catalogue: {exc}") from exc
    return parse_services(text, str(p))


def parse_services(text: str, source: str = "<services>") -> Catalogue:
    """Validate catalogue text; every problem names ``source`` and the line."""
    try:
        raw = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ServicesError(f"{where}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ServicesError(f"{source}: the catalogue is a mapping with `services:`")
    if raw.get("version") != 1:
        raise ServicesError(f"{source}: `version: 1` is required")
    lines = _item_lines(root, "services")
    defaults = raw.get("defaults")
    if not isinstance(defaults, dict):
        raise ServicesError(f"{source}: `defaults:` with `upload:` and `fetch:` is required")
    try:
        upload = _reply(defaults.get("upload"), "defaults.upload")
        fetch = _reply(defaults.get("fetch"), "defaults.fetch")
    except (TypeError, ValueError, KeyError) as exc:
        raise ServicesError(f"{source}: {exc}") from exc
    items = raw.get("services")
    if not isinstance(items, list) or not items:
        raise ServicesError(f"{source}: `services:` must be a non-empty list")
    services: list[Service] = []
    owner: dict[str, str] = {}
    for i, item in enumerate(items):
        line = lines[i] if i < len(lines) else 0
        label = item.get("name") if isinstance(item, dict) else None
        where = f"{source}:{line}: service #{i + 1}" + (f" ({label})" if label else "")
        try:
            svc = _service(item, line)
        except (TypeError, ValueError, KeyError) as exc:
            raise ServicesError(f"{where}: {_msg(exc)}") from exc
        for h in svc.hosts:
            if h in owner:
                raise ServicesError(f"{where}: host {h!r} is already served by {owner[h]!r}")
            owner[h] = svc.name
        services.append(svc)
    names = [s.name for s in services]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ServicesError(f"{source}: duplicate service names: {', '.join(dupes)}")
    return Catalogue(tuple(services), upload, fetch, str(raw.get("source") or ""))


def _msg(exc: Exception) -> str:
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


def _item_lines(root: yaml.Node | None, key: str) -> list[int]:
    """The 1-based line of each item of ``key:``; yaml.safe_load drops positions."""
    if not isinstance(root, yaml.MappingNode):
        return []
    for k, v in root.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key and isinstance(v, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in v.value]
    return []


def _text_field(raw: Mapping[str, Any], key: str, required: bool = False) -> str:
    value = raw.get(key)
    if value is None:
        if required:
            raise KeyError(f"missing field {key!r}")
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise TypeError(f"field {key!r} must be a non-empty string")
    return " ".join(value.split())


def _service(raw: Any, line: int) -> Service:
    if not isinstance(raw, dict):
        raise TypeError("each service is a mapping")
    known = {"name", "hosts", "source", "note", "routes", "default", "ipv4", "ipv6", "cname"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"unknown fields: {', '.join(map(str, unknown))}")
    name = _text_field(raw, "name", required=True)
    source = _text_field(raw, "source", required=True)
    if not _YEAR_RE.search(source):
        raise ValueError("`source` must cite a study or document with its year")
    hosts = raw.get("hosts")
    if isinstance(hosts, str):
        hosts = [hosts]
    if not isinstance(hosts, list) or not hosts:
        raise TypeError("`hosts` must be a non-empty list of names or patterns")
    routes_raw = raw.get("routes") or []
    if not isinstance(routes_raw, list):
        raise TypeError("`routes` must be a list")
    routes = tuple(_route(r, f"route #{j + 1}") for j, r in enumerate(routes_raw))
    default = _reply(raw["default"], "default") if "default" in raw else None
    return Service(
        name=name,
        hosts=tuple(_host_pattern(h) for h in hosts),
        source=source,
        note=_text_field(raw, "note"),
        routes=routes,
        default=default,
        ipv4=_address(raw.get("ipv4"), 4),
        ipv6=_address(raw.get("ipv6"), 6),
        cname=_host_pattern(raw["cname"], wildcard=False) if raw.get("cname") else None,
        line=line,
    )


def valid_hostname(name: str) -> bool:
    """A DNS name of letters, digits, ``-`` and ``_`` (lower case, no trailing dot)."""
    if not name or len(name) > 253:
        return False
    return all(_LABEL_RE.match(label) for label in name.split("."))


def _host_pattern(value: Any, wildcard: bool = True) -> str:
    if not isinstance(value, str):
        raise TypeError(f"host {value!r} must be a string")
    h = value.strip().lower().rstrip(".")
    if "*" in h and wildcard:
        ok = len(h) <= 253 and all(_PATTERN_LABEL_RE.match(lb) for lb in h.split("."))
        ok = ok and h.replace("*", "").strip(".") != ""
    else:
        ok = valid_hostname(h)
    if not ok:
        raise ValueError(f"not a host name{' or pattern' if wildcard else ''}: {value!r}")
    return h


def _address(value: Any, version: int) -> str | None:
    if value is None:
        return None
    try:
        addr = ipaddress.ip_address(str(value))
    except ValueError:
        raise ValueError(f"ipv{version}: not an address: {value!r}") from None
    if addr.version != version:
        raise ValueError(f"ipv{version}: {value!r} is not an IPv{version} address")
    safe: tuple[ipaddress.IPv4Network, ...] | tuple[ipaddress.IPv6Network, ...]
    safe = SAFE_V4 if version == 4 else SAFE_V6
    if not any(addr in net for net in safe):
        ranges = ", ".join(str(n) for n in safe)
        raise ValueError(f"ipv{version}: {value} is outside the synthetic ranges ({ranges})")
    return str(addr)


def _route(raw: Any, where: str) -> Route:
    if not isinstance(raw, dict):
        raise TypeError(f"{where}: each route is a mapping")
    path = raw.get("path")
    if not isinstance(path, str) or not (path == "*" or path.startswith("/")):
        raise ValueError(f"{where}: `path` must start with '/' or be '*'")
    methods_raw = raw.get("methods")
    methods: frozenset[str] | None = None
    if methods_raw is not None:
        if isinstance(methods_raw, str):
            methods_raw = [methods_raw]
        if not isinstance(methods_raw, list) or not methods_raw:
            raise TypeError(f"{where}: `methods` must be a non-empty list")
        methods = frozenset(str(m).upper() for m in methods_raw)
        bad = sorted(m for m in methods if not _METHOD_RE.match(m))
        if bad:
            raise ValueError(f"{where}: not HTTP methods: {', '.join(bad)}")
    reply_raw = {k: v for k, v in raw.items() if k not in ("path", "methods")}
    return Route(path, methods, _reply(reply_raw, where))


def _reply(raw: Any, where: str) -> Reply:
    if not isinstance(raw, dict):
        raise TypeError(f"{where}: a reply is a mapping with `status:` and a body")
    known = {"status", "content_type", "headers", "note", "source", *_BODY_KEYS}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{where}: unknown fields: {', '.join(map(str, unknown))}")
    status = raw.get("status", 200)
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
        raise ValueError(f"{where}: `status` must be an HTTP status from 200 to 599")
    kinds = [k for k in _BODY_KEYS if k in raw]
    if len(kinds) > 1:
        raise ValueError(f"{where}: give one body of {', '.join(_BODY_KEYS)}, not several")
    body, ctype = b"", None
    if kinds:
        kind, value = kinds[0], raw[kinds[0]]
        if kind == "json":
            body = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
            ctype = "application/json; charset=utf-8"
        elif kind == "text":
            if not isinstance(value, str):
                raise TypeError(f"{where}: `text` must be a string")
            body, ctype = value.encode(), "text/plain; charset=utf-8"
        else:
            if not isinstance(value, str):
                raise TypeError(f"{where}: `{kind}` must be a string")
            try:
                if kind == "hex":
                    body = bytes.fromhex(value)
                else:
                    body = base64.b64decode("".join(value.split()), validate=True)
            except (ValueError, binascii.Error):
                raise ValueError(f"{where}: `{kind}` does not decode") from None
            ctype = "application/octet-stream"
    if status in _BODYLESS and body:
        raise ValueError(f"{where}: a {status} answer has no body")
    if "content_type" in raw:
        ct = raw["content_type"]
        if not isinstance(ct, str) or not ct or "\n" in ct or "\r" in ct:
            raise TypeError(f"{where}: `content_type` must be a one-line string")
        ctype = ct
    headers_raw = raw.get("headers") or {}
    if not isinstance(headers_raw, dict):
        raise TypeError(f"{where}: `headers` must be a mapping")
    headers: list[tuple[str, str]] = []
    for k, v in headers_raw.items():
        value = str(v)
        if not _HEADER_NAME_RE.match(str(k)) or "\r" in value or "\n" in value:
            raise ValueError(f"{where}: bad header {k!r}")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"{where}: header {k!r} is not Latin-1") from None
        if str(k).lower() in ("content-length", "transfer-encoding", "connection"):
            raise ValueError(f"{where}: header {k!r} is the server's to set")
        headers.append((str(k), value))
    note = raw.get("note") or raw.get("source") or ""
    return Reply(status, body, ctype, tuple(headers), " ".join(str(note).split()))
