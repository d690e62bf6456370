"""Django for the adapter tests: the test project's settings, a Guard per test, tokens."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from typing import Any

import django
import pytest
from django.conf import settings
from django.test.utils import override_settings

from tests.adapters.django.project import settings as project_settings
from zerotrust import (
    Authenticator,
    Callers,
    FixedClock,
    Guard,
    MemorySink,
    MemoryStore,
    Operations,
    Policy,
    PrivateJWK,
    Rule,
    ScopeRule,
    TokenIssuer,
    TokenVerifier,
)
from zerotrust.audit.sinks import AuditSink

if not settings.configured:
    settings.configure(
        **{
            name: getattr(project_settings, name)
            for name in dir(project_settings)
            if name.isupper()
        }
    )
    django.setup()

ISS = "https://issuer.example"
AUD = "orders-api"
WEB = "spiffe://example.org/ns/shop/sa/web"
INTRUDER = "spiffe://example.org/ns/shop/sa/intruder"
STRANGER = "spiffe://other.org/ns/x/sa/stranger"
EXEMPT = project_settings.ZEROTRUST["EXEMPT"]


def policy(**kw: Any) -> Policy:
    rules = [
        Rule(id="deny-intruder", action="DENY", callers=[Callers(spiffe_ids=[INTRUDER])]),
        Rule(
            id="anonymous-probe",
            callers=[Callers(anonymous=True)],
            operations=[
                Operations(routes=["/api/anon", "/legacy/{order_id}", "/probe", "/bare-probe"])
            ],
        ),
        Rule(
            id="mtls-callers",
            callers=[Callers(trust_domains=["example.org"], proven_by=["mtls"])],
            operations=[Operations(methods=["GET"], routes=["/headers"])],
        ),
        Rule(
            id="shop-read",
            callers=[Callers(trust_domains=["example.org"])],
            operations=[Operations(methods=["GET"])],
            scopes=ScopeRule(all=["orders:read"]),
        ),
    ]
    return Policy(rules, id="orders", **kw)


class Harness:
    """A Guard with a memory audit sink and a token issuer, installed as ZEROTRUST["GUARD"]."""

    def __init__(
        self,
        key: PrivateJWK,
        clock: FixedClock,
        *,
        pol: Policy | None = None,
        keys: Any = None,
        audit: Sequence[AuditSink] = (),
        bundles: Any = None,
    ) -> None:
        self.clock = clock
        self.issuer = TokenIssuer(key, issuer=ISS, clock=clock)
        self.sink = MemorySink()
        verifier = TokenVerifier(
            issuer=ISS,
            audience=AUD,
            keys=keys if keys is not None else self.issuer.jwks(),
            algorithms=["ES256"],
            clock=clock,
        )
        self.guard = Guard(
            authenticator=Authenticator(tokens=verifier, bundles=bundles, clock=clock),
            policy=pol or policy(),
            audit=[self.sink, *audit],
            store=MemoryStore(clock=clock),
            service="orders",
            clock=clock,
        )

    def token(self, subject: str = WEB, scopes: Sequence[str] = ("orders:read",), **kw: Any) -> str:
        kw.setdefault("audience", AUD)
        return self.issuer.issue(subject=subject, scopes=scopes, **kw)

    def auth(self, token: str | None = None, **kw: Any) -> dict[str, str]:
        """Request headers carrying ``token`` (a fresh default token when omitted)."""
        return {"Authorization": f"Bearer {token if token is not None else self.token(**kw)}"}


@pytest.fixture(scope="session")
def key() -> PrivateJWK:
    return PrivateJWK.generate("ES256", kid="k1")


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(dt.datetime.now(dt.timezone.utc))


class Installer:
    """``install(**harness_options)`` builds a Harness and makes it the project's Guard.

    Every settings override of a test goes through ``stack`` so they are undone in reverse
    order (Django's override_settings must nest).
    """

    def __init__(self, key: PrivateJWK, clock: FixedClock, stack: ExitStack) -> None:
        self.key, self.clock, self.stack = key, clock, stack

    def override(self, **values: Any) -> None:
        self.stack.enter_context(override_settings(**values))

    def __call__(self, exempt: Sequence[str] = EXEMPT, **options: Any) -> Harness:
        harness = Harness(self.key, self.clock, **options)
        self.override(ZEROTRUST={"GUARD": harness.guard, "EXEMPT": list(exempt)})
        return harness


@pytest.fixture
def install(key: PrivateJWK, clock: FixedClock) -> Iterator[Installer]:
    with ExitStack() as stack:
        yield Installer(key, clock, stack)


@pytest.fixture
def zt(install: Installer) -> Harness:
    return install()
