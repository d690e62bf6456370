"""The API reference (docs/api/) is generated from the docstrings and kept up to date."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import zerotrust

ROOT = Path(__file__).resolve().parent.parent
API = ROOT / "docs" / "api"


def _pages() -> list[str]:
    """The modules with a page, read from the generator without importing it here."""
    source = (ROOT / "docs" / "gen_api.py").read_text(encoding="utf-8")
    block = source.split("PAGES: tuple[tuple[str, str], ...] = (", 1)[1].split("\n)\n", 1)[0]
    return re.findall(r'^\s*\("(zerotrust[\w.]*)",', block, flags=re.MULTILINE)


#: What the reference is generated with: without one of them, some public names are absent.
OPTIONAL = ("spiffe", "rest_framework", "uvicorn", "hypercorn", "gunicorn", "flask", "grpc")


def test_pages_are_up_to_date_and_everything_is_documented() -> None:
    missing = [name for name in OPTIONAL if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"the reference is generated with every extra installed; missing {missing}")
    # A fresh interpreter: what other tests did to classes (servers set attributes on their
    # handler classes) must not show in the reference.
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "gen_api.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_public_name_is_on_its_modules_page() -> None:
    pages = _pages()
    assert "zerotrust" in pages and "zerotrust.httpx" in pages
    for page in pages:
        module = importlib.import_module(page)
        text = (API / f"{page}.md").read_text(encoding="utf-8")
        for name in module.__all__:
            assert f"| [`{name}`](" in text, f"{page}.{name}"


def test_every_public_module_has_a_page() -> None:
    """The facades users import from (``zerotrust.X`` without an underscore) all have pages."""
    facades = {
        f"zerotrust.{info.name}"
        for info in pkgutil.iter_modules(zerotrust.__path__)
        if not info.name.startswith("_")
    }
    internal = {"zerotrust.adapters", "zerotrust.cli", "zerotrust.client", "zerotrust.demo"}
    internal |= {"zerotrust.pipeline"}  # its public names are exported by zerotrust
    missing = facades - internal - set(_pages())
    assert not missing, sorted(missing)


def test_docstrings_are_rendered_as_markdown() -> None:
    """Docstring roles become links or code, never raw reST."""
    for path in sorted(API.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        for role in (":class:`", ":func:`", ":meth:`", ":attr:`", ":data:`", ":mod:`"):
            assert role not in text, (path.name, role)
        assert not re.search(r"(?<!`)``(?!`)", text), path.name  # a reST literal left as is
    top = (API / "zerotrust.md").read_text(encoding="utf-8")
    assert "## `Guard` { #zerotrust.Guard }" in top
    assert "(zerotrust.tokens.md#zerotrust.tokens.TokenVerifier)" in top
    # an object is described once, on the most specific page exporting it
    tokens = (API / "zerotrust.tokens.md").read_text(encoding="utf-8")
    assert "## `TokenVerifier` { #zerotrust.tokens.TokenVerifier }" in tokens
    assert "## `TokenVerifier`" not in top
