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
from pathlib import Path
from typing import Any

from auditor.errors import AuditorError

# Deeper than any document auditor writes (they are 3 to 5 levels deep); checked before
# parsing, so a hostile file never reaches the parser's recursion.
MAX_DEPTH = 64


class JsonError(AuditorError, ValueError):
    """A JSON document that cannot be used: not JSON, nested too deeply, or of the wrong type."""


def nesting(text: str | bytes) -> int:
    """The deepest nesting of ``[`` and ``{`` outside strings (a linear scan, no recursion)."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    depth = deepest = 0
    in_string = escaped = False
    for b in data:
        if in_string:
            if escaped:
                escaped = False
            elif b == 0x5C:  # backslash
                escaped = True
            elif b == 0x22:
                in_string = False
        elif b == 0x22:
            in_string = True
        elif b in (0x5B, 0x7B):
            depth += 1
            if depth > deepest:
                deepest = depth
        elif b in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _too_deep(text: str | bytes, limit: int) -> bool:
    # fast path: a document with fewer brackets than the limit cannot be nested deeper
    opening = (
        text.count("[") + text.count("{")
        if isinstance(text, str)
        else (text.count(b"[") + text.count(b"{"))
    )
    return opening > limit and nesting(text) > limit


def loads(
    text: str | bytes,
    what: str,
    *,
    expect: type | tuple[type, ...] | None = None,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """``text`` parsed as JSON, or :class:`JsonError` saying why ``what`` cannot be read.

    ``expect``: the type the top level must have (``dict``, ``list``, ...)."""
    if _too_deep(text, max_depth):
        raise JsonError(f"{what}: not usable JSON: nested more than {max_depth} levels deep")
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
