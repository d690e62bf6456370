"""Views of the test project: each reports what zerotrust told it about the caller."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import cache_control
from rest_framework import generics, serializers
from rest_framework.decorators import (
    action,
    api_view,
    authentication_classes,
    permission_classes,
)
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer, StaticHTMLRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.viewsets import ViewSet

from zerotrust.django import (
    ZeroTrustAuthentication,
    ZeroTrustPermission,
    ZeroTrustRequiredMixin,
    ZeroTrustUser,
    current_principal,
    require,
)


def who(request: HttpRequest, **extra: Any) -> dict[str, Any]:
    principal = getattr(request, "principal", None)
    bound = current_principal()
    return {
        "principal": principal.id if principal is not None else None,
        "context": bound.id if bound is not None else None,
        **extra,
    }


def order(request: HttpRequest, order_id: str | int) -> JsonResponse:
    return JsonResponse(who(request, order_id=int(order_id), mode="sync"))


async def async_order(request: HttpRequest, order_id: int) -> JsonResponse:
    await asyncio.sleep(0)  # a real suspension point: the principal survives it
    return JsonResponse(who(request, order_id=order_id, mode="async"))


@require(scopes=["orders:admin"])
def admin_only(request: HttpRequest) -> JsonResponse:
    return JsonResponse(who(request, mode="sync"))


@require(scopes=["orders:admin"])
async def async_admin_only(request: HttpRequest) -> JsonResponse:
    return JsonResponse(who(request, mode="async"))


@cache_control(public=True, max_age=60)  # a shared cache may serve it to every caller
def report(request: HttpRequest, order_id: int) -> JsonResponse:
    return JsonResponse(who(request, order_id=order_id))


@cache_control(public=True, max_age=60)
@require(scopes=["orders:admin"])
def admin_report(request: HttpRequest) -> JsonResponse:
    return JsonResponse(who(request))


@require(callers=["spiffe://example.org/ns/shop/sa/web"])
@require(scopes=["orders:read"])
def stacked(request: HttpRequest) -> JsonResponse:
    return JsonResponse(who(request))


def _forgetful(view: Any) -> Any:
    """A decorator that does not use functools.wraps: it hides the requirement."""

    def inner(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        return view(request, *args, **kwargs)

    return inner


@_forgetful
@require(scopes=["orders:admin"])
def hidden(request: HttpRequest) -> JsonResponse:
    return JsonResponse(who(request))


def _forgetful_async(view: Any) -> Any:
    """The same for an async view."""

    async def inner(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        return await view(request, *args, **kwargs)

    return inner


@_forgetful_async
@require(scopes=["orders:admin"])
async def async_hidden(request: HttpRequest) -> JsonResponse:
    return JsonResponse(who(request))


def plain(request: HttpRequest, *args: Any) -> JsonResponse:
    return JsonResponse(who(request))


def health(request: HttpRequest, **kwargs: Any) -> JsonResponse:
    return JsonResponse({"ok": True, "principal": getattr(request, "principal", "unset")})


class OrderView(ZeroTrustRequiredMixin, View):
    required_scopes = ("orders:read",)

    def get(self, request: HttpRequest, order_id: int) -> JsonResponse:
        return JsonResponse(who(request, order_id=order_id, mode="sync"))


class AsyncOrderView(ZeroTrustRequiredMixin, View):
    required_scopes = ("orders:read",)

    async def get(self, request: HttpRequest, order_id: int) -> JsonResponse:
        await asyncio.sleep(0)
        return JsonResponse(who(request, order_id=order_id, mode="async"))


class LateMixinView(View, ZeroTrustRequiredMixin):
    """The mixin listed after View: View's dispatch runs first and never calls the mixin's."""

    required_scopes = ("orders:admin",)

    def get(self, request: HttpRequest) -> JsonResponse:
        return JsonResponse(who(request))


@require(scopes=["orders:admin"])
class DecoratedView(View):
    def get(self, request: HttpRequest) -> JsonResponse:
        return JsonResponse(who(request))


@method_decorator(require(scopes=["orders:admin"]), name="dispatch")
class MethodDecoratedView(View):
    def get(self, request: HttpRequest) -> JsonResponse:
        return JsonResponse(who(request))


@require()
def probe(request: HttpRequest) -> JsonResponse:
    return JsonResponse(who(request))


@require
def bare_probe(request: HttpRequest) -> JsonResponse:
    return JsonResponse(who(request))


class ApiOrders(APIView):
    authentication_classes = (ZeroTrustAuthentication,)
    permission_classes = (ZeroTrustPermission,)
    required_scopes = ("orders:read",)

    def get(self, request: Request) -> Response:
        user = request.user
        assert isinstance(user, ZeroTrustUser)
        return Response(
            {
                "user": str(user),
                "auth": request.auth.id,
                "principal": request.principal.id,
                "authenticated": user.is_authenticated,
            }
        )


class ApiAdmin(APIView):
    authentication_classes = (ZeroTrustAuthentication,)
    permission_classes = (ZeroTrustPermission,)
    required_scopes = ("orders:read", "orders:admin")

    def get(self, request: Request) -> Response:
        return Response({"principal": request.principal.id})


#: as_view() behind a decorator without functools.wraps: the view class is out of sight
api_hidden = _forgetful(ApiAdmin.as_view())
#: the same for plain Django views: a route's own requirement, and a decorated class
cbv_hidden_admin = _forgetful(OrderView.as_view(required_scopes=("orders:read", "orders:admin")))
decorated_hidden = _forgetful(DecoratedView.as_view())
late_mixin_hidden = _forgetful(LateMixinView.as_view())
#: @require around as_view(): the route asks more of the class than the class does
cbv_required_route = require(scopes=["orders:admin"])(OrderView.as_view())


class OrderForm(serializers.Serializer):
    item = serializers.CharField()
    quantity = serializers.IntegerField()


class ApiCreateOrder(generics.CreateAPIView):
    """DRF describes its POST form to OPTIONS requests the caller may POST."""

    authentication_classes = (ZeroTrustAuthentication,)
    permission_classes = (ZeroTrustPermission,)
    serializer_class = OrderForm


class ApiOrdersHtml(ApiOrders):
    """Renders HTML first, as DRF's default browsable API does for a browser."""

    renderer_classes = (StaticHTMLRenderer, JSONRenderer)


