"""Capture sessions: a folder that holds everything one capture produced.

Writing and reading are separate: capture code uses :class:`~auditor.session.writer.SessionWriter`,
analysis only ever opens a saved session with :class:`~auditor.session.reader.Session`.

- :mod:`auditor.session.layout`: the folder's file names and statuses, which files are artifacts;
- :mod:`auditor.session.manifest`: reading the manifest, and the digest its seal holds;
- :mod:`auditor.session.writer`: creating a session, appending records, closing and sealing it;
- :mod:`auditor.session.reader`: reading a saved session's records and flow table;
- :mod:`auditor.session.listing`: ``auditor sessions``.

Verifying a session and sealing one its recorder left open are evidence work, in
:mod:`auditor.evidence.verify` and :mod:`auditor.evidence.close`.

The names below are re-exported for the tests and for modules that import them from here;
new code imports from the module that defines a name.
"""

from auditor.session.layout import (
    CUSTODY,
    FLOWS,
    MANIFEST,
    STATUS_COMPLETE,
    STATUS_INCOMPLETE,
    STATUS_OPEN,
    TLS_KEYLOG,
    is_artifact,
    sha256_file,
)
from auditor.session.listing import list_sessions, session_info
from auditor.session.manifest import manifest_digest, read_manifest, read_manifest_lenient
from auditor.session.reader import Session, readable_files
from auditor.session.writer import (
    SessionWriteError,
    SessionWriter,
    append_line,
    close_session,
    new_session_id,
    write_all,
    write_error,
    write_json_atomic,
)

__all__ = [
    "CUSTODY",
    "FLOWS",
    "MANIFEST",
    "STATUS_COMPLETE",
    "STATUS_INCOMPLETE",
    "STATUS_OPEN",
    "TLS_KEYLOG",
    "Session",
    "SessionWriteError",
    "SessionWriter",
    "append_line",
    "close_session",
    "is_artifact",
    "list_sessions",
    "manifest_digest",
    "new_session_id",
    "read_manifest",
    "read_manifest_lenient",
    "readable_files",
    "session_info",
    "sha256_file",
    "write_all",
    "write_error",
    "write_json_atomic",
]
