"""Reading credentials from request headers: one header each, strict syntax, size bounds."""

from __future__ import annotations

import hashlib

import pytest

from zerotrust import Authenticator, Callers, Guard, MemorySink, Policy, Request, Rule
from zerotrust.authn.credentials import ApiKeys, extract_credentials
from zerotrust.errors import (
    ConfigurationError,
    InvalidDPoPProof,
    MalformedCredentials,
    UnsupportedScheme,
)


def _view(**headers: str | list[str]) -> Request:
    return Request(method="GET", path="/x", headers=headers)


@pytest.mark.parametrize("scheme", ["Bearer", "DPoP"])
def test_the_token_itself_is_bounded_at_max_token_bytes(scheme: str) -> None:
    exact = extract_credentials(_view(authorization=f"{scheme} {'a' * 64}"), max_token_bytes=64)
    assert exact.token == "a" * 64 and exact.scheme == scheme
    # the header may be up to 16 bytes longer (room for the scheme), the token may not
    for size in (65, 64 + 16 - len(scheme) - 1):
        with pytest.raises(MalformedCredentials):
            extract_credentials(_view(authorization=f"{scheme} {'a' * size}"), max_token_bytes=64)


def test_the_authorization_header_is_bounded_before_it_is_parsed() -> None:
    padded = "Bearer " + "a" * 64 + " " * 9  # 80 characters: max_token_bytes + 16
    assert extract_credentials(_view(authorization=padded), max_token_bytes=64).token == "a" * 64
    with pytest.raises(MalformedCredentials, match="too large"):
        extract_credentials(_view(authorization=padded + " "), max_token_bytes=64)


def test_authorization_syntax() -> None:
    assert extract_credentials(_view(authorization="bearer   abc")).token == "abc"
    # optional whitespace around the field value (RFC 9110 5.5) is not part of it
    for spaced in ("\t Bearer abc", "Bearer abc \t", " \tBearer   abc\t "):
        assert extract_credentials(_view(authorization=spaced)).token == "abc", repr(spaced)
    with pytest.raises(UnsupportedScheme):
        extract_credentials(_view(authorization="Basic abc"))
    # a tab is not the separator (RFC 6750 2.1: 1*SP) and not part of a b64token
    for bad in ("Bearer\tabc", "Bearer a\tb", "Bearer", "Bearer ", "Bearer a b", "Bearer a,b"):
        with pytest.raises(MalformedCredentials):
            extract_credentials(_view(authorization=bad))
    with pytest.raises(MalformedCredentials):
        extract_credentials(_view(authorization=["Bearer a", "Bearer b"]))


def test_the_default_token_bound_is_8192_bytes() -> None:
    assert extract_credentials(_view(authorization="Bearer " + "a" * 8192)).token == "a" * 8192
    with pytest.raises(MalformedCredentials, match="too large"):
        extract_credentials(_view(authorization="Bearer " + "a" * 8193))


def test_only_spaces_and_tabs_are_trimmed_never_the_token_itself() -> None:
    for value in ("Bearer XabcX", " \tBearer   XabcX \t"):
        assert extract_credentials(_view(authorization=value)).token == "XabcX", repr(value)
    # other whitespace and control characters are neither optional whitespace nor b64token
    for edge in ("\r", "\n", "\x0b", "\x0c", "\xa0", "\x00"):
        with pytest.raises(UnsupportedScheme):
            extract_credentials(_view(authorization=f"{edge}Bearer abc"))
        for bad in (f"Bearer abc{edge}", f"Bearer {edge}abc"):
            with pytest.raises(MalformedCredentials):
                extract_credentials(_view(authorization=bad))


def test_the_dpop_proof_header_is_bounded_and_b64token() -> None:
    proof = extract_credentials(_view(dpop="a" * 64), max_token_bytes=64).dpop_proof
    assert proof == "a" * 64
    # RFC 9449 4.3: a DPoP header that holds no single well-formed JWT is an invalid proof
    for bad in ("a" * 65, "a b", "a,b"):
        with pytest.raises(InvalidDPoPProof, match="malformed DPoP proof header"):
            extract_credentials(_view(dpop=bad), max_token_bytes=64)


def test_two_dpop_headers_are_an_invalid_proof() -> None:
    with pytest.raises(InvalidDPoPProof, match="2 DPoP headers"):
        extract_credentials(_view(dpop=["a.b.c", "a.b.c"]))


def test_a_service_without_dpop_neither_takes_the_scheme_nor_reads_the_header() -> None:
    with pytest.raises(UnsupportedScheme):
        extract_credentials(_view(authorization="DPoP a.b.c", dpop="a.b.c"), dpop=False)
    # a Bearer-only server ignores the header, whatever it holds
    creds = extract_credentials(_view(authorization="Bearer t", dpop=["a b", "x"]), dpop=False)
    assert (creds.scheme, creds.token, creds.dpop_proof) == ("Bearer", "t", None)


