"""Name parsers: DNS, TLS ClientHello, QUIC Initial (RFC 9001 and RFC 9369 test vectors), HTTP/1;
and the per-flow reassembly of the collector."""

from __future__ import annotations

import struct

import pytest

from auditor.packets import names as N
from auditor.packets.dns import dns_type_name, parse_dns, read_name, split_tcp_dns
from auditor.packets.http1 import parse_http_request
from auditor.packets.quic import (
    QUIC_V1,
    QUIC_V2,
    CryptoStream,
    crypto_frames,
    encode_varint,
    initial_keys,
    initial_protection,
    is_initial,
    open_initial,
    parse_long_header,
    read_varint,
)
from auditor.packets.tls import (
    MAX_HANDSHAKE,
    ClientHello,
    client_hello_from_records,
    parse_client_hello,
)
from auditor.packets.wire import MalformedError
from tests.packets.helpers import (
    client_hello_body,
    dns_name,
    dns_query,
    dns_response,
    ip6,
    rr,
    svcb_rdata,
    tls_records,
)
from tests.packets.quic_encode import crypto_frame, seal_initial

# ----------------------------------------------------------------------------------- DNS


def test_dns_query() -> None:
    m = parse_dns(dns_query(0x1234, "connectivitycheck.gstatic.com", 28))
    assert (m.id, m.response, m.rcode, m.truncated) == (0x1234, False, 0, False)
    assert m.questions == (("connectivitycheck.gstatic.com", 28),)
    assert m.answers == ()


def test_dns_answers_a_aaaa_cname_with_compression() -> None:
    q = "www.example.com"
    answers = [
        rr(
            b"\xc0\x0c", 5, b"\x04edge\x03cdn" + b"\xc0\x10"
        ),  # www.example.com CNAME edge.cdn.example.com
        rr(b"\xc0\x2d", 1, bytes([93, 184, 216, 34])),
        rr(b"\xc0\x2d", 28, ip6("2606:2800:220:1::248")),
        rr(b"\xc0\x2d", 16, b"\x05hello"),
    ]
    msg = dns_response(7, q, 1, answers)
    m = parse_dns(msg)
    assert m.response and m.rcode == 0
    assert [(a.name, dns_type_name(a.rtype), a.value) for a in m.answers] == [
        ("www.example.com", "CNAME", "edge.cdn.example.com"),
        ("edge.cdn.example.com", "A", "93.184.216.34"),
        ("edge.cdn.example.com", "AAAA", "2606:2800:220:1::248"),
        ("edge.cdn.example.com", "TXT", None),
    ]
    assert m.answers[0].ttl == 300


def test_dns_https_and_svcb_hints() -> None:
    rdata = svcb_rdata(
        1,
        "svc.example.net",
        [(1, b"\x02h3"), (4, bytes([1, 2, 3, 4, 5, 6, 7, 8])), (6, ip6("2001:db8::5"))],
    )
    m = parse_dns(dns_response(1, "example.net", 65, [rr(b"\xc0\x0c", 65, rdata)]))
    (a,) = m.answers
    assert (dns_type_name(a.rtype), a.value, a.hints) == (
        "HTTPS",
        "svc.example.net",
        ("1.2.3.4", "5.6.7.8", "2001:db8::5"),
    )
    alias = svcb_rdata(0, "", [])
    (b,) = parse_dns(
        dns_response(1, "_dns.resolver.arpa", 64, [rr(b"\xc0\x0c", 64, alias)])
    ).answers
    assert (dns_type_name(b.rtype), b.value, b.hints) == ("SVCB", "", ())


def test_dns_names_with_odd_bytes_are_escaped() -> None:
    msg = (
        struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0)
        + b"\x03a.b\x02\x00\xff\x00"
        + b"\x00\x01\x00\x01"
    )
    assert parse_dns(msg).questions == ((r"a\046b.\000\255", 1),)


