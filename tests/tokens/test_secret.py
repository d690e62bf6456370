"""SecretKey: length, type and "this is public key material" checks; SecretKeySet lookup."""

from __future__ import annotations

import base64
import hmac
import json
import pickle
import secrets
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from zerotrust.dev import DevCA
from zerotrust.errors import ConfigurationError
from zerotrust.tokens import SecretKey, SecretKeySet
from zerotrust.tokens._b64 import b64url_encode


@pytest.mark.parametrize(("alg", "size"), [("HS256", 32), ("HS384", 48), ("HS512", 64)])
def test_minimum_length_is_the_hash_size(alg: str, size: int) -> None:
    assert SecretKey(secrets.token_bytes(size), alg).algorithm == alg
    with pytest.raises(ConfigurationError, match=f"at least {size} bytes"):
        SecretKey(secrets.token_bytes(size - 1), alg)


@pytest.mark.parametrize("secret", ["a" * 64, None, 12345, ["x"] * 64])
def test_secret_must_be_bytes(secret: Any) -> None:
    with pytest.raises(ConfigurationError, match="must be bytes"):
        SecretKey(secret)


def test_bytearray_and_memoryview_are_accepted() -> None:
    raw = secrets.token_bytes(32)
    assert SecretKey(bytearray(raw)) == SecretKey(memoryview(raw)) == SecretKey(raw)


@pytest.mark.parametrize("alg", ["RS256", "none", "hs256", "HS1", "ES256"])
def test_only_hmac_algorithms(alg: str) -> None:
    with pytest.raises(ConfigurationError):
        SecretKey(secrets.token_bytes(64), alg)


@pytest.mark.parametrize(
    "secret",
    [
        b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl u@h",
        b"ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY= x",
        b'{"kty": "EC", "crv": "P-256", "x": "...", "y": "..."}',
        b'{"keys": []}                                      ',
        b'[{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]                          ',
        b"-----BEGIN CERTIFICATE-----\nMIIB....\n-----END CERTIFICATE-----",
        b"-----BEGIN RSA PUBLIC KEY-----\nMIIB....\n-----END RSA PUBLIC KEY-----",
    ],
)
def test_public_key_lookalikes_are_refused(secret: bytes) -> None:
    with pytest.raises(ConfigurationError, match="refusing an HMAC secret"):
        SecretKey(secret, "HS256")


_CURVES = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}


@pytest.mark.parametrize("curve", list(_CURVES))
@pytest.mark.parametrize("form", ["UncompressedPoint", "CompressedPoint"])
def test_raw_ec_points_are_refused(curve: str, form: str) -> None:
    public = ec.generate_private_key(_CURVES[curve]).public_key()
    point = public.public_bytes(Encoding.X962, getattr(PublicFormat, form))
    assert len(point) in (65, 97, 133, 33, 49, 67)
    with pytest.raises(ConfigurationError, match="raw EC public point"):
        SecretKey(point, "HS256")


@pytest.mark.parametrize("size", [33, 49, 67])
def test_a_compressed_point_needs_a_valid_x(size: int) -> None:
    """Only what decodes as a point is refused: an x of all ones is not below the field prime."""
    SecretKey(b"\x02" + b"\xff" * (size - 1), "HS256")
    SecretKey(b"\x05" + b"\x01" * (size - 1), "HS256")  # not a SEC 1 prefix


def _key_material() -> dict[str, bytes]:
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    x = public.public_numbers().x.to_bytes(32, "big")
    y = public.public_numbers().y.to_bytes(32, "big")
    jwk = {"kty": "EC", "crv": "P-256", "x": b64url_encode(x), "y": b64url_encode(y)}
    return {
        "jwk with a BOM": b"\xef\xbb\xbf" + json.dumps(jwk, indent=2).encode(),
        "jwks with a BOM and spaces": b"\xef\xbb\xbf  " + json.dumps({"keys": [jwk]}).encode(),
        "hex DER": der.hex().encode(),
        "hex DER, upper case, wrapped": (der.hex().upper()[:60] + "\n" + der.hex()[60:]).encode(),
        "hex DER with colons": ":".join(f"{b:02x}" for b in der).encode(),
    }


