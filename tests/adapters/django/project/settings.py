"""Settings of the minimal Django project the adapter tests serve (in process, under gunicorn)."""

SECRET_KEY = "tests-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
ROOT_URLCONF = "tests.adapters.django.project.urls"
INSTALLED_APPS = ["rest_framework"]
MIDDLEWARE = ["zerotrust.django.ZeroTrustMiddleware"]
DATABASES: dict[str, object] = {}
USE_TZ = True
USE_I18N = False
LOGGING_CONFIG = None
REST_FRAMEWORK = {
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
}
ZEROTRUST = {
    "GUARD": "tests.adapters.django.project.security.guard",
    "EXEMPT": ["healthz", "exempt-required", "/metrics", "/static/*"],
}
