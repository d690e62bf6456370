"""Sender-constrained tokens: RFC 8705 certificate binding and RFC 9449 DPoP proofs.

A bound token is only accepted from the party holding the bound key:

* ``cnf.x5t#S256`` (RFC 8705 §3): the connection (direct mTLS, or a trusted proxy's forwarded
  certificate) must present exactly that certificate;
* ``cnf.jkt`` (RFC 9449 §6): the request must carry a valid DPoP proof signed by that key,
  with the ``DPoP`` authorization scheme. A DPoP-bound token sent as plain ``Bearer`` is refused.

A proof's ``htu`` must name the request: the service's configured public base URL
(``DPoPConfig.origins``: an origin, and the path prefix a proxy in front may strip) followed by
the request's path or, without it, the request's scheme, its one ``Host`` (which must then be a
valid ``host[:port]``: a Host header is the caller's to write) and its path. Both sides are
compared after RFC 3986 §6.2.2 syntax-based normalisation, the ``htu`` without query and
fragment (RFC 9449 §4.3). The request's path is taken as sent: dot segments stay (see
:func:`_targets`), and a ``#`` in it is a malformed request, never the start of a fragment.

Proof ``jti`` values are remembered in a replay cache by the caller (the Guard).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from zerotrust.authn.dpop_nonce import DPoPNonces
from zerotrust.authn.request import RequestView
from zerotrust.errors import (
    ConfigurationError,
    DPoPOriginUnknown,
    InvalidDPoPProof,
    MalformedCredentials,
    MalformedToken,
    TokenBindingMismatch,
    TokenError,
    UseDPoPNonce,
)
from zerotrust.tokens._b64 import b64url_decode, b64url_encode, decode_canonical, is_canonical
from zerotrust.tokens._header import check_typ
from zerotrust.tokens._json import JSONError, loads_object
from zerotrust.tokens._jwk_codec import required_members, thumbprint_of
from zerotrust.tokens._profiles import DPOP_TYP
from zerotrust.tokens.algorithms import ASYMMETRIC_ALGORITHMS, MAX_DPOP_RSA_BITS
from zerotrust.tokens.keys import JWK
from zerotrust.tokens.verified import VerifiedToken
from zerotrust.x509.verify import VerifiedPeer

__all__ = [
    "DPoPConfig",
    "DPoPProof",
    "check_certificate_binding",
    "check_confirmation_methods",
    "normalize_htu",
    "request_url",
    "verify_dpop_proof",
]

_COMPACT = re.compile(rb"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)")
_MAX_PROOF_BYTES = 8192
_JKT_MISMATCH: Final = "DPoP proof key does not match the token's cnf.jkt"
_MAX_JTI = 256
_MAX_IAT = 10**15  # seconds: far beyond any real time, and exactly representable as a float
_MAX_HOST: Final = 1024
_MAX_ORIGINS: Final = 64
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}

# RFC 3986 §3.2.2-3.2.3 (the Host header has the same syntax, RFC 9110 §7.2): a reg-name (an
# IPv4 address is one too) or a bracketed IP-literal, then an optional port; no user information
_AUTHORITY: Final = re.compile(
    r"(?:\[([^\[\]]+)\]|((?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+))(?::([0-9]{0,5}))?"
)
_IP_FUTURE: Final = re.compile(r"[vV][0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+")
# RFC 3986 appendix B, for an absolute URI with an authority: scheme, authority, path, query
# and fragment
_URL: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)([^?#]*)(\?[^#]*)?(#.*)?", re.S)
# visible ASCII with well-formed percent-encodings: a URI, and what clients such as httpx send
# unencoded in a path (``|``, ``^``, ``\``), compared as written
_URI_TEXT: Final = re.compile(r"(?:[!-$&-~]|%[0-9A-Fa-f]{2})*")
_PERCENT: Final = re.compile(r"%[0-9A-Fa-f]{2}")
_UNRESERVED: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _cert_thumbprint(peer: VerifiedPeer) -> str:
    return b64url_encode(bytes.fromhex(peer.fingerprint))


def _same(presented: str, expected: str) -> bool:
    """Constant-time equality of a value from a token or proof (any string JSON can hold, lone
    surrogates included) and the value computed here."""
    return hmac.compare_digest(
        presented.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


#: The confirmation methods (``cnf`` members, RFC 7800) this module enforces.
ENFORCED_CONFIRMATIONS: Final = frozenset({"x5t#S256", "jkt"})


def check_confirmation_methods(token: VerifiedToken) -> None:
    """Refuse a token bound by a confirmation method that is not enforced here (a ``cnf``
    member other than ``x5t#S256`` and ``jkt``: ``jwk``, ``kid``, ``jku``, a misspelt name):
    its issuer meant it for a holder that proves a key, and accepting it as a plain bearer
    token would drop that proof. An empty ``cnf`` binds to nothing."""
    cnf = token.cnf
    if cnf and not ENFORCED_CONFIRMATIONS.issuperset(cnf):
        raise TokenBindingMismatch("the token is bound by a confirmation method not checked here")


def check_certificate_binding(token: VerifiedToken, peer: VerifiedPeer | None) -> bool:
    """Enforce ``cnf.x5t#S256``; returns whether the token was certificate-bound."""
    cnf = token.cnf
    if not cnf or "x5t#S256" not in cnf:
        return False
    expected = cnf["x5t#S256"]
    if not isinstance(expected, str):
        raise TokenBindingMismatch("cnf.x5t#S256 is not a string")
    if peer is None:
        raise TokenBindingMismatch("certificate-bound token presented without a client certificate")
    if not _same(expected, _cert_thumbprint(peer)):
        raise TokenBindingMismatch("token is bound to another certificate")
    return True


@dataclass(frozen=True)
class DPoPConfig:
    """How DPoP proofs are checked: accepted algorithms, the ``iat`` window in seconds, and the
    service's public base URLs, ``origins``, that a proof's ``htu`` must start with.

    An origin is how clients address the service: ``"https://api.example"``, or
    ``"https://gateway.example/orders"`` when a proxy forwards ``/orders/...`` as ``/...``.
    Without ``origins``, the request's scheme and ``Host`` header name it; requests that name no
    host (gRPC) then cannot use DPoP. ``algorithms`` and ``origins`` may be given as lists; they
    are kept as tuples.

    ``nonces``: require a nonce the service handed out in every proof (RFC 9449 §9; see
    :class:`~zerotrust.authn.DPoPNonces`).
    """

    algorithms: tuple[str, ...] = ("ES256", "ES384", "EdDSA", "PS256", "RS256")
    max_age: float = 300.0
    leeway: float = 5.0
    origins: tuple[str, ...] = ()
    nonces: DPoPNonces | None = None
    #: ``origins`` split into (origin, path prefix) pairs.
    _bases: tuple[tuple[str, str], ...] = field(init=False, repr=False, compare=False)

    if TYPE_CHECKING:  # lists are accepted too, and kept as tuples (the config stays frozen)

        def __init__(
            self,
            algorithms: Sequence[str] = ("ES256", "ES384", "EdDSA", "PS256", "RS256"),
            max_age: float = 300.0,
            leeway: float = 5.0,
            origins: Sequence[str] = (),
            nonces: DPoPNonces | None = None,
        ) -> None: ...

    def __post_init__(self) -> None:
        algorithms: Any = self.algorithms  # a list from callers too (see __init__)
        if isinstance(algorithms, str) or not isinstance(algorithms, (list, tuple)):
            raise ConfigurationError("DPoP algorithms must be a list, e.g. ['ES256']")
        object.__setattr__(self, "algorithms", tuple(algorithms))
        bad = set(self.algorithms) - ASYMMETRIC_ALGORITHMS
        if not self.algorithms or bad:
            raise ConfigurationError(
                f"DPoP proofs need asymmetric algorithms; refused: {sorted(bad)}"
            )
        window = (self.max_age, self.leeway)
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in window):
            raise ConfigurationError("DPoP max_age and leeway must be numbers of seconds")
        if not (0 < self.max_age <= 3600) or not (0 <= self.leeway <= 300):
            raise ConfigurationError("DPoP max_age must be in (0, 3600] and leeway in [0, 300]")
        if self.nonces is not None and not isinstance(self.nonces, DPoPNonces):
            raise ConfigurationError("DPoP nonces must be a DPoPNonces(secret) or None")
        bases = _origins(self.origins)
        object.__setattr__(self, "_bases", bases)
        object.__setattr__(self, "origins", tuple(origin + prefix for origin, prefix in bases))


