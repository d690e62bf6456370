"""gRPC server interceptor (sync ``grpc.server``): every RPC through the Guard.

The interceptor wraps the handler grpc found for the method, keeping its arity and its
(de)serializers, so the check runs *inside* the handler, where the ``ServicerContext`` is:

* the peer certificate comes from ``context.auth_context()`` (``x509_pem_cert`` and the
  intermediates in ``x509_pem_cert_chain``) and is re-verified as an X509-SVID against the
  bundle of its own trust domain (grpc's TLS stack only checked it against a merged root
  store). grpc's ``x509_common_name``, ``peer_identity`` and ``peer_spiffe_id`` are never used
  as identities. Verified chains are cached per bundle snapshot, keyed by the exact
  certificates presented (the TLS handshake proved the key); expiry is re-checked per call;
* the token comes from the ``authorization`` metadata, the remote address from
  ``context.peer()``; the view has kind ``grpc``, method ``POST`` and the full method name
  (``/pkg.Service/Method``) as its route;
* a refusal aborts with the Outcome's status (UNAUTHENTICATED, PERMISSION_DENIED,
  RESOURCE_EXHAUSTED, UNAVAILABLE, ...), the error code as details and ``www-authenticate``
  / ``retry-after`` as trailing metadata; streaming handlers are checked before the first
  message is consumed or produced;
* the request message of a unary-request RPC reaches the wrapper as bytes and is deserialized
  only once the Guard admitted the call (grpc would parse it before any check);
* the principal is readable with :func:`current_principal` inside the handler.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final, NoReturn, TypeVar, cast

from zerotrust.errors import ConfigurationError, MalformedCredentials, MissingDependencyError

try:
    import grpc  # type: ignore[import-untyped,unused-ignore]
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError("grpcio", "grpc", error=exc) from exc

from zerotrust.adapters._context import current_principal, set_principal
from zerotrust.adapters._grpc_tls import PeerCache, remote_address, server_credentials
from zerotrust.authn.request import MAX_HEADER_LINES, RequestView
from zerotrust.authz import policy as _authz
from zerotrust.authz.policy import Requirement
from zerotrust.identity.match import Matcher
from zerotrust.pipeline import Guard, Outcome
from zerotrust.x509.verify import VerifiedPeer

__all__ = [
    "REQUIREMENT_ATTRIBUTE",
    "ServerInterceptor",
    "current_principal",
    "require",
    "server_credentials",
]

#: The attribute :func:`require` sets on a servicer method.
REQUIREMENT_ATTRIBUTE: Final = "__zerotrust_requirement__"

F = TypeVar("F", bound=Callable[..., Any])
Evaluate = Callable[[RequestView, "Requirement | None"], Outcome]
#: A refusal to send: (status code, details, trailing metadata).
_Refusal = tuple[Any, str, tuple[tuple[str, str], ...]]

_KINDS: Final = {
    (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
}
_MAX_CACHED: Final = 4096
#: What a gRPC method's full name looks like (``/pkg.Service/Method``); its length is bounded
#: by :data:`_MAX_METHOD_NAME` alone, so any name a served method can have is decided.
_METHOD_NAME: Final = re.compile(r"/[A-Za-z_][A-Za-z0-9_.]*/[A-Za-z_][A-Za-z0-9_]*")
_MAX_METHOD_NAME: Final = 256
#: The details grpc itself sends when a request message cannot be deserialized.
_BAD_REQUEST: Final = "Exception deserializing request!"
_log = logging.getLogger("zerotrust")


#: The decision the interceptor made for the RPC being handled: (guard, view, outcome).
_decided: contextvars.ContextVar[tuple[Guard, RequestView, Outcome] | None] = (
    contextvars.ContextVar("zerotrust_grpc_decision", default=None)
)


def _as_metadata(outcome: Outcome) -> tuple[tuple[str, str], ...]:
    """The Guard's response headers as gRPC metadata (lowercase keys)."""
    return tuple((name.lower(), value) for name, value in outcome.headers)


