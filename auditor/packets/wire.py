"""What the protocol parsers of :mod:`auditor.packets` share: the error each raises."""

from __future__ import annotations


class MalformedError(ValueError):
    """The bytes are not (or not entirely) what the parser expected."""
