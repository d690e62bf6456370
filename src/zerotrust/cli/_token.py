"""``zerotrust token mint|verify|inspect`` and ``zerotrust jwks``.

Tokens are never echoed in error messages (argument errors included): pass them as ``-`` to
read them from stdin and keep them out of the process list and shell history.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, NoReturn

from zerotrust._files import read_regular_file
from zerotrust.cli._ca import parse_duration
from zerotrust.cli._parser import Parser
from zerotrust.errors import ConfigurationError, MalformedToken, UnsupportedTokenFeature
from zerotrust.tokens import JWK, JWKSet, PrivateJWK, TokenIssuer, TokenVerifier
from zerotrust.tokens._b64 import b64url_decode
from zerotrust.tokens._json import JSONError, loads_object, thaw
from zerotrust.tokens._jwk import bind_unnamed
from zerotrust.x509._certs import encrypted_pem_key

_MAX_INPUT: Final = 64 * 1024
_MAX_KEY_FILE: Final = 1 << 20
_TOKEN_LIKE: Final = re.compile(
    r"[A-Za-z0-9_=+.-]{40,}|[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}[\w.=-]*"
)
_PEM_BLOCK: Final = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,40})-----.*?-----END \1-----", re.DOTALL)
_KEY_SUFFIXES: Final = frozenset({".pem", ".key", ".pub", ".crt", ".cer", ".json", ".jwk"})
_NOT_VERIFIED: Final = (
    "NOT VERIFIED: this token's signature and claims were NOT checked; "
    "do not trust anything it says (use 'zerotrust token verify')"
)


def redact(text: str) -> str:
    """``text`` with anything that looks like a token (or a long base64 value) replaced."""
    return _TOKEN_LIKE.sub("<redacted>", text)


class _TokenParser(Parser):
    """Argument errors of the token commands may quote a token: redact it, and report
    unexpected arguments here rather than letting them reach the top-level parser."""

    def error(self, message: str) -> NoReturn:
        super().error(redact(message))

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def register(commands: Any) -> None:
    token = commands.add_parser("token", help="mint, verify and inspect signed tokens (JWTs)")
    token.__class__ = _TokenParser
    cmds = token.add_subparsers(dest="token_command", required=True, parser_class=_TokenParser)

    mint = cmds.add_parser("mint", help="sign a short-lived token")
    mint.add_argument("--key", required=True, type=Path, help="PEM private key or private JWK")
    mint.add_argument("--issuer", required=True)
    mint.add_argument("--subject", required=True)
    mint.add_argument("--audience", required=True, action="append", help="repeatable")
    mint.add_argument("--scope", action="append", default=[], help="repeatable")
    mint.add_argument("--ttl", type=parse_duration, default=timedelta(minutes=5))
    mint.add_argument("--kid", help="key id (default: the key's RFC 7638 thumbprint)")
    mint.add_argument("--algorithm", help="e.g. PS256 for an RSA key (default: from the key)")
    mint.add_argument("--type", choices=["jwt", "jwt-svid", "at+jwt"], default="jwt")
    mint.add_argument("--client-id", help="client_id claim (required for --type at+jwt)")
    mint.set_defaults(handler=_mint)

    verify = cmds.add_parser("verify", help="verify a token and print its claims as JSON")
    verify.add_argument("token", help="the token, or - to read it from stdin")
    keys = verify.add_mutually_exclusive_group(required=True)
    keys.add_argument("--jwks", type=Path, help="JWKS file of trusted keys")
    keys.add_argument(
        "--key",
        type=Path,
        help="PEM public key or certificate to trust (an RSA key is an RS256 key unless"
        " --algorithm leaves RS256 out for one other RSA algorithm)",
    )
    verify.add_argument(
        "--issuer",
        help="expected iss (required, except for --type jwt-svid with --trust-domain: a"
        " JWT-SVID need not carry iss)",
    )
    verify.add_argument("--audience", required=True, action="append", help="repeatable")
    verify.add_argument("--algorithm", required=True, action="append", help="repeatable")
    verify.add_argument("--type", choices=["jwt-svid", "at+jwt"], default=None)
    verify.add_argument("--trust-domain", help="expected trust domain of a JWT-SVID subject")
    verify.add_argument("--leeway", type=float, default=60.0, help="clock skew, seconds")
    verify.set_defaults(handler=_verify)

    inspect = cmds.add_parser("inspect", help="decode a token WITHOUT verifying it")
    inspect.add_argument("token", help="the token, or - to read it from stdin")
    inspect.set_defaults(handler=_inspect)

    jwks = commands.add_parser("jwks", help="print the public JWKS of PEM or JWK key files")
    jwks.add_argument("paths", nargs="+", type=Path, help="key files or directories of them")
    jwks.add_argument(
        "--algorithm",
        action="append",
        help="the algorithms the keys sign with: a PEM RSA key is published as RS256 unless"
        " these leave RS256 out for one other RSA algorithm (e.g. PS256); repeatable",
    )
    jwks.set_defaults(handler=_jwks)


def _read_token(value: str) -> str:
    if value == "-":
        text = sys.stdin.read(_MAX_INPUT + 1)
        if len(text) > _MAX_INPUT:
            raise MalformedToken(f"input is larger than {_MAX_INPUT} bytes")
        value = text.strip()
    if len(value) > _MAX_INPUT:
        raise MalformedToken(f"token is larger than {_MAX_INPUT} bytes")
    if not value:
        raise MalformedToken("no token given")
    return value


def _read_key_file(path: Path) -> bytes:
    data = read_regular_file(path, _MAX_KEY_FILE)
    if len(data) > _MAX_KEY_FILE:
        raise ConfigurationError(f"{path.name} is larger than {_MAX_KEY_FILE} bytes")
    return data


def _json_object(data: bytes, what: str) -> Mapping[str, Any]:
    try:
        return loads_object(data, max_depth=8)
    except JSONError as exc:
        raise ConfigurationError(f"{what} is not acceptable JSON: {exc}") from None


def _private_pem(data: bytes, path: Path, algorithm: str | None = None) -> PrivateJWK:
    if encrypted_pem_key(data):
        raise ConfigurationError(f"{path} is an encrypted private key, which is not supported")
    return PrivateJWK.from_pem(data, algorithm=algorithm)


def _mint(args: argparse.Namespace) -> int:
    if args.type == "at+jwt" and not args.client_id:
        raise ConfigurationError("--type at+jwt needs --client-id (RFC 9068 requires client_id)")
    data = _read_key_file(args.key)
    if data.lstrip()[:1] == b"{":
        key = PrivateJWK.from_dict(_json_object(data, args.key.name))
    else:
        key = _private_pem(data, args.key, args.algorithm)
    if args.algorithm is not None and args.algorithm != key.algorithm:
        raise ConfigurationError("--algorithm differs from the algorithm bound to the key")
    issuer = TokenIssuer(key, issuer=args.issuer, kid=args.kid)
    extra = {"client_id": args.client_id} if args.client_id else None
    token = issuer.issue(
        subject=args.subject,
        audience=args.audience,
        scopes=args.scope,
        ttl=args.ttl.total_seconds(),
        extra_claims=extra,
        token_type=None if args.type == "jwt" else args.type,
    )
    print(token)
    return 0


def _decode_segment(segment: str, what: str) -> Mapping[str, Any]:
    try:
        return loads_object(b64url_decode(segment))
    except ValueError:
        raise MalformedToken(f"token {what} is not base64url-encoded JSON") from None


def _split(token: str) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    parts = token.split(".")
    if len(parts) == 5:
        raise UnsupportedTokenFeature("this is an encrypted token (JWE): nothing to show")
    if len(parts) != 3:
        raise MalformedToken("a JWS has exactly three dot-separated segments")
    return _decode_segment(parts[0], "header"), _decode_segment(parts[1], "payload")


def _verify(args: argparse.Namespace) -> int:
    token = _read_token(args.token)
    if args.jwks is not None:
        keys: JWKSet = JWKSet.from_json(_read_key_file(args.jwks), max_size=_MAX_KEY_FILE)
    else:
        public = _bound(JWK.from_pem(_read_key_file(args.key)), args.algorithm, args.key.name)
        try:  # the one trusted key answers to whatever kid the token names
            kid = _split(token)[0].get("kid")
        except (MalformedToken, UnsupportedTokenFeature):
            kid = None
        kid = kid if isinstance(kid, str) and 0 < len(kid) <= 1024 else None
        named = public.algorithm if len(public.algorithms) == 1 else None  # both EdDSA names
        keys = JWKSet([JWK(public.public_key, algorithm=named, kid=kid)])
    verifier = TokenVerifier(
        issuer=args.issuer,
        audience=args.audience,
        keys=keys,
        algorithms=args.algorithm,
        token_type=args.type,
        trust_domain=args.trust_domain,
        leeway=args.leeway,
        cache_size=0,
        max_token_size=_MAX_INPUT,
    )
    verified = verifier.verify(token)
    print(json.dumps(verified.claims_dict(), indent=2, sort_keys=True))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    token = _read_token(args.token)
    header, payload = _split(token)
    print(_NOT_VERIFIED, file=sys.stderr)
    print(json.dumps({"header": thaw(header), "payload": thaw(payload)}, indent=2))
    return 0


def _key_files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if (
                    child.is_file()
                    and not child.name.startswith(".")
                    and (child.suffix.lower() in _KEY_SUFFIXES)
                ):
                    yield child
        else:
            yield path


def _bound(key: JWK, algorithms: Sequence[str] | None, name: str, *, named: bool = False) -> JWK:
    """``key`` bound to the algorithm ``algorithms`` (``--algorithm``) has for it (see
    :func:`~zerotrust.tokens._jwk.bind_unnamed`); ``key`` as it is without ``algorithms``. A
    key that ``named`` its algorithm (a JWK's ``alg``) keeps it, which must be one of them."""
    if not algorithms:
        return key
    if named:
        if key.algorithm not in algorithms:
            raise ConfigurationError(
                f"{name}: the key's alg is {key.algorithm}, not one of --algorithm"
            )
        return key
    bound = bind_unnamed(key, algorithms, name)
    if not bound.algorithms.intersection(algorithms):
        raise ConfigurationError(
            f"{name}: none of --algorithm {', '.join(algorithms)} fits its {key.kty} key"
        )
    return bound


def _public_keys(path: Path, algorithms: Sequence[str] | None = None) -> Iterator[JWK]:
    data = _read_key_file(path)
    if data.lstrip()[:1] == b"{":
        document = _json_object(data, path.name)
        entries = document.get("keys", [document])
        if not isinstance(entries, (list, tuple)):
            raise ConfigurationError(f"{path.name}: 'keys' must be an array")
        for entry in entries:
            if not isinstance(entry, Mapping):
                raise ConfigurationError(f"{path.name}: a key is not a JSON object")
            key = PrivateJWK.from_dict(entry).public() if "d" in entry else JWK.from_dict(entry)
            yield _bound(key, algorithms, path.name, named="alg" in entry)
        return
    blocks = list(_PEM_BLOCK.finditer(data))
    if not blocks:
        raise ConfigurationError(f"{path.name} holds no PEM block")
    for block in blocks:
        if block.group(1).endswith(b" PARAMETERS"):
            continue  # domain parameters (openssl ecparam -genkey writes them first): no key
        if b"PRIVATE" in block.group(1):
            key = _private_pem(block.group(0), path).public()
        else:
            key = JWK.from_pem(block.group(0))
        yield _bound(key, algorithms, path.name)


def _jwks(args: argparse.Namespace) -> int:
    keys: list[JWK] = []
    for path in _key_files(args.paths):
        for key in _public_keys(path, args.algorithm):
            kid = key.kid or key.thumbprint()
            named = key.algorithm if len(key.algorithms) == 1 else None  # keep both EdDSA names
            keys.append(JWK(key.public_key, algorithm=named, kid=kid, use=key.use))
    if not keys:
        raise ConfigurationError("no keys found")
    print(json.dumps(JWKSet(keys).to_public_dict(), indent=2))
    return 0