def _pass_on(context: Any, outcome: Outcome) -> None:
    """An admitted call's response metadata from the Guard (a fresh ``dpop-nonce``, RFC 9449
    8.2) in its trailing metadata (:func:`_keep_passed_on` puts it back after the handler)."""
    if outcome.headers:
        context.set_trailing_metadata(_as_metadata(outcome))


def _with_ours(theirs: Any, outcome: Outcome) -> tuple[tuple[str, Any], ...]:
    """A handler's trailing metadata and the Guard's (which win a name both set)."""
    ours = _as_metadata(outcome)
    names = {name for name, _ in ours}
    return tuple((k, v) for k, v in theirs or () if k not in names) + ours


def _keep_passed_on(context: Any, outcome: Outcome) -> None:
    """After the handler: grpc's ``set_trailing_metadata`` replaces the whole set, so a handler
    that set its own dropped the Guard's; put it back. (A context that cannot say what the
    handler set was given to the handler as a :class:`_KeepingContext`.)"""
    read = getattr(context, "trailing_metadata", None)
    if read is None:
        return
    theirs = read() or ()
    merged = _with_ours(theirs, outcome)
    if tuple(map(tuple, theirs)) != merged:
        context.set_trailing_metadata(merged)


class _KeepingContext:
    """The context of a sync handler on the aio server, whose context cannot say what
    trailing metadata the handler set: each setting keeps the Guard's entries."""

    __slots__ = ("_context", "_outcome")

    def __init__(self, context: Any, outcome: Outcome) -> None:
        self._context = context
        self._outcome = outcome

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        self._context.set_trailing_metadata(_with_ours(trailing_metadata, self._outcome))

    def abort(self, code: Any, details: str = "", trailing_metadata: Any = ()) -> NoReturn:
        # grpc.aio sends the status at once, with these or else the ones set before
        if trailing_metadata:
            trailing_metadata = _with_ours(trailing_metadata, self._outcome)
        self._context.abort(code, details, trailing_metadata)
        raise AssertionError("abort() returned")  # pragma: no cover - grpc raises


def _handler_context(context: Any, outcome: Outcome) -> Any:
    """The handler's context when the Guard passes metadata on (see :class:`_KeepingContext`)."""
    return context if hasattr(context, "trailing_metadata") else _KeepingContext(context, outcome)


def _bind(guard: Guard, view: RequestView, outcome: Outcome) -> None:
    """Make an admitted RPC's principal (and decision) visible to its handler."""
    set_principal(outcome.principal)
    _decided.set((guard, view, outcome))


def require(
    *,
    scopes: Iterable[str] = (),
    any_scopes: Iterable[str] = (),
    callers: Matcher | Iterable[str] | None = None,
    proven_by: Iterable[str] = (),
) -> Callable[[F], F]:
    """Decorate a servicer method with a :class:`~zerotrust.Requirement` (the arguments of
    :func:`zerotrust.require`: ``scopes``, ``any_scopes``, ``callers``, ``proven_by``).

    The interceptor reads it from the handler and decides on it with the policy, in one
    decision. The method is also wrapped (sync or async, plain or streaming) to check it once
    more when called: another interceptor placed after zerotrust replaces the handler it sees,
    hiding the requirement, and the method then still refuses (audited) what the requirement
    refuses, and refuses any call no zerotrust interceptor decided on. Stacked decorators
    combine.
    """
    requirement = _authz.require(
        scopes=scopes, any_scopes=any_scopes, callers=callers, proven_by=proven_by
    )

    def decorate(fn: F) -> F:
        existing = getattr(fn, REQUIREMENT_ATTRIBUTE, None)
        combined = requirement & existing if existing else requirement
        # whatever ``fn`` is (another @require, or a decorator of the application's): it runs
        wrapped = _enforcing(fn, combined)
        setattr(wrapped, REQUIREMENT_ATTRIBUTE, combined)
        return cast(F, wrapped)

    return decorate


#: The requirements whose methods ran undecided (logged once each).
_undecided: set[int] = set()


