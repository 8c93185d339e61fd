"""Vendor-encrypted payloads decrypted before the scan, by a user's rules file (``--decrypt``).

Some vendors encrypt their telemetry inside TLS with a key hard-coded in the app. Security
write-ups and public tools publish such keys. A rules file names, per host or URL pattern:

- the cipher (AES-CBC, AES-ECB or AES-GCM);
- the key, and where the IV sits (fixed, the first bytes of the message, a header or a query
  parameter);
- how the ciphertext is carried (raw, base64, hex, one form field or JSON key of the body);
- what the plaintext is.

:func:`load_rules` reads the file. :func:`apply` decrypts one body when a rule matches. The
payload scanner (:class:`auditor.analysis.payload.Scanner` with ``decrypt=``) scans the
plaintext as well as the body, names the rule where it reports a match
(``decrypted:<rule>|$.imei``), and turns a wrong key or bad padding into a counted warning.
The schema is in docs/decrypt.md. The ciphers are those of the ``cryptography`` package.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes, urlsplit

import yaml
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from auditor import decoders
from auditor.errors import AuditorError

log = logging.getLogger(__name__)

MAX_RULES_FILE = 1024 * 1024
MAX_BODY = 64 * 1024 * 1024  # bytes of a body decoded and decrypted


class DecryptRulesError(AuditorError):
    """A ``--decrypt`` rules file is missing or malformed."""


class DecryptError(ValueError):
    """A rule matched a body but the body would not decrypt (wrong key, padding, layout)."""


class CipherName(StrEnum):
    AES_CBC = "aes-cbc"
    AES_ECB = "aes-ecb"
    AES_GCM = "aes-gcm"


class Carrier(StrEnum):
    """How the ciphertext (IV and tag included when they travel with it) is written."""

    RAW = "raw"
    BASE64 = "base64"
    BASE64URL = "base64url"
    HEX = "hex"


class Plaintext(StrEnum):
    JSON = "json"
    PROTOBUF = "protobuf"
    FORM = "form"
    TEXT = "text"


CONTENT_TYPES = {
    Plaintext.JSON: "application/json",
    Plaintext.PROTOBUF: "application/x-protobuf",
    Plaintext.FORM: "application/x-www-form-urlencoded",
    Plaintext.TEXT: "text/plain",
}
_PARTS = ("request", "response", "both")
_VALUE_KINDS = ("hex", "base64", "text")


@dataclass(frozen=True, slots=True)
class Locator:
    """Where a value (an IV, a nonce, a tag) is found: ``fixed`` (in the rule), ``prefix`` or
    ``suffix`` (``size`` bytes of the decoded message), ``header`` or ``query`` (by ``name``,
    written in ``encoding``)."""

    where: str
    value: bytes = b""
    size: int = 0
    name: str = ""
    encoding: str = "text"


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    cipher: CipherName
    key: bytes = dc_field(repr=False)
    host: str | None = None  # a host name or a glob ("*.example.com"), lower case
    url: re.Pattern[str] | None = None  # searched in the whole URL
    method: str | None = None
    part: str = "request"
    iv: Locator | None = None  # the IV (CBC) or nonce (GCM)
    tag: Locator | None = None  # GCM's tag
    aad: bytes | None = None
    pkcs7: bool = True  # CBC/ECB padding
    carrier: Carrier = Carrier.RAW
    field: str | None = None  # the ciphertext is this form field or top-level JSON key
    plaintext: Plaintext = Plaintext.JSON
    citation: str = ""

    def matches(self, url: str, method: str | None, part: str) -> bool:
        if self.part != "both" and part != self.part:
            return False
        if self.method and method and method.upper() != self.method:
            return False
        if self.host is not None:
            try:
                host = (urlsplit(url).hostname or "").rstrip(".")
            except ValueError:
                return False
            if not fnmatch.fnmatchcase(host, self.host):
                return False
        return self.url is None or self.url.search(url) is not None

    def describe(self) -> dict[str, Any]:
        """What a report says of the rule (never the key)."""
        return {"rule": self.name, "cipher": self.cipher.value, "citation": self.citation}


@dataclass(frozen=True, slots=True)
class Rules:
    rules: tuple[Rule, ...]
    source: str = ""  # the file, for messages
    sha256: str = ""  # of the file, so that a report can name the rules it used

    def rule_for(self, url: str, method: str | None = None, part: str = "request") -> Rule | None:
        """The first rule that matches, in file order."""
        for rule in self.rules:
            if rule.matches(url, method, part):
                return rule
        return None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What :func:`apply` made of one body: the plaintext and its content type, or why a
    matching rule could not decrypt it."""

    rule: Rule
    plaintext: bytes | None = None
    content_type: str = ""
    error: str | None = None


