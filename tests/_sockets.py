"""Socket helpers for the tests' own loopback servers."""

from __future__ import annotations

import contextlib
import socket


def close_listener(listener: socket.socket) -> None:
    """Stop listening for good. ``close()`` alone leaves a socket that a thread is blocked in
    ``accept()`` on open and listening (the call holds it): connections would still be
    accepted, and the thread kept, for the rest of the run. ``shutdown()`` ends that call."""
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)
    listener.close()
