"""One request body read by its message definition into named fields.

The protobuf library parses the body (``FromString`` of the class compiled from
``schemas.desc``); this module only walks the parsed message into :class:`DecodedField` leaves,
named by path (``log_event[0].source_extension``, ``checkin.build.model``). Fields the
definition does not name keep their number (``client_info.android_client_info.pb:1``), as the
schema-less walk names them, so nothing the body holds is hidden by the schema.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from google.protobuf import descriptor, message, unknown_fields

from auditor.analysis.gproto.schemas import message_class

_FD = descriptor.FieldDescriptor
_INT_TYPES = frozenset(
    {
        _FD.TYPE_INT32,
        _FD.TYPE_INT64,
        _FD.TYPE_UINT32,
        _FD.TYPE_UINT64,
        _FD.TYPE_SINT32,
        _FD.TYPE_SINT64,
        _FD.TYPE_FIXED32,
        _FD.TYPE_FIXED64,
        _FD.TYPE_SFIXED32,
        _FD.TYPE_SFIXED64,
    }
)
MAX_FIELDS = 200_000  # leaves of one message, nested ones included


class SchemaError(ValueError):
    """The body does not read as any message its endpoint's definition allows."""


class FieldKind(StrEnum):
    STRING = "string"
    BYTES = "bytes"
    INT = "int"
    ENUM = "enum"
    BOOL = "bool"
    FLOAT = "float"
    UNKNOWN_VARINT = "unknown-varint"  # a field the definition does not name, by wire type
    UNKNOWN_FIXED = "unknown-fixed"
    UNKNOWN_BYTES = "unknown-bytes"


@dataclass(frozen=True, slots=True)
class DecodedField:
    """One leaf: its path of field names, what it is and its value.

    ``value`` is the bytes of a string or bytes field, else the scalar as text (decimal, an
    enum's name, ``true``); ``integer`` is the number of an integer field."""

    path: str
    name: str
    number: int
    kind: FieldKind
    value: bytes
    integer: int | None = None

    @property
    def known(self) -> bool:
        return not self.kind.startswith("unknown")

    def to_dict(self, max_text: int = 200) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "kind": self.kind.value}
        if self.kind in (FieldKind.BYTES, FieldKind.UNKNOWN_BYTES):
            text = _text(self.value)
            if text is None:
                out["size"] = len(self.value)
                return out
            out["value"] = text[:max_text]
        else:
            out["value"] = self.value.decode("utf-8", "replace")[:max_text]
        return out


@dataclass
class Decoded:
    """A body read as ``message`` (a full name of ``schemas.desc``)."""

    message: str
    fields: list[DecodedField] = field(default_factory=list)

    @property
    def unknown(self) -> int:
        return sum(1 for f in self.fields if not f.known)

    def values(self, name: str) -> list[str]:
        """The values of every string field called ``name``, in order (e.g. the log source
        names of a batch)."""
        return [
            f.value.decode("utf-8", "replace")
            for f in self.fields
            if f.name == name and f.kind is FieldKind.STRING
        ]

    def to_dict(self, max_fields: int = 100) -> dict[str, Any]:
        return {
            "message": self.message,
            "fields": len(self.fields),
            "unknown_fields": self.unknown,
            "sample": [f.to_dict() for f in self.fields[:max_fields]],
        }


def _text(data: bytes) -> str | None:
    try:
        s = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return s if s.isprintable() else None


def _scalar(fd: descriptor.FieldDescriptor, value: Any) -> tuple[FieldKind, bytes, int | None]:
    if fd.type == _FD.TYPE_STRING:
        if isinstance(value, bytes):  # a proto2 string that is not UTF-8 comes back as bytes:
            return FieldKind.BYTES, value, None  # walked as bytes, never as its repr
        return FieldKind.STRING, str(value).encode("utf-8", "surrogatepass"), None
    if fd.type == _FD.TYPE_BYTES:
        return FieldKind.BYTES, bytes(value), None
    if fd.type == _FD.TYPE_ENUM:
        ev = fd.enum_type.values_by_number.get(value)
        return FieldKind.ENUM, (ev.name if ev else str(value)).encode(), int(value)
    if fd.type == _FD.TYPE_BOOL:
        return FieldKind.BOOL, b"true" if value else b"false", None
    if fd.type in _INT_TYPES:
        return FieldKind.INT, str(int(value)).encode(), int(value)
    v = float(value)
    return FieldKind.FLOAT, (repr(v) if math.isfinite(v) else str(v)).encode(), None


