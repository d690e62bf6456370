"""The audit record: one :class:`AuditEvent` for every access decision.

An event holds only primitives and tuples, so it can be serialized, queued or sent to
another process without dragging live objects (certificates, tokens, requests) along.

Validation follows one rule: *the pipeline must always be able to audit*. Free-text
fields (anything that may carry caller-supplied data: route, subject, issuer, ...) are
never rejected: a value longer than :data:`MAX_FIELD_LENGTH` is truncated with
:data:`TRUNCATION_MARKER`, and a value that looks like a credential -- a compact JWT, a
PEM block, a private key, a JSON Web Key or a base64 DER blob -- is replaced by
:data:`REDACTED`. Structural fields (types, the verdicts, hex identifiers) are checked
strictly: a bad value there is a bug in the caller, reported at once with ``TypeError`` or
``ValueError``.
"""

from __future__ import annotations

import base64
import json
import operator
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Final, Literal, cast, final
from urllib.parse import unquote

__all__ = [
    "MAX_FIELD_LENGTH",
    "MAX_NOTES",
    "REDACTED",
    "TRUNCATION_MARKER",
    "AuditEvent",
    "Verdict",
]

#: A decision as audit events record it: ``"allow"`` or ``"deny"``.
Verdict = Literal["allow", "deny"]

#: Longest value kept in a string field (in characters, marker included).
MAX_FIELD_LENGTH: Final = 512
#: Most notes kept; the last one kept is then ``"notes_truncated"``.
MAX_NOTES: Final = 32
#: Replaces any string field that looks like a credential or key material.
REDACTED: Final = "[redacted]"
#: Ends a truncated string field.
TRUNCATION_MARKER: Final = "...[truncated]"

# Only the start of a long value is scanned: a token that begins in the part that is kept
# is found unless its first two segments exceed this (and then only header bytes are kept).
_SCAN_LIMIT = 16_384
# Each pattern that repeats a character class starts only where a run of that class
# starts (the lookbehinds), which keeps the search linear in the length of the value.
# A compact JWS or JWE: base64url segments separated by dots (three, or five), the first
# holding a JOSE header, a JSON object naming its "alg" (checked by _jose_header): the whole
# segment decoded, however the JSON is spelled, or from an "eyJ" in it ("x_eyJ..." is a token
# glued to a prefix).
_JWS = re.compile(r"(?<![A-Za-z0-9_-])([A-Za-z0-9_-]+)\.[A-Za-z0-9_-]*\.")
_SENSITIVE = re.compile(
    # Any PEM block (certificate, key, request), also base64-encoded whole (as Kubernetes
    # secrets hold one), or a key's PEM label without its armour.
    r"-----BEGIN|LS0tLS1CRUdJTi|PRIVATE KEY"
    # A JSON Web Key, public or private.
    r'|"kty"'
    # Base64 (or base64url) DER of a certificate or key: a SEQUENCE ("M"), any short or long
    # length form (the second character), then enough bytes for any key; checked by _der_like.
    r"|(?<![A-Za-z0-9+/])(?P<der>M[A-I][A-Za-z0-9+/_-]{58})"
)
# The tags _der_like accepts first in a SEQUENCE: INTEGER, OBJECT IDENTIFIER, SEQUENCE.
_DER_CONTENT: Final = frozenset({0x02, 0x06, 0x30})
# What the scans need to find anything, searched for first (in C) on every event; each as it
# is and percent-encoded (a JWK's "kty" is %22kty%22 there, so its quotes are left out). Any
# percent-escape is a hint too: a value escaped whole (%65%79%4A...) shows none of the others
# until it is decoded.
_HINTS = re.compile(r"eyJ|-----|LS0tLS1|PRIVATE|kty|M[A-I]|%[0-9A-Fa-f]{2}")
# A dotted base64url run whose first segment is long enough for a JOSE header: searched
# separately, as it starts with its one literal character (which keeps the search fast).
_DOTTED = re.compile(r"\.(?<=[A-Za-z0-9_-]{19}\.)[A-Za-z0-9_-]*\.")
# The shortest JOSE header, {"alg":"none"}, is 19 characters in base64url; the longest
# decoded whole is the scanned part of a value.
_MIN_HEADER = 19
# Dotted base64url runs long enough for a JOSE header that one value may hold before it is
# taken for a credential without decoding more: each is decoded (and parsed as JSON), so a
# value made of thousands of them (a caller's header, say) would cost milliseconds. No
# identifier, route or reason holds so many; redacting such a value fails safe.
_MAX_CANDIDATES = 16


