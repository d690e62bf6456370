"""Step 1: bounds, segments, header rules, key selection and signatures."""

from __future__ import annotations

import array
import asyncio
import base64
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed448, rsa

from zerotrust.errors import (
    AlgorithmNotAllowed,
    ConfigurationError,
    InvalidSignature,
    InvalidTokenType,
    KeysUnavailable,
    MalformedToken,
    TokenTooLarge,
    UnknownKey,
    UnsupportedTokenFeature,
    ZeroTrustError,
)
from zerotrust.tokens import (
    JWK,
    JWKSet,
    KeyRequest,
    PrivateJWK,
    SecretKey,
    SignatureVerifier,
    StaticKeySource,
    TokenVerifier,
    verify_signature,
)
from zerotrust.tokens.algorithms import JWT_SVID_ALGORITHMS

from .conftest import b64, b64json, claims, mint
from .test_cves import CountingSource

Factory = Callable[..., TokenVerifier]


def _verifier(key: PrivateJWK | SecretKey, **kwargs: Any) -> SignatureVerifier:
    keys = key if isinstance(key, SecretKey) else key.public()
    return SignatureVerifier(keys=keys, algorithms=[key.algorithm], **kwargs)


# --- bounds --------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, 5, 1.5, ["a.b.c"], {"t": 1}, object()])
def test_token_must_be_str_or_bytes(token: Any, es256: PrivateJWK) -> None:
    with pytest.raises(MalformedToken, match="str or bytes"):
        _verifier(es256).verify(token)


def test_bytes_bytearray_and_memoryview_tokens(es256: PrivateJWK) -> None:
    token = mint(es256, claims())
    verifier = _verifier(es256)
    for form in (token, token.encode(), bytearray(token.encode()), memoryview(token.encode())):
        assert verifier.verify(form).key_id == es256.kid  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "empty"),
        (b"", "empty"),
        ("é.a.b", "not ASCII"),
        ("a.b.c\u2028", "not ASCII"),
        (b"\xff.a.b", "not ASCII"),
        (bytearray(b"a.b.c\x80"), "not ASCII"),
    ],
)
def test_non_ascii_or_empty_is_malformed(token: Any, reason: str, es256: PrivateJWK) -> None:
    with pytest.raises(MalformedToken, match=reason):
        _verifier(es256).verify(token)


def test_max_token_size_is_exact(es256: PrivateJWK) -> None:
    token = mint(es256, claims())
    assert _verifier(es256, max_token_size=len(token)).verify(token)
    with pytest.raises(TokenTooLarge):
        _verifier(es256, max_token_size=len(token) - 1).verify(token)
    with pytest.raises(TokenTooLarge):
        _verifier(es256, max_token_size=len(token) - 1).verify(token.encode())


def test_max_token_size_counts_bytes_of_any_buffer(es256: PrivateJWK) -> None:
    """A memoryview's len() counts items: one of 8-byte items is 8 times longer in bytes."""
    token = next(t for n in range(16) if len(t := mint(es256, claims(pad="x" * n))) % 8 == 0)
    words = array.array("Q")
    words.frombytes(token.encode())
    view = memoryview(words)
    assert len(view) * 8 == view.nbytes == len(token)
    with pytest.raises(TokenTooLarge):
        _verifier(es256, max_token_size=len(token) - 1).verify(view)  # type: ignore[arg-type]
    assert _verifier(es256, max_token_size=len(token)).verify(view)  # type: ignore[arg-type]


def test_max_token_size_defaults_to_8192_bytes(es256: PrivateJWK) -> None:
    verifier = _verifier(es256)
    assert verifier.max_token_size == 8192
    with pytest.raises(MalformedToken):  # within the bound: read, and refused as no JWS
        verifier.verify("a" * 8192)
    with pytest.raises(TokenTooLarge):
        verifier.verify("a" * 8193)
    with pytest.raises(TokenTooLarge):
        verifier.verify(b"a" * 8193)


