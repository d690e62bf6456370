"""X.509-SVIDs: the workload's own certificate chain, private key and SPIFFE ID."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from zerotrust._files import same_file
from zerotrust.errors import ConfigurationError, SvidError, ZeroTrustError
from zerotrust.identity import SpiffeId
from zerotrust.x509._certs import (
    PARSE_ERRORS,
    PrivateKey,
    certs_to_pem,
    check_names,
    encrypted_pem_key,
    fingerprint,
    load_pem_certs,
    read_bounded,
    signing_flags,
)
from zerotrust.x509.verify import _check_leaf_profile, _check_signing_ids, leaf_spiffe_id

__all__ = ["X509Svid", "spiffe_id_from_certificate"]


def spiffe_id_from_certificate(cert: x509.Certificate) -> SpiffeId:
    """The SPIFFE ID in ``cert``'s single URI SAN (profile checks are in :mod:`.verify`)."""
    return leaf_spiffe_id(cert)


@final
class X509Svid:
    """A workload's X.509-SVID: leaf-first certificate chain, its private key and SPIFFE ID.

    Construction checks that the leaf carries exactly one valid SPIFFE ID and the leaf key
    usages (not a CA, no ``keyCertSign`` or ``cRLSign``, ``digitalSignature`` set), that every
    certificate after the leaf is a signing certificate (``CA:TRUE`` and ``keyCertSign``,
    X509-SVID 3.2 and 4.3) whose SPIFFE ID, if it has one, has no path (X509-SVID 3.2), and that
    the private key belongs to the leaf, so a torn cert/key pair can never be used.
    """

    __slots__ = ("_cert_chain", "_fingerprint", "_private_key", "_spiffe_id")

    _cert_chain: tuple[x509.Certificate, ...]
    _fingerprint: str
    _private_key: PrivateKey
    _spiffe_id: SpiffeId

    def __init__(self, cert_chain: Iterable[x509.Certificate], private_key: PrivateKey) -> None:
        chain = tuple(cert_chain)
        if not chain:
            raise SvidError("an SVID needs at least one certificate")
        for index, cert in enumerate(chain):
            if not isinstance(cert, x509.Certificate):
                raise SvidError(f"certificate {index} of the chain is not a Certificate object")
            try:
                check_names(cert)
            except PARSE_ERRORS:
                raise SvidError(
                    f"certificate {index} of the chain has a name that cannot be decoded"
                ) from None
        if not isinstance(
            private_key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)
        ):
            raise SvidError("unsupported private key type")
        leaf = chain[0]
        try:
            spiffe_id = spiffe_id_from_certificate(leaf)
            _check_leaf_profile(leaf, None)  # not a CA; may sign, not certify (X509-SVID 4.1, 4.3)
        except ZeroTrustError as exc:
            raise SvidError(f"leaf certificate is not an X509-SVID: {exc}") from exc
        for index, cert in enumerate(chain[1:], start=1):
            try:
                signing = all(signing_flags(cert))
            except ValueError:  # extensions cryptography cannot read: left to path validation
                continue
            if not signing:
                raise SvidError(f"certificate {index} of the chain is not a signing certificate")
        try:
            _check_signing_ids(chain)
        except ZeroTrustError as exc:
            raise SvidError(str(exc)) from exc
        if not _same_public_key(leaf, private_key):
            raise SvidError("private key does not match the leaf certificate")
        set_ = object.__setattr__
        set_(self, "_cert_chain", chain)
        set_(self, "_private_key", private_key)
        set_(self, "_spiffe_id", spiffe_id)
        set_(self, "_fingerprint", fingerprint(leaf))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("X509Svid is immutable")

    @property
    def spiffe_id(self) -> SpiffeId:
        """The SPIFFE ID in the leaf's URI SAN."""
        return self._spiffe_id

    @property
    def cert_chain(self) -> tuple[x509.Certificate, ...]:
        """The certificate chain, leaf first, as given to the constructor."""
        return self._cert_chain

    @property
    def leaf(self) -> x509.Certificate:
        """The SVID's own certificate: the first of :attr:`cert_chain`."""
        return self._cert_chain[0]

    @property
    def private_key(self) -> PrivateKey:
        """The leaf's private key (EC, RSA or Ed25519). Handle with care: never log it."""
        return self._private_key

    @property
    def fingerprint(self) -> str:
        """SHA-256 fingerprint of the leaf (lowercase hex)."""
        return self._fingerprint

    @property
    def expires_at(self) -> datetime:
        """When the leaf certificate expires (its ``notAfter``, an aware UTC datetime)."""
        return self.leaf.not_valid_after_utc

    # --- PEM --------------------------------------------------------------------------------

    @classmethod
    def from_pem(cls, cert_chain_pem: bytes | str, key_pem: bytes | str) -> X509Svid:
        """Build an SVID from a PEM chain (leaf first) and an unencrypted PEM private key.

        Size-bounded; an incomplete PEM document, an unreadable, encrypted or unsupported key, or
        any failed check of the constructor raises :class:`~zerotrust.errors.SvidError`."""
        return cls(_pem_chain(cert_chain_pem), _pem_key(key_pem))

    @classmethod
    def load(cls, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> X509Svid:
        """Read an SVID from a PEM chain file and a PEM key file, as :meth:`from_pem` does.

        A file that cannot be read, is not a regular file (a FIFO or device is refused without
        waiting on it) or exceeds the PEM size bound raises
        :class:`~zerotrust.errors.SvidError` naming the file."""
        cert_file, key_file = Path(cert_path), Path(key_path)
        cert = _read_svid_file(cert_file, "certificate")
        key = _read_svid_file(key_file, "key")
        try:
            chain = _pem_chain(cert)
        except SvidError as exc:
            raise SvidError(f"{cert_file}: {exc}") from exc
        try:
            private_key = _pem_key(key)
        except SvidError as exc:
            raise SvidError(f"{key_file}: {exc}") from exc
        return cls(chain, private_key)

    def cert_chain_pem(self) -> bytes:
        """The certificate chain as concatenated PEM certificates, leaf first."""
        return certs_to_pem(self._cert_chain)

    def private_key_pem(self) -> bytes:
        """PKCS#8 PEM of the private key. Handle with care: never log it."""
        return self._private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def save(self, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> None:
        """Write the chain (0644) and the key (0600, created private), each replacing its file
        atomically.

        Both are written to new files beside their paths first; only then is the key renamed
        into place, and then the chain. A failed write replaces neither file, and a reader that
        sees the new chain also finds its key. Errors are ``OSError`` naming ``cert_path`` or
        ``key_path``; both naming one file is a :class:`~zerotrust.errors.ConfigurationError`."""
        cert_file, key_file = Path(cert_path), Path(key_path)
        if same_file(cert_file, key_file):
            raise ConfigurationError(
                f"the certificate and the key would both be written to {cert_file}"
            )
        key_tmp = _staged(key_file, self.private_key_pem(), mode=0o600)
        try:
            cert_tmp = _staged(cert_file, self.cert_chain_pem(), mode=0o644)
        except BaseException:
            key_tmp.unlink(missing_ok=True)
            raise
        _replace_both((key_tmp, key_file), (cert_tmp, cert_file))

    # An SVID is its own (static) SVID source.
    def get_x509_svid(self) -> X509Svid:
        """This SVID itself: an SVID is its own (static) SVID source."""
        return self

    def __repr__(self) -> str:
        return f"X509Svid({str(self._spiffe_id)!r}, fingerprint={self._fingerprint[:16]}…)"


def write_file_atomic(path: Path, data: bytes, *, mode: int) -> None:
    """Write ``data`` to a new temporary sibling, then rename it into place.

    The sibling has an unpredictable name and is created exclusively (``O_EXCL``, never
    through a symbolic link) readable by this user only; ``mode`` is set before any data is
    written, so in a directory others can write to, nobody else can own or read it. Errors are
    ``OSError`` naming ``path``, never the temporary file."""
    tmp = _staged(path, data, mode=mode)
    with _discarded_on_error(tmp, path):
        os.replace(tmp, path)


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` about ``path`` (a temporary file's name means nothing to whoever asked)."""
    return OSError(exc.errno, exc.strerror or str(exc), str(path))


@contextlib.contextmanager
def _discarded_on_error(tmp: Path, path: Path) -> Iterator[None]:
    """Remove the temporary file ``tmp`` if the block fails; an ``OSError`` is reported
    about ``path``."""
    try:
        yield
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _naming(exc, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _staged(path: Path, data: bytes, *, mode: int) -> Path:
    """A new, synced temporary file beside ``path`` holding ``data`` (see
    :func:`write_file_atomic`)."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _naming(exc, path) from None
    tmp = Path(name)
    with _discarded_on_error(tmp, path), os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), mode)
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return tmp


def _replace_both(first: tuple[Path, Path], second: tuple[Path, Path]) -> None:
    """Rename two staged files onto their paths, ``first`` first. If the second rename fails,
    the first path gets its previous file back where a hard link could keep it (or loses the
    new one if it had none): a new key is never left beside the old certificate."""
    (first_tmp, first_path), (second_tmp, second_path) = first, second
    existed = os.path.lexists(first_path)
    kept = _keep_aside(first_path) if existed else None
    try:
        os.replace(first_tmp, first_path)
    except OSError as exc:
        for leftover in (first_tmp, second_tmp, kept):
            if leftover is not None:
                leftover.unlink(missing_ok=True)
        raise _naming(exc, first_path) from None
    try:
        os.replace(second_tmp, second_path)
    except OSError as exc:
        second_tmp.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            if kept is not None:
                os.replace(kept, first_path)
                kept = None
            elif not existed:
                first_path.unlink()
        raise _naming(exc, second_path) from None
    finally:
        if kept is not None:
            kept.unlink(missing_ok=True)


def _keep_aside(path: Path) -> Path | None:
    """A new hard link to the file at ``path``, to put it back if need be (``None`` where the
    file system has no hard links)."""
    aside = path.with_name(f".{path.name}.{secrets.token_hex(8)}.old")
    try:
        os.link(path, aside, follow_symlinks=False)
    except (OSError, NotImplementedError):
        return None
    return aside


def _read_svid_file(path: Path, what: str) -> bytes:
    try:
        return read_bounded(path, what=f"SVID {what} file {path}")
    except OSError as exc:
        raise SvidError(f"cannot read SVID {what} file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise SvidError(str(exc)) from None


def _pem_chain(data: bytes | str) -> list[x509.Certificate]:
    try:
        return load_pem_certs(data, what="SVID certificate")
    except ValueError as exc:
        raise SvidError(str(exc)) from exc


def _pem_key(data: bytes | str) -> PrivateKey:
    # PEM is ASCII: text that is not (a lone surrogate included) fails to load, never to encode
    raw = data.encode("ascii", "replace") if isinstance(data, str) else data
    if encrypted_pem_key(raw):
        raise SvidError(
            "SVID private key is encrypted, which is not supported: store it unencrypted"
            " (mode 0600)"
        )
    try:
        key = serialization.load_pem_private_key(raw, password=None)
    except PARSE_ERRORS as exc:
        raise SvidError("SVID private key could not be loaded (PEM, unencrypted)") from exc
    if not isinstance(
        key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)
    ):
        raise SvidError("unsupported private key type")
    return key


def _same_public_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        leaf_key = cert.public_key().public_bytes(*fmt)
    except PARSE_ERRORS:
        raise SvidError("the leaf certificate's public key cannot be read") from None
    return bool(leaf_key == key.public_key().public_bytes(*fmt))
