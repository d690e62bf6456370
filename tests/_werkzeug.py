"""A real threaded werkzeug server on a loopback ephemeral port, for tests of WSGI apps."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from werkzeug.serving import make_server


@contextmanager
def werkzeug_serving(app: Any, **kwargs: Any) -> Iterator[int]:
    """Serve ``app`` (threaded) for the duration of the block; yields the port."""
    server = make_server("127.0.0.1", 0, app, threaded=True, **kwargs)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    try:
        yield int(server.server_port)
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
