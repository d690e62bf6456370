"""Envoy x-forwarded-client-cert parsing and the element -> DER chain cross-checks."""

from __future__ import annotations

import hashlib
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from zerotrust.authn import _xfcc
from zerotrust.authn.proxy import MAX_XFCC_ELEMENTS, XfccElement, parse_xfcc
from zerotrust.dev import DevCA
from zerotrust.errors import MalformedCredentials

LYFT_HASH = "468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688"


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(Encoding.PEM).decode()


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def encoded(text: str) -> str:
    """URL-encode PEM the way Envoy and nginx do."""
    return quote(text, safe="")


@pytest.fixture(scope="module")
def svid_ca() -> DevCA:
    return DevCA.create("example.org", intermediate=True)


@pytest.fixture(scope="module")
def chain(svid_ca: DevCA) -> tuple[x509.Certificate, ...]:
    return svid_ca.issue_svid("spiffe://example.org/web", dns_names=["web.example.org"]).cert_chain


# --- parsing, documentation-style examples -------------------------------------------------


def test_single_element_with_by_hash_subject_uri() -> None:
    header = (
        f"By=http://frontend.lyft.com;Hash={LYFT_HASH};"
        'Subject="/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client";'
        "URI=http://testclient.lyft.com"
    )
    assert parse_xfcc(header) == (
        XfccElement(
            by=("http://frontend.lyft.com",),
            hash=LYFT_HASH,
            subject="/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client",
            uris=("http://testclient.lyft.com",),
        ),
    )


def test_elements_are_immutable() -> None:
    (element,) = parse_xfcc(f"Hash={LYFT_HASH};URI=spiffe://example.org/web")
    with pytest.raises(AttributeError):
        element.uris = ("spiffe://example.org/admin",)  # type: ignore[misc]
    assert element.uris == ("spiffe://example.org/web",)


def test_multiple_elements_keep_header_order() -> None:
    header = (
        f"By=http://frontend.lyft.com;Hash={LYFT_HASH};URI=http://testclient.lyft.com,"
        f"By=http://backend.lyft.com;Hash={LYFT_HASH[::-1]};URI=http://frontend.lyft.com"
    )
    first, last = parse_xfcc(header)
    assert first.by == ("http://frontend.lyft.com",)
    assert first.uris == ("http://testclient.lyft.com",)
    assert last.by == ("http://backend.lyft.com",)
    assert last.hash == LYFT_HASH[::-1]


def test_repeated_uri_and_dns() -> None:
    header = (
        'By=spiffe://a/proxy;Subject="";URI=spiffe://a/x;URI=spiffe://a/y;'
        "DNS=lyft.com;DNS=www.lyft.com"
    )
    (element,) = parse_xfcc(header)
    assert element.uris == ("spiffe://a/x", "spiffe://a/y")
    assert element.dns == ("lyft.com", "www.lyft.com")


def test_cert_and_chain_are_url_decoded(chain: tuple[x509.Certificate, ...]) -> None:
    full = "".join(pem(c) for c in chain)
    header = f'By=spiffe://example.org/envoy;Cert="{encoded(pem(chain[0]))}";Chain={encoded(full)}'
    (element,) = parse_xfcc(header)
    assert element.cert_pem == pem(chain[0])
    assert element.chain_pem == full
    assert "BEGIN" not in repr(element)  # certificates stay out of logs


def test_quoted_values_keep_separators_literally() -> None:
    (element,) = parse_xfcc('By="spiffe://a/p,q;r=s";Subject="CN=a,O=b;c=d";URI=spiffe://a/x')
    assert element.by == ("spiffe://a/p,q;r=s",)
    assert element.subject == "CN=a,O=b;c=d"
    assert element.uris == ("spiffe://a/x",)


def test_escaped_quotes_and_literal_backslashes() -> None:
    (element,) = parse_xfcc(r'Subject="CN=say \"hi\", O=a\,b";By=x')
    assert element.subject == r'CN=say "hi", O=a\,b'
    (element,) = parse_xfcc(r'Subject="\"";By=x')
    assert element.subject == '"'


def test_a_quote_after_an_even_number_of_backslashes_closes_the_value() -> None:
    # Envoy writes the RFC 2253 subject as it is: a CN ending in '\' is written 'CN=build\\'.
    header = (
        r'By=spiffe://a/p;Subject="CN=build\\";URI=spiffe://a/x,'
        r'By=spiffe://a/q;Subject="CN=a\\\"b\\\\";URI=spiffe://a/y,'
        r'By=spiffe://a/r;Subject="\\\\\\";DNS=r.example'
    )
    first, second, third = parse_xfcc(header)
    assert first == XfccElement(by=("spiffe://a/p",), subject=r"CN=build\\", uris=("spiffe://a/x",))
    assert second == XfccElement(
        by=("spiffe://a/q",), subject=r'CN=a\\"b\\\\', uris=("spiffe://a/y",)
    )
    assert third == XfccElement(by=("spiffe://a/r",), subject="\\" * 6, dns=("r.example",))


