"""Certificates carried as text in forwarded headers: URL-encoded PEM, raw PEM, DER checks.

Shared by the XFCC, RFC 9440 and nginx parsers. Everything here is bounded and raises only
:class:`~zerotrust.errors.MalformedCredentials`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from urllib.parse import unquote_to_bytes

from cryptography import x509

from zerotrust.errors import MalformedCredentials
from zerotrust.x509._certs import MAX_CERT_DER_BYTES, MAX_CHAIN_LENGTH, load_der_certificate

__all__ = [
    "DEFAULT_MAX_HEADER_BYTES",
    "check_header_size",
    "load_certificates",
    "parse_nginx_cert",
    "pem_certificates",
    "percent_decode",
]

#: Default bound on one forwarded header (all of its lines together), in characters.
DEFAULT_MAX_HEADER_BYTES = 16 * 1024

_BEGIN = "-----BEGIN CERTIFICATE-----"
_END = "-----END CERTIFICATE-----"
_PEM_SPACE = " \t\r\n"
# Not percent-encoded text as proxies emit it: raw whitespace or control characters, or a "%"
# without two hex digits after it.
_NOT_PERCENT_ENCODED = re.compile(r"[^!-~]|%(?![0-9A-Fa-f]{2})", re.ASCII)


def check_header_size(value: str, max_bytes: int, what: str) -> None:
    """Refuse over-long or non-ASCII header values before any parsing."""
    if len(value) > max_bytes:
        raise MalformedCredentials(f"{what} exceeds {max_bytes} bytes")
    if not value.isascii():
        raise MalformedCredentials(f"{what} contains non-ASCII characters")


def percent_decode(value: str, what: str) -> str:
    """Strictly decode URL-encoded ASCII text (``+`` stays a literal plus sign)."""
    if _NOT_PERCENT_ENCODED.search(value):
        raise MalformedCredentials(f"{what} is not valid percent-encoded text")
    if "%" not in value:
        return value
    out = unquote_to_bytes(value)  # every escape was checked above, so none is left as is
    if not out.isascii():
        raise MalformedCredentials(f"{what} decodes to non-ASCII bytes")
    return out.decode("ascii")


def load_certificates(ders: Sequence[bytes], what: str) -> list[x509.Certificate]:
    """Check that each DER blob is one bounded X.509 certificate; return them parsed."""
    if len(ders) > MAX_CHAIN_LENGTH:
        raise MalformedCredentials(
            f"{what} holds {len(ders)} certificates, limit {MAX_CHAIN_LENGTH}"
        )
    certs: list[x509.Certificate] = []
    for index, der in enumerate(ders):
        if len(der) > MAX_CERT_DER_BYTES:
            raise MalformedCredentials(
                f"{what}: certificate {index} exceeds {MAX_CERT_DER_BYTES} bytes"
            )
        try:
            certs.append(load_der_certificate(der))
        except ValueError:
            raise MalformedCredentials(
                f"{what}: certificate {index} is not an X.509 certificate"
            ) from None
    return certs


def _pem_blocks(text: str, what: str, max_certs: int) -> list[bytes]:
    if text.count("-----BEGIN") > max_certs:
        raise MalformedCredentials(f"{what} holds more than {max_certs} certificate(s)")
    blocks: list[bytes] = []
    pos = 0
    while True:
        begin = text.find("-----BEGIN", pos)
        if text[pos : len(text) if begin < 0 else begin].strip(_PEM_SPACE):
            raise MalformedCredentials(f"{what} has text outside its PEM blocks")
        if begin < 0:
            break
        if not text.startswith(_BEGIN, begin):
            raise MalformedCredentials(f"{what} holds a PEM block that is not a CERTIFICATE")
        end = text.find(_END, begin)
        if end < 0:
            raise MalformedCredentials(f"{what} has an unterminated PEM block")
        body = "".join(text[begin + len(_BEGIN) : end].split())
        try:
            blocks.append(base64.b64decode(body, validate=True))
        except (binascii.Error, ValueError):
            raise MalformedCredentials(f"{what} has invalid base64 in a PEM block") from None
        pos = end + len(_END)
    if not blocks:
        raise MalformedCredentials(f"{what} holds no certificate")
    return blocks


def pem_certificates(
    text: str, what: str, *, max_certs: int = MAX_CHAIN_LENGTH
) -> tuple[bytes, ...]:
    """The DER certificates of a PEM document, in order; only CERTIFICATE blocks and whitespace.

    Whitespace inside a block may be newlines, tabs or spaces (so nginx's ``$ssl_client_cert``,
    folded with LF + TAB or unfolded into spaces by the server, reads as a PEM file does).
    """
    ders = _pem_blocks(text, what, max_certs)
    load_certificates(ders, what)
    return tuple(ders)


def parse_nginx_cert(
    value: str,
    *,
    max_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    allow_unescaped_pem: bool = False,
) -> tuple[bytes, ...]:
    """Parse nginx's ``$ssl_client_escaped_cert``: URL-encoded PEM, leaf first. Returns DER.

    Several concatenated certificates are accepted (leaf first, at most ``MAX_CHAIN_LENGTH``).
    nginx's deprecated ``$ssl_client_cert`` form -- raw PEM, sent as an obsolete folded header
    (each line break LF + TAB) that h11-based servers unfold into spaces and gunicorn and
    httptools refuse -- is accepted only with ``allow_unescaped_pem=True``. Raises only
    :class:`~zerotrust.errors.MalformedCredentials`.
    """
    what = "nginx client certificate"
    check_header_size(value, max_bytes, what)
    text = value.strip(" \t")
    if not (allow_unescaped_pem and text.startswith("-----BEGIN ")):
        text = percent_decode(text, what)
    return pem_certificates(text, what)