def _der_like(text: str) -> bool:
    """Whether base64 (or base64url) ``text`` starts like the DER (or BER) of a key, a
    certificate or a signed message carrying certificates: a SEQUENCE, of any definite length
    or of BER's indefinite one (streaming CMS writers use it), whose content starts with an INTEGER
    (private keys, PKCS#12), a SEQUENCE (certificates, public keys) or an OBJECT IDENTIFIER
    (CMS / PKCS#7 content)."""
    head = base64.b64decode(text[:8].replace("-", "+").replace("_", "/"))
    # the number of length octets after the first: none in the short form and in BER's
    # indefinite form (0x80), one to three in the long form here
    more = head[1] & 0x7F if head[1] >= 0x80 else 0
    return more <= 3 and head[2 + more] in _DER_CONTENT


def _names_alg(encoded: str) -> bool:
    """Whether base64url ``encoded`` decodes to a JSON object with an ``alg`` member, spelled
    any way JSON allows (whitespace, escaped names): as a token verifier would read it."""
    try:
        header = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (ValueError, RecursionError):  # not base64, not UTF-8 JSON, or nested too deep
        return False
    return isinstance(header, dict) and "alg" in header


def _jose_header(segment: str) -> bool:
    """Whether ``segment`` holds a JOSE header (a JSON object naming its ``alg``), alone or
    glued to a prefix (``x_eyJ...``)."""
    if len(segment) % 4 != 1 and _names_alg(segment):  # no base64 text is 4n + 1 long
        return True
    start = segment.find("eyJ")
    for _ in range(8):  # bounded: a run of "eyJeyJ..." is no token
        if start < 0:
            break
        text = segment[start:]  # the whole header: its alg may follow a long x5c
        try:
            decoded = base64.urlsafe_b64decode(text[: len(text) - len(text) % 4])
        except ValueError:
            decoded = b""
        if b'"alg"' in decoded:
            return True
        start = segment.find("eyJ", start + 1)
    return False


def _sensitive(value: str) -> bool:
    """Whether ``value`` (its first :data:`_SCAN_LIMIT` characters) holds a credential, as it
    is or percent-encoded (a query string or a forwarded header escapes base64's ``+`` and
    ``/``, which would cut a key's base64 short)."""
    if _holds_credential(value):
        return True
    head = value[:_SCAN_LIMIT]
    return "%" in head and _holds_credential(unquote(head))


def _holds_credential(value: str) -> bool:
    """:func:`_sensitive` of ``value`` as it is. The two scans are independent: a dotted word
    that is no token never hides a key after it."""
    for found in _SENSITIVE.finditer(value, 0, _SCAN_LIMIT):
        if found.lastgroup != "der" or _der_like(found.group()):
            return True
    position, candidates = 0, 0
    while (dotted := _JWS.search(value, position, _SCAN_LIMIT)) is not None:
        segment = dotted.group(1)
        if len(segment) >= _MIN_HEADER:
            candidates += 1
            if candidates > _MAX_CANDIDATES or _jose_header(segment):
                return True
        position = dotted.end(1) + 1  # its second segment may start a token itself
    return False


