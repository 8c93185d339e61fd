"""vhandset.android: the phone's own readings of Android's rules agree with auditor's parsers.

The two are written apart on purpose (the double must not call the code it tests); this holds
them to the same answers on the cases each documents."""

from __future__ import annotations

import pytest

from auditor.device.parsers import parse_global_proxy
from auditor.device.parsers import subject_hash_old as product_hash
from vhandset.android import global_http_proxy, subject_hash_old
from vhandset.offline.pki import CertificateAuthority

SETTINGS = [
    None,
    "",
    "null",
    ":0",
    ":",
    "10.0.2.2",
    "10.0.2.2:8081",
    "10.0.2.2:8081:",
    "127.0.0.1:0",
    "127.0.0.1:65535",
    "127.0.0.1:65536",
    "127.0.0.1:+90",
    "127.0.0.1:-1",
    "127.0.0.1:x",
    "127.0.0.1:٣",  # a non-ASCII digit: Integer.parseInt would take it, neither side does
    " proxy.lan:3128 ",
    "proxy.lan:3128\n",
    "host: 80",
    "[::1]:8080",
]


@pytest.mark.parametrize("value", SETTINGS)
def test_global_http_proxy_reads_the_setting_as_auditor_does(value: str | None) -> None:
    assert global_http_proxy(value) == parse_global_proxy(value)


def test_subject_hash_old_names_a_ca_file_as_auditor_does(tmp_path) -> None:
    pem = CertificateAuthority(tmp_path).cert_pem
    assert subject_hash_old(pem) == product_hash(pem)
    assert len(subject_hash_old(pem)) == 8
