"""The verified-token cache: hits skip parsing and signatures, time windows, eviction."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from zerotrust._clock import FixedClock
from zerotrust.errors import (
    ConfigurationError,
    KeysUnavailable,
    TokenExpired,
    TokenNotYetValid,
    UnknownKey,
)
from zerotrust.tokens import JWK, JWKSet, PrivateJWK, TokenVerifier, VerifiedTokenCache
from zerotrust.tokens._b64 import b64url_decode
from zerotrust.tokens.algorithms import EC_CURVES
from zerotrust.tokens.cache import token_digest
from zerotrust.tokens.verified import VerifiedToken

from .conftest import AUDIENCE, ISSUER, T0, b64, claims, mint
from .test_cves import CountingSource


class Counted:
    """A fresh copy of a public key whose signature checks are counted."""

    def __init__(self, key: PrivateJWK) -> None:
        self.jwk = JWK.from_dict(key.public().to_public_dict())
        self.calls = 0
        real = self.jwk._verify

        def counting(signature: bytes, data: bytes) -> bool:
            self.calls += 1
            return real(signature, data)

        object.__setattr__(self.jwk, "_verify", counting)


@pytest.fixture
def counted(es256: PrivateJWK) -> Counted:
    return Counted(es256)


@pytest.fixture
def verifier(clock: FixedClock, counted: Counted) -> TokenVerifier:
    return TokenVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        keys=counted.jwk,
        algorithms=["ES256"],
        clock=clock,
        cache_size=100,
    )


def test_hit_skips_parsing_and_signature(
    verifier: TokenVerifier, counted: Counted, es256: PrivateJWK, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = mint(es256, claims())
    first = verifier.verify(token)
    assert counted.calls == 1
    from zerotrust.tokens import signature as signature_module
    from zerotrust.tokens import verify as verify_module

    def boom(*args: Any) -> Any:
        raise AssertionError("parsed on a cache hit")

    monkeypatch.setattr(signature_module, "a2b_base64", boom)
    monkeypatch.setattr(verify_module, "loads_dict", boom)
    for form in (token, token.encode()):
        assert verifier.verify(form) is first
    assert counted.calls == 1


def test_cache_key_is_the_hash_not_the_token(verifier: TokenVerifier, es256: PrivateJWK) -> None:
    token = mint(es256, claims())
    verifier.verify(token)
    cache = verifier.cache
    assert cache is not None
    assert list(cache._entries) == [token_digest(token.encode())]
    assert all(len(key) == 32 for key in cache._entries)


def test_expired_entry_is_never_returned(
    verifier: TokenVerifier, counted: Counted, es256: PrivateJWK, clock: FixedClock
) -> None:
    token = mint(es256, claims())
    verifier.verify(token)
    clock.advance(299.5)
    verifier.verify(token)
    assert counted.calls == 1  # still a hit just before exp
    clock.advance(0.5)  # exactly exp: the cache refuses, full verification applies the leeway
    verifier.verify(token)
    assert counted.calls == 2
    clock.advance(60)
    with pytest.raises(TokenExpired):
        verifier.verify(token)
    assert verifier.cache is not None and len(verifier.cache) == 0


def test_entry_not_returned_before_its_window(
    verifier: TokenVerifier, counted: Counted, es256: PrivateJWK, clock: FixedClock
) -> None:
    token = mint(es256, claims(nbf=T0 + 30, iat=None))
    verifier.verify(token)
    clock.advance(-89)  # nbf - leeway - 1 second after a (test-only) clock rewind
    with pytest.raises(TokenNotYetValid):
        verifier.verify(token)
    assert counted.calls == 2


def test_the_request_fast_path_lookup_holds_only_inside_the_window(
    verifier: TokenVerifier, es256: PrivateJWK, clock: FixedClock
) -> None:
    """``_cached`` (the lookup the request pipeline makes before anything else) answers from
    the window ``[nbf - leeway, exp)`` only, like a hit of ``verify``."""
    token = mint(es256, claims(nbf=T0 + 30, iat=None))
    assert verifier._cached(token) is None  # a miss
    first = verifier.verify(token)
    assert verifier._cached(token) is first
    clock.advance(-30)  # exactly nbf - leeway
    assert verifier._cached(token) is first
    clock.advance(-0.5)
    assert verifier._cached(token) is None
    clock.advance(330.5)  # exactly exp: only full verification may apply the leeway
    assert verifier._cached(token) is None
    clock.advance(-0.5)
    assert verifier._cached(token) is first
    assert verifier._cached(token + "\u00e9") is None


def test_evict_by_jti_and_clear(
    verifier: TokenVerifier, counted: Counted, es256: PrivateJWK
) -> None:
    one = mint(es256, claims(jti="one"))
    two = mint(es256, claims(jti="two"))
    verifier.verify(one)
    verifier.verify(two)
    assert verifier.evict("one") == 1
    assert verifier.evict("one") == 0
    verifier.verify(one)
    verifier.verify(two)
    assert counted.calls == 3
    verifier.clear_cache()
    verifier.verify(two)
    assert counted.calls == 4


def test_bounded_oldest_first(clock: FixedClock, counted: Counted, es256: PrivateJWK) -> None:
    verifier = TokenVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        keys=counted.jwk,
        algorithms=["ES256"],
        clock=clock,
        cache_size=3,
    )
    tokens = [mint(es256, claims(jti=f"t{i}")) for i in range(4)]
    for token in tokens:
        verifier.verify(token)
    assert verifier.cache is not None and len(verifier.cache) == 3
    verifier.verify(tokens[3])
    assert counted.calls == 4
    verifier.verify(tokens[0])  # evicted first
    assert counted.calls == 5
    assert verifier.evict("t1") == 0  # t1 was evicted to make room for t0


def test_cache_disabled(clock: FixedClock, counted: Counted, es256: PrivateJWK) -> None:
    verifier = TokenVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        keys=counted.jwk,
        algorithms=["ES256"],
        clock=clock,
        cache_size=0,
    )
    token = mint(es256, claims())
    verifier.verify(token)
    verifier.verify(token)
    assert counted.calls == 2
    assert verifier.cache is None
    assert verifier.evict("id-0001") == 0
    verifier.clear_cache()


def test_key_set_change_empties_the_cache(
    clock: FixedClock, es256: PrivateJWK, es384: PrivateJWK
) -> None:
    counted = Counted(es256)
    source = CountingSource(JWKSet([counted.jwk]))
    verifier = TokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, keys=source, algorithms=["ES256", "ES384"], clock=clock
    )
    token = mint(es256, claims())
    verifier.verify(token)
    verifier.verify(token)
    assert counted.calls == 1
    assert source.calls == [None, None]  # a hit of a changing source still asks for its keys
    source.keys = JWKSet([counted.jwk])  # a new but equal set: the cache is kept
    verifier.verify(mint(es256, claims(jti="other")))
    verifier.verify(token)
    assert counted.calls == 2
    source.keys = JWKSet([counted.jwk, es384.public()])  # rotation: the cache is emptied
    verifier.verify(mint(es256, claims(jti="third")))
    verifier.verify(token)
    assert counted.calls == 4


@pytest.mark.parametrize("form", ["verify", "flow"])
def test_a_hit_after_the_key_is_withdrawn_is_refused(
    clock: FixedClock, es256: PrivateJWK, es384: PrivateJWK, form: str
) -> None:
    """The hit itself notices the withdrawal: no other token has to be verified first."""
    source = CountingSource(JWKSet([es256.public(), es384.public()]))
    verifier = TokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, keys=source, algorithms=["ES256", "ES384"], clock=clock
    )
    token = mint(es256, claims())
    verifier.verify(token)
    source.keys = JWKSet([es384.public()])  # es256 withdrawn
    if form == "verify":
        with pytest.raises(UnknownKey):
            verifier.verify(token)
    else:
        with pytest.raises(UnknownKey):
            asyncio.run(verifier.verify_async(token))
    assert verifier.cache is not None and len(verifier.cache) == 0


@pytest.mark.parametrize("form", ["verify", "flow"])
@pytest.mark.parametrize("junk", [None, {"keys": []}, "keys"])
def test_a_hit_from_a_source_that_answers_no_key_set_is_refused(
    clock: FixedClock, es256: PrivateJWK, form: str, junk: object
) -> None:
    """A cached verification holds only while the source still answers with a key set."""
    source = CountingSource(JWKSet([es256.public()]))
    verifier = TokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, keys=source, algorithms=["ES256"], clock=clock
    )
    token = mint(es256, claims())
    verifier.verify(token)
    source.keys = junk
    again = verifier.verify if form == "verify" else lambda t: asyncio.run(verifier.verify_async(t))
    with pytest.raises(KeysUnavailable, match="not a key set"):
        again(token)


def test_evict_reaches_both_spellings_of_an_ecdsa_signature(
    verifier: TokenVerifier, counted: Counted, es256: PrivateJWK
) -> None:
    """``(r, s)`` and ``(r, n - s)`` both verify: one signed token, two cache entries. Revoking
    its jti must end both, or the other spelling would outlive the revocation."""
    token = mint(es256, claims(jti="twin"))
    signing_input, signature = token.rsplit(".", 1)
    raw = b64url_decode(signature)
    order = EC_CURVES["ES256"][3]
    twin = (
        signing_input
        + "."
        + b64(raw[:32] + (order - int.from_bytes(raw[32:], "big")).to_bytes(32, "big"))
    )
    assert verifier.verify(token).jti == verifier.verify(twin).jti == "twin"
    assert verifier.cache is not None and len(verifier.cache) == 2
    assert verifier.evict("twin") == 2
    verifier.verify(twin)
    verifier.verify(token)
    assert counted.calls == 4  # both verified again after the eviction


def test_evict_still_finds_a_token_whose_jti_twin_expired() -> None:
    """Revocation by jti reaches every cached token of that jti, after some of them left."""
    cache = VerifiedTokenCache(10)
    short = VerifiedToken({}, {"jti": "j"}, None, "ES256")
    long = VerifiedToken({}, {"jti": "j"}, None, "ES256")
    cache.put(b"s" * 32, short, 0, 10, cache.generation)
    cache.put(b"l" * 32, long, 0, 100, cache.generation)
    assert cache.get(b"s" * 32, 10) is None  # expired: dropped
    assert cache.get(b"l" * 32, 10) is long
    assert cache.evict("j") == 1
    assert cache.get(b"l" * 32, 10) is None
    cache.put(b"k" * 32, VerifiedToken({}, {"jti": "k"}, None, "ES256"), 0, 10, cache.generation)
    assert cache.get(b"k" * 32, 10) is None
    assert cache._by_jti == {}  # an expired token leaves nothing behind


def test_clear_and_a_key_change_forget_the_jti_index(es256: PrivateJWK) -> None:
    cache = VerifiedTokenCache(10)
    token = VerifiedToken({}, {"jti": "j"}, None, "ES256")
    cache.put(b"d" * 32, token, 0, 10, cache.generation)
    cache.clear()
    assert cache.evict("j") == 0
    cache.observe_keys(JWKSet([es256.public()]))
    cache.put(b"d" * 32, token, 0, 10, cache.generation)
    cache.observe_keys(JWKSet())
    assert len(cache) == 0
    assert cache.evict("j") == 0


@pytest.mark.parametrize("size", [1, 1_000_000])
def test_cache_size_bounds_are_inclusive(size: int) -> None:
    assert VerifiedTokenCache(size).max_entries == size


@pytest.mark.parametrize("size", [0, 1_000_001, 1.0, True])
def test_cache_size_out_of_bounds(size: Any) -> None:
    with pytest.raises(ConfigurationError):
        VerifiedTokenCache(size)


def test_stale_generation_is_not_stored(es256: PrivateJWK) -> None:
    cache = VerifiedTokenCache(10)
    cache.observe_keys(JWKSet([es256.public()]))
    generation = cache.generation
    cache.observe_keys(JWKSet())
    assert cache.generation == generation + 1
    token = VerifiedToken({}, {"jti": "x"}, None, "ES256")
    cache.put(b"d" * 32, token, 0, 10, generation)
    assert len(cache) == 0
    cache.put(b"d" * 32, token, 0, 10, cache.generation)
    assert cache.get(b"d" * 32, 0) is token  # the window includes its start
    assert cache.get(b"d" * 32, 5) is token
    assert cache.get(b"d" * 32, 10) is None
    assert len(cache) == 0
    assert "VerifiedTokenCache" in repr(cache)
    assert cache.max_entries == 10


@pytest.mark.parametrize("revoke", ["evict", "clear_cache"])
def test_a_verification_under_way_does_not_store_a_token_revoked_meanwhile(
    clock: FixedClock, revoke: str
) -> None:
    """evict() and clear_cache() make a revocation take effect at once: a verification that
    was waiting for keys when they ran (a remote key set being fetched) returns its token,
    but does not put it back in the cache for later requests."""
    from zerotrust.tokens import KeyRing

    key = PrivateJWK.generate("ES256", kid="k1")
    verifier = TokenVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        keys=KeyRing(key),  # a changing key source: the flow asks it for keys
        algorithms=["ES256"],
        clock=clock,
        cache_size=100,
    )
    token = mint(key, claims(jti="revoke-me"))
    flow = verifier.flow(token)
    request = next(flow)  # waiting for keys
    if revoke == "evict":
        assert verifier.evict("revoke-me") == 0  # nothing cached yet
    else:
        verifier.clear_cache()
    with pytest.raises(StopIteration) as done:
        flow.send(request.source.get_keys(missing_kid=request.missing_kid))
    assert done.value.value.jti == "revoke-me"  # this verification's own answer stands
    assert verifier.cache is not None and len(verifier.cache) == 0
    # a verification begun after the revocation is cached as usual
    assert verifier.verify(token).jti == "revoke-me"
    assert len(verifier.cache) == 1


@pytest.mark.parametrize("size", [0, -1, 2.5, 10**7])
def test_cache_size_bounds(size: Any) -> None:
    with pytest.raises(ConfigurationError):
        VerifiedTokenCache(size)


def test_the_jti_index_never_outgrows_the_cache() -> None:
    """Entries pushed out to make room take their ``jti`` index entries with them."""
    cache = VerifiedTokenCache(3)
    assert VerifiedTokenCache().max_entries == 10_000
    for n in range(50):
        token = VerifiedToken({}, {"jti": f"j{n}"}, None, "ES256")
        cache.put(n.to_bytes(32, "big"), token, 0, 10, cache.generation)
        assert len(cache) <= 3 and len(cache._by_jti) <= 3
    assert cache.evict("j0") == 0 and cache.evict("j49") == 1


def test_a_verifier_caches_ten_thousand_verifications_by_default(es256: PrivateJWK) -> None:
    verifier = TokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, keys=es256.public(), algorithms=["ES256"]
    )
    assert verifier.cache is not None
    assert verifier.cache.max_entries == 10_000  # the documented default of cache_size


@pytest.mark.parametrize("size", [-1, False, True, 1.0, "100", None])
def test_a_verifier_takes_a_cache_size_that_is_a_non_negative_int(
    es256: PrivateJWK, size: Any
) -> None:
    # False is no 0: a bool never stands for a number here
    with pytest.raises(ConfigurationError, match="cache_size must be a non-negative int"):
        TokenVerifier(
            issuer=ISSUER,
            audience=AUDIENCE,
            keys=es256.public(),
            algorithms=["ES256"],
            cache_size=size,
        )


def test_thread_safety(clock: FixedClock, es256: PrivateJWK) -> None:
    verifier = TokenVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        keys=es256.public(),
        algorithms=["ES256"],
        clock=clock,
        cache_size=16,
    )
    tokens = [mint(es256, claims(jti=f"j{i}")) for i in range(40)]
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(200):
                token = tokens[(i + offset) % len(tokens)]
                assert verifier.verify(token).jti == f"j{(i + offset) % len(tokens)}"
                if i % 17 == 0:
                    verifier.evict(f"j{i % len(tokens)}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n * 7,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert verifier.cache is not None and len(verifier.cache) <= 16


def test_async_path_uses_the_cache(
    verifier: TokenVerifier, counted: Counted, es256: PrivateJWK
) -> None:
    import asyncio

    token = mint(es256, claims())
    first = asyncio.run(verifier.verify_async(token))
    assert asyncio.run(verifier.verify_async(token)) is first
    assert verifier.verify(token) is first
    assert counted.calls == 1


def test_a_hit_holds_from_the_first_instant_of_its_window(
    verifier: TokenVerifier, counted: Counted, es256: PrivateJWK, clock: FixedClock
) -> None:
    """``verify`` answers from the cache on ``[nbf - leeway, exp)``: its start included."""
    token = mint(es256, claims(nbf=T0 + 30, iat=None))
    first = verifier.verify(token)
    clock.advance(-30)  # exactly nbf - leeway
    assert verifier.verify(token) is first
    assert counted.calls == 1


def test_the_request_fast_path_lookup_takes_a_token_of_the_largest_accepted_size(
    clock: FixedClock, es256: PrivateJWK
) -> None:
    token = mint(es256, claims())
    verifier = TokenVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        keys=es256.public(),
        algorithms=["ES256"],
        clock=clock,
        max_token_size=len(token),
    )
    first = verifier.verify(token)
    assert verifier._cached(token) is first


def test_the_request_fast_path_lookup_without_a_cache(clock: FixedClock, es256: PrivateJWK) -> None:
    verifier = TokenVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        keys=es256.public(),
        algorithms=["ES256"],
        clock=clock,
        cache_size=0,
    )
    token = mint(es256, claims())
    assert verifier.verify(token).jti == "id-0001"
    assert verifier._cached(token) is None
    assert verifier._cached("x" * 10_000) is None


@pytest.mark.parametrize("form", ["sync", "async"])
def test_confirming_the_keys_refuses_an_answer_that_is_no_key_set(
    clock: FixedClock, es256: PrivateJWK, form: str
) -> None:
    """What the request pipeline asks before a repeat: a source answering something else
    raises there, and that answer is never taken for the current keys."""
    keys = JWKSet([es256.public()])
    source = CountingSource(keys)
    verifier = TokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, keys=source, algorithms=["ES256"], clock=clock
    )
    token = mint(es256, claims())
    first = verifier.verify(token)

    def confirm() -> None:
        if form == "sync":
            verifier._confirm_keys()
        else:
            asyncio.run(verifier._aconfirm_keys())

    calls = len(source.calls)
    confirm()
    assert len(source.calls) == calls + 1  # a changing source is asked every time
    source.keys = {"keys": [es256.public().to_public_dict()]}  # a JWKS document, not a key set
    with pytest.raises(KeysUnavailable, match="not a key set"):
        confirm()
    source.keys = keys
    confirm()
    assert verifier._cached(token) is first