_HEX = {
    "trace_id": re.compile(r"[0-9a-f]{32}"),
    "span_id": re.compile(r"[0-9a-f]{16}"),
    "cert_fingerprint": re.compile(r"[0-9a-f]{64}"),
    "event_id": re.compile(r"[0-9a-f]{32}"),
}
_REQUIRED_TEXT = ("service", "reason", "kind", "method")
_OPTIONAL_TEXT = (
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
    "would_rule_id",
    "would_reason",
)
_TEXT_FIELDS = _REQUIRED_TEXT + _OPTIONAL_TEXT
_get_texts = operator.attrgetter(*_TEXT_FIELDS)
_ONLY_STR = frozenset({str})
# to_dict() writes its keys in sorted order: sort_keys would only sort them again.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _new_event_id() -> str:
    return secrets.token_hex(16)


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEvent:
    """What happened to one request or RPC, and why: the record every sink receives.

    All arguments are keyword-only. ``time``, ``service``, ``decision``, ``reason``,
    ``kind`` and ``method`` are required; the others default to ``None``, ``False`` or
    ``()``, and ``event_id`` to a fresh random 128-bit hex string.

    ``decision`` is the verdict that was enforced. ``dry_run`` is true when a dry-run
    rule or policy would have decided differently; ``would_decide`` is then that other
    verdict, and ``would_rule_id`` / ``would_reason`` the rule (or rate limit) and reason
    that would have decided it. ``route`` is the route *template* (``/orders/{id}``), never
    the raw path.
    ``trace_trusted`` tells whether ``trace_id``/``span_id`` came from our own active
    span or an authenticated caller (see :func:`zerotrust.audit.trace_ids_for_audit`).
    """

    time: datetime
    service: str
    decision: Verdict
    dry_run: bool = False
    would_decide: Verdict | None = None
    reason: str
    rule_id: str | None = None
    policy_id: str | None = None
    status: int | None = None
    grpc_status: str | None = None
    kind: str
    method: str
    route: str | None = None
    remote_addr: str | None = None
    spiffe_id: str | None = None
    subject: str | None = None
    issuer: str | None = None
    proven_by: str | None = None
    client_id: str | None = None
    actor: str | None = None
    cert_fingerprint: str | None = None
    token_jti: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    trace_trusted: bool = False
    notes: tuple[str, ...] = ()
    event_id: str = field(default_factory=_new_event_id)
    would_rule_id: str | None = None
    would_reason: str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "time", _utc(self.time))
        set_(self, "decision", _verdict("decision", self.decision))
        if self.would_decide is not None:
            set_(self, "would_decide", _verdict("would_decide", self.would_decide))
        _check_bool("dry_run", self.dry_run)
        _check_bool("trace_trusted", self.trace_trusted)
        if self.dry_run and (self.would_decide is None or self.would_decide == self.decision):
            raise ValueError("a dry-run event needs would_decide set to the other verdict")
        if not self.dry_run and self.would_decide not in (None, self.decision):
            raise ValueError("would_decide differs from decision: that is a dry-run event")
        if self.status is not None and type(self.status) is not int:
            if not isinstance(self.status, int) or isinstance(self.status, bool):
                raise TypeError("AuditEvent.status must be an int or None")
            set_(self, "status", int(self.status))  # an HTTPStatus member: its number
        notes = self.notes
        if type(notes) is not tuple or len(notes) > MAX_NOTES:
            notes = _clean_notes(notes)
            set_(self, "notes", notes)
        texts = _get_texts(self)
        if None in texts[: len(_REQUIRED_TEXT)]:
            raise TypeError(f"AuditEvent needs {', '.join(_REQUIRED_TEXT)}")
        present = [text for text in texts if text is not None]
        if not _plainly_safe(present + list(notes)):
            for name, value in zip(_TEXT_FIELDS, texts, strict=True):
                if value is not None:
                    cleaned = _clean(name, value)
                    if cleaned is not value:
                        set_(self, name, cleaned)
            set_(self, "notes", _clean_notes(notes))
        for name in _HEX:
            value = getattr(self, name)
            if value is not None:
                checked = _hex(name, value)
                if checked is not value:
                    set_(self, name, checked)

    def _again(
        self,
        *,
        time: datetime,
        remote_addr: str | None,
        trace_id: str | None,
        span_id: str | None,
        trace_trusted: bool,
    ) -> AuditEvent:
        """This event for another request that got the same decision: only what differs
        between two such requests is replaced, checked as the constructor checks it, and the
        event gets a fresh ``event_id``. (The Guard's repeated requests: building an event
        field by field costs more than the decision.)"""
        event = object.__new__(AuditEvent)
        set_ = object.__setattr__
        for name in _FIELDS:
            set_(event, name, getattr(self, name))
        set_(event, "time", _utc(time))
        if remote_addr is not None and not _plainly_safe([remote_addr]):
            remote_addr = _clean("remote_addr", remote_addr)
        set_(event, "remote_addr", remote_addr)
        _check_bool("trace_trusted", trace_trusted)
        set_(event, "trace_trusted", trace_trusted)
        for name, value in (("trace_id", trace_id), ("span_id", span_id)):
            set_(event, name, None if value is None else _hex(name, value))
        set_(event, "event_id", _new_event_id())
        return event

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with every field, always: absent values are ``None``. Keys are in
        alphabetical order (the order of :meth:`to_json`).

        ``time`` becomes an RFC 3339 string in UTC with microseconds and a ``Z``
        (``2024-05-01T12:00:00.000000Z``) and ``notes`` a list. Keys are the field names.
        """
        return {
            "actor": self.actor,
            "cert_fingerprint": self.cert_fingerprint,
            "client_id": self.client_id,
            "decision": self.decision,
            "dry_run": self.dry_run,
            "event_id": self.event_id,
            "grpc_status": self.grpc_status,
            "issuer": self.issuer,
            "kind": self.kind,
            "method": self.method,
            "notes": list(self.notes),
            "policy_id": self.policy_id,
            "proven_by": self.proven_by,
            "reason": self.reason,
            "remote_addr": self.remote_addr,
            "route": self.route,
            "rule_id": self.rule_id,
            "service": self.service,
            "span_id": self.span_id,
            "spiffe_id": self.spiffe_id,
            "status": self.status,
            "subject": self.subject,
            "time": self.time.isoformat(timespec="microseconds")[:-6] + "Z",  # drop "+00:00"
            "token_jti": self.token_jti,
            "trace_id": self.trace_id,
            "trace_trusted": self.trace_trusted,
            "would_decide": self.would_decide,
            "would_reason": self.would_reason,
            "would_rule_id": self.would_rule_id,
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as compact JSON with sorted keys: one ASCII-only line."""
        return _dumps(self.to_dict())


