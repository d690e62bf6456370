"""RFC 9440 ``Client-Cert`` and ``Client-Cert-Chain`` (HTTP structured fields, RFC 8941/9651).

``Client-Cert`` is an sf-item: one byte sequence, ``:BASE64(DER):``. ``Client-Cert-Chain`` is
an sf-list of byte sequences (the intermediates, *not* the leaf). Parameters on items are valid
structured-field syntax and are parsed, then ignored. Only as much of the structured-field
grammar as these two fields need is implemented; everything else is refused.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from urllib.parse import unquote_to_bytes

from zerotrust.authn._pem import DEFAULT_MAX_HEADER_BYTES, check_header_size, load_certificates
from zerotrust.errors import MalformedCredentials
from zerotrust.x509._certs import MAX_CHAIN_LENGTH

__all__ = ["parse_client_cert", "parse_client_cert_chain"]

_BASE64 = re.compile(r"[A-Za-z0-9+/=]*", re.ASCII)
_PARAM_KEY = re.compile(r"[a-z*][a-z0-9_.*-]*", re.ASCII)
_NUMBER = re.compile(r"-?(?:[0-9]{1,12}\.[0-9]{1,3}|[0-9]{1,15})(?![0-9.])", re.ASCII)
_STRING = re.compile(r'"(?:[ !#-\[\]-~]|\\["\\])*"', re.ASCII)
_DISPLAY_STRING = re.compile(r'%"(?:[ !#$&-\[\]-~]|%[0-9a-f]{2})*"', re.ASCII)
_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+.^_`|~0-9A-Za-z:/-]*", re.ASCII)
_BOOLEAN = re.compile(r"\?[01]", re.ASCII)
_INTEGER = re.compile(r"-?[0-9]{1,15}(?![0-9.])", re.ASCII)
_BARE_ITEMS = {'"': _STRING, "?": _BOOLEAN, "%": _DISPLAY_STRING}
_OWS = " \t"


def _byte_sequence(text: str, pos: int, what: str) -> tuple[bytes, int]:
    if pos >= len(text) or text[pos] != ":":
        raise MalformedCredentials(f"{what} is not a structured-field byte sequence")
    end = text.find(":", pos + 1)
    if end < 0:
        raise MalformedCredentials(f"{what} has an unterminated byte sequence")
    content = text[pos + 1 : end]
    if not _BASE64.fullmatch(content):
        raise MalformedCredentials(f"{what} has characters outside base64")
    # RFC 8941 4.2.7: padding is optional for recipients (missing "=" is synthesized), but "="
    # may only end the content and never beyond what the final quantum needs (RFC 4648 4).
    stripped = content.rstrip("=")
    if (
        "=" in stripped
        or len(content) - len(stripped) > -len(stripped) % 4
        or len(stripped) % 4 == 1
    ):
        raise MalformedCredentials(f"{what} has invalid base64")
    try:
        data = base64.b64decode(stripped + "=" * (-len(stripped) % 4), validate=True)
    except (binascii.Error, ValueError):  # pragma: no cover - the checks above rule it out
        raise MalformedCredentials(f"{what} has invalid base64") from None
    return data, end + 1


def _skip_bare_item(text: str, pos: int, what: str) -> int:
    """Skip one parameter value (any bare item: number, string, token, byte sequence, boolean,
    date or display string) and return the index after it."""
    first = text[pos : pos + 1]
    if first == ":":
        return _byte_sequence(text, pos, what)[1]
    if first == "@":  # date (RFC 9651)
        pattern, pos = _INTEGER, pos + 1
    elif first == "-" or first.isdigit():
        pattern = _NUMBER
    else:
        pattern = _BARE_ITEMS.get(first, _TOKEN)
    match = pattern.match(text, pos)
    if match is None or (pattern is _DISPLAY_STRING and not _utf8(match.group())):
        raise MalformedCredentials(f"{what} has an invalid parameter value")
    return match.end()


def _utf8(display: str) -> bool:
    """Whether a display string's percent-encoded bytes are UTF-8 (RFC 9651 4.2.10)."""
    try:
        unquote_to_bytes(display[2:-1]).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _skip_parameters(text: str, pos: int, what: str) -> int:
    while pos < len(text) and text[pos] == ";":
        pos += 1
        while pos < len(text) and text[pos] == " ":
            pos += 1
        key = _PARAM_KEY.match(text, pos)
        if key is None:
            raise MalformedCredentials(f"{what} has an invalid parameter name")
        pos = key.end()
        if pos < len(text) and text[pos] == "=":
            pos = _skip_bare_item(text, pos + 1, what)
    return pos


def parse_client_cert(value: str, *, max_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> bytes:
    """Parse an RFC 9440 ``Client-Cert`` value (``:BASE64-DER:``) into the leaf's DER bytes.

    Parameters after the byte sequence are ignored. Raises only
    :class:`~zerotrust.errors.MalformedCredentials`.
    """
    what = "Client-Cert"
    check_header_size(value, max_bytes, what)
    text = value.strip(_OWS)
    der, pos = _byte_sequence(text, 0, what)
    if _skip_parameters(text, pos, what) != len(text):
        raise MalformedCredentials(f"{what} is not a single byte sequence")
    load_certificates([der], what)
    return der


def parse_client_cert_chain(
    value: str | Sequence[str], *, max_bytes: int = DEFAULT_MAX_HEADER_BYTES
) -> tuple[bytes, ...]:
    """Parse an RFC 9440 ``Client-Cert-Chain`` list into DER certificates, in order.

    ``value`` may be one string or every line of the header, which are joined with ``", "``
    (RFC 9110 field-line combination) before parsing. Parameters on members are ignored; inner
    lists and non-byte-sequence members are refused. Raises only
    :class:`~zerotrust.errors.MalformedCredentials`.
    """
    what = "Client-Cert-Chain"
    joined = value if isinstance(value, str) else ", ".join(value)
    check_header_size(joined, max_bytes, what)
    text = joined.strip(_OWS)
    ders: list[bytes] = []
    pos = 0
    while pos < len(text):
        if len(ders) >= MAX_CHAIN_LENGTH:
            raise MalformedCredentials(f"{what} holds more than {MAX_CHAIN_LENGTH} certificates")
        der, pos = _byte_sequence(text, pos, what)
        pos = _skip_parameters(text, pos, what)
        ders.append(der)
        while pos < len(text) and text[pos] in _OWS:
            pos += 1
        if pos == len(text):
            break
        if text[pos] != ",":
            raise MalformedCredentials(f"{what} members must be separated by commas")
        pos += 1
        while pos < len(text) and text[pos] in _OWS:
            pos += 1
        if pos == len(text):
            raise MalformedCredentials(f"{what} ends with a comma")
    load_certificates(ders, what)
    return tuple(ders)