def _refused_by(requirement: Requirement) -> _Refusal | None:
    """``None`` when the RPC being handled meets ``requirement``; else the refusal to send."""
    decided = _decided.get()
    if decided is None:  # no zerotrust interceptor decided on this call: fail closed
        # once per requirement: an exempt method's calls come from anyone, who could fill the
        # log (the set stays small: requirements are made when servicers are defined)
        if id(requirement) not in _undecided and len(_undecided) < 1024:
            _undecided.add(id(requirement))
            _log.error(
                "zerotrust: a method with a requirement ran without the zerotrust interceptor"
                " deciding on it (exempt, or no interceptor); its calls are refused"
            )
        return grpc.StatusCode.INTERNAL, "configuration_error", ()
    guard, view, outcome = decided
    refined = guard.refine(view, outcome, requirement)  # a refusal (or error) audited there
    if refined.allowed:
        return None  # met (usually: the interceptor already checked it)
    return ServerInterceptor._refusal(refined)


async def _refuse(context: Any, refusal: _Refusal) -> NoReturn:
    """Send ``refusal`` from async code (grpc.aio's ``abort`` raises once awaited)."""
    code, details, trailing = refusal
    if trailing:
        context.set_trailing_metadata(trailing)
    await context.abort(code, details)  # raises
    raise RuntimeError("ServicerContext.abort returned")  # pragma: no cover


def _refuse_sync(context: Any, refusal: _Refusal) -> NoReturn:
    """Send ``refusal`` from a sync method; it raises whatever the context (see
    :func:`_abort_sync`), so the method never runs."""
    code, details, trailing = refusal
    if trailing:
        context.set_trailing_metadata(trailing)
    _abort_sync(context, code, details, f"refused ({details})")


def _enforcing(fn: Callable[..., Any], requirement: Requirement) -> Callable[..., Any]:
    """``fn`` checking ``requirement`` before it runs (the context is its last argument)."""
    if inspect.isasyncgenfunction(fn):

        async def agen(*args: Any, **kwargs: Any) -> Any:
            refusal = _refused_by(requirement)
            if refusal is not None:
                await _refuse(args[-1], refusal)
            async for item in fn(*args, **kwargs):
                yield item

        wrapper: Callable[..., Any] = agen
    elif inspect.iscoroutinefunction(fn):

        async def coro(*args: Any, **kwargs: Any) -> Any:
            refusal = _refused_by(requirement)
            if refusal is not None:
                await _refuse(args[-1], refusal)
            return await fn(*args, **kwargs)

        wrapper = coro
    elif inspect.isgeneratorfunction(fn):

        def gen(*args: Any, **kwargs: Any) -> Any:
            refusal = _refused_by(requirement)
            if refusal is not None:
                _refuse_sync(args[-1], refusal)
            yield from fn(*args, **kwargs)

        wrapper = gen
    else:

        def plain(*args: Any, **kwargs: Any) -> Any:
            refusal = _refused_by(requirement)
            if refusal is not None:
                _refuse_sync(args[-1], refusal)
            return fn(*args, **kwargs)

        wrapper = plain
    return functools.wraps(fn)(wrapper)


