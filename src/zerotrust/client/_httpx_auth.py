"""``ZeroTrustAuth``: attach the token for each request's audience to httpx requests.

The first attempt (choose the audience, take its token, send) is written out in the two
drivers, :meth:`ZeroTrustAuth.sync_auth_flow` and :meth:`ZeroTrustAuth.async_auth_flow`.
Whatever its answer calls for (a DPoP nonce, a new token after ``invalid_token``) lives in one
sans-IO generator, :meth:`ZeroTrustAuth._after`, which yields either a :class:`_TokenFor` (the
only I/O it needs: a token from the source) or an :class:`httpx.Request` to send; the drivers
answer :class:`_TokenFor` with ``token_source.token(audience)`` or
``await token_source.token_async(audience)`` (``token`` in a worker thread for a source
without ``token_async``). No lock is held while the flow is suspended, so httpx may resume
it on any thread or task.
"""

from __future__ import annotations

import ipaddress
import re
import threading
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Final, TypeAlias

import httpx

from zerotrust._clock import Clock
from zerotrust.client._dpop import DPoPSigner
from zerotrust.client._rejections import (
    Rejections,
    SupportsInvalidate,
    challenge_errors,
    says_invalid_token,
)
from zerotrust.errors import ConfigurationError
from zerotrust.identity import SpiffeId
from zerotrust.sources._sansio import is_loopback_host
from zerotrust.tokens._outgoing_cache import check_token
from zerotrust.tokens.keys import PrivateJWK
from zerotrust.tokens.outgoing import TokenSource, token_async_of

__all__ = [
    "REFRESH_EXTENSION",
    "AudienceFor",
    "SupportsInvalidate",
    "ZeroTrustAuth",
    "invalid_token_challenge",
    "note_nonce",
    "resign_redirect",
    "use_dpop_nonce_challenge",
]

#: Request extension holding a callable that re-signs per-attempt credentials (DPoP proofs)
#: before a retry.
REFRESH_EXTENSION: Final = "zerotrust_refresh"

#: How a request's audience is chosen: one value, a host mapping, or a function of the request
#: (returning ``None`` sends that request without a token).
AudienceFor: TypeAlias = (
    "str | SpiffeId | Mapping[str, str | SpiffeId] | Callable[[httpx.Request], str | None]"
)

#: A ``DPoP-Nonce`` value (RFC 9449 §8.1: ``1*NQCHAR``), bounded.
_NONCE: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,1024}")
_MAX_REMEMBERED: Final = 1024
#: An audience mapping key: ``host``, ``host:port``, ``[IPv6]`` or ``[IPv6]:port``.
_MAPPING_KEY: Final = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[^\s:/@\[\]]+))(?::(?P<port>[0-9]{1,5}))?"
)
_DEFAULT_PORTS: Final = {"https": 443, "http": 80}


def use_dpop_nonce_challenge(response: httpx.Response) -> bool:
    """Whether ``response`` is a 401 whose ``WWW-Authenticate`` says
    ``error="use_dpop_nonce"`` (the resource server wants a proof with its nonce)."""
    if response.status_code != 401:
        return False
    return "use_dpop_nonce" in challenge_errors(response.headers.get_list("www-authenticate"))


def invalid_token_challenge(response: httpx.Response) -> bool:
    """Whether ``response`` is a 401 whose ``WWW-Authenticate`` says ``error="invalid_token"``."""
    if response.status_code != 401:
        return False
    return says_invalid_token(response.headers.get_list("www-authenticate"))


@dataclass(frozen=True, slots=True)
class _TokenFor:
    """The flow needs a token for ``audience`` (the drivers fetch it)."""

    audience: str


_Step: TypeAlias = "_TokenFor | httpx.Request"


def _audience_value(value: object, what: str) -> str:
    if isinstance(value, SpiffeId):
        return str(value)
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{what} must be a non-empty string or a SpiffeId")
    return value