@pytest.mark.parametrize("form", list(_key_material()))
def test_other_encodings_of_public_keys_are_refused(form: str) -> None:
    with pytest.raises(ConfigurationError, match="refusing an HMAC secret"):
        SecretKey(_key_material()[form], "HS256")


def test_hex_certificates_are_refused(ca: DevCA) -> None:
    der = ca.root_certificate.public_bytes(Encoding.DER)
    with pytest.raises(ConfigurationError, match="hex DER"):
        SecretKey(der.hex().encode(), "HS256")


@pytest.mark.parametrize("tail", [b"\n", b"\r\n", b" \t", b"\x00", b"junk after the key"])
def test_der_keys_and_certificates_with_bytes_after_them_are_refused(
    ca: DevCA, tail: bytes
) -> None:
    # an editor's newline (or anything else) after the DER does not make it a secret
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    spki = public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    cert = ca.root_certificate.public_bytes(Encoding.DER)
    for der in (spki, cert):
        for material in (der + tail, (der.hex().encode() + tail.hex().encode())):
            with pytest.raises(ConfigurationError, match="DER key or certificate"):
                SecretKey(material, "HS256")


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()])
def test_der_keys_of_every_length_form_are_refused(curve: ec.EllipticCurve) -> None:
    """X.690 8.1.3: a DER length under 128 is one octet; 128 to 255 (a P-521 key's 158) is
    0x81 and one more octet. Every form is recognised, raw and in hex."""
    spki = (
        ec.generate_private_key(curve)
        .public_key()
        .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )
    for material in (spki, spki.hex().encode()):
        with pytest.raises(ConfigurationError, match="DER key or certificate"):
            SecretKey(material, "HS256")


@pytest.mark.parametrize(
    ("bits", "length_octets"), [(784, b"\x7e"), (792, b"\x7f"), (800, b"\x81\x80")]
)
def test_der_keys_at_the_length_form_boundary_are_refused(bits: int, length_octets: bytes) -> None:
    """The longest one-octet DER length (127) and the shortest two-octet one (0x81 0x80),
    made with RSA public keys whose modulus size puts them there, newline after them."""
    modulus = (1 << (bits - 1)) | (0xABCDEF << 8) | 1
    spki = (
        rsa.RSAPublicNumbers(65537, modulus)
        .public_key()
        .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )
    assert spki[1 : 1 + len(length_octets)] == length_octets
    with pytest.raises(ConfigurationError, match="DER key or certificate"):
        SecretKey(spki + b"\n", "HS256")


def test_base64_der_is_refused_in_every_spelling() -> None:
    """Unpadded, URL-safe or wrapped as in a PEM body: still a public key."""
    spki = b""
    while not set(base64.b64encode(spki)) & set(b"+/"):  # so that the URL-safe spelling differs
        key = ec.generate_private_key(ec.SECP256R1()).public_key()
        spki = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    text = base64.b64encode(spki)
    assert text.endswith(b"==")
    for material in (
        text.rstrip(b"="),
        base64.urlsafe_b64encode(spki).rstrip(b"="),
        b"\n".join(text[i : i + 64] for i in range(0, len(text), 64)),
    ):
        with pytest.raises(ConfigurationError, match="base64 DER"):
            SecretKey(material, "HS256")


def test_a_json_array_is_a_lookalike_only_when_it_holds_a_jwk() -> None:
    for text in (
        b'["kty is only a word here", 1234567890]',
        b'[{"note": "no key in here"}, 12345]',
    ):
        assert SecretKey(text, "HS256").algorithm == "HS256"


def test_ordinary_random_secrets_are_accepted() -> None:
    for _ in range(200):
        SecretKey(secrets.token_bytes(32))
        SecretKey(secrets.token_bytes(48), "HS384")
        SecretKey(secrets.token_bytes(64), "HS512")
        SecretKey(secrets.token_urlsafe(48).encode())
        SecretKey(secrets.token_hex(32).encode())
        SecretKey(b"\x02" + secrets.token_bytes(31))  # 32 bytes: not a point's length
        SecretKey(b"\x30" + secrets.token_bytes(47))  # a SEQUENCE tag, then random bytes
        SecretKey(b"\x30\x82" + secrets.token_bytes(46))
    SecretKey(b'{"not": "a key", "padding": "xxxxxxxxxxxxxxxxxxxxxxxx"}')


