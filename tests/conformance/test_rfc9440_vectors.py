"""RFC 9440 Appendix A (``Client-Cert`` and ``Client-Cert-Chain``) and the RFC 8941 rules for
their values: an sf-binary item (section 3.3.5, parsed per section 4.2.7) and an sf-list of
them (section 3.1, parsed per section 4.2.1).

The Appendix A certificates expired in 2021, so they cannot authenticate: their header values
are checked at the parsing level the project exposes, and a chain of the example's shape (the
intermediate and the root in ``Client-Cert-Chain``) is built from the test CA to authenticate.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from zerotrust import BundleSet, SpiffeId, verify_x509_svid
from zerotrust.authn.proxy import (
    TrustedProxies,
    extract_forwarded_cert,
    parse_client_cert,
    parse_client_cert_chain,
)
from zerotrust.dev import DevCA
from zerotrust.errors import MalformedCredentials, SvidProfileViolation

# RFC 9440 Appendix A, figure 2: the Client-Cert field value (the display line breaks removed)
CLIENT_CERT = (
    ":MIIBqDCCAU6gAwIBAgIBBzAKBggqhkjOPQQDAjA6MRswGQYDVQQKDBJ"
    "MZXQncyBBdXRoZW50aWNhdGUxGzAZBgNVBAMMEkxBIEludGVybWVkaWF0ZSBDQTAeFw0"
    "yMDAxMTQyMjU1MzNaFw0yMTAxMjMyMjU1MzNaMA0xCzAJBgNVBAMMAkJDMFkwEwYHKoZ"
    "Izj0CAQYIKoZIzj0DAQcDQgAE8YnXXfaUgmnMtOXU/IncWalRhebrXmckC8vdgJ1p5Be"
    "5F/3YC8OthxM4+k1M6aEAEFcGzkJiNy6J84y7uzo9M6NyMHAwCQYDVR0TBAIwADAfBgN"
    "VHSMEGDAWgBRm3WjLa38lbEYCuiCPct0ZaSED2DAOBgNVHQ8BAf8EBAMCBsAwEwYDVR0"
    "lBAwwCgYIKwYBBQUHAwIwHQYDVR0RAQH/BBMwEYEPYmRjQGV4YW1wbGUuY29tMAoGCCq"
    "GSM49BAMCA0gAMEUCIBHda/r1vaL6G3VliL4/Di6YK0Q6bMjeSkC3dFCOOB8TAiEAx/k"
    "HSB4urmiZ0NX5r5XarmPk0wmuydBVoU4hBVZ1yhk=:"
)
# RFC 9440 Appendix A, figure 3: the Client-Cert-Chain field value (the intermediate, then the
# root), the display line breaks removed
CLIENT_CERT_CHAIN = (
    ":MIIB5jCCAYugAwIBAgIBFjAKBggqhkjOPQQDAjBWMQsw"
    "CQYDVQQGEwJVUzEbMBkGA1UECgwSTGV0J3MgQXV0aGVudGljYXRlMSowKAYDVQQ"
    "DDCFMZXQncyBBdXRoZW50aWNhdGUgUm9vdCBBdXRob3JpdHkwHhcNMjAwMTE0Mj"
    "EzMjMwWhcNMzAwMTExMjEzMjMwWjA6MRswGQYDVQQKDBJMZXQncyBBdXRoZW50a"
    "WNhdGUxGzAZBgNVBAMMEkxBIEludGVybWVkaWF0ZSBDQTBZMBMGByqGSM49AgEG"
    "CCqGSM49AwEHA0IABJf+aA54RC5pyLAR5yfXVYmNpgd+CGUTDp2KOGhc0gK91zx"
    "hHesEYkdXkpS2UN8Kati+yHtWCV3kkhCngGyv7RqjZjBkMB0GA1UdDgQWBBRm3W"
    "jLa38lbEYCuiCPct0ZaSED2DAfBgNVHSMEGDAWgBTEA2Q6eecKu9g9yb5glbkhh"
    "VINGDASBgNVHRMBAf8ECDAGAQH/AgEAMA4GA1UdDwEB/wQEAwIBhjAKBggqhkjO"
    "PQQDAgNJADBGAiEA5pLvaFwRRkxomIAtDIwg9D7gC1xzxBl4r28EzmSO1pcCIQC"
    "JUShpSXO9HDIQMUgH69fNDEMHXD3RRX5gP7kuu2KGMg==:, :MIICBjCCAaygAw"
    "IBAgIJAKS0yiqKtlhoMAoGCCqGSM49BAMCMFYxCzAJBgNVBAYTAlVTMRswGQYDV"
    "QQKDBJMZXQncyBBdXRoZW50aWNhdGUxKjAoBgNVBAMMIUxldCdzIEF1dGhlbnRp"
    "Y2F0ZSBSb290IEF1dGhvcml0eTAeFw0yMDAxMTQyMTI1NDVaFw00MDAxMDkyMTI"
    "1NDVaMFYxCzAJBgNVBAYTAlVTMRswGQYDVQQKDBJMZXQncyBBdXRoZW50aWNhdG"
    "UxKjAoBgNVBAMMIUxldCdzIEF1dGhlbnRpY2F0ZSBSb290IEF1dGhvcml0eTBZM"
    "BMGByqGSM49AgEGCCqGSM49AwEHA0IABFoaHU+Z5bPKmGzlYXtCf+E6HYj62fOR"
    "aHDOrt+yyh3H/rTcs7ynFfGn+gyFsrSP3Ez88rajv+U2NfD0o0uZ4PmjYzBhMB0"
    "GA1UdDgQWBBTEA2Q6eecKu9g9yb5glbkhhVINGDAfBgNVHSMEGDAWgBTEA2Q6ee"
    "cKu9g9yb5glbkhhVINGDAPBgNVHRMBAf8EBTADAQH/MA4GA1UdDwEB/wQEAwIBh"
    "jAKBggqhkjOPQQDAgNIADBFAiEAmAeg1ycKHriqHnaD4M/UDBpQRpkmdcRFYGMg"
    "1Qyrkx4CIB4ivz3wQcQkGhcsUZ1SOImd/lq1Q0FLf09rGfLQPWDc:"
)
PROXY = "10.1.2.3"


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def sf(data: bytes) -> str:
    return ":" + base64.b64encode(data).decode() + ":"


def content(member: str) -> str:
    """The base64 between a byte sequence's colons."""
    return member.strip(" ").strip(":")


