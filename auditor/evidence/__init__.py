"""Evidence handling: the chain-of-custody log of a session (:mod:`.custody`), Ed25519 keys and
signatures (:mod:`.signing`), safe reading of archives (:mod:`.archive`) and the evidence
bundle that packs a session and its report for someone else to check (:mod:`.bundle`).

See docs/evidence.md.
"""

from __future__ import annotations

from auditor.errors import AuditorError


class EvidenceError(AuditorError):
    """A bundle or key cannot be written or read, or an archive is unsafe to read."""