@pytest.mark.parametrize("size", [0, 255, 1 << 21, 8192.0, True])
def test_max_token_size_bounds(size: Any, es256: PrivateJWK) -> None:
    with pytest.raises(ConfigurationError):
        _verifier(es256, max_token_size=size)


@pytest.mark.parametrize("size", [256, 1 << 20])
def test_max_token_size_bounds_are_inclusive(size: int, es256: PrivateJWK) -> None:
    assert _verifier(es256, max_token_size=size).max_token_size == size


@pytest.mark.parametrize("token", ["a", "a.b", "a.b.c.d", "a.b.c.d.e.f", "...", "a..b.c"])
def test_segment_count(token: str, es256: PrivateJWK) -> None:
    with pytest.raises(MalformedToken, match="exactly three dot-separated segments"):
        _verifier(es256).verify(token)


@pytest.mark.parametrize("token", ["a b.c.d", "a.b+.c", "a.b.c/", "a.b.c=", "a.b.c\n", "a.b,c"])
def test_a_character_outside_base64url_is_named(token: str, es256: PrivateJWK) -> None:
    with pytest.raises(MalformedToken, match="not base64url"):
        _verifier(es256).verify(token)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda h, p, s: (h + "=", p, s),  # padding
        lambda h, p, s: (h, p + "=", s),
        lambda h, p, s: (h, p, s + "=="),
        lambda h, p, s: (h, p.replace("-", "+").replace("_", "/") + "+/", s),  # std alphabet
        lambda h, p, s: (h, p[:10] + " " + p[10:], s),  # whitespace
        lambda h, p, s: (h, p[:10] + "\n" + p[10:], s),
        lambda h, p, s: (h, p, s + "AAA"),  # length 1 mod 4
        lambda h, p, s: (h, p, s[:-1] + "B"),  # non-canonical trailing bits (86 chars)
    ],
)
def test_strict_base64url(mutate: Any, es256: PrivateJWK) -> None:
    h, p, s = mint(es256, claims()).split(".")
    with pytest.raises(MalformedToken):
        _verifier(es256).verify(".".join(mutate(h, p, s)))


def test_non_canonical_payload_is_refused_even_when_signed(es256: PrivateJWK) -> None:
    """A second spelling of a payload is refused before the signature is checked, even one
    the key really signed (one signed token, one spelling: no cache or replay-key bypass)."""
    payload = next(p for n in range(4) if len(p := b64json(claims(pad="x" * n))) % 4 == 2)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    bumped = payload[:-1] + alphabet[alphabet.index(payload[-1]) + 1]  # same bytes, unused bits
    signing_input = b64json({"alg": "ES256", "kid": es256.kid}) + "." + bumped
    token = signing_input + "." + b64(es256.sign(signing_input.encode()))
    with pytest.raises(MalformedToken):
        _verifier(es256).verify(token)