class _View:
    """The :class:`~zerotrust.RequestView` of one RPC (grpc metadata keys are lower case).

    The peer's certificate, the transport and the remote address are read from the
    ``ServicerContext`` on first use: a repeated call that needs only its token reads less.
    """

    __slots__ = (
        "_auth",
        "_context",
        "_headers",
        "_overflow",
        "_peers",
        "_remote",
        "_verified",
        "route",
    )
    kind: Final = "grpc"
    method: Final = "POST"
    host: Final = None

    def __init__(self, route: str, metadata: Any, context: Any, peers: PeerCache) -> None:
        self.route = route
        # over MAX_HEADER_LINES entries nothing is read: refused inside the Guard's flow
        self._overflow = len(metadata) > MAX_HEADER_LINES
        self._headers = () if self._overflow else metadata  # (key, value); keys lower case
        self._context = context
        self._peers = peers
        self._auth: Mapping[str, Any] | None = None
        self._verified: tuple[list[bytes] | None, VerifiedPeer | None] | None = None
        self._remote: tuple[str | None] | None = None

    def prime(self) -> None:
        """Read now what is otherwise read on first use (the peer's certificate and address):
        grpc.aio releases a call that ended (deadline, cancellation), and reading its context
        after that crashes the process."""
        self._auth_context()
        self._remote = (remote_address(self._context.peer()),)

    def _auth_context(self) -> Mapping[str, Any]:
        auth = self._auth
        if auth is None:
            auth = self._auth = self._context.auth_context()
        return auth

    def _peer(self) -> tuple[list[bytes] | None, VerifiedPeer | None]:
        verified = self._verified
        if verified is None:
            verified = self._verified = self._peers.lookup(self._auth_context())
        return verified

    @property
    def verified_peer(self) -> VerifiedPeer | None:
        if self._overflow:
            raise MalformedCredentials(f"more than {MAX_HEADER_LINES} metadata entries")
        return self._peer()[1]

    @property
    def peer_chain(self) -> list[bytes] | None:
        return self._peer()[0]

    @property
    def scheme(self) -> str:
        secure = self._auth_context().get("transport_security_type") == [b"ssl"]
        return "https" if secure else "http"

    @property
    def remote_addr(self) -> str | None:
        remote = self._remote
        if remote is None:
            return remote_address(self._context.peer())
        return remote[0]

    @property
    def path(self) -> str:
        return self.route

    def header(self, name: str) -> list[str]:
        name = name.lower()
        # binary (-bin) metadata is never a credential: only text values count
        return [v for k, v in self._headers if k == name and isinstance(v, str)]

    def bearer_alone(self, absent: frozenset[str]) -> str | None:
        """The token of one ``authorization: Bearer`` entry when none of the (lower-case)
        keys ``absent`` is present, whatever its value; ``None`` otherwise."""
        token = None
        for key, value in self._headers:
            if key in absent:
                return None
            if key == "authorization":
                if token is not None or type(value) is not str or value[:7] != "Bearer ":
                    return None
                token = value[7:]
        return token


def _abort_sync(context: Any, code: Any, details: str, what: str) -> NoReturn:
    """``context.abort`` from a sync handler (it raises); ``what`` names the abort in the
    error raised when the context is an aio one, whose abort cannot run from here."""
    result = context.abort(code, details)  # raises
    if inspect.isawaitable(result):
        # an aio context handed to this sync code by another interceptor, which calls it on
        # the event loop: its abort cannot run here, and the call ends with UNKNOWN
        close = getattr(result, "close", None)
        if callable(close):  # grpc's are Cython coroutines: not inspect.iscoroutine
            close()
        raise RuntimeError(f"{what}; the status cannot be sent from here")
    raise RuntimeError("ServicerContext.abort returned")  # pragma: no cover


def _ended(context: Any) -> bool:
    """Whether the call is over (its deadline passed, or the client cancelled it). A sync
    handler's context on a ``grpc.aio`` server tells only of a deadline that passed."""
    is_active = getattr(context, "is_active", None)
    if callable(is_active):
        return not is_active()
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0


def _undecodable(method: str, error: Exception) -> None:
    # neither the message nor the parser's text (which may quote it): the type only
    _log.warning(
        "zerotrust: the request message of %s could not be deserialized (%s); the call ends"
        " with INTERNAL",
        method,
        type(error).__name__,
    )


def _deserialize(
    deserializer: Callable[[bytes], Any], raw: bytes, context: Any, method: str
) -> Any:
    """The request of an admitted RPC, deserialized; or the call ends as grpc ends it for a
    message it cannot deserialize (``INTERNAL``, fixed details), the handler not run."""
    try:
        return deserializer(raw)
    except Exception as error:  # any parser failure ends the call, as in grpc
        _undecodable(method, error)
    _abort_sync(context, grpc.StatusCode.INTERNAL, _BAD_REQUEST, "undecodable request")


