"""File-backed SVID, bundle and token-key sources that reload when the files change.

Files are checked at most once per ``check_interval`` seconds, on use (no background thread).
A change is loaded completely and validated before it replaces the current snapshot: a
half-written pair (new certificate, old key), an unparsable file or a missing file keeps the
previous snapshot and is retried on the next check, so a rotation tool that writes the files
one after the other never causes a failed handshake. A changed file is used only once it has
settled (unchanged while read, last modified a moment ago), so a chain or bundle caught between
two PEM blocks is not taken for a shorter one. Only regular files are read: a FIFO or device is
refused without being waited on. Only the first load is fatal (at start-up, as a
``ConfigurationError``-derived error), never a later one.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from zerotrust._files import read_regular_file
from zerotrust.errors import BundleError, ConfigurationError, SvidError, ZeroTrustError
from zerotrust.identity import TrustDomain
from zerotrust.sources._workload_convert import MAX_CLOCK_SKEW
from zerotrust.tokens._jwk import bind_unnamed
from zerotrust.tokens.jwks import JWKSet
from zerotrust.tokens.keys import JWK
from zerotrust.x509._certs import complete_pem_blocks, read_bounded
from zerotrust.x509.bundle import BundleSet, TrustBundle
from zerotrust.x509.svid import X509Svid

__all__ = ["FileBundleSource", "FileKeySource", "FileSvidSource"]

_log = logging.getLogger("zerotrust.sources")
_T = TypeVar("_T")
_Stamp = tuple[tuple[int, int, int], ...]
_MAX_KEY_FILE_BYTES = 1 << 20
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,40})-----.*?-----END \1-----", re.DOTALL)
#: How long a changed file must have been left alone before a reload uses it.
_SETTLE_SECONDS = 0.25


_watched: weakref.WeakSet[_Watched[Any]] = weakref.WeakSet()
_bundle_sources: weakref.WeakSet[FileBundleSource] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for watched in list(_watched):
        watched._lock = threading.Lock()  # a check of the parent's held it: it never ends here
    for source in list(_bundle_sources):
        source._lock = threading.Lock()  # the same for a bundle set being rebuilt


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Watched(Generic[_T]):
    """A snapshot loaded from files, reloaded when their (inode, size, mtime) change.

    A changed file is loaded only once it has settled: its stamp is the same before and after
    the read, and it was last modified at least ``_SETTLE_SECONDS`` ago (or, when its
    modification time cannot be trusted, such as one in the future, the same stamp has been
    seen for that long). A writer caught between two PEM blocks, a chain written up to its
    leaf, a bundle up to its first root, leaves a file that parses; waiting for the file to
    settle keeps such a prefix from replacing a whole snapshot. The first load does not wait:
    there is no snapshot to keep meanwhile, and should it catch a writer mid-way, the finished
    file has another stamp and replaces it once settled.
    """

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
        self._pending: _Stamp | None = None  # a changed stamp waiting to settle, and since when
        self._pending_since = 0.0
        self.last_error: str | None = None
        self.reloads = 0
        _watched.add(self)

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
                self._note_error(f"cannot stat {exc.filename}: {exc.strerror}")
                return self._value
            if stamp == self._stamp:
                self._pending = None
                return self._value
            if self._unsettled(stamp, now):
                return self._value
            try:
                value = self._loader()
                changed = self._read_stamp() != stamp
            except (ZeroTrustError, OSError) as exc:
                # Keep the previous snapshot; the stamp is not recorded so we retry.
                self._note_error(_describe(exc))
                return self._value
            except Exception as exc:  # whatever a bad file makes a parser raise: same rule
                self._note_error(f"cannot load: {type(exc).__name__}")
                return self._value
            if changed:  # written to while it was read: read it again once it settles
                self._next_check = min(self._next_check, now + _SETTLE_SECONDS)
                return self._value
            self._value, self._stamp, self._pending = value, stamp, None
            self.last_error = None
            self.reloads += 1
            _log.info("reloaded %s", ", ".join(p.name for p in self._paths))
            return value
        finally:
            self._lock.release()

    def _unsettled(self, stamp: _Stamp, now: float) -> bool:
        """Whether a changed file of ``stamp`` may still be being written; if so, the next
        check is brought forward to when it will have settled."""
        if stamp != self._pending:
            self._pending, self._pending_since = stamp, now
        seen = now - self._pending_since
        wall = time.time_ns()
        wait = 0.0
        for entry, before in zip(stamp, self._stamp, strict=True):
            if entry == before:
                continue
            mtime = entry[2]
            if mtime % 1_000_000_000 == 0:  # whole seconds: maybe truncated, count from its end
                mtime += 1_000_000_000
            age = (wall - mtime) / 1e9
            wait = max(wait, _SETTLE_SECONDS - max(age, seen))
        if wait <= 0:
            return False
        self._next_check = min(self._next_check, now + wait)
        return True

    def _note_error(self, message: str) -> None:
        if message != self.last_error:
            _log.warning("keeping previous snapshot of %s: %s", self._paths[0].name, message)
        self.last_error = message


def _describe(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"cannot read {exc.filename}: {exc.strerror or exc}"
    return str(exc)


def _absolute(path: str | os.PathLike[str]) -> Path:
    """``path`` made absolute once, when the source is built: every reload reads the file that
    was loaded first, whatever the working directory becomes. Symbolic links are kept, not
    resolved, so a swap of the link (Kubernetes' ``..data``) is still seen."""
    return Path(path).absolute()


class FileSvidSource:
    """The workload's SVID from a PEM certificate chain and a PEM private key file.

    A rewritten pair whose certificate has expired, or becomes valid only more than five
    minutes from now, keeps the previous SVID (see :attr:`last_error`), as the Workload API
    source does: no peer would accept it. The first load takes the files as they are."""

    def __init__(
        self,
        cert_path: str | os.PathLike[str],
        key_path: str | os.PathLike[str],
        *,
        check_interval: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        cert, key = _absolute(cert_path), _absolute(key_path)
        started = False

        def load() -> X509Svid:
            svid = X509Svid.load(cert, key)
            if started:  # a reload never replaces the SVID with one no peer would accept
                _refuse_unusable(svid)
            return svid

        try:
            self._watched = _Watched([cert, key], load, check_interval, monotonic)
        except OSError as exc:
            raise SvidError(f"cannot read SVID file {exc.filename}: {exc.strerror}") from None
        started = True

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


def _refuse_unusable(svid: X509Svid) -> None:
    """Raise :class:`SvidError` if ``svid``'s certificate is expired, or valid only more than
    :data:`MAX_CLOCK_SKEW` from now."""
    now = datetime.now(timezone.utc)
    leaf = svid.leaf
    if leaf.not_valid_after_utc <= now:
        expired = leaf.not_valid_after_utc.isoformat()
        raise SvidError(f"the new SVID expired at {expired}: keeping the previous one")
    if leaf.not_valid_before_utc > now + MAX_CLOCK_SKEW:
        starts = leaf.not_valid_before_utc.isoformat()
        raise SvidError(f"the new SVID is valid only from {starts}: keeping the previous one")


class FileBundleSource:
    """Trust bundles from files: ``{trust_domain: path}``; PEM or SPIFFE JWKS format.

    Each trust domain's file is judged on its own: one that does not load keeps that domain's
    previous bundle, and never holds back another domain's change (an authority it withdrew
    stops being trusted however the other files are)."""

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
            (td if isinstance(td, TrustDomain) else TrustDomain.parse(td), _absolute(p))
            for td, p in paths.items()
        ]

        def loader(td: TrustDomain, path: Path) -> Callable[[], TrustBundle]:
            return lambda: _load_bundle(td, path, format)

        try:
            self._watched = [
                _Watched([path], loader(td, path), check_interval, monotonic)
                for td, path in entries
            ]
        except OSError as exc:
            raise BundleError(f"cannot read bundle file {exc.filename}: {exc.strerror}") from None
        self._lock = threading.Lock()  # held by the one caller checking the files
        self._monotonic = monotonic
        bundles = tuple(watched.get() for watched in self._watched)
        # the bundles and the set of them, swapped together (two files for one trust domain
        # are refused here)
        self._current = (bundles, BundleSet(bundles))
        self._next_check = min(watched._next_check for watched in self._watched)
        _bundle_sources.add(self)

    def get_bundle_set(self) -> BundleSet:
        """The current bundles; the files are re-checked at most once per ``check_interval``.
        A changed file that does not load keeps its trust domain's previous bundle (see
        :attr:`last_error`), and only that one: it never raises."""
        # until a file is due for a check, one clock read, whatever the number of files
        if self._monotonic() < self._next_check or not self._lock.acquire(blocking=False):
            return self._current[1]  # (or another caller is checking them: the current set)
        try:
            current = self._current
            bundles = tuple(watched.get() for watched in self._watched)
            if any(new is not old for new, old in zip(bundles, current[0], strict=True)):
                current = self._current = (bundles, BundleSet(bundles))
            self._next_check = min(watched._next_check for watched in self._watched)
            return current[1]
        finally:
            self._lock.release()

    @property
    def last_error(self) -> str | None:
        """Why the last reload attempt of a file was refused (``None`` when every file's last
        attempt loaded)."""
        errors = [watched.last_error for watched in self._watched if watched.last_error]
        return "; ".join(errors) if errors else None


def _load_bundle(td: TrustDomain, path: Path, fmt: str) -> TrustBundle:
    try:
        data = read_bounded(path, what=f"bundle file {path}")
    except ValueError as exc:
        raise BundleError(str(exc)) from None
    if fmt == "jwks" or (fmt == "auto" and data.lstrip()[:1] == b"{"):
        return TrustBundle.from_jwks(td, data)
    return TrustBundle.from_pem(td, data)


class FileKeySource:
    """Token verification keys from one file: a JWKS document, or PEM public keys and/or
    certificates (each PEM key gets its RFC 7638 thumbprint as ``kid``).

    A PEM key names no algorithm: it is bound to its type's (RS256 for RSA, the curve's for
    EC, EdDSA for Ed25519/Ed448) unless ``algorithms`` (the verifier's allowlist) leaves that
    one out and allows exactly one other that fits it, such as PS256. JWKS entries keep their
    own ``alg``.

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
        algorithms: Iterable[str] = (),
    ) -> None:
        file = _absolute(path)
        previous: list[JWKSet] = []
        allowed = () if isinstance(algorithms, str) else tuple(algorithms)
        if isinstance(algorithms, str) or not all(isinstance(a, str) for a in allowed):
            raise ConfigurationError("algorithms must be a list of algorithm names")

        def load() -> JWKSet:
            keys = _load_keys(file, allowed)
            if previous and previous[0] == keys:
                return previous[0]
            previous[:] = [keys]
            return keys

        try:
            self._watched = _Watched([file], load, check_interval, monotonic)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read key file {exc.filename}: {exc.strerror}"
            ) from None

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


def _load_keys(path: Path, allowed: tuple[str, ...]) -> JWKSet:
    data = read_regular_file(path, _MAX_KEY_FILE_BYTES)
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise ConfigurationError(f"key file {path} is larger than {_MAX_KEY_FILE_BYTES} bytes")
    if data.lstrip()[:1] == b"{":
        keys = JWKSet.from_json(data, max_size=_MAX_KEY_FILE_BYTES)
    else:
        if not complete_pem_blocks(data):  # caught mid-write: not a shorter set of keys
            raise ConfigurationError(
                f"key file {path} is incomplete (a PEM block without its END line)"
            )
        found: list[JWK] = []
        for block in _PEM_BLOCK.finditer(data):
            if b"PRIVATE" in block.group(1):
                raise ConfigurationError("key file holds a private key: publish public keys only")
            key = bind_unnamed(JWK.from_pem(block.group(0)), allowed, f"key file {path.name}")
            named = key.algorithm if len(key.algorithms) == 1 else None  # keep both EdDSA names
            found.append(JWK(key.public_key, algorithm=named, kid=key.thumbprint()))
        keys = JWKSet(found)
    if len(keys) == 0:
        skipped = f" ({len(keys.skipped)} skipped)" if keys.skipped else ""
        raise ConfigurationError(f"{path.name} holds no usable key{skipped}")
    return keys
