"""Server-provided DPoP nonces (RFC 9449 §9): the nonces themselves, the proof check, and the
Guard's ``use_dpop_nonce`` challenge carrying the next nonce."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import json
import pickle
from typing import Any

import pytest

from zerotrust import (
    Authenticator,
    Callers,
    DPoPConfig,
    DPoPNonces,
    FixedClock,
    Guard,
    MemorySink,
    MemoryStore,
    Policy,
    Request,
    Rule,
)
from zerotrust.authn.binding import verify_dpop_proof
from zerotrust.errors import (
    ConfigurationError,
    InvalidDPoPProof,
    TokenBindingMismatch,
    UseDPoPNonce,
    public_code,
)
from zerotrust.httpx import dpop_proof
from zerotrust.tokens import PrivateJWK, TokenIssuer, TokenVerifier
from zerotrust.tokens._b64 import b64url_encode

NOW = 1_800_000_000.0
SECRET = bytes(range(32))
OTHER = bytes(range(1, 33))
URL = "https://api.example/orders/7"
ALGS = "ES256 ES384 EdDSA PS256 RS256"


def windows_later(nonces: DPoPNonces, count: int) -> float:
    """A time ``count`` whole windows after NOW (NOW is at the start of a window)."""
    return NOW + count * nonces.lifetime


# --- the nonces -----------------------------------------------------------------------------


def test_a_nonce_is_the_same_within_its_window_and_accepted_in_the_next() -> None:
    nonces = DPoPNonces(SECRET, lifetime=60)
    assert NOW % 60 == 0
    nonce = nonces.issue(NOW)
    assert nonces.issue(NOW + 59.9) == nonce  # one nonce for every caller of a window
    assert nonces.issue(NOW + 60) != nonce
    assert len(nonce) == 32 and nonce.isascii()
    for now in (NOW, NOW + 59.9, NOW + 60, NOW + 119.9):
        assert nonces.accepts(nonce, now), now
    for now in (NOW + 120, NOW + 3600):  # two windows later: stale
        assert not nonces.accepts(nonce, now), now


def test_a_replica_a_window_ahead_is_accepted_and_no_further() -> None:
    """Replicas' clocks differ: a nonce of the next window (a replica whose clock runs ahead
    handed it out) is accepted; one of the window after it is not."""
    nonces = DPoPNonces(SECRET, lifetime=60)
    assert nonces.accepts(nonces.issue(NOW + 60), NOW)
    assert not nonces.accepts(nonces.issue(NOW + 120), NOW)


def test_nonces_need_the_secret() -> None:
    ours, theirs = DPoPNonces(SECRET), DPoPNonces(OTHER)
    assert ours.issue(NOW) != theirs.issue(NOW)
    assert not ours.accepts(theirs.issue(NOW), NOW)
    # another replica with the same secret accepts it: the nonces are stateless
    assert DPoPNonces(SECRET).accepts(ours.issue(NOW), NOW)


def test_rotation_the_first_secret_signs_and_all_verify() -> None:
    before = DPoPNonces(OTHER)
    rotated = DPoPNonces([SECRET, OTHER])
    assert rotated.accepts(before.issue(NOW), NOW)  # handed out before the rotation
    assert rotated.issue(NOW) == DPoPNonces(SECRET).issue(NOW)
    assert not DPoPNonces(SECRET).accepts(before.issue(NOW), NOW)  # the old secret retired


def _raw(nonce: str) -> bytes:
    return base64.urlsafe_b64decode(nonce)


@pytest.mark.parametrize(
    "value",
    [
        None,
        7,
        b"",
        "",
        ["nonce"],
        "x" * 32,  # not the MAC
        "é" * 32,  # not ASCII
        "A" * 31 + "=",  # padding
        "A" * 31 + "+",  # standard base64
        "A" * 33,
    ],
)
def test_anything_else_is_not_a_nonce(value: Any) -> None:
    assert not DPoPNonces(SECRET).accepts(value, NOW)


def test_a_tampered_nonce_is_refused() -> None:
    nonces = DPoPNonces(SECRET)
    raw = bytearray(_raw(nonces.issue(NOW)))
    later = int.from_bytes(raw[:8], "big") + 1  # a later window with the same MAC
    moved = later.to_bytes(8, "big") + bytes(raw[8:])
    assert not nonces.accepts(b64url_encode(moved), NOW + 60)
    raw[-1] ^= 1
    assert not nonces.accepts(b64url_encode(bytes(raw)), NOW)


_HUGE = [pytest.param(10**400, id="huge int"), pytest.param(-(10**400), id="huge negative int")]


@pytest.mark.parametrize("now", [float("nan"), float("inf"), -1.0, 1e300, *_HUGE])
def test_a_clock_no_nonce_can_name(now: float) -> None:
    nonces = DPoPNonces(SECRET)
    assert not nonces.accepts(nonces.issue(NOW), now)
    with pytest.raises(ConfigurationError):
        nonces.issue(now)


@pytest.mark.parametrize(
    ("secret", "lifetime", "message"),
    [
        ("a" * 40, 60, "must be bytes"),
        (SECRET[:31], 60, "32 to 1024 bytes"),
        (b"x" * 1025, 60, "32 to 1024 bytes"),
        ([], 60, "1 to 8 secrets"),
        ([SECRET] * 9, 60, "1 to 8 secrets"),
        ([SECRET, "text"], 60, "must be bytes"),
        ({SECRET}, 60, "must be bytes, or a list"),
        (SECRET, 0.5, "1 to 3600 seconds"),
        (SECRET, 3601, "1 to 3600 seconds"),
        (SECRET, float("nan"), "1 to 3600 seconds"),
        (SECRET, True, "1 to 3600 seconds"),
        (SECRET, "60", "1 to 3600 seconds"),
        pytest.param(SECRET, 10**400, "1 to 3600 seconds", id="huge int lifetime"),
    ],
)
def test_settings_are_checked(secret: Any, lifetime: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        DPoPNonces(secret, lifetime=lifetime)


def test_the_secrets_never_show() -> None:
    nonces = DPoPNonces([SECRET, OTHER], lifetime=30)
    assert repr(nonces) == "DPoPNonces(lifetime=30.0, secrets=<2 redacted>)"
    assert SECRET.hex() not in repr(DPoPConfig(nonces=nonces))
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(nonces)
    assert copy.deepcopy(nonces) is nonces and copy.copy(nonces) is nonces
    with pytest.raises(AttributeError):
        nonces.lifetime = 1  # type: ignore[misc]


def test_dpop_config_takes_only_nonces() -> None:
    with pytest.raises(ConfigurationError, match="DPoPNonces"):
        DPoPConfig(nonces=SECRET)  # type: ignore[arg-type]
    assert DPoPConfig().nonces is None


# --- the proof check ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def holder() -> PrivateJWK:
    return PrivateJWK.generate("ES256")


def _proof(holder: PrivateJWK, token: str, nonce: Any = None, **claims: Any) -> str:
    """A proof at NOW, with the given ``nonce`` claim (any JSON value), signed by ``holder``."""
    body = {
        "jti": claims.pop("jti", "p1"),
        "htm": "GET",
        "htu": claims.pop("htu", URL),
        "iat": NOW,
        "ath": b64url_encode(hashlib.sha256(token.encode()).digest()),
        **claims,
    }
    if nonce is not None:
        body["nonce"] = nonce
    head = {"typ": "dpop+jwt", "alg": "ES256", "jwk": holder.public().to_public_dict()}
    segments = [b64url_encode(json.dumps(part).encode()) for part in (head, body)]
    signing_input = ".".join(segments)
    return f"{signing_input}.{b64url_encode(holder.sign(signing_input.encode()))}"


def _verify(proof: str, config: DPoPConfig, now: float = NOW, token: str = "t") -> Any:
    return verify_dpop_proof(
        proof, method="GET", url=URL, access_token=token, config=config, now=now
    )


def test_a_proof_must_carry_a_current_nonce(holder: PrivateJWK) -> None:
    nonces = DPoPNonces(SECRET)
    config = DPoPConfig(nonces=nonces)
    assert _verify(_proof(holder, "t", nonces.issue(NOW)), config).jti == "p1"
    for nonce in (None, "", 17, nonces.issue(NOW - 120), DPoPNonces(OTHER).issue(NOW)):
        with pytest.raises(UseDPoPNonce):
            _verify(_proof(holder, "t", nonce), config)
    # without nonces configured, a proof's nonce claim is not read
    assert _verify(_proof(holder, "t", "whatever"), DPoPConfig()).jti == "p1"


def test_any_other_defect_is_reported_before_the_nonce(holder: PrivateJWK) -> None:
    """``use_dpop_nonce`` only when the proof would pass with a nonce: a client that sends it
    again with one is accepted, never sent round in circles."""
    config = DPoPConfig(nonces=DPoPNonces(SECRET))
    with pytest.raises(InvalidDPoPProof) as error:
        _verify(_proof(holder, "t", htu="https://api.example/other"), config)
    assert not isinstance(error.value, UseDPoPNonce)
    with pytest.raises(InvalidDPoPProof) as error:
        _verify(_proof(holder, "t"), config, token="another token")  # ath
    assert not isinstance(error.value, UseDPoPNonce)


def test_use_dpop_nonce_is_an_invalid_proof() -> None:
    error = UseDPoPNonce("x")
    assert isinstance(error, InvalidDPoPProof)
    assert error.code == "use_dpop_nonce" and public_code(error.code) == "use_dpop_nonce"
    assert error.http_status == 401 and error.grpc_status == "UNAUTHENTICATED"
    assert error.to_dict() == {
        "error": "use_dpop_nonce",
        "error_description": "resource server requires nonce in DPoP proof",
    }


# --- through the Guard ----------------------------------------------------------------------


class Service:
    """A Guard requiring nonces, its issuer, and a client's bound token."""

    def __init__(self, holder: PrivateJWK, nonces: DPoPNonces) -> None:
        self.clock = FixedClock(dt.datetime.fromtimestamp(NOW, tz=dt.timezone.utc))
        self.issuer = TokenIssuer(
            PrivateJWK.generate("ES256"), issuer="https://issuer.example", clock=self.clock
        )
        self.holder = holder
        self.sink = MemorySink()
        verifier = TokenVerifier(
            issuer="https://issuer.example",
            audience="api",
            keys=self.issuer.jwks(),
            algorithms=["ES256"],
            clock=self.clock,
        )
        dpop = DPoPConfig(origins=["https://api.example"], nonces=nonces)
        self.guard = Guard(
            authenticator=Authenticator(tokens=verifier, dpop=dpop, clock=self.clock),
            policy=Policy([Rule(id="any", callers=[Callers(subjects=["*"])])]),
            audit=self.sink,
            store=MemoryStore(clock=self.clock),
            service="api",
            clock=self.clock,
        )
        self.token = self.issuer.issue(
            subject="svc-a",
            audience="api",
            ttl=3600,
            extra_claims={"cnf": {"jkt": holder.thumbprint()}},
        )

    def request(self, nonce: str | None, *, token: str | None = None) -> Request:
        token = token or self.token
        proof = dpop_proof(
            self.holder, method="GET", url=URL, access_token=token, nonce=nonce, clock=self.clock
        )
        return Request(
            path="/orders/7",
            host="api.example",
            headers={"authorization": f"DPoP {token}", "dpop": proof},
        )