def test_non_canonical_trailing_bits_in_header(es256: PrivateJWK) -> None:
    # {"alg":"ES256"} encodes to 20 chars (length 0 mod 4); add a key so the length is 2 mod 4
    header = b64json({"alg": "ES256", "kid": es256.kid, "x": 1})
    assert len(header) % 4 in (2, 3)
    last = header[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    bumped = alphabet[alphabet.index(last) + 1]
    token = mint(es256, claims(), {"alg": "ES256", "kid": es256.kid, "x": 1})
    _, p, s = token.split(".")
    with pytest.raises(MalformedToken):
        _verifier(es256).verify(header[:-1] + bumped + "." + p + "." + s)


# --- header rules --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        b64(b"not json"),
        b64(b"[1,2]"),
        b64(b'"str"'),
        b64(b'{"alg":"ES256","alg":"ES256"}'),
        b64(b'{"alg":"ES256","\\u0061lg":"none"}'),  # the same name, spelled with an escape
        b64(b'{"alg":"ES256","kid":"a","\\u006bid":"b"}'),
        b64(b'{"alg":"ES256"} trailing'),
        b64(b'{"alg":"ES256","n":NaN}'),
        b64(b'{"alg":"ES256","n":1e999}'),
        b64(b'{"alg":"ES256","kid":"\\ud800"}'),
        b64(b'{"alg":"ES256","deep":' + b"[" * 40 + b"]" * 40 + b"}"),
        b64(b'\xef\xbb\xbf{"alg":"ES256"}'),
        b64(b'{"alg":"ES256"}\xff'),
        b64json({"alg": 256}),
        b64json({"typ": "JWT"}),
        b64json({"alg": "ES256", "kid": ""}),
        b64json({"alg": "ES256", "kid": 7}),
        b64json({"alg": "ES256", "kid": None}),  # registered parameters are never null
        b64json({"alg": "ES256", "typ": None}),
        b64json({"alg": "ES256", "cty": None}),
        b64json({"alg": "ES256", "jku": None}),
        b64json({"alg": "ES256", "kid": "k" * 1025}),
        b64json({"alg": "ES256", "typ": 1}),
        b64json({"alg": "ES256", "cty": 1}),
        b64json({"alg": "ES256", "pad": "x" * 4000}),
    ],
)
def test_malformed_headers(header: str, es256: PrivateJWK) -> None:
    with pytest.raises(MalformedToken):
        _verifier(es256).verify(header + ".e30.AAAA")


def test_deep_header_never_reaches_recursion_error(es256: PrivateJWK) -> None:
    header = b64(b'{"alg":"ES256","d":' + b"[" * 3000 + b"]" * 3000 + b"}")
    with pytest.raises(MalformedToken):
        _verifier(es256, max_token_size=65536).verify(header + ".e30.AAAA")


@pytest.mark.parametrize("alg", ["ES384", "RS256", "HS256", "es256", "ES256 ", "", "PS256"])
def test_alg_outside_allowlist(alg: str, es256: PrivateJWK) -> None:
    with pytest.raises(AlgorithmNotAllowed):
        _verifier(es256).verify(mint(es256, claims(), {"alg": alg, "kid": es256.kid}))


def test_a_key_of_an_algorithm_outside_the_allowlist_verifies_nothing(
    es256: PrivateJWK, es384: PrivateJWK, eddsa: PrivateJWK
) -> None:
    """The allowlist is checked against the header itself: a key the key set holds for another
    algorithm does not widen it, whoever signed the token with that key."""
    verifier = SignatureVerifier(
        keys=JWKSet([es256.public(), es384.public()]), algorithms=["ES256"]
    )
    with pytest.raises(AlgorithmNotAllowed):
        verifier.verify(mint(es384, claims()))
    # an Ed25519 key read without alg verifies both of its names; the allowlist names one
    unnamed = JWK(eddsa.private_key.public_key())  # type: ignore[arg-type]
    with pytest.raises(AlgorithmNotAllowed):
        verify_signature(mint(eddsa, claims(), {"alg": "Ed25519"}), unnamed, algorithms=["EdDSA"])


def test_header_and_kid_sizes_are_inclusive_bounds(es256: PrivateJWK) -> None:
    prefix = '{"alg":"ES256","kid":"es256-1","pad":"'
    text = prefix + "x" * (3072 - len(prefix) - 2) + '"}'  # 3072 bytes: 4096 base64url characters
    header = b64(text.encode())
    assert len(header) == 4096
    payload = b64json(claims())
    signed = header + "." + payload
    assert _verifier(es256).verify(signed + "." + b64(es256.sign(signed.encode())))
    long_kid = PrivateJWK(es256.private_key, kid="k" * 1024)
    assert _verifier(long_kid).verify(mint(long_kid, claims())).key_id == "k" * 1024
    longer = mint(es256, claims(), {"alg": "ES256", "kid": "k" * 1025})
    with pytest.raises(MalformedToken, match="'kid' must be a non-empty string of at most 1024"):
        _verifier(long_kid).verify(longer)


