"""Evidence bundles: one archive with a session, optionally its report, and ``bundle.json``.

Long because: writing and verifying a bundle must agree on one layout (member order, names,
modes, limits), so they stand side by side.

Layout of a bundle (a tar file, gzip-compressed or not)::

    bundle.json                      what is in the bundle and how it was made (below)
    bundle.sig                       optional Ed25519 signature over bundle.json
    captures/<session-id>/...        manifest.json, every artifact it lists, custody.jsonl
    reports/<session-id>/...         the report folder, when one was given

``bundle.json`` lists the SHA-256 and size of every other member, the versions of auditor and
its dependencies, the knowledge base and IP databases, the scenario and device profile, the
operator and the session's chain-of-custody log. The archive is deterministic: members in a
fixed order, fixed owner, mode and time, and a gzip header without name or time, so the same
files and ``bundle.json`` give the same bytes.

Reading a bundle never trusts it: members are streamed through :mod:`.archive` (no links, no
``..``, bounded sizes) and hashed without being extracted; :func:`unpack_bundle` writes them
into a fresh folder it created, and only keeps it when the bundle verifies.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import io
import json
import os
import platform
import re
import shutil
import socket
import stat
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from auditor import __version__, jsonio
from auditor.evidence import EvidenceError, custody
from auditor.evidence.archive import (
    CHUNK,
    DEFAULT_LIMITS,
    ArchiveLimits,
    UnsafeArchiveError,
    check_name,
    iter_members,
    shown,
)
from auditor.evidence.signing import (
    SignatureCheck,
    SignatureStatus,
    canonical_json,
    check_shape,
    check_signature,
    fingerprint,
    sign,
    strict_json,
)
from auditor.evidence.verify import verify_session
from auditor.session.layout import CUSTODY, MANIFEST, is_artifact
from auditor.session.manifest import read_manifest
from auditor.timeutil import now_iso, parse_iso

BUNDLE_JSON = "bundle.json"
BUNDLE_SIG = "bundle.sig"
BUNDLE_KIND = "auditor-evidence-bundle"
BUNDLE_SCHEMA_VERSION = 1
CAPTURES_DIR = "captures"
REPORTS_DIR = "reports"
SUFFIXES = (".tar.gz", ".tgz", ".tar")
MAX_FINDINGS = 1024**3
VALUES_BASE = 1_000_000
VALUES_PER_MEMBER = 8
MAX_PROBLEMS = (
    20  # of one kind, named one by one  # a findings.json read back to check which session it names
)

# Versions recorded besides auditor's declared dependencies (which are read from its metadata).
CORE_DISTRIBUTIONS = (
    "mitmproxy",
    "scapy",
    "adbutils",
    "pandas",
    "numpy",
    "pyarrow",
    "cryptography",
    "click",
    "pyyaml",
    "tldextract",
    "geoip2fast",
    "maxminddb",
    "stix2",
)

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SESSION_MANIFEST = re.compile(rf"{CAPTURES_DIR}/[^/]+/{re.escape(MANIFEST)}")
_SESSION_CUSTODY = re.compile(rf"{CAPTURES_DIR}/[^/]+/{re.escape(CUSTODY)}")
_REQ_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


# ------------------------------------------------------------------------------------ metadata


def dependency_versions() -> dict[str, str]:
    """auditor, Python and every dependency of auditor, by distribution name (sorted)."""
    names = set(CORE_DISTRIBUTIONS)
    try:
        for req in metadata.requires("auditor") or []:
            m = _REQ_NAME.match(req)
            if m and "extra ==" not in req:
                names.add(m.group(0))
    except metadata.PackageNotFoundError:
        pass
    out = {}
    for name in sorted(names, key=str.lower):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return {"auditor": __version__, "python": platform.python_version(), **out}


def knowledge_base_info() -> dict[str, Any]:
    """The knowledge base's version and the IP databases' dates, as the analyser reports them."""
    from auditor.intel.kb import KnowledgeBase

    try:
        kb = KnowledgeBase.load()
    except Exception as exc:  # noqa: BLE001 - recorded in the bundle; bundling goes on
        return {"knowledge_base": {"error": str(exc)}, "ip_database": []}
    return {"knowledge_base": kb.describe(), "ip_database": kb.ip_database()}


def _as_dict(value: Any) -> dict[str, Any]:
    """A JSON object from a document that may be anyone's: a dict, else empty."""
    return value if isinstance(value, dict) else {}


