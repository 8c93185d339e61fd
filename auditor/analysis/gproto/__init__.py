"""Google's protobuf uploads read by their published message definitions.

Three uploads the studies of Android telemetry decoded by schema (Leith 2021; Liu, Patras and
Leith 2021): the Clearcut log batches of Google Play services (``play.googleapis.com/log/batch``:
a ``LogRequest`` with its log source name), the Firebase Analytics batch
(``app-measurement.com/a``) and the Android check-in (``android.clients.google.com/checkin``).
The message definitions are in ``protos/`` (each file cites the public source of its field names
and numbers) and are compiled by ``protoc`` into ``schemas.desc``, which the protobuf library
loads at run time: see docs/protobuf.md for how to regenerate it.

:func:`endpoint_for` says which definition a URL's request body follows; :func:`decode` reads a
body with it into named fields, with the fields no definition names kept by number
(``pb:25``), as the schema-less walk of :mod:`auditor.analysis.payload` names them.
"""

from auditor.analysis.gproto.decode import (
    Decoded,
    DecodedField,
    FieldKind,
    SchemaError,
    decode,
)
from auditor.analysis.gproto.schemas import ENDPOINTS, Endpoint, endpoint_for, message_class

__all__ = [
    "ENDPOINTS",
    "Decoded",
    "DecodedField",
    "Endpoint",
    "FieldKind",
    "SchemaError",
    "decode",
    "endpoint_for",
    "message_class",
]
