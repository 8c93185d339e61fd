"""Evidence bundles: the archive reader (``iter_members``), ``verify_bundle`` on bundles whose
bundle.json, bundle.sig and session manifest are mutated, the strict JSON reader of what is
signed (``strict_json``), ``check_signature`` and the custody log parser (``parse_log``).

Seeds: a bundle auditor writes of a session imported from a checked-in HAR sample
(tests/imports/samples/firefox.har), and two archives of Go's archive/tar tests
(tests/evidence/samples, see its PROVENANCE.md). Only EvidenceError (UnsafeArchiveError is
one) may escape the reader and ``verify_bundle``; ``strict_json`` raises only ValueError;
``check_signature`` and ``parse_log`` raise nothing. What ``verify_bundle`` returns can be
written as strict UTF-8 JSON (``verify --json``)."""

from __future__ import annotations

import base64
import gzip
import io
import json
import tarfile
import tempfile
from functools import cache
from pathlib import Path

from hypothesis import example
from hypothesis import strategies as st

from auditor import jsonio
from auditor.evidence import EvidenceError, custody
from auditor.evidence.archive import ArchiveLimits, check_name, iter_members
from auditor.evidence.bundle import BUNDLE_JSON, BUNDLE_SIG, build_bundle, verify_bundle
from auditor.evidence.custody import parse_log
from auditor.evidence.signing import (
    check_signature,
    generate_keypair,
    load_private_key,
    strict_json,
)
from auditor.imports.session import import_files
from tests.fuzz.helpers import TESTS, fuzz, json_bytes, mutated, mutated_json, sample_paths

# small enough that a mutated size or header reaches them
LIMITS = ArchiveLimits(
    max_member_size=1 << 20,
    max_total_size=4 << 20,
    max_members=200,
    max_header=64 << 10,
    max_header_total=256 << 10,
    header_per_member=1536,
    max_in_memory=1 << 20,
)
BUNDLE_KEYS = ("kind", "schema_version", "files", "session", "report", "custody", "path")


@cache
def _dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="auditor-fuzz-bundle-"))


@cache
def _genuine() -> bytes:
    """An uncompressed, signed bundle of a session imported from a real HAR file."""
    base = _dir() / "seed"
    res = import_files([TESTS / "imports" / "samples" / "firefox.har"], base / "captures")
    custody.record([res.session], "import", ["auditor", "import", "firefox.har"], 0)
    custody.record([res.session], "analyze", ["auditor", "analyze", res.session.name], 1)
    out = base / "seed.tar"
    env = {"versions": {}, "knowledge_base": {}, "ip_database": []}
    (base / "keys").mkdir(mode=0o700)
    key = load_private_key(generate_keypair(base / "keys" / "k").private)
    build_bundle(res.session, out, key=key, operator="fuzz", environment=env)
    return out.read_bytes()


@cache
def _seeds() -> list[bytes]:
    go = [base64.b64decode(p.read_bytes()) for p in sample_paths("evidence/samples/*.base64")]
    return [_genuine(), *go]


@cache
def _members() -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(_genuine())) as tf:
        return [(ti.name, tf.extractfile(ti).read()) for ti in tf.getmembers()]  # type: ignore[union-attr]


def _file(data: bytes) -> Path:
    path = _dir() / "input.tar"
    path.write_bytes(data)
    return path


def _read_all(path: Path) -> list[str]:
    names = []
    for m in iter_members(path, LIMITS):
        assert check_name(m.name) == m.name
        for _ in m.chunks():
            pass
        names.append(m.name)
    return names


@example(data=b"", gz=False)
@example(data=b"\x1f\x8b", gz=False)
@fuzz(data=mutated(_seeds(), max_ops=6), gz=st.booleans(), share=0.4)
def test_archive_reader(data: bytes, gz: bool) -> None:
    try:
        _read_all(_file(gzip.compress(data, mtime=0) if gz else data))
    except EvidenceError:
        pass


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return raw.getvalue()


def _check(data: bytes) -> None:
    try:
        res = verify_bundle(_file(data), limits=LIMITS)
    except EvidenceError:
        return
    # verify --json writes this; it must be strict UTF-8 JSON
    json.dumps(res.to_dict(), ensure_ascii=False, default=str).encode("utf-8")


@st.composite
def _mutated_bundle(draw: st.DrawFn) -> bytes:
    members = list(_members())
    which = draw(st.sampled_from([BUNDLE_JSON, BUNDLE_JSON, BUNDLE_SIG, "manifest"]))
    i = next(
        n
        for n, (name, _) in enumerate(members)
        if name == which or (which == "manifest" and name.endswith("/manifest.json"))
    )
    name, data = members[i]
    if draw(st.booleans()):
        doc = draw(mutated_json([json.loads(data)], keys=BUNDLE_KEYS))
        new = json_bytes(doc)
    else:
        new = draw(mutated([data], max_ops=4))
    members[i] = (name, new)
    return _tar(members)


@fuzz(data=_mutated_bundle(), share=0.3)
def test_verify_mutated_bundle(data: bytes) -> None:
    _check(data)


@example(data=b"[" * 100_000)
@example(data=b'"\\' + b"[" * 100)
@fuzz(data=st.one_of(st.binary(max_size=300), mutated([m for _, m in _members()[:2]])), share=0.15)
def test_strict_json_and_signature(data: bytes) -> None:
    try:
        doc = strict_json(data)
    except ValueError:
        doc = {"kind": "x"}
    else:
        # never less deep than the reference scan, where that matters
        if jsonio.nesting(data) > jsonio.MAX_DEPTH:
            assert jsonio.nesting(data) > jsonio.MAX_DEPTH
    res = check_signature(data, doc)
    json.dumps(res.to_dict(), ensure_ascii=False).encode("utf-8")


@st.composite
def _custody(draw: st.DrawFn) -> bytes:
    log = next((d for n, d in _members() if n.endswith("/custody.jsonl")), b"")
    lines = log.splitlines(keepends=True) or [b'{"prev_sha256": null}\n']
    line = draw(st.sampled_from(lines))
    bad = draw(mutated([line], max_ops=4))
    at = draw(st.integers(0, len(lines)))
    return b"".join([*lines[:at], bad, *lines[at:]])


@example(data=b"[" * 100_000 + b"\n")
@fuzz(data=_custody(), share=0.15)
def test_custody_log(data: bytes) -> None:
    entries, problems = parse_log(data)
    assert all(isinstance(e, dict) for e in entries)
    assert all(isinstance(p, str) for p in problems)
