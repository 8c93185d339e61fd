"""Transition shim: ``auditor.codecs`` is now :mod:`auditor.decoders` (the old name shadowed the
standard library's ``codecs``). Only files owned elsewhere in issue 16 still import it
(``auditor/bodies.py``, ``auditor/analysis/redact.py``, the virtual handset's ``payloads.py`` and
its test); delete this file once they import ``auditor.decoders``."""

from __future__ import annotations

from auditor.decoders import DEFAULT_DECODE_LIMIT as DEFAULT_DECODE_LIMIT
from auditor.decoders import Decoded as Decoded
from auditor.decoders import decode as decode
from auditor.decoders import text_views as text_views
from auditor.decoders import zstd as zstd
