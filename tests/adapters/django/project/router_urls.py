"""DRF's DefaultRouter, with regular-expression and path() routes: the route templates policies
see for a router's list, detail and format-suffix URLs."""

from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import DefaultRouter
from rest_framework.viewsets import ViewSet

from zerotrust.django import ZeroTrustAuthentication, ZeroTrustPermission


class Orders(ViewSet):
    authentication_classes = (ZeroTrustAuthentication,)
    permission_classes = (ZeroTrustPermission,)

    def list(self, request: Request, format: str | None = None) -> Response:
        return Response([])

    def retrieve(self, request: Request, pk: str, format: str | None = None) -> Response:
        return Response({"pk": pk})


regex = DefaultRouter()
regex.register("re/orders", Orders, basename="re-orders")
paths = DefaultRouter(use_regex_path=False)
paths.register("path/orders", Orders, basename="path-orders")
urlpatterns = regex.urls + paths.urls
