"""``zerotrust config check|explain`` and ``zerotrust policy explain``: check what a service
will load before it is deployed, ask its Guard about one request, and ask a policy what it
decides for a caller and an operation.

Settings are loaded exactly as :meth:`zerotrust.config.Settings.load` does at start-up,
environment included unless ``--no-env``. ``config check`` and ``policy explain`` read local
files only; ``config explain`` builds the Guard and verifies as the service would (keys from a
URL are fetched). The explain commands exit 0 when the request would be allowed, 1 when it
would be refused, and 2 when it could not be asked.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, get_args

from cryptography.hazmat.primitives import serialization

from zerotrust._config_sources import ENV_CONFIG
from zerotrust._files import read_regular_file
from zerotrust.authn.principal import Principal, ProvenBy
from zerotrust.authn.request import Request
from zerotrust.authz.decision import Decision
from zerotrust.authz.loader import load_policy
from zerotrust.authz.policy import Policy
from zerotrust.authz.rules import Operation
from zerotrust.cli._parser import command_group
from zerotrust.cli._token import _read_token, _TokenParser
from zerotrust.errors import ConfigurationError, InvalidSpiffeId
from zerotrust.identity.spiffe_id import SpiffeId
from zerotrust.tokens._json import JSONError, loads_object
from zerotrust.x509._certs import load_pem_certs

_MAX_CLAIMS: Final = 64 * 1024
_MAX_CHAIN: Final = 1 << 20
_PROVEN_BY: Final = get_args(ProvenBy)
_KINDS: Final = ("http", "grpc", "websocket")
#: The claims the caller's own fields are read from (as the Authenticator reads a token's),
#: with the option that gives each: never in --claims, where they would leave the caller's
#: fields and its claims saying different things.
_CALLER_CLAIMS: Final = {
    "sub": "--subject",
    "iss": "--issuer",
    "scope": "--scope",
    "scp": "--scope",
    "client_id": "--client-id",
    "azp": "--client-id",
    "act": "--actor",
}
_ALLOWED, _DENIED = 0, 1


def register(commands: Any) -> None:
    cmds = command_group(commands, "config", "check a service's settings")
    check = cmds.add_parser(
        "check",
        help="load the settings as the service would at start-up, and report the first problem",
        description="Load the settings file (or ZEROTRUST_CONFIG) and the ZEROTRUST_* variables"
        " as Settings.load() does, with every check it makes (key, bundle, policy and secret"
        " files included). Nothing is fetched or connected. Exit status 0 when they load, 2"
        " otherwise.",
    )
    _settings_arguments(check)
    check.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 1 when a valid setting weakens what is enforced (a caution)",
    )
    check.add_argument(
        "--show",
        action="store_true",
        help="print the effective settings as JSON (secrets redacted) and where each came from",
    )
    check.set_defaults(handler=_check)

    request = cmds.add_parser(
        "explain",
        help="what the service would answer a request: authenticated, authorized, and why",
        description="Build the Guard of these settings and ask it about one request, as the"
        " service would be asked, authentication included: the token is verified (keys from a"
        " URL are fetched), a certificate chain is verified against the bundles, and the"
        " configured store is asked about revocations (a Redis store too). Nothing is"
        " consumed (rate limits, replay entries) and no audit event is written. Prints the"
        " outcome as JSON, with the precise reason the caller's response leaves out. Exit"
        " status 0 when allowed, 1 when refused, 2 on an error.",
    )
    request.__class__ = _TokenParser  # a token given by mistake is never echoed
    _settings_arguments(request)
    _operation_arguments(request)
    request.add_argument("--token", help="the bearer token, or - to read it from stdin")
    request.add_argument(
        "--cert", type=Path, help="the client's certificate chain (PEM, leaf first)"
    )
    request.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="another request header, repeatable (e.g. a forwarded client certificate)",
    )
    request.add_argument(
        "--remote-addr", default="127.0.0.1", help="the address the request comes from"
    )
    request.set_defaults(handler=_explain_request)

    pcmds = command_group(commands, "policy", "ask a policy what it decides")
    explain = pcmds.add_parser(
        "explain",
        help="would this caller be allowed this operation, and why",
        description="Evaluate a policy for one caller and one operation, as the Guard would"
        " after authenticating the caller (nothing is authenticated here: the caller is taken"
        " as given, and no rate limit is consumed). Prints the decision as JSON. Exit status"
        " 0 when allowed, 1 when denied, 2 on an error. Without --spiffe-id, --subject,"
        " --issuer or --api-key-id the request carries no credentials.",
    )
    where = explain.add_mutually_exclusive_group(required=True)
    where.add_argument("policy", nargs="?", type=Path, help="policy file (TOML, YAML or JSON)")
    where.add_argument("--config", type=Path, help="a settings file: use its policy")
    explain.add_argument("--no-env", action="store_true", help="with --config: ignore ZEROTRUST_*")
    _operation_arguments(explain)
    explain.add_argument("--spiffe-id", help="the caller's SPIFFE ID")
    explain.add_argument("--subject", help="the token's sub")
    explain.add_argument("--issuer", help="the token's iss")
    explain.add_argument("--scope", action="append", default=[], help="granted scope, repeatable")
    explain.add_argument(
        "--claims",
        help="the token's other claims, a JSON object (sub, iss, scope, scp, client_id, azp and"
        " act are given by their options)",
    )
    explain.add_argument("--actor", help="the current actor (act.sub)")
    explain.add_argument("--client-id", help="the token's client_id")
    explain.add_argument("--api-key-id", help="a caller authenticated by this API key id")
    explain.add_argument(
        "--proven-by",
        choices=_PROVEN_BY,
        help="how the caller proved its identity (default: mtls for a SPIFFE ID alone, jwt"
        " when token claims are given, api-key for --api-key-id)",
    )
    explain.set_defaults(handler=_explain)


def _settings_arguments(parser: argparse.ArgumentParser) -> None:
    """Which settings, as Settings.load() finds them."""
    parser.add_argument(
        "file",
        nargs="?",
        type=Path,
        help="settings file (TOML, YAML or JSON); default: the one ZEROTRUST_CONFIG names",
    )
    parser.add_argument("--no-env", action="store_true", help="ignore the environment")


def _operation_arguments(parser: argparse.ArgumentParser) -> None:
    """What is called, and the answers of the policy's CUSTOM hooks."""
    parser.add_argument("--route", required=True, help="route template, or gRPC /pkg.Svc/Method")
    parser.add_argument("--method", help="HTTP method (default GET; POST for grpc)")
    parser.add_argument("--kind", choices=_KINDS, default="http")
    parser.add_argument(
        "--hook",
        action="append",
        default=[],
        metavar="NAME=allow|deny",
        help="the answer of a CUSTOM rule's hook, repeatable (every hook the policy names)",
    )


