"""The ``zerotrust`` command: a development CA, certificate, key and token tools, and checks
of settings and policies.

Every failure prints one line to stderr and exits with status 2; no tracebacks.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from zerotrust._version import __version__
from zerotrust.cli import _ca, _config, _demo, _key, _token
from zerotrust.cli._parser import Parser
from zerotrust.errors import ZeroTrustError

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="zerotrust",
        description="zero-trust service identities, certificates, tokens, settings and policies",
    )
    parser.add_argument("--version", action="version", version=f"zerotrust {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    _ca.register(commands)
    _token.register(commands)
    _key.register(commands)
    _config.register(commands)
    _demo.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.handler(args)
    # a token given where a file name or an option value belongs must not be printed back
    except ZeroTrustError as exc:
        print(_token.redact(f"zerotrust: error: [{exc.code}] {exc}"), file=sys.stderr)
        return 2
    except OSError as exc:
        name = f" {exc.filename}" if exc.filename else ""
        message = f"zerotrust: error: [io_error]{name}: {exc.strerror or exc}"
        print(_token.redact(message), file=sys.stderr)
        return 2
    # input no check caught: one line, no trace (cryptography raises some of its own kinds)
    except (ValueError, RecursionError, x509.DuplicateExtension, UnsupportedAlgorithm) as exc:
        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
        message = f"zerotrust: error: [invalid_input] {type(exc).__name__}: {detail}"
        print(_token.redact(message), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result
