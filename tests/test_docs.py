"""Every ```python snippet in README.md and docs/ runs (```python-norun fences are shown only),
and every ```console session gives the output it shows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
CONSOLE = re.compile(r"^```console\n(.*?)^```", re.DOTALL | re.MULTILINE)
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def snippets(fence: re.Pattern[str] = FENCE) -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for index, match in enumerate(fence.finditer(page.read_text(encoding="utf-8"))):
            found.append((f"{page.name}#{index + 1}", match.group(1)))
    return found


def session_steps(text: str) -> list[tuple[str, list[str]]]:
    """A console session as (command, the output lines shown after it): a command starts with
    ``$ ``, and a line ending in a backslash goes on on the next line."""
    steps: list[tuple[str, list[str]]] = []
    lines = text.splitlines()
    while lines:
        line = lines.pop(0)
        assert line.startswith("$ "), f"output before any command: {line!r}"
        command = line[2:]
        while command.endswith("\\"):
            command = command[:-1] + lines.pop(0).strip()
        output = []
        while lines and not lines[0].startswith("$ "):
            output.append(lines.pop(0))
        steps.append((command, output))
    return steps


def shown_as(output: str, shown: list[str]) -> bool:
    """Whether ``output`` is what the page shows: a line ``...`` stands for any lines, and
    ``...`` within a line for any text (a date, a fingerprint)."""
    pattern = "".join(
        r"(?:.*\n)*?"
        if line == "..."
        else re.escape(line.rstrip()).replace(re.escape("..."), ".*") + r"[ \t]*\n"
        for line in shown
    )
    return re.fullmatch(pattern, output) is not None


@pytest.mark.parametrize(
    ("where", "text"), snippets(CONSOLE), ids=[w for w, _ in snippets(CONSOLE)]
)
def test_console_session_shows_what_it_prints(where: str, text: str, tmp_path: Path) -> None:
    """Run in a directory of its own that holds the repository's ``examples``, with the
    ``zerotrust`` command of this environment and without the caller's ZEROTRUST_* variables;
    ``# exit status N`` ends a failing command."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZEROTRUST_")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    (tmp_path / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    for command, shown in session_steps(text):
        status = re.search(r"# exit status (\d+)$", command)
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        output = done.stdout + done.stderr
        assert done.returncode == (int(status.group(1)) if status else 0), (command, output)
        assert shown_as(output, shown), f"{where}: {command}\n{output}"


def test_console_sessions_are_read_as_shown() -> None:
    steps = session_steps("$ a \\\n   --b\nout\n...\n$ c # exit status 1\n")
    assert steps == [("a --b", ["out", "..."]), ("c # exit status 1", [])]
    assert shown_as("out\nmore\nend\n", ["out", "...", "end"])
    assert shown_as("  at: 2026-11-24T03:00Z (valid)\n", ["  at: ... (valid)"])
    assert not shown_as("  at: 2026\n(valid)\n", ["  at: ... (valid)"])
    assert shown_as("out\n", ["out", "..."]) and shown_as("", [])
    assert not shown_as("out\nmore\n", ["out"]) and not shown_as("other\n", ["out"])
    assert not shown_as("out\n", ["out", "end"])


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
    assert len(snippets(CONSOLE)) >= 2


def test_every_error_is_documented() -> None:
    from zerotrust import errors

    page = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    for name in [*errors.__all__, "PeerRejected"]:
        cls = getattr(errors, name, None) or __import__("zerotrust").PeerRejected
        assert re.search(rf"\b{name}\b", page), name
        assert re.search(rf"\b{cls.code}\b", page), cls.code


@pytest.mark.parametrize(
    "module",
    [
        "zerotrust",
        "zerotrust.asgi",
        "zerotrust.django",
        "zerotrust.fastapi",
        "zerotrust.flask",
        "zerotrust.grpc",
        "zerotrust.httpx",
        "zerotrust.wsgi",
    ],
)
def test_every_public_name_is_documented(module: str) -> None:
    """Each name the package and the framework modules export is named on some page."""
    import importlib

    pages = "\n".join(
        page.read_text(encoding="utf-8") for page in sorted((ROOT / "docs").glob("*.md"))
    )
    exported = importlib.import_module(module).__all__
    missing = [name for name in exported if not re.search(rf"\b{re.escape(name)}\b", pages)]
    assert missing == [], f"{module}: {missing}"