def _safe_name(name: str) -> bool:
    try:
        check_name(name)
    except UnsafeArchiveError:
        return False
    return True


def safe_id(sid: str) -> bool:
    return bool(_SAFE_ID.fullmatch(sid)) and sid not in (".", "..")


# -------------------------------------------------------------------------------------- making


@dataclass(frozen=True, slots=True)
class _Source:
    """One member to be: its name in the bundle, expected hash and size, and its content
    (bytes held in memory, or a file read again, and checked, as it is archived)."""

    name: str
    sha256: str
    size: int
    data: bytes | None = None
    file: Path | None = None


def _from_bytes(name: str, data: bytes) -> _Source:
    return _Source(name, hashlib.sha256(data).hexdigest(), len(data), data=data)


def _regular(path: Path) -> os.stat_result:
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise EvidenceError(f"{path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise EvidenceError(f"{path}: not a regular file (a link?); a bundle holds only files")
    return st


def _hash_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _session_sources(session: Path, root: str) -> tuple[list[_Source], dict[str, Any], bytes]:
    """Manifest, artifacts and custody log of a closed session that verifies."""
    res = verify_session(session)
    if not res.ok:
        issues = (
            [f"missing {p}" for p in res.missing]
            + [f"changed {p}" for p in res.changed]
            + [f"unlisted {p}" for p in res.unlisted]
            + list(res.problems)
        )
        more = f" (and {len(issues) - 3} more)" if len(issues) > 3 else ""
        raise EvidenceError(
            f"{session} does not verify: {'; '.join(issues[:3])}{more}; a bundle seals only a "
            f"session that does (see auditor verify {session})"
        )
    _regular(session / MANIFEST)
    manifest_bytes = (session / MANIFEST).read_bytes()
    manifest = jsonio.loads(manifest_bytes, str(session / MANIFEST), expect=dict)
    sources = [_from_bytes(f"{root}/{MANIFEST}", manifest_bytes)]
    arts = manifest.get("artifacts") or []
    if not isinstance(arts, list):
        raise EvidenceError(f"{session / MANIFEST}: its artifacts are not a list")
    for art in arts:
        try:
            rel = str(art["path"])
            sha, size = str(art["sha256"]), int(art["size"])
            check_name(f"{root}/{rel}")
        except (KeyError, TypeError, ValueError, UnsafeArchiveError) as exc:
            raise EvidenceError(
                f"{session / MANIFEST}: an artifact entry that cannot be bundled ({str(exc)[:200]})"
            ) from None
        _regular(session / rel)
        sources.append(_Source(f"{root}/{rel}", sha, size, file=session / rel))
    log_bytes, _, _ = custody.read_log(session / CUSTODY)
    if (session / CUSTODY).exists():
        sources.append(_from_bytes(f"{root}/{CUSTODY}", log_bytes))
    return sources, manifest, log_bytes


def _report_sources(report: Path, root: str, manifest_sha256: str) -> list[_Source]:
    if not report.is_dir():
        raise EvidenceError(f"{report}: no such report folder")
    sources = []
    for dirpath, dirnames, filenames in os.walk(report):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for d in dirnames:
            if os.path.islink(os.path.join(dirpath, d)):
                raise EvidenceError(f"{os.path.join(dirpath, d)}: a link; a bundle holds files")
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            _regular(path)
            rel = path.relative_to(report).as_posix()
            sha, size = _hash_file(path)
            sources.append(_Source(f"{root}/{rel}", sha, size, file=path))
    _check_report_is_of(report, manifest_sha256)
    return sources


def _check_report_is_of(report: Path, manifest_sha256: str) -> None:
    """A report's findings.json names the manifests it was made from; it must name this one."""
    if not (report / "findings.json").exists():
        return  # no findings.json (another format), nothing to compare
    try:
        doc = jsonio.load(report / "findings.json", expect=dict, max_bytes=MAX_FINDINGS)
    except OSError as exc:
        raise EvidenceError(f"{report / 'findings.json'}: {exc.strerror or exc}") from None
    named = _as_dict(doc.get("session")).get("manifest_sha256")
    if isinstance(named, list) and manifest_sha256 not in named:
        raise EvidenceError(
            f"{report} was not made from this session: its findings.json names other session "
            "manifests"
        )


def _mtime(manifest: dict[str, Any]) -> int:
    for key in ("ended_at", "started_at"):
        try:
            return max(0, int(parse_iso(str(manifest[key]))))
        except (KeyError, ValueError, TypeError):
            continue
    return 0


def _compressed(out: Path) -> bool:
    name = out.name.lower()
    if name.endswith((".tar.gz", ".tgz")):
        return True
    if name.endswith(".tar"):
        return False
    raise EvidenceError(f"{out}: name the bundle .tar.gz, .tgz or .tar")


@dataclass(frozen=True, slots=True)
class BundleResult:
    path: Path
    sha256: str
    size: int
    session: str
    files: int
    report: str | None
    signed_by: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": str(self.path),
            "sha256": self.sha256,
            "size": self.size,
            "session": self.session,
            "files": self.files,
            "report": self.report,
            "signed_by": self.signed_by,
        }


