"""Concurrency: tokens verified through a Guard and real mTLS handshakes (threads and asyncio
tasks) while other threads rotate the signing keys, the SVIDs and the trust bundle as fast as
they can.

Every rotator publishes the next snapshot to a :class:`History` and then puts it in place; a
worker reads the history's version before and after its call, so whatever
state the call saw is one of ``window(before, after)``. The invariants (counts and snapshots,
never timing): no exception except the expected refusals, a token is accepted only if some
key set in its window holds its key (a cached token included) and refused only if some key set
in its window lacks it; every certificate presented is one of the issued SVIDs and the
handshake proved its key; an untrusted authority is accepted only while a bundle in the window
holds it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import threading
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import pytest

from tests._tls import call, tls_server
from tests.faults.conftest import BUDGET, Load
from zerotrust import (
    Authenticator,
    Callers,
    Guard,
    MemorySink,
    Policy,
    RotatingBundleSource,
    RotatingSvidSource,
    Rule,
    TrustBundle,
    X509Svid,
    client_ssl_context,
    match,
    server_ssl_context,
)
from zerotrust.authn.request import Request
from zerotrust.dev import DevCA
from zerotrust.errors import UnknownKey
from zerotrust.tokens import KeyRing, PrivateJWK, TokenIssuer, TokenVerifier

pytestmark = pytest.mark.network

TD = "example.org"
ISS = "https://issuer.test"
SERVER = "spiffe://example.org/echo"
CLIENT = "spiffe://example.org/web"
OUTSIDER = "spiffe://example.org/outsider"
ROTATIONS = 20_000  # a bound on each rotator's steps; the rotators stop when the workers are done
TOKEN_CALLS = 2_000  # Guard evaluations by the token threads
HANDSHAKES = 160  # mTLS handshakes by the handshake threads
TASKS, TASK_ROUNDS = 6, 10  # asyncio tasks, each doing this many (evaluation, handshake) pairs


class History:
    """Snapshots in publication order (one rotator thread appends, anyone reads).

    A rotator publishes the next snapshot *before* putting it in place, so a call that read
    version ``before`` first and ``after`` last saw only states in ``window(before, after)``.
    """

    def __init__(self, first: Any) -> None:
        self._items = [first]

    @property
    def latest(self) -> Any:
        return self._items[-1]

    def publish(self, item: Any) -> None:
        self._items.append(item)

    def version(self) -> int:
        return len(self._items) - 1

    def window(self, before: int, after: int) -> list[Any]:
        """The states from the one before ``before`` (maybe still in place) up to ``after``."""
        return self._items[max(before - 1, 0) : after + 1]


def kid_of(token: str) -> str:
    header = token.split(".", 1)[0]
    kid = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]
    assert isinstance(kid, str)
    return kid


class World:
    """The rotating key ring, SVIDs and bundle, with the history of each."""

    def __init__(self) -> None:
        self.cas = [DevCA.create(TD), DevCA.create(TD)]  # always trusted
        self.untrusted = DevCA.create(TD)  # trusted only while the bundle holds it
        self.kids = itertools.count(1)
        self.ring = KeyRing(PrivateJWK.generate("ES256", kid=f"k{next(self.kids)}"))
        self.issuer = TokenIssuer(self.ring, issuer=ISS)
        self.tokens = [self.issue()]
        self.keys = History(self.kid_set())
        self.server_fps: set[str] = set()
        self.client_fps: set[str] = set()
        self.server_svid = RotatingSvidSource(self.svid(SERVER, self.server_fps))
        self.client_svid = RotatingSvidSource(self.svid(CLIENT, self.client_fps))
        self.outsider = self.untrusted.issue_svid(OUTSIDER)
        self.bundles = RotatingBundleSource(self.bundle(with_untrusted=False))
        self.trusts_outsider = History(False)
        self.steps = itertools.count()
        for _ in range(6):  # some retired keys and their tokens before the load starts
            self.rotate_key()

    def issue(self) -> tuple[str, str]:
        token = self.issuer.issue(subject=CLIENT, audience=SERVER, ttl=600)
        return kid_of(token), token

    def kid_set(self) -> frozenset[str]:
        return frozenset(key.kid for key in self.ring.key_set() if key.kid is not None)

    def svid(self, spiffe_id: str, fps: set[str]) -> X509Svid:
        ca = self.cas[len(fps) % 2]
        svid = ca.issue_svid(spiffe_id, dns_names=["localhost"])
        fps.add(svid.fingerprint)  # recorded before anyone can present it
        return svid

    def bundle(self, *, with_untrusted: bool) -> TrustBundle:
        authorities = [ca.bundle.x509_authorities[0] for ca in self.cas]
        if with_untrusted:
            authorities.append(self.untrusted.bundle.x509_authorities[0])
        return TrustBundle(TD, authorities)

    def rotate_key(self) -> str:
        """Rotate to a new key (and issue a token with it), or retire the previous one."""
        if self.ring.previous:
            kid = self.ring.previous[0].kid or ""
            self.keys.publish(self.kid_set() - {kid})
            self.ring.retire(kid)
        else:
            key = PrivateJWK.generate("ES256", kid=f"k{next(self.kids)}")
            self.keys.publish(self.kid_set() | {key.kid})
            self.ring.rotate(key)
            self.tokens.append(self.issue())
        assert self.keys.latest == self.kid_set()
        return "keys"

    def rotate_svid(self) -> str:
        """Alternately: a new server SVID, a new client SVID (from either authority)."""
        if next(self.steps) % 2:
            self.server_svid.set(self.svid(SERVER, self.server_fps))
        else:
            self.client_svid.set(self.svid(CLIENT, self.client_fps))
        return "svids"

    def rotate_bundle(self) -> str:
        """A new bundle object, alternately with and without the untrusted authority."""
        trusted = not self.trusts_outsider.latest
        self.trusts_outsider.publish(trusted)
        self.bundles.set(self.bundle(with_untrusted=trusted))
        return "bundle"

    def rotators(self) -> list[Load]:
        """One thread per rotating thing, each bounded by ``ROTATIONS`` steps."""
        steps: list[Callable[[], str]] = [self.rotate_key, self.rotate_svid, self.rotate_bundle]
        return [Load(lambda _, f=f: f(), workers=1, max_calls=ROTATIONS) for f in steps]

    def guard(self) -> Guard:
        verifier = TokenVerifier(issuer=ISS, audience=SERVER, keys=self.ring, algorithms=["ES256"])
        return Guard(
            authenticator=Authenticator(tokens=verifier, require_token=True),
            policy=Policy([Rule(id="td", callers=[Callers(trust_domains=[TD])])]),
            audit=MemorySink(max_events=100),
            service="echo",
        )


def view(token: str) -> Request:
    return Request(route="/echo", path="/echo", headers={"authorization": f"Bearer {token}"})


def judge_token(world: World, kid: str, before: int, outcome: Any) -> str:
    seen = world.keys.window(before, world.keys.version())
    if outcome.allowed:
        assert any(kid in keys for keys in seen), f"{kid} accepted, never published: {seen}"
        return "accepted"
    assert isinstance(outcome.error, UnknownKey), repr(outcome.error)
    assert any(kid not in keys for keys in seen), f"{kid} refused while published: {seen}"
    return "refused"


def pick(world: World, n: int) -> tuple[str, str]:
    if n % 8 == 0:
        return world.issue()  # issued now, while the ring rotates: never a torn kid/key pair
    tokens = world.tokens
    return tokens[-1 - n % 4]  # the newest four: current, previous, and retired keys


def judge_handshake(world: World, fingerprint: str, peer: Any) -> str:
    assert str(peer.spiffe_id) == SERVER
    # the handshake proved the key of the certificate; the certificate is an issued SVID
    assert fingerprint == peer.fingerprint
    assert fingerprint in world.server_fps
    return "handshake"


def test_rotation_races_with_verification_and_handshakes() -> None:
    world = World()
    guard = world.guard()
    server_ctx = server_ssl_context(
        world.server_svid, world.bundles, authorizer=match.member_of(TD)
    )
    server_id = match.exact(SERVER)
    clients = [client_ssl_context(world.client_svid, world.bundles, authorizer=server_id)]
    clients.append(client_ssl_context(world.client_svid, world.bundles, authorizer=server_id))
    outsider = client_ssl_context(world.outsider, world.bundles, authorizer=server_id)
    turns = itertools.count()

    with tls_server(server_ctx) as (port, log):

        def evaluate(_: int) -> str:
            kid, token = pick(world, next(turns))
            before = world.keys.version()
            return judge_token(world, kid, before, guard.evaluate(view(token)))

        def handshake(index: int) -> str:
            if index < 2:  # each client context is shared with the asyncio tasks
                reply, peer, fingerprint = call(port, clients[index % 2])
                assert reply == b"ok"
                return judge_handshake(world, fingerprint, peer)
            before = world.trusts_outsider.version()
            try:
                reply = call(port, outsider)[0]
            except OSError:  # ssl.SSLError, a reset: the server refused the handshake
                reply = b""
            seen = world.trusts_outsider.window(before, world.trusts_outsider.version())
            assert (reply == b"ok") in seen, f"outsider got {reply!r}, bundles {seen}"
            return f"outsider {'accepted' if reply == b'ok' else 'refused'}"

        async def task(n: int) -> None:
            for round_ in range(TASK_ROUNDS):
                kid, token = pick(world, n + round_)
                before = world.keys.version()
                judge_token(world, kid, before, await guard.aevaluate(view(token)))
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        "127.0.0.1", port, ssl=clients[n % 2], server_hostname="localhost"
                    ),
                    BUDGET,
                )
                try:
                    assert await asyncio.wait_for(reader.readexactly(2), BUDGET) == b"ok"
                    sslobj = writer.get_extra_info("ssl_object")
                    leaf = sslobj.getpeercert(binary_form=True)
                    fingerprint = hashlib.sha256(leaf).hexdigest()
                    judge_handshake(world, fingerprint, sslobj.zerotrust_peer)
                finally:
                    writer.close()
                    # the server closes without close_notify: our close_notify may meet a
                    # reset once the exchange is over, which is no refusal
                    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                        await asyncio.wait_for(writer.wait_closed(), BUDGET)

        async def tasks() -> None:
            await asyncio.gather(*(task(n) for n in range(TASKS)))

        with ExitStack() as stack:
            rotators = [stack.enter_context(load) for load in world.rotators()]
            with (
                Load(evaluate, workers=3, max_calls=TOKEN_CALLS) as tokens,
                Load(handshake, workers=3, max_calls=HANDSHAKES) as handshakes,
            ):
                asyncio.run(tasks())
                done(tokens, TOKEN_CALLS)
                done(handshakes, HANDSHAKES)
            for load in rotators:
                load.stop()
        assert not [load.errors for load in rotators if load.errors]
        rotations = sum((load.snapshot() for load in rotators), Counter[str]())

        counts = tokens.snapshot()
        assert counts["refused"] > 0 and counts["accepted"] > 0, counts
        shakes = handshakes.snapshot()
        assert shakes["handshake"] > 0, shakes
        accepted = shakes["handshake"] + shakes["outsider accepted"] + TASKS * TASK_ROUNDS
        with log.lock:  # the server saw exactly the accepted handshakes, each an issued SVID
            assert len(log.peers) == accepted, (len(log.peers), shakes)
            assert {p.fingerprint for p in log.peers} <= world.client_fps | {
                world.outsider.fingerprint
            }
            assert all(isinstance(e, OSError) for e in log.errors), log.errors
            assert len(log.errors) >= shakes["outsider refused"], (log.errors, shakes)

        # settled: the final snapshots hold exactly
        token = world.tokens[-1][1]
        assert guard.evaluate(view(token)).allowed
        assert not guard.evaluate(view(world.tokens[-4][1])).allowed
        for trusted in (False, True):
            world.bundles.set(world.bundle(with_untrusted=trusted))
            try:
                assert (call(port, outsider)[0] == b"ok") is trusted
            except OSError:
                assert not trusted
    assert rotations["keys"] > 0 and rotations["svids"] > 0 and rotations["bundle"] > 0


def done(load: Load, calls: int) -> None:
    load.wait_for(lambda counts: sum(counts.values()) >= calls, f"{calls} calls")
    assert not load.errors, load.errors


# --- a found race: a slow refresh rolls the context back to an older SVID ----------------------


class GatedBundles:
    """A bundle source that holds one chosen thread inside ``get_bundle_set`` until released."""

    def __init__(self, bundle: TrustBundle) -> None:
        self._bundles = bundle.get_bundle_set()
        self.held: threading.Thread | None = None
        self.entered = threading.Event()
        self.release = threading.Event()

    def get_bundle_set(self) -> Any:
        if threading.current_thread() is self.held:
            self.entered.set()
            assert self.release.wait(BUDGET)
        return self._bundles


def test_a_slow_refresh_does_not_roll_back_a_rotated_svid(ca: DevCA) -> None:
    first, second, third = (ca.issue_svid(SERVER, dns_names=["localhost"]) for _ in range(3))
    svids = RotatingSvidSource(first)
    bundles = GatedBundles(ca.bundle)
    ctx = server_ssl_context(svids, bundles, authorizer=match.member_of(TD))
    svids.set(second)
    slow = threading.Thread(target=ctx.refresh)  # reads `second`, then waits on the bundles
    bundles.held = slow
    slow.start()
    try:
        assert bundles.entered.wait(BUDGET)
        svids.set(third)
        ctx.refresh()  # another connection loads `third`
        assert ctx.current_svid is third
    finally:
        bundles.release.set()
        slow.join(BUDGET)
    assert ctx.current_svid is svids.get_x509_svid()  # fails: `second` is loaded again
