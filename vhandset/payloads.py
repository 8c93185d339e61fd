"""Bodies of the virtual handset's telemetry, built from templates in the traffic data files.

A template is YAML data (a mapping, a list or a string). Strings may hold ``{{name|filter...}}``
placeholders, filled from the device's identifiers and facts:

    names    imei, android_id, serial, wifi_mac, advertising_id, model, brand, device,
             fingerprint, region, locale, packages (the installed package names), now (epoch
             ms), uuid, random_hex:N
    filters  url, b64, b64url, b64raw (unpadded, URL-safe), hex, HEX, md5, sha1, sha256,
             md5_HEX, sha256_b64, upper, lower, json, hexint (hex text as a number: an
             Android ID as GMS sends it), bare (a MAC without separators, lower case)

The body as a whole is then serialised (``json``, ``form``, ``text``, ``protobuf`` with
fields numbered in order, ``protobuf:<message>`` by a published message definition,
``multipart``, ``encrypted``: AES-GCM over the JSON, a high-entropy upload like the
"encrypted usage statistics" the Lithuanian NCSC saw, or ``aes-cbc:<key hex>``: AES-CBC with
the IV in front, the vendor scheme a ``--decrypt`` rules file names) and optionally
content-encoded (gzip, deflate, br, zstd).

``protobuf:<message>`` bodies are encoded by the protobuf library from the descriptor set
shipped with auditor (``auditor/analysis/gproto/schemas.desc``, read as data): the handset
sends what a real-schema encoder writes, and never imports the decoder that reads it.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import gzip
import hashlib
import json
import os
import re
import time
import uuid
import zlib
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

import brotli
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool, message, message_factory

try:  # Python 3.14 has it in the standard library; mitmproxy brings the backport before that.
    from compression import zstd
except ImportError:  # pragma: no cover - depends on the Python version
    from backports import zstd

from vhandset.profiles import DeviceProfile

_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+(?::\d+)?)((?:\s*\|\s*[A-Za-z0-9_]+)*)\s*\}\}")


class TemplateError(ValueError):
    pass


def _b(v: str | bytes) -> bytes:
    return v if isinstance(v, bytes) else v.encode()


FILTERS: dict[str, Callable[[Any], Any]] = {
    "url": lambda v: quote(str(v), safe=""),
    "b64": lambda v: base64.b64encode(_b(str(v))).decode(),
    "b64url": lambda v: base64.urlsafe_b64encode(_b(str(v))).decode(),
    "b64raw": lambda v: base64.urlsafe_b64encode(_b(str(v))).decode().rstrip("="),
    "hex": lambda v: _b(str(v)).hex(),
    "HEX": lambda v: _b(str(v)).hex().upper(),
    "md5": lambda v: hashlib.md5(_b(str(v)), usedforsecurity=False).hexdigest(),
    "md5_HEX": lambda v: hashlib.md5(_b(str(v)), usedforsecurity=False).hexdigest().upper(),
    "sha1": lambda v: hashlib.sha1(_b(str(v)), usedforsecurity=False).hexdigest(),
    "sha256": lambda v: hashlib.sha256(_b(str(v))).hexdigest(),
    "sha256_b64": lambda v: base64.b64encode(hashlib.sha256(_b(str(v))).digest()).decode(),
    "upper": lambda v: str(v).upper(),
    "lower": lambda v: str(v).lower(),
    "json": lambda v: json.dumps(v),
    "hexint": lambda v: int(str(v), 16),
    "bare": lambda v: str(v).replace(":", "").replace("-", "").lower(),
}


def facts_from_profile(profile: DeviceProfile) -> dict[str, Any]:
    """The values templates can use, from a virtual handset profile."""
    ids = profile.identifiers
    out: dict[str, Any] = {
        f.name: getattr(ids, f.name) for f in dataclasses.fields(ids) if getattr(ids, f.name)
    }
    props = profile.props
    out.update(
        model=props.get("ro.product.model", ""),
        brand=props.get("ro.product.brand", ""),
        device=props.get("ro.product.device", ""),
        fingerprint=props.get("ro.build.fingerprint", ""),
        region=profile.region,
        locale=profile.locale,
        packages=[p.name for p in profile.packages],
    )
    return out


def _value(name: str, facts: Mapping[str, Any]) -> Any:
    if name == "now":
        return int(time.time() * 1000)
    if name == "uuid":
        return str(uuid.uuid4())
    if name.startswith("random_hex:"):
        return os.urandom(int(name.split(":", 1)[1])).hex()
    if name not in facts:
        raise TemplateError(f"unknown template value {name!r}")
    return facts[name]


def render_string(text: str, facts: Mapping[str, Any]) -> Any:
    """Fill the placeholders of one string. A string that is exactly one placeholder keeps
    the value's type (a list of packages stays a list)."""

    def one(m: re.Match[str]) -> Any:
        value = _value(m.group(1), facts)
        for f in (x.strip() for x in m.group(2).split("|") if x.strip()):
            if f not in FILTERS:
                raise TemplateError(f"unknown filter {f!r}")
            value = FILTERS[f](value)
        return value

    whole = _PLACEHOLDER.fullmatch(text.strip())
    if whole:
        return one(whole)
    return _PLACEHOLDER.sub(lambda m: str(one(m)), text)


