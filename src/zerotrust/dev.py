"""An embedded development certificate authority: SPIFFE on one laptop, no infrastructure.

>>> from zerotrust.dev import DevCA
>>> ca = DevCA.create("example.org")
>>> svid = ca.issue_svid("spiffe://example.org/ns/shop/sa/web")
>>> str(svid.spiffe_id)
'spiffe://example.org/ns/shop/sa/web'

The CA is for development and tests. Its keys are ordinary files; use SPIRE or another real CA in
production.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from zerotrust._clock import SYSTEM_CLOCK, Clock
from zerotrust.errors import ConfigurationError, InvalidSpiffeId
from zerotrust.identity import SpiffeId, TrustDomain
from zerotrust.x509._certs import PrivateKey, encrypted_pem_key, load_pem_certs, read_bounded
from zerotrust.x509.bundle import TrustBundle
from zerotrust.x509.svid import X509Svid, write_file_atomic

__all__ = ["DevCA", "KeyType"]

#: The key types a :class:`DevCA` can generate: EC on P-256 or P-384, or RSA of 2048 or 3072 bits.
KeyType = Literal["ec-p256", "ec-p384", "rsa-2048", "rsa-3072"]

_FILES = {
    "meta": "ca.json",
    "root_cert": "root.crt.pem",
    "root_key": "root.key.pem",
    "int_cert": "intermediate.crt.pem",
    "int_key": "intermediate.key.pem",
    "bundle": "bundle.pem",
}


def generate_key(key_type: KeyType = "ec-p256") -> PrivateKey:
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type in ("rsa-2048", "rsa-3072"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    raise ConfigurationError(f"unknown key type {key_type!r}")


def _hash_for(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384 | None:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def _serial() -> int:
    return secrets.randbits(127) | 1  # positive, at most 16 bytes, never zero


#: The longest lifetime this CA gives anything (its own certificates included).
MAX_TTL = _dt.timedelta(days=36500)
#: A DNS label (RFC 1035 2.3.4, RFC 5890 A-labels for internationalized names).
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _dns_names(values: object) -> tuple[str, ...]:
    """``dns_names`` as SANs: a list of host names (``*.`` may start one: a wildcard)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ConfigurationError("dns_names must be a list of host names, not one string")
    for name in values:
        if not isinstance(name, str) or not name.isascii() or len(name) > 253:
            raise ConfigurationError(
                "dns_names holds something that is no ASCII host name (write"
                " internationalized names as xn-- A-labels)"
            )
        labels = name.split(".")
        if labels[0] == "*" and len(labels) > 2:  # *.example.org, never *.org or *
            labels = labels[1:]
        if not all(_DNS_LABEL.fullmatch(label) for label in labels):
            raise ConfigurationError(f"dns_names: {name!r} is not a valid host name")
        if labels[-1].isdigit():  # 127.0.0.1: RFC 1123 2.1, no host name is dotted-decimal
            raise ConfigurationError(
                f"dns_names: {name!r} is an IP address, which clients never match against a"
                " DNS name: connect by host name (localhost)"
            )
    return tuple(values)


def _seconds(ttl: float | _dt.timedelta) -> _dt.timedelta:
    if isinstance(ttl, _dt.timedelta):
        delta = ttl
    elif isinstance(ttl, int) and not isinstance(ttl, bool):  # any size: compared, not converted
        delta = _dt.timedelta(seconds=min(max(ttl, -1), int(MAX_TTL.total_seconds()) + 1))
    elif isinstance(ttl, float) and math.isfinite(ttl):
        delta = _dt.timedelta(seconds=min(max(ttl, -1.0), MAX_TTL.total_seconds() + 1))
    else:
        raise ConfigurationError("ttl must be a finite number of seconds or a timedelta")
    if delta <= _dt.timedelta(0):
        raise ConfigurationError("ttl must be positive")
    if delta > MAX_TTL:
        raise ConfigurationError(f"ttl must be at most {MAX_TTL.days} days")
    return delta


