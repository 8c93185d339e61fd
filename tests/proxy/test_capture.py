"""mitmdump started by auditor on a port that another process took after it was chosen: the
start fails with ProxyPortInUse instead of taking the other listener for mitmdump; a real
mitmdump and a real foreign listener on loopback."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from auditor.errors import CaptureError
from auditor.proxy.capture import (
    PORT_IN_USE,
    Mitmdump,
    ProxyOptions,
    ProxyPortInUse,
    owns_listener,
)
from auditor.session import SessionWriter
from tests.conftest import free_port
from tests.proxied import proxied_request

pytestmark = pytest.mark.e2e


@pytest.fixture
def squatter() -> Iterator[socket.socket]:
    """Another process's listener, on a port auditor believes free (this test process's)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s


def _mitmdump(tmp: Path, port: int) -> Mitmdump:
    writer = SessionWriter.create(tmp / "captures")
    writer.detach()
    return Mitmdump(writer.path, ProxyOptions(port=port, confdir=tmp / "confdir"))


def test_a_port_taken_by_another_listener_is_not_taken_for_mitmdump(
    tmp_path: Path, squatter: socket.socket
) -> None:
    port = squatter.getsockname()[1]
    m = _mitmdump(tmp_path, port)
    try:
        with pytest.raises(ProxyPortInUse) as err:
            m.start()
    finally:
        m.stop()
    assert isinstance(err.value, CaptureError)
    assert str(err.value).endswith(PORT_IN_USE) and f"127.0.0.1:{port}" in str(err.value)
    assert m.proc is not None and m.proc.returncode not in (None, 0)
    # the other process's listener is untouched, and is not mitmdump's
    assert owns_listener(m.proc.pid, port) is False
    assert owns_listener(os.getpid(), port) is True
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_the_listener_found_is_mitmdumps_own(tmp_path: Path) -> None:
    port = free_port()
    m = _mitmdump(tmp_path, port)
    m.start()
    try:
        assert m.pid is not None and owns_listener(m.pid, port) is True
        status, _ = proxied_request(port, "GET", f"http://127.0.0.1:{free_port()}/refused")
        assert status == 502  # mitmdump answered, not something else on the port
    finally:
        m.stop()