def test_the_guard_hands_out_the_nonce_with_its_challenge(holder: PrivateJWK) -> None:
    nonces = DPoPNonces(SECRET)
    service = Service(holder, nonces)
    refused = service.guard.evaluate(service.request(None))
    assert not refused.allowed and refused.status == 401
    assert refused.error is not None and refused.error.code == "use_dpop_nonce"
    assert refused.body() == {
        "error": "use_dpop_nonce",
        "error_description": "resource server requires nonce in DPoP proof",
    }
    headers = dict(refused.headers)
    assert headers["WWW-Authenticate"] == f'DPoP realm="api", algs="{ALGS}", error="use_dpop_nonce"'
    nonce = headers["DPoP-Nonce"]
    assert nonce == nonces.issue(NOW)
    event = service.sink.events[-1]
    assert event.decision == "deny" and event.reason == "use_dpop_nonce"
    # the client signs a new proof with it: allowed
    assert service.guard.evaluate(service.request(nonce)).allowed
    # a stale nonce is answered with the current one
    service.clock.advance(120)
    again = service.guard.evaluate(service.request(nonce))
    assert again.error is not None and again.error.code == "use_dpop_nonce"
    assert dict(again.headers)["DPoP-Nonce"] == nonces.issue(NOW + 120) != nonce