def request(**values: list[str]) -> Callable[[str], list[str]]:
    """``headers(name)`` for a request carrying these field lines."""
    table = {name.replace("_", "-"): lines for name, lines in values.items()}
    return lambda name: table.get(name, [])


def test_appendix_a_client_cert() -> None:
    leaf = parse_client_cert(CLIENT_CERT)
    assert leaf == base64.b64decode(content(CLIENT_CERT), validate=True)
    cert = x509.load_der_x509_certificate(leaf)
    assert cert.subject.rfc4514_string() == "CN=BC"
    assert cert.serial_number == 7


def test_appendix_a_client_cert_chain() -> None:
    intermediate, root = parse_client_cert_chain(CLIENT_CERT_CHAIN)
    members = [base64.b64decode(content(m), validate=True) for m in CLIENT_CERT_CHAIN.split(",")]
    assert [intermediate, root] == members
    # section 2.2: each certificate directly certifies the one before it, the leaf first
    leaf = x509.load_der_x509_certificate(parse_client_cert(CLIENT_CERT))
    certs = [x509.load_der_x509_certificate(c) for c in (intermediate, root)]
    leaf.verify_directly_issued_by(certs[0])
    certs[0].verify_directly_issued_by(certs[1])
    certs[1].verify_directly_issued_by(certs[1])