_FIELDS: Final = tuple(AuditEvent.__dataclass_fields__)


def _dumps(data: dict[str, Any]) -> str:
    # ensure_ascii (the default) escapes every control and non-ASCII character, so the
    # line cannot be split or forged by what a caller put in a header.
    return _ENCODER.encode(data)


def _utc(value: object) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError("AuditEvent.time must be a datetime")
    if value.utcoffset() is None:
        raise ValueError("AuditEvent.time must be timezone-aware (use a zerotrust Clock)")
    return value if value.tzinfo is timezone.utc else value.astimezone(timezone.utc)


def _verdict(name: str, value: object) -> Verdict:
    if isinstance(value, str):
        if value == "allow":
            return "allow"
        if value == "deny":
            return "deny"
    raise ValueError(f"AuditEvent.{name} must be 'allow' or 'deny', not {value!r:.40}")


def _hex(name: str, value: object) -> str:
    """``value`` of the hex identifier field ``name``: a wrong type is a :class:`TypeError`,
    a str that is not lowercase hex of the field's length a :class:`ValueError`."""
    if type(value) is not str:
        if not isinstance(value, str):
            raise TypeError(f"AuditEvent.{name} must be a str, not {type(value).__name__}")
        value = str.__str__(value)  # a str subclass: its plain text
    if not _HEX[name].fullmatch(value):
        raise ValueError(f"AuditEvent.{name} must be lowercase hex of the right length")
    return value


def _check_bool(name: str, value: object) -> None:
    if type(value) is not bool:
        raise TypeError(f"AuditEvent.{name} must be a bool")


def _plainly_safe(values: list[object]) -> bool:
    """True when no value needs cleaning: all plain str, short, and no credential hint."""
    if frozenset(map(type, values)) != _ONLY_STR:
        return False
    texts = cast("list[str]", values)
    joined = "\0".join(texts)
    if len(joined) > MAX_FIELD_LENGTH and max(map(len, texts)) > MAX_FIELD_LENGTH:
        return False
    # the common case: nothing to look at twice
    return _HINTS.search(joined) is None and _DOTTED.search(joined) is None


def _clean(name: str, value: object) -> str:
    if type(value) is not str:
        if not isinstance(value, str):
            raise TypeError(f"AuditEvent.{name} must be a str, not {type(value).__name__}")
        value = str.__str__(value)  # a str subclass (an enum member, ...): its plain text
    if (
        _HINTS.search(value, 0, _SCAN_LIMIT) is not None
        or _DOTTED.search(value, 0, _SCAN_LIMIT) is not None
    ) and _sensitive(value):
        return REDACTED
    if len(value) > MAX_FIELD_LENGTH:
        return value[: MAX_FIELD_LENGTH - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER
    return value


def _clean_notes(notes: object) -> tuple[str, ...]:
    if not isinstance(notes, (tuple, list)):
        raise TypeError("AuditEvent.notes must be a tuple of str")
    cleaned = tuple(_clean("notes", note) for note in notes)
    if len(cleaned) > MAX_NOTES:
        cleaned = (*cleaned[: MAX_NOTES - 1], "notes_truncated")
    return cleaned
