"""SPIFFE Trust Domain and Bundle section 4, X509-SVID section 6 and JWT-SVID section 6: the
bundle documents go-spiffe's spiffebundle tests read (testdata/spiffebundle_*.json) and the
one SPIRE's tests publish for a federated trust domain.

One deliberate difference with go-spiffe: an ``x509-svid`` entry with several ``x5c`` values
is read (its first value), as X509-SVID 6.2 says ("all but the first MUST be ignored"), where
go-spiffe refuses the document.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from zerotrust import TrustBundle
from zerotrust.errors import BundleError

# go-spiffe v2/bundle/spiffebundle/testdata: a P-384 CA for spiffe://local
GO_SPIFFE_X5C = (
    "MIIBzDCCAVOgAwIBAgIJAJM4DhRH0vmuMAoGCCqGSM49BAMEMB4xCzAJBgNVBAYTAlVTMQ8wDQYDVQQKDAZTUElGRkUw"
    "HhcNMTgwNTEzMTkzMzQ3WhcNMjMwNTEyMTkzMzQ3WjAeMQswCQYDVQQGEwJVUzEPMA0GA1UECgwGU1BJRkZFMHYwEAYH"
    "KoZIzj0CAQYFK4EEACIDYgAEWjB+nSGSxIYiznb84xu5WGDZj80nL7W1c3zf48Why0ma7Y7mCBKzfQkrgDguI4j0Z+0/"
    "tDH/r8gtOtLLrIpuMwWHoe4vbVBFte1vj6Xt6WeE8lXwcCvLs/mcmvPqVK9jo10wWzAdBgNVHQ4EFgQUh6XzV6LwNazA"
    "+GTEVOdu07o5yOgwDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8BAf8EBAMCAQYwGQYDVR0RBBIwEIYOc3BpZmZlOi8vbG9j"
    "YWwwCgYIKoZIzj0EAwQDZwAwZAIwE4Me13qMC9i6Fkx0h26y09QZIbuRqA9puLg9AeeAAyo5tBzRl1YL0KNEp02VKSYJ"
    "AjBdeJvqjJ9wW55OGj1JQwDFD7kWeEB6oMlwPbI/5hEY3azJi16I0uN1JSYTSWGSqWc="
)
GO_SPIFFE_X509_ENTRY = {
    "use": "x509-svid",
    "kty": "EC",
    "crv": "P-384",
    "x": "WjB-nSGSxIYiznb84xu5WGDZj80nL7W1c3zf48Why0ma7Y7mCBKzfQkrgDguI4j0",
    "y": "Z-0_tDH_r8gtOtLLrIpuMwWHoe4vbVBFte1vj6Xt6WeE8lXwcCvLs_mcmvPqVK9j",
    "x5c": [GO_SPIFFE_X5C],
}
GO_SPIFFE_JWT_KID = "C6vs25welZOx6WksNYfbMfiw9l96pMnD"
GO_SPIFFE_JWT_ENTRY = {
    "use": "jwt-svid",
    "kty": "EC",
    "kid": GO_SPIFFE_JWT_KID,
    "crv": "P-256",
    "x": "ngLYQnlfF6GsojUwqtcEE3WgTNG2RUlsGhK73RNEl5k",
    "y": "tKbiDSUSsQ3F1P7wteeHNXIcU-cx6CgSbroeQrQHTLM",
}
# spiffebundle_valid_1.json
VALID_1: dict[str, Any] = {"keys": [GO_SPIFFE_X509_ENTRY, GO_SPIFFE_JWT_ENTRY]}

# SPIRE's tests: a federated domain's bundle, a P-256 CA for spiffe://domain1.test
SPIRE_X5C = (
    "MIIBKjCB0aADAgECAgEBMAoGCCqGSM49BAMCMAAwIhgPMDAwMTAxMDEwMDAwMDBaGA85OTk5MTIzMTIzNTk1OVowADBZ"
    "MBMGByqGSM49AgEGCCqGSM49AwEHA0IABHyvsCk5yi+yhSzNu5aquQwvm8a1Wh+qw1fiHAkhDni+wq+g3TQWxYlV51TC"
    "PH030yXsRxvujD4hUUaIQrXk4KKjODA2MA8GA1UdEwEB/wQFMAMBAf8wIwYDVR0RAQH/BBkwF4YVc3BpZmZlOi8vZG9t"
    "YWluMS50ZXN0MAoGCCqGSM49BAMCA0gAMEUCIA2dO09Xmakw2ekuHKWC4hBhCkpr5qY4bI8YUcXfxg/1AiEA67kMyH7b"
    "Qnr7OVLUrL+b9ylAdZglS5kKnYigmwDh+/U="
)
SPIRE_POINT = {
    "kty": "EC",
    "crv": "P-256",
    "x": "fK-wKTnKL7KFLM27lqq5DC-bxrVaH6rDV-IcCSEOeL4",
    "y": "wq-g3TQWxYlV51TCPH030yXsRxvujD4hUUaIQrXk4KI",
}
SPIRE_BUNDLE = {
    "keys": [
        {"use": "x509-svid", **SPIRE_POINT, "x5c": [SPIRE_X5C]},
        {"use": "jwt-svid", "kid": "KID", **SPIRE_POINT},
    ],
    "spiffe_refresh_hint": 60,
    "spiffe_sequence": 1,
}


def der(value: str) -> bytes:
    return base64.b64decode(value)


def test_go_spiffe_valid_1() -> None:
    bundle = TrustBundle.from_jwks("local", VALID_1)
    [authority] = bundle.x509_authorities
    assert authority.public_bytes(Encoding.DER) == der(GO_SPIFFE_X5C)
    assert list(bundle.jwt_authorities) == [GO_SPIFFE_JWT_KID]
    assert dict(bundle.jwt_authorities[GO_SPIFFE_JWT_KID]) == GO_SPIFFE_JWT_ENTRY
    assert (bundle.refresh_hint, bundle.sequence_number) == (None, None)


@pytest.mark.parametrize("use", [None, "invalid", "JWT-SVID", "sig"])
def test_go_spiffe_missing_or_unrecognized_use_is_ignored(use: str | None) -> None:
    # spiffebundle_missing_use.json, spiffebundle_unrecognized_use.json (Trust Domain and
    # Bundle 4.2.2: "Clients encountering unknown use values MUST ignore the entire JWK element";
    # the values are case sensitive)
    entry: dict[str, Any] = {k: v for k, v in GO_SPIFFE_JWT_ENTRY.items() if k != "use"}
    if use is not None:
        entry["use"] = use
    bundle = TrustBundle.from_jwks("local", {"keys": [GO_SPIFFE_X509_ENTRY, entry]})
    assert len(bundle.x509_authorities) == 1
    assert not bundle.jwt_authorities


def test_go_spiffe_missing_kid_is_refused() -> None:
    # spiffebundle_missing_kid.json (JWT-SVID 6.1: "the kid parameter ... MUST be set")
    entry = {k: v for k, v in GO_SPIFFE_JWT_ENTRY.items() if k != "kid"}
    with pytest.raises(BundleError, match="kid"):
        TrustBundle.from_jwks("local", {"keys": [GO_SPIFFE_X509_ENTRY, entry]})


def test_go_spiffe_multiple_x509_first_value_counts() -> None:
    # spiffebundle_multiple_x509.json; X509-SVID 6.2: "If the x5c parameter contains multiple
    # values, then all but the first MUST be ignored"
    doc = copy.deepcopy(VALID_1)
    doc["keys"][0]["x5c"] = [GO_SPIFFE_X5C, GO_SPIFFE_X5C]
    bundle = TrustBundle.from_jwks("local", doc)
    assert bundle == TrustBundle.from_jwks("local", VALID_1)


def test_unknown_key_type_is_ignored() -> None:
    # Trust Domain and Bundle 4.2.1: "Clients encountering an unknown key type MUST ignore the
    # entire JWK element"
    odd = {**GO_SPIFFE_JWT_ENTRY, "kty": "XYZ", "kid": "other"}
    bundle = TrustBundle.from_jwks("local", {"keys": [GO_SPIFFE_X509_ENTRY, odd]})
    assert not bundle.jwt_authorities


def test_spire_federated_bundle_round_trips() -> None:
    bundle = TrustBundle.from_jwks("domain1.test", SPIRE_BUNDLE)
    assert (bundle.refresh_hint, bundle.sequence_number) == (60, 1)
    assert list(bundle.jwt_authorities) == ["KID"]
    [authority] = bundle.x509_authorities
    assert authority.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://domain1.test"]
    assert bundle.to_jwks() == SPIRE_BUNDLE
    assert TrustBundle.from_jwks("domain1.test", bundle.to_jwks()) == bundle


@pytest.mark.parametrize(
    ("name", "value"),
    [("spiffe_sequence", -1), ("spiffe_sequence", 1.5), ("spiffe_refresh_hint", "60")],
)
def test_sequence_and_refresh_hint_are_integers(name: str, value: object) -> None:
    # Trust Domain and Bundle 4.1.1 and 4.1.2: integers (a sequence number only increases)
    with pytest.raises(BundleError, match=name):
        TrustBundle.from_jwks("domain1.test", {**SPIRE_BUNDLE, name: value})


def test_sequence_numbers_have_64_bits() -> None:
    # 4.1.1: "at least 64 bits of precision"
    bundle = TrustBundle.from_jwks("domain1.test", {**SPIRE_BUNDLE, "spiffe_sequence": 2**64 - 1})
    assert bundle.sequence_number == 2**64 - 1
