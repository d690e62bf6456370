"""The public surface of ``zerotrust.httpx``: pinned, sorted, and optional at import time."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import zerotrust.httpx
from tests.client.conftest import tls
from zerotrust import X509Svid
from zerotrust.dev import DevCA
from zerotrust.errors import ConfigurationError

EXPECTED = [
    "RETRY_EXTENSION",
    "AsyncClient",
    "AsyncZeroTrustTransport",
    "Client",
    "DPoPSigner",
    "RetryEvent",
    "RetryPolicy",
    "SupportsInvalidate",
    "ZeroTrustAuth",
    "ZeroTrustTransport",
    "dpop_proof",
    "identity_refusal",
]


def test_all_is_pinned() -> None:
    assert zerotrust.httpx.__all__ == EXPECTED
    for name in EXPECTED:
        assert getattr(zerotrust.httpx, name).__doc__ or name == "RETRY_EXTENSION", name


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=False
    )


def test_zerotrust_does_not_import_httpx_or_tenacity() -> None:
    result = _run(
        """
        import sys
        import zerotrust
        assert "httpx" not in sys.modules and "tenacity" not in sys.modules
        print("ok")
        """
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_missing_httpx_names_the_extra() -> None:
    for blocked in ("httpx", "tenacity"):
        result = _run(
            f"""
            import sys
            sys.modules[{blocked!r}] = None
            from zerotrust.errors import MissingDependencyError
            try:
                import zerotrust.httpx
            except MissingDependencyError as exc:
                print(exc.package, exc.extra)
            """
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [blocked, "httpx"]


def test_http2_without_h2_is_refused_when_the_client_is_built(
    monkeypatch: pytest.MonkeyPatch, ca: DevCA, client_svid: X509Svid
) -> None:
    # httpcore would import h2 only once a server agrees on HTTP/2, deep inside a request
    from zerotrust.httpx import AsyncClient, Client

    monkeypatch.setitem(sys.modules, "h2", None)  # h2 not installed
    for build in (Client, AsyncClient):
        with pytest.raises(ConfigurationError, match=r"httpx\[http2\]"):
            build(**tls(ca, client_svid), http2=True)
    monkeypatch.undo()
    with Client(**tls(ca, client_svid), http2=True):
        pass  # with h2: built