def test_null_private_header_parameters_are_allowed(es256: PrivateJWK) -> None:
    """Only registered parameters may not be null (RFC 7515 4.1); others are the issuer's."""
    token = mint(es256, claims(), {"alg": "ES256", "kid": es256.kid, "note": None})
    assert _verifier(es256).verify(token).header["note"] is None


def test_b64_true_is_the_default_encoding(es256: PrivateJWK) -> None:
    """RFC 7797 3: ``b64: true`` is the ordinary base64url payload; only ``false`` is refused."""
    token = mint(es256, claims(), {"alg": "ES256", "kid": es256.kid, "b64": True})
    assert _verifier(es256).verify(token).header["b64"] is True


@pytest.mark.parametrize("cty", ["JWT", "jwt", "application/JWT"])
def test_nested_jwt_refused(cty: str, es256: PrivateJWK) -> None:
    with pytest.raises(UnsupportedTokenFeature):
        _verifier(es256).verify(mint(es256, claims(), cty=cty))


def test_other_cty_values_are_ignored(es256: PrivateJWK) -> None:
    assert _verifier(es256).verify(mint(es256, claims(), cty="application/example"))


@pytest.mark.parametrize(
    ("token_type", "typ", "ok"),
    [
        (None, None, True),
        (None, "JWT", True),
        (None, "jwt", True),
        (None, "application/jwt", True),
        (None, "at+jwt", False),
        (None, "dpop+jwt", False),
        (None, "JOSE", False),
        (None, "secevent+jwt", False),
        ("jwt-svid", None, True),
        ("jwt-svid", "JWT", True),
        ("jwt-svid", "JOSE", True),
        ("jwt-svid", "at+jwt", False),
        ("jwt-svid", "application/at+jwt", False),
        ("at+jwt", "at+jwt", True),
        ("at+jwt", "AT+JWT", True),
        ("at+jwt", "application/at+jwt", True),
        ("at+jwt", None, False),
        ("at+jwt", "JWT", False),
        ("at+jwt", "dpop+jwt", False),
    ],
)
def test_typ_per_profile(
    token_type: str | None, typ: str | None, ok: bool, es256: PrivateJWK
) -> None:
    header: dict[str, Any] = {"alg": "ES256", "kid": es256.kid}
    if typ is not None:
        header["typ"] = typ
    verifier = _verifier(es256, token_type=token_type)
    token = mint(es256, claims(), header)
    if ok:
        assert verifier.verify(token)
    else:
        with pytest.raises(InvalidTokenType):
            verifier.verify(token)


def test_the_memo_of_parsed_headers_is_bounded(es256: PrivateJWK) -> None:
    """Each distinct header is parsed once; at most 256 of them are kept, so tokens that
    differ only in their headers cannot grow a verifier's memory without bound."""
    verifier = _verifier(es256)
    tokens = [mint(es256, claims(), n=i) for i in range(257)]
    for token in tokens[:256]:
        assert verifier.verify(token)
    assert len(verifier._headers) == 256
    assert verifier.verify(tokens[256])
    assert 0 < len(verifier._headers) <= 256


# --- key selection (kid) -------------------------------------------------------------------------


def test_kid_absent_with_exactly_one_key(es256: PrivateJWK) -> None:
    token = mint(es256, claims(), {"alg": "ES256"})
    signed = _verifier(es256).verify(token)
    assert signed.key_id == es256.kid  # reported from the selected key


def test_kid_absent_with_several_keys_is_unknown(es256: PrivateJWK, es384: PrivateJWK) -> None:
    keys = JWKSet([es256.public(), es384.public()])
    verifier = SignatureVerifier(keys=keys, algorithms=["ES256", "ES384"])
    with pytest.raises(UnknownKey):
        verifier.verify(mint(es256, claims(), {"alg": "ES256"}))
    assert verifier.verify(mint(es256, claims()))