def render(template: Any, facts: Mapping[str, Any]) -> Any:
    if isinstance(template, str):
        return render_string(template, facts)
    if isinstance(template, Mapping):
        return {str(render_string(k, facts)): render(v, facts) for k, v in template.items()}
    if isinstance(template, list):
        return [render(v, facts) for v in template]
    return template


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def protobuf(value: Any) -> bytes:
    """A schema-less protobuf encoding: mapping values become fields 1, 2, ... in order;
    ints are varints, strings and bytes length-delimited, lists repeated, mappings nested."""
    if not isinstance(value, Mapping):
        value = {"v": value}
    out = bytearray()
    for i, v in enumerate(value.values(), 1):
        items = v if isinstance(v, list) else [v]
        for item in items:
            if isinstance(item, bool) or isinstance(item, int):
                out += _varint(i << 3 | 0) + _varint(int(item))
            else:
                data = (
                    protobuf(item)
                    if isinstance(item, Mapping)
                    else item
                    if isinstance(item, bytes)
                    else str(item).encode()
                )
                out += _varint(i << 3 | 2) + _varint(len(data)) + data
    return bytes(out)


@functools.cache
def _schemas() -> descriptor_pool.DescriptorPool:
    res = resources.files("auditor") / "analysis" / "gproto" / "schemas.desc"
    pool = descriptor_pool.DescriptorPool()
    for f in descriptor_pb2.FileDescriptorSet.FromString(res.read_bytes()).file:
        pool.Add(f)
    return pool


def _typed(fd: descriptor.FieldDescriptor, value: Any) -> Any:
    T = descriptor.FieldDescriptor
    if fd.type == T.TYPE_BYTES:
        if isinstance(value, Mapping):
            return protobuf(value)  # an app's own message, whose schema is its own
        return value if isinstance(value, bytes) else str(value).encode()
    if fd.type == T.TYPE_STRING:
        return str(value)
    if fd.type == T.TYPE_BOOL:
        return bool(value)
    if fd.type in (T.TYPE_FLOAT, T.TYPE_DOUBLE):
        return float(value)
    if fd.type == T.TYPE_ENUM and isinstance(value, str) and not value.lstrip("-").isdigit():
        ev = fd.enum_type.values_by_name.get(value)
        if ev is None:
            raise TemplateError(f"{fd.full_name}: no enum value {value!r}")
        return ev.number
    n = int(value)
    if fd.type in (T.TYPE_INT64, T.TYPE_SINT64, T.TYPE_SFIXED64) and n >= 1 << 63:
        n -= 1 << 64  # a 64-bit hex ID past 2^63, as Java's long holds it
    return n


