"""The adapters are optional extras: without their framework they name the pip extra."""

from __future__ import annotations

import importlib
import sys

import pytest

from zerotrust.errors import MissingDependencyError


@pytest.mark.parametrize(
    ("hidden", "module", "extra"),
    [
        ("flask", "zerotrust.adapters.flask", "flask"),
        ("flask", "zerotrust.flask", "flask"),
        ("gunicorn", "zerotrust.adapters.gunicorn", "gunicorn"),
    ],
)
def test_missing_framework_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, hidden: str, module: str, extra: str
) -> None:
    for name in list(sys.modules):
        if name == hidden or name.startswith(hidden + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, hidden, None)  # importing it now raises ImportError
    for name in ("zerotrust.adapters.flask", "zerotrust.flask", "zerotrust.adapters.gunicorn"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(MissingDependencyError) as info:
        importlib.import_module(module)
    assert (info.value.package, info.value.extra) == (hidden, extra)


def test_wsgi_needs_no_framework(monkeypatch: pytest.MonkeyPatch) -> None:
    for hidden in ("flask", "werkzeug", "gunicorn"):
        monkeypatch.setitem(sys.modules, hidden, None)
    monkeypatch.delitem(sys.modules, "zerotrust.wsgi", raising=False)
    monkeypatch.delitem(sys.modules, "zerotrust.adapters.wsgi", raising=False)
    module = importlib.import_module("zerotrust.wsgi")
    assert module.ZeroTrustMiddleware.__name__ == "ZeroTrustMiddleware"