def test_a_proof_with_a_nonce_is_still_used_once(holder: PrivateJWK) -> None:
    service = Service(holder, DPoPNonces(SECRET))
    request = service.request(DPoPNonces(SECRET).issue(NOW))
    assert service.guard.evaluate(request).allowed
    replayed = service.guard.evaluate(request)
    assert replayed.error is not None and replayed.error.code == "dpop_proof_replayed"
    assert "DPoP-Nonce" not in dict(replayed.headers)


def test_other_refusals_carry_no_nonce(holder: PrivateJWK) -> None:
    service = Service(holder, DPoPNonces(SECRET))
    other = PrivateJWK.generate("ES256")
    stolen = Service(other, DPoPNonces(SECRET))
    stolen.token = service.token  # a proof by another key than the token's cnf.jkt
    refused = service.guard.evaluate(stolen.request(DPoPNonces(SECRET).issue(NOW)))
    assert refused.error is not None and refused.error.code == "token_binding_mismatch"
    assert "DPoP-Nonce" not in dict(refused.headers)
    assert isinstance(refused.error, TokenBindingMismatch)


def test_bearer_tokens_need_no_nonce(holder: PrivateJWK) -> None:
    service = Service(holder, DPoPNonces(SECRET))
    token = service.issuer.issue(subject="svc-b", audience="api", ttl=600)
    request = Request(path="/orders/7", headers={"authorization": f"Bearer {token}"})
    assert service.guard.evaluate(request).allowed