def _resolver(audience: object) -> Callable[[httpx.Request], str | None]:
    if isinstance(audience, (str, SpiffeId)):
        fixed = _audience_value(audience, "audience")
        return lambda request: fixed
    if isinstance(audience, Mapping):
        if not audience:
            raise ConfigurationError("the audience mapping is empty")
        table: dict[str, str] = {}
        named: dict[str, object] = {}  # the key that named each host first
        for host, value in audience.items():
            match = _MAPPING_KEY.fullmatch(host) if isinstance(host, str) else None
            if match is None:
                raise ConfigurationError(
                    "audience mapping keys must be 'host', 'host:port', '[IPv6]' or '[IPv6]:port'"
                )
            # brackets hold an IPv6 address only (RFC 3986 3.2.2): "[abc]" is not the name abc
            v6 = match.group("v6")
            name = f"[{v6}]" if v6 is not None else _wire_name(match.group("name"))
            port = int(match.group("port")) if match.group("port") else None
            key = _host_key(name, port) if name is not None else None
            if key is None:
                raise ConfigurationError(f"audience mapping key {host!r} is not a valid host")
            chosen = _audience_value(value, f"the audience for {host!r}")
            if table.get(key, chosen) != chosen:  # never guess which one a request means
                raise ConfigurationError(
                    f"audience mapping keys {named[key]!r} and {host!r} name the same host"
                    " with different audiences"
                )
            table[key] = chosen
            named.setdefault(key, host)

        def by_host(request: httpx.Request) -> str:
            url = request.url
            port = url.port or _DEFAULT_PORTS.get(url.scheme)
            wire = url.raw_host.decode("ascii")  # IDNA names as A-labels, as keys are
            exact, bare = _host_key(wire, port), _host_key(wire, None)
            found = (table.get(exact) if exact else None) or (table.get(bare) if bare else None)
            host = url.host
            if found is None:  # never guess: a token is only sent where it is meant to go
                raise ConfigurationError(f"no audience is configured for host {host!r}")
            return found

        return by_host
    if callable(audience):
        derive = audience

        def derived(request: httpx.Request) -> str | None:
            value = derive(request)
            return None if value is None else _audience_value(value, "the derived audience")

        return derived
    raise ConfigurationError("audience must be a string, a SpiffeId, a host mapping or a callable")


def _wire_name(name: str) -> str | None:
    """A host name as httpx sends it (``URL.raw_host``): in lower case, an internationalized
    name in IDNA A-labels (``café.example`` is ``xn--caf-dma.example``); ``None`` when it
    cannot be one."""
    try:
        return httpx.URL(scheme="https", host=name).raw_host.decode("ascii")
    except httpx.InvalidURL:
        return None


def _host_key(host: str, port: int | None) -> str | None:
    """How a host (and port) is looked up in an audience mapping: names in lower case, IPv6
    addresses compressed and in brackets (a port after an unbracketed one would read as part
    of the address), a name's absolute form (``payments.internal.``) as the name;
    ``None`` for something that is neither."""
    host = host.lower() if host else ""
    if ":" in host or host.startswith("["):
        try:
            host = f"[{ipaddress.IPv6Address(host.strip('[]')).compressed}]"
        except ValueError:
            return None
    else:
        if host.endswith("."):  # the root label: the same name, written absolute
            host = host[:-1]
        if "" in host.split("."):  # an empty label: no host name
            return None
    return host if port is None else f"{host}:{port}"


def _answered(response: httpx.Response, request: httpx.Request) -> httpx.Request:
    """The request ``response`` answers: ``request``, or the last of the redirects httpx
    followed from it."""
    try:
        return response.request
    except RuntimeError:  # no request recorded: it answered ``request`` itself
        return request


