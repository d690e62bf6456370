"""One test (or group) per bug class that JOSE libraries have shipped, named after a CVE.

Each test builds the hostile input of that class and checks it is refused with the expected
error code, usually by more than one independent guard.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from zerotrust.dev import DevCA
from zerotrust.errors import (
    AlgorithmNotAllowed,
    ConfigurationError,
    InvalidIssuer,
    InvalidSignature,
    MalformedToken,
    TokenError,
    TokenTooLarge,
    UnknownKey,
    UnsupportedTokenFeature,
)
from zerotrust.tokens import (
    JWK,
    JWKSet,
    PrivateJWK,
    SecretKey,
    SignatureVerifier,
    TokenVerifier,
)
from zerotrust.tokens import signature as signature_module
from zerotrust.tokens.algorithms import EC_CURVES

from .conftest import AUDIENCE, ISSUER, b64, b64json, claims, mint

Factory = Callable[..., TokenVerifier]
PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER
SPKI = serialization.PublicFormat.SubjectPublicKeyInfo


class CountingSource:
    """A key source that records every call."""

    def __init__(self, keys: Any) -> None:
        self.keys = keys
        self.calls: list[str | None] = []

    def get_keys(self, *, missing_kid: str | None = None) -> Any:
        self.calls.append(missing_kid)
        return self.keys

    async def get_keys_async(self, *, missing_kid: str | None = None) -> Any:
        return self.get_keys(missing_kid=missing_kid)


def _public_key_forms(key: PrivateJWK) -> dict[str, bytes]:
    public = key.private_key.public_key()
    forms = {
        "pem_spki": public.public_bytes(PEM, SPKI),
        "der_spki": public.public_bytes(DER, SPKI),
        "openssh": public.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ),
        "jwk": json.dumps(key.public().to_public_dict()).encode(),
        "jwks": json.dumps({"keys": [key.public().to_public_dict()]}).encode(),
        "base64_der": base64.b64encode(public.public_bytes(DER, SPKI)),
    }
    if key.algorithm == "RS256":
        pkcs1 = serialization.PublicFormat.PKCS1
        forms["pem_pkcs1"] = public.public_bytes(PEM, pkcs1)
        forms["der_pkcs1"] = public.public_bytes(DER, pkcs1)
    if key.algorithm == "ES256":
        forms["raw_ec_point"] = public.public_bytes(  # type: ignore[call-arg]
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    return forms


@pytest.fixture(scope="module")
def certificate_forms(ca: DevCA) -> dict[str, bytes]:
    cert: x509.Certificate = ca.root_certificate
    return {"pem_cert": cert.public_bytes(PEM), "der_cert": cert.public_bytes(DER)}


# --- CVE-2022-29217 (PyJWT) / CVE-2024-33663 (python-jose): public key used as HMAC secret ---


_COMMON_FORMS = ["pem_spki", "der_spki", "openssh", "jwk", "jwks", "base64_der"]
_FORMS = [
    *((alg, form) for alg in ("RS256", "ES256", "EdDSA") for form in _COMMON_FORMS),
    ("RS256", "pem_pkcs1"),
    ("RS256", "der_pkcs1"),
    ("ES256", "raw_ec_point"),
]


@pytest.mark.parametrize(("alg", "form"), _FORMS)
def test_cve_2022_29217_hmac_with_public_key_forms(
    alg: str, form: str, rsa_key: PrivateJWK, es256: PrivateJWK, eddsa: PrivateJWK
) -> None:
    key = {"RS256": rsa_key, "ES256": es256, "EdDSA": eddsa}[alg]
    forms = _public_key_forms(key)
    with pytest.raises(ConfigurationError, match="refusing an HMAC secret"):
        SecretKey(forms[form], "HS256")


def test_cve_2022_29217_hmac_with_public_key_pem_certificate(
    certificate_forms: dict[str, bytes],
) -> None:
    for material in certificate_forms.values():
        with pytest.raises(ConfigurationError, match="refusing an HMAC secret"):
            SecretKey(material, "HS256")


def test_cve_2022_29217_hmac_with_public_key_pem_any_armour() -> None:
    armoured = b"-----BEGIN SOMETHING-----\n" + b"A" * 64 + b"\n-----END SOMETHING-----\n"
    with pytest.raises(ConfigurationError):
        SecretKey(armoured, "HS256")


def test_cve_2022_29217_hmac_with_public_key_token_is_refused(
    make_verifier: Factory, rsa_key: PrivateJWK
) -> None:
    # The classic attack: HS256-sign with the PEM of the verifier's RSA public key.
    import hmac as hmac_module

    pem = rsa_key.private_key.public_key().public_bytes(PEM, SPKI)
    header = b64json({"alg": "HS256", "typ": "JWT", "kid": rsa_key.kid})
    signing_input = header + "." + b64json(claims())
    forged = signing_input + "." + b64(hmac_module.digest(pem, signing_input.encode(), "sha256"))
    verifier = make_verifier(keys=rsa_key.public(), algorithms=["RS256"])
    with pytest.raises(AlgorithmNotAllowed):
        verifier.verify(forged)
    # and HMAC cannot even be configured against public keys
    for algorithms in (["HS256"], ["RS256", "HS256"]):
        with pytest.raises(ConfigurationError):
            make_verifier(keys=rsa_key.public(), algorithms=algorithms)


@pytest.mark.parametrize("form", ["pem_spki", "der_spki", "openssh", "jwk"])
def test_cve_2024_33663_hmac_with_public_key_forms(form: str, es256: PrivateJWK) -> None:
    # python-jose's variant of the same class (ECDSA keys accepted as HMAC secrets).
    with pytest.raises(ConfigurationError):
        SecretKey(_public_key_forms(es256)[form], "HS256")


# --- CVE-2026-48526: a public JWK used as an HMAC secret --------------------------------------


def test_cve_2026_48526_public_jwk_as_hmac_secret(es256: PrivateJWK, rsa_key: PrivateJWK) -> None:
    for key in (es256, rsa_key):
        document = json.dumps(key.public().to_public_dict()).encode()
        with pytest.raises(ConfigurationError):
            SecretKey(document, "HS256")
        with pytest.raises(ConfigurationError):
            SecretKey(b"  " + document + b"\n", "HS512")
    oct_jwk = {"kty": "oct", "k": b64(b"k" * 32), "kid": "sym"}
    with pytest.raises(ConfigurationError, match="SecretKey"):
        JWK.from_dict(oct_jwk)
    key_set = JWKSet.from_dict({"keys": [oct_jwk, es256.public().to_public_dict()]})
    assert [key.kid for key in key_set] == [es256.kid]
    assert key_set.skipped[0].kid == "sym"


def test_cve_2026_48526_hmac_token_against_jwks_is_refused(
    make_verifier: Factory, es256: PrivateJWK
) -> None:
    document = json.dumps(es256.public().to_public_dict()).encode()
    import hmac as hmac_module

    header = b64json({"alg": "HS256", "kid": es256.kid})
    signing_input = header + "." + b64json(claims())
    forged = (
        signing_input + "." + b64(hmac_module.digest(document, signing_input.encode(), "sha256"))
    )
    with pytest.raises(AlgorithmNotAllowed):
        make_verifier(keys={"keys": [es256.public().to_public_dict()]}).verify(forged)


# --- CVE-2024-53861 (PyJWT): issuer checked with `in` on a str --------------------------------


@pytest.mark.parametrize(
    "iss",
    [
        "https://issuer.exam",
        "issuer",
        "https://issuer.example/",
        "https://issuer.example.evil",
        "HTTPS://ISSUER.EXAMPLE",
        "",
        ["https://issuer.example"],
        {"https://issuer.example": 1},
    ],
)
def test_cve_2024_53861_issuer_substring(
    make_verifier: Factory, es256: PrivateJWK, iss: Any
) -> None:
    with pytest.raises(InvalidIssuer):
        make_verifier(cache_size=0).verify(mint(es256, claims(iss=iss)))


# --- CVE-2026-48523: header alg differs from the key's algorithm --------------------------------


def test_cve_2026_48523_header_alg_differs_from_key_alg(
    make_verifier: Factory, rsa_key: PrivateJWK, ps256: PrivateJWK
) -> None:
    # The RS256-bound key must not verify a (valid!) PS256 signature by the same RSA key.
    verifier = make_verifier(keys=rsa_key.public(), algorithms=["RS256", "PS256"])
    token = mint(ps256, claims(), {"alg": "PS256", "kid": rsa_key.kid})
    with pytest.raises(AlgorithmNotAllowed):
        verifier.verify(token)
    # ...and the other way round.
    verifier = make_verifier(keys=ps256.public(), algorithms=["RS256", "PS256"])
    with pytest.raises(AlgorithmNotAllowed):
        verifier.verify(mint(rsa_key, claims(), {"alg": "RS256", "kid": ps256.kid}))


def test_cve_2026_48523_key_alg_member_must_fit_the_key(es256: PrivateJWK) -> None:
    members = es256.public().to_public_dict()
    for wrong in ("ES384", "RS256", "HS256", "EdDSA", "none"):
        with pytest.raises(ConfigurationError):
            JWK.from_dict({**members, "alg": wrong})


def test_cve_2026_48523_same_curve_other_hash(make_verifier: Factory, es256: PrivateJWK) -> None:
    # An ES256 key with a token claiming ES384: refused before any signature work.
    verifier = make_verifier(algorithms=["ES256", "ES384"])
    with pytest.raises(AlgorithmNotAllowed):
        verifier.verify(mint(es256, claims(), {"alg": "ES384", "kid": es256.kid}))


# --- CVE-2026-48525: unencoded payload (b64: false) ---------------------------------------------


@pytest.mark.parametrize(
    "extra", [{"b64": False, "crit": ["b64"]}, {"b64": False}, {"b64": 0}, {"b64": "false"}]
)
def test_cve_2026_48525_b64_false(
    make_verifier: Factory,
    es256: PrivateJWK,
    monkeypatch: pytest.MonkeyPatch,
    extra: dict[str, Any],
) -> None:
    decoded: list[bytes] = []
    real = signature_module.a2b_base64
    monkeypatch.setattr(
        signature_module, "a2b_base64", lambda seg: decoded.append(seg) or real(seg)
    )
    source = CountingSource(JWKSet([es256.public()]))
    big = {**claims(), "pad": "x" * 5000}
    token = mint(es256, big, {"alg": "ES256", "kid": es256.kid, **extra})
    with pytest.raises(UnsupportedTokenFeature):
        make_verifier(keys=source, cache_size=0).verify(token)
    assert decoded == []  # neither payload nor signature was decoded
    assert source.calls == []  # no key was even looked up


# --- CVE-2024-37568 (Authlib): no algorithm allowlist -------------------------------------------


@pytest.mark.parametrize("algorithms", [None, [], (), "ES256", "", b"ES256", ["ES256", 1]])
def test_cve_2024_37568_no_algorithm_list(
    make_verifier: Factory, algorithms: Any, es256: PrivateJWK
) -> None:
    with pytest.raises(ConfigurationError):
        make_verifier(algorithms=algorithms)


def test_cve_2024_37568_algorithms_argument_is_required(es256: PrivateJWK) -> None:
    with pytest.raises(TypeError):
        TokenVerifier(issuer=ISSUER, audience=AUDIENCE, keys=es256.public())  # type: ignore[call-arg]


# --- CVE-2026-28802: alg none (any case) with an empty signature --------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", " none"])
@pytest.mark.parametrize("signature", ["", "AAAA"])
def test_cve_2026_28802_none_with_empty_signature(
    make_verifier: Factory, alg: str, signature: str
) -> None:
    token = b64json({"alg": alg, "typ": "JWT"}) + "." + b64json(claims()) + "." + signature
    with pytest.raises(AlgorithmNotAllowed, match="'none' algorithm is never accepted"):
        make_verifier().verify(token)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_cve_2026_28802_none_cannot_be_allowed(make_verifier: Factory, alg: str) -> None:
    with pytest.raises(ConfigurationError, match="none"):
        make_verifier(algorithms=["ES256", alg])


# --- CVE-2026-27962: a key embedded in the token header is trusted -------------------------------


@pytest.mark.parametrize("member", ["jwk", "jku", "x5u", "x5c"])
def test_cve_2026_27962_embedded_jwk(
    make_verifier: Factory, es256: PrivateJWK, attacker: PrivateJWK, member: str
) -> None:
    values = {
        "jwk": attacker.public().to_public_dict(),
        "jku": "https://attacker.example/jwks.json",
        "x5u": "https://attacker.example/cert.pem",
        "x5c": ["MIIBattacker"],
    }
    source = CountingSource(JWKSet([es256.public()]))
    verifier = make_verifier(keys=source, cache_size=0)
    # same kid as the victim's key: selection uses the configured key, the signature fails
    same_kid = mint(attacker, claims(), {"alg": "ES256", "kid": es256.kid, member: values[member]})
    with pytest.raises(InvalidSignature):
        verifier.verify(same_kid)
    # the attacker's own kid: unknown, after exactly one refetch request, never a URL fetch
    own_kid = mint(attacker, claims(), {"alg": "ES256", "kid": "evil", member: values[member]})
    with pytest.raises(UnknownKey):
        verifier.verify(own_kid)
    assert source.calls == [None, None, "evil"]


# --- CVE-2025-65015 (joserfc): oversized input echoed into the error ---------------------------


def test_cve_2025_65015_oversized_input_not_echoed(make_verifier: Factory) -> None:
    marker = "SECRETMARKER"
    token = "eyJ" + marker * 100_000
    for candidate in (token, token.encode()):
        with pytest.raises(TokenTooLarge) as info:
            make_verifier().verify(candidate)
        for text in (str(info.value), repr(info.value), info.value.public_message):
            assert marker not in text
            assert len(text) < 200


@pytest.mark.parametrize(
    "token",
    [
        "SECRETMARKER",
        "eyJTECRETMARKER.SECRETMARKER.SECRETMARKER",
        "SECRETMARKER.SECRETMARKER.SECRETMARKER.SECRETMARKER.SECRETMARKER",
        b64json({"alg": "ES256", "kid": "SECRETMARKER"}) + ".e30.AAAA",
        b64json({"alg": "SECRETMARKER"}) + ".e30.AAAA",
        b64json({"alg": "ES256", "typ": "SECRETMARKER"}) + ".e30.AAAA",
        b64json({"alg": "ES256", "crit": ["SECRETMARKER"], "SECRETMARKER": 1}) + ".e30.AAAA",
        "SECRETMARKER\u00e9.a.b",
    ],
)
def test_cve_2025_65015_no_error_echoes_token_content(make_verifier: Factory, token: str) -> None:
    with pytest.raises(TokenError) as info:
        make_verifier().verify(token)
    assert "SECRETMARKER" not in str(info.value)
    assert "SECRETMARKER" not in repr(info.value)


# --- CVE-2022-3102 (jwcrypto): a JWE accepted where a JWS was expected --------------------------


def test_cve_2022_3102_jwe_where_jws_expected(make_verifier: Factory) -> None:
    jwe_header = b64json({"alg": "RSA-OAEP", "enc": "A256GCM"})
    jwe = ".".join([jwe_header, b64(b"k" * 256), b64(b"iv" * 6), b64(b"ct" * 40), b64(b"t" * 16)])
    with pytest.raises(UnsupportedTokenFeature):
        make_verifier().verify(jwe)
    # a JWE-style header squeezed into three segments is refused as well
    three = ".".join([b64json({"alg": "ES256", "enc": "A256GCM"}), "e30", "AAAA"])
    with pytest.raises(UnsupportedTokenFeature):
        make_verifier().verify(three)


def test_cve_2024_33664_zip_header_refused(make_verifier: Factory, es256: PrivateJWK) -> None:
    token = mint(es256, claims(), {"alg": "ES256", "kid": es256.kid, "zip": "DEF"})
    with pytest.raises(UnsupportedTokenFeature):
        make_verifier().verify(token)


# --- CVE-2022-21449 ("psychic signatures"): ECDSA r or s equal to 0 or >= n ---------------------


def _ecdsa_signature(key: PrivateJWK, data: bytes) -> tuple[int, int]:
    hash_cls = {"ES256": hashes.SHA256, "ES384": hashes.SHA384, "ES512": hashes.SHA512}
    from cryptography.hazmat.primitives.asymmetric import ec

    der = key.private_key.sign(data, ec.ECDSA(hash_cls[key.algorithm]()))  # type: ignore[call-arg]
    return decode_dss_signature(der)


@pytest.mark.parametrize("which", ["ES256", "ES384", "ES512"])
def test_cve_2022_21449_ecdsa_r_s_zero(
    make_verifier: Factory, which: str, es256: PrivateJWK, es384: PrivateJWK, es512: PrivateJWK
) -> None:
    key = {"ES256": es256, "ES384": es384, "ES512": es512}[which]
    size, order = EC_CURVES[which][2], EC_CURVES[which][3]
    verifier = make_verifier(keys=key.public(), algorithms=[which], cache_size=0)
    good = mint(key, claims())
    signing_input = good.rsplit(".", 1)[0]
    r, s = _ecdsa_signature(key, signing_input.encode())
    assert verifier.verify(
        signing_input + "." + b64(r.to_bytes(size, "big") + s.to_bytes(size, "big"))
    )

    def forged(r_value: int, s_value: int) -> str:
        width = max(size, (max(r_value, s_value).bit_length() + 7) // 8)
        raw = r_value.to_bytes(width, "big")[-width:] + s_value.to_bytes(width, "big")[-width:]
        return signing_input + "." + b64(raw)

    for r_value, s_value in [(0, 0), (0, s), (r, 0), (order, s), (r, order), (order, order)]:
        with pytest.raises(InvalidSignature):
            verifier.verify(forged(r_value, s_value))
    # r + n and s + n (when they still fit in the field size) describe the same numbers mod n
    for r_value, s_value in [(r + order, s), (r, s + order)]:
        if max(r_value, s_value) < 1 << (8 * size):
            with pytest.raises(InvalidSignature):
                verifier.verify(forged(r_value, s_value))


@pytest.mark.parametrize("length", [0, 1, 63, 65, 72, 128])
def test_cve_2022_21449_wrong_signature_length(
    make_verifier: Factory, es256: PrivateJWK, length: int
) -> None:
    signing_input = mint(es256, claims()).rsplit(".", 1)[0]
    with pytest.raises((InvalidSignature, MalformedToken)):
        make_verifier().verify(signing_input + "." + b64(b"\x01" * length))


def test_cve_2022_21449_der_signature_instead_of_raw(
    make_verifier: Factory, es256: PrivateJWK
) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    signing_input = mint(es256, claims()).rsplit(".", 1)[0]
    der = es256.private_key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg]
    with pytest.raises(InvalidSignature):
        make_verifier().verify(signing_input + "." + b64(der))


# --- crit (RFC 7515 §4.1.11) ---------------------------------------------------------------------


def test_crit_unknown_parameter_rejected(make_verifier: Factory, es256: PrivateJWK) -> None:
    token = mint(es256, claims(), {"alg": "ES256", "kid": es256.kid, "crit": ["exp"], "exp": 1})
    with pytest.raises(UnsupportedTokenFeature):
        make_verifier().verify(token)


@pytest.mark.parametrize(
    "crit",
    [
        *([], "exp", [1], ["exp", "exp"], {"exp": True}, None, ["alg"], ["kid"], ["absent"]),
        *([["exp"]], [{"exp": 1}], ["exp", ["exp"]]),  # entries that are no names (nor hashable)
    ],
)
def test_crit_malformed_rejected(make_verifier: Factory, es256: PrivateJWK, crit: Any) -> None:
    token = mint(es256, claims(), {"alg": "ES256", "kid": es256.kid, "crit": crit, "exp": 1})
    with pytest.raises(MalformedToken):
        make_verifier().verify(token)


def test_crit_understood_by_the_caller_is_accepted(es256: PrivateJWK) -> None:
    token = mint(es256, claims(), {"alg": "ES256", "kid": es256.kid, "crit": ["ext"], "ext": 1})
    verifier = SignatureVerifier(keys=es256.public(), algorithms=["ES256"], critical=["ext"])
    assert verifier.verify(token).header["ext"] == 1
    with pytest.raises(UnsupportedTokenFeature):
        SignatureVerifier(keys=es256.public(), algorithms=["ES256"]).verify(token)


def test_crit_cannot_claim_to_understand_b64_or_registered_names(es256: PrivateJWK) -> None:
    for name in ("b64", "alg", "kid"):
        with pytest.raises(ConfigurationError):
            SignatureVerifier(keys=es256.public(), algorithms=["ES256"], critical=[name])


# --- RSA-PSS salt length -------------------------------------------------------------------------


def test_pss_salt_length_must_equal_hash_length(make_verifier: Factory, ps256: PrivateJWK) -> None:
    verifier = make_verifier(keys=ps256.public(), algorithms=["PS256"], cache_size=0)
    signing_input = mint(ps256, claims()).rsplit(".", 1)[0]
    assert verifier.verify(mint(ps256, claims()))
    for salt in (0, 20, 64):
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=salt)
        sig = ps256.private_key.sign(signing_input.encode(), pss, hashes.SHA256())  # type: ignore[call-arg]
        with pytest.raises(InvalidSignature):
            verifier.verify(signing_input + "." + b64(sig))


# --- RSA signature length (RFC 8017 §8.1.2 step 1, §8.2.2 step 1) --------------------------------


@pytest.mark.parametrize("alg", ["PS256", "RS256"])
def test_rsa_signature_must_be_exactly_the_modulus_length(
    make_verifier: Factory, ps256: PrivateJWK, rsa_key: PrivateJWK, alg: str
) -> None:
    # A signature whose leading zero octet was stripped is the same integer, and OpenSSL's
    # RSA-PSS verification accepts it; RFC 8017 refuses any signature that is not k octets.
    key = ps256 if alg == "PS256" else rsa_key
    assert key.algorithm == alg
    verifier = make_verifier(keys=key.public(), algorithms=[alg], cache_size=0)
    pad = (
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        if alg == "PS256"
        else padding.PKCS1v15()
    )
    public = key.private_key.public_key()
    k = (public.key_size + 7) // 8  # type: ignore[union-attr]
    for n in range(5000):  # PSS is randomized; about one signature in 256 starts with a zero octet
        signing_input = mint(key, claims(jti=f"t{n}")).rsplit(".", 1)[0]
        sig = key.private_key.sign(signing_input.encode(), pad, hashes.SHA256())  # type: ignore[call-arg]
        if sig[0] == 0:
            break
    else:  # pragma: no cover - probability about 3e-9 for PSS
        pytest.fail("no signature with a leading zero octet")
    assert len(sig) == k
    assert verifier.verify(signing_input + "." + b64(sig))
    if alg == "PS256":  # what the library alone does with the stripped form
        public.verify(sig[1:], signing_input.encode(), pad, hashes.SHA256())  # type: ignore[union-attr,call-arg]
    for malformed in (sig[1:], b"\x00" + sig):
        with pytest.raises(InvalidSignature):
            verifier.verify(signing_input + "." + b64(malformed))