def test_a_token_without_kid_never_makes_the_source_refetch(
    es256: PrivateJWK, es384: PrivateJWK
) -> None:
    """Only a named, unknown kid may ask the source to refetch (RFC 7515 4.1.4); a token
    without one cannot make anyone fetch the key set again."""
    source = CountingSource(JWKSet([es256.public(), es384.public()]))
    verifier = SignatureVerifier(keys=source, algorithms=["ES256", "ES384"])
    with pytest.raises(UnknownKey, match="no kid"):
        verifier.verify(mint(es256, claims(), {"alg": "ES256"}))
    assert source.calls == [None]


def test_unknown_kid_asks_the_source_once(es256: PrivateJWK) -> None:
    source = CountingSource(JWKSet([es256.public()]))
    verifier = SignatureVerifier(keys=source, algorithms=["ES256"])
    with pytest.raises(UnknownKey, match="not found"):
        verifier.verify(mint(es256, claims(), {"alg": "ES256", "kid": "other"}))
    assert source.calls == [None, "other"]


def test_refetch_finds_a_rotated_key(es256: PrivateJWK, es384: PrivateJWK) -> None:
    class Rotating(CountingSource):
        def get_keys(self, *, missing_kid: str | None = None) -> Any:
            self.calls.append(missing_kid)
            return JWKSet([es384.public()]) if missing_kid else self.keys

    source = Rotating(JWKSet([es256.public()]))
    verifier = SignatureVerifier(keys=source, algorithms=["ES256", "ES384"])
    assert verifier.verify(mint(es384, claims())).key_id == es384.kid
    assert source.calls == [None, es384.kid]


def test_ambiguous_kid_is_refused(es256: PrivateJWK, attacker: PrivateJWK) -> None:
    keys = JWKSet([es256.public(), attacker.public()])  # both use kid "es256-1"
    verifier = SignatureVerifier(keys=StaticKeySource(keys), algorithms=["ES256"])
    for signer in (es256, attacker):
        with pytest.raises(UnknownKey, match="several"):
            verifier.verify(mint(signer, claims()))


def test_key_set_with_no_matching_key_is_a_configuration_error(es256: PrivateJWK) -> None:
    with pytest.raises(ConfigurationError, match="no key"):
        SignatureVerifier(keys=es256.public(), algorithms=["ES384"])


def test_source_failure_propagates_fail_closed(es256: PrivateJWK) -> None:
    class Down:
        def get_keys(self, *, missing_kid: str | None = None) -> Any:
            raise KeysUnavailable("jwks endpoint unreachable")

        async def get_keys_async(self, *, missing_kid: str | None = None) -> Any:
            raise KeysUnavailable("jwks endpoint unreachable")

    verifier = SignatureVerifier(keys=Down(), algorithms=["ES256"])
    token = mint(es256, claims())
    with pytest.raises(KeysUnavailable):
        verifier.verify(token)
    with pytest.raises(KeysUnavailable):
        asyncio.run(verifier.verify_async(token))


def test_source_returning_garbage_fails_closed(es256: PrivateJWK) -> None:
    source = CountingSource({"keys": []})
    with pytest.raises(KeysUnavailable):
        SignatureVerifier(keys=source, algorithms=["ES256"]).verify(mint(es256, claims()))


def test_source_returning_garbage_on_refetch_fails_closed(es256: PrivateJWK) -> None:
    class GarbageOnRefetch(CountingSource):
        def get_keys(self, *, missing_kid: str | None = None) -> Any:
            self.calls.append(missing_kid)
            return {"keys": []} if missing_kid else self.keys

    source = GarbageOnRefetch(JWKSet([es256.public()]))
    verifier = SignatureVerifier(keys=source, algorithms=["ES256"])
    with pytest.raises(KeysUnavailable):
        verifier.verify(mint(es256, claims(), {"alg": "ES256", "kid": "other"}))
    assert source.calls == [None, "other"]