def _same_request(answered: httpx.Request, request: httpx.Request) -> bool:
    """Whether ``answered`` is ``request`` as far as its server is concerned: every redirect
    on the way kept the method and the body (a 307 or 308; httpx turns a POST redirected by
    a 301, 302 or 303 into a GET without the body, and a body once dropped never comes back)."""
    return answered.method == request.method and answered.stream is request.stream


def _replayable(request: httpx.Request) -> bool:
    """Whether the request body can be sent again (bytes, forms and JSON; not streams)."""
    return isinstance(request.stream, httpx.ByteStream)


def _origin(url: httpx.URL) -> str:
    port = url.port or _DEFAULT_PORTS.get(url.scheme)
    return f"{url.scheme}://{url.host.lower()}:{port}"


class _Nonces:
    """The latest ``DPoP-Nonce`` each origin sent (RFC 9449 §8.2, §9), for the next proofs
    to that origin only; a bounded number of origins."""

    __slots__ = ("_by_origin", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_origin: OrderedDict[str, str] = OrderedDict()

    def get(self, url: httpx.URL) -> str | None:
        return self._by_origin.get(_origin(url))

    def note(self, response: httpx.Response, url: httpx.URL) -> str | None:
        """Remember the nonce ``response`` (to a request for ``url``) carries for that origin;
        return it (``None`` without exactly one well-formed ``DPoP-Nonce``)."""
        values = response.headers.get_list("dpop-nonce")
        if len(values) != 1 or not _NONCE.fullmatch(values[0]):
            return None
        nonce, origin = values[0], _origin(url)
        with self._lock:
            self._by_origin[origin] = nonce
            self._by_origin.move_to_end(origin)
            if len(self._by_origin) > _MAX_REMEMBERED:
                self._by_origin.popitem(last=False)
        return nonce


class _Proof:
    """Signs the DPoP proof of one token for each request that carries it."""

    __slots__ = ("_nonces", "_signer", "_token", "nonce", "request")

    def __init__(self, signer: DPoPSigner, token: str, nonces: _Nonces) -> None:
        self._signer, self._token, self._nonces = signer, token, nonces
        self.request: httpx.Request | None = None
        self.nonce: str | None = None  # the nonce of the latest proof signed

    def __call__(self, request: httpx.Request) -> None:
        """A fresh proof for ``request``'s method and URL, with the latest nonce its origin
        sent; none when the token is not sent with it (httpx drops ``Authorization`` on a
        redirect to another origin)."""
        self.request = request
        if request.headers.get("Authorization") != f"DPoP {self._token}":
            request.headers.pop("DPoP", None)
            return
        self.nonce = self._nonces.get(request.url)
        request.headers["DPoP"] = self._signer.proof(
            request.method, str(request.url), self._token, self.nonce
        )

    def note(self, response: httpx.Response, request: httpx.Request) -> str | None:
        """Remember the nonce of a response to ``request``, which carried this proof."""
        return self._nonces.note(response, request.url)


def resign_redirect(request: httpx.Request) -> None:
    """Sign the proof of a request httpx built to follow a redirect (a no-op otherwise)."""
    proof = request.extensions.get(REFRESH_EXTENSION)
    if isinstance(proof, _Proof) and proof.request is not request:
        proof(request)


def note_nonce(request: httpx.Request, response: httpx.Response) -> None:
    """Remember the ``DPoP-Nonce`` of a response to a request with a proof (retries and
    redirects are answered inside the transport: their nonces count too)."""
    proof = request.extensions.get(REFRESH_EXTENSION)
    if isinstance(proof, _Proof):
        proof.note(response, request)


class ZeroTrustAuth(httpx.Auth):
    """An :class:`httpx.Auth` that sends ``token_source``'s token for each request's audience.

    * ``audience``: a string or :class:`~zerotrust.SpiffeId` for every request; a mapping of
      ``"host"`` / ``"host:port"`` to audience (a request to another host raises
      :class:`~zerotrust.errors.ConfigurationError` before anything is sent); or a callable
      ``request -> audience`` (``None``: send this request without a token).
    * ``dpop_key``: send ``Authorization: DPoP <token>`` with a fresh RFC 9449 proof per request,
      for tokens bound to that key (``cnf.jkt``); otherwise ``Authorization: Bearer <token>``.
    * Server-provided DPoP nonces (RFC 9449 §9): the latest ``DPoP-Nonce`` an origin sent goes
      into the next proofs to that origin; a ``401`` with ``error="use_dpop_nonce"`` and a new
      nonce sends the request once more with a proof carrying it (if its body can be
      replayed), also after a new token (below): at most three sends in all.
    * A ``401`` whose ``WWW-Authenticate`` carries ``error="invalid_token"`` makes the source drop
      the refused token (``token_source.invalidate(audience, token=refused)``, which leaves
      another token cached for the audience alone; ``invalidate(audience)`` for a source
      without the keyword, else ``clear()``); the request is sent once more with a new token
      if its body can be replayed and the token changed. Other 401s, 403s and a second
      ``invalid_token`` 401 (whose token is dropped too) are returned as they are. A source
      that drops whatever it holds is told once of the refusals of one token within a few
      seconds (the requests in flight with it).
    * After redirects httpx followed, only an answer to a request that carried the token counts
      (httpx drops it on a redirect to another origin), and the request is sent once more only
      if every redirect kept its method and body (307, 308): a POST that a 301, 302 or 303
      turned into a GET is never sent again.
    """

    requires_request_body = False
    requires_response_body = False

    def __init__(
        self,
        token_source: TokenSource,
        *,
        audience: AudienceFor,
        dpop_key: PrivateJWK | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not callable(getattr(token_source, "token", None)):
            raise ConfigurationError("token_source must have a token() method")
        self._source = token_source
        self._rejections = Rejections(token_source)
        self._audience = _resolver(audience)
        self._dpop = DPoPSigner(dpop_key, clock=clock) if dpop_key is not None else None
        self._nonces = _Nonces()
        self._last_checked: object = None

    # -- the logic, written once ------------------------------------------------------------

    def _authorization(self, token: str) -> str:
        """The ``Authorization`` header that carries ``token``."""
        return f"Bearer {token}" if self._dpop is None else f"DPoP {token}"

    def _apply(self, request: httpx.Request, token: str) -> _Proof | None:
        request.headers["Authorization"] = self._authorization(token)
        if self._dpop is None:
            return None
        proof = _Proof(self._dpop, token, self._nonces)
        proof(request)
        # zerotrust's transport signs a new proof for every retry (servers remember each jti)
        # and for every redirect httpx builds from this request (a new method or URL)
        request.extensions = {**request.extensions, REFRESH_EXTENSION: proof}
        return proof

    def _audience_for(self, request: httpx.Request) -> str | None:
        """The audience ``request`` carries a token for (``None``: none), refusing a token over
        plaintext to anything but loopback."""
        audience = self._audience(request)
        if (
            audience is not None
            and request.url.scheme != "https"
            and not is_loopback_host(request.url.host)
        ):
            # RFC 6750 5.3: bearer tokens travel over TLS (a loopback sidecar excepted)
            raise ConfigurationError(
                f"a token is never sent over {request.url.scheme}:// to {request.url.host!r}:"
                " use https"
            )
        return audience

    @staticmethod
    def _settled(response: httpx.Response, proof: _Proof | None) -> bool:
        """Whether the first answer needs nothing more: no proof to learn a nonce for and no
        401 (the common case, decided without starting :meth:`_after`)."""
        return proof is None and response.status_code != 401

    def _after(
        self,
        request: httpx.Request,
        audience: str,
        token: str,
        proof: _Proof | None,
        response: httpx.Response,
    ) -> Generator[_Step, object, None]:
        """What the answer to the first attempt calls for: a nonce to learn, the same token
        with the nonce a server asked for, or a new token after ``invalid_token``. Each answer
        is read, so the request is sent again at most twice more: once with a new nonce and
        once with a new token, in either order (a service that requires nonces refuses an
        invalid token without one, then asks the new token's proof for one).

        Only an answer to a request that carried this very token says anything about it: after
        a redirect to another origin (httpx dropped ``Authorization`` there, and no proof went
        with it), the answer is returned as it is, whatever origin the redirects end on. The
        request is sent again only when the answer is to that same request (redirects that
        kept its method and body): a POST answered 303 and followed by a GET was processed."""
        again = _replayable(request)
        nonce_sent = reminted = False
        while True:
            sent = self._authorization(token)
            answered = _answered(response, request)
            if answered.headers.get("Authorization") != sent:
                return
            again = again and _same_request(answered, request)
            if proof is not None:
                nonce = proof.note(response, answered)
                if (
                    again
                    and not nonce_sent
                    and nonce is not None
                    and nonce != proof.nonce
                    and use_dpop_nonce_challenge(response)
                ):
                    nonce_sent = True
                    proof = self._apply(request, token)  # the same token, the nonce asked for
                    response = yield from self._send(request)
                    continue
            if not invalid_token_challenge(response):
                return
            self._rejections.reject(audience, token)  # refused, whether or not it is sent again
            if not again or reminted:
                # a streamed body is gone, a redirect made it another request, or a new token
                # was refused too: the 401 stands (the next request gets a new token)
                return
            fresh = yield _TokenFor(audience)
            assert isinstance(fresh, str)
            if fresh == token:
                return  # the source cannot re-mint: the 401 stands
            reminted, token = True, fresh
            proof = self._apply(request, token)
            response = yield from self._send(request)

    @staticmethod
    def _send(request: httpx.Request) -> Generator[_Step, object, httpx.Response]:
        answer = yield request
        assert isinstance(answer, httpx.Response)
        return answer

    # -- the drivers ------------------------------------------------------------------------
    #
    # The first attempt is written out in each driver (one token, one send: what nearly every
    # request is); anything its answer calls for is :meth:`_after`, written once.

    def _checked(self, token: str) -> str:
        """``token`` if it is header-safe (a cached token, the same object, is checked once)."""
        if token is not self._last_checked:
            check_token(token)
            self._last_checked = token
        return token

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """httpx hook (sync clients): send the token (and DPoP proof) of the request's audience."""
        audience = self._audience_for(request)
        if audience is None:
            yield request
            return
        token = self._checked(self._source.token(audience))
        proof = self._apply(request, token)
        response = yield request
        if self._settled(response, proof):
            return
        flow = self._after(request, audience, token, proof, response)
        try:
            step = next(flow)
            while True:
                if isinstance(step, _TokenFor):
                    step = flow.send(self._checked(self._source.token(step.audience)))
                else:
                    step = flow.send((yield step))
        except StopIteration:
            return
        finally:
            flow.close()

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """httpx hook (async clients): send the token (and DPoP proof) of the request's audience."""
        audience = self._audience_for(request)
        if audience is None:
            yield request
            return
        token = self._checked(await token_async_of(self._source, audience))
        proof = self._apply(request, token)
        response = yield request
        if self._settled(response, proof):
            return
        flow = self._after(request, audience, token, proof, response)
        try:
            step = next(flow)
            while True:
                if isinstance(step, _TokenFor):
                    step = flow.send(
                        self._checked(await token_async_of(self._source, step.audience))
                    )
                else:
                    step = flow.send((yield step))
        except StopIteration:
            return
        finally:
            flow.close()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """httpx's generic entry point: the blocking driver."""
        return self.sync_auth_flow(request)

    def __repr__(self) -> str:
        dpop = ", dpop" if self._dpop is not None else ""
        return f"ZeroTrustAuth({self._source!r}{dpop})"
