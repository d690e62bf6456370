"""Envoy's ``x-forwarded-client-cert`` (XFCC) header.

The value is a comma-separated list of *elements*, one per proxy hop; a proxy appends its
element at the end, so the **last** element comes from the proxy closest to the application.
Each element is a ``;``-separated list of ``Key=Value`` pairs. Keys are case-insensitive. A
value may be double-quoted, in which case ``,``, ``;`` and ``=`` inside it are literal; it ends
at a ``"`` after an even number of backslashes (none included), ``\\"`` stands for a quote and
every other backslash is kept as written (Envoy does not escape the RFC 2253 text of
``Subject``, whose ``\\\\`` is a backslash).

Known keys: ``By``, ``Hash``, ``Cert``, ``Chain``, ``Subject``, ``URI`` and ``DNS``; ``By``,
``URI`` and ``DNS`` may repeat, the others may not. Unknown keys are skipped (Envoy may add
keys in future releases). An empty value means "not present" (Envoy writes ``URI=`` for a
certificate without a URI SAN).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Final

from cryptography import x509

from zerotrust.authn._pem import (
    DEFAULT_MAX_HEADER_BYTES,
    check_header_size,
    load_certificates,
    pem_certificates,
    percent_decode,
)
from zerotrust.errors import MalformedCredentials

__all__ = ["MAX_XFCC_ELEMENTS", "MAX_XFCC_PAIRS", "XfccElement", "parse_xfcc"]

#: Default bound on the number of elements (proxy hops) in one header.
MAX_XFCC_ELEMENTS = 16
#: Bound on the number of ``Key=Value`` pairs in one element.
MAX_XFCC_PAIRS = 64

_KEY = re.compile(r"[ \t]*([A-Za-z0-9_-]+)=", re.ASCII)
_UNQUOTED = re.compile(r'[^,;"]*')
_SINGLE = frozenset({"hash", "cert", "chain", "subject"})
_WHAT = "x-forwarded-client-cert"


@dataclass(frozen=True, slots=True)
class XfccElement:
    """One XFCC element, as the proxy wrote it (quotes removed, ``Cert``/``Chain`` URL-decoded).

    ``cert_pem`` is the client's leaf certificate and ``chain_pem`` its whole chain *including*
    the leaf, both PEM text. ``uris`` and ``dns`` hold the non-empty ``URI`` and ``DNS``
    values; ``keys`` names every key the element carried (lower case), those written with an
    empty value included (Envoy writes ``URI=`` for a certificate without a URI SAN). Nothing
    here is verified; :meth:`der_chain` turns the element into the leaf-first DER chain to hand
    to :func:`~zerotrust.verify_x509_svid`.
    """

    by: tuple[str, ...] = ()
    hash: str | None = None
    cert_pem: str | None = field(default=None, repr=False)
    chain_pem: str | None = field(default=None, repr=False)
    subject: str | None = None
    uris: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    keys: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    @property
    def carries_certificate(self) -> bool:
        """Whether the element has a ``Cert`` or a ``Chain`` (else :meth:`der_chain` raises)."""
        return self.cert_pem is not None or self.chain_pem is not None

    def der_chain(self) -> tuple[bytes, ...]:
        """The forwarded chain as DER, leaf first, cross-checked against the element's fields.

        Uses ``Chain`` when present (its first certificate must equal ``Cert`` when both are
        given), else ``Cert``. When ``Hash`` is present it must be the SHA-256 (hex) of the leaf.
        When ``URI`` is present (a value in ``uris``, or ``"uri"`` in ``keys``) the non-empty
        values must equal the leaf's URI SANs, in any order (none for a lone empty ``URI=``);
        the same holds for ``DNS`` and the leaf's DNS SANs. Raises
        :class:`~zerotrust.errors.MalformedCredentials` on any inconsistency.
        """
        leaf_der: bytes | None = None
        if self.cert_pem is not None:
            leaf_der = pem_certificates(self.cert_pem, "XFCC Cert", max_certs=1)[0]
        if self.chain_pem is not None:
            chain = pem_certificates(self.chain_pem, "XFCC Chain")
            if leaf_der is not None and not hmac.compare_digest(chain[0], leaf_der):
                raise MalformedCredentials("XFCC Cert is not the first certificate of Chain")
        elif leaf_der is not None:
            chain = (leaf_der,)
        else:
            raise MalformedCredentials("XFCC element carries no certificate (Cert or Chain)")
        if self.hash is not None:
            expected = hashlib.sha256(chain[0]).hexdigest().encode("ascii")
            given = self.hash.lower().encode("utf-8", "replace")
            if not hmac.compare_digest(given, expected):
                raise MalformedCredentials("XFCC Hash does not match the forwarded certificate")
        check_uris = bool(self.uris) or "uri" in self.keys
        check_dns = bool(self.dns) or "dns" in self.keys
        if check_uris or check_dns:
            sans = _sans(load_certificates(chain[:1], "XFCC Cert")[0])
            if check_uris and sorted(self.uris) != sorted(
                sans.get_values_for_type(x509.UniformResourceIdentifier)
            ):
                raise MalformedCredentials("XFCC URI does not match the certificate's URI SANs")
            if check_dns and sorted(self.dns) != sorted(sans.get_values_for_type(x509.DNSName)):
                raise MalformedCredentials("XFCC DNS does not match the certificate's DNS SANs")
        return chain


def _sans(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return x509.SubjectAlternativeName([])
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
        raise MalformedCredentials("forwarded certificate has malformed extensions") from None


# A quoted value's body and its closing quote: runs without a quote or a backslash, each
# backslash taking the character after it (so a quote ends the value after an even number of
# backslashes). Written unrolled, one way to match any text: linear, in C, whatever a caller
# sends (a loop per escaped quote cost a millisecond for a header of them).
_QUOTED_BODY: Final = re.compile(r'([^"\\]*(?:\\.[^"\\]*)*)"', re.DOTALL)


def _quoted(value: str, start: int) -> tuple[str, int]:
    """The quoted string opening at ``start``; returns it unescaped and the index after it.

    It ends at the first ``"`` after an even number of backslashes (none included): Envoy
    writes ``Subject`` in RFC 2253 form without escaping it again, so a subject that ends in a
    backslash (RFC 2253: ``\\\\``) arrives as ``Subject="CN=build\\\\"``. A quote after an odd
    number is escaped; only ``\\"`` is unescaped, every other backslash is kept as written.
    """
    found = _QUOTED_BODY.match(value, start + 1)
    if found is None:
        raise MalformedCredentials(f"{_WHAT} has an unterminated quoted value")
    return found.group(1).replace('\\"', '"'), found.end()


def _split(value: str, max_elements: int) -> list[list[tuple[str, str]]]:
    """Split the header into elements of (lower-case key, unquoted value) pairs."""
    elements: list[list[tuple[str, str]]] = []
    pairs: list[tuple[str, str]] = []
    pos, size = 0, len(value)
    while True:
        match = _KEY.match(value, pos)
        if match is None:
            raise MalformedCredentials(f"{_WHAT} has a pair that is not Key=Value")
        pos = match.end()
        if pos < size and value[pos] == '"':
            text, pos = _quoted(value, pos)
            while pos < size and value[pos] in " \t":
                pos += 1
            if pos < size and value[pos] not in ",;":
                raise MalformedCredentials(f"{_WHAT} has text after a closing quote")
        else:
            unquoted = _UNQUOTED.match(value, pos)
            assert unquoted is not None  # the pattern matches the empty string
            pos = unquoted.end()
            if pos < size and value[pos] == '"':
                raise MalformedCredentials(f"{_WHAT} has a quote inside an unquoted value")
            text = unquoted.group().strip(" \t")
        pairs.append((match.group(1).lower(), text))
        if len(pairs) > MAX_XFCC_PAIRS:
            raise MalformedCredentials(f"{_WHAT} element has more than {MAX_XFCC_PAIRS} pairs")
        if pos >= size or value[pos] == ",":
            elements.append(pairs)
            pairs = []
            if pos >= size:
                return elements
            if len(elements) >= max_elements:
                raise MalformedCredentials(f"{_WHAT} has more than {max_elements} elements")
        pos += 1


def _element(pairs: list[tuple[str, str]]) -> XfccElement:
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {"by": [], "uri": [], "dns": []}
    for key, text in pairs:
        if key in _SINGLE:
            if key in single:
                raise MalformedCredentials(f"{_WHAT} element repeats the {key!r} key")
            single[key] = text
        elif key in multi and text:
            multi[key].append(text)
        # Unknown keys are skipped: Envoy may add keys in later releases.
    cert = single.get("cert") or None
    chain = single.get("chain") or None
    return XfccElement(
        by=tuple(multi["by"]),
        hash=single.get("hash") or None,
        cert_pem=percent_decode(cert, "XFCC Cert") if cert else None,
        chain_pem=percent_decode(chain, "XFCC Chain") if chain else None,
        subject=single.get("subject") or None,
        uris=tuple(multi["uri"]),
        dns=tuple(multi["dns"]),
        keys=frozenset(key for key, _ in pairs),
    )


def parse_xfcc(
    value: str,
    *,
    max_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    max_elements: int = MAX_XFCC_ELEMENTS,
) -> tuple[XfccElement, ...]:
    """Parse one ``x-forwarded-client-cert`` value into its elements, in header order.

    The last element was appended by the proxy closest to the application. Bounded by
    ``max_bytes`` (whole value), ``max_elements`` and :data:`MAX_XFCC_PAIRS`; raises only
    :class:`~zerotrust.errors.MalformedCredentials`.
    """
    check_header_size(value, max_bytes, _WHAT)
    return tuple(_element(pairs) for pairs in _split(value, max_elements))
