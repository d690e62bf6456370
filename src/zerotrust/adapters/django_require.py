"""Per-view requirements for Django: ``@require(...)`` and :class:`ZeroTrustRequiredMixin`.

A requirement holds *in addition to* the app-wide policy (both must allow). The middleware
reads it from the view in ``process_view`` and decides on both in one Guard call; the
decorator and the mixin only check, when the view runs, that the middleware did so (a view
whose requirement nobody enforced is refused loudly, never served).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, TypeVar, overload

from zerotrust.adapters.django_config import ZeroTrustImproperlyConfigured, get_config
from zerotrust.adapters.django_request import request_view, state_of
from zerotrust.authz.policy import Requirement
from zerotrust.authz.policy import require as build_requirement
from zerotrust.errors import ConfigurationError, MissingDependencyError
from zerotrust.identity.match import Matcher

try:
    from asgiref.sync import iscoroutinefunction
except ImportError as exc:  # pragma: no cover - asgiref comes with Django 4.2+
    raise MissingDependencyError("django", "django", error=exc) from exc

__all__ = [
    "REQUIREMENT_ATTRIBUTE",
    "ZeroTrustRequiredMixin",
    "class_requirement",
    "covers",
    "ensure_checked",
    "instance_requirement",
    "require",
    "view_requirement",
]

#: The attribute ``@require`` sets on a view function or class.
REQUIREMENT_ATTRIBUTE = "zerotrust_requirement"

V = TypeVar("V", bound=Callable[..., Any])

_class_cache: dict[type, Requirement | None] = {}
_view_cache: dict[Any, Requirement | None] = {}


class ZeroTrustRequiredMixin:
    """For class-based views: an authenticated caller, and these requirements, on top of the
    app-wide policy.

    .. code-block:: python

        class OrderView(ZeroTrustRequiredMixin, View):
            required_scopes = ["orders:read"]
            required_callers = ["spiffe://example.org/ns/shop/sa/*"]

    ``required_any_scopes`` (one of them suffices) and ``required_proven_by`` (e.g.
    ``["mtls", "mtls+jwt"]``) are accepted too. The attributes are validated when the class is
    defined.
    """

    required_scopes: Sequence[str] = ()
    required_any_scopes: Sequence[str] = ()
    required_callers: Matcher | Sequence[str] | None = None
    required_proven_by: Sequence[str] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _class_cache.pop(cls, None)
        _view_cache.clear()
        class_requirement(cls)  # invalid attributes fail at import time, not on a request
        if _shadowed(cls):  # class V(View, ZeroTrustRequiredMixin): View's dispatch comes first
            _check_in_dispatch(cls)

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        """Django hook: run the view only if ``ZeroTrustMiddleware`` allowed the request under its
        requirement; else raise :class:`~zerotrust.errors.ConfigurationError` (fail closed)."""
        ensure_checked(request, instance_requirement(self), type(self).__qualname__)
        return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]


@overload
def require(view: V, /) -> V: ...


@overload
def require(
    *,
    scopes: Iterable[str] = (),
    any_scopes: Iterable[str] = (),
    callers: Matcher | Iterable[str] | None = None,
    methods: Iterable[str] = (),
    proven_by: Iterable[str] = (),
) -> Callable[[V], V]: ...


def require(
    view: V | None = None,
    /,
    *,
    scopes: Iterable[str] = (),
    any_scopes: Iterable[str] = (),
    callers: Matcher | Iterable[str] | None = None,
    methods: Iterable[str] = (),
    proven_by: Iterable[str] = (),
) -> Callable[[V], V] | V:
    """Decorate a view (sync or async function, or a class-based view) with a requirement.

    Bare (``@require``) or without arguments (``@require()``) it requires an authenticated
    caller. Stacked decorators combine (all must hold). See :func:`zerotrust.require` for the
    arguments.
    """
    requirement = build_requirement(
        scopes=scopes, any_scopes=any_scopes, callers=callers, methods=methods, proven_by=proven_by
    )

    def decorate(view: V) -> V:
        if isinstance(view, type):
            return _decorate_class(view, requirement)  # type: ignore[return-value]
        inner: Requirement | None = getattr(view, REQUIREMENT_ATTRIBUTE, None)
        combined = requirement if inner is None else inner & requirement
        name = getattr(view, "__qualname__", repr(view))
        wrapper: Callable[..., Any]
        if iscoroutinefunction(view):

            async def async_wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
                ensure_checked(request, combined, name)
                return await view(request, *args, **kwargs)

            wrapper = async_wrapper
        else:

            def wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
                ensure_checked(request, combined, name)
                return view(request, *args, **kwargs)

        functools.update_wrapper(wrapper, view)
        setattr(wrapper, REQUIREMENT_ATTRIBUTE, combined)
        return wrapper  # type: ignore[return-value]

    if view is not None:  # used bare: @require
        if not callable(view):
            raise ConfigurationError("require takes its arguments by keyword")
        return decorate(view)
    return decorate


def _decorate_class(cls: type, requirement: Requirement) -> type:
    # inherited too: a subclass of a decorated view adds to its parent's requirement
    existing: Requirement | None = getattr(cls, REQUIREMENT_ATTRIBUTE, None)
    setattr(cls, REQUIREMENT_ATTRIBUTE, requirement if existing is None else existing & requirement)
    _class_cache.clear()  # subclasses inherit the attribute
    _view_cache.clear()
    _check_in_dispatch(cls)
    return cls


def _shadowed(cls: type) -> bool:
    """Whether a class before the mixin in ``cls``'s MRO, and not built on it, has a ``dispatch``
    (``class V(View, ZeroTrustRequiredMixin)``: ``View.dispatch`` never calls the mixin's)."""
    for klass in cls.__mro__:
        if klass is ZeroTrustRequiredMixin:
            return False
        if "dispatch" in vars(klass) and not issubclass(klass, ZeroTrustRequiredMixin):
            return True
    return False


def _check_in_dispatch(cls: type) -> None:
    """Make ``cls.dispatch`` check, before anything else, that the requirement was enforced."""
    original = cls.dispatch  # type: ignore[attr-defined]
    if getattr(original, "_zerotrust_checks", False):
        return

    def dispatch(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        ensure_checked(request, instance_requirement(self), type(self).__qualname__)
        return original(self, request, *args, **kwargs)

    # as_view() copies dispatch's attributes (csrf_exempt, ...) onto the view function
    dispatch.__dict__.update(original.__dict__)
    dispatch.__name__, dispatch.__qualname__ = original.__name__, original.__qualname__
    dispatch._zerotrust_checks = True  # type: ignore[attr-defined]
    cls.dispatch = dispatch  # type: ignore[attr-defined]


#: The attributes a view declares its requirement with (also as ``as_view()`` keywords).
_ATTRIBUTES: Final = (
    "required_scopes",
    "required_any_scopes",
    "required_callers",
    "required_proven_by",
)


def class_requirement(cls: type) -> Requirement | None:
    """The requirement a view class declares (``@require`` on the class, the mixin's
    ``required_*`` attributes, or a DRF view's ``required_scopes``), combined."""
    try:
        return _class_cache[cls]
    except KeyError:
        pass
    result = _declared(cls, {})
    _class_cache[cls] = result
    return result


def _declared(cls: type, overrides: Mapping[str, Any]) -> Requirement | None:
    """``cls``'s requirement with some ``required_*`` attributes given per route
    (``View.as_view(required_scopes=...)``, DRF ``@action(required_scopes=...)``)."""

    def read(name: str) -> Any:
        return overrides[name] if name in overrides else getattr(cls, name, None)

    explicit: Requirement | None = getattr(cls, REQUIREMENT_ATTRIBUTE, None)
    scopes = read("required_scopes") or ()
    any_scopes = read("required_any_scopes") or ()
    callers = read("required_callers")
    proven_by = read("required_proven_by") or ()
    built: Requirement | None = None
    if scopes or any_scopes or callers is not None or proven_by or _is_mixin(cls):
        try:
            built = build_requirement(
                scopes=scopes, any_scopes=any_scopes, callers=callers, proven_by=proven_by
            )
        except ConfigurationError as exc:
            raise ZeroTrustImproperlyConfigured(f"{cls.__qualname__}: {exc}") from exc
    return built if explicit is None else explicit if built is None else explicit & built


def _overrides(values: object) -> dict[str, Any]:
    """The ``required_*`` keywords among a route's view keywords."""
    if not isinstance(values, Mapping):
        return {}
    return {name: values[name] for name in _ATTRIBUTES if name in values}


def instance_requirement(view: Any) -> Requirement | None:
    """The requirement of a class-based view instance: its class's, with the ``required_*``
    keywords its route gave ``as_view()`` (they are instance attributes)."""
    overrides = _overrides(getattr(view, "__dict__", None))
    if not overrides:
        return class_requirement(type(view))
    return _declared(type(view), overrides)


def _is_mixin(cls: type) -> bool:
    return issubclass(cls, ZeroTrustRequiredMixin)


def view_requirement(view_func: Any) -> Requirement | None:
    """The requirement of a resolved view callable (function view or ``as_view()`` result)."""
    try:
        return _view_cache[view_func]
    except (KeyError, TypeError):
        pass
    if isinstance(view_func, type):  # a view class, when there is no resolved view function
        return class_requirement(view_func)
    result: Requirement | None = getattr(view_func, REQUIREMENT_ATTRIBUTE, None)
    view_class = getattr(view_func, "view_class", None) or getattr(view_func, "cls", None)
    if isinstance(view_class, type):
        # Django keeps as_view()'s keywords in view_initkwargs, DRF (and its @action
        # keywords) in initkwargs: a route may give its own required_* attributes
        overrides = _overrides(getattr(view_func, "view_initkwargs", None))
        overrides.update(_overrides(getattr(view_func, "initkwargs", None)))
        declared = _declared(view_class, overrides) if overrides else class_requirement(view_class)
        if declared is not None:
            result = declared if result is None else result & declared
    with contextlib.suppress(TypeError):  # an unhashable callable: computed on every request
        _view_cache[view_func] = result
    return result


def ensure_checked(request: Any, needed: Requirement | None, where: str) -> None:
    """Refuse to run a view whose requirement the middleware did not enforce."""
    state = state_of(request)
    if (
        state is not None
        and state.outcome is not None
        and state.outcome.allowed
        and covers(state.requirement, needed)
    ):
        return
    error = ZeroTrustImproperlyConfigured(
        f"{where} has a zerotrust requirement that was not enforced: add "
        "'zerotrust.django.ZeroTrustMiddleware' to MIDDLEWARE, and keep the requirement "
        "visible to it (decorators in between must use functools.wraps)"
    )
    if state is not None and state.outcome is not None and state.outcome.allowed:
        # the audit trail holds the allow this refusal overrides: it gets the refusal too
        get_config().guard.refuse(request_view(request), error, prior=state.outcome)
    raise error


def covers(used: Requirement | None, needed: Requirement | None) -> bool:
    """Whether a decision made with ``used`` enforced ``needed`` (``None``: nothing)."""
    return needed is None or used is needed or (used is not None and _implies(used, needed))


def _implies(used: Requirement, needed: Requirement) -> bool:
    """Whether enforcing ``used`` enforced ``needed`` too (as combined with ``&``)."""

    def narrower(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
        return not b or (bool(a) and set(a) <= set(b))

    return (
        set(needed.scopes) <= set(used.scopes)
        and needed.any_scope_groups <= used.any_scope_groups
        and (needed.callers is None or needed.callers == used.callers)
        and narrower(used.methods, needed.methods)
        and narrower(used.proven_by, needed.proven_by)
    )
