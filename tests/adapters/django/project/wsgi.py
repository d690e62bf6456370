"""WSGI entry point of the test project (for gunicorn)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.adapters.django.project.settings")
application = get_wsgi_application()