def test_a_quote_after_an_odd_number_of_backslashes_is_escaped() -> None:
    (element,) = parse_xfcc(r'Subject="a\\\";b";By=p')
    assert element.subject == r'a\\";b'
    with pytest.raises(MalformedCredentials, match="unterminated quoted value"):
        parse_xfcc(r'Subject="CN=build\\\";URI=spiffe://a/x')


def test_keys_are_case_insensitive() -> None:
    (element,) = parse_xfcc(f"by=p;HASH={LYFT_HASH};uri=spiffe://a/x;Dns=d.example;sUbJeCt=s")
    assert element == XfccElement(
        by=("p",), hash=LYFT_HASH, uris=("spiffe://a/x",), dns=("d.example",), subject="s"
    )


def test_empty_values_mean_absent() -> None:
    (element,) = parse_xfcc('By=p;Hash=;Cert="";Chain=;Subject="";URI=;DNS=')
    assert element == XfccElement(by=("p",))


def test_unknown_keys_are_ignored() -> None:
    (element,) = parse_xfcc('By=p;Future="a,b;c";X-Thing=1;URI=spiffe://a/x')
    assert element == XfccElement(by=("p",), uris=("spiffe://a/x",))


def test_optional_whitespace_around_separators() -> None:
    first, second = parse_xfcc('By=p ; Subject="s"  ;URI=u , By=q')
    assert first == XfccElement(by=("p",), subject="s", uris=("u",))
    assert second == XfccElement(by=("q",))
    (element,) = parse_xfcc('Subject="s" ;URI=u')
    assert element == XfccElement(subject="s", uris=("u",))


def test_element_limit_is_configurable() -> None:
    header = ",".join(["By=p"] * 3)
    assert len(parse_xfcc(header, max_elements=3)) == 3
    with pytest.raises(MalformedCredentials, match="more than 2 elements"):
        parse_xfcc(header, max_elements=2)
    assert len(parse_xfcc(",".join(["By=p"] * MAX_XFCC_ELEMENTS))) == MAX_XFCC_ELEMENTS


def test_pair_limit_is_inclusive() -> None:
    (element,) = parse_xfcc(";".join(["By=p"] * _xfcc.MAX_XFCC_PAIRS))
    assert element.by == ("p",) * _xfcc.MAX_XFCC_PAIRS


# --- malformed headers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "",
        "By",
        "By=p;Hash",
        "=value",
        "By=p;",
        "By=p,",
        "By=p,,By=q",
        ";By=p",
        'Subject="unterminated',
        r'Subject="ends with escaped quote\"',
        'Subject="a"b',
        'Subject="a"xURI=spiffe://a/x',
        'By=a"b"',
        'By=a"URI=spiffe://a/x',
        "By p=q",
        "Hash=a;Hash=b",
        "Cert=a;CERT=b",
        "Subject=a;Subject=",
        "Cert=%zz",
        "Cert=%4",
        "Cert=-----BEGIN CERTIFICATE-----",
        "Cert=%FF%FE",
        "By=caf\u00e9",
        ";".join(["By=p"] * 65),
        ",".join(["By=p"] * (MAX_XFCC_ELEMENTS + 1)),
    ],
)
def test_malformed_headers(header: str) -> None:
    with pytest.raises(MalformedCredentials):
        parse_xfcc(header)


def test_quoting_errors_are_named() -> None:
    with pytest.raises(MalformedCredentials, match="unterminated quoted value"):
        parse_xfcc('By=p;Subject="unterminated')
    with pytest.raises(MalformedCredentials, match="text after a closing quote"):
        parse_xfcc('Subject="a"xBy=p')


def test_size_bound() -> None:
    header = "By=" + "p" * 100
    assert parse_xfcc(header, max_bytes=len(header))
    with pytest.raises(MalformedCredentials, match="exceeds 100 bytes"):
        parse_xfcc(header, max_bytes=100)
    with pytest.raises(MalformedCredentials, match="exceeds 16384 bytes"):
        parse_xfcc("By=" + "p" * 16_382)


# --- element -> DER chain ------------------------------------------------------------------


def test_der_chain_from_cert(chain: tuple[x509.Certificate, ...]) -> None:
    leaf = chain[0]
    element = XfccElement(
        cert_pem=pem(leaf),
        hash=hashlib.sha256(der(leaf)).hexdigest(),
        uris=("spiffe://example.org/web",),
    )
    assert element.der_chain() == (der(leaf),)


