"""The adapters are optional extras: without their framework they name the pip extra."""

from __future__ import annotations

import importlib
import sys
import types

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


def _forget_adapters(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("zerotrust.adapters.flask", "zerotrust.flask"):
        monkeypatch.delitem(sys.modules, name, raising=False)


def test_a_missing_extra_is_an_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """``except ImportError`` and ``pytest.importorskip`` treat it as the missing import."""
    monkeypatch.setitem(sys.modules, "flask", None)
    _forget_adapters(monkeypatch)
    with pytest.raises(ImportError) as info:
        importlib.import_module("zerotrust.flask")
    assert isinstance(info.value, MissingDependencyError)
    assert info.value.name == "flask"
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
    assert "pip install 'zerotrust[flask]'" in str(info.value)
    _forget_adapters(monkeypatch)
    with pytest.raises(pytest.skip.Exception):
        pytest.importorskip("zerotrust.flask")


def test_a_framework_too_old_is_told_apart_from_a_missing_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = types.ModuleType("flask")  # installed, but without the names zerotrust imports
    monkeypatch.setitem(sys.modules, "flask", old)
    _forget_adapters(monkeypatch)
    with pytest.raises(MissingDependencyError) as info:
        importlib.import_module("zerotrust.flask")
    message = str(info.value)
    assert "installed but lacks what zerotrust needs" in message
    assert "pip install --upgrade 'zerotrust[flask]'" in message
    cause = info.value.__cause__
    assert isinstance(cause, ImportError) and not isinstance(cause, ModuleNotFoundError)
