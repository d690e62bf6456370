"""Trusted proxies, RFC 9440 and nginx header parsing, and the forwarded-certificate decision."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import ipaddress
import re
from collections.abc import Callable
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st

from zerotrust import ApiKeys, Authenticator, BundleSet, SpiffeId, match, verify_x509_svid
from zerotrust.authn import _pem
from zerotrust.authn.proxy import (
    FORWARDED_CERT_HEADERS,
    ForwardedResult,
    ParsedChains,
    TrustedProxies,
    extract_forwarded_cert,
    forwarded_cert,
    parse_client_cert,
    parse_client_cert_chain,
    parse_nginx_cert,
    parse_xfcc,
)
from zerotrust.dev import DevCA
from zerotrust.errors import ConfigurationError, MalformedCredentials, UntrustedCertificate
from zerotrust.x509._certs import MAX_CHAIN_LENGTH

PROXY = "10.1.2.3"
PROXY_ID = SpiffeId.parse("spiffe://example.org/envoy")


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(Encoding.PEM).decode()


def sf(data: bytes) -> str:
    return ":" + base64.b64encode(data).decode() + ":"


def headers(**values: str | list[str]) -> Callable[[str], list[str]]:
    """A case-insensitive ``header(name) -> list[str]`` like RequestView.header."""
    table = {
        name.replace("_", "-").lower(): [v] if isinstance(v, str) else v
        for name, v in values.items()
    }
    return lambda name: list(table.get(name.lower(), []))


def xfcc_for(chain: tuple[x509.Certificate, ...], by: str = "spiffe://example.org/envoy") -> str:
    leaf = chain[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    (uri,) = san.get_values_for_type(x509.UniformResourceIdentifier)
    return (
        f"By={by};Hash={hashlib.sha256(der(leaf)).hexdigest()};"
        f'Cert="{quote(pem(leaf), safe="")}";Chain="{quote("".join(map(pem, chain)), safe="")}";'
        f'Subject="O=zerotrust dev SVID";URI={uri}'
    )


@pytest.fixture(scope="module")
def svid_ca() -> DevCA:
    return DevCA.create("example.org", intermediate=True)


@pytest.fixture(scope="module")
def chain(svid_ca: DevCA) -> tuple[x509.Certificate, ...]:
    return svid_ca.issue_svid("spiffe://example.org/web").cert_chain


# --- RFC 9440 ------------------------------------------------------------------------------


def test_client_cert(chain: tuple[x509.Certificate, ...]) -> None:
    assert parse_client_cert(sf(der(chain[0]))) == der(chain[0])
    assert parse_client_cert(f"  {sf(der(chain[0]))}\t") == der(chain[0])


def test_client_cert_padding_is_optional(chain: tuple[x509.Certificate, ...]) -> None:
    unpadded = ":" + base64.b64encode(der(chain[0])).decode().rstrip("=") + ":"
    assert parse_client_cert(unpadded) == der(chain[0])


@pytest.mark.parametrize("padding", ["=", "==", "==="])
def test_client_cert_padding_beyond_the_final_quantum_is_refused(
    chain: tuple[x509.Certificate, ...], padding: str
) -> None:
    # RFC 8941 4.2.7 lets a recipient synthesize missing padding, no more: past what the final
    # quantum needs, "=" is not base64 (RFC 4648 4), so "AAA==", "AAAA=" and "==" do not decode.
    unpadded = base64.b64encode(der(chain[0])).decode().rstrip("=")
    needed = "=" * (-len(unpadded) % 4)
    assert parse_client_cert(f":{unpadded}{needed}:") == der(chain[0])
    with pytest.raises(MalformedCredentials, match="invalid base64"):
        parse_client_cert(f":{unpadded}{needed}{padding}:")
    leaf = f":{unpadded}{needed}:"
    for value in ("AAA==", "AAAA=", "AAAA==", "==", "="):  # a parameter's byte sequence too
        with pytest.raises(MalformedCredentials, match="invalid base64"):
            parse_client_cert_chain(f"{leaf};p=:{value}:")
    for value in ("AA", "AA=", "AA==", "AAA", "AAA=", "AAAA", ""):  # missing padding is synthesized
        assert parse_client_cert_chain(f"{leaf};p=:{value}:") == (der(chain[0]),)


def test_parameters_are_parsed_and_ignored(chain: tuple[x509.Certificate, ...]) -> None:
    params = ';a=1;b=-2.5;c="x \\" y";d=?1;e=tok/en:1;f=:AAA=:;g=@1700000000;h=%"caf%c3%a9";i'
    assert parse_client_cert(sf(der(chain[0])) + params) == der(chain[0])
    assert parse_client_cert_chain(sf(der(chain[1])) + "; x=1, " + sf(der(chain[1]))) == (
        der(chain[1]),
        der(chain[1]),
    )


def test_client_cert_chain_across_lines(chain: tuple[x509.Certificate, ...]) -> None:
    inter = sf(der(chain[1]))
    assert parse_client_cert_chain([inter, f"{inter},{inter}"]) == (der(chain[1]),) * 3
    assert parse_client_cert_chain(f"{inter} ,\t{inter}") == (der(chain[1]),) * 2
    assert parse_client_cert_chain("") == ()
    assert parse_client_cert_chain([]) == ()


@pytest.mark.parametrize(
    "value",
    [
        "",
        "AAAA",
        ":AAAA",
        "AAAA:",
        ":!!!!:",
        ":A:",
        ":AA=A:",
        ":AAAA===:",
        ":AAAA:",
        "::",
        '"a string"',
        "token",
        "?1",
        "(:AAAA:)",
        "{leaf}, {leaf}",
        "{leaf} trailing",
        "{leaf};",
        "{leaf};A=1",
        "{leaf};a=",
        "{leaf};a=1.2345",
        "{leaf};a=@1.5",
        '{leaf};a="unterminated',
        '{leaf};a=%"UPPER%C3"',
        "{leaf};a=?2",
        "{leaf};a=:!:",
        "{leaf};a=\u00e9",
    ],
)
def test_malformed_client_cert(chain: tuple[x509.Certificate, ...], value: str) -> None:
    with pytest.raises(MalformedCredentials):
        parse_client_cert(value.replace("{leaf}", sf(der(chain[0]))))


@pytest.mark.parametrize(
    "value",
    [
        "{c},",
        ",{c}",
        "{c},,{c}",
        "{c} {c}",
        "({c} {c})",
        "{c}, tok",
        '{c}, "str"',
        "{c}, 1",
        "{c}, :AAAA:",
        "{c};a=(1)",
    ],
)
def test_malformed_client_cert_chain(chain: tuple[x509.Certificate, ...], value: str) -> None:
    with pytest.raises(MalformedCredentials):
        parse_client_cert_chain(value.replace("{c}", sf(der(chain[1]))))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "not a structured-field byte sequence"),
        ("A{b64}:", "not a structured-field byte sequence"),
        ('"{b64}:', "not a structured-field byte sequence"),
        (":{b64}", "unterminated byte sequence"),
        (":AA!A:", "characters outside base64"),
        (":AA AA:", "characters outside base64"),
        (":AA=A:", "invalid base64"),
        (":A:", "invalid base64"),
        ("{leaf} x", "not a single byte sequence"),
    ],
)
def test_client_cert_refusals_name_the_error(
    chain: tuple[x509.Certificate, ...], value: str, message: str
) -> None:
    b64 = base64.b64encode(der(chain[0])).decode()
    value = value.replace("{leaf}", sf(der(chain[0]))).replace("{b64}", b64)
    with pytest.raises(MalformedCredentials, match=message):
        parse_client_cert(value)


def test_chain_members_are_separated_by_commas_only(chain: tuple[x509.Certificate, ...]) -> None:
    inter = sf(der(chain[1]))
    for glue in ("x", " x ", ";", "\t;"):
        with pytest.raises(MalformedCredentials):
            parse_client_cert_chain(f"{inter}{glue}{inter}")
    with pytest.raises(MalformedCredentials, match="separated by commas"):
        parse_client_cert_chain(f"{inter}x{inter}")


def test_a_parameter_without_a_value_is_followed_by_more(
    chain: tuple[x509.Certificate, ...],
) -> None:
    # RFC 8941 4.2.3.2: a key without "=" is the Boolean true; the next parameter or member follows.
    leaf, inter = sf(der(chain[0])), sf(der(chain[1]))
    assert parse_client_cert(f"{leaf};a;b=1;c") == der(chain[0])
    assert parse_client_cert(f"{leaf};d=@1;e=@-1") == der(chain[0])  # one-digit dates
    assert parse_client_cert_chain(f"{inter};a, {inter};b;c=:AA==:") == (der(chain[1]),) * 2


def test_client_cert_bounds(chain: tuple[x509.Certificate, ...]) -> None:
    inter = sf(der(chain[1]))
    assert len(parse_client_cert_chain([inter] * MAX_CHAIN_LENGTH)) == MAX_CHAIN_LENGTH
    with pytest.raises(MalformedCredentials, match="more than 10"):
        parse_client_cert_chain([inter] * (MAX_CHAIN_LENGTH + 1))
    with pytest.raises(MalformedCredentials, match="exceeds 100 bytes"):
        parse_client_cert(inter, max_bytes=100)
    with pytest.raises(MalformedCredentials, match="exceeds 100 bytes"):
        parse_client_cert_chain(inter, max_bytes=100)


# --- nginx ---------------------------------------------------------------------------------


def test_nginx_escaped_round_trip(chain: tuple[x509.Certificate, ...]) -> None:
    escaped = quote(pem(chain[0]), safe="")
    assert escaped.startswith("-----BEGIN%20CERTIFICATE-----%0A")
    assert parse_nginx_cert(escaped) == (der(chain[0]),)
    full = quote("".join(map(pem, chain)), safe="")
    assert parse_nginx_cert(full) == tuple(map(der, chain))


@pytest.mark.parametrize("fold", ["\t", " ", "\n\t", ""])
def test_nginx_unescaped_form_only_when_enabled(
    chain: tuple[x509.Certificate, ...], fold: str
) -> None:
    lines = pem(chain[0]).strip().split("\n")
    folded = lines[0] + "".join(fold + line for line in lines[1:])
    with pytest.raises(MalformedCredentials):
        parse_nginx_cert(folded)
    assert parse_nginx_cert(folded, allow_unescaped_pem=True) == (der(chain[0]),)


@pytest.mark.parametrize(
    "value",
    ["", "%", "%2", "%zz", "not a cert", "-----BEGIN%20CERTIFICATE-----", "%E9", "caf\u00e9"],
)
def test_malformed_nginx(value: str) -> None:
    with pytest.raises(MalformedCredentials):
        parse_nginx_cert(value)
    with pytest.raises(MalformedCredentials):
        parse_nginx_cert(value, allow_unescaped_pem=True)


def test_nginx_value_may_carry_surrounding_blanks(chain: tuple[x509.Certificate, ...]) -> None:
    escaped = quote(pem(chain[0]), safe="")
    assert parse_nginx_cert(f" \t{escaped}\t ") == (der(chain[0]),)
    with pytest.raises(MalformedCredentials):  # blanks only, nothing else is trimmed
        parse_nginx_cert(f"X{escaped}X")
    # enabling the unescaped form keeps the escaped one working
    assert parse_nginx_cert(escaped, allow_unescaped_pem=True) == (der(chain[0]),)


@pytest.mark.parametrize(
    ("before", "between", "after"),
    [
        ("junk\n", "", ""),
        ("x", "", ""),
        ("", "junk\n", ""),
        ("", "\n-----END CERTIFICATE-----\n", ""),
        ("", "", "junk\n"),
        ("", "", "x"),  # one character after the last block
    ],
)
def test_nginx_text_outside_pem_blocks_is_refused(
    chain: tuple[x509.Certificate, ...], before: str, between: str, after: str
) -> None:
    """Only CERTIFICATE blocks and whitespace: nothing may be smuggled before, between or after."""
    text = before + pem(chain[0]) + between + pem(chain[1]) + after
    with pytest.raises(MalformedCredentials, match="outside its PEM blocks"):
        parse_nginx_cert(quote(text, safe=""))
    with pytest.raises(MalformedCredentials, match="outside its PEM blocks"):
        _pem.pem_certificates(text, "test")


def test_a_certificate_of_exactly_the_size_bound_is_parsed_not_refused() -> None:
    with pytest.raises(MalformedCredentials, match=r"is not an X\.509 certificate"):
        _pem.load_certificates([b"\x30" * (64 * 1024)], "test")


def test_oversized_certificate_is_refused_before_parsing() -> None:
    body = base64.encodebytes(b"\x30" * (64 * 1024 + 1)).decode()
    text = f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n"
    with pytest.raises(MalformedCredentials, match="exceeds 65536 bytes"):
        parse_nginx_cert(quote(text, safe=""), max_bytes=200_000)
    with pytest.raises(MalformedCredentials, match="exceeds 65536 bytes"):
        parse_client_cert(sf(b"\x30" * (64 * 1024 + 1)), max_bytes=200_000)
    with pytest.raises(MalformedCredentials, match="holds 11 certificates"):
        _pem.load_certificates([b"\x30"] * 11, "test")


def test_nginx_size_bound(chain: tuple[x509.Certificate, ...]) -> None:
    escaped = quote(pem(chain[0]), safe="")
    with pytest.raises(MalformedCredentials, match="exceeds"):
        parse_nginx_cert(escaped, max_bytes=len(escaped) - 1)
    with pytest.raises(MalformedCredentials, match="more than 10"):
        parse_nginx_cert(escaped * 11, max_bytes=100_000)


@settings(max_examples=300, deadline=None)
@given(st.text(), st.booleans())
def test_arbitrary_text_raises_only_malformed_credentials(value: str, unescaped: bool) -> None:
    for parse in (parse_client_cert, lambda v: parse_nginx_cert(v, allow_unescaped_pem=unescaped)):
        with pytest.raises(MalformedCredentials):
            parse(value)
    try:
        assert parse_client_cert_chain(value) == ()  # only blank text is a valid (empty) list
    except MalformedCredentials:
        pass
    else:
        assert not value.strip(" \t")


SF_ALPHABET = st.sampled_from(list(':;,=()"?@%*-. \tAQab019/+'))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(SF_ALPHABET), max_size=3))
def test_structured_field_noise_raises_only_malformed_credentials(lines: list[str]) -> None:
    # Byte sequences of noise may decode, but never to a certificate.
    with pytest.raises(MalformedCredentials):
        parse_client_cert_chain(lines) or parse_client_cert(", ".join(lines))


# --- TrustedProxies configuration ----------------------------------------------------------


@pytest.mark.parametrize("bad", ["10.0.0.300", "10.0.0.1/8", "fe80::/200", "proxy.local", ""])
def test_invalid_address_names_the_entry(bad: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(repr(bad))):
        TrustedProxies(["10.0.0.0/8", bad])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"addresses": "10.0.0.1"}, "not one string"),
        ({"addresses": [10]}, "not a string"),
        ({"addresses": []}, "needs addresses"),
        ({"header": "haproxy"}, "unknown"),
        ({"header": "client-cert", "header_name": "x-cert"}, "cannot be changed"),
        ({"header_name": "bad name"}, "not a valid header name"),
        ({"header_name": "client-cert"}, "another header format"),
        ({"header_name": 5}, "not a valid header name"),
        ({"header_name": "Authorization"}, "another credential"),
        ({"header": "nginx", "header_name": "DPoP"}, "another credential"),
        ({"header": "nginx", "header_name": "X-Forwarded-Client-Cert"}, "another header"),
        ({"header": "nginx", "header_name": "Cookie"}, "meaning of its own"),
        ({"header_name": "Host"}, "meaning of its own"),
        ({"header_name": "x-forwarded-for"}, "meaning of its own"),
        ({"header_name": "traceparent"}, "meaning of its own"),
        ({"hop": "middle"}, "hop"),
        ({"header": "nginx", "hop": "first"}, "xfcc"),
        ({"max_header_bytes": 0}, "max_header_bytes"),
        ({"max_header_bytes": 1.5}, "max_header_bytes"),
        ({"max_header_bytes": 10**9}, "max_header_bytes"),
        ({"allow_unescaped_pem": True}, "nginx"),
        ({"header": "nginx", "allow_unescaped_pem": "false"}, "True or False"),
        ({"header": "nginx", "allow_unescaped_pem": 1}, "True or False"),
        ({"spiffe_ids": "spiffe://example.org/envoy"}, "matcher"),
    ],
)
def test_invalid_configuration(kwargs: dict[str, object], message: str) -> None:
    kwargs.setdefault("addresses", ["10.0.0.0/8"])
    with pytest.raises(ConfigurationError, match=message):
        TrustedProxies(**kwargs)  # type: ignore[arg-type]


def test_configuration_is_immutable_and_readable() -> None:
    config = TrustedProxies(
        ["10.0.0.0/8", "2001:db8::/32", "::ffff:192.168.0.0/112", "2001:db8::1"],
        header="nginx",
        header_name="X-Client-Cert",
        allow_unescaped_pem=True,
        max_header_bytes=4096,
    )
    assert config.networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
        ipaddress.ip_network("192.168.0.0/16"),
        ipaddress.ip_network("2001:db8::1/128"),
    )
    assert (config.header, config.header_name, config.hop) == ("nginx", "x-client-cert", "last")
    assert config.max_header_bytes == 4096
    assert config.allow_unescaped_pem
    assert config.spiffe_ids is None
    assert config.header_names == (*FORWARDED_CERT_HEADERS, "x-client-cert")
    assert "x-client-cert" in repr(config)
    with pytest.raises(AttributeError):
        config._hop = "first"
    assert TrustedProxies([PROXY]).header_names == FORWARDED_CERT_HEADERS


def test_configuration_bounds_are_inclusive() -> None:
    assert TrustedProxies([PROXY], max_header_bytes=1).max_header_bytes == 1
    assert TrustedProxies([PROXY], max_header_bytes=1024 * 1024).max_header_bytes == 1024 * 1024


def test_header_name_may_repeat_its_own_default() -> None:
    config = TrustedProxies([PROXY], header_name="X-Forwarded-Client-Cert")
    assert config.header_name == "x-forwarded-client-cert"
    assert config.header_names == FORWARDED_CERT_HEADERS


def test_whole_ipv4_mapped_range_is_read_as_ipv4() -> None:
    config = TrustedProxies(["::ffff:0:0/96"])
    assert config.networks == (ipaddress.ip_network("0.0.0.0/0"),)
    assert config.trusted_address("::ffff:10.0.0.1") == "10.0.0.1"
    assert config.trusted_address("10.0.0.1") == "10.0.0.1"
    assert config.trusted_address("2001:db8::1") is None


@pytest.mark.parametrize(
    ("address", "trusted"),
    [
        ("10.0.0.1", True),
        ("10.255.255.255", True),
        ("11.0.0.1", False),
        ("::ffff:10.0.0.1", True),  # IPv4-mapped: how dual-stack sockets report IPv4 peers
        ("::ffff:11.0.0.1", False),
        ("2001:db8::1", True),
        ("2001:db8:1::1", True),
        ("2001:db9::1", False),
        ("fe80::1%eth0", True),
        ("192.168.1.7", True),
        ("::ffff:192.168.1.7", True),
        ("192.168.1.8", False),
        (None, False),
        ("", False),
        ("10.0.0.1:443", False),
        ("[2001:db8::1]", False),
        ("proxy.local", False),
        ("010.0.0.1", False),
    ],
)
def test_address_matching(address: str | None, trusted: bool) -> None:
    config = TrustedProxies(["10.0.0.0/8", "2001:db8::/32", "fe80::/10", "::ffff:192.168.1.7"])
    assert (config.trusted_address(address) is not None) is trusted


@pytest.mark.parametrize(
    ("address", "trusted"),
    [
        ("fe80::1%eth0", True),
        ("fe80::1%eth1", False),  # the same address on another link: another host
        ("fe80::1", False),  # a peer whose link is not known is not on eth0
        ("fe80::1:2%eth0", True),
        ("fe80::2%eth0", False),
        ("fe80::9%eth1", True),  # an entry without a zone holds on any link
        ("fe80::9", True),
    ],
)
def test_an_entry_with_a_zone_holds_on_its_link_only(address: str, trusted: bool) -> None:
    config = TrustedProxies(["fe80::1%eth0", "fe80::1:0%eth0/112", "fe80::9"])
    assert (config.trusted_address(address) is not None) is trusted


def test_non_string_peer_address_is_never_trusted() -> None:
    # ipaddress would read the integer 167772161 as 10.0.0.1.
    config = TrustedProxies(["10.0.0.0/8"])
    assert config.trusted_address(167772161) is None  # type: ignore[arg-type]
    assert config.distrust(167772161, None) == "untrusted_peer"  # type: ignore[arg-type]


def test_trusted_address_is_normalized() -> None:
    config = TrustedProxies(["10.0.0.0/8", "2001:db8::/32"])
    assert config.trusted_address("::ffff:10.0.0.1") == "10.0.0.1"
    assert config.trusted_address("2001:DB8:0::1") == "2001:db8::1"


def test_spiffe_ids_only_still_needs_an_address(chain: tuple[x509.Certificate, ...]) -> None:
    config = TrustedProxies(spiffe_ids=match.exact(PROXY_ID))
    assert config.trusted_address("203.0.113.9") == "203.0.113.9"
    assert config.trusted_address(None) is None
    request = headers(x_forwarded_client_cert=xfcc_for(chain))
    assert extract_forwarded_cert(request, "203.0.113.9", PROXY_ID, config).chain
    assert extract_forwarded_cert(request, None, PROXY_ID, config).ignored_reason == (
        "untrusted_peer"
    )


# --- the decision --------------------------------------------------------------------------


def test_no_forwarded_headers_is_nothing() -> None:
    config = TrustedProxies([PROXY])
    for peer in (PROXY, "192.0.2.1", None):
        assert extract_forwarded_cert(headers(), peer, None, config) == ForwardedResult()
    assert extract_forwarded_cert(headers(), PROXY, None, None) == ForwardedResult()


@pytest.mark.parametrize("name", [*FORWARDED_CERT_HEADERS, "x-client-cert"])
@pytest.mark.parametrize("peer", ["192.0.2.1", "::ffff:192.0.2.1", None, "garbage"])
def test_spoofed_headers_from_untrusted_peers_are_reported(name: str, peer: str | None) -> None:
    config = TrustedProxies([PROXY], header="nginx", header_name="X-Client-Cert")
    result = extract_forwarded_cert(headers(**{name: "spoofed"}), peer, PROXY_ID, config)
    assert result == ForwardedResult(
        ignored=True, ignored_reason="untrusted_peer", ignored_headers=(name,)
    )


@pytest.mark.parametrize("name", FORWARDED_CERT_HEADERS)
def test_without_configuration_headers_are_always_ignored(name: str) -> None:
    result = extract_forwarded_cert(headers(**{name: "x"}), PROXY, PROXY_ID, None)
    assert result.ignored and result.ignored_reason == "untrusted_peer"
    assert result.ignored_headers == (name,)
    assert result.chain is None


def test_every_spoofed_header_is_listed() -> None:
    request = headers(**dict.fromkeys(FORWARDED_CERT_HEADERS, ""))
    result = extract_forwarded_cert(request, "192.0.2.1", None, TrustedProxies([PROXY]))
    assert result.ignored_headers == FORWARDED_CERT_HEADERS


@pytest.mark.parametrize(
    ("proxy_id", "reason"),
    [
        (None, "proxy_id_missing"),
        (SpiffeId.parse("spiffe://example.org/attacker"), "proxy_id_not_allowed"),
        (SpiffeId.parse("spiffe://other.org/envoy"), "proxy_id_not_allowed"),
    ],
)
def test_trusted_address_with_wrong_proxy_identity(
    chain: tuple[x509.Certificate, ...], proxy_id: SpiffeId | None, reason: str
) -> None:
    config = TrustedProxies([PROXY], spiffe_ids=match.exact(PROXY_ID))
    request = headers(x_forwarded_client_cert=xfcc_for(chain))
    result = extract_forwarded_cert(request, PROXY, proxy_id, config)
    assert result == ForwardedResult(
        ignored=True, ignored_reason=reason, ignored_headers=("x-forwarded-client-cert",)
    )
    assert extract_forwarded_cert(request, PROXY, PROXY_ID, config).chain == tuple(map(der, chain))


def test_matcher_returning_a_bool_fails_closed(chain: tuple[x509.Certificate, ...]) -> None:
    config = TrustedProxies([PROXY], spiffe_ids=lambda _id: True)  # type: ignore[arg-type]
    request = headers(x_forwarded_client_cert=xfcc_for(chain))
    result = extract_forwarded_cert(request, PROXY, PROXY_ID, config)
    assert result.ignored_reason == "proxy_id_not_allowed"


def test_xfcc_from_trusted_proxy(chain: tuple[x509.Certificate, ...]) -> None:
    request = headers(x_forwarded_client_cert=xfcc_for(chain))
    result = extract_forwarded_cert(request, "::ffff:" + PROXY, None, TrustedProxies([PROXY]))
    assert result == ForwardedResult(
        chain=tuple(map(der, chain)), source="xfcc", proxy_address=PROXY
    )


def test_xfcc_hop_selection(chain: tuple[x509.Certificate, ...], ca: DevCA) -> None:
    injected = ca.issue_svid("spiffe://example.org/admin").cert_chain
    header = f"{xfcc_for(injected, by='spiffe://example.org/edge')},{xfcc_for(chain)}"
    request = headers(x_forwarded_client_cert=header)
    last = extract_forwarded_cert(request, PROXY, None, TrustedProxies([PROXY]))
    first = extract_forwarded_cert(request, PROXY, None, TrustedProxies([PROXY], hop="first"))
    assert last.chain == tuple(map(der, chain))
    assert first.chain == tuple(map(der, injected))


def envoy_element(leaf: x509.Certificate, by: str = "spiffe://example.org/envoy") -> str:
    """The element Envoy writes for a client certificate (cert, subject, uri and dns details):
    quoted ``Cert`` and ``Subject``; ``URI`` and ``DNS`` unquoted, one pair per SAN, and ``URI=``
    for a certificate without a URI SAN."""
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    uris = san.get_values_for_type(x509.UniformResourceIdentifier) or [""]
    pairs = [
        f"By={by}",
        f"Hash={hashlib.sha256(der(leaf)).hexdigest()}",
        f'Cert="{quote(pem(leaf), safe="")}"',
        f'Subject="{leaf.subject.rfc4514_string()}"',
        *(f"URI={uri}" for uri in uris),
        *(f"DNS={name}" for name in san.get_values_for_type(x509.DNSName)),
    ]
    return ";".join(pairs)


@pytest.mark.parametrize(
    ("uri_sans", "dns_names"),
    [
        (["https://evil.example/?a=1,{inject}"], []),
        ([",{inject}"], []),
        (["spiffe://example.org/web", "https://evil.example/,{inject}"], []),
        (["spiffe://example.org/web"], ["evil.example,{inject}"]),
        (["spiffe://example.org/web"], [",{inject}"]),
        ([], ["a.example", ",{inject}"]),
    ],
)
def test_a_san_with_a_comma_cannot_inject_an_element(
    ca: DevCA, uri_sans: list[str], dns_names: list[str]
) -> None:
    # A CA the proxy trusts issued a certificate whose SAN holds ',' (legal in a URI, never in
    # a SPIFFE ID). Envoy writes URI and DNS unquoted, so the text after the comma reads as an
    # element of its own, the last one, carrying someone else's (public) certificate.
    victim = ca.issue_svid("spiffe://example.org/admin").leaf
    inject = f"Cert={quote(pem(victim), safe='')}"
    now = datetime.datetime.now(datetime.timezone.utc)
    certs, _ = ca.issue_unchecked_leaf(
        uri_sans=[u.format(inject=inject) for u in uri_sans],
        dns_names=[d.format(inject=inject) for d in dns_names],
        not_before=now,
        not_after=now + datetime.timedelta(hours=1),
    )
    header = envoy_element(certs[0])
    *_, last = parse_xfcc(header)
    assert last.cert_pem == pem(victim)  # what the split makes of Envoy's element
    request = headers(x_forwarded_client_cert=header)
    parsed = ParsedChains()
    for _ in range(2):  # refused every time, never remembered
        with pytest.raises(MalformedCredentials, match="does not match the certificate"):
            forwarded_cert(request, PROXY, None, TrustedProxies([PROXY]), parsed)
    assert len(parsed) == 0


def test_every_element_that_carries_a_certificate_must_be_consistent(
    chain: tuple[x509.Certificate, ...], ca: DevCA
) -> None:
    other = ca.issue_svid("spiffe://example.org/edge").leaf
    ours = envoy_element(chain[0])
    config = TrustedProxies([PROXY])
    # earlier elements without a certificate cannot be checked and are not
    plain = headers(x_forwarded_client_cert=f"By=spiffe://a/edge;URI=spiffe://a/x,{ours}")
    assert extract_forwarded_cert(plain, PROXY, None, config).chain == (der(chain[0]),)
    consistent = headers(x_forwarded_client_cert=f"{envoy_element(other)},{ours}")
    assert extract_forwarded_cert(consistent, PROXY, None, config).chain == (der(chain[0]),)
    for tampered in (
        envoy_element(other).replace("URI=spiffe://example.org/edge", "URI=spiffe://x/y"),
        envoy_element(other).replace(hashlib.sha256(der(other)).hexdigest(), "0" * 64),
        f"Cert={quote(pem(other), safe='')};Chain={quote(pem(chain[0]), safe='')}",
    ):
        request = headers(x_forwarded_client_cert=f"{tampered},{ours}")
        with pytest.raises(MalformedCredentials, match=r"not match|not the first"):
            extract_forwarded_cert(request, PROXY, None, config)
    # the chosen element is checked whichever hop is chosen
    request = headers(x_forwarded_client_cert=f"{ours},{tampered}")
    with pytest.raises(MalformedCredentials, match="not the first"):
        extract_forwarded_cert(request, PROXY, None, TrustedProxies([PROXY], hop="first"))


@pytest.mark.parametrize(
    ("config", "sent"),
    [
        (TrustedProxies([PROXY]), {"x-forwarded-client-cert": ["By=a", "By=b"]}),
        (TrustedProxies([PROXY], header="client-cert"), {"client-cert": [":AA==:", ":AA==:"]}),
        (TrustedProxies([PROXY], header="nginx"), {"x-ssl-client-cert": ["", ""]}),
    ],
)
def test_repeated_single_valued_header_is_malformed(
    config: TrustedProxies, sent: dict[str, list[str]]
) -> None:
    with pytest.raises(MalformedCredentials, match="2 header lines"):
        extract_forwarded_cert(headers(**sent), PROXY, None, config)


def test_client_cert_from_trusted_proxy(chain: tuple[x509.Certificate, ...]) -> None:
    config = TrustedProxies(["10.0.0.0/8"], header="client-cert")
    request = headers(client_cert=sf(der(chain[0])), client_cert_chain=[sf(der(chain[1]))])
    result = extract_forwarded_cert(request, PROXY, None, config)
    assert result.chain == tuple(map(der, chain))
    assert result.source == "client-cert"
    leaf_only = extract_forwarded_cert(headers(client_cert=sf(der(chain[0]))), PROXY, None, config)
    assert leaf_only.chain == (der(chain[0]),)


def test_client_cert_chain_limits(chain: tuple[x509.Certificate, ...]) -> None:
    config = TrustedProxies([PROXY], header="client-cert")
    orphan = headers(client_cert_chain=sf(der(chain[1])))
    with pytest.raises(MalformedCredentials, match="without Client-Cert"):
        extract_forwarded_cert(orphan, PROXY, None, config)
    too_long = headers(
        client_cert=sf(der(chain[0])), client_cert_chain=[sf(der(chain[1]))] * MAX_CHAIN_LENGTH
    )
    with pytest.raises(MalformedCredentials, match="exceeds 10"):
        extract_forwarded_cert(too_long, PROXY, None, config)
    longest = headers(
        client_cert=sf(der(chain[0])),
        client_cert_chain=[sf(der(chain[1]))] * (MAX_CHAIN_LENGTH - 1),
    )
    result = extract_forwarded_cert(longest, PROXY, None, config)
    assert result.chain is not None
    assert len(result.chain) == MAX_CHAIN_LENGTH


def test_nginx_from_trusted_proxy(chain: tuple[x509.Certificate, ...]) -> None:
    config = TrustedProxies([PROXY], header="nginx", header_name="X-Client-Cert")
    request = headers(x_client_cert=quote(pem(chain[0]), safe=""))
    result = extract_forwarded_cert(request, PROXY, None, config)
    assert (result.chain, result.source) == ((der(chain[0]),), "nginx")
    # a value of optional whitespace alone is no certificate; anything else must parse
    for blank in ("", " \t "):
        empty = extract_forwarded_cert(headers(x_client_cert=blank), PROXY, None, config)
        assert empty == ForwardedResult(proxy_address=PROXY)
    for junk in ("X", " X\t"):
        with pytest.raises(MalformedCredentials):
            extract_forwarded_cert(headers(x_client_cert=junk), PROXY, None, config)


def test_nginx_unescaped_pem_from_trusted_proxy(chain: tuple[x509.Certificate, ...]) -> None:
    folded = pem(chain[0]).strip().replace("\n", "\t")
    request = headers(x_ssl_client_cert=folded)
    with pytest.raises(MalformedCredentials):
        extract_forwarded_cert(request, PROXY, None, TrustedProxies([PROXY], header="nginx"))
    config = TrustedProxies([PROXY], header="nginx", allow_unescaped_pem=True)
    assert extract_forwarded_cert(request, PROXY, None, config).chain == (der(chain[0]),)


def test_other_formats_through_a_trusted_proxy_are_reported(
    chain: tuple[x509.Certificate, ...],
) -> None:
    config = TrustedProxies([PROXY])  # the proxy speaks XFCC and only sanitizes XFCC
    spoof_only = headers(client_cert=sf(der(chain[0])))
    assert extract_forwarded_cert(spoof_only, PROXY, None, config) == ForwardedResult(
        ignored=True,
        ignored_reason="unexpected_header",
        ignored_headers=("client-cert",),
        proxy_address=PROXY,
    )
    both = headers(x_forwarded_client_cert=xfcc_for(chain), x_ssl_client_cert="x")
    result = extract_forwarded_cert(both, PROXY, None, config)
    assert result.chain == tuple(map(der, chain))
    assert (result.ignored, result.ignored_reason, result.ignored_headers) == (
        True,
        "unexpected_header",
        ("x-ssl-client-cert",),
    )


def test_malformed_header_from_trusted_proxy_raises(chain: tuple[x509.Certificate, ...]) -> None:
    config = TrustedProxies([PROXY], max_header_bytes=1024)
    with pytest.raises(MalformedCredentials, match="exceeds 1024 bytes"):
        extract_forwarded_cert(
            headers(x_forwarded_client_cert=xfcc_for(chain)), PROXY, None, config
        )
    tampered = xfcc_for(chain).replace("URI=spiffe://example.org/web", "URI=spiffe://x/y")
    with pytest.raises(MalformedCredentials, match="URI does not match"):
        extract_forwarded_cert(
            headers(x_forwarded_client_cert=tampered), PROXY, None, TrustedProxies([PROXY])
        )


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["xfcc", "client-cert", "nginx"]),
    st.dictionaries(
        st.sampled_from(FORWARDED_CERT_HEADERS), st.lists(st.text(), min_size=1, max_size=2)
    ),
)
def test_trusted_proxy_noise_raises_only_malformed_credentials(
    fmt: str, sent: dict[str, list[str]]
) -> None:
    config = TrustedProxies([PROXY], header=fmt)  # type: ignore[arg-type]
    try:
        result = extract_forwarded_cert(headers(**sent), PROXY, None, config)
    except MalformedCredentials:
        return
    assert result.chain is None


# --- end to end: the caller verifies the forwarded chain like a direct mTLS peer ------------


@pytest.mark.parametrize("fmt", ["xfcc", "client-cert", "nginx"])
def test_forwarded_svid_verifies_and_forgery_does_not(
    svid_ca: DevCA, chain: tuple[x509.Certificate, ...], fmt: str
) -> None:
    forger = DevCA.create("example.org")  # same trust domain name, different keys
    forged = forger.issue_svid("spiffe://example.org/web").cert_chain
    config = TrustedProxies(["10.0.0.0/8"], spiffe_ids=match.exact(PROXY_ID), header=fmt)  # type: ignore[arg-type]
    bundles = BundleSet([svid_ca.bundle])

    def send(certs: tuple[x509.Certificate, ...]) -> ForwardedResult:
        if fmt == "xfcc":
            request = headers(x_forwarded_client_cert=xfcc_for(certs))
        elif fmt == "client-cert":
            request = headers(
                client_cert=sf(der(certs[0])), client_cert_chain=[sf(der(c)) for c in certs[1:]]
            )
        else:
            request = headers(x_ssl_client_cert=quote("".join(map(pem, certs)), safe=""))
        return extract_forwarded_cert(request, PROXY, PROXY_ID, config)

    good = send(chain)
    assert good.chain is not None and good.source == fmt
    peer = verify_x509_svid(good.chain, bundles, role="client")
    assert peer.spiffe_id == SpiffeId.parse("spiffe://example.org/web")

    bad = send(forged)
    assert bad.chain is not None
    with pytest.raises(UntrustedCertificate):
        verify_x509_svid(bad.chain, bundles, role="client")


# --- chains already parsed ------------------------------------------------------------------


def test_a_forwarded_chain_is_parsed_once_per_exact_header(
    chain: tuple[x509.Certificate, ...], svid_ca: DevCA
) -> None:
    parsed = ParsedChains()
    config = TrustedProxies([PROXY])
    request = headers(x_forwarded_client_cert=xfcc_for(chain))
    first = forwarded_cert(request, PROXY, None, config, parsed)
    assert first == extract_forwarded_cert(request, PROXY, None, config)
    again = forwarded_cert(request, PROXY, None, config, parsed)
    assert again == first and again.chain is first.chain  # not parsed again
    other = svid_ca.issue_svid("spiffe://example.org/admin").cert_chain
    changed = forwarded_cert(
        headers(x_forwarded_client_cert=xfcc_for(other)), PROXY, None, config, parsed
    )
    assert changed.chain == tuple(map(der, other))
    # the same value on two lines is a smuggling pattern, refused every time
    twice = headers(x_forwarded_client_cert=[xfcc_for(chain)] * 2)
    for _ in range(2):
        with pytest.raises(MalformedCredentials, match="sent once"):
            forwarded_cert(twice, PROXY, None, config, parsed)


def test_rfc9440_chains_are_told_apart_by_both_headers(
    chain: tuple[x509.Certificate, ...],
) -> None:
    parsed = ParsedChains()
    config = TrustedProxies([PROXY], header="client-cert")
    leaf, inter = sf(der(chain[0])), sf(der(chain[1]))
    alone = forwarded_cert(headers(client_cert=leaf), PROXY, None, config, parsed)
    assert alone.chain == (der(chain[0]),)
    full = forwarded_cert(
        headers(client_cert=leaf, client_cert_chain=inter), PROXY, None, config, parsed
    )
    assert full.chain == (der(chain[0]), der(chain[1]))
    # a line boundary is part of the value: ":a:,:b:" on one line or on two is not confused
    lines = forwarded_cert(
        headers(client_cert=leaf, client_cert_chain=[inter, inter]), PROXY, None, config, parsed
    )
    assert lines.chain == (der(chain[0]), der(chain[1]), der(chain[1]))
    # ... and neither is the boundary between the two headers: the same three lines, one more
    # of them in Client-Cert, are a Client-Cert sent twice
    moved = headers(client_cert=[leaf, inter], client_cert_chain=inter)
    for _ in range(2):
        with pytest.raises(MalformedCredentials, match="sent once"):
            forwarded_cert(moved, PROXY, None, config, parsed)


def test_parsed_chains_are_bounded_and_refuse_oversized_headers(
    chain: tuple[x509.Certificate, ...], svid_ca: DevCA
) -> None:
    parsed = ParsedChains(size=2)
    config = TrustedProxies([PROXY], max_header_bytes=8192)
    chains = [svid_ca.issue_svid(f"spiffe://example.org/w{n}").cert_chain for n in range(3)]
    results = [
        forwarded_cert(headers(x_forwarded_client_cert=xfcc_for(c)), PROXY, None, config, parsed)
        for c in chains
    ]
    assert [r.chain for r in results] == [tuple(map(der, c)) for c in chains]
    assert len(parsed) == 2
    # by default (each Authenticator that trusts proxies keeps one), 1024 chains at most
    default = ParsedChains()
    rfc9440 = TrustedProxies([PROXY], header="client-cert")
    for n in range(1025):
        request = headers(client_cert=f"{sf(der(chain[0]))};n={n}")
        assert forwarded_cert(request, PROXY, None, rfc9440, default).chain == (der(chain[0]),)
    assert len(default) == 1024
    oversized = headers(x_forwarded_client_cert=xfcc_for(chain) + ";x=" + "a" * 20000)
    for _ in range(2):
        with pytest.raises(MalformedCredentials):
            forwarded_cert(oversized, PROXY, None, config, parsed)
    assert len(parsed) == 2


def test_parsed_chains_are_bounded_by_the_bytes_of_their_certificates(svid_ca: DevCA) -> None:
    """The parsed chains are not verified yet and a trusted proxy may forward large ones (up
    to ``max_header_bytes``, 1 MiB at most): the cache holds at most ``max_bytes`` of their
    certificates, the oldest going first, and never one chain larger than that."""
    config = TrustedProxies([PROXY], max_header_bytes=65536)
    chains = [svid_ca.issue_svid(f"spiffe://example.org/w{n}").cert_chain for n in range(4)]
    sizes = [sum(len(der(cert)) for cert in c) for c in chains]
    parsed = ParsedChains(max_bytes=sizes[2] + sizes[3])  # any three chains are more
    for c in chains:
        request = headers(x_forwarded_client_cert=xfcc_for(c))
        assert forwarded_cert(request, PROXY, None, config, parsed).chain == tuple(map(der, c))
        assert len(parsed) <= 2
    assert len(parsed) == 2 and parsed._bytes == sizes[2] + sizes[3]
    small = ParsedChains(max_bytes=sizes[0] - 1)
    request = headers(x_forwarded_client_cert=xfcc_for(chains[0]))
    assert forwarded_cert(request, PROXY, None, config, small).chain == tuple(map(der, chains[0]))
    assert len(small) == 0 and small._bytes == 0


@pytest.mark.parametrize("fmt", ["xfcc", "client-cert", "nginx"])
def test_a_lone_surrogate_in_a_forwarded_header_is_malformed_not_an_error(fmt: str) -> None:
    # what no server's header parser makes, but a view may hand over: refused like any noise
    config = TrustedProxies([PROXY], header=fmt)  # type: ignore[arg-type]
    request = headers(**dict.fromkeys(config.format_headers, ":\ud800:"))
    for parsed in (None, ParsedChains()):
        with pytest.raises(MalformedCredentials):
            forwarded_cert(request, PROXY, None, config, parsed)


def test_a_forwarded_result_is_immutable_and_shows_no_certificate(
    chain: tuple[x509.Certificate, ...],
) -> None:
    request = headers(x_forwarded_client_cert=xfcc_for(chain))
    result = extract_forwarded_cert(request, PROXY, None, TrustedProxies([PROXY]))
    # one result (the one for a request without any such header) is shared by every request
    nothing = extract_forwarded_cert(headers(), PROXY, None, None)
    for shared in (result, nothing):
        with pytest.raises(dataclasses.FrozenInstanceError):
            shared.chain = (b"other",)  # type: ignore[misc]
    assert "chain" not in repr(result) and repr(der(chain[0])) not in repr(result)


def test_the_api_key_header_cannot_carry_forwarded_certificates(ca: DevCA) -> None:
    """One header cannot be both: every value would be read as an API key and parsed as a
    certificate, and stripped from requests that do not come from a proxy."""
    proxies = TrustedProxies(["10.0.0.0/8"], header="nginx", header_name="X-Client-Auth")
    with pytest.raises(ConfigurationError, match="forwarded-certificate header too"):
        Authenticator(
            bundles=ca.bundle,
            trusted_proxies=proxies,
            api_keys=ApiKeys({"ci": ApiKeys.hash("k" * 32)}, header="x-client-auth"),
        )
    Authenticator(  # apart, both work
        bundles=ca.bundle,
        trusted_proxies=proxies,
        api_keys=ApiKeys({"ci": ApiKeys.hash("k" * 32)}, header="x-api-key"),
    )
