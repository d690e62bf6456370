"""The end-to-end demo: ``zerotrust demo`` or ``python examples/demo.py``.

A shop in one process, on loopback: an embedded CA for ``shop.example``, a **gateway** (FastAPI
on uvicorn), **inventory** (gRPC) and **payments** (Flask), every connection mutual TLS, every
call carrying a short-lived token for its audience, every service deciding with its own
policy. A frontend and an intruder make scripted calls -- allowed, refused for each reason a
zero-trust service refuses -- and the demo prints the three services' audit trail, one trace
id linking the hops of each request. ``--keep-running`` leaves the services up for curl.

Needs ``pip install 'zerotrust[demo]'`` (FastAPI, uvicorn, Flask, grpcio, the OpenTelemetry
SDK). Importing this package imports none of them.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence

from zerotrust.errors import MissingDependencyError, ZeroTrustError

__all__ = ["add_arguments", "main", "run"]

# (module to find, distribution to name)
_REQUIRED = (
    ("fastapi", "fastapi"),
    ("uvicorn", "uvicorn"),
    ("flask", "flask"),
    ("grpc", "grpcio"),
    ("opentelemetry.sdk", "opentelemetry-sdk"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options, for its own parser and for ``zerotrust demo``."""
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the services up afterwards and print curl commands (stop with Ctrl-C)",
    )
    parser.add_argument(
        "--color",
        choices=["auto", "always", "never"],
        default="auto",
        help="colour the output (auto: only on a terminal, unless NO_COLOR is set)",
    )


def _check_dependencies() -> None:
    for module, package in _REQUIRED:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # the parent package is missing
            found = False
        if not found:
            raise MissingDependencyError(package, "demo")


def main(args: argparse.Namespace) -> int:
    """Run the demo with parsed ``args``; returns the exit status (2 when it cannot run)."""
    try:
        _check_dependencies()
        from zerotrust.demo._runner import run_demo
        from zerotrust.demo._table import Output

        return run_demo(Output(color=args.color), keep=args.keep_running)
    except ZeroTrustError as exc:
        print(f"zerotrust: error: [{exc.code}] {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def run(argv: Sequence[str] | None = None) -> int:
    """Run the demo with command-line arguments ``argv`` (default: ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(
        prog="zerotrust demo", description=(__doc__ or "").split("\n\n")[0]
    )
    add_arguments(parser)
    return main(parser.parse_args(argv))