# --- signatures ----------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES256", "ES384", "ES512", "EdDSA", "RS256", "PS256"])
def test_every_algorithm_round_trips(
    alg: str,
    es256: PrivateJWK,
    es384: PrivateJWK,
    es512: PrivateJWK,
    eddsa: PrivateJWK,
    rsa_key: PrivateJWK,
    ps256: PrivateJWK,
) -> None:
    key = {"ES256": es256, "ES384": es384, "ES512": es512, "EdDSA": eddsa}.get(alg)
    key = key or {"RS256": rsa_key, "PS256": ps256}[alg]
    signed = verify_signature(mint(key, claims()), key.public(), algorithms=[alg])
    assert signed.algorithm == alg
    assert signed.key == key.public()
    assert signed.claims["jti"] == "id-0001"
    assert "VerifiedSignature" in repr(signed)


@pytest.mark.parametrize("alg", ["Ed448", "EdDSA"])
def test_ed448_round_trips_under_both_names(alg: str) -> None:
    """An Ed448 signature is 114 bytes (RFC 8032 5.2.6), not Ed25519's 64."""
    key = PrivateJWK(ed448.Ed448PrivateKey.generate(), algorithm=alg)
    signed = verify_signature(mint(key, claims()), key.public(), algorithms=[alg])
    assert signed.algorithm == alg
    assert signed.claims["jti"] == "id-0001"


def test_wrong_key_fails(es256: PrivateJWK, attacker: PrivateJWK) -> None:
    with pytest.raises(InvalidSignature):
        _verifier(es256).verify(mint(attacker, claims()))


def test_hmac(hmac_key: SecretKey) -> None:
    token = mint(hmac_key, claims())
    assert _verifier(hmac_key).verify(token).key == hmac_key
    other = SecretKey(bytes(64), "HS256", kid="hs-1")
    with pytest.raises(InvalidSignature):
        _verifier(hmac_key).verify(mint(other, claims()))
    with pytest.raises(UnknownKey):
        _verifier(hmac_key).verify(mint(hmac_key, claims(), {"alg": "HS256", "kid": "x"}))


def test_hmac_policy(hmac_key: SecretKey, es256: PrivateJWK) -> None:
    with pytest.raises(ConfigurationError):
        SignatureVerifier(keys=hmac_key, algorithms=["HS256", "ES256"])
    with pytest.raises(ConfigurationError):
        SignatureVerifier(keys=hmac_key, algorithms=["ES256"])
    with pytest.raises(ConfigurationError):
        SignatureVerifier(keys=hmac_key, algorithms=["HS512"])
    with pytest.raises(ConfigurationError, match="HMAC algorithms need a SecretKey"):
        SignatureVerifier(keys=es256.public(), algorithms=["HS256"])


def test_an_hmac_key_verifies_only_its_own_algorithm(hmac_key: SecretKey) -> None:
    """With HS256 and HS384 both allowed, an HS256 secret does not take a token whose header
    says HS384: the header names the algorithm that is checked, and the key has one."""
    verifier = SignatureVerifier(keys=hmac_key, algorithms=["HS256", "HS384"])
    assert verifier.verify(mint(hmac_key, claims())).algorithm == "HS256"
    with pytest.raises(AlgorithmNotAllowed):
        verifier.verify(mint(hmac_key, claims(), {"alg": "HS384", "kid": hmac_key.kid}))


def test_payload_is_not_parsed_before_the_signature(
    es256: PrivateJWK, attacker: PrivateJWK
) -> None:
    # An invalid signature over a non-JSON payload reports the signature, not the payload.
    token = mint(attacker, b"not json at all")
    with pytest.raises(InvalidSignature):
        _verifier(es256).verify(token)
    signed = _verifier(es256).verify(mint(es256, b"not json at all"))
    with pytest.raises(MalformedToken):
        _ = signed.claims


