"""Small, private helpers shared by the X.509 modules."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.utils import CryptographyDeprecationWarning

from zerotrust._files import read_regular_file
from zerotrust.errors import MalformedCertificate

__all__ = [
    "MAX_CERT_DER_BYTES",
    "MAX_CHAIN_LENGTH",
    "PARSE_ERRORS",
    "PrivateKey",
    "certs_to_pem",
    "complete_pem_blocks",
    "encrypted_pem_key",
    "fingerprint",
    "load_der_certificate",
    "load_der_chain",
    "load_pem_certs",
    "read_bounded",
    "signing_flags",
]

#: Private key types usable for SVIDs.
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

#: A peer may present at most this many certificates (leaf + intermediates).
MAX_CHAIN_LENGTH = 10
#: No single certificate may be larger than this.
MAX_CERT_DER_BYTES = 64 * 1024
#: Upper bound for any PEM document we read (bundles with many authorities included).
MAX_PEM_BYTES = 4 * 1024 * 1024

#: A PEM boundary line's marker: ``-----BEGIN LABEL-----`` or ``-----END LABEL-----``.
_PEM_MARKER = re.compile(rb"-----(BEGIN|END) ([^-\r\n]{0,64})-----")

#: What ``cryptography`` raises for a certificate or key it cannot read: not only
#: ``ValueError`` (an unknown version is ``InvalidVersion``, an unknown curve
#: ``UnsupportedAlgorithm``, and where warnings are errors, what it warns about while parsing,
#: a serial number that is not positive, is ``CryptographyDeprecationWarning``).
PARSE_ERRORS = (
    ValueError,
    TypeError,
    x509.InvalidVersion,
    UnsupportedAlgorithm,
    CryptographyDeprecationWarning,
)


#: id-ecPublicKey (RFC 5480 2.1.1), the content octets of its OID.
_EC_PUBLIC_KEY: Final = bytes.fromhex("2a8648ce3d0201")


def _checked(cert: x509.Certificate) -> x509.Certificate:
    """``cert``, once its public key is known to be readable: a key cryptography cannot load
    (a point off its curve, an unknown algorithm) is refused with the certificate, not later
    by whichever check first asks for the key. So is a serial number that is not positive
    (RFC 5280 4.1.2.2): cryptography parses it with a deprecation warning, which becomes an
    error where warnings are errors and in its later releases; Go's parser refuses negative
    ones. Refused here, it is refused the same way whatever the warnings filter says. And so
    is an EC key whose curve is written as explicit parameters rather than named (RFC 5480
    2.1.1: they MUST NOT be used; Go's parser refuses them), which cryptography reads as the
    named curve they match. And so is a name that cannot be decoded (:func:`check_names`)."""
    if cert.serial_number <= 0:
        raise ValueError("the certificate's serial number is not positive")
    check_names(cert)
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey) and not _named_curve(cert.tbs_certificate_bytes):
        raise ValueError("the certificate's EC key does not name its curve")
    return cert


def check_names(cert: x509.Certificate) -> None:
    """Raise ``ValueError`` unless the subject and issuer names can be decoded.

    cryptography decodes names when they are first read, so a certificate whose name is not
    valid in its string type (a UTF8String that is not UTF-8) loads. OpenSSL and Go refuse
    it: read later (by OpenSSL's trust store, say, which is given every authority at once),
    it would fail a step that has nothing to do with it."""
    if cert.subject is None or cert.issuer is None:  # pragma: no cover - never None
        raise ValueError("the certificate has no name")


def _tlv(der: bytes, pos: int) -> tuple[int, int, int]:
    """The tag, content start and end of the DER element at ``pos`` (of a certificate
    cryptography has parsed already: well formed)."""
    tag, first = der[pos], der[pos + 1]
    start, size = pos + 2, first
    if first & 0x80:
        count = first & 0x7F
        start += count
        size = int.from_bytes(der[pos + 2 : start], "big")
    return tag, start, start + size


def _spki_algorithm(tbs: bytes) -> tuple[bytes, int]:
    """The algorithm OID (its content octets) of the subjectPublicKeyInfo of ``tbs``, and the
    tag of the parameters that follow it (0 when there are none)."""
    _, pos, _ = _tlv(tbs, 0)
    if _tlv(tbs, pos)[0] == 0xA0:  # the version, explicit [0]
        pos = _tlv(tbs, pos)[2]
    for _ in range(5):  # serial, signature, issuer, validity, subject
        pos = _tlv(tbs, pos)[2]
    _, spki, _ = _tlv(tbs, pos)
    _, algorithm, algorithm_end = _tlv(tbs, spki)
    _, oid, oid_end = _tlv(tbs, algorithm)
    return tbs[oid:oid_end], tbs[oid_end] if oid_end < algorithm_end else 0


def _named_curve(tbs: bytes) -> bool:
    """Whether the subjectPublicKeyInfo of ``tbs`` (an EC key's) names its curve by OID."""
    return _spki_algorithm(tbs)[1] == 0x06  # ECParameters: namedCurve OBJECT IDENTIFIER


def _explicit_curve(tbs: bytes) -> bool:
    """Whether the subjectPublicKeyInfo of ``tbs`` is an EC key (id-ecPublicKey) whose curve
    is not named: explicit parameters (or none), which RFC 5480 2.1.1 forbids."""
    oid, parameters = _spki_algorithm(tbs)
    return oid == _EC_PUBLIC_KEY and parameters != 0x06


def load_der_certificate(der: bytes) -> x509.Certificate:
    """One DER certificate with a readable public key; raises ``ValueError`` otherwise."""
    try:
        return _checked(x509.load_der_x509_certificate(der))
    except PARSE_ERRORS as exc:
        raise ValueError("not a valid DER certificate") from exc


def signing_flags(cert: x509.Certificate) -> tuple[bool, bool]:
    """Whether ``cert`` is a CA (basic constraints) and may sign certificates (``keyCertSign``;
    false without key usage). Raises ``ValueError`` when its extensions cannot be read at all
    (malformed, duplicated, or a name form cryptography does not know)."""
    try:
        extensions = cert.extensions
    except Exception as exc:  # cryptography has several types for this
        raise ValueError("the certificate's extensions cannot be read") from exc
    try:
        ca = bool(extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        ca = False
    try:
        sign = bool(extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign)
    except x509.ExtensionNotFound:
        sign = False
    return ca, sign


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER encoding, lowercase hex: how certificates are named in logs."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def load_der_chain(chain: Sequence[bytes | x509.Certificate]) -> list[x509.Certificate]:
    """Parse a peer-presented chain (leaf first), bounding its size; never raises another type."""
    if not chain:
        raise MalformedCertificate("no certificate presented")
    if len(chain) > MAX_CHAIN_LENGTH:
        raise MalformedCertificate(f"chain has {len(chain)} certificates, limit {MAX_CHAIN_LENGTH}")
    certs: list[x509.Certificate] = []
    for index, item in enumerate(chain):
        if isinstance(item, x509.Certificate):
            # parsed by the caller: its serial number and its EC key's curve are checked as
            # the DER loader checks them (a key that cannot be read at all is left to the
            # checks that read it)
            try:
                serial = item.serial_number
                check_names(item)
            except PARSE_ERRORS as exc:
                raise MalformedCertificate(f"certificate {index} is not valid DER") from exc
            if serial <= 0:
                raise MalformedCertificate(
                    f"certificate {index} has a serial number that is not positive"
                )
            try:
                key = item.public_key()
            except PARSE_ERRORS:  # older cryptography releases cannot read explicit parameters
                key = None
            if (key is None or isinstance(key, ec.EllipticCurvePublicKey)) and _explicit_curve(
                item.tbs_certificate_bytes
            ):
                raise MalformedCertificate(f"certificate {index}'s EC key does not name its curve")
            certs.append(item)
            continue
        if not isinstance(item, (bytes, bytearray, memoryview)):
            raise MalformedCertificate(f"certificate {index} is not DER bytes")
        if len(item) > MAX_CERT_DER_BYTES:
            raise MalformedCertificate(f"certificate {index} exceeds {MAX_CERT_DER_BYTES} bytes")
        try:
            certs.append(load_der_certificate(bytes(item)))
        except ValueError as exc:
            raise MalformedCertificate(f"certificate {index} is not valid DER") from exc
    return certs


def load_pem_certs(data: bytes | str, *, what: str = "certificate") -> list[x509.Certificate]:
    """Parse one or more PEM certificates, bounded in size.

    Every ``BEGIN`` line must have its ``END`` line and nothing but whitespace may follow the
    last one: a file caught half-written (a chain cut after its leaf) is refused, never read
    as a shorter chain."""
    raw = data.encode("ascii", "replace") if isinstance(data, str) else bytes(data)
    if len(raw) > MAX_PEM_BYTES:
        raise ValueError(f"{what} PEM exceeds {MAX_PEM_BYTES} bytes")
    if not complete_pem_blocks(raw):
        raise ValueError(f"{what} PEM is incomplete (a PEM block without its END line)")
    try:
        return [_checked(cert) for cert in x509.load_pem_x509_certificates(raw)]
    except PARSE_ERRORS as exc:
        raise ValueError(f"{what} PEM could not be parsed") from exc


def complete_pem_blocks(raw: bytes) -> bool:
    """Whether every ``BEGIN`` line of ``raw`` is closed by its own whole ``END`` line before
    the next block starts, and only whitespace follows the last one (a file cut inside its
    last ``END`` line is incomplete too)."""
    opened: bytes | None = None
    end = -1
    for marker in _PEM_MARKER.finditer(raw):
        kind, label = marker.groups()
        if kind == b"BEGIN":
            if opened is not None:
                return False
            opened = label
        else:
            if opened != label:
                return False
            opened, end = None, marker.end()
    return opened is None and not raw[end:].strip() if end >= 0 else b"-----BEGIN" not in raw


def read_bounded(path: Path, limit: int = MAX_PEM_BYTES, *, what: str = "file") -> bytes:
    """At most ``limit`` bytes of ``path`` (a larger file is refused without reading it all).

    Only a regular file is read: a FIFO, device or directory raises
    :class:`~zerotrust._files.NotARegularFile` (an ``OSError``) without blocking."""
    data = read_regular_file(path, limit)
    if len(data) > limit:
        raise ValueError(f"{what} exceeds {limit} bytes")
    return data


def encrypted_pem_key(raw: bytes) -> bool:
    """Whether ``raw`` holds a password-protected PEM private key (PKCS#8 ``ENCRYPTED PRIVATE
    KEY``, or a traditional OpenSSL key with a ``Proc-Type: 4,ENCRYPTED`` header)."""
    return b"BEGIN ENCRYPTED PRIVATE KEY-----" in raw or b"Proc-Type: 4,ENCRYPTED" in raw


def certs_to_pem(certs: Iterable[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
