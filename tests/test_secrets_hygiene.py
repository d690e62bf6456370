"""Secrets hygiene: real secrets never reach what the library emits.

Each test holds genuine secret values (tokens, private keys, client secrets, store
credentials, certificates) and checks every output the library produces for them, in their
raw, base64, PEM and URL-encoded forms: log records at DEBUG with their tracebacks, audit
events, responses, and the ``str``/``repr`` of errors (with their chained causes) and of the
objects that hold the secrets.
"""

from __future__ import annotations

import base64
import logging
import time
import traceback
import urllib.parse
from collections.abc import Iterable
from typing import Any

import pytest

from zerotrust.errors import StoreUnavailable


def _forms(secret: str) -> set[str]:
    """``secret`` as it may appear: raw, URL-encoded, base64 (standard and URL-safe)."""
    raw = secret.encode()
    return {
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret, safe=""),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }


def _rendered(error: BaseException) -> str:
    """What a framework logs of ``error``: its traceback with every chained exception."""
    return "".join(traceback.format_exception(error))


def _assert_clean(outputs: Iterable[str], secrets: Iterable[str]) -> None:
    blob = "\n".join(outputs)
    for secret in secrets:
        for form in _forms(secret):
            assert form not in blob, f"a secret ({len(secret)} chars) leaked"


def test_a_store_error_that_withholds_a_quoted_credential_chains_no_cause_quoting_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis = pytest.importorskip("redis")
    from zerotrust.stores import RedisStore

    caplog.set_level(logging.DEBUG)
    client = redis.Redis(host="127.0.0.1", port=1, username="zt-operator", password="s3cret-pw")
    store = RedisStore(client=client)

    def quoting(keys: Any, args: Any) -> None:
        raise redis.ResponseError("AUTH zt-operator s3cret-pw failed")

    store._scripts["revoke"] = quoting  # type: ignore[assignment]
    with pytest.raises(StoreUnavailable) as info:
        store.revoke_token("j", expires_at=time.time() + 60)
    assert "reason withheld" in str(info.value)
    _assert_clean(
        [_rendered(info.value), repr(info.value), caplog.text], ["s3cret-pw", "zt-operator"]
    )
    client.close()