def _origins(values: object) -> tuple[tuple[str, str], ...]:
    """Configured base URLs as (origin, path prefix), normalised as :func:`normalize_htu`
    normalises a proof's (the prefix without a trailing ``/``)."""
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise ConfigurationError("DPoP origins must be a list, e.g. ['https://api.example']")
    if len(values) > _MAX_ORIGINS:
        raise ConfigurationError(f"at most {_MAX_ORIGINS} DPoP origins")
    found: list[tuple[str, str]] = []
    for value in values:
        match = _URL.fullmatch(value) if isinstance(value, str) else None
        plain = match is not None and not match.group(4) and not match.group(5)
        split = _split(value) if plain and _URI_TEXT.fullmatch(value) else None
        if split is None or split[1] != _remove_dot_segments(split[1]):
            raise ConfigurationError(
                f"DPoP origin {value!r} is not an http(s) base URL: scheme://host[:port] and"
                " an optional path prefix, without user information, query or fragment"
            )
        found.append((split[0], split[1].rstrip("/")))
    return tuple(dict.fromkeys(found))


@dataclass(frozen=True, slots=True)
class DPoPProof:
    """A verified proof: the JWK thumbprint (``jkt``), its ``jti`` and ``iat``, and the
    service's ``nonce`` it carried (only when the service requires nonces)."""

    jkt: str
    jti: str
    iat: float
    nonce: str | None = None

    def replay_key(self) -> str:
        """The replay-cache key of this proof, ``"dpop:<jkt>:<jti>"``: the Guard refuses a
        second use of it."""
        return f"dpop:{self.jkt}:{self.jti}"


