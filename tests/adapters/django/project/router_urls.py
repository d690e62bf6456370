"""DRF's DefaultRouter, with regular-expression and path() routes: the route templates policies
see for a router's list, detail and format-suffix URLs."""

import inspect

from django.urls import path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import DefaultRouter, SimpleRouter
from rest_framework.urlpatterns import format_suffix_patterns
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
if "use_regex_path" in inspect.signature(SimpleRouter.__init__).parameters:
    paths = DefaultRouter(use_regex_path=False)
    paths.register("path/orders", Orders, basename="path-orders")
    path_urls = paths.urls
else:
    # djangorestframework < 3.15 has no path() routers: the patterns such a router makes,
    # written out (list and detail routes, each with its format-suffix route).
    path_urls = format_suffix_patterns(
        [
            path(
                "path/orders/",
                Orders.as_view({"get": "list"}, basename="path-orders", detail=False),
                name="path-orders-list",
            ),
            path(
                "path/orders/<str:pk>/",
                Orders.as_view({"get": "retrieve"}, basename="path-orders", detail=True),
                name="path-orders-detail",
            ),
        ]
    )
urlpatterns = regex.urls + path_urls
