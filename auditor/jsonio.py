"""JSON from files auditor did not write itself, or that may have been altered since.

Manifests, bundle descriptions, signatures, custody and socket logs are all read back from
disk, where anyone could have edited them. ``json.loads`` on hostile text can raise
``RecursionError`` (deep nesting), ``ValueError`` (bad syntax, an integer of over 4,300
digits, bad UTF-8) or give a type the caller did not expect. :func:`load` turns every one of
these into :class:`JsonError` with a message naming the file, so that a command fails with one
clear line, or, where the caller chooses, counts a warning and goes on.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from auditor.errors import AuditorError

# Deeper than any document auditor writes (they are 3 to 5 levels deep); checked before
# parsing, so a hostile file never reaches the parser's recursion.
MAX_DEPTH = 64


class JsonError(AuditorError, ValueError):
    """A JSON document that cannot be used: not JSON, nested too deeply, or of the wrong type."""


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def shape(text: str | bytes) -> tuple[int, int]:
    """How deep ``[`` and ``{`` nest outside strings, and at most how many values the
    document holds (containers and commas: each value costs a Python object, so 5 MB of
    ``{},`` would take 150 MB to parse). Strings are cut out by a regular expression and only
    the brackets are walked, so a 20 MB document costs a fraction of its parse."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    containers = data.count(b"[") + data.count(b"{")
    if containers + data.count(b",") <= MAX_DEPTH:  # bounds that cannot reach a limit
        return min(containers, MAX_DEPTH), containers + data.count(b",") + 1
    return _walk(data)


def _walk(data: bytes) -> tuple[int, int]:
    bare = _STRING.sub(b"", data)
    depth = deepest = 0
    for b in bare.translate(None, _NOT_BRACKETS):
        if b in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest, bare.count(b",") + bare.count(b"[") + bare.count(b"{") + 1


def nesting(text: str | bytes) -> int:
    """The deepest nesting of ``[`` and ``{`` outside strings (exactly; :func:`shape` may
    give an upper bound for a document too small to reach a limit)."""
    return _walk(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text))[0]


def check_shape(
    text: str | bytes, what: str, max_values: int | None = None, max_depth: int = MAX_DEPTH
) -> None:
    """:class:`JsonError` when ``text`` nests deeper than ``max_depth`` or holds more than
    ``max_values`` values (both found before parsing, by :func:`shape`)."""
    depth, values = shape(text)
    if depth > max_depth:
        raise JsonError(f"{what}: not usable JSON: nested more than {max_depth} levels deep")
    if max_values is not None and values > max_values:
        raise JsonError(
            f"{what}: not usable JSON: some {values} values, more than the {max_values} "
            "expected of it"
        )


def loads(
    text: str | bytes,
    what: str,
    *,
    expect: type | tuple[type, ...] | None = None,
    max_depth: int = MAX_DEPTH,
    max_values: int | None = None,
) -> Any:
    """``text`` parsed as JSON, or :class:`JsonError` saying why ``what`` cannot be read.

    ``expect``: the type the top level must have (``dict``, ``list``, ...); ``max_values``:
    at most that many values (see :func:`shape`)."""
    check_shape(text, what, max_values, max_depth)
    try:
        obj = json.loads(text)
    except RecursionError:
        raise JsonError(f"{what}: not usable JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, the int digits limit
        raise JsonError(f"{what}: not JSON ({str(exc)[:120]})") from None
    if expect is not None and not isinstance(obj, expect):
        names = expect if isinstance(expect, tuple) else (expect,)
        wanted = " or ".join(t.__name__ for t in names)
        raise JsonError(f"{what}: expected a JSON {wanted}, found {type(obj).__name__}")
    return obj


def load(
    path: Path | str,
    what: str | None = None,
    *,
    expect: type | tuple[type, ...] | None = None,
    max_bytes: int | None = None,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """The JSON document in ``path`` (see :func:`loads`); ``max_bytes`` refuses larger files
    before reading them. OSError is left to the caller."""
    path = Path(path)
    label = what or str(path)
    if max_bytes is not None:
        size = path.stat().st_size
        if size > max_bytes:
            raise JsonError(f"{label}: {size} bytes is more than the {max_bytes} allowed")
    return loads(path.read_bytes(), label, expect=expect, max_depth=max_depth)
