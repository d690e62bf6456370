"""Every ```python snippet in README.md and docs/ runs (```python-norun fences are shown only)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def snippets() -> list[tuple[str, str]]:
    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for index, match in enumerate(FENCE.finditer(page.read_text(encoding="utf-8"))):
            found.append((f"{page.name}#{index + 1}", match.group(1)))
    return found


@pytest.mark.parametrize(("where", "code"), snippets(), ids=[w for w, _ in snippets()])
def test_snippet_runs(where: str, code: str, tmp_path: Path) -> None:
    old = Path.cwd()
    os.chdir(tmp_path)  # snippets that write files write them here
    try:
        exec(compile(code, where, "exec"), {"__name__": "__docs__"})
    finally:
        os.chdir(old)


def test_docs_have_snippets() -> None:
    assert len(snippets()) >= 5


def test_every_error_is_documented() -> None:
    from zerotrust import errors

    page = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    for name in [*errors.__all__, "PeerRejected"]:
        cls = getattr(errors, name, None) or __import__("zerotrust").PeerRejected
        assert re.search(rf"\b{name}\b", page), name
        assert re.search(rf"\b{cls.code}\b", page), cls.code
