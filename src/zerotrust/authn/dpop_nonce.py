"""Server-provided DPoP nonces (RFC 9449 §9, with the syntax and signalling of §8).

A service that sets ``DPoPConfig(nonces=DPoPNonces(secret))`` accepts a DPoP proof only when
its ``nonce`` claim is one the service handed out recently. A proof without one, or with one
that is stale or not the service's, is refused with ``401``,
``WWW-Authenticate: DPoP error="use_dpop_nonce"`` and a fresh ``DPoP-Nonce`` header; the
client signs a new proof with that nonce and sends the request again (``zerotrust.httpx`` does
this by itself). A proof made in advance, or taken from one client and replayed later, is
then good for at most ``2 * lifetime`` seconds after its nonce was handed out, whatever
``iat`` it claims (up to a window more across replicas whose clocks differ, see below).

The nonces are stateless, so every replica that holds the same secret accepts the others':
a nonce names a time window of ``lifetime`` seconds and carries an HMAC-SHA256 of that
window under the secret. It is accepted during its window and the next one, so a client
keeps a usable nonce for between ``lifetime`` and ``2 * lifetime`` seconds; a nonce of the
window after the current one is accepted too, so that replicas whose clocks differ by less
than a window accept each other's. Give several secrets to rotate: the first signs new
nonces, and all of them verify.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Final, NoReturn

from zerotrust.errors import ConfigurationError
from zerotrust.tokens._b64 import b64url_decode, b64url_encode

__all__ = ["DPoPNonces"]

_LABEL: Final = b"zerotrust dpop nonce v1\x00"
_MIN_SECRET: Final = 32
_MAX_SECRET: Final = 1024
_MAX_SECRETS: Final = 8
_WINDOW_BYTES: Final = 8
_MAC_BYTES: Final = 16
#: Unpadded base64url of the 8-byte window and the 16-byte MAC.
NONCE_LENGTH: Final = 32
_MAX_WINDOW: Final = 2**63


class DPoPNonces:
    """The nonces a service hands out and requires in DPoP proofs (see the module documentation).

    * ``secret`` -- at least 32 random bytes (``secrets.token_bytes(32)``), or a list of up to
      8 of them to rotate (the first signs new nonces; all verify). Every replica of a service
      needs the same secrets: a nonce one replica handed out is otherwise refused by the next,
      and the client is sent back and forth.
    * ``lifetime`` -- the length of a nonce window in seconds, from 1 to 3600 (default 60). A
      nonce is accepted until the end of the window after the one it was handed out in.

    ``repr`` never shows a secret, and the object cannot be pickled.
    """

    __slots__ = ("_lifetime", "_secrets")

    def __init__(self, secret: bytes | Sequence[bytes], *, lifetime: float = 60.0) -> None:
        if isinstance(secret, (bytes, bytearray)):
            given: tuple[object, ...] = (secret,)
        elif isinstance(secret, (list, tuple)):
            given = tuple(secret)
        else:
            raise ConfigurationError("DPoP nonce secret must be bytes, or a list of bytes")
        if not 1 <= len(given) <= _MAX_SECRETS:
            raise ConfigurationError(f"DPoP nonces need 1 to {_MAX_SECRETS} secrets")
        secrets: list[bytes] = []
        for each in given:
            if not isinstance(each, (bytes, bytearray)):
                raise ConfigurationError("each DPoP nonce secret must be bytes")
            if not _MIN_SECRET <= len(each) <= _MAX_SECRET:
                raise ConfigurationError(
                    f"each DPoP nonce secret must be {_MIN_SECRET} to {_MAX_SECRET} bytes long"
                )
            secrets.append(bytes(each))
        if (
            isinstance(lifetime, bool)
            or not isinstance(lifetime, (int, float))
            or not 1 <= lifetime <= 3600  # before any float(): NaN and infinities fail it too
        ):
            raise ConfigurationError("DPoP nonce lifetime must be 1 to 3600 seconds")
        self._secrets = tuple(secrets)
        self._lifetime = float(lifetime)

    @property
    def lifetime(self) -> float:
        """The length of a nonce window, in seconds."""
        return self._lifetime

    def issue(self, now: float) -> str:
        """The nonce to hand out at ``now`` (a POSIX timestamp): the same for every caller
        within one window."""
        window = self._window(now)
        if window is None:
            raise ConfigurationError("the clock gave a time no DPoP nonce can name")
        return b64url_encode(window.to_bytes(_WINDOW_BYTES, "big") + self._mac(0, window))

    def accepts(self, nonce: object, now: float) -> bool:
        """Whether ``nonce`` was handed out by a holder of one of the secrets, in the window of
        ``now``, the one before, or the one after (a replica whose clock runs ahead). Anything
        else, whatever its type, is ``False``."""
        if not isinstance(nonce, str) or len(nonce) != NONCE_LENGTH:
            return False
        try:
            raw = b64url_decode(nonce)
        except ValueError:
            return False
        window = int.from_bytes(raw[:_WINDOW_BYTES], "big")
        current = self._window(now)
        if current is None or not current - 1 <= window <= current + 1:
            return False
        mac = raw[_WINDOW_BYTES:]
        matched = False
        for index in range(len(self._secrets)):  # every secret, in constant time each
            matched |= hmac.compare_digest(mac, self._mac(index, window))
        return matched

    def renewal(self, nonce: str, now: float) -> str | None:
        """The nonce to hand out at ``now`` in place of ``nonce``, an accepted one: the current
        nonce when ``nonce`` is of an earlier window, else ``None`` (it is the current one, or
        a later one that a replica whose clock runs ahead handed out: never replaced by an
        older one)."""
        current = self._window(now)
        if current is None or len(nonce) != NONCE_LENGTH:
            return None
        try:
            window = int.from_bytes(b64url_decode(nonce)[:_WINDOW_BYTES], "big")
        except ValueError:
            return None
        return self.issue(now) if window < current else None

    def _window(self, now: float) -> int | None:
        if not 0 <= now < _MAX_WINDOW * self._lifetime:  # NaN too; no float() of a huge int
            return None
        window = int(now // self._lifetime)
        return window if window < _MAX_WINDOW else None

    def _mac(self, index: int, window: int) -> bytes:
        message = _LABEL + window.to_bytes(_WINDOW_BYTES, "big")
        return hmac.digest(self._secrets[index], message, hashlib.sha256)[:_MAC_BYTES]

    def __repr__(self) -> str:
        count = len(self._secrets)
        return f"DPoPNonces(lifetime={self.lifetime!r}, secrets=<{count} redacted>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("DPoPNonces cannot be pickled (it holds secrets)")

    def __copy__(self) -> DPoPNonces:
        return self  # immutable

    def __deepcopy__(self, memo: object) -> DPoPNonces:
        return self
