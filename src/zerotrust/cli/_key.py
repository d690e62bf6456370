"""``zerotrust key generate``: a signing key for a development token issuer.

The key is written as unencrypted PKCS #8 PEM, readable by its owner only (mode 0600), and is
never printed. Its ``kid`` is its RFC 7638 thumbprint, which ``zerotrust token mint`` and
``zerotrust jwks`` use for a PEM key too.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import serialization

from zerotrust.cli._parser import command_group
from zerotrust.errors import ConfigurationError
from zerotrust.tokens import PrivateJWK
from zerotrust.x509.svid import write_file_atomic

_ALGORITHMS: Final = ("ES256", "ES384", "ES512", "EdDSA", "RS256", "PS256")


def register(commands: Any) -> None:
    cmds = command_group(commands, "key", "signing keys for development token issuers")
    generate = cmds.add_parser(
        "generate",
        help="write a new private key (PEM, mode 0600)",
        description="Generate a signing key and write it as PKCS #8 PEM, readable by its owner"
        " only. Its public JWKS is 'zerotrust jwks FILE'; 'zerotrust token mint --key FILE'"
        " signs with it. An existing file is not replaced unless --force.",
    )
    generate.add_argument("--out", required=True, type=Path, help="the private key file")
    generate.add_argument("--algorithm", choices=_ALGORITHMS, default="ES256")
    generate.add_argument("--force", action="store_true", help="replace an existing file")
    generate.set_defaults(handler=_generate)


def _generate(args: argparse.Namespace) -> int:
    out: Path = args.out
    key = PrivateJWK.generate(args.algorithm)
    pem = key.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    if args.force:
        write_file_atomic(out, pem, mode=0o600)
    else:
        _write_new(out, pem)
    print(f"generated a signing key: {args.algorithm}")
    print(f"  private key: {out} (mode 0600)")
    print(f"  kid:         {key.kid}")
    read_as = PrivateJWK.from_pem(pem).algorithm
    if read_as != args.algorithm:  # a PEM file names no algorithm: an RSA key reads as RS256
        print(
            f"  note:        the PEM file does not record {args.algorithm} ('zerotrust jwks' and"
            f" 'zerotrust token mint' read the key as {read_as}): pass them"
            f" --algorithm {args.algorithm}"
        )
    return 0


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` for its owner only and write ``data``; never replace or follow what is
    there (a file, a symbolic link), even one that appears meanwhile."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise ConfigurationError(f"{path} exists: pass --force to replace it") from None
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
    except OSError:
        path.unlink(missing_ok=True)  # no half-written key is left behind
        raise