def test_der_chain_prefers_chain(chain: tuple[x509.Certificate, ...]) -> None:
    full = "".join(pem(c) for c in chain)
    expected = tuple(der(c) for c in chain)
    assert XfccElement(chain_pem=full).der_chain() == expected
    assert XfccElement(cert_pem=pem(chain[0]), chain_pem=full).der_chain() == expected


def test_hash_is_compared_case_insensitively(chain: tuple[x509.Certificate, ...]) -> None:
    digest = hashlib.sha256(der(chain[0])).hexdigest().upper()
    assert XfccElement(cert_pem=pem(chain[0]), hash=digest).der_chain()


def test_parsed_header_round_trip(chain: tuple[x509.Certificate, ...]) -> None:
    leaf = chain[0]
    header = (
        f"By=spiffe://example.org/envoy;Hash={hashlib.sha256(der(leaf)).hexdigest()};"
        f'Cert="{encoded(pem(leaf))}";Subject="O=zerotrust dev SVID";'
        "URI=spiffe://example.org/web;DNS=web.example.org"
    )
    (element,) = parse_xfcc(header)
    assert element.der_chain() == (der(leaf),)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "carries no certificate"),
        ({"hash": "0" * 64}, "Hash does not match"),
        ({"hash": "not hex \u00e9"}, "Hash does not match"),
        ({"uris": ("spiffe://example.org/other",)}, "URI does not match"),
        ({"uris": ("spiffe://example.org/web", "spiffe://example.org/x")}, "URI does not match"),
    ],
)
def test_cross_check_failures(
    chain: tuple[x509.Certificate, ...], fields: dict[str, object], message: str
) -> None:
    if fields:
        fields = {"cert_pem": pem(chain[0]), **fields}
    with pytest.raises(MalformedCredentials, match=message):
        XfccElement(**fields).der_chain()  # type: ignore[arg-type]


def test_parsed_elements_name_every_key_they_carried() -> None:
    (element,) = parse_xfcc("By=p;Hash=;URI=;DNS=d.example;Future=x")
    assert element.keys == {"by", "hash", "uri", "dns", "future"}
    assert (element.hash, element.uris, element.dns) == (None, (), ("d.example",))
    assert element == XfccElement(by=("p",), dns=("d.example",))  # keys are not compared
    assert XfccElement().keys == frozenset()


def test_an_empty_uri_says_the_certificate_has_no_uri_san(
    chain: tuple[x509.Certificate, ...], ca: DevCA
) -> None:
    import datetime as dt

    # Envoy writes "URI=" for a certificate without a URI SAN, and only then
    now = dt.datetime.now(dt.timezone.utc)
    certs, _ = ca.issue_unchecked_leaf(
        uri_sans=[], not_before=now, not_after=now + dt.timedelta(hours=1)
    )
    (element,) = parse_xfcc(f'Cert="{encoded(pem(certs[0]))}";URI=')
    assert element.der_chain() == (der(certs[0]),)
    (element,) = parse_xfcc(f'Cert="{encoded(pem(chain[0]))}";URI=')
    with pytest.raises(MalformedCredentials, match="URI does not match"):
        element.der_chain()
    (element,) = parse_xfcc(f'Cert="{encoded(pem(chain[0]))}"')  # no URI key: nothing to check
    assert element.der_chain() == (der(chain[0]),)


@pytest.mark.parametrize(
    "dns",
    [
        "DNS=web.example.org",
        "DNS=web.example.org;DNS=web.example.org",
        "DNS=other.example.org",
        "DNS=web.example.org;DNS=other.example.org",
        "DNS=",
    ],
)
def test_dns_values_must_be_the_certificates_dns_sans(
    chain: tuple[x509.Certificate, ...], dns: str
) -> None:
    (element,) = parse_xfcc(f'Cert="{encoded(pem(chain[0]))}";{dns}')
    if dns == "DNS=web.example.org":
        assert element.der_chain() == (der(chain[0]),)
    else:
        with pytest.raises(MalformedCredentials, match="DNS does not match"):
            element.der_chain()


def test_cert_must_be_first_of_chain(chain: tuple[x509.Certificate, ...], ca: DevCA) -> None:
    other = ca.issue_svid("spiffe://example.org/web").leaf
    element = XfccElement(cert_pem=pem(other), chain_pem="".join(pem(c) for c in chain))
    with pytest.raises(MalformedCredentials, match="not the first certificate"):
        element.der_chain()


