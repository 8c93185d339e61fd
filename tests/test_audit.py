"""auditor.audit's checks that need no phone: the --upstream and --upstream-ca options."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditor.audit import AuditOptions, check_upstream, run_audit
from auditor.errors import CaptureError


def test_an_upstream_is_a_proxy_url_and_its_ca_a_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    check_upstream(None, None)
    check_upstream("http://proxy.lan:3128", None)
    check_upstream("https://[::1]:8443", ca)
    # what mitmproxy's upstream mode refuses (a path, a port out of range) is refused here,
    # before anything is written; credentials would be written into the manifest
    bad_urls = ("proxy.lan:3128", "socks5://proxy.lan:1080", "http://", "http://p.lan:3128/path")
    for bad in (*bad_urls, "http://proxy.lan:99999", "http://user:pw@proxy.lan:3128"):
        with pytest.raises(CaptureError, match="--upstream") as err:
            check_upstream(bad, None)
        assert "pw" not in str(err.value)
    with pytest.raises(CaptureError, match="give --upstream too"):
        check_upstream(None, ca)
    with pytest.raises(CaptureError, match="no such file"):
        check_upstream("http://proxy.lan:3128", tmp_path / "missing.pem")


def test_a_bad_upstream_stops_the_audit_before_the_device(tmp_path: Path) -> None:
    opts = AuditOptions(serial="no-such-device", out=tmp_path, upstream="proxy.lan:3128")
    with pytest.raises(CaptureError, match="--upstream"):
        run_audit(opts)