def test_flow_is_sans_io(es256: PrivateJWK) -> None:
    source = CountingSource(JWKSet([es256.public()]))
    verifier = SignatureVerifier(keys=source, algorithms=["ES256"])
    flow = verifier.flow(mint(es256, claims()))
    request = next(flow)
    assert isinstance(request, KeyRequest)
    assert request.missing_kid is None
    assert source.calls == []  # the flow itself does no I/O
    with pytest.raises(StopIteration) as stop:
        flow.send(request.fulfil())
    assert stop.value.value.algorithm == "ES256"
    assert asyncio.run(request.fulfil_async()) == JWKSet([es256.public()])


def test_flow_with_static_keys_needs_no_io(es256: PrivateJWK) -> None:
    # a fixed key set is at hand: the flow finishes without asking its driver for keys
    flow = _verifier(es256).flow(mint(es256, claims()))
    with pytest.raises(StopIteration) as stop:
        next(flow)
    assert stop.value.value.algorithm == "ES256"
    bad = _verifier(es256).flow(mint(es256, claims(), kid="other"))
    with pytest.raises(UnknownKey):  # an unknown kid still asks the source once more
        bad.send(next(bad).fulfil())


def test_verify_async(es256: PrivateJWK) -> None:
    signed = asyncio.run(_verifier(es256).verify_async(mint(es256, claims())))
    assert signed.key_id == es256.kid


def test_header_cache_is_bounded(es256: PrivateJWK) -> None:
    verifier = _verifier(es256)
    for i in range(600):
        verifier.verify(mint(es256, claims(), {"alg": "ES256", "kid": es256.kid, "n": i}))
    assert len(verifier._headers) <= 256


def test_signature_verifier_properties(es256: PrivateJWK) -> None:
    verifier = _verifier(es256, max_token_size=4096)
    assert verifier.algorithms == {"ES256"}
    assert verifier.max_token_size == 4096
    assert isinstance(verifier.source, StaticKeySource)
    assert isinstance(JWK.from_dict(es256.public().to_public_dict()), JWK)


@pytest.mark.parametrize("critical", ["ext", [1]])
def test_critical_must_be_names(critical: Any, es256: PrivateJWK) -> None:
    with pytest.raises(ConfigurationError):
        _verifier(es256, critical=critical)


def test_token_type_and_jwt_svid_algorithms(es256: PrivateJWK, eddsa: PrivateJWK) -> None:
    with pytest.raises(ConfigurationError):
        _verifier(es256, token_type="jwt")
    every = sorted(JWT_SVID_ALGORITHMS)  # all of them at once is allowed
    assert SignatureVerifier(keys=es256.public(), algorithms=every, token_type="jwt-svid")
    with pytest.raises(ConfigurationError, match="JWT-SVID"):
        SignatureVerifier(keys=eddsa.public(), algorithms=["EdDSA"], token_type="jwt-svid")


def test_stop_iteration_from_a_source_never_ends_the_flow(es256: PrivateJWK) -> None:
    class Broken:
        def get_keys(self, *, missing_kid: str | None = None) -> Any:
            raise StopIteration

        async def get_keys_async(self, *, missing_kid: str | None = None) -> Any:
            raise StopIteration

    token = mint(es256, claims())
    for cache_size in (0, 10):
        verifier = TokenVerifier(
            issuer="https://issuer.example",
            audience="spiffe://example.org/svc/orders",
            keys=Broken(),
            algorithms=["ES256"],
            cache_size=cache_size,
        )
        with pytest.raises(KeysUnavailable):
            verifier.verify(token)
        with pytest.raises((KeysUnavailable, RuntimeError)):
            asyncio.run(verifier.verify_async(token))