# --- config check ------------------------------------------------------------------------------


def _load_settings(file: Path | None, no_env: bool) -> Any:
    from zerotrust.config import Settings  # imports the configuration machinery on demand

    if no_env and file is None:
        raise ConfigurationError("--no-env needs a settings file")
    env = {} if no_env else dict(os.environ)
    if file is not None:  # the file named here, rather than the one ZEROTRUST_CONFIG names
        env.pop(ENV_CONFIG, None)
    return Settings.load(file, env=env)


def _check(args: argparse.Namespace) -> int:
    settings = _load_settings(args.file, args.no_env)
    cautions = settings.cautions()
    if args.show:
        shown = {
            "settings": settings.to_dict(),
            "origins": dict(sorted(settings.origins.items())),
            "cautions": list(cautions),
        }
        json.dump(shown, sys.stdout, indent=2, default=str)
        print()
    else:
        print(f"ok: settings from {', '.join(settings.sources)}")
    _print_cautions(cautions)
    return 1 if cautions and args.strict else 0


def _print_cautions(cautions: Sequence[str]) -> None:
    for caution in cautions:
        print(f"zerotrust: caution: {caution}", file=sys.stderr)


# --- config explain ----------------------------------------------------------------------------


def _chain(path: Path | None) -> list[bytes] | None:
    if path is None:
        return None
    data = read_regular_file(path, _MAX_CHAIN)
    if len(data) > _MAX_CHAIN:
        raise ConfigurationError(f"--cert: {path.name} is larger than {_MAX_CHAIN} bytes")
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ConfigurationError(f"--cert: {path.name} holds no PEM certificate")
    try:  # as the service reads PEM: a chain cut inside a block is refused, never shortened
        chain = load_pem_certs(data, what="--cert")
    except ValueError as exc:
        raise ConfigurationError(f"{exc} ({path.name})") from None
    return [cert.public_bytes(serialization.Encoding.DER) for cert in chain]


