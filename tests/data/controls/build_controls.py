"""Builds the three real-world-shaped HAR controls of this folder (run from the repository
root; see PROVENANCE.md for the sources). Deterministic: the same inputs give the same files.

    python tests/data/controls/build_controls.py CHANGELOG.md default_settings.json
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).parent
# From Google's IMA SDK sample app (googleads/googleads-ima-android, AdvancedExample
# VideoMetadata.java, PRE_ROLL_NO_SKIP): the SDK appends a random correlator per request.
AD_TAG = (
    "https://pubads.g.doubleclick.net/gampad/ads?iu=/21775744923/external/"
    "single_ad_samples&sz=640x480&cust_params=sample_ct%3Dlinear&"
    "ciu_szs=300x250%2C728x90&gdfp_req=1&output=vast&unviewed_position_start=1&"
    "env=vp&correlator="
)
# Crashpad's minidump upload to Crashlytics (firebase-crashlytics-ndk builds crashpad's
# http_multipart_builder): multipart/form-data, the minidump part gzip-compressed.
CRASH_URL = (
    "https://reports.crashlytics.com/sdk-api/v1/platforms/android/apps/"
    "com.google.ads.interactivemedia.v3.samples.videoplayerapp/minidumps"
)
BOUNDARY = "---MultipartBoundary-vAuJ7kGm1KkxZb3W5qKdyDbGcHJHlqgd---"
UA = "Dalvik/2.1.0 (Linux; U; Android 13; sdk_gphone64_x86_64 Build/TE1A.220922.012)"


def luhn_complete(digits: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (1 if i % 2 else 2)
        total += d - 9 if d > 9 else d
    return digits + str((10 - total % 10) % 10)


def entry(method: str, url: str, headers: dict[str, str], body: bytes | None, mime: str) -> dict:
    req: dict = {
        "method": method,
        "url": url,
        "httpVersion": "HTTP/1.1",
        "cookies": [],
        "headers": [{"name": k, "value": v} for k, v in headers.items()],
        "queryString": [],
        "headersSize": -1,
        "bodySize": len(body) if body is not None else 0,
    }
    if body is not None:
        req["postData"] = {
            "mimeType": mime,
            "text": base64.b64encode(body).decode(),
            "encoding": "base64",
        }
    return {
        "startedDateTime": "2024-05-14T09:12:03.512Z",
        "time": 120.0,
        "request": req,
        "response": {
            "status": 200,
            "statusText": "OK",
            "httpVersion": "HTTP/1.1",
            "cookies": [],
            "headers": [],
            "content": {"size": 0, "mimeType": "text/plain"},
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": 0,
        },
        "cache": {},
        "timings": {"send": 1, "wait": 100, "receive": 19},
    }


def har(entries: list[dict]) -> str:
    doc = {"log": {"version": "1.2", "creator": {"name": "build_controls.py", "version": "1"},
                   "entries": entries}}  # fmt: skip
    return json.dumps(doc, indent=1) + "\n"


def multipart(parts: list[tuple[str, str, bytes]]) -> bytes:
    out = b""
    for name, ctype, data in parts:
        out += (
            (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; '
                f'filename="{name}"\r\nContent-Type: {ctype}\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    return out + f"--{BOUNDARY}--\r\n".encode()


def main(changelog: Path, settings: Path) -> None:
    correlator = luhn_complete("41977285316847")
    ad = entry("GET", AD_TAG + correlator, {"user-agent": UA, "accept": "*/*"}, None, "")
    (HERE / "doubleclick_correlator.har").write_text(har([ad]), encoding="utf-8")

    text = changelog.read_bytes()
    parts = [
        ("upload_file_minidump", "application/octet-stream", gzip.compress(text, mtime=0)),
        ("metadata", "application/octet-stream", gzip.compress(settings.read_bytes(), mtime=0)),
    ]
    body = multipart(parts)
    ctype = f"multipart/form-data; boundary={BOUNDARY}"
    crash = entry("POST", CRASH_URL, {"user-agent": UA, "content-type": ctype}, body, ctype)
    (HERE / "crashlytics_multipart_gzip.har").write_text(har([crash]), encoding="utf-8")

    # the positive control: the same upload, its part random bytes as ciphertext is (SHAKE-256)
    sealed = hashlib.shake_256(b"auditor issue 14 control").digest(len(parts[0][2]))
    body = multipart([("upload_file_minidump", "application/octet-stream", sealed), parts[1]])
    crash = entry("POST", CRASH_URL, {"user-agent": UA, "content-type": ctype}, body, ctype)
    (HERE / "crashlytics_multipart_sealed.har").write_text(har([crash]), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
