"""A campaign whose chosen proxy port is taken by another process before the audit's mitmdump
binds it: the audit starts again on another port (a bounded number of times), and says so;
with every port taken, one clear error. A real adb server, a virtual handset in its own
process, real audit processes and mitmdumps, and real listeners squatting on loopback."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from auditor.campaign.run import (
    PORT_ATTEMPTS,
    CampaignOptions,
    CampaignResult,
    Event,
    free_ports,
    run_campaign,
)
from auditor.evidence.verify import verify_session
from tests.campaign.conftest import Phone, start_phone, stop_phone
from tests.vhandset.adb_fixtures import AdbServer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def phone(
    adb_server: AdbServer, private_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Phone]:
    p = start_phone(adb_server, "xiaomi-mi10t", tmp_path_factory.mktemp("phone"))
    try:
        yield p
    finally:
        stop_phone(adb_server, p)


def _squatters(n: int) -> list[socket.socket]:
    """``n`` listeners on loopback that are not mitmdump: another program holding the port."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        socks.append(s)
    return socks


def _state(server: AdbServer, serial: str) -> tuple[str, str]:
    """What an audit changes on the handset and must put back: its proxy, its tunnels."""
    proxy = server.text("-s", serial, "shell", "settings get global http_proxy").strip()
    return proxy, server.text("-s", serial, "reverse", "--list").strip()


def _campaign(tmp: Path, phone: Phone, taken: list[int]) -> tuple[CampaignResult, list[Event]]:
    """One short campaign on ``phone`` whose first proxy ports are ``taken`` (then free)."""
    queue = list(taken)

    def pick(n: int) -> list[int]:
        return [queue.pop(0) for _ in range(n)] if queue else free_ports(n)

    events: list[Event] = []
    opts = CampaignOptions(
        serials=[phone.serial],
        duration="2s",
        out=tmp / "campaigns",
        confdir=tmp / "mitm",
        upstream=phone.upstream,
        upstream_ca=Path(phone.upstream_ca),
        restore_wait=1.0,
        analyze=False,
    )
    return run_campaign(opts, events.append, pick_ports=pick), events


def test_a_taken_port_is_left_for_another(
    tmp_path: Path, phone: Phone, adb_server: AdbServer
) -> None:
    before = _state(adb_server, phone.serial)
    (squatter,) = _squatters(1)
    with squatter:
        port = squatter.getsockname()[1]
        res, events = _campaign(tmp_path, phone, [port])
        # the other program's listener is untouched
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    (h,) = res.manifest["handsets"]
    assert (h["outcome"], h["stopped_by"], h["restored"]) == ("complete", "scenario_done", True)
    assert h["proxy_port"] != port and verify_session(res.folder / h["session"]).ok
    notes = " ".join(h["notes"])
    assert f"proxy port(s) {port} taken by another process" in notes
    again = [e for e in events if e.kind == "note" and e.serial == phone.serial]
    assert [e.data for e in again] == [{"taken": port, "port": h["proxy_port"]}]
    # the first attempt's session: closed before the device was touched
    (left,) = [d for d in (res.folder / "sessions").iterdir() if d.name != Path(h["session"]).name]
    assert f"session sessions/{left.name}" in notes
    m = json.loads((left / "manifest.json").read_text())
    assert m["status"] == "incomplete" and verify_session(left).ok
    assert _state(adb_server, phone.serial) == before


def test_every_port_taken_is_one_clear_error(
    tmp_path: Path, phone: Phone, adb_server: AdbServer
) -> None:
    before = _state(adb_server, phone.serial)
    squatters = _squatters(PORT_ATTEMPTS)
    try:
        ports = [s.getsockname()[1] for s in squatters]
        res, _ = _campaign(tmp_path, phone, ports)
    finally:
        for s in squatters:
            s.close()
    (h,) = res.manifest["handsets"]
    assert h["outcome"] == "failed" and h["session"] is None
    listed = ", ".join(map(str, ports))
    assert h["detail"] == (
        f"mitmdump could not listen: each of the {PORT_ATTEMPTS} proxy ports tried "
        f"({listed}) was taken by another process"
    )
    assert len(list((res.folder / "sessions").iterdir())) == PORT_ATTEMPTS
    assert res.manifest["outcomes"] == {"failed": 1}
    assert _state(adb_server, phone.serial) == before
