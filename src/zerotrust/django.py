"""zerotrust for Django (and Django REST framework): the public names.

* :class:`ZeroTrustMiddleware` -- add ``"zerotrust.django.ZeroTrustMiddleware"`` to
  ``MIDDLEWARE`` and set ``ZEROTRUST = {"GUARD": "myproject.security.guard"}``.
* :func:`require` and :class:`ZeroTrustRequiredMixin` -- per-view requirements on top of the
  app-wide policy; :func:`current_principal` -- the verified caller, anywhere in the view.
* :class:`ZeroTrustAuthentication`, :class:`ZeroTrustPermission`, :class:`ZeroTrustUser` --
  for Django REST framework, imported only when used (DRF is not needed otherwise).

Importing this module without Django raises :class:`~zerotrust.errors.MissingDependencyError`
(``pip install 'zerotrust[django]'``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zerotrust.adapters._context import current_principal
from zerotrust.adapters.django import ZeroTrustMiddleware
from zerotrust.adapters.django_require import ZeroTrustRequiredMixin, require

if TYPE_CHECKING:
    from zerotrust.adapters.django_drf import (
        ZeroTrustAuthentication,
        ZeroTrustPermission,
        ZeroTrustRefusal,
        ZeroTrustUser,
    )

__all__ = [
    "ZeroTrustAuthentication",
    "ZeroTrustMiddleware",
    "ZeroTrustPermission",
    "ZeroTrustRefusal",
    "ZeroTrustRequiredMixin",
    "ZeroTrustUser",
    "current_principal",
    "require",
]

_DRF_NAMES = frozenset(
    {"ZeroTrustAuthentication", "ZeroTrustPermission", "ZeroTrustRefusal", "ZeroTrustUser"}
)


def __getattr__(name: str) -> Any:
    if name in _DRF_NAMES:  # Django REST framework is imported only when asked for
        from zerotrust.adapters import django_drf

        return getattr(django_drf, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
