"""A pytest plugin: ``import httpx`` resolves to httpx2 for the whole run.

httpx2 continues httpx (its 2.0 is httpx 0.28.1) and gives applications whose dependencies
still import httpx ``httpx2.alias_httpx()``, after which ``httpx`` *is* ``httpx2``. zerotrust
imports httpx, so in such an application its clients, its ``httpx.Auth``, and its key and token
sources build and handle httpx2 objects. ``nox -s tests`` runs the outgoing-call suites a
second time with this plugin (``-p tests._httpx2_alias``) to hold that to the same tests.
"""

from __future__ import annotations

import sys

import pytest

if "httpx" in sys.modules:  # pragma: no cover - a plugin loaded before this one imported it
    raise RuntimeError("httpx was imported before httpx2.alias_httpx(): load this plugin first")

import httpx2

httpx2.alias_httpx()


def pytest_report_header(config: pytest.Config) -> str:
    return f"httpx resolves to httpx2 {httpx2.__version__} (httpx2.alias_httpx())"


def pytest_sessionstart(session: pytest.Session) -> None:
    import httpx

    from zerotrust.client import _httpx_auth
    from zerotrust.sources import _httpx

    if not (httpx is httpx2 and _httpx_auth.httpx is httpx2 and _httpx.httpx is httpx2):
        raise pytest.UsageError("import httpx does not resolve to httpx2")