class ApiAuthOnly(APIView):
    """No ZeroTrustPermission: the authentication class must refuse policy denials itself."""

    authentication_classes = (ZeroTrustAuthentication,)
    permission_classes = ()
    required_scopes = ("orders:admin",)

    def get(self, request: Request) -> Response:
        return Response({"served": True})


class ApiPermissionOnly(APIView):
    authentication_classes = ()
    permission_classes = (ZeroTrustPermission,)

    def get(self, request: Request) -> Response:
        return Response({"principal": request.principal.id})


class ApiStaffBypass(APIView):
    """Chooses its permissions by reading request.user, as DRF views commonly do."""

    authentication_classes = (ZeroTrustAuthentication,)
    required_scopes = ("orders:read",)

    def get_permissions(self) -> list[Any]:
        if self.request.user is not None and self.request.user.is_staff:
            return []
        return [ZeroTrustPermission()]

    def get(self, request: Request) -> Response:
        return Response({"principal": request.principal.id})


@api_view(["GET"])
@authentication_classes([ZeroTrustAuthentication])
@permission_classes([ZeroTrustPermission])
def api_function(request: Request) -> Response:
    user = request.user
    assert isinstance(user, ZeroTrustUser)
    return Response({"user": str(user), "auth": request.auth.id})


class ApiAnonymous(APIView):
    """zerotrust lets anonymous callers in here, DRF's IsAuthenticated does not."""

    authentication_classes = (ZeroTrustAuthentication,)
    permission_classes = (IsAuthenticated,)

    def get(self, request: Request) -> Response:
        return Response({"served": True})


def headers(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        who(
            request,
            xfcc=request.headers.get("X-Forwarded-Client-Cert"),
            meta="HTTP_X_FORWARDED_CLIENT_CERT" in request.META,
            proven_by=request.principal.proven_by if request.principal else None,
        )
    )


def _principal_id() -> str:
    bound = current_principal()
    return bound.id if bound is not None else "none"


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def body() -> Iterator[str]:
        for _ in range(2):
            yield _principal_id() + "\n"

    return StreamingHttpResponse(body())


#: Who each endless body's cleanup saw (``endless`` below), and a signal that one ran.
ENDLESS_CLOSED: list[str] = []
ENDLESS_CLOSING = threading.Event()


def endless(request: HttpRequest) -> StreamingHttpResponse:
    """A body that ends only when the server closes it (its client left)."""

    def body() -> Iterator[str]:
        try:
            while True:
                yield (_principal_id() + "\n") * 1024
        finally:
            ENDLESS_CLOSED.append(_principal_id())
            ENDLESS_CLOSING.set()

    return StreamingHttpResponse(body())


def astream(request: HttpRequest) -> StreamingHttpResponse:
    async def body() -> AsyncIterator[str]:
        for _ in range(2):
            await asyncio.sleep(0)
            yield _principal_id() + "\n"

    return StreamingHttpResponse(body())


class ApiOrderViewSet(ViewSet):
    """Its purge action asks more than the class: DRF hands @action's keywords to the view."""

    authentication_classes = (ZeroTrustAuthentication,)
    permission_classes = (ZeroTrustPermission,)
    required_scopes = ("orders:read",)

    def list(self, request: Request) -> Response:
        return Response({"principal": request.principal.id})

    @action(detail=False, methods=["get"], required_scopes=("orders:read", "orders:purge"))
    def purge(self, request: Request) -> Response:
        return Response({"purged": request.principal.id})
