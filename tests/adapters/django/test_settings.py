"""The ZEROTRUST setting is validated when the middleware loads (start-up), naming the key."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.wsgi import WSGIHandler
from django.test import Client
from django.test.utils import override_settings
from django.views import View

from tests.adapters.django.conftest import Harness
from zerotrust import Guard
from zerotrust.adapters.django_config import get_config
from zerotrust.django import ZeroTrustMiddleware, ZeroTrustRequiredMixin, require
from zerotrust.errors import ConfigurationError

GUARD_PATH = "tests.adapters.django.test_settings.GUARD"
GUARD: Any = None  # set by the tests that resolve a dotted path


def _missing_variable() -> Any:
    import os

    return os.environ["ZT_NOT_SET_ANYWHERE"]  # a factory failing with a plain KeyError


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not a dict", r"ZEROTRUST must be a dict"),
        ({"GAURD": GUARD_PATH}, r"unknown key 'GAURD'"),
        ({"EXEMPT": []}, r"ZEROTRUST\['GUARD'\] is required"),
        ({"GUARD": "no.such.module.guard"}, r"ZEROTRUST\['GUARD'\]: cannot import"),
        ({"GUARD": "django.conf.settings"}, r"ZEROTRUST\['GUARD'\] must be a zerotrust Guard"),
        ({"GUARD": 42}, r"ZEROTRUST\['GUARD'\] must be a zerotrust Guard"),
        (
            {"GUARD": "tests.adapters.django.project.security.guard"},
            r"ZEROTRUST\['GUARD'\]: the factory failed: ZT_TEST_BUNDLE is not set",
        ),
        ({"GUARD": _missing_variable}, r"the factory failed \(KeyError\)"),
        ({"GUARD": Guard}, r"ZEROTRUST\['GUARD'\] must be a zerotrust Guard"),  # the class
        ({"GUARD": lambda: "a guard"}, r"a callable returning one, got str"),  # bad factory
        ({"GUARD": GUARD_PATH, "EXEMPT": "healthz"}, r"ZEROTRUST\['EXEMPT'\] must be a list"),
        ({"GUARD": GUARD_PATH, "EXEMPT": 42}, r"ZEROTRUST\['EXEMPT'\] must be a list"),
        ({"GUARD": GUARD_PATH, "EXEMPT": ["/a*b"]}, r"EXEMPT'\]: '/a\*b'"),
        ({"GUARD": GUARD_PATH, "EXEMPT": ["/static/**"]}, r"'\*' may only end a path prefix"),
        ({"GUARD": GUARD_PATH, "EXEMPT": ["health*"]}, r"neither a URL name nor a path"),
        ({"GUARD": GUARD_PATH, "EXEMPT": ["api/health"]}, r"neither a URL name nor a path"),
        ({"GUARD": GUARD_PATH, "EXEMPT": [""]}, r"EXEMPT'\]: invalid entry ''"),
        ({"GUARD": GUARD_PATH, "EXEMPT": [42]}, r"EXEMPT'\]: invalid entry 42"),
        ({"GUARD": GUARD_PATH, "EXEMPT": ["healthz "]}, r"EXEMPT'\]: invalid entry 'healthz '"),
    ],
)
def test_invalid_settings_fail_at_startup(
    zt: Harness, monkeypatch: pytest.MonkeyPatch, value: object, message: str
) -> None:
    monkeypatch.setattr(sys.modules[__name__], "GUARD", zt.guard)
    monkeypatch.delenv("ZT_TEST_BUNDLE", raising=False)
    with override_settings(ZEROTRUST=value):
        with pytest.raises(ImproperlyConfigured, match=message) as caught:
            WSGIHandler()  # Django builds the middleware chain here, before any request
        assert isinstance(caught.value, ConfigurationError)


def test_missing_setting(zt: Harness) -> None:
    with override_settings():
        del settings.ZEROTRUST
        with pytest.raises(ImproperlyConfigured, match="ZEROTRUST setting is missing"):
            ZeroTrustMiddleware(lambda request: None)


@pytest.mark.parametrize("form", ["instance", "factory", "dotted instance", "dotted factory"])
def test_guard_forms(zt: Harness, monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    monkeypatch.setattr(sys.modules[__name__], "GUARD", zt.guard)
    monkeypatch.setattr(sys.modules[__name__], "guard_factory", lambda: zt.guard, raising=False)
    value = {
        "instance": zt.guard,
        "factory": lambda: zt.guard,
        "dotted instance": GUARD_PATH,
        "dotted factory": "tests.adapters.django.test_settings.guard_factory",
    }[form]
    with override_settings(ZEROTRUST={"GUARD": value}):
        assert get_config().guard is zt.guard
        assert Client().get("/orders/7/", headers=zt.auth()).status_code == 200


def test_configuration_is_parsed_once_per_value(zt: Harness) -> None:
    assert get_config() is get_config()
    first = get_config()
    with override_settings(ZEROTRUST={"GUARD": zt.guard, "EXEMPT": ["/other"]}):
        assert get_config() is not first
        assert get_config().exempt_paths == frozenset({"/other"})


def test_exempt_entries_match_names_exact_paths_and_prefixes(zt: Harness) -> None:
    exempt = ["/static/*", "/metrics", "healthz", "admin:login"]
    with override_settings(ZEROTRUST={"GUARD": zt.guard, "EXEMPT": exempt}):
        config = get_config()
        assert config.is_exempt("/static/app.js", None) and config.is_exempt("/static/", None)
        assert not config.is_exempt("/staticfiles/app.js", None)  # a prefix ends at its '/'
        assert not config.is_exempt("/static", None)
        assert config.is_exempt("/metrics", None) and not config.is_exempt("/metrics/", None)
        assert config.is_exempt("/anything", "healthz")
        assert config.is_exempt("/login", "admin:login") and not config.is_exempt("/x", "login")
        assert not config.is_exempt("/healthz", None)  # a name is not a path


def test_mixin_attributes_are_checked_when_the_class_is_defined() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"BadView.*single string"):

        class BadView(ZeroTrustRequiredMixin, View):
            required_scopes = "orders:read"


def test_require_arguments_are_checked_when_decorating() -> None:
    with pytest.raises(ConfigurationError, match="single string"):
        require(scopes="orders:read")  # type: ignore[arg-type]


def test_a_decorated_subclass_adds_to_its_parents_requirement() -> None:
    from zerotrust.adapters.django_require import class_requirement

    @require(scopes=["orders:admin"])
    class AdminView(View):
        pass

    @require(scopes=["orders:read"])
    class SubAdminView(AdminView):
        pass

    needed = class_requirement(SubAdminView)
    assert needed is not None and set(needed.scopes) == {"orders:admin", "orders:read"}
    parent = class_requirement(AdminView)
    assert parent is not None and parent.scopes == ("orders:admin",)


def test_decorating_a_mixin_view_adds_to_the_requirement_it_declares() -> None:
    """The mixin reads a class's requirement when the class is defined, before a decorator on
    it runs: the decorator's requirement is not lost to that first reading."""
    from zerotrust.adapters.django_require import class_requirement, view_requirement

    @require(scopes=["orders:admin"])
    class AdminOrderView(ZeroTrustRequiredMixin, View):
        required_scopes = ("orders:read",)

    needed = class_requirement(AdminOrderView)
    assert needed is not None and set(needed.scopes) == {"orders:read", "orders:admin"}
    view = AdminOrderView.as_view()
    assert view_requirement(view) == needed


