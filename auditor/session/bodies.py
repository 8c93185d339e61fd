"""The content-addressed body store of a session (``bodies/<sha256>.zst``).

Bodies are kept exactly as they came on the wire (still gzip/br/zstd encoded when they were),
named by the SHA-256 of those bytes and compressed on disk with zstd. A body larger than the cap
is cut at the cap and flagged; the hash of the whole body is kept beside it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from auditor.decoders import DEFAULT_DECODE_LIMIT, Decoded, decode, zstd
from auditor.fsutil import open_regular
from auditor.records import BodyRef

DEFAULT_BODY_CAP = 64 * 1024 * 1024
SUFFIX = ".zst"
_ZSTD_LEVEL = 3


class BodyUnreadable(OSError):
    """A stored body that is there but cannot be read back as it was stored."""


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class BodyStore:
    def __init__(self, root: Path, cap: int = DEFAULT_BODY_CAP, *, decode_sizes: bool = True):
        self.root = root
        self.cap = cap
        self.decode_sizes = decode_sizes
        self._known: set[str] = set()

    def path(self, sha256: str) -> Path:
        return self.root / f"{sha256}{SUFFIX}"

    def put(self, raw: bytes, encoding: str | None = None) -> BodyRef:
        """Store ``raw`` (wire bytes) and return its reference."""
        wire_size = len(raw)
        truncated = wire_size > self.cap
        full_sha = hashlib.sha256(raw).hexdigest() if truncated else None
        stored = raw[: self.cap] if truncated else raw
        sha = hashlib.sha256(stored).hexdigest()
        self._write(sha, stored)
        decoded_size: int | None = wire_size
        decode_error: str | None = None
        enc = (encoding or "").strip() or None
        if enc and enc.lower() != "identity":
            if truncated:
                decoded_size, decode_error = None, "body truncated at cap; not decoded"
            elif self.decode_sizes:
                res = decode(raw, enc, DEFAULT_DECODE_LIMIT, keep=False)
                decoded_size = None if res.exceeded else res.size
                if res.exceeded:
                    decode_error = f"decoded size exceeds {DEFAULT_DECODE_LIMIT} bytes"
                elif res.error:
                    decode_error = res.error
            else:
                decoded_size = None
        return BodyRef(
            sha256=sha,
            size=len(stored),
            wire_size=wire_size,
            truncated=truncated,
            encoding=enc,
            decoded_size=decoded_size,
            decode_error=decode_error,
            full_sha256=full_sha,
        )

    def _write(self, sha: str, data: bytes) -> None:
        """Write a body whole under its name, or not at all: a body cut short by a full disk
        (ENOSPC, EFBIG) never takes its name. Raises the OSError."""
        if sha in self._known:
            return
        target = self.path(sha)
        if not target.exists():
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = target.with_name(f".{sha}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                try:
                    _write_all(fd, zstd.compress(data, _ZSTD_LEVEL))
                finally:
                    os.close(fd)
                os.replace(tmp, target)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise OSError(exc.errno, exc.strerror, str(target)) from None
        self._known.add(sha)

    def get(self, sha256: str) -> bytes:
        """The stored wire bytes of a body, checked against their name. Raises
        FileNotFoundError when absent, BodyUnreadable (an OSError too) when damaged."""
        path = self.path(sha256)
        name = f"{self.root.name}/{path.name}"  # short: it goes into reports' warnings
        try:
            with open_regular(path) as fh:  # a FIFO would make analyze wait forever
                packed = fh.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"{name}: missing") from None
        except OSError as exc:
            raise BodyUnreadable(f"{name}: not readable ({exc.strerror or exc})") from None
        try:
            data = zstd.decompress(packed)
        except zstd.ZstdError as exc:
            raise BodyUnreadable(f"{name}: damaged (zstd: {exc})") from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise BodyUnreadable(f"{name}: content does not match its SHA-256 (edited?)")
        return data

    def decoded(self, ref: BodyRef, limit: int = DEFAULT_DECODE_LIMIT) -> Decoded:
        """The body with its content encoding undone, at most ``limit`` bytes."""
        return decode(self.get(ref.sha256), ref.encoding, limit)