def test_a_key_read_without_alg_verifies_one_algorithm(rsa_key: PrivateJWK) -> None:
    """RFC 8725 3.1: each key is used with exactly one algorithm. An RSA key published without
    ``alg`` is an RS256 key: never PS256 or RS384, even with those in the verifier's allowlist
    and the signature made by the same RSA key. (A SPIFFE JWT authority, ``use: jwt-svid``,
    verifies the JWT-SVID RSA algorithms: see test_keys and the SPIFFE bundle tests.)"""
    members = {k: v for k, v in rsa_key.public().to_public_dict().items() if k != "alg"}
    unnamed = JWK.from_dict(members)
    allowed = ["RS256", "RS384", "PS256"]
    for alg in allowed:
        token = mint(PrivateJWK(rsa_key.private_key, algorithm=alg), {"sub": "a"}, {"alg": alg})
        if alg == "RS256":
            assert verify_signature(token, unnamed, algorithms=allowed).algorithm == alg
        else:
            with pytest.raises(AlgorithmNotAllowed):
                verify_signature(token, unnamed, algorithms=allowed)
        named = JWK.from_dict({**members, "alg": alg})
        assert verify_signature(token, named, algorithms=allowed).algorithm == alg


def test_rsa_keys_whose_size_is_not_a_multiple_of_eight() -> None:
    """A 2050-bit modulus makes 257-byte signatures (RFC 8017 8.2.2: k octets, k the length
    of the modulus in octets, rounded up): they verify, and a byte more or less does not."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2050)
    assert private.key_size == 2050
    for alg in ("RS256", "PS256"):
        signer = PrivateJWK(private, algorithm=alg)
        token = mint(signer, {"sub": "a"}, {"alg": alg})
        assert len(b64decode_segment(token.split(".")[2])) == 257
        assert verify_signature(token, signer.public(), algorithms=[alg]).algorithm == alg
        head, payload, signature = token.split(".")
        for other in (signature[:-2], signature + "AA"):
            with pytest.raises((InvalidSignature, MalformedToken)):
                verify_signature(f"{head}.{payload}.{other}", signer.public(), algorithms=[alg])


def b64decode_segment(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def test_an_unnamed_edwards_key_verifies_both_names(eddsa: PrivateJWK) -> None:
    """RFC 9864: ``Ed25519`` is the fully-specified name of EdDSA over Ed25519."""
    unnamed = JWK(eddsa.private_key.public_key())  # type: ignore[arg-type]
    for alg in ("EdDSA", "Ed25519"):
        token = mint(eddsa, {"sub": "a"}, {"alg": alg})
        assert verify_signature(token, unnamed, algorithms=[alg]).algorithm == alg
    ecdsa = mint(PrivateJWK.generate("ES256"), {"sub": "a"}, {"alg": "ES256"})
    with pytest.raises((AlgorithmNotAllowed, InvalidSignature)):
        verify_signature(ecdsa, unnamed, algorithms=["EdDSA", "ES256"])


def test_header_refusals_name_the_profile_and_never_echo_an_unknown_alg(
    es256: PrivateJWK,
) -> None:
    """Messages say which profile refused a ``typ``, and show an algorithm only when it is
    one zerotrust knows: a header's own text is not repeated back."""
    body = claims(sub="spiffe://example.org/a", client_id="c", jti="j")

    def refusal(header: dict[str, Any], **kwargs: Any) -> str:
        token = mint(es256, body, {"alg": "ES256", "kid": es256.kid, **header})
        with pytest.raises(ZeroTrustError) as caught:
            _verifier(es256, **kwargs).verify(token)
        return str(caught.value)

    assert "for a generic JWT" in refusal({"typ": "at+jwt"})
    assert "for a jwt-svid token" in refusal({"typ": "at+jwt"}, token_type="jwt-svid")
    assert "an at+jwt token needs a 'typ'" in refusal({}, token_type="at+jwt")
    assert "algorithm 'ES384' is not in the allowlist" in refusal({"alg": "ES384"})
    shown = refusal({"alg": "<script>ES256"})
    assert "algorithm (unsupported) is not in the allowlist" in shown and "script" not in shown
