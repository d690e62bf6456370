"""RFC 9449 (DPoP): the proofs of figures 2 (section 4.1) and 13 (section 7.1), the key's
thumbprint (``jkt``, section 6.1) and the access token hash (``ath``, section 7.1).

The figures' signatures are real: the proofs verify at their own ``iat``.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from zerotrust import FixedClock, Request
from zerotrust.authn.binding import (
    DPoPConfig,
    DPoPProof,
    bound_jkt,
    check_dpop_binding,
    verify_dpop_proof,
)
from zerotrust.authn.credentials import extract_credentials
from zerotrust.errors import InvalidDPoPProof, TokenBindingMismatch
from zerotrust.tokens import JWK, PrivateJWK, TokenIssuer, TokenVerifier
from zerotrust.tokens._b64 import b64url_encode

# RFC 9449 figure 4 (the decoded header of figures 2 and 13): the proof key
PROOF_JWK = {
    "kty": "EC",
    "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
    "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
    "crv": "P-256",
}
# RFC 9449 section 6.1 (figure 7's cnf): its JWK SHA-256 thumbprint
JKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
# RFC 9449 section 7.1: the access token of figure 12 and its hash, figure 13's ath
ACCESS_TOKEN = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
ATH = "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"

HEADER = (
    "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoU"
    "klDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWc"
    "lUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19"
)
# RFC 9449 figure 2: the proof of a token request, POST https://server.example.com/token
TOKEN_REQUEST_PROOF = (
    HEADER
    + ".eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbG"
    "UuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ"
    ".2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg"
)
TOKEN_REQUEST = {"method": "POST", "url": "https://server.example.com/token"}
TOKEN_REQUEST_IAT = 1562262616
# RFC 9449 figure 13: the proof of a protected resource request, with ath
RESOURCE_PROOF = (
    HEADER
    + ".eyJqdGkiOiJlMWozVl9iS2ljOC1MQUVCIiwiaHRtIjoiR0VUIiwiaHR1IjoiaHR0cHM6Ly9yZXNvdXJjZS5leGFtcG"
    "xlLm9yZy9wcm90ZWN0ZWRyZXNvdXJjZSIsImlhdCI6MTU2MjI2MjYxOCwiYXRoIjoiZlVIeU8ycjJaM0RaNTNFc05y"
    "V0JiMHhXWG9hTnk1OUlpS0NBcWtzbVFFbyJ9"
    ".2oW9RP35yRqzhrtNP86L-Ey71EOptxRimPPToA1plemAgR6pxHF8y6-yqyVnmcw6Fy1dqd-jfxSYoMxhAJpLjA"
)
RESOURCE_REQUEST = {"method": "GET", "url": "https://resource.example.org/protectedresource"}
RESOURCE_IAT = 1562262618

CONFIG = DPoPConfig()


def test_section_6_1_jkt_is_the_proof_keys_thumbprint() -> None:
    assert JWK.from_dict(PROOF_JWK).thumbprint() == JKT


def test_section_7_1_ath_is_the_hash_of_the_access_token() -> None:
    assert b64url_encode(hashlib.sha256(ACCESS_TOKEN.encode("ascii")).digest()) == ATH


def test_figure_2_token_request_proof() -> None:
    proof = verify_dpop_proof(
        TOKEN_REQUEST_PROOF,
        **TOKEN_REQUEST,
        access_token=None,
        config=CONFIG,
        now=TOKEN_REQUEST_IAT,
    )
    assert proof == DPoPProof(jkt=JKT, jti="-BwC3ESc6acc2lTc", iat=TOKEN_REQUEST_IAT)


def test_figure_13_resource_request_proof_with_ath_and_jkt() -> None:
    proof = verify_dpop_proof(
        RESOURCE_PROOF,
        **RESOURCE_REQUEST,
        access_token=ACCESS_TOKEN,
        config=CONFIG,
        now=RESOURCE_IAT,
        jkt=JKT,
    )
    assert proof == DPoPProof(jkt=JKT, jti="e1j3V_bKic8-LAEB", iat=RESOURCE_IAT)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"access_token": "another token"}, "ath"),
        ({"method": "POST"}, "htm"),
        ({"url": "https://resource.example.org/other"}, "htu"),
        ({"url": "https://server.example.com/token"}, "htu"),
        ({"now": RESOURCE_IAT + 3600}, "iat"),
    ],
)
def test_figure_13_proof_names_one_request(change: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {
        **RESOURCE_REQUEST,
        "access_token": ACCESS_TOKEN,
        "config": CONFIG,
        "now": RESOURCE_IAT,
        **change,
    }
    with pytest.raises(InvalidDPoPProof, match=message):
        verify_dpop_proof(RESOURCE_PROOF, **arguments)  # type: ignore[arg-type]


def test_figure_13_proof_for_a_token_bound_to_another_key() -> None:
    other = PrivateJWK.generate("ES256").thumbprint()
    with pytest.raises(TokenBindingMismatch):
        verify_dpop_proof(
            RESOURCE_PROOF,
            **RESOURCE_REQUEST,
            access_token=ACCESS_TOKEN,
            config=CONFIG,
            now=RESOURCE_IAT,
            jkt=other,
        )


def test_figure_2_proof_without_its_ath_is_no_resource_proof() -> None:
    with pytest.raises(InvalidDPoPProof, match="ath"):
        verify_dpop_proof(
            TOKEN_REQUEST_PROOF,
            **TOKEN_REQUEST,
            access_token=ACCESS_TOKEN,
            config=CONFIG,
            now=TOKEN_REQUEST_IAT,
        )


def test_figure_7_cnf_jkt_binds_a_token_to_the_proof_key() -> None:
    # RFC 9449 figure 7: a JWT access token whose cnf.jkt is the proof key's thumbprint
    key = PrivateJWK.generate("ES256", kid="as-1")
    now = dt.datetime.fromtimestamp(RESOURCE_IAT, dt.timezone.utc)
    issued = TokenIssuer(key, issuer="https://server.example.com", clock=FixedClock(now)).issue(
        subject="someone@example.com",
        audience="https://resource.example.org",
        extra_claims={"cnf": {"jkt": JKT}},
    )
    token = TokenVerifier(
        issuer="https://server.example.com",
        audience="https://resource.example.org",
        keys=key.public(),
        algorithms=["ES256"],
        clock=FixedClock(now),
    ).verify(issued)
    assert bound_jkt(token) == JKT
    proof = verify_dpop_proof(
        RESOURCE_PROOF,
        **RESOURCE_REQUEST,
        access_token=ACCESS_TOKEN,
        config=CONFIG,
        now=RESOURCE_IAT,
        jkt=bound_jkt(token),
    )
    assert check_dpop_binding(token, proof, "DPoP")
    with pytest.raises(TokenBindingMismatch):
        check_dpop_binding(token, proof, "Bearer")  # a DPoP-bound token sent as a bearer token


def test_figure_12_request_carries_the_token_and_the_proof() -> None:
    # RFC 9449 figure 12: "Authorization: DPoP <token>" and "DPoP: <figure 13's proof>"
    request = Request(
        method="GET",
        path="/protectedresource",
        headers={"authorization": f"DPoP {ACCESS_TOKEN}", "dpop": RESOURCE_PROOF},
    )
    credentials = extract_credentials(request)
    assert (credentials.scheme, credentials.token) == ("DPoP", ACCESS_TOKEN)
    assert credentials.dpop_proof == RESOURCE_PROOF