@final
class DevCA:
    """A root CA (and optional intermediate) for one trust domain, issuing short-lived SVIDs."""

    def __init__(
        self,
        trust_domain: TrustDomain,
        root_cert: x509.Certificate,
        root_key: PrivateKey,
        *,
        intermediate: tuple[x509.Certificate, PrivateKey] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        _check_pair("root", root_cert, root_key, root_cert)
        _check_trust_domain("root", root_cert, trust_domain)
        if intermediate is not None:
            _check_pair("intermediate", intermediate[0], intermediate[1], root_cert)
            _check_trust_domain("intermediate", intermediate[0], trust_domain)
        self._trust_domain = trust_domain
        self._root_cert = root_cert
        self._root_key = root_key
        self._intermediate = intermediate
        self._clock = clock

    # --- creation ---------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        trust_domain: TrustDomain | str,
        *,
        intermediate: bool = False,
        key_type: KeyType = "ec-p256",
        ttl: float | _dt.timedelta = _dt.timedelta(days=365),
        clock: Clock = SYSTEM_CLOCK,
    ) -> DevCA:
        """A new root for ``trust_domain`` (plus an intermediate CA when asked)."""
        td = (
            trust_domain
            if isinstance(trust_domain, TrustDomain)
            else TrustDomain.parse(trust_domain)
        )
        now = clock.now()
        root_key = generate_key(key_type)
        name = _ca_name(td, "root")
        root = _ca_builder(
            name, name, root_key.public_key(), now, _seconds(ttl), td=td, path_length=None
        )
        root_cert = root.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
            critical=False,
        ).sign(root_key, _hash_for(root_key))
        inter: tuple[x509.Certificate, PrivateKey] | None = None
        if intermediate:
            inter_key = generate_key(key_type)
            inter_name = _ca_name(td, "intermediate")
            inter_cert = (
                _ca_builder(
                    inter_name,
                    name,
                    inter_key.public_key(),
                    now,
                    _seconds(ttl),
                    td=td,
                    path_length=0,
                )
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
                    critical=False,
                )
                .sign(root_key, _hash_for(root_key))
            )
            inter = (inter_cert, inter_key)
        return cls(td, root_cert, root_key, intermediate=inter, clock=clock)

    # --- accessors --------------------------------------------------------------------------

    @property
    def trust_domain(self) -> TrustDomain:
        """The trust domain this CA issues SVIDs in."""
        return self._trust_domain

    @property
    def root_certificate(self) -> x509.Certificate:
        """The self-signed root CA certificate: the one authority of :attr:`bundle`."""
        return self._root_cert

    @property
    def bundle(self) -> TrustBundle:
        """The trust bundle peers need to verify this CA's SVIDs (the root only)."""
        return TrustBundle(self._trust_domain, [self._root_cert])

    def _signer(self) -> tuple[x509.Certificate, PrivateKey, list[x509.Certificate]]:
        if self._intermediate is not None:
            cert, key = self._intermediate
            return cert, key, [cert]
        return self._root_cert, self._root_key, []

    # --- issuing ----------------------------------------------------------------------------

    def issue_svid(
        self,
        spiffe_id: SpiffeId | str,
        *,
        ttl: float | _dt.timedelta = _dt.timedelta(hours=1),
        dns_names: Sequence[str] = (),
        key_type: KeyType = "ec-p256",
    ) -> X509Svid:
        """Issue an X509-SVID for ``spiffe_id`` (which must belong to this CA's trust domain).

        The SVID never outlives the certificates that issue it: a ``ttl`` reaching past them is
        cut to their end, as SPIRE does."""
        sid = spiffe_id if isinstance(spiffe_id, SpiffeId) else SpiffeId.parse(spiffe_id)
        if sid.trust_domain != self._trust_domain:
            raise ConfigurationError(f"{sid} is not in trust domain {self._trust_domain}")
        if not sid.path:
            raise InvalidSpiffeId("root_id", "an SVID needs a SPIFFE ID with a path")
        now = self._clock.now()
        signer, _, intermediates = self._signer()
        issuers = (signer, self._root_cert, *intermediates)
        ca_end = min(cert.not_valid_after_utc for cert in issuers)
        if ca_end <= now:
            raise ConfigurationError("the CA's certificates have expired: create a new CA")
        ca_start = max(cert.not_valid_before_utc for cert in issuers)
        if ca_start > now:
            raise ConfigurationError("the CA's certificates are not valid yet: is the clock right?")
        chain, key = self.issue_unchecked_leaf(
            uri_sans=[str(sid)],
            dns_names=_dns_names(dns_names),
            not_before=max(now - _dt.timedelta(seconds=30), ca_start),
            not_after=min(now + _seconds(ttl), ca_end),
            key_type=key_type,
        )
        return X509Svid(chain, key)

    def issue_unchecked_leaf(
        self,
        *,
        uri_sans: Sequence[str],
        not_before: _dt.datetime,
        not_after: _dt.datetime,
        dns_names: Sequence[str] = (),
        ca: bool = False,
        key_usage: x509.KeyUsage | None = None,
        extended_key_usage: Sequence[x509.ObjectIdentifier] | None = (
            ExtendedKeyUsageOID.SERVER_AUTH,
            ExtendedKeyUsageOID.CLIENT_AUTH,
        ),
        key_type: KeyType = "ec-p256",
    ) -> tuple[list[x509.Certificate], PrivateKey]:
        """Sign a leaf with **no** SVID profile checks, to test that peers refuse bad ones.

        Returns the leaf-first chain and the key. Never use this to issue real identities.
        """
        signer_cert, signer_key, intermediates = self._signer()
        key = generate_key(key_type)
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "zerotrust dev SVID")])
            )
            .issuer_name(signer_cert.subject)
            .public_key(key.public_key())
            .serial_number(_serial())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(
                key_usage
                or x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                    data_encipherment=False,
                    key_agreement=isinstance(key, ec.EllipticCurvePrivateKey),
                    key_cert_sign=ca,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()),
                critical=False,
            )
        )
        if extended_key_usage:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage(list(extended_key_usage)), critical=False
            )
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uri_sans]
        names += [x509.DNSName(d) for d in dns_names]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(signer_key, _hash_for(signer_key))
        return [cert, *intermediates], key

    # --- persistence ------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the CA to ``directory`` (created 0700; private keys 0600) and return it. An
        existing directory must be the user's and writable by nobody else: another user who
        could swap files in it could swap the CA itself."""
        path = Path(directory)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        _check_private(path)
        pem = serialization.Encoding.PEM

        def key_bytes(key: PrivateKey) -> bytes:
            return key.private_bytes(
                pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )

        write_file_atomic(path / _FILES["root_cert"], self._root_cert.public_bytes(pem), mode=0o644)
        write_file_atomic(path / _FILES["root_key"], key_bytes(self._root_key), mode=0o600)
        write_file_atomic(path / _FILES["bundle"], self.bundle.to_pem(), mode=0o644)
        if self._intermediate is not None:
            cert, key = self._intermediate
            write_file_atomic(path / _FILES["int_cert"], cert.public_bytes(pem), mode=0o644)
            write_file_atomic(path / _FILES["int_key"], key_bytes(key), mode=0o600)
        meta = {
            "trust_domain": self._trust_domain.name,
            "intermediate": self._intermediate is not None,
        }
        write_file_atomic(
            path / _FILES["meta"], json.dumps(meta, indent=2).encode() + b"\n", mode=0o644
        )
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, clock: Clock = SYSTEM_CLOCK) -> DevCA:
        """Load a CA written by :meth:`save`; raises ``ConfigurationError`` naming what is wrong
        (a directory other users may write to, or own, is refused: they could swap the CA)."""
        path = Path(directory)
        if path.is_dir():
            _check_private(path)
        try:
            meta = json.loads(read_bounded(path / _FILES["meta"]))
            td = TrustDomain.parse(meta["trust_domain"])
            root_cert = _one_certificate(path / _FILES["root_cert"])
            root_key = _load_key(path / _FILES["root_key"])
            inter = None
            if meta.get("intermediate"):
                inter_cert = _one_certificate(path / _FILES["int_cert"])
                inter = (inter_cert, _load_key(path / _FILES["int_key"]))
        except FileNotFoundError as exc:
            raise ConfigurationError(
                f"not a zerotrust CA directory: missing {Path(exc.filename).name}"
            ) from None
        except OSError as exc:
            name = f" {Path(exc.filename).name}:" if exc.filename else ""
            raise ConfigurationError(
                f"cannot load CA from {path}:{name} {exc.strerror or type(exc).__name__}"
            ) from None
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise ConfigurationError(f"cannot load CA from {path}: {type(exc).__name__}") from None
        return cls(td, root_cert, root_key, intermediate=inter, clock=clock)


def _one_certificate(path: Path) -> x509.Certificate:
    """The one certificate of a PEM file, read as every certificate is (its key readable, its
    serial number positive); raises ``ValueError`` otherwise."""
    certs = load_pem_certs(read_bounded(path))
    if len(certs) != 1:
        raise ValueError(f"{path.name} holds {len(certs)} certificates, not one")
    return certs[0]


def _check_pair(
    name: str, cert: x509.Certificate, key: PrivateKey, issuer: x509.Certificate
) -> None:
    """The CA certificate ``cert`` must hold ``key``'s public key and be signed by ``issuer``
    (a mismatched pair, say from an interrupted write, would issue SVIDs nobody can verify)."""
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise ConfigurationError(f"the {name} CA's private key does not match its certificate")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        cert.verify_directly_issued_by(issuer)
    except (
        x509.ExtensionNotFound,
        x509.DuplicateExtension,
        x509.UnsupportedGeneralNameType,
        ValueError,
        TypeError,
        InvalidSignature,
    ):  # extensions cryptography cannot read (a duplicate, an x400Address) are no CA's
        constraints = None
    if constraints is None or not constraints.ca:
        raise ConfigurationError(
            f"the {name} CA's certificate is not a CA certificate issued by the root"
        )
    # X509-SVID 4.3: a signing certificate sets keyCertSign (every verifier refuses SVIDs
    # issued by one that does not, RFC 5280 4.2.1.3)
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        signs = usage.key_cert_sign
    except (x509.ExtensionNotFound, ValueError):
        signs = False
    if not signs:
        raise ConfigurationError(
            f"the {name} CA's certificate cannot sign certificates (no keyUsage keyCertSign)"
        )


def _check_trust_domain(name: str, cert: x509.Certificate, trust_domain: TrustDomain) -> None:
    """A CA certificate that names a SPIFFE ID must name ``trust_domain`` itself, without a
    path (X509-SVID 3.2): a CA whose certificates say another trust domain would issue SVIDs
    its own bundle does not vouch for, and publish that bundle under the wrong name."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return  # a CA certificate need not name its trust domain
    except Exception:  # extensions cryptography cannot read
        raise ConfigurationError(f"the {name} CA's certificate extensions cannot be read") from None
    for uri in names.get_values_for_type(x509.UniformResourceIdentifier):
        try:
            spiffe_id = SpiffeId.parse(uri)
        except InvalidSpiffeId:
            spiffe_id = None
        if spiffe_id is None or spiffe_id.path or spiffe_id.trust_domain != trust_domain:
            raise ConfigurationError(
                f"the {name} CA's certificate names {uri!r}, not trust domain {trust_domain}"
            )


