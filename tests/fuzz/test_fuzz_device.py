"""Parsers of what a handset prints (``auditor.device.parsers``): every parser gets random
text and bytes, and mutations of the real samples of its own format. None may raise (the
module's contract), except ``subject_hash_old`` with ValueError for what is not a
certificate and ``parse_proc_net`` with ValueError for a file name it does not know."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from hypothesis import example
from hypothesis import strategies as st

from auditor.device import parsers as p
from auditor.device.model import MAX_WARNINGS, ParseResult
from tests.certs import self_signed
from tests.fuzz.helpers import fuzz, mutated, mutated_text, sample_paths

Parser = Callable[[Any], Any]

# Each parser with the samples of its format (file name prefixes in tests/device/samples).
PARSERS: dict[str, tuple[Parser, tuple[str, ...]]] = {
    "getprop": (p.parse_getprop, ("getprop",)),
    "pm_list_packages": (p.parse_pm_list_packages, ("pm_list_packages",)),
    "dumpsys_package": (p.parse_dumpsys_package, ("dumpsys_package",)),
    "proc_net_tcp": (lambda t: p.parse_proc_net(t, "tcp"), ("proc_net",)),
    "proc_net_tcp6": (lambda t: p.parse_proc_net(t, "tcp6"), ("proc_net",)),
    "proc_net_udp": (lambda t: p.parse_proc_net(t, "udp"), ("proc_net",)),
    "proc_net_udp6": (lambda t: p.parse_proc_net(t, "udp6"), ("proc_net",)),
    "settings_list": (p.parse_settings_list, ("settings",)),
    "settings_get": (p.parse_settings_get, ("settings",)),
    "service_call_parcel": (p.parse_service_call_parcel, ("service_call",)),
    "imei_from_parcel": (p.imei_from_parcel, ("service_call",)),
    "ca_store_listing": (p.parse_ca_store_listing, ("cacerts",)),
    "logcat": (p.parse_logcat, ("logcat",)),
    "logcat_epoch_uid": (p.parse_logcat_epoch_uid, ("logcat",)),
    "activity_resumed": (p.parse_dumpsys_activity_resumed, ("dumpsys_activity",)),
    "window_focus": (p.parse_dumpsys_window_focus, ("dumpsys_window",)),
    "global_proxy": (p.parse_global_proxy, ("settings",)),
    "uid_from_name": (lambda t: p.uid_from_name(p._text(t)), ("logcat",)),
    "luhn_valid": (lambda t: p.luhn_valid(p._text(t)), ("service_call",)),
}


@cache
def _samples(prefixes: tuple[str, ...]) -> list[str]:
    found = [s.read_text() for pre in prefixes for s in sample_paths(f"device/samples/{pre}*")]
    assert found, f"no samples for {prefixes}"
    return found


@cache
def _all_samples() -> list[str]:
    return [s.read_text() for s in sample_paths("device/samples/*.txt")]


def _check(result: Any) -> None:
    if isinstance(result, ParseResult):
        assert result.skipped >= 0
        assert len(result.warnings) <= max(MAX_WARNINGS, result.skipped)


def _run(name: str, text: str | bytes) -> None:
    parse = PARSERS[name][0]
    _check(parse(text))
    if name.startswith("settings_list"):
        settings = parse(text).items
        p.parse_private_dns(settings)
        p.global_proxy_from_settings(settings)


_names = st.sampled_from(sorted(PARSERS))


@fuzz(_names, st.one_of(st.text(max_size=500), st.binary(max_size=500)), share=0.15)
def test_random_text_and_bytes(name: str, text: str | bytes) -> None:
    _run(name, text)


@fuzz(_names, st.data(), share=0.45)
def test_mutated_samples_of_each_format(name: str, data: st.DataObject) -> None:
    seeds = _samples(PARSERS[name][1])
    text = data.draw(mutated_text(seeds), label="text")
    _run(name, text)
    _run(name, text.encode("utf-8", "surrogatepass"))


@fuzz(_names, st.data(), share=0.25)
def test_byte_mutated_samples_and_other_formats(name: str, data: st.DataObject) -> None:
    """Byte damage (invalid UTF-8, NULs, cuts), and the sample of another command by mistake."""
    seeds = [s.encode() for s in _samples(PARSERS[name][1])] + [s.encode() for s in _all_samples()]
    _run(name, data.draw(mutated(seeds), label="bytes"))


@fuzz(
    st.dictionaries(
        st.sampled_from(
            [
                "private_dns_mode",
                "private_dns_default_mode",
                "private_dns_specifier",
                "http_proxy",
                "global_http_proxy_host",
                "global_http_proxy_port",
            ]
        ),
        st.one_of(
            st.text(max_size=30),
            st.sampled_from(
                [
                    "null",
                    "off",
                    "hostname",
                    ":0",
                    "h:99999",
                    "h:-1",
                    "h:٣",
                    "h:+8",
                    "[::1]:80",
                    "0",
                    "65536",
                ]
            ),
        ),
    ),
    share=0.05,
)
def test_settings_maps(settings: dict[str, str]) -> None:
    p.parse_private_dns(settings)
    p.global_proxy_from_settings(settings)


@cache
def _certs() -> list[bytes]:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "mitmproxy"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mitmproxy"),
        ]
    )
    cert, _ = self_signed(name)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    return [cert.public_bytes(serialization.Encoding.DER), pem, pem + b"Certificate:\n Data:\n"]


# X.509 version 2 (v1 in the version field): cryptography's InvalidVersion escaped
_VERSION_2 = (
    b"-----BEGIN CERTIFICATE-----\n"
    b"MIIBUDCB9qADAgEBAhRfoQVSjmyNMPd0xnQ8iz3u2kzoSDAKBggqhkjOPQQDAjAo\n"
    b"MRIwEAYDVQQDDAltaXRtcHJveHkxEjAQBgNVBAoMCW1pdG1wcm94eTAeFw0yNDAx\n"
    b"MDEwMDAwMDBaFw0yNDAxMzEwMDAwMDBaMCgxEjAQBgNVBAMMCW1pdG1wcm94eTES\n"
    b"MBAGA1UECgwJbWl0bXByb3h5MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEmFKr\n"
    b"iwfCoIMOreZQ42P5SegDN7vWhARdUMhfJgXui4PMguy8OyYRomW7/49pXDcYEHF6\n"
    b"JIqiWR3wtEg/avWfWzAKBggqhkjOPQQDAgNJADBGAiEAkaYLonV/RpJLTe/3iYK9\n"
    b"5va5ZAUT547ynx9WKLisNy8CIQCEnvwyJB3GtzhDemAlgP6WwwfEOyoxWfnl2COP\n"
    b"ul9jsQ==\n"
    b"-----END CERTIFICATE-----\n"
)


@example(_VERSION_2, False)
@fuzz(st.deferred(lambda: mutated(_certs())), st.booleans(), share=0.1)
def test_subject_hash_old_of_damaged_certificates(cert: bytes, as_text: bool) -> None:
    try:
        digest = p.subject_hash_old(cert.decode("latin-1") if as_text else cert)
    except ValueError:
        return
    assert len(digest) == 8 and int(digest, 16) >= 0