def test_explain_names_the_nonce_and_consumes_nothing(holder: PrivateJWK) -> None:
    service = Service(holder, DPoPNonces(SECRET))
    outcome = service.guard.explain(service.request(None))
    assert outcome.error is not None and outcome.error.code == "use_dpop_nonce"
    assert service.sink.events == []


# --- settings -------------------------------------------------------------------------------

_BASE = {
    "api_keys": {"hashes": {"ci": hashlib.sha256(b"key").hexdigest()}},
    "policy": {"rules": [{"id": "ci", "from": [{"subjects": ["api-key:ci"]}]}]},
}


def _settings(env: dict[str, str], **dpop: Any) -> Any:
    from zerotrust.config import Settings

    return Settings.from_dict({**_BASE, "dpop": dpop} if dpop else _BASE, env=env)


def test_settings_build_the_nonces(tmp_path: Any) -> None:
    current = tmp_path / "nonce"
    current.write_text(SECRET.hex() + "\n")
    settings = _settings(
        {
            "ZEROTRUST_DPOP__NONCE_SECRET_FILE": str(current),
            "ZEROTRUST_DPOP__NONCE_PREVIOUS_SECRET": base64.b64encode(OTHER).decode(),
            "ZEROTRUST_DPOP__NONCE_LIFETIME": "30",
        }
    )
    shown = settings.to_dict()["dpop"]
    assert shown["nonce_secret"] == shown["nonce_previous_secret"] == "<redacted>"
    assert SECRET.hex() not in repr(settings) and SECRET.hex() not in str(shown)
    nonces = settings.build_guard().authenticator.dpop.nonces
    assert isinstance(nonces, DPoPNonces) and nonces.lifetime == 30
    assert nonces.issue(NOW) == DPoPNonces(SECRET, lifetime=30).issue(NOW)  # the first signs
    assert nonces.accepts(DPoPNonces(OTHER, lifetime=30).issue(NOW), NOW)  # the previous too
    assert _settings({}).build_guard().authenticator.dpop.nonces is None  # off by default


