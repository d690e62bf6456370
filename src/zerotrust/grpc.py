"""gRPC integration (``pip install 'zerotrust[grpc]'``): server interceptors, server
credentials, and client channels.

Server side: :class:`ServerInterceptor` (``grpc.server``) and :class:`AioServerInterceptor`
(``grpc.aio.server``) put every RPC through a :class:`~zerotrust.Guard`;
:func:`server_credentials` serves the workload's SVID over mTLS and follows rotation;
:func:`require` adds per-method requirements; :func:`current_principal` is the caller.

Client side: :func:`secure_channel` / :func:`aio_secure_channel` (see
:mod:`zerotrust.client.grpc`).
"""

from zerotrust.adapters._context import current_principal
from zerotrust.adapters.grpc_aio_server import AioServerInterceptor
from zerotrust.adapters.grpc_server import ServerInterceptor, require, server_credentials
from zerotrust.client.grpc import (
    AioManagedChannel,
    ManagedChannel,
    RetryPolicy,
    ServerIdentityError,
    aio_secure_channel,
    secure_channel,
)

__all__ = [
    "AioManagedChannel",
    "AioServerInterceptor",
    "ManagedChannel",
    "RetryPolicy",
    "ServerIdentityError",
    "ServerInterceptor",
    "aio_secure_channel",
    "current_principal",
    "require",
    "secure_channel",
    "server_credentials",
]