def test_an_api_key_is_one_to_512_characters() -> None:
    def read(value: str) -> str | None:
        view = _view(**{"x-api-key": value})
        return extract_credentials(view, api_key_header="x-api-key").api_key

    assert read("k") == "k" and read("k" * 512) == "k" * 512
    for bad in ("", "k" * 513):
        with pytest.raises(MalformedCredentials, match="API key"):
            read(bad)
    # read only when a header is configured
    assert extract_credentials(_view(**{"x-api-key": "k"})).api_key is None


def test_api_keys_refuse_a_bad_configuration() -> None:
    secret = "secret-" + "0123456789" * 3
    digest = ApiKeys.hash(secret)
    with pytest.raises(ConfigurationError, match="at least one"):
        ApiKeys({})
    for stored in ("secret", digest.upper(), digest[:-1], "", None, 5, digest.encode()):
        with pytest.raises(ConfigurationError, match="SHA-256"):
            ApiKeys({"k": stored})  # type: ignore[dict-item]
    with pytest.raises(ConfigurationError, match="not a valid header name"):
        ApiKeys({"k": digest}, header=123)  # type: ignore[arg-type]
    assert ApiKeys({"k": digest}).header == "x-api-key"  # the default
    keys = ApiKeys({"k": digest}, header="X-Api-Key")
    assert keys.header == "x-api-key" and keys.identify(secret) == "k"
    assert keys.identify("other") is None
    # a lone surrogate (no header parser makes one; a Request may carry it) is just unknown
    assert keys.identify("\ud800") is None


def test_api_keys_are_long_random_strings_never_short_guessable_ones() -> None:
    """A plain SHA-256 digest protects a key too random to guess, never a short one: anyone
    holding the digest of "test" finds the key with a dictionary (NIST SP 800-63B 5.1.2.2)."""
    for short in ("", "test", "k" * 31):
        with pytest.raises(ConfigurationError, match="at least 32 characters") as caught:
            ApiKeys.hash(short)
        assert short == "" or short not in str(caught.value)  # the key is never shown
    # a digest of a short key made by other means is never matched by that key
    weak = hashlib.sha256(b"test").hexdigest()
    keys = ApiKeys({"weak": weak, "ok": ApiKeys.hash("k" * 32)})
    assert keys.identify("test") is None
    assert keys.identify("k" * 32) == "ok"
    # ... nor does the Guard let it in
    policy = Policy([Rule(id="any", callers=[Callers(subjects=["*"])])])
    guard = Guard(authenticator=Authenticator(api_keys=keys), policy=policy, audit=MemorySink())
    refused = guard.evaluate(Request(route="/x", headers={"x-api-key": "test"}))
    assert refused.status == 401 and refused.principal is None
    allowed = guard.evaluate(Request(route="/x", headers={"x-api-key": "k" * 32}))
    assert allowed.allowed and allowed.principal is not None
    assert allowed.principal.api_key_id == "ok"


def test_one_key_cannot_stand_for_two_key_ids() -> None:
    """Two ids with one digest: the key would authenticate as whichever id came last (the
    order of a mapping deciding who the caller is), and the other id would never match."""
    digest = ApiKeys.hash("r" * 32)
    with pytest.raises(ConfigurationError, match="same digest") as caught:
        ApiKeys({"alice": digest, "bob": digest})
    assert digest not in str(caught.value)
    keys = ApiKeys({"alice": digest, "bob": ApiKeys.hash("s" * 32)})  # rotation: two keys
    assert (keys.identify("r" * 32), keys.identify("s" * 32)) == ("alice", "bob")


def test_credentials_never_show_their_values() -> None:
    from zerotrust.authn.credentials import Credentials

    dpop = extract_credentials(_view(authorization="DPoP tok3n-value", dpop="pr00f.value.x"))
    assert repr(dpop) == "Credentials(scheme='DPoP', token=<present>, dpop_proof=<present>)"
    assert repr(Credentials(api_key="k3y-value")) == "Credentials(api_key=<present>)"
    assert repr(Credentials()) == "Credentials()"
    for shown in (repr(dpop), str(dpop)):
        assert "tok3n" not in shown and "pr00f" not in shown


def test_credentials_cannot_be_changed() -> None:
    import dataclasses

    read = extract_credentials(_view(authorization="Bearer abc"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        read.token = "other"  # type: ignore[misc]


def test_a_grpc_request_without_a_route_is_routed_by_its_method() -> None:
    """gRPC has no route templates: the full method name is the route rules match."""
    view = Request(method="POST", path="/shop.Orders/Get", kind="grpc")
    assert view.route == "/shop.Orders/Get"
    assert Request(method="GET", path="/orders/7").route is None  # HTTP: no template given
    named = Request(method="POST", path="/shop.Orders/Get", route="/shop.Orders/*", kind="grpc")
    assert named.route == "/shop.Orders/*"