def _check_private(path: Path) -> None:
    """``path`` must be the user's and writable by nobody else (POSIX)."""
    state = path.stat()
    getuid = getattr(os, "getuid", None)
    if os.name == "posix" and (
        state.st_mode & 0o022 or (getuid is not None and state.st_uid != getuid())
    ):
        raise ConfigurationError(
            f"{path} is writable by other users or owned by another one: keep the CA in a"
            " private directory (chmod 700)"
        )


def _load_key(path: Path) -> PrivateKey:
    data = read_bounded(path)
    if encrypted_pem_key(data):
        raise ConfigurationError(f"{path} is an encrypted private key, which is not supported")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except UnsupportedAlgorithm:  # a curve or algorithm cryptography cannot use
        raise ValueError("unsupported key type") from None
    if not isinstance(
        key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)
    ):
        raise ValueError("unsupported key type")
    return key


#: RFC 5280 appendix A: a common name holds at most 64 characters (ub-common-name).
_MAX_COMMON_NAME = 64


def _ca_name(td: TrustDomain, role: str) -> x509.Name:
    """A CA certificate's subject: its common name is the trust domain and ``role``, the
    trust domain cut to fit ub-common-name (a trust domain may have 255 characters; the
    certificate's URI SAN names it whole)."""
    suffix = f" {role}"
    label = td.name
    if len(label) + len(suffix) > _MAX_COMMON_NAME:
        label = label[: _MAX_COMMON_NAME - len(suffix) - 3] + "..."
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "zerotrust dev CA"),
            x509.NameAttribute(NameOID.COMMON_NAME, label + suffix),
        ]
    )


def _ca_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey,
    now: _dt.datetime,
    ttl: _dt.timedelta,
    *,
    td: TrustDomain,
    path_length: int | None,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(_serial())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + ttl)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(  # X509-SVID appendix A: digitalSignature is for leaves only
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(td.id_string())]),
            critical=False,
        )
    )
