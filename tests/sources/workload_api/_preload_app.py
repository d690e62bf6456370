"""A WSGI app whose Workload API source is built at import: under ``gunicorn --preload``, in
the arbiter, before the workers are forked. Each request reports what the source answers in
the worker that serves it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from zerotrust.errors import SourceError
from zerotrust.sources.spiffe_workload_api import WorkloadApiJwtSource

source = WorkloadApiJwtSource(os.environ["ZT_TEST_AGENT"], trust_domain="example.org")


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    try:
        body = " ".join(key.kid or "" for key in source.get_keys())
        status = "200 OK"
    except SourceError as exc:
        body, status = str(exc), "503 Service Unavailable"
    start_response(status, [("Content-Type", "text/plain")])
    return [body.encode()]