def _unimplemented(request: Any, context: Any) -> Iterator[Any]:
    """The behaviour of a method the server does not serve, once the Guard admitted the call."""
    context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")  # raises
    yield  # pragma: no cover - a generator, as grpc's stream handlers are


def _iterate_in(run: contextvars.Context, iterator: Iterator[Any]) -> Iterator[Any]:
    """Drive ``iterator`` inside ``run`` step by step (each step may be on another thread)."""
    try:
        while True:
            try:
                item = run.run(next, iterator)
            except StopIteration:
                return
            yield item
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            run.run(close)


class ServerInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Authenticate, authorize and audit every RPC of a ``grpc.server`` with ``guard``.

    ``requirements`` maps full method names (``/pkg.Service/Method``) to a
    :class:`~zerotrust.Requirement`, combined with any :func:`require` on the servicer method.
    ``exempt`` lists full method names served without any check (for instance
    ``/grpc.health.v1.Health/Check``); nothing is exempt by default.
    """

    def __init__(
        self,
        guard: Guard,
        *,
        requirements: Mapping[str, Requirement] | None = None,
        exempt: Iterable[str] = (),
    ) -> None:
        if not isinstance(guard, Guard):
            raise ConfigurationError("guard must be a zerotrust Guard")
        if isinstance(exempt, str):
            raise ConfigurationError("exempt takes a collection of full method names")
        self._guard = guard
        self._requirements = dict(requirements or {})
        for name, req in self._requirements.items():
            named = isinstance(name, str) and name.startswith("/")
            if not named or not isinstance(req, Requirement):
                raise ConfigurationError(
                    "requirements maps '/pkg.Service/Method' names to Requirement objects"
                )
        self._exempt = frozenset(exempt)
        if any(not (isinstance(m, str) and m.startswith("/")) for m in self._exempt):
            raise ConfigurationError("exempt names are full method names: '/pkg.Service/Method'")
        both = sorted(self._exempt & self._requirements.keys())
        if both:  # an exempt method is served unchecked: its requirement would never hold
            raise ConfigurationError(f"methods both exempt and with a requirement: {both}")
        self._peers = PeerCache(guard.authenticator)
        self._wrapped: dict[str, tuple[Any, object, Any]] = {}
        self._lock = threading.Lock()

    # --- grpc ---------------------------------------------------------------------------------

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        """grpc hook: wrap the method's handler so the Guard decides every RPC before it runs."""
        handler = continuation(handler_call_details)
        return self._intercept(
            handler, handler_call_details.method, self._sync_behavior, unknown=_unimplemented
        )

    # --- shared by the sync and aio interceptors ------------------------------------------------

    def _intercept(
        self,
        handler: Any,
        method: str,
        wrap: Callable[..., Any],
        scope: object = None,
        *,
        unknown: Callable[..., Any],
    ) -> Any:
        if method in self._exempt:
            return handler
        if handler is None:
            # a method the server does not serve is decided (and audited) like any other, so a
            # caller learns which methods exist only once the policy admits it: then
            # UNIMPLEMENTED. Built per call, never cached: the names are the caller's. A name
            # no method can have is answered at once (nothing to learn, nothing to audit). A
            # requirement mapped to the name applies as it would if the method were served.
            if len(method) > _MAX_METHOD_NAME or not _METHOD_NAME.fullmatch(method):
                return None
            mapped = self._requirements.get(method)
            return grpc.stream_stream_rpc_method_handler(wrap(unknown, method, mapped, True))
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler and cached[1] is scope:
            return cached[2]
        streaming = (bool(handler.request_streaming), bool(handler.response_streaming))
        attr, factory = _KINDS[streaming]
        behavior = getattr(handler, attr)
        requirement = self._requirement_for(method, behavior)
        deserializer = handler.request_deserializer
        if streaming[0]:  # messages are read (and deserialized) by the handler, after the check
            wrapped = factory(
                wrap(behavior, method, requirement, streaming[1]),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        else:
            # grpc would deserialize the one request message before the wrapper runs: it
            # hands the wrapper the bytes, deserialized there once the Guard admitted the call
            wrapped = factory(
                wrap(behavior, method, requirement, streaming[1], deserializer=deserializer),
                request_deserializer=None,
                response_serializer=handler.response_serializer,
            )
        if len(method) > _MAX_METHOD_NAME:
            # a handler that serves any name (a proxy's catch-all) is handed names the caller
            # chose, before the Guard decides: long ones are not kept (memory stays bounded)
            return wrapped
        with self._lock:
            if len(self._wrapped) >= _MAX_CACHED:
                self._wrapped.clear()
            self._wrapped[method] = (handler, scope, wrapped)
        return wrapped

    def _requirement_for(self, method: str, behavior: Any) -> Requirement | None:
        mapped = self._requirements.get(method)
        decorated = getattr(behavior, REQUIREMENT_ATTRIBUTE, None)
        if decorated is not None and not isinstance(decorated, Requirement):
            raise ConfigurationError(f"{REQUIREMENT_ATTRIBUTE} of {method} is not a Requirement")
        if mapped is not None and decorated is not None:
            return mapped & decorated
        return mapped if mapped is not None else decorated

    def _view(self, method: str, context: Any) -> RequestView:
        return _View(method, context.invocation_metadata() or (), context, self._peers)

    @staticmethod
    def _refusal(outcome: Outcome) -> _Refusal:
        code = getattr(grpc.StatusCode, outcome.grpc_status, None)
        if code is None or code is grpc.StatusCode.OK:
            code = grpc.StatusCode.PERMISSION_DENIED  # never let a refusal look like success
        body = outcome.body()
        details = body["error"] if body else "access_denied"
        trailing = _as_metadata(outcome)
        return code, details, trailing

    def _admit(
        self, context: Any, method: str, requirement: Requirement | None, evaluate: Evaluate
    ) -> tuple[contextvars.Context, Outcome]:
        """Decide in the calling thread; abort, or return a context holding the principal (and
        the admitting outcome)."""
        view = self._view(method, context)
        outcome = evaluate(view, requirement)
        if not outcome.allowed:
            _refuse_sync(context, self._refusal(outcome))  # raises
        if _ended(context):  # while the Guard decided: grpc checked only before the wrapper ran
            _abort_sync(context, grpc.StatusCode.CANCELLED, "cancelled", "the call ended")
        _pass_on(context, outcome)
        run = contextvars.copy_context()
        run.run(_bind, self._guard, view, outcome)
        return run, outcome

    def _sync_behavior(
        self,
        behavior: Callable[..., Any],
        method: str,
        requirement: Requirement | None,
        response_streaming: bool,
        evaluate: Evaluate | None = None,
        *,
        deserializer: Callable[[bytes], Any] | None = None,
    ) -> Callable[..., Any]:
        """A sync behaviour of the same shape; the handler runs in a context with the principal
        (also when grpc drives each step of a stream on a different pool thread). With a
        ``deserializer``, the request arrives as bytes and is deserialized once admitted."""
        decide: Evaluate = evaluate or self._guard.evaluate
        if inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior):
            raise ConfigurationError(f"{method}: async handlers need the AioServerInterceptor")

        if response_streaming:

            def stream(request: Any, context: Any) -> Iterator[Any]:
                run, outcome = self._admit(context, method, requirement, decide)
                if deserializer is not None:
                    request = _deserialize(deserializer, request, context, method)
                if not outcome.headers:
                    yield from _iterate_in(run, iter(run.run(behavior, request, context)))
                    return
                handler_context = _handler_context(context, outcome)
                try:
                    yield from _iterate_in(run, iter(run.run(behavior, request, handler_context)))
                finally:
                    _keep_passed_on(context, outcome)

            return stream

        def unary(request: Any, context: Any) -> Any:
            run, outcome = self._admit(context, method, requirement, decide)
            if deserializer is not None:
                request = _deserialize(deserializer, request, context, method)
            if not outcome.headers:
                return run.run(behavior, request, context)
            try:
                return run.run(behavior, request, _handler_context(context, outcome))
            finally:
                _keep_passed_on(context, outcome)

        return unary
