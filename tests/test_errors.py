from __future__ import annotations

import inspect
import pickle
import ssl
import sys
from pathlib import Path

import pytest

from zerotrust import FixedClock, PeerRejected, errors, load_policy
from zerotrust._clock import SYSTEM_CLOCK, to_utc


def test_public_message_never_carries_the_detail() -> None:
    exc = errors.UntrustedCertificate("chain of spiffe://example.org/x does not validate")
    assert "spiffe://" in str(exc)
    assert exc.to_dict() == {  # callers see the family code, not which rule failed
        "error": "invalid_certificate",
        "error_description": exc.public_message,
    }
    assert exc.code == "untrusted_certificate"  # the precise code goes to the audit trail
    assert "spiffe" not in exc.public_message
    assert exc.http_status == 401
    assert exc.grpc_status == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    ("cls", "status", "grpc"),
    [
        (errors.AuthenticationError, 401, "UNAUTHENTICATED"),
        (errors.TokenExpired, 401, "UNAUTHENTICATED"),
        (errors.AuthorizationError, 403, "PERMISSION_DENIED"),
        (errors.InsufficientScope, 403, "PERMISSION_DENIED"),
        (errors.RateLimited, 429, "RESOURCE_EXHAUSTED"),
        (errors.KeysUnavailable, 503, "UNAVAILABLE"),
        (errors.StoreUnavailable, 503, "UNAVAILABLE"),
    ],
)
def test_status_mapping(cls: type[errors.ZeroTrustError], status: int, grpc: str) -> None:
    assert cls.http_status == status
    assert cls.grpc_status == grpc


def test_every_error_has_a_safe_default_message() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert cls.public_message and "\n" not in cls.public_message
        assert issubclass(cls, errors.ZeroTrustError)


def test_missing_dependency_names_the_extra() -> None:
    exc = errors.MissingDependencyError("redis", "redis")
    assert "pip install 'zerotrust[redis]'" in str(exc)
    assert isinstance(exc, errors.ConfigurationError)
    assert isinstance(exc, ModuleNotFoundError) and exc.name == "redis"


def test_missing_dependency_keeps_the_import_error_that_revealed_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("id: p\nrules: []\n", encoding="utf-8")
    monkeypatch.setitem(sys.modules, "yaml", None)  # as if PyYAML were not installed
    with pytest.raises(errors.MissingDependencyError) as info:
        load_policy(policy)
    assert info.value.extra == "yaml"
    assert isinstance(info.value.error, ImportError)
    assert info.value.error is info.value.__cause__
    assert errors.MissingDependencyError("redis", "redis").error is None


@pytest.mark.parametrize("name", errors.__all__)
def test_every_error_survives_pickling(name: str) -> None:
    """Errors cross process boundaries (multiprocessing, task queues) intact."""
    cls = getattr(errors, name)
    required = [
        p
        for p in inspect.signature(cls).parameters.values()
        if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD
    ]
    exc = cls(*("detail" for _ in required))
    if isinstance(exc, errors.MissingDependencyError):
        exc = errors.MissingDependencyError("django", "django", error=ImportError("old"))
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is cls and str(again) == str(exc) and again.code == exc.code


def test_invalid_spiffe_id_is_a_value_error_with_a_rule() -> None:
    exc = errors.InvalidSpiffeId("trailing_slash")
    assert isinstance(exc, ValueError)
    assert exc.rule == "trailing_slash"
    assert "trailing slash" in str(exc)


def test_peer_rejected_is_a_tls_verification_error() -> None:
    inner = errors.PeerNotAuthorized("spiffe://example.org/x refused")
    exc = PeerRejected(inner)
    assert isinstance(exc, ssl.SSLCertVerificationError)
    assert isinstance(exc, errors.AuthenticationError)  # where the documented tree puts it
    assert exc.error is inner
    assert exc.reason == "peer_not_authorized"
    assert "peer_not_authorized" in str(exc)
    assert "refused" not in exc.public_message
    assert exc.code == "peer_rejected" and exc.http_status == 401
    assert exc.grpc_status == "UNAUTHENTICATED"
    assert exc.verify_message == f"peer_not_authorized: {inner}" == str(exc)


def test_repr_names_code_and_detail() -> None:
    assert (
        repr(errors.TokenExpired("exp passed"))
        == "TokenExpired(code='token_expired', detail='exp passed')"
    )


def test_fixed_clock_moves_only_when_told() -> None:
    import datetime as dt

    start = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    clock = FixedClock(start)
    assert clock.now() == start
    assert clock.advance(90) == start + dt.timedelta(seconds=90)
    assert clock.advance(minutes=1) == start + dt.timedelta(seconds=150)
    clock.set(dt.datetime(2031, 1, 1))  # naive is taken as UTC
    assert clock.now().tzinfo is dt.timezone.utc
    assert "2031" in repr(clock)
    assert to_utc(dt.datetime(2031, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=2)))).hour == 22
    assert SYSTEM_CLOCK.now().tzinfo is dt.timezone.utc


def test_public_codes_fold_precise_reasons() -> None:
    assert errors.public_code("token_expired") == "invalid_token"
    assert errors.public_code("invalid_signature") == "invalid_token"
    assert errors.public_code("svid_profile_violation") == "invalid_certificate"
    assert errors.public_code("malformed_credentials") == "invalid_request"
    assert errors.public_code("keys_unavailable") == "temporarily_unavailable"
    assert errors.public_code("insufficient_scope") == "insufficient_scope"
    assert errors.public_code("peer_not_authorized") == "access_denied"
    assert errors.public_code("missing_credentials") == "missing_credentials"
    assert errors.public_code("rate_limited") == "rate_limited"
    assert errors.public_code("nope") == "nope"
    assert errors.public_code("dpop_proof_replayed") == "invalid_dpop_proof"
    for name in errors.__all__:
        cls = getattr(errors, name)
        if isinstance(cls, type) and issubclass(cls, errors.TokenError):
            # RFC 9449 7.1 and 12.2: proof defects, and a missing server nonce, have their
            # own registered codes
            dpop = issubclass(cls, errors.InvalidDPoPProof)
            expected = "invalid_dpop_proof" if dpop else "invalid_token"
            if cls is errors.UseDPoPNonce:
                expected = "use_dpop_nonce"
            assert cls().to_dict()["error"] == expected, name