def test_dns_malformed_and_truncated() -> None:
    with pytest.raises(MalformedError):
        parse_dns(b"\x00" * 11)
    loop = struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c"
    with pytest.raises(MalformedError, match="loop"):
        parse_dns(loop)
    with pytest.raises(MalformedError, match="label type"):
        parse_dns(struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\x45" + b"\x00" * 20)
    with pytest.raises(MalformedError, match="255"):
        parse_dns(struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + (b"\x3f" + b"a" * 63) * 5 + b"\x00")
    full = dns_response(9, "example.org", 1, [rr(b"\xc0\x0c", 1, b"\x01\x02\x03\x04")] * 2)
    m = parse_dns(full[:-6])  # cut in the second answer (snap length)
    assert m.truncated and m.questions == (("example.org", 1),) and len(m.answers) == 1


def test_dns_over_tcp_framing() -> None:
    a, b = dns_query(1, "a.example"), dns_query(2, "b.example")
    stream = struct.pack("!H", len(a)) + a + struct.pack("!H", len(b)) + b[:5]
    msgs, used = split_tcp_dns(stream)
    assert msgs == [a] and used == 2 + len(a)


# ----------------------------------------------------------------------------------- TLS


def test_client_hello_sni_and_alpn() -> None:
    hello = parse_client_hello(client_hello_body("api.example.com", ["h2", "http/1.1"]))
    assert (hello.sni, hello.alpn, hello.legacy_version) == (
        "api.example.com",
        ("h2", "http/1.1"),
        0x0303,
    )
    assert parse_client_hello(client_hello_body(None)).sni is None


def test_client_hello_without_extensions() -> None:
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x00\x2f" + b"\x01\x00"
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    assert parse_client_hello(hs) == ClientHello(None, (), 0x0303)


def test_client_hello_over_several_records() -> None:
    hs = client_hello_body("split.example", ["h2"], padding=500)
    stream = tls_records(hs, record_size=100)
    assert client_hello_from_records(stream[:250]) is None  # more bytes needed
    assert client_hello_from_records(stream).sni == "split.example"  # type: ignore[union-attr]


def test_client_hello_malformed() -> None:
    with pytest.raises(MalformedError):
        client_hello_from_records(b"\x17\x03\x03\x00\x10" + bytes(16))
    with pytest.raises(MalformedError):
        parse_client_hello(b"\x02\x00\x00\x04abcd")
    hs = bytearray(client_hello_body("x.example"))
    hs[-40] = 0xFF  # an extension length past the end
    with pytest.raises(MalformedError):
        parse_client_hello(bytes(hs))


def test_client_hello_built_by_scapy() -> None:
    from scapy.layers.tls.extensions import (
        ProtocolName,
        ServerName,
        TLS_Ext_ALPN,
        TLS_Ext_ServerName,
    )
    from scapy.layers.tls.handshake import TLSClientHello
    from scapy.layers.tls.record import TLS

    ch = TLSClientHello(
        ciphers=[0x1301],
        ext=[
            TLS_Ext_ServerName(servernames=[ServerName(servername=b"scapy.example.org")]),
            TLS_Ext_ALPN(protocols=[ProtocolName(protocol=b"h2"), ProtocolName(protocol=b"h3")]),
        ],
    )
    record = bytes(TLS(msg=[ch]))
    hello = client_hello_from_records(record)
    assert hello is not None and (hello.sni, hello.alpn) == ("scapy.example.org", ("h2", "h3"))


# ---------------------------------------------------------------------------------- QUIC
# RFC 9001 appendix A (v1) and RFC 9369 appendix A (v2): DCID 0x8394c8f03e515708.

DCID = bytes.fromhex("8394c8f03e515708")
RFC_CRYPTO = bytes.fromhex(
    "060040f1010000ed0303ebf8fa56f12939b9584a3896472ec40bb863cfd3e868"
    "04fe3a47f06a2b69484c00000413011302010000c000000010000e00000b6578"
    "616d706c652e636f6dff01000100000a00080006001d00170018001000070005"
    "04616c706e000500050100000000003300260024001d00209370b2c9caa47fba"
    "baf4559fedba753de171fa71f50f1ce15d43e994ec74d748002b000302030400"
    "0d0010000e0403050306030203080408050806002d00020101001c0002400100"
    "3900320408ffffffffffffffff05048000ffff07048000ffff08011001048000"
    "75300901100f088394c8f03e51570806048000ffff"
)
V1_CLIENT_INITIAL = bytes.fromhex(
    "c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11"
    "d242b123dc9bd8bab936b47d92ec356c0bab7df5976d27cd449f63300099f399"
    "1c260ec4c60d17b31f8429157bb35a1282a643a8d2262cad67500cadb8e7378c"
    "8eb7539ec4d4905fed1bee1fc8aafba17c750e2c7ace01e6005f80fcb7df6212"
    "30c83711b39343fa028cea7f7fb5ff89eac2308249a02252155e2347b63d58c5"
    "457afd84d05dfffdb20392844ae812154682e9cf012f9021a6f0be17ddd0c208"
    "4dce25ff9b06cde535d0f920a2db1bf362c23e596d11a4f5a6cf3948838a3aec"
    "4e15daf8500a6ef69ec4e3feb6b1d98e610ac8b7ec3faf6ad760b7bad1db4ba3"
    "485e8a94dc250ae3fdb41ed15fb6a8e5eba0fc3dd60bc8e30c5c4287e53805db"
    "059ae0648db2f64264ed5e39be2e20d82df566da8dd5998ccabdae053060ae6c"
    "7b4378e846d29f37ed7b4ea9ec5d82e7961b7f25a9323851f681d582363aa5f8"
    "9937f5a67258bf63ad6f1a0b1d96dbd4faddfcefc5266ba6611722395c906556"
    "be52afe3f565636ad1b17d508b73d8743eeb524be22b3dcbc2c7468d54119c74"
    "68449a13d8e3b95811a198f3491de3e7fe942b330407abf82a4ed7c1b311663a"
    "c69890f4157015853d91e923037c227a33cdd5ec281ca3f79c44546b9d90ca00"
    "f064c99e3dd97911d39fe9c5d0b23a229a234cb36186c4819e8b9c5927726632"
    "291d6a418211cc2962e20fe47feb3edf330f2c603a9d48c0fcb5699dbfe58964"
    "25c5bac4aee82e57a85aaf4e2513e4f05796b07ba2ee47d80506f8d2c25e50fd"
    "14de71e6c418559302f939b0e1abd576f279c4b2e0feb85c1f28ff18f58891ff"
    "ef132eef2fa09346aee33c28eb130ff28f5b766953334113211996d20011a198"
    "e3fc433f9f2541010ae17c1bf202580f6047472fb36857fe843b19f5984009dd"
    "c324044e847a4f4a0ab34f719595de37252d6235365e9b84392b061085349d73"
    "203a4a13e96f5432ec0fd4a1ee65accdd5e3904df54c1da510b0ff20dcc0c77f"
    "cb2c0e0eb605cb0504db87632cf3d8b4dae6e705769d1de354270123cb11450e"
    "fc60ac47683d7b8d0f811365565fd98c4c8eb936bcab8d069fc33bd801b03ade"
    "a2e1fbc5aa463d08ca19896d2bf59a071b851e6c239052172f296bfb5e724047"
    "90a2181014f3b94a4e97d117b438130368cc39dbb2d198065ae3986547926cd2"
    "162f40a29f0c3c8745c0f50fba3852e566d44575c29d39a03f0cda721984b6f4"
    "40591f355e12d439ff150aab7613499dbd49adabc8676eef023b15b65bfc5ca0"
    "6948109f23f350db82123535eb8a7433bdabcb909271a6ecbcb58b936a88cd4e"
    "8f2e6ff5800175f113253d8fa9ca8885c2f552e657dc603f252e1a8e308f76f0"
    "be79e2fb8f5d5fbbe2e30ecadd220723c8c0aea8078cdfcb3868263ff8f09400"
    "54da48781893a7e49ad5aff4af300cd804a6b6279ab3ff3afb64491c85194aab"
    "760d58a606654f9f4400e8b38591356fbf6425aca26dc85244259ff2b19c41b9"
    "f96f3ca9ec1dde434da7d2d392b905ddf3d1f9af93d1af5950bd493f5aa731b4"
    "056df31bd267b6b90a079831aaf579be0a39013137aac6d404f518cfd4684064"
    "7e78bfe706ca4cf5e9c5453e9f7cfd2b8b4c8d169a44e55c88d4a9a7f9474241"
    "e221af44860018ab0856972e194cd934"
)
V2_CLIENT_INITIAL = bytes.fromhex(
    "d76b3343cf088394c8f03e5157080000449ea0c95e82ffe67b6abcdb4298b485"
    "dd04de806071bf03dceebfa162e75d6c96058bdbfb127cdfcbf903388e99ad04"
    "9f9a3dd4425ae4d0992cfff18ecf0fdb5a842d09747052f17ac2053d21f57c5d"
    "250f2c4f0e0202b70785b7946e992e58a59ac52dea6774d4f03b55545243cf1a"
    "12834e3f249a78d395e0d18f4d766004f1a2674802a747eaa901c3f10cda5500"
    "cb9122faa9f1df66c392079a1b40f0de1c6054196a11cbea40afb6ef5253cd68"
    "18f6625efce3b6def6ba7e4b37a40f7732e093daa7d52190935b8da58976ff33"
    "12ae50b187c1433c0f028edcc4c2838b6a9bfc226ca4b4530e7a4ccee1bfa2a3"
    "d396ae5a3fb512384b2fdd851f784a65e03f2c4fbe11a53c7777c023462239dd"
    "6f7521a3f6c7d5dd3ec9b3f233773d4b46d23cc375eb198c63301c21801f6520"
    "bcfb7966fc49b393f0061d974a2706df8c4a9449f11d7f3d2dcbb90c6b877045"
    "636e7c0c0fe4eb0f697545460c806910d2c355f1d253bc9d2452aaa549e27a1f"
    "ac7cf4ed77f322e8fa894b6a83810a34b361901751a6f5eb65a0326e07de7c12"
    "16ccce2d0193f958bb3850a833f7ae432b65bc5a53975c155aa4bcb4f7b2c4e5"
    "4df16efaf6ddea94e2c50b4cd1dfe06017e0e9d02900cffe1935e0491d77ffb4"
    "fdf85290fdd893d577b1131a610ef6a5c32b2ee0293617a37cbb08b847741c3b"
    "8017c25ca9052ca1079d8b78aebd47876d330a30f6a8c6d61dd1ab5589329de7"
    "14d19d61370f8149748c72f132f0fc99f34d766c6938597040d8f9e2bb522ff9"
    "9c63a344d6a2ae8aa8e51b7b90a4a806105fcbca31506c446151adfeceb51b91"
    "abfe43960977c87471cf9ad4074d30e10d6a7f03c63bd5d4317f68ff325ba3bd"
    "80bf4dc8b52a0ba031758022eb025cdd770b44d6d6cf0670f4e990b22347a7db"
    "848265e3e5eb72dfe8299ad7481a408322cac55786e52f633b2fb6b614eaed18"
    "d703dd84045a274ae8bfa73379661388d6991fe39b0d93debb41700b41f90a15"
    "c4d526250235ddcd6776fc77bc97e7a417ebcb31600d01e57f32162a8560cacc"
    "7e27a096d37a1a86952ec71bd89a3e9a30a2a26162984d7740f81193e8238e61"
    "f6b5b984d4d3dfa033c1bb7e4f0037febf406d91c0dccf32acf423cfa1e70710"
    "10d3f270121b493ce85054ef58bada42310138fe081adb04e2bd901f2f13458b"
    "3d6758158197107c14ebb193230cd1157380aa79cae1374a7c1e5bbcb80ee23e"
    "06ebfde206bfb0fcbc0edc4ebec309661bdd908d532eb0c6adc38b7ca7331dce"
    "8dfce39ab71e7c32d318d136b6100671a1ae6a6600e3899f31f0eed19e3417d1"
    "34b90c9058f8632c798d4490da4987307cba922d61c39805d072b589bd52fdf1"
    "e86215c2d54e6670e07383a27bbffb5addf47d66aa85a0c6f9f32e59d85a44dd"
    "5d3b22dc2be80919b490437ae4f36a0ae55edf1d0b5cb4e9a3ecabee93dfc6e3"
    "8d209d0fa6536d27a5d6fbb17641cde27525d61093f1b28072d111b2b4ae5f89"
    "d5974ee12e5cf7d5da4d6a31123041f33e61407e76cffcdcfd7e19ba58cf4b53"
    "6f4c4938ae79324dc402894b44faf8afbab35282ab659d13c93f70412e85cb19"
    "9a37ddec600545473cfb5a05e08d0b209973b2172b4d21fb69745a262ccde96b"
    "a18b2faa745b6fe189cf772a9f84cbfc"
)
RFC_SERVER_PLAIN = bytes.fromhex(
    "02000000000600405a020000560303eefce7f7b37ba1d1632e96677825ddf739"
    "88cfc79825df566dc5430b9a045a1200130100002e00330024001d00209d3c94"
    "0d89690b84d08a60993c144eca684d1081287c834d5311bcf32bb9da1a002b00"
    "020304"
)
V1_SERVER_INITIAL = bytes.fromhex(
    "cf000000010008f067a5502a4262b5004075c0d95a482cd0991cd25b0aac406a"
    "5816b6394100f37a1c69797554780bb38cc5a99f5ede4cf73c3ec2493a1839b3"
    "dbcba3f6ea46c5b7684df3548e7ddeb9c3bf9c73cc3f3bded74b562bfb19fb84"
    "022f8ef4cdd93795d77d06edbb7aaf2f58891850abbdca3d20398c276456cbc4"
    "2158407dd074ee"
)
V2_SERVER_INITIAL = bytes.fromhex(
    "dc6b3343cf0008f067a5502a4262b5004075d92faaf16f05d8a4398c47089698"
    "baeea26b91eb761d9b89237bbf87263017915358230035f7fd3945d88965cf17"
    "f9af6e16886c61bfc703106fbaf3cb4cfa52382dd16a393e42757507698075b2"
    "c984c707f0a0812d8cd5a6881eaf21ceda98f4bd23f6fe1a3e2c43edd9ce7ca8"
    "4bed8521e2e140"
)


@pytest.mark.parametrize(
    ("version", "client", "server"),
    [
        (
            QUIC_V1,
            ("1f369613dd76d5467730efcbe3b1a22d", "fa044b2f42a3fd3b46fb255c",
             "9f50449e04a0e810283a1e9933adedd2"),
            ("cf3a5331653c364c88f0f379b6067e37", "0ac1493ca1905853b0bba03e",
             "c206b8d9b9f0f37644430b490eeaa314"),
        ),
        (
            QUIC_V2,
            ("8b1a0bc121284290a29e0971b5cd045d", "91f73e2351d8fa91660e909f",
             "45b95e15235d6f45a6b19cbcb0294ba9"),
            ("82db637861d55e1d011f19ea71d5d2a7", "dd13c276499c0249d3310652",
             "edf6d05c83121201b436e16877593c3a"),
        ),
    ],
)  # fmt: skip
def test_initial_keys_match_the_rfc(
    version: int, client: tuple[str, str, str], server: tuple[str, str, str]
) -> None:
    for keys, want in ((initial_keys(DCID, version), client),
                       (initial_keys(DCID, version, server=True), server)):  # fmt: skip
        assert (keys.key.hex(), keys.iv.hex(), keys.hp.hex()) == want


@pytest.mark.parametrize(
    ("version", "packet", "sample", "mask"),
    [
        (QUIC_V1, V1_CLIENT_INITIAL, "d1b1c98dd7689fb8ec11d242b123dc9b", "437b9aec36"),
        (QUIC_V2, V2_CLIENT_INITIAL, "ffe67b6abcdb4298b485dd04de806071", "94a0c95e80"),
    ],
)
def test_rfc_client_initial_decrypts_and_reseals(
    version: int, packet: bytes, sample: str, mask: str
) -> None:
    header = parse_long_header(packet)
    assert (header.version, header.dcid, header.scid, header.token) == (version, DCID, b"", b"")
    assert is_initial(header)
    protection = initial_protection(DCID, version)
    assert protection.mask(bytes.fromhex(sample)).hex()[:10] == mask
    initial = open_initial(packet, header, protection)
    assert initial.packet_number == 2
    assert initial.payload == RFC_CRYPTO + bytes(1162 - len(RFC_CRYPTO))
    stream = CryptoStream()
    for offset, data in crypto_frames(initial.payload):
        stream.add(offset, data)
    hello = stream.client_hello()
    assert hello is not None and (hello.sni, hello.alpn) == ("example.com", ("alpn",))
    assert seal_initial(DCID, b"", version, 2, RFC_CRYPTO) == packet


@pytest.mark.parametrize(("version", "packet"), [(QUIC_V1, V1_SERVER_INITIAL),
                                                  (QUIC_V2, V2_SERVER_INITIAL)])  # fmt: skip
def test_rfc_server_initial_decrypts_with_the_server_keys(version: int, packet: bytes) -> None:
    header = parse_long_header(packet)
    assert header.scid == bytes.fromhex("f067a5502a4262b5") and is_initial(header)
    initial = open_initial(packet, header, initial_protection(DCID, version, server=True))
    assert (initial.packet_number, initial.payload) == (1, RFC_SERVER_PLAIN)
    (frame,) = crypto_frames(initial.payload)
    assert frame[0] == 0 and frame[1][0] == 2  # the ServerHello
    with pytest.raises(MalformedError, match="decrypt"):
        open_initial(packet, header, initial_protection(DCID, version))  # client keys


def test_v1_keys_do_not_open_a_v2_packet() -> None:
    header = parse_long_header(V2_CLIENT_INITIAL)
    with pytest.raises(MalformedError):
        open_initial(V2_CLIENT_INITIAL, header, initial_protection(DCID, QUIC_V1))


def test_crypto_frames_skip_padding_ping_ack_and_close() -> None:
    ack = b"\x02" + b"\x05\x00\x01\x00" + b"\x01\x01"
    ack_ecn = b"\x03" + b"\x05\x00\x00\x00" + b"\x01\x02\x03"
    close = b"\x1c" + b"\x00\x06" + b"\x03abc"
    payload = b"\x00\x00" + b"\x01" + ack + ack_ecn + crypto_frame(5, b"world") + close
    payload += crypto_frame(0, b"hello") + b"\x00" * 10 + b"\x08\x00" + crypto_frame(9, b"x")
    assert crypto_frames(payload) == [(5, b"world"), (0, b"hello")]  # a STREAM frame ends it


def test_crypto_stream_reassembles_by_offset() -> None:
    hs = client_hello_body("pieces.example", ["h3"], padding=300)
    pieces = [(o, hs[o : o + 97]) for o in range(0, len(hs), 97)]
    stream = CryptoStream()
    for o, d in reversed(pieces[1:]):
        stream.add(o, d)
        assert stream.client_hello() is None
    stream.add(0, pieces[0][1][:50])  # overlapping retransmission of a shorter first piece
    stream.add(0, pieces[0][1])
    assert stream.client_hello().sni == "pieces.example"  # type: ignore[union-attr]
    with pytest.raises(MalformedError):
        CryptoStream().add(MAX_HANDSHAKE, b"x")


def test_long_header_errors() -> None:
    with pytest.raises(MalformedError):
        parse_long_header(b"\x40abc")
    with pytest.raises(MalformedError):
        parse_long_header(b"\xc0\x00\x00\x00\x01\x15" + bytes(30))  # DCID of 21 bytes
    with pytest.raises(MalformedError):
        parse_long_header(V1_CLIENT_INITIAL[:300])  # length past the datagram
    with pytest.raises(MalformedError):
        initial_keys(DCID, 0xFF000010)  # draft 16: no client shipped it


def test_varints() -> None:
    for v in (0, 63, 64, 16383, 16384, 2**30 - 1, 2**30, 2**62 - 1):
        assert read_varint(encode_varint(v), 0) == (v, len(encode_varint(v)))
    assert read_varint(bytes.fromhex("c2197c5eff14e88c"), 0)[0] == 151288809941952652
    with pytest.raises(MalformedError):
        read_varint(b"\x80\x01", 0)


# ---------------------------------------------------------------------------------- HTTP


@pytest.mark.parametrize(
    ("head", "host", "authority"),
    [
        (b"GET /x HTTP/1.1\r\nUser-Agent: a\r\nhOsT:  Api.Example.com:8080 \r\n\r\n",
         "Api.Example.com:8080", "api.example.com"),
        (b"CONNECT weberblog.net:443 HTTP/1.1\r\n\r\n", None, "weberblog.net"),
        (b"POST http://u:p@proxy.example/a HTTP/1.0\r\n", None, "proxy.example"),
        (b"GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n", "[2001:db8::1]:80", "2001:db8::1"),
        (b"HEAD / HTTP/1.1\r\nX: y", None, None),
    ],
)  # fmt: skip
def test_http_request(head: bytes, host: str | None, authority: str | None) -> None:
    req = parse_http_request(head)
    assert (req.host, req.authority) == (host, authority)


@pytest.mark.parametrize("data", [b"GET", b"GETX / HTTP/1.1\r\n", b"GET / SPDY/3\r\n", b"\x16\x03"])
def test_not_http(data: bytes) -> None:
    with pytest.raises(MalformedError):
        parse_http_request(data)


# ------------------------------------------------------------------------------ streams


def test_tcp_stream_orders_segments_and_keeps_first_copies() -> None:
    s = N.TcpStream(0xFFFFFFF0)  # the sequence number wraps inside the stream
    s.add(0xFFFFFFF0 + 10, b"KLMNOPQRST")
    s.add(0xFFFFFFF0, b"ABCDEFGHIJ")
    s.add(0xFFFFFFF0 + 5, b"xxxxxxxx")  # overlaps: the first copy stays
    s.add(0xFFFFFFF0 - 100, b"before the start")
    assert bytes(s.data) == b"ABCDEFGHIJKLMNOPQRST"
    s.add((0xFFFFFFF0 + N.STREAM_CAP - 2) & 0xFFFFFFFF, b"past the cap")
    assert s.overflow  # a segment reaching past the cap: a ClientHello this long is given up
    assert bytes(s.data) == b"ABCDEFGHIJKLMNOPQRST"
    big = N.TcpStream(0)
    big.add(0, bytes(N.STREAM_CAP + 10))
    assert big.overflow and len(big.data) == N.STREAM_CAP


def test_dns_name_helper_round_trip() -> None:
    msg = struct.pack("!HHHHHH", 0, 0, 1, 0, 0, 0) + dns_name("a.b.c") + b"\x00\x01\x00\x01"
    assert read_name(msg, 12) == ("a.b.c", 12 + 7)
