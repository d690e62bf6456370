"""``zerotrust demo``: the end-to-end demo of :mod:`zerotrust.demo`.

The demo's frameworks are imported only when the command runs, never by ``zerotrust --help``.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any) -> None:
    from zerotrust.demo import add_arguments

    demo = commands.add_parser(
        "demo",
        help="run three services and two clients in this process: mTLS, tokens, policy, audit",
        description=(
            "A shop in one process: a gateway (FastAPI), inventory (gRPC) and payments (Flask) "
            "serving mutual TLS with an embedded CA, allowed and refused calls, and the audit "
            "trail of every service. Needs: pip install 'zerotrust[demo]'."
        ),
    )
    add_arguments(demo)
    demo.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from zerotrust.demo import main

    return main(args)