def _percent(text: str) -> str:
    """RFC 3986 §6.2.2.1-2: percent-encoded unreserved characters decoded, the other
    percent-encodings in upper case."""
    if "%" not in text:
        return text

    def fix(match: re.Match[str]) -> str:
        char = chr(int(match.group()[1:], 16))
        return char if char in _UNRESERVED else match.group().upper()

    return _PERCENT.sub(fix, text)


def _host(authority: str, scheme: str) -> str | None:
    """``authority`` as a normalised ``host[:port]`` (lower case, default port dropped), or
    ``None`` when it is not a valid one."""
    match = _AUTHORITY.fullmatch(authority) if len(authority) <= _MAX_HOST else None
    if match is None:
        return None
    literal, name, port = match.groups()
    if literal is not None:
        if not (_IP_FUTURE.fullmatch(literal) or _is_ipv6(literal)):
            return None
        host = f"[{literal.lower()}]"
    else:
        host = _PERCENT.sub(lambda m: m.group().upper(), _percent(name).lower())
    if port:
        number = int(port)
        if number > 65535:
            return None
        if number != _DEFAULT_PORTS.get(scheme):
            return f"{host}:{number}"
    return host


def _is_ipv6(text: str) -> bool:
    if "%" in text:  # a zone identifier names an interface of the sender: not in a Host
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _path(path: str) -> str:
    """The path of a parsed URL (no query or fragment), its percent-encodings normalised (RFC
    3986 §6.2.2.1-2); an empty path is ``/`` (§6.2.3)."""
    return _percent(path) or "/"


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 for a path that starts with ``/``."""
    segments = path.split("/")
    out: list[str] = []
    for segment in segments[1:]:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    if segments[-1] in (".", ".."):
        out.append("")
    return "/" + "/".join(out)


def _split(url: str) -> tuple[str, str] | None:
    """The normalised origin and the :func:`_path` of an absolute http(s) URL, or ``None``."""
    match = _URL.fullmatch(url)
    if match is None:
        return None
    scheme = match.group(1).lower()
    if scheme not in _DEFAULT_PORTS:
        return None
    host = _host(match.group(2), scheme)
    if host is None:
        return None
    return f"{scheme}://{host}", _path(match.group(3))


def _htu(url: str) -> tuple[str, str] | None:
    split = _split(url) if _URI_TEXT.fullmatch(url) else None
    if split is None:
        return None
    return split[0], _remove_dot_segments(split[1])


def normalize_htu(url: str) -> str:
    """``url`` as ``htu`` values are compared (RFC 9449 §4.3): scheme, host, port and path
    after RFC 3986 §6.2.2 syntax-based normalisation (case, percent-encoding, dot segments),
    without the default port, query and fragment. Raises
    :class:`~zerotrust.errors.MalformedToken` for anything else."""
    htu = _htu(url)
    if htu is None:
        raise MalformedToken("DPoP htu is not an http(s) URL")
    return htu[0] + htu[1]


def request_url(view: RequestView, config: DPoPConfig) -> str:
    """The ``url`` to check a DPoP proof of ``view`` against: its path when the service's
    origins are configured (the ``Host`` header is not used then), else the URL made of its
    scheme, its one ``Host`` (which must be a valid ``host[:port]``) and its path."""
    path = view.path or "/"
    if not path.startswith("/"):
        raise MalformedCredentials("the request target is not a path: no DPoP proof can name it")
    if "?" in path or "#" in path:  # a view's path holds no query: these were decoded, or sent raw
        raise MalformedCredentials("the request path holds '?' or '#'")
    if config.origins:
        return path
    if len(view.header("host")) > 1:  # RFC 9112 3.2: a request with two is refused
        raise MalformedCredentials("the request has more than one Host header")
    host = view.host
    if host is None:
        raise DPoPOriginUnknown(
            "the request names no host (gRPC): DPoP needs the service's origins configured"
        )
    if "," in host:  # two Host headers a WSGI server joined: no DNS name holds a comma
        raise MalformedCredentials("the request has more than one Host header")
    if _host(host, view.scheme) is None:
        raise MalformedCredentials("the Host header is not a valid host[:port]")
    return f"{view.scheme}://{host}{path}"


def _request_path(path: str) -> str:
    """A request's path as sent, for comparison: its query dropped, percent-encodings
    normalised. A ``#`` cannot be in a request target (RFC 9112 3.2): it is malformed, never
    read as the start of a fragment (``/users/7#/delete`` routes to ``.../delete``)."""
    if "#" in path:
        raise MalformedCredentials("the request path holds '#'")
    return _path(path.partition("?")[0])


def _targets(url: str, config: DPoPConfig) -> list[tuple[str, str]]:
    """The (origin, path) pairs a proof's ``htu`` may name for a request to ``url``. Dot
    segments stay in the request's path: applications route the path as sent
    (``/orders/{id}/admin`` matches ``/orders/../admin``), so such a request is never taken for
    the URL they resolve to; an ``htu`` has none after normalisation, so it matches no proof."""
    if url.startswith("/"):
        if not config.origins:
            raise MalformedCredentials("the request URL is a path, and no origins are configured")
        path = _request_path(url)
    else:
        match = _URL.fullmatch(url)
        origin = _split(url) if match is not None and not match.group(5) else None
        if match is None or origin is None:
            raise MalformedCredentials("the request URL is not an absolute http(s) URL")
        path = _request_path(match.group(3))
        if not config.origins:
            return [(origin[0], path)]
    return [(origin, prefix + path) for origin, prefix in config._bases]


def _claim_str(claims: Mapping[str, Any], name: str, limit: int = 2048) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise InvalidDPoPProof(f"DPoP proof has no valid {name!r}")
    return value


def _proof_key(header: Mapping[str, Any], config: DPoPConfig, jkt: str | None) -> JWK:
    """The key a proof's header carries, after its ``typ``, ``alg`` and ``crit``. With ``jkt``,
    the key's thumbprint must be that (compared before the key is imported)."""
    try:
        check_typ(header.get("typ"), DPOP_TYP, "a DPoP proof")
    except TokenError as exc:
        raise InvalidDPoPProof(str(exc)) from None
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in config.algorithms:
        raise InvalidDPoPProof("DPoP proof algorithm not accepted")
    if "crit" in header:
        raise InvalidDPoPProof("DPoP proof with crit is refused")
    # as for tokens: a reader that honours these would not read the payload that was verified
    if "b64" in header and header["b64"] is not True:
        raise InvalidDPoPProof("DPoP proof with an unencoded payload (b64: false) is refused")
    if "zip" in header or "enc" in header:
        raise InvalidDPoPProof("DPoP proof with compressed or encrypted content is refused")
    members = header.get("jwk")
    if not isinstance(members, Mapping):
        raise InvalidDPoPProof("DPoP proof has no jwk header")
    declared = members.get("alg")
    if declared is not None and declared != alg:  # one algorithm per key (RFC 8725 §3.1)
        raise InvalidDPoPProof("DPoP proof jwk is unusable: it is for another algorithm")
    try:
        required = required_members(members)
    except ConfigurationError as exc:
        raise InvalidDPoPProof(f"DPoP proof jwk is unusable: {exc}") from None
    # before the key is built or a signature checked: with a bound token, a proof by any other
    # key is refused at the cost of one hash, whatever key it carries
    if jkt is not None and not _same(jkt, thumbprint_of(required)):
        raise TokenBindingMismatch(_JKT_MISMATCH)
    if (
        required["kty"] == "RSA"
        and int.from_bytes(b64url_decode(required["n"]), "big").bit_length() > MAX_DPOP_RSA_BITS
    ):
        raise InvalidDPoPProof(
            f"DPoP proof jwk is unusable: RSA keys larger than {MAX_DPOP_RSA_BITS} bits are refused"
        )
    try:
        jwk = JWK.from_dict(members)
        return jwk if jwk.algorithm == alg else JWK(jwk.public_key, algorithm=alg)
    except ConfigurationError as exc:  # its messages name rules, never the members' values
        raise InvalidDPoPProof(f"DPoP proof jwk is unusable: {exc}") from None


def verify_dpop_proof(
    proof: str,
    *,
    method: str,
    url: str,
    access_token: str | None,
    config: DPoPConfig,
    now: float,
    jkt: str | None = None,
) -> DPoPProof:
    """Verify a DPoP proof JWT for this request (signature, ``typ``, ``htm``, ``htu``, ``iat``,
    ``ath``, and ``nonce`` when ``config.nonces`` is set); raises a
    :class:`~zerotrust.errors.TokenError` subclass, or
    :class:`~zerotrust.errors.MalformedCredentials` when ``url`` is not a request URL.

    ``url`` is the request's absolute URL. With ``config.origins``, the proof's origin must be
    one of them and only the path of ``url`` is used (``url`` may then be the path alone).

    ``jkt`` is the access token's ``cnf.jkt`` when it has one: a proof whose ``jwk`` has another
    RFC 7638 thumbprint is then refused (:class:`~zerotrust.errors.TokenBindingMismatch`)
    before its key is imported or its signature checked. RSA proof keys of more than 4096 bits
    are refused.

    With ``config.nonces``, a proof that passes every other check but carries no nonce the
    service handed out recently raises :class:`~zerotrust.errors.UseDPoPNonce`, last, so that a
    client sending the proof again with a fresh nonce is accepted.
    """
    if not isinstance(proof, str):
        raise InvalidDPoPProof("DPoP proof must be a string")
    raw = proof.encode("ascii", "replace")
    if len(raw) > _MAX_PROOF_BYTES:
        raise InvalidDPoPProof("DPoP proof is too large")
    match = _COMPACT.fullmatch(raw)
    if match is None or not all(is_canonical(seg) for seg in match.groups()):
        raise InvalidDPoPProof("DPoP proof is not a compact JWS")
    head, body, sig = match.groups()
    try:
        header = loads_object(decode_canonical(head))
        claims = loads_object(decode_canonical(body))
    except JSONError:
        raise InvalidDPoPProof("DPoP proof is not valid JSON") from None
    jwk = _proof_key(header, config, jkt)
    if not jwk._verify(decode_canonical(sig), raw[: len(head) + 1 + len(body)]):
        raise InvalidDPoPProof("DPoP proof signature is invalid")
    jti = _claim_str(claims, "jti", _MAX_JTI)
    if _claim_str(claims, "htm", 32) != method:  # methods are case-sensitive (RFC 9110 §9.1)
        raise InvalidDPoPProof("DPoP proof htm does not match the request method")
    targets = _targets(url, config)
    # as long as the proof allows: RFC 9110 4.1 asks for URIs of at least 8,000 octets
    htu = _htu(_claim_str(claims, "htu", limit=_MAX_PROOF_BYTES))
    if htu is None:
        raise InvalidDPoPProof("DPoP htu is not an http(s) URL")
    if htu not in targets:
        raise InvalidDPoPProof("DPoP proof htu does not match the request URL")
    iat = claims.get("iat")
    if (
        isinstance(iat, bool)
        or not isinstance(iat, (int, float))
        or (isinstance(iat, int) and not -_MAX_IAT < iat < _MAX_IAT)  # before any float()
        or not math.isfinite(iat)
    ):
        raise InvalidDPoPProof("DPoP proof iat is not a number")
    if iat > now + config.leeway or iat < now - config.max_age - config.leeway:
        raise InvalidDPoPProof("DPoP proof iat is outside the accepted window")
    if access_token is not None:
        if not isinstance(access_token, str) or not access_token.isascii():
            raise MalformedToken("access token is not ASCII")
        ath = b64url_encode(hashlib.sha256(access_token.encode("ascii")).digest())
        presented = claims.get("ath")
        if not isinstance(presented, str) or not _same(presented, ath):
            raise InvalidDPoPProof("DPoP proof ath does not match the access token")
    # with ``jkt``, _proof_key compared the key's thumbprint with it: no second hash
    verified = DPoPProof(jkt=jkt if jkt is not None else jwk.thumbprint(), jti=jti, iat=float(iat))
    if config.nonces is None:
        return verified
    nonce = claims.get("nonce")
    if not config.nonces.accepts(nonce, now):
        error = UseDPoPNonce("DPoP proof has no current nonce of this service")
        error.proof = verified  # the rest of the request's checks can still run on it
        raise error
    return DPoPProof(jkt=verified.jkt, jti=jti, iat=verified.iat, nonce=nonce)


def check_dpop_binding(token: VerifiedToken, proof: DPoPProof | None, scheme: str | None) -> bool:
    """Enforce ``cnf.jkt``: returns whether the token is DPoP-bound (and properly presented)."""
    cnf = token.cnf
    if not cnf or "jkt" not in cnf:  # a present jkt binds, whatever its value (null included)
        if scheme == "DPoP":
            raise TokenBindingMismatch("DPoP scheme used with a token that is not DPoP-bound")
        return False
    if scheme != "DPoP":
        raise TokenBindingMismatch("DPoP-bound token presented as a Bearer token")
    if proof is None:
        raise InvalidDPoPProof("DPoP-bound token presented without a DPoP proof")
    jkt = bound_jkt(token)
    if jkt is None or not _same(jkt, proof.jkt):
        raise TokenBindingMismatch(_JKT_MISMATCH)
    return True


def bound_jkt(token: VerifiedToken) -> str | None:
    """The ``cnf.jkt`` of a DPoP-bound token, for :func:`verify_dpop_proof`; ``None`` when the
    token is not DPoP-bound. A ``jkt`` that is not a string binds the token to no key: it is
    refused here (:class:`~zerotrust.errors.TokenBindingMismatch`)."""
    cnf = token.cnf
    if not cnf or "jkt" not in cnf:
        return None
    jkt = cnf["jkt"]
    if not isinstance(jkt, str):
        raise TokenBindingMismatch(_JKT_MISMATCH)
    return jkt
