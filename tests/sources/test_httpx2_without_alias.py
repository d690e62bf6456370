"""httpx2 objects where zerotrust expects httpx's, in a process that did not call
``httpx2.alias_httpx()``: refused, with what to do about it.

(With the alias, ``import httpx`` is httpx2 and the outgoing-call suites run again that way:
see tests/_httpx2_alias.py. This module is not among them: here the two libraries differ.)"""

from __future__ import annotations

import asyncio

import httpx
import httpx2
import pytest

from tests.sources.test_url_rules import SOURCES
from zerotrust import StaticTokenSource
from zerotrust.errors import ConfigurationError
from zerotrust.httpx import ZeroTrustAuth

ALIAS_HINT = r"httpx2\.alias_httpx\(\) before anything imports httpx"


def test_the_two_libraries_differ_here() -> None:
    assert httpx is not httpx2, "run without tests._httpx2_alias"
    assert not issubclass(httpx2.Client, httpx.Client)


@pytest.mark.parametrize("source", SOURCES)
def test_an_httpx2_client_is_refused_with_the_way_to_use_httpx2(source: str) -> None:
    with (
        httpx2.Client() as client,
        pytest.raises(
            ConfigurationError, match=rf"^client must be an httpx\.Client .*{ALIAS_HINT}"
        ),
    ):
        SOURCES[source](client=client)


@pytest.mark.parametrize("source", SOURCES)
def test_an_httpx2_async_client_is_refused_with_the_way_to_use_httpx2(source: str) -> None:
    async_client = httpx2.AsyncClient()
    try:
        with pytest.raises(
            ConfigurationError, match=rf"^async_client must be an httpx\.AsyncClient .*{ALIAS_HINT}"
        ):
            SOURCES[source](async_client=async_client)
    finally:
        asyncio.run(async_client.aclose())


def test_other_objects_get_no_httpx2_hint() -> None:
    with pytest.raises(ConfigurationError, match=r"^client must be an httpx\.Client$"):
        SOURCES["jwks"](client=object())


def test_httpx2_refuses_httpx_s_auth_without_the_alias() -> None:
    """What docs/httpx.md says: httpx2 takes only its own ``Auth`` classes."""
    auth = ZeroTrustAuth(StaticTokenSource("t0k3n"), audience="payments")
    with pytest.raises(TypeError, match=r'Invalid "auth" argument'):
        httpx2.Client(auth=auth)
