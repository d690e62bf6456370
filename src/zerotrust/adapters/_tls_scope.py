"""The ASGI TLS extension, built from a server connection's ``ssl.SSLObject``.

The ASGI spec describes ``scope["extensions"]["tls"]``; uvicorn and hypercorn do not fill it
in. zerotrust's server integrations build it once per connection with :func:`tls_extension`
and add a copy to every request's scope with :func:`add_tls_extension`. Besides the spec's
keys (``client_cert_chain`` as PEM strings, leaf first; ``client_cert_name``;
``tls_version``; ``cipher_suite``; ...) it carries the :class:`~zerotrust.VerifiedPeer` that a
zerotrust SSL context established during the handshake, under :data:`TLS_PEER_KEY`.

No framework imports: only :mod:`ssl` and ``cryptography``.
"""

from __future__ import annotations

import ssl
from collections.abc import MutableMapping
from typing import Any, Final

from cryptography import x509

from zerotrust.errors import MissingCredentials
from zerotrust.x509._certs import PARSE_ERRORS
from zerotrust.x509.peer import verified_chain_der
from zerotrust.x509.verify import VerifiedPeer

__all__ = ["TLS_PEER_KEY", "add_tls_extension", "tls_extension"]

#: Key of the handshake-verified :class:`~zerotrust.VerifiedPeer` inside the TLS extension.
TLS_PEER_KEY: Final = "zerotrust_peer"

_TLS_VERSIONS: Final = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
_CIPHER_IDS: dict[str, int] = {}


def _cipher_suite(ssl_object: Any) -> int | None:
    cipher = ssl_object.cipher()
    if not cipher:
        return None
    name = cipher[0]
    if name not in _CIPHER_IDS:
        # OpenSSL ids are 0x03000000 | <IANA two-byte id>; names are global, so one cache
        for entry in ssl_object.context.get_ciphers():
            _CIPHER_IDS.setdefault(entry["name"], entry["id"] & 0xFFFF)
    return _CIPHER_IDS.get(name)


def _subject_name(peer: VerifiedPeer | None, chain: list[bytes]) -> str | None:
    if peer is not None:
        return peer.leaf.subject.rfc4514_string()
    if not chain:
        return None
    try:
        return x509.load_der_x509_certificate(chain[0]).subject.rfc4514_string()
    except PARSE_ERRORS:
        return None


def tls_extension(ssl_object: Any) -> dict[str, Any] | None:
    """The ASGI TLS extension for an established server-side connection (``None`` without TLS).

    ``server_cert`` is ``None``: the standard library does not say which certificate a
    connection presented, and a rotating SVID makes a guess wrong at the worst moment.
    """
    if ssl_object is None:
        return None
    found = getattr(ssl_object, "zerotrust_peer", None)
    peer = found if isinstance(found, VerifiedPeer) else None
    try:
        chain = verified_chain_der(ssl_object)
    except MissingCredentials:
        chain = []
    return {
        "server_cert": None,
        "client_cert_chain": tuple(ssl.DER_cert_to_PEM_cert(der) for der in chain),
        "client_cert_name": _subject_name(peer, chain),
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": _cipher_suite(ssl_object),
        TLS_PEER_KEY: peer,
    }


def add_tls_extension(scope: MutableMapping[str, Any], tls: dict[str, Any]) -> None:
    """Put a copy of ``tls`` into ``scope["extensions"]["tls"]`` (one copy per request, so an
    application that edits its scope cannot change what the next request on the connection
    sees)."""
    extensions = scope.get("extensions")
    if extensions is None:
        scope["extensions"] = {"tls": dict(tls)}
    else:
        extensions["tls"] = dict(tls)
