"""The Guard of the test project when it runs in its own process (gunicorn).

In-process tests replace it with ``override_settings(ZEROTRUST=...)``. Under gunicorn the
trust bundle comes from the PEM file named by ``ZT_TEST_BUNDLE``.
"""

from __future__ import annotations

import os
from pathlib import Path

from zerotrust import Authenticator, Callers, Guard, Policy, Rule, TrustBundle
from zerotrust.errors import ConfigurationError


def guard() -> Guard:
    path = os.environ.get("ZT_TEST_BUNDLE")
    if not path:
        raise ConfigurationError("ZT_TEST_BUNDLE is not set")
    bundle = TrustBundle.from_pem("example.org", Path(path).read_bytes())
    policy = Policy(
        [Rule(id="shop", callers=[Callers(spiffe_ids=["spiffe://example.org/ns/shop/*"])])],
        id="served",
    )
    return Guard(authenticator=Authenticator(bundles=bundle), policy=policy, service="orders")