def _document(
    *,
    manifest: dict[str, Any],
    session_root: str,
    report_root: str | None,
    sources: list[_Source],
    custody_log: bytes,
    operator: str,
    created_at: str,
    argv: Iterable[str],
    environment: dict[str, Any],
) -> dict[str, Any]:
    entries, problems = custody.parse_log(custody_log)
    manifest_src = next(s for s in sources if s.name == f"{session_root}/{MANIFEST}")
    return {
        "kind": BUNDLE_KIND,
        "schema_version": BUNDLE_SCHEMA_VERSION,
        "created_at": created_at,
        "operator": operator,
        "bundled_by": {
            "user": custody.login_user(),
            "host": socket.gethostname(),
            "auditor_version": __version__,
            "argv": list(argv),
        },
        "session": {
            "id": manifest.get("session_id"),
            "path": session_root,
            "status": manifest.get("status"),
            "started_at": manifest.get("started_at"),
            "ended_at": manifest.get("ended_at"),
            "host": manifest.get("host"),
            "manifest_sha256": manifest_src.sha256,
            "artifacts": len(manifest.get("artifacts") or []),
        },
        "report": {"path": report_root} if report_root else None,
        "scenario": manifest.get("scenario") or {},
        "device": manifest.get("device") or {},
        "versions": environment.get("versions") or {},
        "knowledge_base": environment.get("knowledge_base") or {},
        "ip_database": environment.get("ip_database") or [],
        "custody": {
            "log": f"{session_root}/{CUSTODY}" if custody_log else None,
            "entries": entries,
            "problems": problems,
        },
        "files": [
            {"path": s.name, "sha256": s.sha256, "size": s.size}
            for s in sorted(sources, key=lambda s: s.name)
        ],
    }


