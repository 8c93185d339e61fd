"""Tests of auditor.netutil: the one loopback check."""

from __future__ import annotations

import pytest

from auditor.netutil import is_loopback


@pytest.mark.parametrize(
    "host",
    # ::ffff:127.0.0.1 (IPv4-mapped) is loopback on every Python (3.13 changed ipaddress's answer)
    [
        "127.0.0.1",
        "127.1.2.3",
        "::1",
        "[::1]",
        "localhost",
        "LOCALHOST",
        "localhost.",
        " ::1 ",
        "::ffff:127.0.0.1",
    ],
)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host",
    [
        "10.0.2.2",  # the emulator's host, seen from the phone: not the phone's loopback
        "0.0.0.0",  # every interface, not loopback
        "::",
        "192.0.2.1",
        "2001:db8::1",
        "::ffff:192.0.2.1",
        "127.example",
        "localhost.example",
        "",
        "not an address",
    ],
)
def test_other_hosts(host: str) -> None:
    assert not is_loopback(host)