def _unknown(parent: str, ufs: Any, out: list[DecodedField], budget: list[int]) -> None:
    for uf in ufs:
        budget[0] -= 1
        if budget[0] < 0:
            raise SchemaError("more fields than the field budget allows")
        n, wire, data = uf.field_number, uf.wire_type, uf.data
        path = f"{parent}.pb:{n}" if parent else f"pb:{n}"
        if wire == 2:
            out.append(DecodedField(path, f"pb:{n}", n, FieldKind.UNKNOWN_BYTES, bytes(data)))
        elif wire == 3:
            _unknown(path, data, out, budget)
        elif wire == 0:
            out.append(
                DecodedField(path, f"pb:{n}", n, FieldKind.UNKNOWN_VARINT, str(data).encode(), data)
            )
        else:
            out.append(
                DecodedField(path, f"pb:{n}", n, FieldKind.UNKNOWN_FIXED, str(data).encode(), data)
            )


def _repeated(fd: descriptor.FieldDescriptor) -> bool:
    flag = getattr(fd, "is_repeated", None)  # protobuf >= 6; ``label`` before (gone in 7)
    return bool(flag) if flag is not None else fd.label == 3  # LABEL_REPEATED


def _walk(msg: message.Message, prefix: str, out: list[DecodedField], budget: list[int]) -> None:
    """The leaves of ``msg`` in field-number order, nested messages in place (their depth is
    bounded by the library's parse, which refuses messages nested past its recursion limit)."""
    for fd, value in msg.ListFields():
        path = f"{prefix}.{fd.name}" if prefix else fd.name
        items = (
            [(f"{path}[{i}]", v) for i, v in enumerate(value)] if _repeated(fd) else [(path, value)]
        )
        for p, v in items:
            budget[0] -= 1
            if budget[0] < 0:
                raise SchemaError("more fields than the field budget allows")
            if fd.type in (_FD.TYPE_MESSAGE, _FD.TYPE_GROUP):
                _walk(v, p, out, budget)
                continue
            kind, raw, num = _scalar(fd, v)
            out.append(DecodedField(p, fd.name, fd.number, kind, raw, num))
    _unknown(prefix, unknown_fields.UnknownFieldSet(msg), out, budget)


def decode(data: bytes, messages: Sequence[str], *, max_fields: int = MAX_FIELDS) -> Decoded:
    """``data`` read as the first of ``messages`` that parses and leaves the fewest fields
    unknown. Raises :class:`SchemaError` when none parses (a truncated or foreign body) or
    when the best reading names none of its fields."""
    best: Decoded | None = None
    errors: list[str] = []
    for name in messages:
        short = name.rsplit(".", 1)[-1]
        try:
            cls = message_class(name)
        except (OSError, KeyError, TypeError) as exc:  # schemas.desc missing or stale
            raise SchemaError(f"the definition of {short} is not available: {exc}") from exc
        try:
            parsed = cls.FromString(data)
        except (message.DecodeError, RecursionError, ValueError) as exc:
            errors.append(f"not a {short} ({str(exc).rsplit(': ', 1)[-1] or 'invalid'})")
            continue
        got = Decoded(name)
        try:
            _walk(parsed, "", got.fields, [max_fields])
        except RecursionError:
            errors.append(f"not a {short} (nested too deeply)")
            continue
        if not any(f.known for f in got.fields):
            errors.append(f"not a {short} (none of its fields is in the definition)")
            continue
        if best is None or got.unknown < best.unknown:
            best = got
    if best is None:
        raise SchemaError("; ".join(errors) or "no message to read it as")
    return best