def _headers(args: argparse.Namespace) -> list[tuple[str, str]]:
    headers = []
    for item in args.header:
        name, sep, value = item.partition(":")
        if not sep or not name.strip() or name != name.strip():
            raise ConfigurationError("--header: expected 'Name: value'")
        headers.append((name.lower(), value.strip()))
    if args.token is not None:
        headers.append(("authorization", f"Bearer {_read_token(args.token)}"))
    return headers


def _explain_request(args: argparse.Namespace) -> int:
    settings = _load_settings(args.file, args.no_env)
    operation = _operation(args)
    view = Request(
        method=operation.method,
        route=operation.route,
        path=operation.path,
        kind=operation.kind,  # type: ignore[arg-type]  # one of the parser's choices
        headers=_headers(args),
        remote_addr=args.remote_addr,
        peer_chain=_chain(args.cert),
    )
    # explain() writes no audit event. build_guard logs the cautions; printed here instead,
    # as 'config check' prints them, rather than by logging's last-resort handler.
    config_log = logging.getLogger("zerotrust.config")
    disabled, config_log.disabled = config_log.disabled, True
    try:
        guard = settings.build_guard(hooks=_hooks(args.hook))
    finally:
        config_log.disabled = disabled
    _print_cautions(settings.cautions())
    outcome = guard.explain(view)
    error = outcome.error
    shown: dict[str, Any] = {
        "verdict": "allow" if outcome.allowed else "deny",
        "status": outcome.status,
        "grpc_status": outcome.grpc_status,
        "error": error.code if error is not None else None,
        "reason": str(error) if error is not None else None,  # the precise one, for you only
    }
    if outcome.www_authenticate is not None:
        shown["www_authenticate"] = outcome.www_authenticate
    if outcome.notes:
        shown["notes"] = list(outcome.notes)
    decision = outcome.decision
    shown["decision"] = _decision_fields(decision) if decision is not None else None
    shown["caller"] = _caller(outcome.principal)
    shown["operation"] = _operation_fields(operation)
    json.dump(shown, sys.stdout, indent=2)
    print()
    return _ALLOWED if outcome.allowed else _DENIED


# --- policy explain ----------------------------------------------------------------------------


def _hooks(given: list[str]) -> dict[str, Callable[..., bool]]:
    hooks: dict[str, Callable[..., bool]] = {}
    for item in given:
        name, _, answer = item.partition("=")
        if not name or answer not in ("allow", "deny"):  # (no "=": no answer)
            raise ConfigurationError(f"--hook {item[:60]!r}: expected NAME=allow or NAME=deny")
        if name in hooks:
            raise ConfigurationError(f"--hook {name[:60]!r} is given twice")
        verdict = answer == "allow"
        hooks[name] = lambda _principal, _operation, verdict=verdict: verdict
    return hooks


def _policy(args: argparse.Namespace) -> Policy:
    hooks = _hooks(args.hook)
    if args.config is None:
        if args.no_env:
            raise ConfigurationError("--no-env applies to --config only")
        return load_policy(args.policy, hooks=hooks)
    from zerotrust._config_build import build_policy

    settings = _load_settings(args.config, args.no_env)
    return build_policy(settings.policy, hooks)


def _claims(text: str | None) -> Mapping[str, Any]:
    if text is None:
        return {}
    if len(text) > _MAX_CLAIMS:
        raise ConfigurationError(f"--claims is longer than {_MAX_CLAIMS} characters")
    try:
        return loads_object(text)
    except JSONError as exc:
        raise ConfigurationError(f"--claims: {exc}") from None


def _spiffe_id(text: str | None, what: str) -> SpiffeId | None:
    if text is None:
        return None
    try:
        return SpiffeId.parse(text)
    except InvalidSpiffeId as exc:
        raise ConfigurationError(f"{what}: {exc}") from None