def test_decorating_a_class_after_its_view_was_read_updates_the_view() -> None:
    from zerotrust.adapters.django_require import view_requirement

    class LateView(View):
        pass

    view = LateView.as_view()
    assert view_requirement(view) is None
    require(scopes=["orders:admin"])(LateView)
    needed = view_requirement(view)
    assert needed is not None and needed.scopes == ("orders:admin",)


def test_a_decorated_class_keeps_what_its_dispatch_tells_as_view() -> None:
    from django.utils.decorators import method_decorator
    from django.views.decorators.csrf import csrf_exempt

    @require()
    @method_decorator(csrf_exempt, name="dispatch")
    class Webhook(View):
        pass

    assert Webhook.as_view().csrf_exempt is True  # type: ignore[attr-defined]


def test_the_mixin_alone_requires_an_authenticated_caller() -> None:
    from zerotrust import require as requirement
    from zerotrust.adapters.django_require import class_requirement, view_requirement

    class AnyCallerView(ZeroTrustRequiredMixin, View):
        pass

    assert class_requirement(AnyCallerView) == requirement()
    assert view_requirement(AnyCallerView.as_view()) == requirement()


def test_the_requirement_of_a_view_class_itself() -> None:
    """Without a resolved view function the class is asked: its mixin attributes count."""
    from tests.adapters.django.project.views import OrderView
    from zerotrust.adapters.django_require import view_requirement

    needed = view_requirement(OrderView)
    assert needed is not None and needed.scopes == ("orders:read",)


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("scopes", ["orders:read"]),
        ("any_scopes", ["orders:read", "orders:admin"]),
        ("callers", ["spiffe://example.org/ns/shop/sa/web"]),
        ("proven_by", ["mtls"]),
    ],
)
def test_any_one_required_attribute_of_a_view_class_is_a_requirement(
    attribute: str, value: list[str]
) -> None:
    """A view class without the mixin (a DRF view) declaring only one ``required_*``
    attribute has that requirement; none is dropped for the others' absence."""
    from zerotrust import require as requirement
    from zerotrust.adapters.django_require import class_requirement

    declared = type("Declared", (View,), {f"required_{attribute}": value})
    assert class_requirement(declared) == requirement(**{attribute: value})