def test_appendix_a_chain_across_field_lines() -> None:
    # RFC 8941 section 4.2: a list's field lines are combined with commas before parsing
    first, second = CLIENT_CERT_CHAIN.split(", ")
    assert parse_client_cert_chain([first, second]) == parse_client_cert_chain(CLIENT_CERT_CHAIN)


def test_appendix_a_display_line_breaks_are_not_part_of_the_value() -> None:
    # the figures fold the value "for display and formatting purposes only": whitespace inside
    # a byte sequence is not base64 (RFC 8941 section 4.2.7, step 6)
    folded = CLIENT_CERT[:60] + "\n " + CLIENT_CERT[60:]
    with pytest.raises(MalformedCredentials, match="outside base64"):
        parse_client_cert(folded)
    with pytest.raises(MalformedCredentials, match="outside base64"):
        parse_client_cert(CLIENT_CERT[:60] + " " + CLIENT_CERT[60:])


def test_appendix_a_through_a_trusted_proxy_does_not_authenticate() -> None:
    config = TrustedProxies([PROXY], header="client-cert")
    sent = request(client_cert=[CLIENT_CERT], client_cert_chain=[CLIENT_CERT_CHAIN])
    result = extract_forwarded_cert(sent, PROXY, None, config)
    assert result.source == "client-cert"
    assert result.chain == (
        parse_client_cert(CLIENT_CERT),
        *parse_client_cert_chain(CLIENT_CERT_CHAIN),
    )
    # the forwarded chain is verified like a direct peer's: an e-mail SAN, no SPIFFE ID (and
    # expired, from another CA)
    bundles = BundleSet([DevCA.create("example.org").bundle])
    with pytest.raises(SvidProfileViolation, match="no URI SAN"):
        verify_x509_svid(result.chain, bundles, role="client")


def test_a_chain_of_the_appendix_a_shape_authenticates() -> None:
    # as in Appendix A: the leaf in Client-Cert; the intermediate, then the root, in the chain
    ca = DevCA.create("example.org", intermediate=True)
    leaf, intermediate = ca.issue_svid("spiffe://example.org/web").cert_chain
    root = ca.root_certificate
    config = TrustedProxies([PROXY], header="client-cert")
    for chain_lines in (
        [f"{sf(der(intermediate))}, {sf(der(root))}"],
        [sf(der(intermediate)), sf(der(root))],
    ):
        sent = request(client_cert=[sf(der(leaf))], client_cert_chain=chain_lines)
        result = extract_forwarded_cert(sent, PROXY, None, config)
        assert result.chain == (der(leaf), der(intermediate), der(root))
        peer = verify_x509_svid(result.chain, BundleSet([ca.bundle]), role="client")
        assert peer.spiffe_id == SpiffeId.parse("spiffe://example.org/web")