def test_uri_check_without_san(ca: DevCA) -> None:
    import datetime as dt

    now = dt.datetime.now(dt.timezone.utc)
    certs, _ = ca.issue_unchecked_leaf(
        uri_sans=[], not_before=now, not_after=now + dt.timedelta(hours=1)
    )
    with pytest.raises(MalformedCredentials, match="URI does not match"):
        XfccElement(cert_pem=pem(certs[0]), uris=("spiffe://example.org/web",)).der_chain()


def test_malformed_extensions_are_malformed_credentials() -> None:
    class BrokenCertificate:
        @property
        def extensions(self) -> x509.Extensions:
            raise ValueError("duplicate extension")

    with pytest.raises(MalformedCredentials, match="malformed extensions"):
        _xfcc._sans(BrokenCertificate())  # type: ignore[arg-type]


def _key_pem() -> str:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()


@pytest.mark.parametrize(
    ("make_pem", "message"),
    [
        (lambda leaf: _key_pem(), "not a CERTIFICATE"),
        (lambda leaf: "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", "base64"),
        (lambda leaf: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "X.509"),
        (lambda leaf: pem(leaf).replace("-----END CERTIFICATE-----", ""), "unterminated"),
        (lambda leaf: "garbage\n" + pem(leaf), "outside its PEM blocks"),
        (lambda leaf: pem(leaf) + "trailer", "outside its PEM blocks"),
        (lambda leaf: pem(leaf) * 2, "more than 1 certificate"),
        (lambda leaf: "   \n", "no certificate"),
    ],
)
def test_cert_that_is_not_one_certificate(
    chain: tuple[x509.Certificate, ...], make_pem: object, message: str
) -> None:
    text = make_pem(chain[0])  # type: ignore[operator]
    with pytest.raises(MalformedCredentials, match=message):
        XfccElement(cert_pem=text).der_chain()


def test_chain_with_too_many_certificates(chain: tuple[x509.Certificate, ...]) -> None:
    assert len(XfccElement(chain_pem=pem(chain[0]) * 10).der_chain()) == 10
    with pytest.raises(MalformedCredentials, match="more than 10"):
        XfccElement(chain_pem=pem(chain[0]) * 11).der_chain()


# --- properties ----------------------------------------------------------------------------

XFCC_ALPHABET = st.sampled_from(list('=;,"\\ \t%ByHashCertURIDNSubjecthain:/.-0123456789aF'))


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), st.text(XFCC_ALPHABET)))
def test_arbitrary_text_raises_only_malformed_credentials(header: str) -> None:
    try:
        elements = parse_xfcc(header)
    except MalformedCredentials:
        return
    for element in elements:  # noise never carries a real certificate
        with pytest.raises(MalformedCredentials):
            element.der_chain()


@settings(max_examples=200, deadline=None)
@given(st.text(), st.text(), st.one_of(st.none(), st.text()))
def test_arbitrary_element_fields_raise_only_malformed_credentials(
    cert: str, chain_pem: str, digest: str | None
) -> None:
    with pytest.raises(MalformedCredentials):
        XfccElement(cert_pem=cert, chain_pem=chain_pem, hash=digest).der_chain()


def _quote(value: str) -> str:
    return '"' + value.replace('"', '\\"') + '"'


_VALUE = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="\\"), min_size=1
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "by": st.lists(_VALUE, max_size=2),
                "subject": st.one_of(st.none(), _VALUE),
                "uris": st.lists(_VALUE, max_size=3),
                "dns": st.lists(_VALUE, max_size=3),
            }
        ),
        min_size=1,
        max_size=4,
    )
)
def test_quoted_fields_round_trip(elements: list[dict[str, object]]) -> None:
    """Values quoted the way Envoy quotes them parse back to exactly what was written."""
    parts = []
    for fields in elements:
        pairs = [f"By={_quote(v)}" for v in fields["by"]]  # type: ignore[attr-defined]
        if fields["subject"] is not None:
            pairs.append(f"Subject={_quote(fields['subject'])}")  # type: ignore[arg-type]
        pairs += [f"URI={_quote(v)}" for v in fields["uris"]]  # type: ignore[attr-defined]
        pairs += [f"DNS={_quote(v)}" for v in fields["dns"]]  # type: ignore[attr-defined]
        if not pairs:
            pairs, fields["by"] = ["By=p"], ["p"]
        parts.append(";".join(pairs))
    parsed = parse_xfcc(",".join(parts))
    assert len(parsed) == len(elements)
    for element, fields in zip(parsed, elements, strict=True):
        assert element.by == tuple(fields["by"])  # type: ignore[arg-type]
        assert element.subject == fields["subject"]
        assert element.uris == tuple(fields["uris"])  # type: ignore[arg-type]
        assert element.dns == tuple(fields["dns"])  # type: ignore[arg-type]