def _fill(msg: message.Message, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise TemplateError(f"a {msg.DESCRIPTOR.full_name} must be a mapping")
    for key, v in value.items():
        fd = msg.DESCRIPTOR.fields_by_name.get(str(key))
        if fd is None:
            raise TemplateError(f"{msg.DESCRIPTOR.full_name} has no field {key!r}")
        repeated = bool(getattr(fd, "is_repeated", False)) or getattr(fd, "label", 0) == 3
        items = v if isinstance(v, list) else [v]
        if fd.message_type is not None:
            for item in items:
                _fill(getattr(msg, fd.name).add() if repeated else getattr(msg, fd.name), item)
        elif repeated:
            getattr(msg, fd.name).extend(_typed(fd, item) for item in items)
        else:
            setattr(msg, fd.name, _typed(fd, v))


def schema_protobuf(value: Any, message_name: str) -> bytes:
    """``value`` (a mapping of field names) encoded by the protobuf library as
    ``message_name`` of the shipped descriptor set. A mapping given for a bytes field is
    encoded schema-less first (:func:`protobuf`): a Clearcut event's ``source_extension``."""
    try:
        desc = _schemas().FindMessageTypeByName(message_name)
    except KeyError as exc:
        raise TemplateError(f"unknown message {message_name!r}") from exc
    msg = message_factory.GetMessageClass(desc)()
    _fill(msg, value)
    return msg.SerializeToString()


def aes_cbc(plain: bytes, key: bytes) -> bytes:
    """AES-CBC with PKCS#7 padding and a random IV sent in front of the ciphertext."""
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return iv + enc.update(padder.update(plain) + padder.finalize()) + enc.finalize()


_STATIC_KEY = hashlib.sha256(b"auditor virtual handset statistics key").digest()


def serialise(value: Any, kind: str) -> tuple[bytes, str]:
    """(body bytes, content type)."""
    if kind == "json":
        return json.dumps(value, separators=(",", ":")).encode(), "application/json"
    if kind == "form":
        if not isinstance(value, Mapping):
            raise TemplateError("a form body must be a mapping")
        flat = {k: v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}
        return urlencode(flat).encode(), "application/x-www-form-urlencoded"
    if kind == "text":
        return str(value).encode(), "text/plain"
    if kind == "protobuf":
        return protobuf(value), "application/x-protobuf"
    if kind.startswith("protobuf:"):
        return schema_protobuf(value, kind.split(":", 1)[1]), "application/x-protobuf"
    if kind.startswith("aes-cbc:"):
        try:
            key = bytes.fromhex(kind.split(":", 1)[1])
        except ValueError as exc:
            raise TemplateError(f"aes-cbc: the key must be hex: {exc}") from exc
        if len(key) not in (16, 24, 32):
            raise TemplateError("aes-cbc: the key must be 16, 24 or 32 bytes")
        plain = json.dumps(value, separators=(",", ":")).encode()
        return base64.b64encode(aes_cbc(plain, key)), "text/plain"
    if kind == "multipart":
        if not isinstance(value, Mapping):
            raise TemplateError("a multipart body must be a mapping")
        boundary = "auditor" + uuid.uuid4().hex
        parts = []
        for k, v in value.items():
            data = v if isinstance(v, str) else json.dumps(v)
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{data}\r\n'
            )
        body = "".join(parts) + f"--{boundary}--\r\n"
        return body.encode(), f"multipart/form-data; boundary={boundary}"
    if kind == "encrypted":
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(12)
        plain = json.dumps(value, separators=(",", ":")).encode()
        return nonce + AESGCM(_STATIC_KEY).encrypt(nonce, plain, None), "application/octet-stream"
    raise TemplateError(f"unknown body kind {kind!r}")


def content_encode(data: bytes, encoding: str | None) -> bytes:
    if not encoding:
        return data
    if encoding == "gzip":
        return gzip.compress(data, mtime=0)
    if encoding == "deflate":
        return zlib.compress(data)
    if encoding == "br":
        return bytes(brotli.compress(data))
    if encoding == "zstd":
        return bytes(zstd.compress(data))
    raise TemplateError(f"unknown content encoding {encoding!r}")


def build_body(
    template: Any, kind: str, encoding: str | None, facts: Mapping[str, Any]
) -> tuple[bytes, dict[str, str]]:
    """Render, serialise and encode: the body and the headers that describe it."""
    data, ctype = serialise(render(template, facts), kind)
    headers = {"Content-Type": ctype}
    if encoding:
        headers["Content-Encoding"] = encoding
    return content_encode(data, encoding), headers
