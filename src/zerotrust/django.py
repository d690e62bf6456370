"""zerotrust for Django (and Django REST framework): the public names.

* :class:`ZeroTrustMiddleware` -- add ``"zerotrust.django.ZeroTrustMiddleware"`` to
  ``MIDDLEWARE`` and set ``ZEROTRUST = {"GUARD": "myproject.security.guard"}``.
* :func:`require` and :class:`ZeroTrustRequiredMixin` -- per-view requirements on top of the
  app-wide policy; :func:`current_principal` -- the verified caller, anywhere in the view.
* :class:`ZeroTrustAuthentication`, :class:`ZeroTrustPermission`, :class:`ZeroTrustUser` and
  :func:`drf_exception_handler` -- for Django REST framework, imported only when used (DRF is
  not needed otherwise).

Importing this module without Django raises :class:`~zerotrust.errors.MissingDependencyError`
(``pip install 'zerotrust[django]'``).
"""

from __future__ import annotations

import importlib.util
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
    from zerotrust.adapters.django_drf import exception_handler as drf_exception_handler

__all__ = ["ZeroTrustMiddleware", "ZeroTrustRequiredMixin", "current_principal", "require"]
# The DRF classes are public where DRF is installed (a star import never fails for want of it;
# asked for by name, they say which extra to install).
if importlib.util.find_spec("rest_framework") is not None:
    __all__ += [
        "ZeroTrustAuthentication",
        "ZeroTrustPermission",
        "ZeroTrustRefusal",
        "ZeroTrustUser",
        "drf_exception_handler",
    ]

_DRF_NAMES = frozenset(
    {"ZeroTrustAuthentication", "ZeroTrustPermission", "ZeroTrustRefusal", "ZeroTrustUser"}
)


def __getattr__(name: str) -> Any:
    if name in _DRF_NAMES or name == "drf_exception_handler":  # DRF is imported when asked for
        from zerotrust.adapters import django_drf

        return getattr(django_drf, "exception_handler" if name[0] == "d" else name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