def build_bundle(
    session: Path,
    out: Path,
    *,
    report: Path | None = None,
    key: Ed25519PrivateKey | None = None,
    operator: str | None = None,
    argv: Iterable[str] = (),
    created_at: str | None = None,
    environment: dict[str, Any] | None = None,
) -> BundleResult:
    """Write the bundle of ``session`` (and the ``report`` folder) to ``out``.

    The session must be closed and verify. ``out`` must not exist: it is written beside
    itself under a temporary name and linked into place once complete. ``environment``
    (versions, knowledge base, IP databases) and ``created_at`` default to the running
    auditor's and now."""
    session, out = Path(session), Path(out)
    gz = _compressed(out)
    if out.exists() or out.is_symlink():
        raise EvidenceError(f"{out} already exists; choose another --out")
    manifest = read_manifest(session)
    sid = str(manifest.get("session_id") or session.name)
    if not safe_id(sid):
        sid = session.name if safe_id(session.name) else "session"
    session_root = f"{CAPTURES_DIR}/{sid}"
    sources, manifest, log_bytes = _session_sources(session, session_root)
    report_root = None
    if report is not None:
        report_root = f"{REPORTS_DIR}/{sid}"
        sources += _report_sources(Path(report), report_root, sources[0].sha256)
    if environment is None:
        environment = {"versions": dependency_versions(), **knowledge_base_info()}
    doc = _document(
        manifest=manifest,
        session_root=session_root,
        report_root=report_root,
        sources=sources,
        custody_log=log_bytes,
        operator=operator or custody.login_user(),
        created_at=created_at or now_iso(),
        argv=argv,
        environment=environment,
    )
    doc = json.loads(json.dumps(doc))  # signed as a verifier will read it back
    try:
        strict_json(canonical_json(doc), BUNDLE_JSON)
    except ValueError as exc:  # a manifest's scenario or device nested near the limit
        raise EvidenceError(f"cannot write a bundle.json a verifier would read: {exc}") from None
    head = [_from_bytes(BUNDLE_JSON, json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n")]
    if key is not None:
        sig = sign(doc, key, BUNDLE_JSON)
        head.append(_from_bytes(BUNDLE_SIG, json.dumps(sig, indent=2).encode() + b"\n"))
    members = head + sorted(sources, key=lambda s: s.name)
    _write_archive(out, members, _mtime(manifest), gz)
    sha, size = _hash_file(out)
    return BundleResult(
        out,
        sha,
        size,
        sid,
        len(sources),
        report_root,
        fingerprint(key) if key is not None else None,
    )


class _CheckedReader:
    """Reads a source file for tarfile and hashes what it hands over."""

    def __init__(self, fh: IO[bytes]):
        self.fh = fh
        self.hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.hash.update(data)
        return data


def _tarinfo(src: _Source, mtime: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(src.name)
    ti.size = src.size
    ti.mtime = mtime
    ti.mode = 0o600
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.type = tarfile.REGTYPE
    return ti


def _add(tf: tarfile.TarFile, src: _Source, mtime: int) -> None:
    ti = _tarinfo(src, mtime)
    if src.data is not None:
        tf.addfile(ti, io.BytesIO(src.data))
        return
    assert src.file is not None
    try:
        fd = os.open(src.file, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise EvidenceError(f"{src.file}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as fh:
        reader = _CheckedReader(fh)
        try:
            tf.addfile(ti, reader)
        except OSError as exc:
            raise EvidenceError(f"{src.file} changed while it was bundled: {exc}") from None
    if reader.hash.hexdigest() != src.sha256:
        raise EvidenceError(f"{src.file} changed while it was bundled (its SHA-256 differs)")


def _write_archive(out: Path, members: list[_Source], mtime: int, gz: bool) -> None:
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=parent)
    except OSError as exc:
        raise EvidenceError(f"cannot write {out}: {exc.strerror or exc}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            target: IO[bytes] = raw
            gzf = None
            if gz:
                gzf = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6)
                target = gzf  # type: ignore[assignment]
            with tarfile.open(fileobj=target, mode="w", format=tarfile.PAX_FORMAT) as tf:
                for src in members:
                    _add(tf, src, mtime)
            if gzf is not None:
                gzf.close()
            raw.flush()
            os.fsync(raw.fileno())
        try:
            os.link(tmp, out)  # never replaces an existing file
        except FileExistsError:
            raise EvidenceError(f"{out} already exists; choose another --out") from None
        except OSError as exc:
            raise EvidenceError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------- checking


@dataclass
class _Scan:
    hashes: dict[str, tuple[str, int]] = field(default_factory=dict)
    kept: dict[str, bytes] = field(default_factory=dict)
    manifests: list[str] = field(default_factory=list)  # captures/*/manifest.json members
    logs: int = 0  # captures/*/custody.jsonl members

    def keep(self, name: str) -> bool:
        """Whether to hold the member in memory: bundle.json, bundle.sig, and the first
        session manifest and custody log or two (more than one session is a problem of its
        own)."""
        if name in (BUNDLE_JSON, BUNDLE_SIG):
            return True
        if _SESSION_MANIFEST.fullmatch(name):
            self.manifests.append(name)
            return len(self.manifests) <= 2
        if _SESSION_CUSTODY.fullmatch(name):
            self.logs += 1
            return self.logs <= 2
        return False


def _open_new(dest: Path, name: str) -> IO[bytes]:
    """A new file for member ``name`` under ``dest`` (a folder this process created), making
    its parent folders 0700; the name is already checked (relative, no ``..``). Each folder
    is opened relative to the one before, never following a link, so the length of ``dest``
    does not count against the path limit and nothing can lead outside it."""
    parts = name.split("/")
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for part in parts[:-1]:
            try:
                os.mkdir(part, 0o700, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                sub = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                    raise UnsafeArchiveError(
                        f"archive member {shown(name)} conflicts with another"
                    ) from None
                raise
            os.close(fd)
            fd = sub
        try:
            out = os.open(
                parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=fd
            )
        except FileExistsError:
            raise UnsafeArchiveError(
                f"archive member {shown(name)} conflicts with another"
            ) from None
    finally:
        os.close(fd)
    return os.fdopen(out, "wb")


def _scan(path: Path, limits: ArchiveLimits, dest: Path | None = None) -> _Scan:
    """Hash every member (and write it under ``dest`` when given); keep the few parsed ones."""
    scan = _Scan()
    for m in iter_members(path, limits):
        keep = scan.keep(m.name)
        if keep and m.size > limits.max_in_memory:
            raise UnsafeArchiveError(f"{m.name}: {m.size} bytes, too large for what it is")
        h = hashlib.sha256()
        parts: list[bytes] = []
        try:
            fh = _open_new(dest, m.name) if dest is not None else None
        except OSError as exc:
            raise EvidenceError(
                f"cannot unpack archive member {shown(m.name)}: {exc.strerror or exc}"
            ) from None
        try:
            for chunk in m.chunks():
                h.update(chunk)
                if keep:
                    parts.append(chunk)
                if fh is not None:
                    fh.write(chunk)
            if fh is not None:
                fh.close()  # a write the buffer held fails here, not silently
        except OSError as exc:  # a full disk, a file size limit
            raise EvidenceError(
                f"cannot unpack archive member {shown(m.name)}: {exc.strerror or exc}"
            ) from None
        finally:
            if fh is not None and not fh.closed:
                with contextlib.suppress(OSError):
                    fh.close()
        scan.hashes[m.name] = (h.hexdigest(), m.size)
        if keep:
            scan.kept[m.name] = b"".join(parts)
    return scan


@dataclass(frozen=True, slots=True)
class BundleCheck:
    """What :func:`verify_bundle` found. Paths are member names in the bundle."""

    path: Path
    ok: bool
    checked: int
    signature: SignatureCheck
    missing: tuple[str, ...] = ()  # listed in bundle.json, not in the archive
    changed: tuple[str, ...] = ()  # SHA-256 or size differs from bundle.json
    unlisted: tuple[str, ...] = ()  # in the archive, not in bundle.json
    session: str | None = None
    session_checked: int = 0
    session_missing: tuple[str, ...] = ()  # listed in the session manifest, not in the archive
    session_changed: tuple[str, ...] = ()  # differs from the session manifest
    session_unlisted: tuple[str, ...] = ()  # a session file the manifest does not list
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": str(self.path),
            "ok": self.ok,
            "checked": self.checked,
            "missing": list(self.missing),
            "changed": list(self.changed),
            "unlisted": list(self.unlisted),
            "session": {
                "path": self.session,
                "checked": self.session_checked,
                "missing": list(self.session_missing),
                "changed": list(self.session_changed),
                "unlisted": list(self.session_unlisted),
            },
            "signature": self.signature.to_dict(),
            "problems": list(self.problems),
            "warnings": list(self.warnings),
            **self.info,
        }


def _listed_files(doc: dict[str, Any], problems: list[str]) -> dict[str, tuple[str, int]]:
    listed: dict[str, tuple[str, int]] = {}
    files = doc.get("files")
    if not isinstance(files, list):
        problems.append(f"{BUNDLE_JSON}: no list of files")
        return listed
    bad: list[str] = []
    for f in files:
        ok = (
            isinstance(f, dict)
            and isinstance(f.get("path"), str)
            and isinstance(f.get("sha256"), str)
            and isinstance(f.get("size"), int)
        )
        if not ok:
            bad.append(f"{BUNDLE_JSON}: malformed file entry {_short(f)}")
            continue
        try:
            check_name(f["path"])
        except UnsafeArchiveError:
            bad.append(f"{BUNDLE_JSON}: unsafe path {shown(f['path'])}")
            continue
        if f["path"] in (BUNDLE_JSON, BUNDLE_SIG) or f["path"] in listed:
            bad.append(f"{BUNDLE_JSON}: {shown(f['path'])} is listed twice or lists itself")
            continue
        listed[f["path"]] = (f["sha256"], f["size"])
    problems += bad[:MAX_PROBLEMS]
    if len(bad) > MAX_PROBLEMS:
        problems.append(f"{BUNDLE_JSON}: {len(bad) - MAX_PROBLEMS} more bad file entries")
    return listed


def _short(value: Any) -> str:
    """A JSON value from a bundle, quoted in a problem: its repr, cut (containers are not
    walked past what is shown)."""
    if isinstance(value, dict | list):
        return f"({type(value).__name__} of {len(value)})"
    return shown(str(value)) if isinstance(value, str) else repr(value)[:80]


def _session_root(doc: dict[str, Any] | None, scan: _Scan, problems: list[str]) -> str | None:
    manifests = sorted(scan.manifests)
    if len(manifests) > 1:
        problems.append(f"more than one session in the bundle: {', '.join(manifests)}")
    named = (doc or {}).get("session") if doc else None
    root = named.get("path") if isinstance(named, dict) else None
    if isinstance(root, str) and re.fullmatch(rf"{CAPTURES_DIR}/[^/]+", root) and _safe_name(root):
        return root
    if doc is not None:
        problems.append(f"{BUNDLE_JSON}: no valid session path")
    return manifests[0].rsplit("/", 1)[0] if manifests else None


def _values_allowed(scan: _Scan) -> int:
    """How many JSON values bundle.json or the session manifest may hold: a few per member
    (a file entry has 4), and a generous allowance for the custody log, device and scenario;
    more would make a small hostile document take gigabytes to parse."""
    return VALUES_BASE + VALUES_PER_MEMBER * len(scan.hashes)


def _check_session(
    root: str, scan: _Scan, members: dict[str, tuple[str, int]], problems: list[str]
) -> tuple[int, list[str], list[str], list[str]]:
    """The session manifest's own artifact list against the archive's members."""
    name = f"{root}/{MANIFEST}"
    raw = scan.kept.get(name)
    if raw is None:
        problems.append(f"{name}: the session manifest is not in the bundle")
        return 0, [], [], []
    try:
        check_shape(raw, name, max_values=_values_allowed(scan))
        manifest = jsonio.loads(raw, name, expect=dict)
        arts = manifest["artifacts"]
        if not isinstance(arts, list):
            raise TypeError("artifacts is not a list")
    except (ValueError, KeyError, TypeError) as exc:  # JsonError is a ValueError
        problems.append(f"{name}: unreadable session manifest: {str(exc)[:300]}")
        return 0, [], [], []
    if manifest.get("status") == "open":
        problems.append(f"{name}: the session was never closed: no artifact hashes to check")
    listed: dict[str, tuple[Any, Any]] = {}
    bad = []
    for art in arts:
        rel = art.get("path") if isinstance(art, dict) else None
        try:
            if not isinstance(rel, str):
                raise UnsafeArchiveError("no path")
            check_name(rel)
        except UnsafeArchiveError:
            what = f"path {shown(rel)}" if isinstance(rel, str) else _short(art)
            bad.append(f"{name}: bad artifact entry ({what})")
            continue
        listed[f"{root}/{rel}"] = (art.get("sha256"), art.get("size"))
    problems += bad[:MAX_PROBLEMS]
    if len(bad) > MAX_PROBLEMS:
        problems.append(f"{name}: {len(bad) - MAX_PROBLEMS} more bad artifact entries")
    missing = sorted(p for p in listed if p not in members)
    changed = sorted(p for p in listed if p in members and members[p] != listed[p])
    unlisted = sorted(
        n
        for n in members
        if n.startswith(root + "/") and n not in listed and is_artifact(n[len(root) + 1 :])
    )
    return len(listed), missing, changed, unlisted


def _report_path(value: Any) -> bool:
    return (
        isinstance(value, str)
        and bool(re.fullmatch(rf"{REPORTS_DIR}/[^/]+", value))
        and (_safe_name(value))
    )


def _check_description(
    doc: dict[str, Any], root: str, members: dict[str, tuple[str, int]], problems: list[str]
) -> None:
    """What bundle.json says of the session and the report must be what the bundle holds."""
    said = _as_dict(doc.get("session")).get("manifest_sha256")
    held = members.get(f"{root}/{MANIFEST}")
    if held is not None and said != held[0]:
        problems.append(
            f"{BUNDLE_JSON} names session manifest {str(said)[:80]}; the bundle's has SHA-256 "
            f"{held[0]}"
        )
    report = doc.get("report")
    if report is not None:
        path = _as_dict(report).get("path")
        if not _report_path(path):
            problems.append(
                f"{BUNDLE_JSON}: the report path {str(path)[:120]!r} is not reports/<id>"
            )
        elif not any(n.startswith(f"{path}/") for n in members):
            problems.append(
                f"{BUNDLE_JSON} names the report {path}, which the bundle does not hold"
            )
    known = [f"{root}/"]
    if _report_path(_as_dict(report).get("path")):
        known.append(f"{_as_dict(report)['path']}/")
    stray = sorted(n for n in members if not n.startswith(tuple(known)))
    if stray:
        more = f" and {len(stray) - 3} more" if len(stray) > 3 else ""
        problems.append(
            f"files outside the session and the report: "
            f"{', '.join(shown(n) for n in stray[:3])}{more}"
        )


def _check_custody(
    doc: dict[str, Any], log: bytes | None, problems: list[str], warnings: list[str]
) -> None:
    """The bundled custody log, read again: its chain breaks are warnings (as for a session
    folder), and bundle.json must copy its entries and problems as they are."""
    entries, breaks = custody.parse_log(log) if log is not None else ([], [])
    warnings += [f"custody log: {p}" for p in breaks]
    said = _as_dict(doc.get("custody"))
    if said.get("entries") != entries or said.get("problems") != breaks:
        problems.append(
            f"{BUNDLE_JSON}: its custody entries or problems are not those of the bundled "
            "custody log"
        )


def _judge(path: Path, scan: _Scan, trusted: Ed25519PublicKey | None) -> BundleCheck:
    problems: list[str] = []
    warnings: list[str] = []
    doc: dict[str, Any] | None = None
    raw = scan.kept.get(BUNDLE_JSON)
    if raw is None:
        problems.append(
            f"{BUNDLE_JSON} is missing: not an auditor evidence bundle, or it was removed"
        )
    else:
        try:
            parsed = strict_json(raw, BUNDLE_JSON, max_values=_values_allowed(scan))
            if not isinstance(parsed, dict) or parsed.get("kind") != BUNDLE_KIND:
                raise ValueError(f"not a {BUNDLE_KIND} document")
            if parsed.get("schema_version") != BUNDLE_SCHEMA_VERSION:
                raise ValueError(f"schema_version {parsed.get('schema_version')!r:.40} unknown")
            doc = parsed
        except jsonio.JsonError as exc:
            problems.append(str(exc)[:300])
        except ValueError as exc:  # UnicodeDecodeError is one
            problems.append(f"{BUNDLE_JSON}: unreadable: {str(exc)[:300]}")
    members = {n: v for n, v in scan.hashes.items() if n not in (BUNDLE_JSON, BUNDLE_SIG)}
    listed = _listed_files(doc, problems) if doc is not None else {}
    missing = sorted(p for p in listed if p not in members)
    changed = sorted(p for p in listed if p in members and members[p] != listed[p])
    unlisted = sorted(p for p in members if p not in listed) if doc is not None else []
    root = _session_root(doc, scan, problems)
    s_checked, s_missing, s_changed, s_unlisted = (
        _check_session(root, scan, members, problems) if root else (0, [], [], [])
    )
    if doc is not None and root is not None:
        _check_description(doc, root, members, problems)
    sig_raw = scan.kept.get(BUNDLE_SIG)
    if doc is None:
        sig = SignatureCheck(
            SignatureStatus.INVALID if sig_raw else SignatureStatus.ABSENT,
            f"nothing to check it against ({BUNDLE_JSON} unreadable)",
            None,
            fingerprint(trusted) if trusted else None,
        )
    else:
        sig = check_signature(sig_raw, doc, trusted)
        if root is not None:
            _check_custody(doc, scan.kept.get(f"{root}/{CUSTODY}"), problems, warnings)
    info = {
        k: doc.get(k) for k in ("created_at", "operator")
    } if doc else {}  # fmt: skip
    if doc:
        info["session_id"] = _as_dict(doc.get("session")).get("id")
        report = _as_dict(doc.get("report")).get("path")
        info["report"] = report if _report_path(report) else None
    ok = (
        not (missing or changed or unlisted or s_missing or s_changed or s_unlisted or problems)
        and sig.ok
    )
    return BundleCheck(
        path=path,
        ok=ok,
        checked=len(listed),
        signature=sig,
        missing=tuple(missing),
        changed=tuple(changed),
        unlisted=tuple(unlisted),
        session=root,
        session_checked=s_checked,
        session_missing=tuple(s_missing),
        session_changed=tuple(s_changed),
        session_unlisted=tuple(s_unlisted),
        problems=tuple(problems),
        warnings=tuple(warnings),
        info=info,
    )


def verify_bundle(
    path: Path, trusted: Ed25519PublicKey | None = None, limits: ArchiveLimits = DEFAULT_LIMITS
) -> BundleCheck:
    """Check every member against ``bundle.json``, the session's files against its manifest,
    and the signature (with ``trusted`` when given), reading the archive without extracting.

    Raises :class:`UnsafeArchiveError` for an archive that holds a link, a device, a path out
    of it or an oversized member, and :class:`EvidenceError` when it is no readable archive."""
    path = Path(path)
    return _judge(path, _scan(path, limits), trusted)


def format_check(res: BundleCheck) -> list[str]:
    lines = [f"MISSING   {p}" for p in res.missing]
    lines += [f"CHANGED   {p}" for p in res.changed]
    lines += [f"UNLISTED  {p}" for p in res.unlisted]
    lines += [f"MISSING   {p}  (listed in the session manifest)" for p in res.session_missing]
    lines += [f"CHANGED   {p}  (differs from the session manifest)" for p in res.session_changed]
    lines += [f"UNLISTED  {p}  (not in the session manifest)" for p in res.session_unlisted]
    lines += [f"PROBLEM   {p}" for p in res.problems]
    lines += [f"WARNING   {w}" for w in res.warnings]
    sig = res.signature
    label = sig.status.value if sig.ok else sig.status.value.upper()
    lines.append(f"SIGNATURE {label}: {sig.detail}")
    who = ""
    if res.info.get("operator"):
        who = f" (session {res.info.get('session_id')}, bundled {res.info.get('created_at')} by "
        who += f"{res.info.get('operator')})"
    lines.append(f"{'OK' if res.ok else 'FAILED'}: {res.checked} files checked in {res.path}{who}")
    return lines


# ---------------------------------------------------------------------------------- unpacking


@dataclass(frozen=True, slots=True)
class UnpackResult:
    out: Path
    unpacked: bool
    check: BundleCheck
    session: Path | None
    report: Path | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "unpacked": self.unpacked,
            "session": str(self.session) if self.session else None,
            "report": str(self.report) if self.report else None,
            "check": self.check.to_dict(),
        }


def unpack_bundle(
    path: Path,
    out: Path,
    *,
    trusted: Ed25519PublicKey | None = None,
    force: bool = False,
    limits: ArchiveLimits = DEFAULT_LIMITS,
) -> UnpackResult:
    """Extract the bundle into the new (or empty) folder ``out``, checking it as it goes.

    Members are written into a fresh temporary folder beside ``out`` (files 0600, folders
    0700, never through a link); it becomes ``out`` only when the bundle verifies, or with
    ``force`` (a damaged bundle, for inspection). Unsafe archives are refused either way."""
    path, out = Path(path), Path(out)
    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise EvidenceError(f"{out} exists and is not an empty folder; choose another --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as exc:
        raise EvidenceError(f"cannot create {out}: {exc.strerror or exc}") from None
    try:
        check = _judge(path, _scan(path, limits, staging), trusted)
        if not check.ok and not force:
            shutil.rmtree(staging)
            return UnpackResult(out, False, check, None, None)
        try:
            if out.exists():
                out.rmdir()  # still empty: another process may have filled it since
            os.rename(staging, out)
        except OSError as exc:
            raise EvidenceError(
                f"cannot move the unpacked bundle to {out}: {exc.strerror or exc}"
            ) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    session = out / check.session if check.session else None
    rep = check.info.get("report")
    report = out / rep if rep and (out / rep).is_dir() else None
    return UnpackResult(out, True, check, session, report)
