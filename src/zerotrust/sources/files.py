"""File-backed SVID, bundle and token-key sources that reload when the files change.

Files are checked at most once per ``check_interval`` seconds, on use (no background thread).
A change is loaded completely and validated before it replaces the current snapshot: a
half-written pair (new certificate, old key), an unparsable file or a missing file keeps the
previous snapshot and is retried on the next check, so a rotation tool that writes the files
one after the other never causes a failed handshake. Only the first load is fatal (at start-up,
as a ``ConfigurationError``-derived error), never a later one.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Generic, Literal, TypeVar

from zerotrust.errors import BundleError, ConfigurationError, SvidError, ZeroTrustError
from zerotrust.identity import TrustDomain
from zerotrust.tokens.jwks import JWKSet
from zerotrust.tokens.keys import JWK
from zerotrust.x509._certs import read_bounded
from zerotrust.x509.bundle import BundleSet, TrustBundle
from zerotrust.x509.svid import X509Svid

__all__ = ["FileBundleSource", "FileKeySource", "FileSvidSource"]

_log = logging.getLogger("zerotrust.sources")
_T = TypeVar("_T")
_Stamp = tuple[tuple[int, int, int], ...]
_MAX_KEY_FILE_BYTES = 1 << 20
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,40})-----.*?-----END \1-----", re.DOTALL)


class _Watched(Generic[_T]):
    """A snapshot loaded from files, reloaded when their (inode, size, mtime) change."""

    def __init__(
        self,
        paths: Sequence[Path],
        loader: Callable[[], _T],
        check_interval: float,
        monotonic: Callable[[], float],
    ) -> None:
        self._paths = tuple(paths)
        self._loader = loader
        self._interval = check_interval
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._stamp = self._read_stamp()
        self._value = loader()  # first load: errors propagate, start-up fails loudly
        self._next_check = monotonic() + check_interval
        self.last_error: str | None = None
        self.reloads = 0

    def _read_stamp(self) -> _Stamp:
        stamps = []
        for path in self._paths:
            st = os.stat(path)
            stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(stamps)

    def get(self) -> _T:
        now = self._monotonic()
        if now < self._next_check:
            return self._value
        if not self._lock.acquire(blocking=False):
            return self._value  # another thread is checking: serve the current snapshot
        try:
            self._next_check = now + self._interval
            try:
                stamp = self._read_stamp()
            except OSError as exc:
                self._note_error(f"cannot stat: {exc.strerror}")
                return self._value
            if stamp == self._stamp:
                return self._value
            try:
                value = self._loader()
            except (ZeroTrustError, OSError) as exc:
                # Keep the previous snapshot; the stamp is not recorded so we retry.
                self._note_error(str(exc))
                return self._value
            except Exception as exc:  # whatever a bad file makes a parser raise: same rule
                self._note_error(f"cannot load: {type(exc).__name__}")
                return self._value
            self._value, self._stamp = value, stamp
            self.last_error = None
            self.reloads += 1
            _log.info("reloaded %s", ", ".join(p.name for p in self._paths))
            return value
        finally:
            self._lock.release()

    def _note_error(self, message: str) -> None:
        if message != self.last_error:
            _log.warning("keeping previous snapshot of %s: %s", self._paths[0].name, message)
        self.last_error = message


class FileSvidSource:
    """The workload's SVID from a PEM certificate chain and a PEM private key file."""

    def __init__(
        self,
        cert_path: str | os.PathLike[str],
        key_path: str | os.PathLike[str],
        *,
        check_interval: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        cert, key = Path(cert_path), Path(key_path)
        try:
            self._watched = _Watched(
                [cert, key], lambda: X509Svid.load(cert, key), check_interval, monotonic
            )
        except OSError as exc:
            raise SvidError(f"cannot read SVID files: {exc.strerror}") from None

    def get_x509_svid(self) -> X509Svid:
        """The current SVID; the files are re-checked at most once per ``check_interval``. A
        changed pair that does not load keeps the previous SVID (see :attr:`last_error`): it
        never raises."""
        return self._watched.get()

    @property
    def last_error(self) -> str | None:
        """Why the last reload attempt was refused (``None`` after a good load)."""
        return self._watched.last_error

    @property
    def reloads(self) -> int:
        """How many times changed files were loaded and replaced the SVID (the first load is
        not counted)."""
        return self._watched.reloads


class FileBundleSource:
    """Trust bundles from files: ``{trust_domain: path}``; PEM or SPIFFE JWKS format."""

    def __init__(
        self,
        paths: Mapping[TrustDomain | str, str | os.PathLike[str]],
        *,
        format: Literal["auto", "pem", "jwks"] = "auto",
        check_interval: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not paths:
            raise BundleError("FileBundleSource needs at least one bundle file")
        entries = [
            (td if isinstance(td, TrustDomain) else TrustDomain.parse(td), Path(p))
            for td, p in paths.items()
        ]

        def load() -> BundleSet:
            return BundleSet(_load_bundle(td, path, format) for td, path in entries)

        try:
            self._watched = _Watched([p for _, p in entries], load, check_interval, monotonic)
        except OSError as exc:
            raise BundleError(f"cannot read bundle file: {exc.strerror}") from None

    def get_bundle_set(self) -> BundleSet:
        """The current bundles; the files are re-checked at most once per ``check_interval``.
        Changed files that do not load keep the previous bundles (see :attr:`last_error`): it
        never raises."""
        return self._watched.get()

    @property
    def last_error(self) -> str | None:
        """Why the last reload attempt was refused (``None`` after a good load)."""
        return self._watched.last_error


def _load_bundle(td: TrustDomain, path: Path, fmt: str) -> TrustBundle:
    try:
        data = read_bounded(path, what="bundle file")
    except ValueError as exc:
        raise BundleError(str(exc)) from None
    if fmt == "jwks" or (fmt == "auto" and data.lstrip()[:1] == b"{"):
        return TrustBundle.from_jwks(td, data)
    return TrustBundle.from_pem(td, data)


class FileKeySource:
    """Token verification keys from one file: a JWKS document, or PEM public keys and/or
    certificates (each PEM key gets its RFC 7638 thumbprint as ``kid``).

    A :class:`~zerotrust.tokens.KeySource`: the file is re-checked at most once per
    ``check_interval`` seconds on use; a changed file that does not hold at least one usable
    key keeps the previous keys (see :attr:`last_error`). The same set object is returned
    while the keys do not change, even if the file is rewritten.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        check_interval: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        file = Path(path)
        previous: list[JWKSet] = []

        def load() -> JWKSet:
            keys = _load_keys(file)
            if previous and previous[0] == keys:
                return previous[0]
            previous[:] = [keys]
            return keys

        try:
            self._watched = _Watched([file], load, check_interval, monotonic)
        except OSError as exc:
            raise ConfigurationError(f"cannot read key file: {exc.strerror}") from None

    def get_keys(self, *, missing_kid: str | None = None) -> JWKSet:
        """The keys in the file (re-read if it changed; ``missing_kid`` changes nothing)."""
        return self._watched.get()

    async def get_keys_async(self, *, missing_kid: str | None = None) -> JWKSet:
        """Same as :meth:`get_keys`: at most one ``stat`` per ``check_interval``."""
        return self._watched.get()

    @property
    def last_error(self) -> str | None:
        """Why the last reload attempt was refused (``None`` after a good load)."""
        return self._watched.last_error

    @property
    def reloads(self) -> int:
        """How many times a changed file was loaded (the first load is not counted); the same
        key set object is kept when its keys did not change."""
        return self._watched.reloads


def _load_keys(path: Path) -> JWKSet:
    with path.open("rb") as file:
        data = file.read(_MAX_KEY_FILE_BYTES + 1)
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise ConfigurationError(f"key file is larger than {_MAX_KEY_FILE_BYTES} bytes")
    if data.lstrip()[:1] == b"{":
        keys = JWKSet.from_json(data, max_size=_MAX_KEY_FILE_BYTES)
    else:
        found: list[JWK] = []
        for block in _PEM_BLOCK.finditer(data):
            if b"PRIVATE" in block.group(1):
                raise ConfigurationError("key file holds a private key: publish public keys only")
            key = JWK.from_pem(block.group(0))
            named = key.algorithm if len(key.algorithms) == 1 else None  # keep both EdDSA names
            found.append(JWK(key.public_key, algorithm=named, kid=key.thumbprint()))
        keys = JWKSet(found)
    if len(keys) == 0:
        skipped = f" ({len(keys.skipped)} skipped)" if keys.skipped else ""
        raise ConfigurationError(f"{path.name} holds no usable key{skipped}")
    return keys
