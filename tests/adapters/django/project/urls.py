from django.urls import path, re_path
from rest_framework.routers import SimpleRouter

from tests.adapters.django.project import views

urlpatterns = [
    path("orders/<int:order_id>/", views.order, name="order"),
    path("async/orders/<int:order_id>/", views.async_order, name="async-order"),
    path("admin-only/", views.admin_only, name="admin-only"),
    path("async-admin/", views.async_admin_only, name="async-admin"),
    path("stacked/", views.stacked),
    path("reports/<int:order_id>/", views.report),
    path("admin-report/", views.admin_report),
    path("hidden/", views.hidden),
    path("cbv/orders/<int:order_id>/", views.OrderView.as_view()),
    path("cbv-async/orders/<int:order_id>/", views.AsyncOrderView.as_view()),
    # the same class, asking more on this route
    path(
        "cbv/admin/<int:order_id>/",
        views.OrderView.as_view(required_scopes=("orders:read", "orders:admin")),
    ),
    # a string where a list of scopes belongs: found when a request reaches the route
    path("cbv/typo/<int:order_id>/", views.OrderView.as_view(required_scopes="orders:read")),
    path("decorated-class/", views.DecoratedView.as_view()),
    path("cbv/hidden-admin/<int:order_id>/", views.cbv_hidden_admin),
    path("hidden-class/", views.decorated_hidden),
    path("late-mixin/", views.LateMixinView.as_view()),
    path("late-mixin-hidden/", views.late_mixin_hidden),
    path("async-hidden/", views.async_hidden),
    path("cbv/required-route/<int:order_id>/", views.cbv_required_route),
    path("method-decorated/", views.MethodDecoratedView.as_view()),
    path("probe/", views.probe),
    path("bare-probe/", views.bare_probe),
    path("healthz/", views.health, name="healthz"),
    path("metrics", views.health),
    path("static/<path:name>", views.health),
    path("exempt-required/", views.admin_only, name="exempt-required"),
    re_path(r"^legacy/(?P<order_id>[0-9]+)/$", views.order, name="legacy"),
    re_path(r"^weird/(a|b)/$", views.plain, name="weird"),
    path("headers/", views.headers),
    path("stream/", views.stream),
    path("astream/", views.astream),
    path("endless/", views.endless),
    path("api/orders/", views.ApiOrders.as_view()),
    path("api/hidden/", views.api_hidden),
    path("api/create/", views.ApiCreateOrder.as_view()),
    path("api/orders-html/", views.ApiOrdersHtml.as_view()),
    path("api/auth-only/", views.ApiAuthOnly.as_view()),
    path("api/permission-only/", views.ApiPermissionOnly.as_view()),
    # a string where a list of scopes belongs, on a DRF route
    path("api/typo/", views.ApiOrders.as_view(required_scopes="orders:read")),
    path("api/anon/", views.ApiAnonymous.as_view()),
    path("api/function/", views.api_function),
    path("api/staff-bypass/", views.ApiStaffBypass.as_view()),
]

router = SimpleRouter()
router.register("api/viewset", views.ApiOrderViewSet, basename="viewset")
urlpatterns += router.urls
