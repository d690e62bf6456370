"""The ``ZEROTRUST`` Django setting: read once, validated at start-up.

.. code-block:: python

    ZEROTRUST = {
        "GUARD": "myproject.security.guard",   # required
        "EXEMPT": ["healthz", "/metrics"],     # optional
    }

``GUARD`` is a :class:`~zerotrust.Guard`, a zero-argument callable returning one, or the dotted
path of either. ``EXEMPT`` lists what zerotrust does not decide on: URL names (``"healthz"``,
``"admin:login"``), exact paths (``"/metrics"``) and path prefixes (``"/static/*"``), matched
against ``request.path_info``. Any problem is an :class:`ImproperlyConfigured` error naming the
key, raised when the middleware is loaded (Django builds it at start-up), never on a request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from zerotrust.errors import ConfigurationError, MissingDependencyError, ZeroTrustError
from zerotrust.pipeline import Guard

try:
    from django.conf import settings  # type: ignore[import-untyped, unused-ignore]
    from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped, unused-ignore]
    from django.core.signals import setting_changed  # type: ignore[import-untyped, unused-ignore]
    from django.utils.module_loading import import_string  # type: ignore[import-untyped, unused-ignore]
except ImportError as exc:  # pragma: no cover - exercised without Django installed
    raise MissingDependencyError("django", "django", error=exc) from exc

__all__ = ["DjangoConfig", "ZeroTrustImproperlyConfigured", "get_config"]

SETTING = "ZEROTRUST"
KNOWN_KEYS = ("EXEMPT", "GUARD")


class ZeroTrustImproperlyConfigured(ConfigurationError, ImproperlyConfigured):  # type: ignore[misc, unused-ignore]
    """The ``ZEROTRUST`` setting is wrong: both a zerotrust and a Django configuration error."""


@dataclass(frozen=True, slots=True)
class DjangoConfig:
    """The validated ``ZEROTRUST`` setting."""

    guard: Guard
    exempt_paths: frozenset[str] = frozenset()
    exempt_prefixes: tuple[str, ...] = ()
    exempt_names: frozenset[str] = frozenset()

    def is_exempt(self, path_info: str, view_name: str | None) -> bool:
        """Whether the request is listed in ``EXEMPT`` (by URL name or path)."""
        if view_name is not None and view_name in self.exempt_names:
            return True
        return path_info in self.exempt_paths or (
            bool(self.exempt_prefixes) and path_info.startswith(self.exempt_prefixes)
        )


_lock = threading.Lock()
_cached: tuple[object, DjangoConfig] | None = None


def get_config() -> DjangoConfig:
    """The validated configuration (parsed once per value of the setting)."""
    global _cached  # noqa: PLW0603 - one process-wide cache, reset when the setting changes
    raw = getattr(settings, SETTING, None)
    cached = _cached
    if cached is not None and cached[0] is raw:
        return cached[1]
    with _lock:
        cached = _cached
        if cached is not None and cached[0] is raw:
            return cached[1]
        config = _parse(raw)
        _cached = (raw, config)
        return config


def _reset(*, setting: str, **_: Any) -> None:
    global _cached  # noqa: PLW0603
    if setting == SETTING:
        with _lock:
            _cached = None


setting_changed.connect(_reset, dispatch_uid="zerotrust.django_config.reset")


def _error(message: str) -> ZeroTrustImproperlyConfigured:
    return ZeroTrustImproperlyConfigured(f"{SETTING}: {message}")


def _parse(raw: object) -> DjangoConfig:
    if raw is None:
        raise _error(
            f"the {SETTING} setting is missing; set {SETTING} = "
            '{"GUARD": "<dotted path of your Guard>"} in your Django settings'
        )
    if not isinstance(raw, dict):
        raise _error(f"{SETTING} must be a dict, not {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if k not in KNOWN_KEYS)
    if unknown:
        raise _error(f"unknown key {unknown[0]!r} (known keys: {', '.join(KNOWN_KEYS)})")
    if "GUARD" not in raw:
        raise _error(f"{SETTING}['GUARD'] is required: a Guard or the dotted path of one")
    paths, prefixes, names = _exempt(raw.get("EXEMPT", ()))
    return DjangoConfig(_guard(raw["GUARD"]), paths, prefixes, names)


def _guard(value: object) -> Guard:
    where = f"{SETTING}['GUARD']"
    if isinstance(value, str):
        try:
            value = import_string(value)
        except ImportError as exc:
            raise _error(f"{where}: cannot import {value!r} ({exc})") from exc
        except Exception as exc:  # the module itself failed while importing
            raise _error(f"{where}: importing {value!r} failed ({type(exc).__name__})") from exc
    if isinstance(value, Guard):
        return value
    if callable(value) and not isinstance(value, type):
        factory: Callable[[], object] = value
        try:
            value = factory()
        except ZeroTrustError as exc:
            raise _error(f"{where}: the factory failed: {exc}") from exc
        except Exception as exc:  # e.g. a missing environment variable: named, not shown
            raise _error(f"{where}: the factory failed ({type(exc).__name__})") from exc
        if isinstance(value, Guard):
            return value
    raise _error(
        f"{where} must be a zerotrust Guard or a callable returning one, got {type(value).__name__}"
    )


def _exempt(value: object) -> tuple[frozenset[str], tuple[str, ...], frozenset[str]]:
    where = f"{SETTING}['EXEMPT']"
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise _error(f"{where} must be a list of URL names and paths, not a single value")
    paths: set[str] = set()
    prefixes: list[str] = []
    names: set[str] = set()
    for entry in value:
        if not isinstance(entry, str) or not entry.strip() or entry != entry.strip():
            raise _error(f"{where}: invalid entry {entry!r}")
        stars = entry.count("*")
        if entry.startswith("/"):
            if stars > 1 or (stars == 1 and not entry.endswith("*")):
                raise _error(f"{where}: {entry!r}: '*' may only end a path prefix")
            if stars:
                prefixes.append(entry[:-1])
            else:
                paths.add(entry)
        elif stars or "/" in entry:
            raise _error(f"{where}: {entry!r} is neither a URL name nor a path starting with '/'")
        else:
            names.add(entry)
    return frozenset(paths), tuple(prefixes), frozenset(names)
