"""The TLS key log auditor's launcher gives mitmdump: made owner-only before mitmdump starts,
sealed with the session, and read by tshark, an independent reader, to decrypt a capture of
the loopback traffic of a real mitmdump (the phone's side of the proxy, as PCAPdroid and
adb-tcpdump see it, and mitmdump's own side toward the server)."""

from __future__ import annotations

import os
import shutil
import ssl
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from auditor.errors import CaptureError
from auditor.evidence.verify import verify_session
from auditor.proxy.capture import (
    KEYLOG_ENV,
    Mitmdump,
    ProxyOptions,
    ca_cert_path,
    create_keylog,
    prepare_confdir,
    run_capture,
)
from auditor.session import TLS_KEYLOG, Session, sha256_file
from tests.conftest import free_port
from tests.proxied import proxied_request
from vhandset.offline.internet import OfflineInternet

TSHARK = shutil.which("tshark")
DUMPCAP = shutil.which("dumpcap")


def test_the_key_log_is_made_owner_only_before_anything_writes_it(tmp_path: Path) -> None:
    session = tmp_path / "s"
    session.mkdir()
    old = os.umask(0)  # mitmproxy itself would create the file 0666 under this umask
    try:
        path = create_keylog(session)
    finally:
        os.umask(old)
    assert path == session / TLS_KEYLOG
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.stat().st_size == 0
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    path.write_bytes(b"CLIENT_RANDOM 00 11\n")
    path.chmod(0o644)
    create_keylog(session)  # again (a restarted proxy): kept, narrowed back
    assert path.read_bytes() == b"CLIENT_RANDOM 00 11\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_key_log_that_is_a_link_is_refused(tmp_path: Path) -> None:
    session = tmp_path / "s"
    (session / "tls").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere.txt"
    (session / TLS_KEYLOG).symlink_to(elsewhere)
    with pytest.raises(CaptureError, match="TLS key log"):
        create_keylog(session)
    assert not elsewhere.exists()
    fifo_session = tmp_path / "s2"
    (fifo_session / "tls").mkdir(parents=True)
    os.mkfifo(fifo_session / TLS_KEYLOG)
    with pytest.raises(CaptureError, match="TLS key log"):
        create_keylog(fifo_session)  # without a reader: refused at once, not blocked on
    reader = os.open(fifo_session / TLS_KEYLOG, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(CaptureError, match="not a regular file"):
            create_keylog(fifo_session)
    finally:
        os.close(reader)


def test_the_launcher_overrides_a_key_log_inherited_from_the_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in KEYLOG_ENV:
        monkeypatch.setenv(name, str(tmp_path / "shell-keylog.txt"))
    monkeypatch.chdir(tmp_path)
    env = Mitmdump(Path("captures/S1"), ProxyOptions(confdir=tmp_path / "c")).env()
    want = str(tmp_path / "captures" / "S1" / "tls" / "keylog.txt")
    assert [env[name] for name in KEYLOG_ENV] == [want, want]
    assert env["PATH"] == os.environ["PATH"]


# ---- a real mitmdump, a real capture of loopback, and tshark ----------------------------------


@contextmanager
def loopback_capture(out: Path, ports: list[int]) -> Iterator[Path]:
    """dumpcap on ``lo``, filtered to ``ports``, until the block ends (stopped by its PID). The
    test is skipped when it cannot capture here (no dumpcap, no permission)."""
    if DUMPCAP is None or TSHARK is None:
        pytest.skip("tshark/dumpcap is not installed")
    flt = " or ".join(f"tcp port {p}" for p in ports)
    err = out.with_suffix(".err")
    with open(err, "wb") as errf:
        proc = subprocess.Popen(
            [DUMPCAP, "-q", "-i", "lo", "-f", flt, "-w", str(out)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errf,
        )
    try:
        deadline = time.monotonic() + 10
        while b"File:" not in err.read_bytes():  # printed once the filter is on
            if proc.poll() is not None or time.monotonic() > deadline:
                said = [ln for ln in err.read_text().splitlines() if ln.startswith("dumpcap")]
                pytest.skip(f"dumpcap cannot capture on lo here: {' '.join(said)[:300]}")
            time.sleep(0.05)
        time.sleep(0.5)  # the filter set, the capture's first read under way (seen to miss)
        yield out
    finally:
        if proc.poll() is None:
            time.sleep(0.5)  # what the kernel holds for it read before it stops
            proc.terminate()  # dumpcap writes out what it holds on SIGTERM
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def http_requests(pcap: Path, keylog: Path | None) -> list[tuple[str, str]]:
    """(host, URI) of every HTTP request tshark reads in ``pcap``, with the key log or none."""
    prefs = ["-o", f"tls.keylog_file:{keylog}"] if keylog else ["-o", "tls.keylog_file:"]
    fields = ["-T", "fields", "-e", "http.request.method", "-e", "http.host"]
    fields += ["-e", "http.request.uri"]
    out = subprocess.run(
        [TSHARK or "tshark", "-n", "-r", str(pcap), *prefs, "-Y", "http.request", *fields],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    rows = [line.split("\t") for line in out.splitlines() if line.strip()]
    return [(host, uri) for method, host, uri in rows if method != "CONNECT"]


@pytest.mark.e2e
@pytest.mark.serial  # sniffs loopback (see pyproject.toml)
def test_tshark_decrypts_a_capture_of_the_proxy_with_the_sessions_key_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """auditor capture's own launcher (run_capture) before the offline internet, in upstream
    mode as on the virtual handset; one HTTPS request through it while dumpcap records both
    legs on loopback. tshark reads the request in both legs with the session's key log only."""
    confdir = prepare_confdir(tmp_path / "confdir")
    host, uri = "globalapi.ad.xiaomi.com", "/api/v4/config?from=keylog-test"
    captures = tmp_path / "captures"
    shell_keylog = tmp_path / "shell-keylog.txt"
    with OfflineInternet(ca_dir=tmp_path / "offline-ca") as net:
        port = free_port()
        opts = ProxyOptions(
            port=port,
            confdir=confdir,
            mode=f"upstream:{net.url}",
            extra={"ssl_verify_upstream_trusted_ca": str(net.ca_cert_path)},
        )
        listening, stop = threading.Event(), threading.Event()
        result: list[object] = []

        def capture() -> None:
            try:
                result.append(
                    run_capture(captures, opts, stop=stop, on_progress=lambda *_: listening.set())
                )
            except BaseException as exc:  # shown by the assertion below
                result.append(exc)
                listening.set()

        with loopback_capture(tmp_path / "lo.pcapng", [port, net.port]) as pcap:
            # a key log named by the shell must not receive mitmdump's secrets (this test's
            # own client context reads no environment: it logs nothing anywhere)
            for name in KEYLOG_ENV:
                monkeypatch.setenv(name, str(shell_keylog))
            worker = threading.Thread(target=capture)
            worker.start()
            try:
                assert listening.wait(30), "mitmdump did not start"
                assert not result, result
                (session,) = captures.iterdir()
                url = f"https://{host}{uri}"
                assert proxied_request(port, "GET", url, context=_client_context(confdir))[0] == 200
            finally:
                stop.set()
                worker.join(30)
    (res,) = result
    assert not isinstance(res, BaseException), res
    keylog = session / TLS_KEYLOG
    assert not shell_keylog.exists()
    assert stat.S_IMODE(keylog.stat().st_mode) == 0o600
    labels = [line.split(" ", 1)[0] for line in keylog.read_text().splitlines() if line]
    assert "CLIENT_HANDSHAKE_TRAFFIC_SECRET" in labels or "CLIENT_RANDOM" in labels

    # an artifact like any other: hashed when the session closed, and verify passes
    listed = {a["path"]: a for a in Session(session).manifest["artifacts"]}
    assert listed[TLS_KEYLOG]["sha256"] == sha256_file(keylog)
    assert listed[TLS_KEYLOG]["size"] == keylog.stat().st_size > 0
    assert verify_session(session).ok

    # tshark: nothing readable without the keys, the request in both legs with them
    assert (host, uri) not in http_requests(pcap, None)
    assert http_requests(pcap, keylog).count((host, uri)) == 2


def _client_context(confdir: Path) -> ssl.SSLContext:
    """Trusts mitmdump's CA. Not ssl.create_default_context: that one reads SSLKEYLOGFILE."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(ca_cert_path(confdir)))
    return ctx