def test_require_keeps_what_the_view_function_tells_django() -> None:
    from django.views.decorators.csrf import csrf_exempt

    @require()
    @csrf_exempt
    def webhook(request: object) -> None: ...

    assert webhook.csrf_exempt is True  # type: ignore[attr-defined]
    assert webhook.__name__ == "webhook"


def test_stacked_one_of_requirements_all_hold() -> None:
    @require(any_scopes=["orders:write"])
    @require(any_scopes=["orders:admin"])
    def view(request: object) -> None: ...

    from zerotrust.adapters.django_require import REQUIREMENT_ATTRIBUTE

    combined = getattr(view, REQUIREMENT_ATTRIBUTE)
    assert combined.any_scope_groups == {frozenset({"orders:write"}), frozenset({"orders:admin"})}


def run_isolated(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_importing_zerotrust_does_not_import_django() -> None:
    result = run_isolated(
        """
        import sys
        import zerotrust
        assert "django" not in sys.modules and "rest_framework" not in sys.modules
        """
    )
    assert result.returncode == 0, result.stderr


def test_adapter_without_django_names_the_extra() -> None:
    result = run_isolated(
        """
        import sys
        sys.modules["django"] = None
        from zerotrust.errors import MissingDependencyError
        try:
            import zerotrust.django
        except MissingDependencyError as exc:
            assert (exc.package, exc.extra) == ("django", "django"), exc
        else:
            raise AssertionError("imported without django")
        """
    )
    assert result.returncode == 0, result.stderr


def test_adapter_without_drf_works_and_names_the_extra() -> None:
    result = run_isolated(
        """
        import sys
        sys.modules["rest_framework"] = None
        import zerotrust.django
        from zerotrust.errors import MissingDependencyError
        assert zerotrust.django.ZeroTrustMiddleware is not None
        try:
            zerotrust.django.ZeroTrustAuthentication
        except MissingDependencyError as exc:
            assert (exc.package, exc.extra) == ("djangorestframework", "drf"), exc
        else:
            raise AssertionError("DRF class without DRF")
        """
    )
    assert result.returncode == 0, result.stderr