def _principal(args: argparse.Namespace) -> Principal | None:
    """The caller as the Authenticator would describe it, from what the options say."""
    token = any(
        value is not None
        for value in (args.subject, args.issuer, args.claims, args.actor, args.client_id)
    ) or bool(args.scope)
    spiffe_id = _spiffe_id(args.spiffe_id, "--spiffe-id")
    if args.api_key_id is not None:
        if token or spiffe_id is not None or args.proven_by not in (None, "api-key"):
            raise ConfigurationError("--api-key-id describes a caller with an API key only")
        key_id = args.api_key_id
        return Principal(proven_by="api-key", subject=f"api-key:{key_id}", api_key_id=key_id)
    if not token and spiffe_id is None:
        if args.proven_by is not None:
            raise ConfigurationError("--proven-by needs a caller (--spiffe-id, --subject, ...)")
        return None
    proven: ProvenBy = args.proven_by or ("jwt" if token else "mtls")
    if proven == "api-key":
        raise ConfigurationError("--proven-by api-key needs --api-key-id")
    if proven in ("mtls", "proxy-mtls"):
        if token:  # (without a token, there is a --spiffe-id: else no caller was described)
            raise ConfigurationError(f"--proven-by {proven} describes a certificate, no token")
        assert spiffe_id is not None
        # as the Authenticator names a certificate's caller: the ID, issued by its domain
        return Principal(
            proven_by=proven,
            spiffe_id=spiffe_id,
            subject=str(spiffe_id),
            issuer=spiffe_id.trust_domain.id_string(),
        )
    subject = args.subject
    if proven in ("mtls+jwt", "mtls+bound-jwt") and spiffe_id is None:
        raise ConfigurationError(f"--proven-by {proven} needs --spiffe-id (the certificate's)")
    if proven == "jwt" and spiffe_id is not None:
        # a token alone names a workload through its sub, as the Authenticator reads it
        if subject is None:
            subject = str(spiffe_id)
        elif subject != str(spiffe_id):
            raise ConfigurationError(
                "--proven-by jwt: a token alone names its caller's SPIFFE ID in sub:"
                " --spiffe-id and --subject differ"
            )
    if spiffe_id is None and subject is not None and subject.startswith("spiffe://"):
        spiffe_id = _spiffe_id(subject, "--subject")  # a token's sub naming a workload
    claims = dict(_claims(args.claims))
    for name in claims:
        if name in _CALLER_CLAIMS:
            raise ConfigurationError(
                f"--claims: give {name!r} with {_CALLER_CLAIMS[name]} (the caller is read from it)"
            )
    scopes = {scope for given in args.scope for scope in given.split()}
    # and the token holds what the options say, as conditions on its claims read it
    given = (("sub", subject), ("iss", args.issuer), ("client_id", args.client_id))
    claims |= {name: v for name, v in given if v is not None}
    if scopes:
        claims["scope"] = " ".join(sorted(scopes))
    if args.actor is not None:
        claims["act"] = {"sub": args.actor}
    return Principal(
        proven_by=proven,
        spiffe_id=spiffe_id,
        subject=subject,
        issuer=args.issuer,
        scopes=frozenset(scopes),
        claims=claims,
        client_id=args.client_id,
        actor=args.actor,
    )


def _operation(args: argparse.Namespace) -> Operation:
    method = (args.method or ("POST" if args.kind == "grpc" else "GET")).upper()
    if not method.isascii() or not method.isalpha():
        raise ConfigurationError("--method must be an HTTP method name")
    return Operation(method=method, route=args.route, kind=args.kind, path=args.route)


def _decision_fields(decision: Decision) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "verdict": decision.verdict,
        "reason": decision.reason,
        "rule_id": decision.rule_id,
        "policy_id": decision.policy_id,
        "required_scopes": list(decision.required_scopes),
    }
    if decision.dry_run:
        shown |= {
            "dry_run": True,
            "would_allow": decision.would_allow,
            "would_rule_id": decision.would_rule_id,
            "would_reason": decision.would_reason,
        }
    return shown


def _operation_fields(op: Operation) -> dict[str, Any]:
    return {"kind": op.kind, "method": op.method, "route": op.route}


def _caller(principal: Principal | None) -> dict[str, Any] | None:
    if principal is None:
        return None
    return {
        "proven_by": principal.proven_by,
        "spiffe_id": str(principal.spiffe_id) if principal.spiffe_id is not None else None,
        "subject": principal.subject,
        "issuer": principal.issuer,
        "scopes": sorted(principal.scopes),
    }


def _explain(args: argparse.Namespace) -> int:
    principal = _principal(args)
    operation = _operation(args)
    policy = _policy(args)
    decision = policy.explain(principal, operation)
    shown = _decision_fields(decision)
    shown |= {"caller": _caller(principal), "operation": _operation_fields(operation)}
    json.dump(shown, sys.stdout, indent=2)
    print()
    return _ALLOWED if decision.allowed else _DENIED