@pytest.mark.parametrize(
    ("env", "dpop", "message"),
    [
        ({}, {"nonce_lifetime": 30}, "dpop.nonce_lifetime: is set but dpop.nonce_secret is not"),
        (
            {"ZEROTRUST_DPOP__NONCE_PREVIOUS_SECRET": SECRET.hex()},
            {},
            "NONCE_PREVIOUS_SECRET: is set but dpop.nonce_secret is not",
        ),
        ({"ZEROTRUST_DPOP__NONCE_SECRET": "ab" * 16}, {}, "32 to 1024 bytes"),
        ({"ZEROTRUST_DPOP__NONCE_SECRET": SECRET.hex()}, {"nonce_lifetime": 0.5}, "at least 1"),
        ({"ZEROTRUST_DPOP__NONCE_SECRET": SECRET.hex()}, {"enabled": False}, "dpop.enabled"),
    ],
)
def test_settings_are_refused(env: dict[str, str], dpop: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as error:
        _settings(env, **dpop)
    assert SECRET.hex() not in str(error.value)


def test_a_secret_is_not_read_from_a_settings_file(tmp_path: Any) -> None:
    from zerotrust.config import Settings

    path = tmp_path / "zerotrust.json"
    path.write_text(json.dumps({"zerotrust": {**_BASE, "dpop": {"nonce_secret": SECRET.hex()}}}))
    with pytest.raises(ConfigurationError, match="secrets are not read from configuration files"):
        Settings.load(path, env={})


def test_the_nonce_is_handed_out_by_the_clock_that_judges_it(holder: PrivateJWK) -> None:
    """The Authenticator judges a proof's nonce by its own clock: the challenge hands out the
    nonce of that clock, not of the Guard's (audit, store), so the retried proof is accepted."""
    nonces = DPoPNonces(SECRET)
    service = Service(holder, nonces)
    guard = Guard(
        authenticator=service.guard.authenticator,  # judges by service.clock (NOW)
        policy=service.guard.policy,
        audit=service.sink,
        store=MemoryStore(clock=service.clock),
        service="api",
        clock=FixedClock(dt.datetime.fromtimestamp(NOW + 3600, tz=dt.timezone.utc)),
    )
    refused = guard.evaluate(service.request(None))
    nonce = dict(refused.headers)["DPoP-Nonce"]
    assert nonce == nonces.issue(NOW)
    assert guard.evaluate(service.request(nonce)).allowed


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ZEROTRUST_DPOP__NONCE_SECRET": "ab" * 16}, "ZEROTRUST_DPOP__NONCE_SECRET: "),
        (
            {
                "ZEROTRUST_DPOP__NONCE_SECRET": SECRET.hex(),
                "ZEROTRUST_DPOP__NONCE_PREVIOUS_SECRET": "cd" * 16,
            },
            "ZEROTRUST_DPOP__NONCE_PREVIOUS_SECRET: ",
        ),
    ],
)
def test_a_short_secret_is_named_by_its_own_setting(env: dict[str, str], named: str) -> None:
    """As every other secret: the error names the variable that holds the short secret, not
    the ``dpop`` table of the settings file."""
    with pytest.raises(ConfigurationError) as error:
        _settings(env, nonce_lifetime=30)
    assert str(error.value).startswith(named), str(error.value)
    assert "32 to 1024 bytes" in str(error.value)
    assert "abab" not in str(error.value) and "cdcd" not in str(error.value)


def test_a_proof_refused_for_its_nonce_leaves_no_replay_entry(holder: PrivateJWK) -> None:
    """The replay cache sees only proofs that passed every check: the jti of a proof refused
    for its nonce is still free, and the proof with the nonce is then used once."""
    nonces = DPoPNonces(SECRET)
    service = Service(holder, nonces)

    def request(nonce: str | None) -> Request:
        proof = _proof(holder, service.token, nonce, jti="the-same-jti")
        headers = {"authorization": f"DPoP {service.token}", "dpop": proof}
        return Request(path="/orders/7", host="api.example", headers=headers)

    for _ in range(2):  # refused for its nonce, again and again: never a replay
        refused = service.guard.evaluate(request(None))
        assert refused.error is not None and refused.error.code == "use_dpop_nonce"
    assert service.guard.evaluate(request(nonces.issue(NOW))).allowed
    replayed = service.guard.evaluate(request(nonces.issue(NOW)))
    assert replayed.error is not None and replayed.error.code == "dpop_proof_replayed"