def test_repr_and_fingerprint_do_not_leak(hmac_key: SecretKey) -> None:
    from .conftest import HMAC_SECRET

    text = repr(hmac_key) + hmac_key.fingerprint()
    assert HMAC_SECRET.hex() not in text
    assert "redacted" in repr(hmac_key)
    assert len(hmac_key.fingerprint()) == 16
    with pytest.raises(TypeError):
        pickle.dumps(hmac_key)
    # no instance dictionary: vars(), and the debuggers and serializers that read it, never
    # see the secret (nor its signer, which holds it)
    for holder in (hmac_key, SecretKeySet(hmac_key)):
        assert not hasattr(holder, "__dict__")
        with pytest.raises(TypeError):
            vars(holder)


def test_sign_is_hmac(hmac_key: SecretKey) -> None:
    from .conftest import HMAC_SECRET

    assert hmac_key.sign(b"data") == hmac.digest(HMAC_SECRET, b"data", "sha256")
    assert hmac_key._verify(hmac_key.sign(b"data"), b"data")
    assert not hmac_key._verify(hmac_key.sign(b"data")[:-1], b"data")
    assert not hmac_key._verify(hmac_key.sign(b"data"), b"date")
    # the key verifies its own algorithm only, whatever a header names
    assert hmac_key._verifier_for("HS256") is hmac_key._verify
    assert hmac_key._verifier_for("HS512") is None


def test_equality_and_hash(hmac_key: SecretKey) -> None:
    from .conftest import HMAC_SECRET

    same = SecretKey(HMAC_SECRET, "HS256", kid="hs-1")
    assert same == hmac_key
    assert hash(same) == hash(hmac_key)
    assert SecretKey(HMAC_SECRET, "HS512", kid="hs-1") != hmac_key
    assert SecretKey(HMAC_SECRET, "HS256") != hmac_key
    # another secret under the same kid is another key: a rotated secret is a key-set change
    rotated = SecretKey(bytes(reversed(HMAC_SECRET)), "HS256", kid="hs-1")
    assert rotated != hmac_key
    assert hash(rotated) != hash(hmac_key)  # the secret counts in the hash too
    assert SecretKeySet(rotated) != SecretKeySet(hmac_key)
    assert hash(SecretKeySet(rotated)) != hash(SecretKeySet(hmac_key))
    assert SecretKeySet(same) == SecretKeySet(hmac_key)
    assert hash(SecretKeySet(same)) == hash(SecretKeySet(hmac_key))
    assert (SecretKeySet(same) == hmac_key) is False
    assert hmac_key.algorithms == {"HS256"}
    with pytest.raises(AttributeError):
        hmac_key._secret = b"x"  # type: ignore[misc]


def test_bad_kid() -> None:
    for kid in ("", 5, b"kid", "k" * 1025):  # the last: longer than any token header's kid
        with pytest.raises(ConfigurationError):
            SecretKey(secrets.token_bytes(32), kid=kid)  # type: ignore[arg-type]
    assert SecretKey(secrets.token_bytes(32), kid="k" * 1024).kid == "k" * 1024


def test_secret_key_set_lookup(hmac_key: SecretKey) -> None:
    key_set = SecretKeySet(hmac_key)
    assert len(key_set) == 1
    assert list(key_set) == [hmac_key]
    assert key_set.select(None) is hmac_key
    assert key_set.select("hs-1") is hmac_key
    assert key_set.select("other") is None
    assert key_set.is_ambiguous("hs-1") is False  # one key: no kid names two
    anonymous = SecretKeySet(SecretKey(secrets.token_bytes(32)))
    assert anonymous.get("anything") is None
    # a key without a kid is found by no kid, not even a missing one; select() takes it
    assert anonymous.get(None) is None  # type: ignore[arg-type]
    assert anonymous.select(None) is anonymous.key
    assert key_set == SecretKeySet(hmac_key)
    assert "redacted" in repr(key_set)
    with pytest.raises(ConfigurationError):
        SecretKeySet("secret")  # type: ignore[arg-type]


def test_json_nested_too_deep_to_read_is_not_taken_for_a_key() -> None:
    # the lookalike check reads JSON-looking secrets: nesting past the parser's recursion
    # limit is no key document, and must not escape as RecursionError
    secret = b"[" * 100_000
    assert SecretKey(secret, "HS256").algorithm == "HS256"
