"""The gRPC edge of the Workload API sources: imports, socket address, channel, errors.

This is the only module that touches ``grpc`` and the ``spiffe`` package. It uses the
protobuf messages and the client stub that ``spiffe`` generates from the SPIFFE Workload
API definition; everything above it sees plain Python values and zerotrust errors.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any, Final
from urllib.parse import quote, unquote, urlsplit

from zerotrust.errors import ConfigurationError, MissingDependencyError

__all__ = [
    "ENDPOINT_ENV",
    "HEADER",
    "MAX_BACKOFF",
    "RpcError",
    "StatusCode",
    "describe",
    "grpc_target",
    "is_fatal",
    "open_channel",
    "pb2",
    "stub",
]

ENDPOINT_ENV: Final = "SPIFFE_ENDPOINT_SOCKET"
#: Every Workload API call carries this metadata; servers refuse calls without it.
HEADER: Final = (("workload.spiffe.io", "true"),)
_MAX_UNIX_PATH_BYTES: Final = 107  # sun_path is 108 bytes on Linux, NUL included
#: The longest reconnect backoff, in seconds: gRPC takes it in milliseconds, as a C int.
MAX_BACKOFF: Final = (2**31 - 1) / 1000


_PIP_NAMES: Final = {"grpc": "grpcio", "google": "protobuf"}


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise MissingDependencyError(_PIP_NAMES.get(name, name), "spiffe", error=exc) from exc


def _load_protocol() -> tuple[ModuleType, ModuleType]:
    # The generated modules moved from spiffe.proto to spiffe._proto between releases.
    _import("spiffe")
    for package in ("spiffe._proto", "spiffe.proto"):
        try:
            messages = importlib.import_module(f"{package}.workload_pb2")
            services = importlib.import_module(f"{package}.workload_pb2_grpc")
        except ModuleNotFoundError as exc:
            if exc.name == package or (exc.name or "").startswith(f"{package}."):
                continue  # not this release's layout
            root = (exc.name or "google").split(".")[0]
            raise MissingDependencyError(_PIP_NAMES.get(root, root), "spiffe", error=exc) from exc
        except Exception as exc:  # generated code refuses an incompatible grpcio/protobuf
            raise MissingDependencyError("grpcio", "spiffe", error=exc) from exc
        return messages, services
    raise MissingDependencyError("spiffe", "spiffe")


_grpc: Any = _import("grpc")
pb2: Any
_services: Any
pb2, _services = _load_protocol()
RpcError: type[Exception] = _grpc.RpcError
StatusCode: Any = _grpc.StatusCode


def grpc_target(socket_path: str | os.PathLike[str] | None) -> str:
    """The gRPC target for the Workload API socket (``unix:/abs/path``, percent-encoded).

    ``socket_path`` may be ``unix:///path``, ``unix:/path`` or an absolute filesystem path;
    without it the ``SPIFFE_ENDPOINT_SOCKET`` environment variable is used (a ``unix:`` URI,
    as the SPIFFE specification requires). Raises :class:`ConfigurationError` otherwise.
    """
    if socket_path is None:
        value = os.environ.get(ENDPOINT_ENV, "")
        if not value:
            raise ConfigurationError(
                f"no Workload API socket: pass socket_path= or set {ENDPOINT_ENV}"
            )
        if value[:5].lower() != "unix:":
            raise ConfigurationError(f"{ENDPOINT_ENV} must be a unix: URI (unix:///path)")
        where = ENDPOINT_ENV
    else:
        value = os.fspath(socket_path)
        if not isinstance(value, str) or not value:
            raise ConfigurationError("socket_path must be a non-empty string or path")
        where = "socket_path"
    if value.startswith("/"):
        path = value
    else:
        parts = urlsplit(value)
        if parts.scheme != "unix":
            raise ConfigurationError(
                f"{where}: only unix: sockets are supported (unix:///path or unix:/path)"
            )
        if parts.netloc or parts.query or parts.fragment or "?" in value or "#" in value:
            raise ConfigurationError(
                f"{where}: a unix: URI has no authority, query or fragment (unix:///path)"
            )
        try:  # a URI's path is percent-encoded (RFC 3986 2.1)
            path = unquote(parts.path, errors="strict")
        except UnicodeDecodeError:
            raise ConfigurationError(f"{where}: the socket path is not UTF-8") from None
    if not path.startswith("/") or "\x00" in path:
        raise ConfigurationError(f"{where}: the socket path must be absolute")
    path = "/" + path.lstrip("/")
    if path == "/" or path.endswith("/"):
        raise ConfigurationError(f"{where}: the socket path names a directory, not a socket")
    try:  # os.fsdecode / os.environ carry bytes that are not UTF-8 as lone surrogates
        encoded = path.encode()
    except UnicodeEncodeError:
        raise ConfigurationError(f"{where}: the socket path is not UTF-8") from None
    if len(encoded) > _MAX_UNIX_PATH_BYTES:
        raise ConfigurationError(f"{where}: the socket path is too long for a Unix socket")
    return f"unix:{quote(path)}"  # grpc percent-decodes the path of a unix: target


def open_channel(target: str, *, backoff_initial: float, backoff_max: float) -> Any:
    """An insecure (Unix socket) channel whose own reconnect backoff stays within ours."""
    low = max(1, round(backoff_initial * 1000))
    high = max(low, round(backoff_max * 1000))
    options = [
        ("grpc.enable_http_proxy", 0),
        ("grpc.initial_reconnect_backoff_ms", low),
        ("grpc.min_reconnect_backoff_ms", low),
        ("grpc.max_reconnect_backoff_ms", high),
    ]
    return _grpc.insecure_channel(target, options=options)


def stub(channel: Any) -> Any:
    """The generated ``SpiffeWorkloadAPI`` client stub on ``channel``."""
    return _services.SpiffeWorkloadAPIStub(channel)


def describe(exc: BaseException) -> str:
    """A short, log-safe description of a failed call (status code and server detail)."""
    code = getattr(exc, "code", None)
    details = getattr(exc, "details", None)
    if callable(code) and callable(details):
        name = getattr(code(), "name", "UNKNOWN")
        text = " ".join(str(details() or "").split())[:200]
        return f"{name}: {text}" if text else name
    return type(exc).__name__


def is_denied(exc: BaseException) -> bool:
    """Whether the agent answered ``PERMISSION_DENIED``: it has no identity for this workload
    (any more), which withdraws every SVID and bundle it sent."""
    code = getattr(exc, "code", None)
    return callable(code) and code() == StatusCode.PERMISSION_DENIED


def is_fatal(exc: BaseException) -> bool:
    """Whether retrying cannot help: the agent refused the request itself
    (``INVALID_ARGUMENT``) or does not implement the call (``UNIMPLEMENTED``); the SPIFFE
    Workload Endpoint specification (Appendix A) says not to retry either."""
    code = getattr(exc, "code", None)
    return callable(code) and code() in (StatusCode.INVALID_ARGUMENT, StatusCode.UNIMPLEMENTED)