def test_a_clock_no_nonce_can_name_still_says_use_dpop_nonce(holder: PrivateJWK) -> None:
    """The challenge says what the body says, without a nonce it cannot make (fail closed)."""
    service = Service(holder, DPoPNonces(SECRET))
    before_1970 = FixedClock(dt.datetime(1960, 1, 1, tzinfo=dt.timezone.utc))
    guard = Guard(
        authenticator=Authenticator(
            tokens=service.guard.authenticator.tokens,
            dpop=service.guard.authenticator.dpop,
            clock=before_1970,
        ),
        policy=service.guard.policy,
        audit=MemorySink(),
        service="api",
    )
    refused = guard.refuse(service.request(None), UseDPoPNonce("no nonce"))
    assert not refused.allowed and refused.status == 401
    assert refused.body() == {
        "error": "use_dpop_nonce",
        "error_description": "resource server requires nonce in DPoP proof",
    }
    assert refused.headers == (
        ("WWW-Authenticate", f'DPoP realm="api", algs="{ALGS}", error="use_dpop_nonce"'),
    )


def nested_actors(depth: int) -> dict[str, Any]:
    act: dict[str, Any] = {"sub": f"actor-{depth}"}
    for level in range(depth - 1, 0, -1):
        act = {"sub": f"actor-{level}", "act": act}
    return act


def test_the_nonce_is_asked_for_after_every_other_check_of_the_token(holder: PrivateJWK) -> None:
    """A request that would be refused with the nonce is refused for that reason, without the
    nonce, and never costs a round trip for a nonce first."""
    service = Service(holder, DPoPNonces(SECRET))
    unbound = service.issuer.issue(subject="svc-a", audience="api", ttl=600)
    refused = service.guard.evaluate(service.request(None, token=unbound))
    assert refused.error is not None and refused.error.code == "token_binding_mismatch"
    too_deep = service.issuer.issue(
        subject="svc-a",
        audience="api",
        ttl=600,
        extra_claims={"cnf": {"jkt": holder.thumbprint()}},
        act=nested_actors(5),  # deeper than the default limit of 4
    )
    refused = service.guard.evaluate(service.request(None, token=too_deep))
    assert refused.error is not None and refused.error.code == "invalid_claim"
    assert "DPoP-Nonce" not in dict(refused.headers)
    # the same bound token, nothing else wrong: the nonce is what is missing
    refused = service.guard.evaluate(service.request(None))
    assert refused.error is not None and refused.error.code == "use_dpop_nonce"


def test_an_allowed_request_with_an_earlier_nonce_gets_the_current_one(holder: PrivateJWK) -> None:
    """RFC 9449 8.2: the next nonce comes with a success, so a client that keeps calling never
    has a proof refused for a stale nonce."""
    nonces = DPoPNonces(SECRET)
    service = Service(holder, nonces)
    first = nonces.issue(NOW)
    allowed = service.guard.evaluate(service.request(first))
    assert allowed.allowed and allowed.headers == ()  # the current nonce: nothing new
    service.clock.advance(60)  # the nonce is now the previous window's: still accepted
    allowed = service.guard.evaluate(service.request(first))
    assert allowed.allowed
    assert allowed.headers == (("DPoP-Nonce", nonces.issue(NOW + 60)),)
    # a later nonce, from a replica whose clock runs ahead, is never replaced by an older one:
    # the client keeps it, and that replica still accepts it
    ahead = nonces.issue(NOW + 120)
    allowed = service.guard.evaluate(service.request(ahead))
    assert allowed.allowed and allowed.headers == ()
    bearer = service.issuer.issue(subject="svc-b", audience="api", ttl=600)
    plain = service.guard.evaluate(
        Request(path="/orders/7", headers={"authorization": f"Bearer {bearer}"})
    )
    assert plain.allowed and plain.headers == ()


def test_renewal_only_replaces_an_earlier_window() -> None:
    nonces = DPoPNonces(SECRET)
    earlier, current, later = (nonces.issue(NOW + d) for d in (-60, 0, 60))
    assert nonces.renewal(earlier, NOW) == current
    assert nonces.renewal(current, NOW) is None
    assert nonces.renewal(later, NOW) is None
    assert nonces.renewal("!" * 32, NOW) is None  # not base64url
    assert nonces.renewal("short", NOW) is None
    assert nonces.renewal(earlier, float("nan")) is None
