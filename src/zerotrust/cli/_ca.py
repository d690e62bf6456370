"""``zerotrust ca ...`` and ``zerotrust cert inspect``."""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from zerotrust._clock import SYSTEM_CLOCK
from zerotrust._files import same_file
from zerotrust._text import escaped
from zerotrust.dev import _FILES as CA_FILES
from zerotrust.dev import DevCA
from zerotrust.errors import ConfigurationError, ZeroTrustError
from zerotrust.x509._certs import fingerprint, load_pem_certs, read_bounded
from zerotrust.x509.verify import leaf_spiffe_id

_DURATION = re.compile(r"^(\d{1,9})([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``90``, ``90s``, ``15m``, ``1h`` or ``30d``."""
    m = _DURATION.match(text.strip())
    try:
        if m and int(m.group(1)):
            return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
    except OverflowError:
        pass  # more days than any date can hold: refused below, like any bad value
    raise argparse.ArgumentTypeError(f"invalid duration {text!r} (examples: 300s, 15m, 1h, 30d)")


def register(commands: Any) -> None:
    ca = commands.add_parser("ca", help="an embedded development certificate authority")
    ca_cmds = ca.add_subparsers(dest="ca_command", required=True, parser_class=type(ca))

    init = ca_cmds.add_parser("init", help="create a CA for a trust domain")
    init.add_argument("--trust-domain", required=True, help="e.g. example.org")
    init.add_argument("--dir", required=True, type=Path, help="directory to write the CA to")
    init.add_argument("--intermediate", action="store_true", help="also create an intermediate CA")
    init.add_argument("--ttl", type=parse_duration, default=timedelta(days=365))
    init.add_argument("--force", action="store_true", help="overwrite an existing CA")
    init.set_defaults(handler=_init)

    issue = ca_cmds.add_parser("issue", help="issue an X509-SVID")
    issue.add_argument("--dir", required=True, type=Path, help="the CA directory")
    issue.add_argument("--spiffe-id", required=True)
    issue.add_argument(
        "--cert", required=True, type=Path, help="where to write the certificate chain"
    )
    issue.add_argument(
        "--key", required=True, type=Path, help="where to write the private key (0600)"
    )
    issue.add_argument("--ttl", type=parse_duration, default=timedelta(hours=1))
    issue.add_argument("--dns", action="append", default=[], help="extra DNS SAN (repeatable)")
    issue.set_defaults(handler=_issue)

    bundle = ca_cmds.add_parser("bundle", help="print the CA's trust bundle")
    bundle.add_argument("--dir", required=True, type=Path)
    bundle.add_argument("--format", choices=["pem", "jwks"], default="pem")
    bundle.set_defaults(handler=_bundle)

    cert = commands.add_parser("cert", help="certificate tools")
    cert_cmds = cert.add_subparsers(dest="cert_command", required=True, parser_class=type(cert))
    inspect = cert_cmds.add_parser("inspect", help="show the SPIFFE ID, validity and fingerprint")
    inspect.add_argument("file", type=Path, help="PEM file with one or more certificates")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.set_defaults(handler=_inspect)


def _init(args: argparse.Namespace) -> int:
    if not args.force:  # any file of a CA, a key above all, even without its ca.json
        found = [name for name in CA_FILES.values() if (args.dir / name).exists()]
        if found:
            raise ConfigurationError(
                f"{args.dir} already holds {', '.join(found)} (use --force to replace a CA)"
            )
    ca = DevCA.create(args.trust_domain, intermediate=args.intermediate, ttl=args.ttl)
    ca.save(args.dir)
    print(f"created CA for trust domain {ca.trust_domain} in {args.dir}")
    print(f"bundle: {args.dir / 'bundle.pem'}")
    return 0


def _within(path: Path, directory: Path) -> bool:
    """Whether ``path`` is ``directory`` or lies under it, through any link or spelling."""
    top = directory.resolve()
    for place in (path.resolve(), path.parent.resolve() / path.name):
        for ancestor in (place, *place.parents):
            if ancestor == top or same_file(ancestor, top):
                return True
    return False


def _check_outputs(args: argparse.Namespace) -> None:
    """The SVID's two files must be two files, and neither may be in the CA's directory:
    writing there could replace the CA's own key or bundle."""
    if same_file(args.cert, args.key):
        raise ConfigurationError(f"--cert and --key name the same file ({args.key})")
    for option, path in (("--cert", args.cert), ("--key", args.key)):
        if _within(path, args.dir):
            raise ConfigurationError(
                f"{option} {path} is inside the CA directory {args.dir}: write the SVID elsewhere"
            )


def _issue(args: argparse.Namespace) -> int:
    _check_outputs(args)
    ca = DevCA.load(args.dir)
    svid = ca.issue_svid(args.spiffe_id, ttl=args.ttl, dns_names=args.dns)
    svid.save(args.cert, args.key)
    print(f"issued {svid.spiffe_id}")
    print(f"  certificate: {args.cert}")
    print(f"  private key: {args.key} (mode 0600)")
    print(f"  expires:     {svid.expires_at:%Y-%m-%dT%H:%M:%SZ}")
    print(f"  sha256:      {svid.fingerprint}")
    return 0


def _bundle(args: argparse.Namespace) -> int:
    bundle = DevCA.load(args.dir).bundle
    if args.format == "jwks":
        print(json.dumps(bundle.to_jwks(), indent=2))
    else:
        sys.stdout.write(bundle.to_pem().decode())
    return 0


def describe_certificate(cert: x509.Certificate) -> dict[str, Any]:
    """What ``cert inspect`` shows: identity, validity, fingerprint. Never key material."""
    now = SYSTEM_CLOCK.now()
    try:
        spiffe_id: str | None = str(leaf_spiffe_id(cert))
    except ZeroTrustError as exc:
        spiffe_id = None
        problem: str | None = str(exc)
    else:
        problem = None
    is_ca: bool | None
    try:
        is_ca = bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        is_ca = False
    except (x509.DuplicateExtension, x509.UnsupportedGeneralNameType, ValueError) as exc:
        # read only when asked for
        is_ca, problem = None, f"its extensions cannot be read ({type(exc).__name__})"
    status = "valid"
    if cert.not_valid_after_utc < now:
        status = "expired"
    elif cert.not_valid_before_utc > now:
        status = "not yet valid"
    info: dict[str, Any] = {
        "spiffe_id": spiffe_id,
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "ca": is_ca,
        "not_before": f"{cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}",
        "not_after": f"{cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}",
        "status": status,
        "sha256": fingerprint(cert),
    }
    if problem and is_ca is not True:
        info["svid_problem"] = problem
    return info


def _shown(value: object) -> str:
    """A value for the terminal: control characters (ESC, CR, LF, ...) escaped, so a
    certificate's subject cannot rewrite the lines around it."""
    return "-" if value is None else escaped(str(value))


def _inspect(args: argparse.Namespace) -> int:
    try:
        data = read_bounded(args.file, what=str(args.file))
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ConfigurationError(f"{args.file} contains no PEM certificate")
    try:
        certs = load_pem_certs(data)
    except ValueError as exc:
        raise ConfigurationError(f"{args.file}: {exc}") from None
    infos = [describe_certificate(c) for c in certs]
    if args.json:
        print(json.dumps(infos if len(infos) > 1 else infos[0], indent=2))
        return 0
    for index, info in enumerate(infos):
        if index:
            print()
        label = (
            "certificate"
            if len(infos) == 1
            else f"certificate {index} ({'leaf' if index == 0 else 'chain'})"
        )
        print(f"{label}:")
        for key, value in info.items():
            print(f"  {key + ':':<13} {_shown(value)}")
    if b"PRIVATE KEY-----" in data:
        print("\nnote: the file also holds a private key (not shown)")
    return 0
