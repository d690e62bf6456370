"""The one rule every fetched URL (JWKS, OIDC discovery, OAuth token endpoints) follows."""

from __future__ import annotations

import pytest

from zerotrust.sources._sansio import url_problem


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
