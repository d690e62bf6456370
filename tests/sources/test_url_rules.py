"""The one rule every fetched URL (JWKS, OIDC discovery, OAuth token endpoints) follows, and
the TLS verification every source that fetches them keeps on."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from zerotrust.errors import ConfigurationError
from zerotrust.sources._sansio import url_problem
from zerotrust.sources.jwks_http import RemoteJWKSource
from zerotrust.sources.oauth2 import ClientCredentialsTokenSource, TokenExchangeTokenSource


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "URL must be a non-empty string"),
        (None, "URL must be a non-empty string"),
        (b"https://keys.example/jwks", "URL must be a non-empty string"),
        ("https://keys.example/j wks", "URL must be ASCII without spaces or control characters"),
        ("https://keys.example/jwks\x7f", "URL must be ASCII without spaces or control characters"),
        ("https://keys.example/jwks\n", "URL must be ASCII without spaces or control characters"),
        ("https://kéys.example/jwks", "URL must be ASCII without spaces or control characters"),
        ("https://keys.example:99999/jwks", "URL is not valid"),
        ("https://keys.example:port/jwks", "URL is not valid"),
        ("https://[::1/jwks", "URL is not valid"),
        ("https:///jwks", "URL has no host"),
        ("https://user@keys.example/jwks", "URL may not hold credentials"),
        ("https://:pw@keys.example/jwks", "URL may not hold credentials"),
        ("https://keys.example/jwks#fragment", "URL may not have a fragment"),
    ],
)
def test_urls_that_are_never_fetched(url: object, problem: str) -> None:
    assert url_problem(url, allow_http_loopback=True) == problem


def test_https_anywhere_plain_http_only_to_loopback_when_allowed() -> None:
    for url in ("https://keys.example/jwks", "https://10.0.0.1:8443/jwks?x=1", "https://[::1]/"):
        assert url_problem(url, allow_http_loopback=False) is None
    for url in ("http://127.0.0.1:8080/jwks", "http://localhost/jwks", "http://[::1]:9/"):
        assert url_problem(url, allow_http_loopback=True) is None
        assert url_problem(url, allow_http_loopback=False) is not None
    for url in ("http://keys.example/jwks", "http://10.0.0.1/jwks", "ftp://127.0.0.1/jwks"):
        assert url_problem(url, allow_http_loopback=True) is not None


# every source that fetches over HTTPS, built with the options a test gives
SOURCES: dict[str, Callable[..., Any]] = {
    "jwks": lambda **options: RemoteJWKSource("https://keys.example/jwks", **options),
    "client-credentials": lambda **options: ClientCredentialsTokenSource(
        "https://issuer.example/token", **{"client_id": "svc", "client_secret": "s3cret", **options}
    ),
    "token-exchange": lambda **options: TokenExchangeTokenSource(
        "https://issuer.example/token", subject_token="a.b.c", **options
    ),
}


@pytest.mark.parametrize("source", SOURCES)
def test_tls_verification_cannot_be_turned_off(source: str) -> None:
    with pytest.raises(ConfigurationError, match=r"^verify=False is refused: pass an ssl"):
        SOURCES[source](verify=False)


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("verify", [None, 0, 1, b"/etc/ssl/ca.pem", Path("ca.pem")])
def test_verify_takes_a_context_a_ca_file_path_or_true(source: str, verify: object) -> None:
    # 0 and 1 are no bool (nor a file descriptor to read a CA from); a path is a str
    with pytest.raises(ConfigurationError, match=r"^verify must be an ssl.SSLContext"):
        SOURCES[source](verify=verify)


def _unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _any_host() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False  # any certificate the authorities signed, for any name
    return context


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize(
    ("context", "problem"),
    [
        (_unverified, r"^an ssl.SSLContext that does not verify the server's certificate"),
        (_any_host, r"^an ssl.SSLContext that does not check the server's host name"),
        (lambda: ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), r"^a server-side ssl.SSLContext"),
    ],
)
def test_a_context_that_does_not_verify_the_server_is_verify_false_by_another_name(
    source: str, context: Callable[[], ssl.SSLContext], problem: str
) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        SOURCES[source](verify=context())


@pytest.mark.parametrize("source", ["client-credentials", "token-exchange"])
def test_an_mtls_context_must_verify_the_token_endpoint_too(source: str) -> None:
    # with mtls, the client certificate's context is the one that verifies the server
    build = SOURCES[source]
    with pytest.raises(ConfigurationError, match=r"does not verify the server's certificate"):
        build(mtls=_unverified(), client_id="svc", client_secret=None)
    with pytest.raises(ConfigurationError, match=r"does not check the server's host name"):
        build(mtls=_any_host(), client_id="svc", client_secret=None)


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"timeout": True}, "timeout must be a number of seconds"),
        ({"timeout": "5"}, "timeout must be a number of seconds"),
        ({"timeout": 0}, "timeout must be positive and at most 600 seconds"),
        ({"timeout": 600.5}, "timeout must be positive and at most 600 seconds"),
        ({"timeout": float("nan")}, "timeout must be positive and at most 600 seconds"),
        ({"max_bytes": 0}, "max_bytes must be an int from 1 to 67108864"),
        ({"max_bytes": (64 << 20) + 1}, "max_bytes must be an int from 1 to 67108864"),
        ({"max_bytes": True}, "max_bytes must be an int from 1 to 67108864"),
        ({"client": object()}, "client must be an httpx.Client"),
        ({"async_client": object()}, "async_client must be an httpx.AsyncClient"),
    ],
)
def test_transport_options_are_checked(
    source: str, options: dict[str, object], problem: str
) -> None:
    with pytest.raises(ConfigurationError, match=f"^{problem}"):
        SOURCES[source](**options)


def test_transport_limits_are_inclusive() -> None:
    for options in ({"timeout": 600, "max_bytes": 64 << 20}, {"timeout": 0.001, "max_bytes": 1}):
        with RemoteJWKSource("https://keys.example/jwks", **options):  # type: ignore[arg-type]
            pass


def test_verify_is_for_clients_the_source_builds() -> None:
    async_client = httpx.AsyncClient()
    try:
        with httpx.Client() as client:
            with pytest.raises(ConfigurationError, match=r"^verify applies only to clients the"):
                RemoteJWKSource(
                    "https://keys.example/jwks",
                    client=client,
                    async_client=async_client,
                    verify=ssl.create_default_context(),
                )
            with RemoteJWKSource(
                "https://keys.example/jwks", client=client, async_client=async_client
            ):
                pass
    finally:
        asyncio.run(async_client.aclose())


def test_a_ca_file_larger_than_a_mebibyte_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "ca.pem"
    big.write_bytes(b"#" * ((1 << 20) + 1))
    with pytest.raises(ConfigurationError, match="larger than 1 MiB"):
        RemoteJWKSource("https://keys.example/jwks", verify=str(big))
