"""JWK / PrivateJWK: parsing, algorithm binding, validation, thumbprints, PEM/DER."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa, x25519

from zerotrust.dev import DevCA
from zerotrust.errors import ConfigurationError
from zerotrust.tokens import JWK, PrivateJWK
from zerotrust.tokens._jwk_codec import required_members
from zerotrust.tokens.algorithms import EC_CURVES

from .conftest import b64, rsa_members, rsa_modulus
from .test_rfc_vectors import A3_D, A3_KEY, A4_KEY, ED_KEY

PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER
SPKI = serialization.PublicFormat.SubjectPublicKeyInfo


@pytest.mark.parametrize(
    ("key", "algorithm", "family"),
    [
        (ec.generate_private_key(ec.SECP256R1()).public_key(), "ES256", {"ES256"}),
        (ec.generate_private_key(ec.SECP384R1()).public_key(), "ES384", {"ES384"}),
        (ec.generate_private_key(ec.SECP521R1()).public_key(), "ES512", {"ES512"}),
        (ed25519.Ed25519PrivateKey.generate().public_key(), "EdDSA", {"EdDSA", "Ed25519"}),
        (ed448.Ed448PrivateKey.generate().public_key(), "EdDSA", {"EdDSA", "Ed448"}),
    ],
)
def test_algorithm_is_inferred_from_the_key(key: Any, algorithm: str, family: set[str]) -> None:
    jwk = JWK(key)
    assert jwk.algorithm == algorithm
    assert jwk.algorithms == family
    again = JWK.from_dict(jwk.to_public_dict())
    assert again == jwk
    # an EdDSA key read without alg is written without one, so readers accept both names too
    assert again.to_public_dict().get("alg") == (algorithm if len(family) == 1 else None)
    named = JWK(key, algorithm=algorithm)
    assert named.algorithms == {algorithm}
    assert (named == jwk) == (len(family) == 1)
    assert named.to_public_dict()["alg"] == algorithm


def test_rsa_defaults_to_rs256_and_binds_pss_when_asked(rsa_key: PrivateJWK) -> None:
    public = rsa_key.private_key.public_key()
    assert JWK(public).algorithm == "RS256"  # type: ignore[arg-type]
    assert JWK(public).algorithms == {"RS256"}  # type: ignore[arg-type]  # RFC 8725 3.1
    assert JWK(public, algorithm="PS512").algorithm == "PS512"  # type: ignore[arg-type]
    assert JWK(public, algorithm="PS512").algorithms == {"PS512"}  # type: ignore[arg-type]


def test_an_rsa_jwt_svid_authority_without_alg_verifies_the_jwt_svid_rsa_algorithms(
    rsa_key: PrivateJWK,
) -> None:
    """JWT-SVID section 3: RS256 to PS512. SPIFFE bundles publish their JWT authorities with
    ``use: jwt-svid`` and no ``alg``; only such a key is bound to more than one RSA algorithm."""
    public: Any = rsa_key.private_key.public_key()
    svid = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
    authority = JWK(public, use="jwt-svid", kid="k")
    assert authority.algorithm == "RS256"
    assert authority.algorithms == svid
    published = authority.to_public_dict()
    assert "alg" not in published  # its readers get the same six
    assert JWK.from_dict(published) == authority
    assert JWK.from_dict(published).algorithms == svid
    assert JWK(public, use="sig").algorithms == {"RS256"}
    assert JWK.from_dict({**published, "use": "sig"}).algorithms == {"RS256"}
    assert JWK.from_dict({k: v for k, v in published.items() if k != "use"}).algorithms == {"RS256"}
    named = JWK.from_dict({**published, "alg": "PS384"})  # a named alg binds as ever
    assert named.algorithms == {"PS384"}
    assert named != authority
    ec_authority = JWK(ec.generate_private_key(ec.SECP384R1()).public_key(), use="jwt-svid")
    assert ec_authority.algorithms == {"ES384"}


def test_a_key_has_a_verifier_for_each_of_its_names_only(rsa_key: PrivateJWK) -> None:
    authority = JWK(rsa_key.private_key.public_key(), use="jwt-svid")  # type: ignore[arg-type]
    assert authority._verifier_for("RS256") is authority._verify
    signing_input = b"header.payload"
    ps384 = PrivateJWK(rsa_key.private_key, algorithm="PS384")
    verify = authority._verifier_for("PS384")
    assert verify is not None and verify is not authority._verify
    assert verify(ps384.sign(signing_input), signing_input)
    assert authority._verifier_for("PS384") is verify  # made once
    assert not authority._verify(ps384.sign(signing_input), signing_input)
    for other in ("ES256", "HS256", "EdDSA", "none"):
        assert authority._verifier_for(other) is None
    assert JWK(rsa_key.private_key.public_key())._verifier_for("PS384") is None  # type: ignore[arg-type]


def test_alg_member_binds_the_key() -> None:
    assert JWK.from_dict({**A3_KEY, "alg": "ES256"}).algorithm == "ES256"
    assert JWK.from_dict(A4_KEY).algorithm == "ES512"
    assert JWK.from_dict(ED_KEY).algorithm == "EdDSA"


@pytest.mark.parametrize(
    ("members", "alg"),
    [
        (A3_KEY, "ES384"),
        (A3_KEY, "ES512"),
        (A3_KEY, "RS256"),
        (A3_KEY, "EdDSA"),
        (A3_KEY, "HS256"),
        (A4_KEY, "ES256"),
        (ED_KEY, "ES256"),
        (ED_KEY, "RS256"),
        (A3_KEY, "none"),
        (A3_KEY, "es256"),
        (A3_KEY, 256),
    ],
)
def test_alg_kty_mismatch_is_rejected(members: dict[str, str], alg: Any) -> None:
    with pytest.raises(ConfigurationError):
        JWK.from_dict({**members, "alg": alg})


@pytest.mark.parametrize("alg", ["HS256", "none", "RSA-OAEP-256", "RS1", "PS999", "rs256"])
def test_an_rsa_key_is_bound_to_rsa_signature_algorithms_only(alg: str) -> None:
    """Anything not RS*/PS* is refused for an RSA key, not read as the RSA algorithm that its
    digits or prefix seem to name."""
    with pytest.raises(ConfigurationError, match="not a public-key JWS algorithm"):
        JWK.from_dict({**rsa_members(2048), "alg": alg})


def test_an_unknown_alg_of_a_key_document_is_not_echoed() -> None:
    """A key document may be hostile: only a known algorithm name appears in the error."""
    hostile = "<script>alert(1)</script>"
    with pytest.raises(ConfigurationError) as unknown:
        JWK.from_dict({**A3_KEY, "alg": hostile})
    assert hostile not in str(unknown.value)
    assert "(unsupported)" in str(unknown.value)
    with pytest.raises(ConfigurationError, match="'HS256' is not a public-key JWS algorithm"):
        JWK.from_dict({**A3_KEY, "alg": "HS256"})


@pytest.mark.parametrize("alg", [256, ["ES256"], {"ES256": True}, b"ES256"])
def test_an_alg_member_that_is_no_string_is_named(alg: Any) -> None:
    with pytest.raises(ConfigurationError, match="JWK member 'alg' must be a string"):
        JWK.from_dict({**A3_KEY, "alg": alg})
    private = {**A3_KEY, "d": A3_D, "alg": alg}
    with pytest.raises(ConfigurationError, match="JWK member 'alg' must be a string"):
        PrivateJWK.from_dict(private)


def test_invalid_curve_point_is_rejected() -> None:
    x = int.from_bytes(b"\x01" * 32, "big")
    y = int.from_bytes(b"\x02" * 32, "big")
    members = {
        "kty": "EC",
        "crv": "P-256",
        "x": b64(x.to_bytes(32, "big")),
        "y": b64(y.to_bytes(32, "big")),
    }
    with pytest.raises(ConfigurationError, match="not on the curve"):
        JWK.from_dict(members)
    # a real point of P-256 given as a P-384 key is refused too (wrong size, then off-curve)
    with pytest.raises(ConfigurationError):
        JWK.from_dict({**A3_KEY, "crv": "P-384"})


def test_ec_coordinates_must_have_the_full_size() -> None:
    short = {**A3_KEY, "x": b64(b"\x00" + b"\x01" * 30)}
    with pytest.raises(ConfigurationError, match="exactly 32 bytes"):
        JWK.from_dict(short)


# (field prime p, coefficient b) of y^2 = x^3 - 3x + b
_WEIERSTRASS = {
    "P-256": (
        2**256 - 2**224 + 2**192 + 2**96 - 1,
        0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B,
    ),
    "P-384": (
        2**384 - 2**128 - 2**96 + 2**32 - 1,
        int(
            "B3312FA7E23EE7E4988E056BE3F82D19181D9C6EFE814112"
            "0314088F5013875AC656398D8A2ED19D2A85C8EDD3EC2AEF",
            16,
        ),
    ),
    "P-521": (2**521 - 1, 0),  # b unused: every P-521 coordinate plus p fits in 66 octets
}


def _point_with_small_x(crv: str) -> tuple[int, int]:
    p, b = _WEIERSTRASS[crv]
    for x in range(1, 1000):
        rhs = (x**3 - 3 * x + b) % p
        y = pow(rhs, (p + 1) // 4, p)
        if y * y % p == rhs:
            return x, y
    raise AssertionError("no point found")


@pytest.mark.parametrize("crv", ["P-256", "P-384", "P-521"])
def test_ec_coordinates_must_be_below_the_field_prime(crv: str) -> None:
    # a coordinate is an integer modulo p: x + p names the same point, and would give one key
    # a second spelling (and a second RFC 7638 thumbprint)
    p = _WEIERSTRASS[crv][0]
    size = {"P-256": 32, "P-384": 48, "P-521": 66}[crv]
    if crv == "P-521":
        numbers = ec.generate_private_key(ec.SECP521R1()).public_key().public_numbers()
        x, y = numbers.x, numbers.y
    else:
        x, y = _point_with_small_x(crv)
    canonical = {"kty": "EC", "crv": crv, "x": b64(x.to_bytes(size, "big"))}
    canonical["y"] = b64(y.to_bytes(size, "big"))
    JWK.from_dict(canonical)  # the point itself is fine
    spellings = [{**canonical, "x": b64((x + p).to_bytes(size, "big"))}]
    if crv == "P-521":
        spellings.append({**canonical, "y": b64((y + p).to_bytes(size, "big"))})
    for members in spellings:
        with pytest.raises(ConfigurationError, match="is not a coordinate of"):
            JWK.from_dict(members)
        with pytest.raises(ConfigurationError, match="is not a coordinate of"):
            required_members(members)


@pytest.mark.parametrize("bits", [1024, 1536, 2047])
def test_small_rsa_is_rejected(bits: int) -> None:
    # numbers only: no need to generate a real small key
    n = (1 << (bits - 1)) | 1
    members = {"kty": "RSA", "n": b64(n.to_bytes((bits + 7) // 8, "big")), "e": "AQAB"}
    with pytest.raises(ConfigurationError, match="at least 2048"):
        JWK.from_dict(members)


def test_small_rsa_private_key_is_rejected() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ConfigurationError, match="at least 2048"):
        JWK(key.public_key())
    with pytest.raises(ConfigurationError, match="at least 2048"):
        PrivateJWK(key)


@pytest.mark.parametrize("bits", [2048, 3072, 4096, 8192])
def test_rsa_keys_up_to_8192_bits_are_read(bits: int) -> None:
    jwk = JWK.from_dict({**rsa_members(bits), "alg": "PS256"})
    assert jwk.public_key.key_size == bits  # type: ignore[union-attr]
    assert jwk.algorithm == "PS256"
    assert not jwk._verify(b"\x01" * ((bits + 7) // 8), b"data")


@pytest.mark.parametrize("bits", [8193, 8200, 12288, 16384])
def test_rsa_keys_over_8192_bits_are_refused(bits: int) -> None:
    """Each doubling of the modulus makes every verification, a forged token's included, about
    four times as costly: no issuer uses more than 8192 bits."""
    with pytest.raises(ConfigurationError, match="larger than 8192 bits"):
        JWK.from_dict(rsa_members(bits))
    key = rsa.RSAPublicNumbers(65537, rsa_modulus(bits)).public_key()
    with pytest.raises(ConfigurationError, match="larger than 8192 bits"):
        JWK(key)
    with pytest.raises(ConfigurationError, match="larger than 8192 bits"):
        JWK.from_pem(key.public_bytes(PEM, SPKI))


@pytest.mark.parametrize("e", [3, 17, 65537, (1 << 32) - 1])
def test_odd_rsa_exponents_up_to_2_32_are_read(e: int) -> None:
    jwk = JWK.from_dict(rsa_members(2048, e))
    assert jwk.public_key.public_numbers().e == e  # type: ignore[union-attr]
    assert JWK(jwk.public_key) == jwk


@pytest.mark.parametrize("e", [(1 << 32) + 1, (1 << 33) + 1, (1 << 64) - 1, (1 << 61) - 1])
def test_rsa_exponents_over_2_32_are_refused(e: int) -> None:
    with pytest.raises(ConfigurationError, match=r"at most 2\*\*32"):
        JWK.from_dict(rsa_members(2048, e))
    key = rsa.RSAPublicNumbers(e, rsa_modulus(2048)).public_key()
    with pytest.raises(ConfigurationError, match=r"at most 2\*\*32"):
        JWK(key)
    with pytest.raises(ConfigurationError, match=r"at most 2\*\*32"):
        JWK.from_pem(key.public_bytes(DER, SPKI))


@pytest.mark.parametrize("e", [1, 2, 4, 65536, 1 << 32, (1 << 32) + 1, 1 << 64])
def test_bad_rsa_exponent_is_rejected(rsa_key: PrivateJWK, e: int) -> None:
    members = rsa_key.public().to_public_dict()
    members["e"] = b64(e.to_bytes((e.bit_length() + 7) // 8, "big"))
    with pytest.raises(ConfigurationError):
        JWK.from_dict(members)


@pytest.mark.parametrize(
    "members",
    [
        {"kty": "oct", "k": "AAAA"},
        {"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA"},
        {"kty": "OKP", "crv": "X25519", "x": b64(b"\x09" * 32)},
        {"kty": "OKP", "crv": "Ed25519", "x": b64(b"\x01" * 31)},
        {"kty": "RSA", "n": "AQAB"},
        {"kty": "EC", "crv": "P-256", "x": A3_KEY["x"]},
        {"kty": "EC", "crv": "P-256", "x": A3_KEY["x"] + "=", "y": A3_KEY["y"]},
        {"kty": "EC", "crv": "P-256", "x": 5, "y": A3_KEY["y"]},
        {"kty": "XYZ"},
        {},
        {"kty": None},
    ],
)
def test_unusable_jwks_are_rejected(members: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        JWK.from_dict(members)


def test_not_a_mapping_is_rejected() -> None:
    with pytest.raises(ConfigurationError):
        JWK.from_dict(["kty", "EC"])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        JWK(x25519.X25519PrivateKey.generate().public_key())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        JWK(ec.generate_private_key(ec.SECP256R1()))  # type: ignore[arg-type]


def test_private_members_are_refused_by_jwk() -> None:
    from .test_rfc_vectors import A3_D

    with pytest.raises(ConfigurationError, match="private key material"):
        JWK.from_dict({**A3_KEY, "d": A3_D})


@pytest.mark.parametrize("use", ["sig", "jwt-svid", None])
def test_use_sig_and_jwt_svid_are_accepted(use: str | None) -> None:
    members = dict(A3_KEY) if use is None else {**A3_KEY, "use": use}
    assert JWK.from_dict(members).use == use


@pytest.mark.parametrize("use", ["enc", "x509-svid", "", 1, ["sig"], {"sig": True}])
def test_other_uses_are_rejected(use: Any) -> None:
    with pytest.raises(ConfigurationError):
        JWK.from_dict({**A3_KEY, "use": use})


def test_key_ops_must_allow_verify() -> None:
    assert JWK.from_dict({**A3_KEY, "key_ops": ["verify"]}).key_ops == ("verify",)
    # an object is no array: {"verify": false} does not allow verify (RFC 7517 4.3)
    for ops in (
        *(["sign"], [], "verify", ["verify", "verify"], [1], {"verify": False}),
        *(["verify", 1], ["verify", None], 5, True),
    ):
        with pytest.raises(ConfigurationError):
            JWK.from_dict({**A3_KEY, "key_ops": ops})


@pytest.mark.parametrize("kid", ["", 5, "x" * 1025])
def test_bad_kid_is_rejected(kid: Any) -> None:
    with pytest.raises(ConfigurationError):
        JWK.from_dict({**A3_KEY, "kid": kid})


def test_thumbprint_ignores_optional_members() -> None:
    plain = JWK.from_dict(A3_KEY)
    decorated = JWK.from_dict({**A3_KEY, "kid": "k", "use": "sig", "alg": "ES256"})
    assert plain.thumbprint() == decorated.thumbprint()
    assert plain != decorated  # equality includes the binding and kid
    assert len({plain, decorated, JWK.from_dict(A3_KEY)}) == 2
    # another type never equals a key, even one holding the same members
    assert plain != A3_KEY
    assert plain.__eq__(plain.to_public_dict()) is NotImplemented  # the other side decides


def test_rsa_leading_zero_in_modulus_is_normalised(rsa_key: PrivateJWK) -> None:
    members = rsa_key.public().to_public_dict()
    from zerotrust.tokens._b64 import b64url_decode

    padded = {**members, "n": b64(b"\x00" + b64url_decode(members["n"]))}
    assert JWK.from_dict(padded).thumbprint() == rsa_key.public().thumbprint()


def test_to_public_dict_round_trip(es256: PrivateJWK) -> None:
    public = es256.public()
    document = public.to_public_dict()
    assert document["kid"] == "es256-1"
    assert "d" not in document
    assert JWK.from_dict(document) == public


def test_to_public_dict_keeps_every_optional_member_and_writes_no_null() -> None:
    decorated = {**A3_KEY, "alg": "ES256", "kid": "k", "use": "jwt-svid", "key_ops": ["verify"]}
    jwk = JWK.from_dict(decorated)
    assert (jwk.kty, jwk.crv) == ("EC", "P-256")
    assert jwk.to_public_dict() == decorated
    assert JWK.from_dict(A3_KEY).to_public_dict() == {**A3_KEY, "alg": "ES256"}


def test_jwk_is_immutable(es256: PrivateJWK) -> None:
    public = es256.public()
    with pytest.raises(AttributeError):
        public._alg = "ES384"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del public._kid
    with pytest.raises(AttributeError):
        es256._key = None  # type: ignore[assignment, misc]


def test_repr_never_shows_key_material(es256: PrivateJWK) -> None:
    text = repr(es256) + repr(es256.public())
    assert "es256-1" in text
    for member in ("x", "y"):
        assert es256.public().to_public_dict()[member] not in text


def test_repr_names_type_curve_algorithm_and_kid(es256: PrivateJWK, rsa_key: PrivateJWK) -> None:
    assert repr(es256.public()) == "JWK(kty='EC', crv='P-256', alg='ES256', kid='es256-1')"
    assert repr(rsa_key.public()) == "JWK(kty='RSA', alg='RS256', kid='rs-1')"
    assert repr(JWK.from_dict(ED_KEY)) == "JWK(kty='OKP', crv='Ed25519', alg='EdDSA', kid=None)"


def test_from_pem_accepts_pem_der_and_certificates(ca: DevCA, es256: PrivateJWK) -> None:
    public = es256.private_key.public_key()
    for data in (public.public_bytes(PEM, SPKI), public.public_bytes(DER, SPKI)):
        assert JWK.from_pem(data, kid="a").thumbprint() == es256.thumbprint()
    assert JWK.from_pem(public.public_bytes(PEM, SPKI).decode()).algorithm == "ES256"
    cert = ca.root_certificate
    for data in (cert.public_bytes(PEM), cert.public_bytes(DER)):
        assert JWK.from_pem(data).public_key == cert.public_key()
    assert JWK.from_public_key(cert).public_key == cert.public_key()
    with pytest.raises(ConfigurationError):
        JWK.from_pem(b"not a key")
    with pytest.raises(ConfigurationError):
        JWK.from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")


def test_private_jwk_from_pem_and_dict(es256: PrivateJWK) -> None:
    pem = es256.private_key.private_bytes(
        PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    loaded = PrivateJWK.from_pem(pem, kid="k")
    assert loaded.public().thumbprint() == es256.thumbprint()
    der = es256.private_key.private_bytes(
        DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert PrivateJWK.from_pem(der).algorithm == "ES256"
    with pytest.raises(ConfigurationError):
        PrivateJWK.from_pem(b"garbage")


def test_private_keys_are_equal_by_their_public_key(es256: PrivateJWK) -> None:
    again = PrivateJWK(es256.private_key, kid=es256.kid)
    other = PrivateJWK.generate("ES256")
    assert again == es256 and hash(again) == hash(es256)
    assert other != es256 and len({es256, again, other}) == 2
    assert es256 != es256.public()  # a private key is not its public half
    assert (es256 == "ES256") is False


@pytest.mark.parametrize("algorithm", ["HS256", "none", "ES256K", "RSA-OAEP", ""])
def test_keys_are_generated_for_signature_algorithms_only(algorithm: str) -> None:
    with pytest.raises(ConfigurationError, match=f"cannot generate a key for {algorithm!r}"):
        PrivateJWK.generate(algorithm)


@pytest.mark.parametrize("members", [["kty", "EC"], "kty", None, 5])
def test_a_private_jwk_is_a_json_object(members: Any) -> None:
    with pytest.raises(ConfigurationError, match="a JWK must be a JSON object"):
        PrivateJWK.from_dict(members)


def test_private_jwk_rejects_mismatched_members(es256: PrivateJWK) -> None:
    from .test_rfc_vectors import A3_D

    other = es256.public().to_public_dict()
    with pytest.raises(ConfigurationError, match="does not match"):
        PrivateJWK.from_dict({**other, "d": A3_D})
    with pytest.raises(ConfigurationError):
        PrivateJWK.from_dict(A3_KEY)  # no d
    with pytest.raises(ConfigurationError):
        PrivateJWK.from_dict({**A3_KEY, "d": A3_D, "key_ops": ["verify"]})


def test_private_rsa_jwk_with_crt_members(rsa_key: PrivateJWK) -> None:
    numbers = rsa_key.private_key.private_numbers()  # type: ignore[union-attr]

    def enc(value: int) -> str:
        return b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    members = {
        **rsa_key.public().to_public_dict(),
        "d": enc(numbers.d),
        "p": enc(numbers.p),
        "q": enc(numbers.q),
        "dp": enc(numbers.dmp1),
        "dq": enc(numbers.dmq1),
        "qi": enc(numbers.iqmp),
    }
    assert PrivateJWK.from_dict(members).public() == rsa_key.public()
    partial = {k: v for k, v in members.items() if k != "qi"}
    with pytest.raises(ConfigurationError, match="some but not all"):
        PrivateJWK.from_dict(partial)
    with pytest.raises(ConfigurationError, match="multi-prime"):
        PrivateJWK.from_dict({**members, "oth": []})


_P25519 = 2**255 - 19
_P448 = 2**448 - 2**224 - 1


@pytest.mark.parametrize(
    ("crv", "x"),
    [
        ("Ed25519", (1).to_bytes(32, "little")),  # the neutral point (order 1)
        ("Ed25519", (_P25519 - 1).to_bytes(32, "little")),  # order 2
        ("Ed25519", bytes(32)),  # y = 0: order 4
        (
            "Ed25519",
            bytes.fromhex(  # order 8
                "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"
            ),
        ),
        ("Ed25519", (_P25519 + 1).to_bytes(32, "little")),  # the neutral point, non-canonical
        ("Ed25519", (1 | 1 << 255).to_bytes(32, "little")),  # "negative zero" x
        ("Ed448", (1).to_bytes(57, "little")),  # the neutral point
        ("Ed448", (_P448 - 1).to_bytes(57, "little")),  # order 2
        ("Ed448", bytes(57)),  # order 4
        ("Ed448", (_P448 + 1).to_bytes(57, "little")),  # non-canonical
    ],
)
def test_weak_edwards_keys_are_refused(crv: str, x: bytes) -> None:
    """With a small-order key, R = neutral, S = 0 verifies for every message (RFC 8032 does not
    forbid such keys): refused as JWKs and as key objects."""
    with pytest.raises(ConfigurationError, match=r"weak|invalid OKP"):
        JWK.from_dict({"kty": "OKP", "crv": crv, "x": b64(x)})
    cls = ed25519.Ed25519PublicKey if crv == "Ed25519" else ed448.Ed448PublicKey
    try:
        key = cls.from_public_bytes(x)
    except ValueError:
        return  # cryptography refused it already
    with pytest.raises(ConfigurationError, match="weak"):
        JWK(key)


def test_edwards_encodings_refused_before_any_arithmetic() -> None:
    """A key of the wrong size, and an Ed448 encoding whose last octet holds more than the
    sign bit (RFC 8032 5.2.2: only bit 7 of octet 56 is x's sign), are refused as such."""
    from zerotrust.tokens._edwards import weak_edwards_key

    good = ed448.Ed448PrivateKey.generate().public_key().public_bytes_raw()
    assert not weak_edwards_key("Ed448", good)
    assert weak_edwards_key("Ed448", good[:-1] + bytes([good[-1] | 0x01]))
    assert weak_edwards_key("Ed448", good[:-1] + bytes([good[-1] | 0x40]))
    assert weak_edwards_key("Ed448", good[:-1]) and weak_edwards_key("Ed448", good + b"\0")
    ed = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    assert not weak_edwards_key("Ed25519", ed)
    assert weak_edwards_key("Ed25519", ed[:-1]) and weak_edwards_key("Ed25519", good)


def test_generated_edwards_keys_are_not_weak() -> None:
    for _ in range(50):
        JWK(ed25519.Ed25519PrivateKey.generate().public_key())
        JWK(ed448.Ed448PrivateKey.generate().public_key())
    JWK.from_dict(ED_KEY)  # the RFC 8037 example key


@pytest.mark.parametrize("curve", [ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey])
def test_ed_private_jwk_round_trip(curve: Any) -> None:
    key = curve.generate()
    raw = key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    members = {**JWK(key.public_key()).to_public_dict(), "d": b64(raw)}
    assert PrivateJWK.from_dict(members).public().public_key == key.public_key()
    other = curve.generate().public_key()
    wrong = {**members, "x": JWK(other).to_public_dict()["x"]}
    with pytest.raises(ConfigurationError):
        PrivateJWK.from_dict(wrong)


@pytest.mark.parametrize("alg", ["ES256", "ES384", "ES512", "EdDSA", "RS256", "PS256"])
def test_generate_sign_and_verify(alg: str) -> None:
    key = PrivateJWK.generate(alg, kid="k")
    signature = key.sign(b"data")
    assert key.public()._verify(signature, b"data")
    assert not key.public()._verify(signature, b"other")
    if alg in EC_CURVES:
        assert len(signature) == 2 * EC_CURVES[alg][2]


def test_generate_rejects_unknown_algorithms() -> None:
    for alg in ("HS256", "none", "ES256K"):
        with pytest.raises(ConfigurationError):
            PrivateJWK.generate(alg)


def test_with_kid_keeps_key_and_algorithm(ps256: PrivateJWK) -> None:
    renamed = ps256.with_kid("new")
    assert renamed.kid == "new"
    assert renamed.algorithm == "PS256"
    assert renamed.thumbprint() == ps256.thumbprint()


def test_private_key_type_and_alg_mismatch() -> None:
    with pytest.raises(ConfigurationError):
        PrivateJWK(ec.generate_private_key(ec.SECP256R1()), algorithm="ES384")
    with pytest.raises(ConfigurationError):
        PrivateJWK(ec.generate_private_key(ec.SECP256R1()).public_key())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        PrivateJWK(ec.generate_private_key(ec.SECP192R1()))


def test_keys_do_not_pickle_secrets(es256: PrivateJWK) -> None:
    with pytest.raises(TypeError):
        pickle.dumps(es256)


@pytest.mark.parametrize("data", ["-----BEGIN PUBLIC KEY-----\né\n", 5, None])
def test_from_pem_refuses_non_key_input(data: Any) -> None:
    with pytest.raises(ConfigurationError):
        JWK.from_pem(data)
    with pytest.raises(ConfigurationError):
        PrivateJWK.from_pem(data)


@pytest.mark.parametrize("algorithm", [["ES256"], 256, "none", ""])
def test_algorithm_argument_must_be_a_known_name(algorithm: Any, es256: PrivateJWK) -> None:
    with pytest.raises(ConfigurationError):
        JWK(es256.private_key.public_key(), algorithm=algorithm)  # type: ignore[arg-type]


def test_keys_of_an_unknown_curve_are_a_configuration_error() -> None:
    # an EC key naming a curve no library knows (P-256's OID with another last arc):
    # cryptography raises UnsupportedAlgorithm, which must not escape as itself
    key = ec.generate_private_key(ec.SECP256R1())
    p256 = bytes.fromhex("06082a8648ce3d030107")
    unknown = p256[:-1] + b"\x7f"
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ConfigurationError, match="unsupported public key"):
        JWK.from_pem(spki.replace(p256, unknown))
    # cryptography before 46 refuses such a private key as unreadable rather than unsupported
    with pytest.raises(ConfigurationError, match=r"unsupported private key|not a readable"):
        PrivateJWK.from_pem(pkcs8.replace(p256, unknown))


def test_a_certificate_whose_key_cannot_be_read_is_a_configuration_error(ca: DevCA) -> None:
    from cryptography import x509

    p256 = bytes.fromhex("06082a8648ce3d030107")
    der = ca.issue_svid("spiffe://example.org/web").leaf.public_bytes(serialization.Encoding.DER)
    assert der.count(p256) == 1
    cert = x509.load_der_x509_certificate(der.replace(p256, p256[:-1] + b"\x7f"))
    with pytest.raises(ConfigurationError, match="public key is not supported"):
        JWK.from_public_key(cert)
    with pytest.raises(ConfigurationError):
        JWK.from_pem(cert.public_bytes(serialization.Encoding.PEM))