# --- RFC 8941: sf-binary (sections 3.3.5 and 4.2.7), parameters (3.1.2), items (4.2) --------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(CLIENT_CERT, id="as-sent"),
        pytest.param(CLIENT_CERT.replace("=:", ":"), id="padding-synthesized"),
        pytest.param(f"  {CLIENT_CERT}  ", id="surrounding-sp"),
        pytest.param(f"{CLIENT_CERT};a", id="boolean-parameter"),
        pytest.param(f'{CLIENT_CERT};a=1;b=?0;c=tok/en;d="s";e=-1.5;f=:AAE=:', id="parameters"),
        pytest.param(f"{CLIENT_CERT}; a=1", id="sp-after-semicolon"),
        pytest.param(f"{CLIENT_CERT};a=1;a=2", id="repeated-parameter"),
    ],
)
def test_sf_binary_item_accepted(value: str) -> None:
    assert parse_client_cert(value) == base64.b64decode(content(CLIENT_CERT), validate=True)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(content(CLIENT_CERT), id="no-colons"),
        pytest.param(CLIENT_CERT[:-1], id="no-closing-colon"),
        pytest.param(CLIENT_CERT[1:], id="no-opening-colon"),
        pytest.param("::", id="empty-byte-sequence-is-no-certificate"),
        pytest.param(
            ":" + base64.urlsafe_b64encode(b"\xfb\xff" * 300).decode() + ":", id="base64url"
        ),
        pytest.param(CLIENT_CERT.replace("=:", "==:"), id="excess-padding"),
        pytest.param(CLIENT_CERT[:30] + "=" + CLIENT_CERT[30:], id="inner-padding"),
        pytest.param(CLIENT_CERT[:30] + "\t" + CLIENT_CERT[30:], id="inner-tab"),
        pytest.param(f'"{content(CLIENT_CERT)}"', id="sf-string"),
        pytest.param(f"{CLIENT_CERT} ;a=1", id="sp-before-semicolon"),
        pytest.param(f"{CLIENT_CERT};a =1", id="sp-before-equals"),
        pytest.param(f"{CLIENT_CERT};A=1", id="uppercase-parameter-key"),
        pytest.param(f"{CLIENT_CERT};1a=1", id="digit-first-parameter-key"),
        pytest.param(f"{CLIENT_CERT};a=1.2345", id="four-fraction-digits"),
        pytest.param(f"{CLIENT_CERT};a=1234567890123456", id="sixteen-digit-integer"),
        pytest.param(f"{CLIENT_CERT}, {CLIENT_CERT}", id="a-list-is-not-an-item"),
        pytest.param(f"({CLIENT_CERT})", id="inner-list"),
    ],
)
def test_sf_binary_item_refused(value: str) -> None:
    with pytest.raises(MalformedCredentials):
        parse_client_cert(value)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(f"{CLIENT_CERT_CHAIN},", id="trailing-comma"),
        pytest.param(f",{CLIENT_CERT_CHAIN}", id="leading-comma"),
        pytest.param(CLIENT_CERT_CHAIN.replace(", ", ",, "), id="empty-member"),
        pytest.param(CLIENT_CERT_CHAIN.replace(", ", " "), id="no-comma"),
        pytest.param(f"({CLIENT_CERT_CHAIN.replace(', ', ' ')})", id="inner-list"),
        pytest.param(f"{CLIENT_CERT_CHAIN}, tok", id="token-member"),
        pytest.param(f"{CLIENT_CERT_CHAIN}, ?1", id="boolean-member"),
    ],
)
def test_sf_list_refused(value: str) -> None:
    with pytest.raises(MalformedCredentials):
        parse_client_cert_chain(value)


def test_sf_list_whitespace_and_parameters() -> None:
    # RFC 8941 section 4.2.1: OWS around the commas, parameters on each member
    expected = parse_client_cert_chain(CLIENT_CERT_CHAIN)
    intermediate, root = CLIENT_CERT_CHAIN.split(", ")
    assert parse_client_cert_chain(f"{intermediate};x=1 ,\t{root};y") == expected
    # an empty field value is an empty list
    assert parse_client_cert_chain(" ") == ()


@pytest.mark.parametrize(
    ("display", "valid"),
    [
        pytest.param('%"caf%c3%a9"', True, id="utf-8"),
        pytest.param('%"%e2%82%ac 100"', True, id="three-byte-utf-8"),
        pytest.param('%"%ff"', False, id="not-utf-8"),
        pytest.param('%"caf%c3"', False, id="truncated-utf-8"),
        pytest.param('%"%c0%af"', False, id="overlong-utf-8"),
        pytest.param('%"%ed%a0%80"', False, id="surrogate"),
    ],
)
def test_display_string_parameter_must_be_utf_8(display: str, valid: bool) -> None:
    # RFC 9651 section 4.2.10: a display string whose percent-decoded bytes are not UTF-8
    # fails parsing, and with it the whole field
    value = f"{CLIENT_CERT};a={display}"
    if valid:
        assert parse_client_cert(value) == parse_client_cert(CLIENT_CERT)
    else:
        with pytest.raises(MalformedCredentials, match="invalid parameter value"):
            parse_client_cert(value)
