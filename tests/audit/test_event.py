from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import hashlib
import hmac
import http
import json
import pickle
import time
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, x448, x25519

from tests.audit import WHEN, make_event
from zerotrust.audit import AuditEvent, Pseudonymizer
from zerotrust.audit.event import MAX_FIELD_LENGTH, MAX_NOTES, REDACTED, TRUNCATION_MARKER
from zerotrust.dev import DevCA, generate_key
from zerotrust.errors import ConfigurationError

TEXT_FIELDS = [
    "service",
    "reason",
    "kind",
    "method",
    "rule_id",
    "policy_id",
    "grpc_status",
    "route",
    "remote_addr",
    "spiffe_id",
    "subject",
    "issuer",
    "proven_by",
    "client_id",
    "actor",
    "token_jti",
]

GOLDEN = {
    "time": "2024-05-01T12:30:15.123456Z",
    "service": "orders",
    "decision": "allow",
    "dry_run": False,
    "would_decide": None,
    "would_reason": None,
    "would_rule_id": None,
    "reason": "allowed",
    "rule_id": "callers-in-prod",
    "policy_id": "orders-policy",
    "status": 200,
    "grpc_status": None,
    "kind": "http",
    "method": "GET",
    "route": "/orders/{id}",
    "remote_addr": "10.1.2.3",
    "spiffe_id": "spiffe://example.org/ns/prod/sa/billing",
    "subject": "user-42",
    "issuer": "https://issuer.example.org",
    "proven_by": "mtls+bound-jwt",
    "client_id": "billing",
    "actor": "spiffe://example.org/ns/prod/sa/gateway",
    "cert_fingerprint": "ab" * 32,
    "token_jti": "jti-7",
    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    "span_id": "00f067aa0ba902b7",
    "trace_trusted": True,
    "notes": ["forwarded_cert_ignored_untrusted_peer"],
    "event_id": "0123456789abcdef0123456789abcdef",
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_like() -> str:
    header = b64url(json.dumps({"alg": "ES256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps({"sub": "user-42", "exp": 1_900_000_000}).encode())
    return f"{header}.{payload}.{b64url(b'signature' * 8)}"


def secrets_to_hide(ca: DevCA) -> dict[str, str]:
    key = generate_key()
    der_key = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    sec1_key = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    ed_key = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert = ca.root_certificate
    pem_cert = cert.public_bytes(serialization.Encoding.PEM).decode()
    der_cert = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    token = jwt_like()
    jwe_header = b64url(json.dumps({"alg": "dir", "enc": "A256GCM"}).encode())
    return {
        "jwt": token,
        "bearer": f"Bearer {token}",
        "jwe": ".".join([jwe_header, "", "aXY", "Y2lwaGVy", "dGFn"]),
        "jws_detached": f"{token.split('.')[0]}..{token.split('.')[2]}",
        "pem_cert": pem_cert,
        "pem_key": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        "nginx_escaped_pem": pem_cert.replace("\n", "%0A").replace(" ", "%20"),
        "key_label_only": "EC PRIVATE KEY",
        "jwk": json.dumps({"kty": "EC", "crv": "P-256", "d": "c2VjcmV0", "x": "eA", "y": "eQ"}),
        "jwk_percent_encoded": quote(
            json.dumps({"kty": "EC", "crv": "P-256", "d": "c2VjcmV0", "x": "eA", "y": "eQ"}),
            safe="",
        ),
        "der_pkcs8_key": base64.b64encode(der_key).decode(),
        "der_sec1_key": base64.b64encode(sec1_key).decode(),
        "der_ed25519_key": base64.b64encode(ed_key).decode(),
        "der_rsa_key": base64.b64encode(
            generate_key("rsa-2048").private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        ).decode(),
        "rfc9440_client_cert": f":{der_cert}:",
        # every character percent-encoded, as some encoders (and evasions) write it
        "jwt_escaped_whole": escape_whole(token),
        "pem_key_escaped_whole": escape_whole(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode()
        ),
        "der_key_escaped_whole": escape_whole(base64.b64encode(ed_key).decode()),
    }


def escape_whole(text: str) -> str:
    return "".join(f"%{byte:02X}" for byte in text.encode())


# --- construction ---------------------------------------------------------------------------


def test_minimal_event_has_documented_defaults() -> None:
    event = AuditEvent(
        time=WHEN,
        service="orders",
        decision="deny",
        reason="missing_credentials",
        kind="http",
        method="GET",
    )
    assert event.dry_run is False
    assert event.would_decide is None
    assert event.trace_trusted is False
    assert event.notes == ()
    for name in TEXT_FIELDS[4:]:
        assert getattr(event, name) is None
    assert event.status is None
    assert event.cert_fingerprint is None
    assert event.trace_id is None
    assert event.span_id is None


def test_fields_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        AuditEvent(WHEN, "orders", "allow")  # type: ignore[call-arg]


def test_time_is_normalised_to_utc() -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    event = make_event(time=dt.datetime(2024, 5, 1, 14, 30, 15, 123456, tzinfo=plus_two))
    assert event.time == WHEN
    assert event.time.tzinfo is dt.timezone.utc
    assert event.to_dict()["time"] == "2024-05-01T12:30:15.123456Z"


def test_naive_or_non_datetime_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        make_event(time=dt.datetime(2024, 5, 1))
    with pytest.raises(TypeError):
        make_event(time="2024-05-01T00:00:00Z")


@pytest.mark.parametrize("field", ["decision", "would_decide"])
@pytest.mark.parametrize("value", ["ALLOW", "permit", "", 1, True])
def test_verdicts_are_allow_or_deny(field: str, value: object) -> None:
    with pytest.raises(ValueError, match="'allow' or 'deny'"):
        make_event(**{field: value})


def test_verdict_str_enum_members_become_plain_str() -> None:
    class Verdict(str, enum.Enum):
        DENY = "deny"

    event = make_event(decision=Verdict.DENY)
    assert (type(event.decision), event.decision) == (str, "deny")


def test_dry_run_needs_the_other_verdict() -> None:
    event = make_event(decision="allow", dry_run=True, would_decide="deny")
    assert event.dry_run
    assert event.would_decide == "deny"
    with pytest.raises(ValueError, match="dry-run"):
        make_event(decision="allow", dry_run=True)
    with pytest.raises(ValueError, match="dry-run"):
        make_event(decision="allow", dry_run=True, would_decide="allow")
    # A verdict recorded without a difference is allowed.
    assert make_event(would_decide="allow").dry_run is False
    # A different verdict is what a dry-run event records: without dry_run it is refused.
    for decision, would in (("allow", "deny"), ("deny", "allow")):
        with pytest.raises(ValueError, match="would_decide"):
            make_event(decision=decision, would_decide=would, dry_run=False)


@pytest.mark.parametrize("field", ["dry_run", "trace_trusted"])
def test_flags_must_be_bools(field: str) -> None:
    with pytest.raises(TypeError, match=field):
        make_event(**{field: 1})


def test_status_accepts_int_and_http_status_only() -> None:
    event = make_event(status=http.HTTPStatus.FORBIDDEN)
    assert type(event.status) is int
    assert event.status == 403
    for bad in (True, "403", 403.0):
        with pytest.raises(TypeError, match="status"):
            make_event(status=bad)


@pytest.mark.parametrize("field", TEXT_FIELDS[:4])
def test_required_text_fields(field: str) -> None:
    with pytest.raises(TypeError, match=field):
        make_event(**{field: None})


@pytest.mark.parametrize("field", TEXT_FIELDS)
def test_text_fields_must_be_str(field: str) -> None:
    with pytest.raises(TypeError, match=field):
        make_event(**{field: b"bytes"})


def test_str_subclasses_are_stored_as_plain_str() -> None:
    class Reason(str, enum.Enum):
        ALLOWED = "allowed"

    event = make_event(reason=Reason.ALLOWED)
    assert type(event.reason) is str
    assert event.to_json().count('"reason":"allowed"') == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("trace_id", "4BF92F3577B34DA6A3CE929D0E0E4736"),
        ("trace_id", "4bf92f3577b34da6a3ce929d0e0e473"),
        ("span_id", "00f067aa0ba902b"),
        ("span_id", "00f067aa0ba902bz"),
        ("cert_fingerprint", "AB" * 32),
        ("cert_fingerprint", "ab:" * 31 + "ab"),
        ("event_id", "not-an-id"),
    ],
)
def test_hex_identifiers_are_strict(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        make_event(**{field: value})


@pytest.mark.parametrize("field", ["trace_id", "span_id", "cert_fingerprint", "event_id"])
def test_hex_identifiers_of_a_wrong_type_are_a_type_error(field: str) -> None:
    """As documented: a wrong type is a TypeError, a wrong value a ValueError."""
    good = make_event().to_dict()[field]
    for value in (123, good.encode(), bytearray(good.encode()), ["ab"]):
        with pytest.raises(TypeError, match=field):
            make_event(**{field: value})

    class Hex(str):
        pass

    event = make_event(**{field: Hex(good)})  # a str subclass: kept as its plain text
    assert type(getattr(event, field)) is str and getattr(event, field) == good


# --- bounds ---------------------------------------------------------------------------------


@pytest.mark.parametrize("field", TEXT_FIELDS)
def test_long_values_are_truncated_with_a_marker(field: str) -> None:
    event = make_event(**{field: "x" * 10_000})
    value = getattr(event, field)
    assert len(value) == MAX_FIELD_LENGTH
    assert value.endswith(TRUNCATION_MARKER)
    assert value.startswith("x" * (MAX_FIELD_LENGTH - len(TRUNCATION_MARKER)))


def test_truncation_boundary() -> None:
    assert make_event(route="r" * MAX_FIELD_LENGTH).route == "r" * MAX_FIELD_LENGTH
    assert make_event(route="r" * (MAX_FIELD_LENGTH + 1)).route.endswith(TRUNCATION_MARKER)  # type: ignore[union-attr]


def test_notes_are_bounded_and_cleaned() -> None:
    event = make_event(notes=[f"note_{i}" for i in range(100)])
    assert type(event.notes) is tuple
    assert len(event.notes) == MAX_NOTES
    assert event.notes[-1] == "notes_truncated"
    assert event.notes[0] == "note_0"
    assert make_event(notes=("n" * 1000,)).notes[0].endswith(TRUNCATION_MARKER)
    assert make_event(notes=(jwt_like(),)).notes == (REDACTED,)


@pytest.mark.parametrize("notes", ["a_note", None, {"a"}])
def test_notes_must_be_a_sequence_of_str(notes: object) -> None:
    with pytest.raises(TypeError, match="notes"):
        make_event(notes=notes)


def test_non_str_note_is_refused() -> None:
    with pytest.raises(TypeError, match="notes"):
        make_event(notes=("ok", 3))


# --- redaction ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secrets(ca: DevCA) -> dict[str, str]:
    return secrets_to_hide(ca)


@pytest.mark.parametrize("field", TEXT_FIELDS)
def test_credentials_are_redacted_in_every_text_field(field: str, secrets: dict[str, str]) -> None:
    for kind, secret in secrets.items():
        event = make_event(**{field: secret})
        assert getattr(event, field) == REDACTED, kind
        assert secret not in event.to_json()


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_credentials_are_redacted_wherever_they_appear(where: str) -> None:
    token = jwt_like()
    value = {"start": f"{token} x", "middle": f"x {token} y", "end": f"x={token}"}[where]
    assert make_event(subject=value).subject == REDACTED


def test_a_value_of_many_token_like_runs_is_redacted_after_a_bounded_number_of_decodes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each dotted base64url run long enough for a JOSE header is decoded: a value made of
    thousands (a caller's method or header) cost milliseconds per event. Past 16 such runs the
    value is taken for a credential (fails safe) without decoding more."""
    from zerotrust.audit import event as event_module

    decoded: list[str] = []
    real = event_module._jose_header

    def counting(segment: str) -> bool:
        decoded.append(segment)
        return real(segment)

    monkeypatch.setattr(event_module, "_jose_header", counting)
    few = ".".join(["A" * 19] * 8) + "."
    assert make_event(subject=few).subject == few
    hostile = (("eyJ" * 6 + "A.") * 800)[:15999] + "%"
    decoded.clear()
    assert make_event(subject=hostile).subject == REDACTED
    assert len(decoded) <= 2 * 17  # at most 17 runs, as written and percent-decoded


def test_redaction_takes_precedence_over_truncation() -> None:
    token = jwt_like()
    # The token straddles the truncation point: no fragment of it may survive.
    value = "/p" * ((MAX_FIELD_LENGTH - 20) // 2) + "/" + token
    assert make_event(route=value).route == REDACTED


@pytest.mark.parametrize("unit", ["eyJ", "eyJ-", " eyJ", " eyJa.b", "MII", " MII", "-----"])
def test_scrubbing_is_linear_on_hostile_input(unit: str) -> None:
    hostile = unit * (65_536 // len(unit))
    started = time.perf_counter()
    make_event(**dict.fromkeys(TEXT_FIELDS, hostile))
    # A backtracking pattern would take seconds here; the linear scan takes milliseconds.
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    "value",
    [
        "spiffe://example.org/ns/prod/sa/billing",
        "/orders/{id}",
        "hey.jude.a.b",
        "eyJhbGciOiJFUzI1NiJ9",  # a lone JOSE header carries no credential
        "ADMIN",
        "MIGRATE",
        "https://issuer.example.org/.well-known/openid-configuration",
        "allowed",
        "a----b",
    ],
)
def test_ordinary_values_are_kept(value: str) -> None:
    assert make_event(subject=value).subject == value


def test_events_are_idempotent_under_rebuild(secrets: dict[str, str]) -> None:
    event = make_event(subject=secrets["jwt"], route="x" * 1000, notes=("MIIfoo",))
    assert dataclasses.replace(event) == event


# --- serialisation --------------------------------------------------------------------------


def test_to_dict_golden() -> None:
    assert make_event().to_dict() == GOLDEN


def test_to_dict_always_has_every_field() -> None:
    minimal = AuditEvent(
        time=WHEN, service="s", decision="deny", reason="r", kind="grpc", method="/pkg.Svc/Get"
    )
    names = sorted(field.name for field in dataclasses.fields(AuditEvent))
    assert list(minimal.to_dict()) == names  # in the order of the JSON line
    assert list(make_event().to_dict()) == names
    assert set(GOLDEN) == set(names)


def test_to_json_is_compact_sorted_and_round_trips() -> None:
    text = make_event().to_json()
    assert text == json.dumps(GOLDEN, sort_keys=True, separators=(",", ":"))
    assert json.loads(text) == GOLDEN
    assert list(json.loads(text)) == sorted(GOLDEN)


def test_to_json_is_one_ascii_line_whatever_the_input() -> None:
    text = make_event(subject="line\nbreak\r\u2028 caf\u00e9 \ud800", route="/a%s%(x)s").to_json()
    assert "\n" not in text
    assert "\r" not in text
    assert text.isascii()
    assert json.loads(text)["subject"] == "line\nbreak\r\u2028 caf\u00e9 \ud800"


def test_event_ids_are_random_and_unique() -> None:
    ids = {
        AuditEvent(
            time=WHEN, service="s", decision="allow", reason="r", kind="http", method="GET"
        ).event_id
        for _ in range(2000)
    }
    assert len(ids) == 2000
    for event_id in ids:
        assert len(event_id) == 32
        int(event_id, 16)


def test_events_are_immutable_values() -> None:
    event = make_event()
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.decision = "deny"  # type: ignore[misc]
    with pytest.raises((AttributeError, TypeError)):
        event.extra = 1  # type: ignore[attr-defined]
    assert not hasattr(event, "__dict__")
    assert event == make_event()
    assert hash(event) == hash(make_event())
    assert event != make_event(event_id="f" * 32)


def test_events_pickle() -> None:
    event = make_event()
    assert pickle.loads(pickle.dumps(event)) == event


# --- pseudonymisation -----------------------------------------------------------------------

KEY = bytes(range(32))


def expected_pseudonym(key: bytes, value: str) -> str:
    return "pseudo:" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:32]


def test_pseudonyms_are_keyed_hmacs() -> None:
    pseudonymize = Pseudonymizer(KEY)
    assert pseudonymize("user-42") == expected_pseudonym(KEY, "user-42")
    assert pseudonymize("user-42") == pseudonymize("user-42")
    assert pseudonymize("user-42") != pseudonymize("user-43")
    assert Pseudonymizer(b"k" * 32)("user-42") != pseudonymize("user-42")
    assert len(pseudonymize("")) == len("pseudo:") + 32
    assert pseudonymize("\ud800").startswith("pseudo:")  # lone surrogates do not raise


@pytest.mark.parametrize("key", [b"", b"k" * 31, "k" * 32, None])
def test_short_or_non_bytes_keys_are_refused(key: Any) -> None:
    with pytest.raises(ConfigurationError):
        Pseudonymizer(key)


def test_key_may_be_bytes_like_and_is_not_shown() -> None:
    pseudonymize = Pseudonymizer(bytearray(KEY))  # type: ignore[arg-type]
    assert pseudonymize("a") == Pseudonymizer(KEY)("a")
    assert repr(pseudonymize) == "Pseudonymizer(fields=['subject'])"


def test_apply_replaces_the_subject_by_default() -> None:
    event = make_event()
    pseudonymized = Pseudonymizer(KEY).apply(event)
    assert pseudonymized.subject == expected_pseudonym(KEY, "user-42")
    assert pseudonymized.spiffe_id == event.spiffe_id
    assert pseudonymized.event_id == event.event_id
    assert pseudonymized.time == event.time


def test_apply_honours_the_configured_fields() -> None:
    pseudonymize = Pseudonymizer(KEY, fields={"subject", "spiffe_id", "actor", "client_id"})
    assert pseudonymize.fields == {"subject", "spiffe_id", "actor", "client_id"}
    event = pseudonymize.apply(make_event(client_id=None))
    assert event.spiffe_id == expected_pseudonym(KEY, "spiffe://example.org/ns/prod/sa/billing")
    assert event.actor == expected_pseudonym(KEY, "spiffe://example.org/ns/prod/sa/gateway")
    assert event.client_id is None


def test_apply_without_anything_to_replace_returns_the_event() -> None:
    event = make_event(subject=None)
    assert Pseudonymizer(KEY).apply(event) is event


@pytest.mark.parametrize("fields", ["subject", ["subject", "route"], ["token_jti"]])
def test_only_identifier_fields_can_be_pseudonymised(fields: Any) -> None:
    with pytest.raises(ConfigurationError):
        Pseudonymizer(KEY, fields=fields)


def test_again_copies_the_decision_and_checks_what_changes() -> None:
    template = make_event(trace_id="a" * 32, span_id="b" * 16, trace_trusted=True)
    later = WHEN + dt.timedelta(seconds=5)
    again = template._again(
        time=later.astimezone(dt.timezone(dt.timedelta(hours=2))),
        remote_addr="10.9.9.9",
        trace_id=None,
        span_id=None,
        trace_trusted=False,
    )
    assert again.time == later and again.time.tzinfo is dt.timezone.utc
    assert (again.remote_addr, again.trace_id, again.span_id) == ("10.9.9.9", None, None)
    assert again.trace_trusted is False and again.event_id != template.event_id
    fields = {f.name for f in dataclasses.fields(AuditEvent)}
    changed = {"time", "remote_addr", "trace_id", "span_id", "trace_trusted", "event_id"}
    for name in fields - changed:
        assert getattr(again, name) == getattr(template, name), name
    assert again == dataclasses.replace(
        template,
        time=later,
        remote_addr="10.9.9.9",
        trace_id=None,
        span_id=None,
        trace_trusted=False,
        event_id=again.event_id,
    )
    hidden = template._again(
        time=WHEN, remote_addr="-----BEGIN PRIVATE KEY", trace_id=None, span_id=None,
        trace_trusted=False,
    )  # fmt: skip
    assert hidden.remote_addr == REDACTED
    with pytest.raises(ValueError, match="lowercase hex"):
        template._again(
            time=WHEN, remote_addr=None, trace_id="A" * 32, span_id=None, trace_trusted=False
        )
    with pytest.raises(TypeError):
        template._again(time=WHEN, remote_addr=None, trace_id=None, span_id=None,
                        trace_trusted=1)  # type: ignore[arg-type]  # fmt: skip
    with pytest.raises(ValueError, match="timezone-aware"):
        template._again(
            time=WHEN.replace(tzinfo=None),
            remote_addr=None,
            trace_id=None,
            span_id=None,
            trace_trusted=False,
        )


def test_an_identifier_is_hidden_in_every_field_that_repeats_it() -> None:
    """An mTLS caller's subject is its SPIFFE ID, and a JWT-SVID's spiffe_id is its sub:
    pseudonymising one field must not leave the same value in the clear in another."""
    pseudonymize = Pseudonymizer(KEY, fields=["spiffe_id"])
    sid = "spiffe://example.org/ns/prod/sa/alice-laptop"
    event = AuditEvent(
        time=WHEN, service="s", decision="allow", reason="r", kind="http", method="GET",
        spiffe_id=sid, subject=sid, client_id="web",
    )  # fmt: skip
    hidden = pseudonymize.apply(event)
    assert hidden.spiffe_id == hidden.subject == pseudonymize(sid)
    assert hidden.client_id == "web"  # other values stay
    by_subject = Pseudonymizer(KEY).apply(event)
    assert by_subject.spiffe_id == by_subject.subject == pseudonymize(sid)
    assert sid not in by_subject.to_json()


def _b64_der(key: Any, private: bool, fmt: Any = serialization.PrivateFormat.PKCS8) -> str:
    if private:
        raw = key.private_bytes(serialization.Encoding.DER, fmt, serialization.NoEncryption())
    else:
        raw = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: ec.generate_private_key(ec.SECP256R1()), id="P-256"),
        pytest.param(lambda: ec.generate_private_key(ec.SECP384R1()), id="P-384"),
        pytest.param(lambda: ec.generate_private_key(ec.SECP521R1()), id="P-521"),
        pytest.param(ed448.Ed448PrivateKey.generate, id="Ed448"),
        pytest.param(x448.X448PrivateKey.generate, id="X448"),
        pytest.param(ed25519.Ed25519PrivateKey.generate, id="Ed25519"),
        pytest.param(x25519.X25519PrivateKey.generate, id="X25519"),
    ],
)
def test_base64_der_keys_of_every_size_are_redacted(make: Any) -> None:
    key = make()
    assert make_event(client_id=_b64_der(key, True)).client_id == REDACTED
    if isinstance(key, ec.EllipticCurvePrivateKey):  # SEC1, as openssl ecparam writes it
        sec1 = _b64_der(key, True, serialization.PrivateFormat.TraditionalOpenSSL)
        assert make_event(client_id=sec1).client_id == REDACTED
        assert make_event(client_id=_b64_der(key, False)).client_id == REDACTED


@pytest.mark.parametrize("prefix", ["x_", "token-", "abc", "a", "foo.", "keyJ", "Bearer "])
def test_a_token_glued_to_a_prefix_is_redacted(prefix: str) -> None:
    assert make_event(subject=prefix + jwt_like()).subject == REDACTED


@pytest.mark.parametrize(
    "value",
    ["keyJar.v1.x", "M" + "A" * 70, "MIT" + "x" * 70, "MIGRATION" + "0" * 60],
)
def test_text_that_only_resembles_a_credential_is_kept(value: str) -> None:
    assert make_event(subject=value).subject == value[:MAX_FIELD_LENGTH]


def test_a_dotted_word_never_hides_a_key_or_a_token_after_it() -> None:
    # the token scan and the key scan are independent: a dotted word that is no token, read
    # first, must not let the scan skip a key in it or a token after it
    raw = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key = base64.b64encode(raw).decode().replace("+", "A").replace("/", "B")
    for value in (f"key_{key}.pem.", f"{key}...", f"id.{key}.x.", f"key: {key}..."):
        assert make_event(reason=value).reason == REDACTED, value


def test_a_token_whose_header_names_its_alg_after_a_long_x5c_is_redacted() -> None:
    chain = [base64.b64encode(bytes(2000)).decode()] * 2
    header = b64url(json.dumps({"x5c": chain, "alg": "RS256"}).encode())
    assert make_event(reason=f"{header}.eyJzdWIiOiJ4In0.c2ln").reason == REDACTED


@pytest.mark.parametrize("fields", ["subject", ""])
def test_fields_given_as_one_string_are_refused(fields: str) -> None:
    """``fields="subject"`` is a collection of letters, and ``fields=""`` would pseudonymise
    nothing at all: both are refused for what they are."""
    with pytest.raises(ConfigurationError, match="not a str"):
        Pseudonymizer(KEY, fields=fields)


def test_a_dotted_value_whose_json_head_names_no_alg_is_kept() -> None:
    """Only a JOSE header (a JSON object naming its ``alg``) makes a dotted value a token."""
    head = b64url(json.dumps({"kid": "orders-2024", "typ": "config"}).encode())
    assert head.startswith("eyJ") and len(head) >= 19
    value = f"{head}.v1.x"
    assert make_event(subject=value).subject == value
    shortest = b64url(b'{"alg":"none"}')  # the shortest JOSE header: 19 characters
    assert len(shortest) == 19
    assert make_event(subject=f"{shortest}.eyJzdWIiOiJ4In0.").subject == REDACTED


def test_the_bounds_hold_when_another_field_needs_cleaning() -> None:
    """Values at the limits are kept whole on the path that cleans field by field too (taken
    when any field is long or looks like a credential), not only when nothing needs cleaning."""
    at_limit = "r" * MAX_FIELD_LENGTH
    event = make_event(route=at_limit, subject=jwt_like(), notes=("n" * 1000,))
    assert (event.route, event.subject) == (at_limit, REDACTED)
    assert make_event(route=at_limit + "r", reason="x" * 10_000).route == (
        "r" * (MAX_FIELD_LENGTH - len(TRUNCATION_MARKER)) + TRUNCATION_MARKER
    )
    notes = [f"note_{i}" for i in range(MAX_NOTES)]
    assert make_event(notes=notes).notes == tuple(notes)  # a list: cleaned one by one
    assert make_event(notes=[*notes, "one_more"]).notes == (*notes[:-1], "notes_truncated")


def _b64_sequence(length: bytes, first: int) -> str:
    """Base64 of a DER SEQUENCE with the given length octets, its content starting with the
    tag ``first``."""
    return base64.b64encode(b"\x30" + length + bytes([first, 1, 0]) + bytes(60)).decode()


@pytest.mark.parametrize(
    "length",
    [b"\x7f", b"\x81\x80", b"\x82\x01\x00", b"\x83\x01\x00\x00", b"\x80"],
    ids=["short-form-127", "long-form-1", "long-form-2", "long-form-3", "indefinite"],
)
def test_der_sequences_in_every_length_form_are_redacted(length: bytes) -> None:
    """X.690 8.1.3: lengths up to 127 take the short form, longer ones one to three length
    octets here, and BER's indefinite form (streaming CMS writers) none; a SEQUENCE starting
    with an INTEGER (a private key), a SEQUENCE (a certificate, a public key) or an OBJECT
    IDENTIFIER (CMS / PKCS#7 content, which carries certificates) is redacted in each."""
    for first in (0x02, 0x06, 0x30):
        assert make_event(client_id=_b64_sequence(length, first)).client_id == REDACTED
    kept = _b64_sequence(length, 0x04)  # an OCTET STRING first: no key, no certificate
    assert make_event(client_id=kept).client_id == kept


def test_more_length_octets_than_any_key_needs_is_no_der() -> None:
    kept = _b64_sequence(b"\x84\x00\x01\x00\x00", 0x30)
    assert make_event(client_id=kept).client_id == kept


def test_a_signed_pkcs7_message_carrying_the_certificate_is_redacted(ca: DevCA) -> None:
    """A signed message (what ``openssl smime -sign`` writes, here in DER) embeds the
    signer's whole certificate: it never reaches an audit event."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import pkcs7

    signer = ca.issue_svid("spiffe://example.org/signer")
    signed = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(b"hello")
        .add_signer(signer.leaf, signer.private_key, hashes.SHA256())  # type: ignore[arg-type]
        .sign(serialization.Encoding.DER, [])
    )
    assert make_event(subject=base64.b64encode(signed).decode()).subject == REDACTED


def test_a_token_after_seven_decoy_headers_is_redacted() -> None:
    """Up to eight places where a JOSE header may start are tried in a dotted segment: a
    token glued after seven decoys (misaligned by one character) is still found."""
    value = "eyJa" * 7 + "_" + jwt_like()
    assert make_event(subject=value).subject == REDACTED


def test_a_tuple_of_too_many_notes_is_bounded_too() -> None:
    notes = tuple(f"note_{i}" for i in range(MAX_NOTES + 5))
    assert make_event(notes=notes).notes == (*notes[: MAX_NOTES - 1], "notes_truncated")


def test_again_keeps_valid_trace_ids_of_the_new_request() -> None:
    template = make_event(trace_id=None, span_id=None, trace_trusted=False)
    again = template._again(
        time=WHEN, remote_addr=None, trace_id="c" * 32, span_id="d" * 16, trace_trusted=True
    )
    assert (again.trace_id, again.span_id, again.trace_trusted) == ("c" * 32, "d" * 16, True)
    for span_id, error in (("d" * 15, ValueError), (b"d" * 16, TypeError)):
        with pytest.raises(error, match="span_id"):
            template._again(
                time=WHEN, remote_addr=None, trace_id="c" * 32, span_id=span_id, trace_trusted=True
            )


@pytest.mark.parametrize(
    "header",
    [
        b'{ "alg":"HS256"}',
        b'\n{"alg":"HS256"}',
        b'\t{"alg" : "ES256", "typ" : "JWT"}\r\n',
        b'{"\\u0061lg":"HS256"}',
    ],
)
def test_a_token_whose_header_is_not_spelled_canonically_is_redacted(header: bytes) -> None:
    """A verifier parses the header as JSON, whitespace and escapes included: so does the
    scrub, rather than looking for ``eyJ`` or the bytes ``"alg"``."""
    encoded = b64url(header)
    assert not encoded.startswith("eyJ") or b'"alg"' not in header
    payload = b64url(b'{"sub":"alice"}')
    for value in (
        f"{encoded}.{payload}.c2lnbmF0dXJl",
        f"Bearer {encoded}.{payload}.c2lnbmF0dXJl",
        ".".join([encoded, "", "aXY", "Y2lwaGVy", "dGFn"]),  # a JWE
    ):
        assert make_event(subject=value).subject == REDACTED, value
        assert make_event(notes=(value,)).notes == (REDACTED,)


def test_a_token_the_verifier_accepts_with_a_spaced_header_is_redacted() -> None:
    from zerotrust.tokens import SecretKey, TokenVerifier

    secret = b"k" * 32
    header = b64url(b'{ "alg": "HS256" }')
    now = int(time.time())
    claims = {"iss": "https://i", "aud": "api", "sub": "alice", "iat": now, "exp": now + 60}
    signed = f"{header}.{b64url(json.dumps(claims).encode())}"
    signature = b64url(hmac.new(secret, signed.encode(), hashlib.sha256).digest())
    token = f"{signed}.{signature}"
    verifier = TokenVerifier(
        issuer="https://i",
        audience="api",
        keys=SecretKey(secret, algorithm="HS256"),
        algorithms=["HS256"],
    )
    assert verifier.verify(token).subject == "alice"  # a real credential
    assert make_event(subject=token).subject == REDACTED


@pytest.mark.parametrize(
    "head",
    [
        b'["alg", "HS256"]',  # JSON, but no object
        b'{ "kid": "orders-2024" }',  # an object naming no alg
        b"not json at all, though long enough",
        b'"alg"',
    ],
)
def test_a_dotted_run_whose_head_is_no_jose_header_is_kept(head: bytes) -> None:
    value = f"{b64url(head)}.djE.x"
    assert make_event(subject=value).subject == value
