"""The public API is curated: pinned here so that changes are deliberate."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import zerotrust
from zerotrust import errors

EXPECTED = [
    "JWK",
    "ApiKeys",
    "AuditEvent",
    "AuditPipeline",
    "AuthenticationError",
    "Authenticator",
    "AuthorizationError",
    "BundleSet",
    "Callers",
    "CertificateError",
    "Clock",
    "Condition",
    "ConfigurationError",
    "DPoPConfig",
    "DPoPNonces",
    "Decision",
    "FileBundleSource",
    "FileKeySource",
    "FileSvidSource",
    "FixedClock",
    "Guard",
    "IdentityError",
    "InvalidSpiffeId",
    "JWKSet",
    "KeyRing",
    "KeySource",
    "LoggingSink",
    "MatchResult",
    "Matcher",
    "MemorySink",
    "MemoryStore",
    "OTelSink",
    "Operations",
    "Outcome",
    "PeerRejected",
    "PeerVerifier",
    "Policy",
    "Principal",
    "PrivateJWK",
    "RateLimit",
    "RedisStore",
    "Request",
    "RequestView",
    "Requirement",
    "ResilientStore",
    "RotatingBundleSource",
    "RotatingSvidSource",
    "Rule",
    "ScopeRule",
    "SecretKey",
    "SelfIssuedTokenSource",
    "Settings",
    "SourceError",
    "SpiffeId",
    "SpiffeJwtBundleKeySource",
    "SpiffeJwtBundleSetKeySource",
    "StaticKeySource",
    "StaticTokenSource",
    "SystemClock",
    "TokenError",
    "TokenIssuer",
    "TokenSource",
    "TokenVerifier",
    "TrustBundle",
    "TrustDomain",
    "TrustedProxies",
    "VerifiedPeer",
    "VerifiedToken",
    "X509BundleSource",
    "X509Svid",
    "X509SvidSource",
    "ZeroTrustError",
    "ZeroTrustSSLContext",
    "__version__",
    "client_ssl_context",
    "errors",
    "load_policy",
    "match",
    "require",
    "server_ssl_context",
    "verify_peer_chain",
    "verify_x509_svid",
]


def _isort_key(name: str) -> tuple[int, str]:
    return (0 if name.isupper() else 1, name)  # constants first, as ruff's RUF022 sorts


def test_all_is_pinned_and_sorted() -> None:
    assert zerotrust.__all__ == EXPECTED
    assert sorted(zerotrust.__all__, key=_isort_key) == zerotrust.__all__
    assert len(set(zerotrust.__all__)) == len(zerotrust.__all__)


def test_every_exported_name_exists() -> None:
    for name in zerotrust.__all__:
        assert hasattr(zerotrust, name), name


def test_errors_all_is_sorted_and_complete() -> None:
    assert sorted(errors.__all__) == errors.__all__
    exported = {getattr(errors, n) for n in errors.__all__}
    defined = {
        v
        for v in vars(errors).values()
        if isinstance(v, type) and issubclass(v, errors.ZeroTrustError)
    }
    assert defined == exported


def test_error_codes_are_unique_and_stable_shaped() -> None:
    classes = [getattr(errors, n) for n in errors.__all__]
    codes = [c.code for c in classes if c is not errors.AccessDenied]
    assert len(codes) == len(set(codes)), "two error classes share a code"
    for cls in classes:
        assert cls.code.replace("_", "").isalpha() and cls.code.islower(), cls


CORE_MODULES = [
    "zerotrust",
    "zerotrust.asgi",
    "zerotrust.audit",
    "zerotrust.authn",
    "zerotrust.authz",
    "zerotrust.cli",
    "zerotrust.config",
    "zerotrust.dev",
    "zerotrust.errors",
    "zerotrust.identity",
    "zerotrust.match",
    "zerotrust.pipeline",
    "zerotrust.sources",
    "zerotrust.stores",
    "zerotrust.tokens",
    "zerotrust.tokens.outgoing",
    "zerotrust.x509",
]


def test_core_imports_without_frameworks() -> None:
    """The neutral core must not import any framework, HTTP client, grpc or redis."""
    blocked = ["fastapi", "starlette", "flask", "django", "grpc", "httpx", "redis", "werkzeug"]
    code = textwrap.dedent(
        f"""
        import sys
        for name in {blocked!r}:
            sys.modules[name] = None  # importing it now raises ImportError
        import importlib
        for module in {CORE_MODULES!r}:
            importlib.import_module(module)
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize(
    ("module", "hidden", "core", "needs_extra"),
    [
        ("zerotrust.asgi", ("uvicorn", "hypercorn"), "serve", "serve_hypercorn"),
        ("zerotrust.django", ("rest_framework",), "require", "ZeroTrustUser"),
        ("zerotrust.sources", ("spiffe",), "FileKeySource", "WorkloadApiX509Source"),
    ],
)
def test_star_import_works_without_the_optional_servers(
    module: str, hidden: tuple[str, ...], core: str, needs_extra: str
) -> None:
    """Names that need an extra are public only where it is installed: ``import *`` never
    fails for want of one, and asking for such a name says which extra to install."""
    code = "\n".join(
        [
            "import sys",
            *(f"sys.modules[{name!r}] = None" for name in hidden),
            f"from {module} import *",
            f"assert {core!r} in dir(), dir()",
            f"assert {needs_extra!r} not in dir()",
            "from zerotrust.errors import MissingDependencyError",
            f"import {module} as m",
            "try:",
            f"    getattr(m, {needs_extra!r})",
            "except MissingDependencyError as exc:",
            "    print(exc)",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'zerotrust[" in result.stdout


@pytest.mark.parametrize(
    ("module", "hidden", "needs_extra"),
    [
        ("zerotrust.asgi", ("uvicorn", "hypercorn"), "serve_hypercorn"),
        ("zerotrust.sources", ("spiffe",), "WorkloadApiX509Source"),
    ],
)
def test_help_lists_no_name_that_needs_a_missing_extra(
    module: str, hidden: tuple[str, ...], needs_extra: str
) -> None:
    """``dir()`` lists what the module has without the extra, so ``help()`` and
    ``inspect.getmembers`` (which read every name ``dir()`` gives) work without it."""
    code = "\n".join(
        [
            "import sys",
            *(f"sys.modules[{name!r}] = None" for name in hidden),
            "import inspect, pydoc",
            f"import {module} as m",
            f"assert {needs_extra!r} not in dir(m), dir(m)",
            "assert all(name in dir(m) for name in m.__all__)",
            "inspect.getmembers(m)",
            "pydoc.render_doc(m)",
            "print('ok')",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"