# ------------------------------------------------------------------------------- the file


def load_rules(path: str | Path) -> Rules:
    """Read a rules file (YAML, docs/decrypt.md). Raises :class:`DecryptRulesError`."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            raw = fh.read(MAX_RULES_FILE + 1)
    except OSError as exc:
        raise DecryptRulesError(f"{p}: cannot read the decrypt rules: {exc.strerror}") from exc
    if len(raw) > MAX_RULES_FILE:
        raise DecryptRulesError(f"{p}: a decrypt rules file is at most {MAX_RULES_FILE} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecryptRulesError(f"{p}: not UTF-8 text") from exc
    rules = parse_rules(text, str(p))
    return Rules(rules.rules, str(p), hashlib.sha256(raw).hexdigest())


def parse_rules(text: str, where: str = "<rules>") -> Rules:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise DecryptRulesError(f"{where}: not YAML{at}: {problem}") from None
    items = doc.get("rules") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not items:
        raise DecryptRulesError(f"{where}: needs a non-empty list 'rules'")
    rules = []
    names: set[str] = set()
    for i, item in enumerate(items, 1):
        here = f"{where}: rule {i}"
        if not isinstance(item, dict):
            raise DecryptRulesError(f"{here}: not a mapping")
        try:
            rule = _rule(item)
        except (ValueError, TypeError, re.error) as exc:
            raise DecryptRulesError(f"{here}: {exc}") from exc
        if rule.name in names:
            raise DecryptRulesError(f"{here}: the name {rule.name!r} is used twice")
        names.add(rule.name)
        rules.append(rule)
    return Rules(tuple(rules), where)


_FIELDS = frozenset(
    {"name", "host", "url", "method", "part", "cipher", "key", "iv", "nonce", "tag", "aad",
     "padding", "body", "field", "plaintext", "citation"}
)  # fmt: skip


def _rule(d: Mapping[str, Any]) -> Rule:
    unknown = sorted(set(map(str, d)) - _FIELDS)
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}")
    name = str(d.get("name") or "").strip()
    if not name:
        raise ValueError("needs a name")
    if d.get("host") is None and d.get("url") is None:
        raise ValueError("needs a host or a url pattern")
    cipher = _choice(CipherName, d.get("cipher"), "cipher")
    key = _value(d.get("key"), "key")
    if len(key) not in (16, 24, 32):
        raise ValueError(f"the key is {len(key)} bytes; AES takes 16, 24 or 32")
    iv_spec = d.get("iv", d.get("nonce"))
    iv = _locator(iv_spec, "iv") if iv_spec is not None else None
    if cipher is CipherName.AES_ECB and iv is not None:
        raise ValueError("aes-ecb takes no iv")
    if cipher is CipherName.AES_CBC:
        if iv is None:
            raise ValueError("aes-cbc needs an iv (fixed, prefix, header or query)")
        if iv.where == "fixed" and len(iv.value) != 16:
            raise ValueError("an aes-cbc iv is 16 bytes")
        if iv.where in ("prefix", "suffix") and iv.size != 16:
            raise ValueError("an aes-cbc iv is 16 bytes")
    tag = None
    if cipher is CipherName.AES_GCM:
        iv = iv or Locator("prefix", size=12)
        tag = _locator(d["tag"], "tag") if d.get("tag") is not None else Locator("suffix", size=16)
        if tag.where in ("prefix", "suffix") and not 4 <= tag.size <= 16:
            raise ValueError("a gcm tag is 4 to 16 bytes")
    elif d.get("tag") is not None:
        raise ValueError("only aes-gcm takes a tag")
    pad = str(d.get("padding", "pkcs7")).lower()
    if pad not in ("pkcs7", "none"):
        raise ValueError("padding is pkcs7 or none")
    part = str(d.get("part", "request")).lower()
    if part not in _PARTS:
        raise ValueError(f"part is one of {', '.join(_PARTS)}")
    host = d.get("host")
    url = d.get("url")
    return Rule(
        name=name,
        cipher=cipher,
        key=key,
        host=str(host).strip().lower().rstrip(".") if host is not None else None,
        url=re.compile(str(url)) if url is not None else None,
        method=str(d["method"]).upper() if d.get("method") else None,
        part=part,
        iv=iv,
        tag=tag,
        aad=_value(d["aad"], "aad") if d.get("aad") is not None else None,
        pkcs7=pad == "pkcs7",
        carrier=_choice(Carrier, d.get("body", "raw"), "body"),
        field=str(d["field"]) if d.get("field") else None,
        plaintext=_choice(Plaintext, d.get("plaintext", "json"), "plaintext"),
        citation=str(d.get("citation") or ""),
    )


def _choice[E: StrEnum](enum: type[E], value: Any, what: str) -> E:
    try:
        return enum(str(value).lower())
    except ValueError:
        raise ValueError(f"{what} is one of {', '.join(e.value for e in enum)}") from None


def _decode_value(kind: str, text: str, what: str) -> bytes:
    try:
        if kind == "hex":
            return bytes.fromhex(text)
        if kind == "base64":
            padded = text.strip() + "=" * (-len(text.strip()) % 4)
            return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"{what}: not {kind}: {exc}") from None
    return text.encode("utf-8")


def _value(spec: Any, what: str) -> bytes:
    """``{hex: ...}``, ``{base64: ...}``, ``{text: ...}``, or the same as ``"hex:..."``."""
    if isinstance(spec, str) and ":" in spec:
        kind, _, text = spec.partition(":")
        spec = {kind.strip().lower(): text}
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ValueError(f"{what} is one of {{hex: ...}}, {{base64: ...}}, {{text: ...}}")
    ((kind, text),) = spec.items()
    if kind not in _VALUE_KINDS:
        raise ValueError(f"{what} is one of {{hex: ...}}, {{base64: ...}}, {{text: ...}}")
    return _decode_value(str(kind), str(text), what)


def _locator(spec: Any, what: str) -> Locator:
    if isinstance(spec, dict):
        for where in ("prefix", "suffix"):
            if where in spec:
                try:
                    size = int(spec[where])
                except (TypeError, ValueError, OverflowError):
                    raise ValueError(f"{what}: {where} is a number of bytes") from None
                if not 1 <= size <= 64:
                    raise ValueError(f"{what}: {where} is 1 to 64 bytes")
                return Locator(where, size=size)
        for where in ("header", "query"):
            if where in spec:
                enc = str(spec.get("encoding", "text")).lower()
                if enc not in _VALUE_KINDS:
                    raise ValueError(f"{what}: encoding is one of {', '.join(_VALUE_KINDS)}")
                return Locator(where, name=str(spec[where]), encoding=enc)
    return Locator("fixed", value=_value(spec, what))


# ------------------------------------------------------------------------------- decryption


def _carried(data: bytes, rule: Rule) -> bytes:
    """The ciphertext bytes, out of the body as captured (content encoding undone)."""
    if rule.field is not None:
        data = _field(data, rule.field)
    if rule.carrier is Carrier.RAW:
        return data
    text = b"".join(data.split())  # line breaks of MIME base64
    try:
        if rule.carrier is Carrier.HEX:
            return bytes.fromhex(text.decode("ascii"))
        text = text.replace(b"-", b"+").replace(b"_", b"/")  # either alphabet
        return base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (ValueError, binascii.Error) as exc:
        raise DecryptError(f"the body is not {rule.carrier.value}: {exc}") from None


def _field(data: bytes, name: str) -> bytes:
    stripped = data.strip()
    if stripped[:1] == b"{":
        try:
            doc = json.loads(stripped)
        except (ValueError, RecursionError):
            doc = None
        if isinstance(doc, dict):
            value = doc.get(name)
            if isinstance(value, str):
                return value.encode("utf-8", "surrogatepass")
            raise DecryptError(f"the JSON body has no string {name!r}")
    for piece in stripped.split(b"&"):
        key, _, val = piece.partition(b"=")
        if unquote_to_bytes(key.replace(b"+", b" ")) == name.encode():
            return unquote_to_bytes(val.replace(b"+", b" "))
    raise DecryptError(f"the body has no field {name!r}")


def _located(loc: Locator, url: str, headers: Iterable[Sequence[str]]) -> bytes:
    if loc.where == "fixed":
        return loc.value
    if loc.where == "header":
        want = loc.name.lower()
        for pair in headers:
            if len(pair) >= 2 and str(pair[0]).lower() == want:
                return _decode_value(loc.encoding, str(pair[1]).strip(), f"header {loc.name}")
        raise DecryptError(f"no {loc.name} header")
    try:
        query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    except ValueError:
        query = {}
    if loc.name not in query:
        raise DecryptError(f"no {loc.name!r} query parameter")
    return _decode_value(loc.encoding, query[loc.name], f"query {loc.name}")


def decrypt_body(
    rule: Rule, data: bytes, *, url: str = "", headers: Iterable[Sequence[str]] = ()
) -> bytes:
    """The plaintext of one body (its content encoding already undone). Raises
    :class:`DecryptError` on a wrong key, bad padding or a body of the wrong layout."""
    headers = list(headers)
    msg = _carried(data, rule)
    iv = b""
    try:
        if rule.iv is not None:
            if rule.iv.where == "prefix":
                iv, msg = msg[: rule.iv.size], msg[rule.iv.size :]
            elif rule.iv.where == "suffix":
                iv, msg = msg[-rule.iv.size :], msg[: -rule.iv.size]
            else:
                iv = _located(rule.iv, url, headers)
        if rule.cipher is CipherName.AES_GCM:
            assert rule.tag is not None
            if rule.tag.where == "suffix":
                body, tag = msg[: -rule.tag.size], msg[-rule.tag.size :]
            elif rule.tag.where == "prefix":
                tag, body = msg[: rule.tag.size], msg[rule.tag.size :]
            else:
                body, tag = msg, _located(rule.tag, url, headers)
            if not 4 <= len(tag) <= 16 or not iv:
                raise DecryptError("the message is too short for its nonce and tag")
            # a tag of any length GCM allows (4 to 16 bytes), not only 16
            gcm = modes.GCM(iv, tag, min_tag_length=len(tag))
            aead = Cipher(algorithms.AES(rule.key), gcm).decryptor()
            if rule.aad:
                aead.authenticate_additional_data(rule.aad)
            return aead.update(body) + aead.finalize()
        if not msg or len(msg) % 16:
            raise DecryptError(f"{len(msg)} bytes of ciphertext: not whole AES blocks")
        mode = modes.ECB() if rule.cipher is CipherName.AES_ECB else modes.CBC(iv)  # noqa: S305
        dec = Cipher(algorithms.AES(rule.key), mode).decryptor()
        plain = dec.update(msg) + dec.finalize()
        if rule.pkcs7:
            unpadder = padding.PKCS7(128).unpadder()
            plain = unpadder.update(plain) + unpadder.finalize()
        return plain
    except InvalidTag:
        raise DecryptError("the GCM tag does not verify (wrong key, nonce or tag)") from None
    except ValueError as exc:
        if isinstance(exc, DecryptError):
            raise
        raise DecryptError(f"{rule.cipher.value}: {exc} (wrong key or iv?)") from None


def _check(plain: bytes, rule: Rule) -> None:
    """A plaintext that is not what the rule says is a wrong key that padding let through."""
    if rule.plaintext is Plaintext.JSON:
        try:
            json.loads(_ungzip(plain))
        except (ValueError, RecursionError):
            raise DecryptError("the plaintext is not JSON (wrong key?)") from None
    elif rule.plaintext in (Plaintext.FORM, Plaintext.TEXT):
        try:
            _ungzip(plain).decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptError(
                f"the plaintext is not {rule.plaintext.value} (wrong key?)"
            ) from None


def _ungzip(data: bytes) -> bytes:
    if data[:3] == b"\x1f\x8b\x08":
        dec = decoders.decode(data, "gzip", MAX_BODY)
        if not dec.error:
            return dec.data
    return data


def apply(
    rules: Rules,
    data: bytes,
    *,
    url: str,
    method: str | None = None,
    headers: Iterable[Sequence[str]] = (),
    content_encoding: str | None = None,
    part: str = "request",
) -> Outcome | None:
    """Decrypt one body (as on the wire) when a rule matches its URL; None when none does.

    The content encoding (and a gzip stream around the carried text) is undone first, within
    :data:`MAX_BODY`. A failure is an :class:`Outcome` with ``error`` set, never an
    exception."""
    rule = rules.rule_for(url, method, part)
    if rule is None:
        return None
    body = data
    for enc in reversed(decoders.split_encodings(content_encoding)):
        if enc == "identity":
            continue
        dec = decoders.decode(body, enc, MAX_BODY)
        if dec.error or dec.exceeded:
            return Outcome(rule, error=f"{enc}: {dec.error or 'too large'}; not decrypted")
        body = dec.data
    body = _ungzip(body)
    try:
        plain = decrypt_body(rule, body, url=url, headers=headers)
        _check(plain, rule)
    except DecryptError as exc:
        return Outcome(rule, error=str(exc))
    return Outcome(rule, plain, CONTENT_TYPES[rule.plaintext])
