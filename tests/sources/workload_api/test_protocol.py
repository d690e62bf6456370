"""The Workload API protocol edge: the security header, socket addresses, conversions,
backoff and the optional dependency.

SPIRE cannot run in this test environment: server-side tests use the in-process Workload
API server of ``_server.py`` (gRPC on a Unix socket, built from the ``spiffe`` package's
generated protobufs and servicer), which enforces the ``workload.spiffe.io`` header.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from spiffe._proto import workload_pb2 as pb2
from spiffe._proto import workload_pb2_grpc as pb2_grpc

from tests.sources.workload_api._server import (
    HEADER,
    WorkloadApiServer,
    der_certs,
    x509_response,
)
from tests.sources.workload_api.conftest import FAST
from zerotrust import BundleSet, TrustBundle, TrustDomain, X509Svid
from zerotrust.dev import DevCA
from zerotrust.errors import (
    BundleError,
    ConfigurationError,
    InvalidSpiffeId,
    KeysUnavailable,
    MissingDependencyError,
    SourceError,
    SvidError,
    SvidUnavailable,
)
from zerotrust.sources._workload_convert import jwt_bundle_set, split_der
from zerotrust.sources._workload_watch import backoff_delay
from zerotrust.sources.spiffe_workload_api import WorkloadApiJwtSource, WorkloadApiX509Source


def now() -> dt.datetime:
    """The time of the call: the fixtures' SVIDs are issued as each test runs."""
    return dt.datetime.now(dt.timezone.utc)


def test_calls_without_the_header_are_refused(agent: WorkloadApiServer, ca: DevCA) -> None:
    agent.push("x509", x509_response(ca.issue_svid("spiffe://example.org/web"), ca.bundle))
    with grpc.insecure_channel(f"unix:{agent.socket_path}") as channel:
        stub = pb2_grpc.SpiffeWorkloadAPIStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            next(stub.FetchX509SVID(pb2.X509SVIDRequest(), timeout=10))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as refused:
            stub.FetchJWTSVID(pb2.JWTSVIDRequest(audience=["api"]), timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert agent.refused_without_header == 2
        # With the header, the same server answers.
        stream = stub.FetchX509SVID(pb2.X509SVIDRequest(), metadata=[HEADER], timeout=10)
        assert len(next(stream).svids) == 1
        stream.cancel()
    # zerotrust's sources send the header on every call (stream and unary).
    with WorkloadApiX509Source(agent.address, **FAST) as source:
        assert source.get_x509_svid()
    jwt = WorkloadApiJwtSource(agent.address, watch_bundles=False, **FAST)
    with jwt, pytest.raises(SourceError, match="PERMISSION_DENIED"):  # reached the handler
        jwt.token("api")
    assert agent.refused_without_header == 2


@pytest.mark.parametrize(
    ("value", "target"),
    [
        ("unix:///run/agent.sock", "unix:/run/agent.sock"),
        ("unix:/run/agent.sock", "unix:/run/agent.sock"),
        ("UNIX:///run/agent.sock", "unix:/run/agent.sock"),  # schemes are case-insensitive
        # grpc percent-decodes a unix: target's path: it is handed over encoded, once
        ("unix:///run/spire%20agent/api%25.sock", "unix:/run/spire%20agent/api%25.sock"),
    ],
)
def test_socket_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, target: str
) -> None:
    monkeypatch.setenv("SPIFFE_ENDPOINT_SOCKET", value)
    source = WorkloadApiX509Source(wait=False, **FAST)
    source.close()
    assert source.status().socket == target


def test_socket_argument_wins_and_may_be_a_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPIFFE_ENDPOINT_SOCKET", "unix:///elsewhere.sock")
    addresses: list[str | Path] = [
        "/run/agent.sock",
        Path("/run/agent.sock"),
        "unix:/run/agent.sock",
    ]
    for given in addresses:
        source = WorkloadApiJwtSource(given, watch_bundles=False, **FAST)
        source.close()
        status = source.status()
        assert status.socket == "unix:/run/agent.sock"
        assert status.closed and not status.ready and status.expires_at is None


@pytest.mark.parametrize(
    ("env", "arg", "message"),
    [
        (None, None, "SPIFFE_ENDPOINT_SOCKET"),
        ("", None, "SPIFFE_ENDPOINT_SOCKET"),
        ("/run/agent.sock", None, "must be a unix: URI"),
        ("tcp://127.0.0.1:8081", None, "must be a unix: URI"),
        (None, "tcp://127.0.0.1:8081", "only unix: sockets"),
        (None, "unix://agent/run.sock", "no authority"),
        (None, "unix:///run/agent.sock?x=1", "no authority, query"),
        (None, "unix:///run/agent.sock#frag", "no authority, query"),
        (None, "unix:relative.sock", "absolute"),
        (None, "agent.sock", "only unix: sockets"),
        (None, "/" + "a" * 200, "too long"),
        (None, "unix:///", "directory"),
        (None, "unix:///run/", "directory"),
        (None, "unix:///run/agent%00.sock", "absolute"),
        (None, "unix:///run/agent%FF.sock", "not UTF-8"),
        # bytes that are not UTF-8, as os.environ and os.fsdecode give them (lone surrogates)
        (os.fsdecode(b"unix:///run/agent\xff.sock"), None, "not UTF-8"),
        (None, os.fsdecode(b"/run/agent\xff.sock"), "not UTF-8"),
    ],
)
def test_invalid_socket_addresses(
    monkeypatch: pytest.MonkeyPatch, env: str | None, arg: str | None, message: str
) -> None:
    if env is None:
        monkeypatch.delenv("SPIFFE_ENDPOINT_SOCKET", raising=False)
    else:
        monkeypatch.setenv("SPIFFE_ENDPOINT_SOCKET", env)
    with pytest.raises(ConfigurationError, match=message):
        WorkloadApiX509Source(arg, wait=False)


def test_invalid_settings() -> None:
    with pytest.raises(ConfigurationError, match="timeout_first"):
        WorkloadApiX509Source("/run/agent.sock", timeout_first=0)
    with pytest.raises(ConfigurationError, match="backoff_max"):
        WorkloadApiX509Source("/run/agent.sock", backoff_initial=2, backoff_max=1)
    with pytest.raises(ConfigurationError, match="fetch_timeout"):
        WorkloadApiJwtSource("/run/agent.sock", fetch_timeout=-1)
    with pytest.raises(ConfigurationError, match="fetch_timeout"):
        # gRPC would turn a deadline this far ahead into DEADLINE_EXCEEDED on every fetch
        WorkloadApiJwtSource("/run/agent.sock", watch_bundles=False, fetch_timeout=1e10)
    with pytest.raises(InvalidSpiffeId, match="scheme"):
        WorkloadApiJwtSource("/run/agent.sock", spiffe_id="not-an-id")


def test_backoffs_longer_than_the_channel_takes_are_refused() -> None:
    """gRPC takes the reconnect backoff in milliseconds, as a C int (about 24 days): a longer
    one is a ConfigurationError, never an OverflowError from the channel."""
    for settings in ({"backoff_max": 1e7}, {"backoff_initial": 3e6, "backoff_max": 3e6}):
        with pytest.raises(ConfigurationError, match="backoff"):
            WorkloadApiX509Source("/run/agent.sock", wait=False, **settings)
        with pytest.raises(ConfigurationError, match="backoff"):
            WorkloadApiJwtSource("/run/agent.sock", wait=False, **settings)
    longest = (2**31 - 1) / 1000
    WorkloadApiJwtSource(
        "/run/agent.sock", wait=False, backoff_initial=longest, backoff_max=longest
    ).close()


@pytest.mark.parametrize("timeout", [1e10, float("inf"), float("nan"), -1, "5"])
def test_waits_longer_than_a_thread_can_wait_are_refused(timeout: Any) -> None:
    """A wait for the first update a lock cannot honour is a ConfigurationError, never an
    OverflowError (or TypeError) from the thread waiting."""
    with pytest.raises(ConfigurationError, match="timeout_first"):
        WorkloadApiX509Source("/run/agent.sock", timeout_first=timeout)
    with pytest.raises(ConfigurationError, match="timeout_first"):
        WorkloadApiJwtSource("/run/agent.sock", timeout_first=timeout)
    with WorkloadApiX509Source("/run/agent.sock", wait=False, **FAST) as source:
        with pytest.raises(ConfigurationError, match="timeout"):
            source.wait_ready(timeout)
        with pytest.raises(ConfigurationError, match="timeout"):
            asyncio.run(source.wait_ready_async(timeout))


def test_an_agent_that_does_not_implement_a_stream_is_not_retried(
    agent: WorkloadApiServer,
) -> None:
    """SPIFFE Workload Endpoint, Appendix A: UNIMPLEMENTED means "report an error, do not
    retry". The wait for the first update ends with that error at once, not at its timeout."""
    agent.refusing = grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(SvidUnavailable, match="refused: UNIMPLEMENTED"):
        WorkloadApiX509Source(agent.address, timeout_first=10)
    with pytest.raises(KeysUnavailable, match="refused: UNIMPLEMENTED"):
        WorkloadApiJwtSource(agent.address, timeout_first=10)
    with WorkloadApiX509Source(agent.address, wait=False, **FAST) as source:
        with pytest.raises(SvidUnavailable, match="refused: UNIMPLEMENTED"):
            source.wait_ready(timeout=10)
        status = source.status()
        assert status.closed and not status.ready


def test_token_fetch_is_bounded(socket_dir: str) -> None:
    with (
        WorkloadApiJwtSource(
            f"{socket_dir}/absent.sock", watch_bundles=False, fetch_timeout=0.3
        ) as source,
        pytest.raises(SourceError, match="DEADLINE_EXCEEDED"),
    ):
        source.token("api")


def test_der_splitting(ca: DevCA, ca_with_intermediate: DevCA) -> None:
    chain = ca_with_intermediate.issue_svid("spiffe://example.org/web").cert_chain
    assert split_der(der_certs(chain), limit=10, what="chain") == list(chain)
    data = der_certs(chain)
    with pytest.raises(BundleError, match="no certificate"):
        split_der(b"", limit=10, what="chain")
    with pytest.raises(BundleError, match="more than 1"):
        split_der(data, limit=1, what="chain")
    with pytest.raises(BundleError, match="truncated"):
        split_der(data[:-1], limit=10, what="chain")
    with pytest.raises(BundleError, match="not a sequence"):
        split_der(b"\x04\x00", limit=10, what="chain")
    with pytest.raises(BundleError, match="invalid DER length"):
        split_der(b"\x30\x85\x00\x00\x00\x00\x01", limit=10, what="chain")
    with pytest.raises(BundleError, match="not valid DER"):
        split_der(b"\x30\x03\x02\x01\x01", limit=10, what="chain")
    with pytest.raises(BundleError, match="exceeds"):
        split_der(b"\x30" * (5 << 20), limit=10, what="chain")


def test_jwt_bundle_documents() -> None:
    good = b'{"keys": [{"kty": "EC", "crv": "P-256", "kid": "a", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}, {"use": "x509-svid", "kty": "EC"}]}'  # noqa: E501
    docs = {"spiffe://example.org": good, "other.org": b'{"keys": []}'}
    bundles, left_out = jwt_bundle_set(docs, None)
    assert [b.trust_domain.name for b in bundles] == ["example.org"] and left_out is None
    assert dict(bundles.get("example.org").jwt_authorities["a"])["use"] == "jwt-svid"  # type: ignore[union-attr]
    assert jwt_bundle_set({"spiffe://example.org": good}, bundles)[0] is bundles
    # A document that cannot be read leaves its domain out (none of its tokens verify); the
    # others apply: one bad document cannot keep another domain's withdrawn key in use.
    for bad, reason in [
        (b"[1]", "not a JSON object"),
        (b'{"keys": [1]}', "not an object"),
        (b'{"keys": [{"kty": "EC", "d": "x", "kid": "a"}]}', "private"),
        (b"{" * 2_000_000, "exceeds"),
    ]:
        kept, left_out = jwt_bundle_set({"example.org": good, "partner.example": bad}, None)
        assert kept.trust_domains == {TrustDomain.parse("example.org")}
        assert left_out is not None and reason in left_out and "partner.example" in left_out
    kept, left_out = jwt_bundle_set({"Not A Domain": good, "example.org": good}, None)
    assert len(kept) == 1 and left_out is not None and "invalid trust domain" in left_out


def test_svid_without_bundle_or_key_is_refused(ca: DevCA) -> None:
    from zerotrust.sources._workload_convert import SvidEntry, x509_context

    response = x509_response(ca.issue_svid("spiffe://example.org/web"), ca.bundle)
    entry = response.svids[0]
    fields = (entry.spiffe_id, entry.x509_svid, entry.x509_svid_key, entry.bundle)
    assert x509_context([SvidEntry(*fields)], {}, previous=None, now=now()).svid.spiffe_id
    with pytest.raises(SvidError, match="PKCS#8"):
        x509_context(
            [SvidEntry(fields[0], fields[1], b"junk", fields[3])], {}, previous=None, now=now()
        )
    with pytest.raises(BundleError, match="no certificate"):
        x509_context([SvidEntry(*fields[:3], b"")], {}, previous=None, now=now())
    with pytest.raises(BundleError, match="no bundle for the SVID"):
        x509_context([SvidEntry("", *fields[1:])], {}, previous=None, now=now())
    with pytest.raises(SvidError, match="holds no SVID"):
        x509_context([], {}, previous=None, now=now())


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    for failures in range(40):
        ceiling = min(30.0, 0.5 * 2**failures)
        delays = {backoff_delay(failures, 0.5, 30.0) for _ in range(20)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered


@pytest.mark.parametrize(("blocked", "package"), [("grpc", "grpcio"), ("spiffe", "spiffe")])
def test_missing_dependency_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, blocked: str, package: str
) -> None:
    for name in list(sys.modules):
        if name.startswith("zerotrust.sources.") and "workload" in name:
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, blocked, None)
    with pytest.raises(MissingDependencyError) as missing:
        importlib.import_module("zerotrust.sources.spiffe_workload_api")
    assert missing.value.extra == "spiffe" and missing.value.package == package
    assert "zerotrust[spiffe]" in str(missing.value)


def test_a_socket_whose_name_needs_percent_encoding(socket_dir: str, ca: DevCA) -> None:
    """The URI is decoded once to check the path and handed to grpc encoded: grpc decodes a
    unix: target itself, so a name holding '%' or a space is reached exactly."""
    path = f"{socket_dir}/spire agent 100%.sock"
    agent = WorkloadApiServer(quote(path))  # grpc decodes the server's address too
    agent.start()
    try:
        agent.push("x509", x509_response(ca.issue_svid("spiffe://example.org/web"), ca.bundle))
        assert Path(path).exists()
        with WorkloadApiX509Source("unix://" + quote(path), **FAST) as source:
            assert str(source.get_x509_svid().spiffe_id) == "spiffe://example.org/web"
    finally:
        agent.stop()


def test_once_withdrawn_an_unusable_svid_still_lets_the_bundles_apply(
    ca: DevCA, other_ca: DevCA
) -> None:
    from zerotrust.sources._workload_convert import SvidEntry, x509_context

    def entries(svid: X509Svid, bundle: TrustBundle) -> list[SvidEntry]:
        item = x509_response(svid, bundle).svids[0]
        return [SvidEntry(item.spiffe_id, item.x509_svid, item.x509_svid_key, item.bundle)]

    chosen = "spiffe://example.org/a"
    partner = {"spiffe://other.org": b"".join(
        c.public_bytes(serialization.Encoding.DER) for c in other_ca.bundle.x509_authorities
    )}  # fmt: skip
    first = x509_context(
        entries(ca.issue_svid(chosen), ca.bundle),
        partner,
        spiffe_id=chosen,
        previous=None,
        now=now(),
    )
    assert first.bundles.get("other.org") is not None
    # the chosen SVID withdrawn (another one sent), federation kept
    withdrawn = x509_context(
        entries(ca.issue_svid("spiffe://example.org/b"), ca.bundle),
        partner,
        spiffe_id=chosen,
        previous=first,
        now=now(),
    )
    assert withdrawn.svid is None and withdrawn.bundles.get("other.org") is not None
    # then an unusable SVID for the chosen ID (signed by a CA the bundle does not hold), and
    # the federation withdrawn: the update's bundles still apply, and no SVID is served
    stranger = DevCA.create("example.org").issue_svid(chosen)
    later = x509_context(
        entries(stranger, ca.bundle), {}, spiffe_id=chosen, previous=withdrawn, now=now()
    )
    assert later.svid is None and later.refused is not None
    assert later.bundles.get("other.org") is None


def test_der_length_forms_at_their_limits(ca: DevCA) -> None:
    """DER lengths: the short form below 0x80, one to three length bytes in the long form
    (0x80, BER's indefinite length, and four or more are refused); a certificate of up to
    MAX_CERT_DER_BYTES is read, a larger one is refused before parsing."""
    from zerotrust.x509._certs import MAX_CERT_DER_BYTES, MAX_PEM_BYTES

    cert = der_certs(ca.bundle.x509_authorities)
    assert len(split_der(cert * 2, limit=2, what="b")) == 2  # exactly the limit
    for data, reason in [
        (b"\x30", "not a sequence"),
        (b"\x30\x80" + b"\x00" * 200, "invalid DER length"),
        (b"\x30\x84\x00\x00\x01\x00" + b"\x00" * 256, "invalid DER length"),
        (b"\x30\x82\x01", "invalid DER length"),
        (b"\x30\x7f" + b"\x00" * 127, "not valid DER"),
        (b"\x30\x81\x7f" + b"\x00" * 127, "not valid DER"),
        (cert + b"\x30", "not a sequence"),
    ]:
        with pytest.raises(BundleError, match=reason):
            split_der(data, limit=10, what="b")
    with pytest.raises(BundleError, match="not valid DER"):  # read up to the limit
        split_der(b"\x30" * MAX_PEM_BYTES, limit=10, what="b")
    with pytest.raises(BundleError, match="exceeds"):
        split_der(b"\x30" * (MAX_PEM_BYTES + 1), limit=10, what="b")
    top = MAX_CERT_DER_BYTES
    at_limit = b"\x30\x83" + top.to_bytes(3, "big") + b"\x00" * top
    with pytest.raises(BundleError, match="not valid DER"):
        split_der(at_limit, limit=10, what="b")
    over = b"\x30\x83" + (top + 1).to_bytes(3, "big") + b"\x00" * (top + 1)
    with pytest.raises(BundleError, match="oversized"):
        split_der(over, limit=10, what="b")


def test_svid_private_keys_of_other_types_are_refused(ca: DevCA) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed448

    from zerotrust.sources._workload_convert import SvidEntry, x509_context

    item = x509_response(ca.issue_svid("spiffe://example.org/web"), ca.bundle).svids[0]
    key = ed448.Ed448PrivateKey.generate().private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    entry = SvidEntry(item.spiffe_id, item.x509_svid, key, item.bundle)
    with pytest.raises(SvidError, match="unsupported SVID private key type"):
        x509_context([entry], {}, previous=None, now=now())


def test_an_unusable_first_svid_is_refused_and_a_later_one_keeps_the_working_svid(
    ca: DevCA,
) -> None:
    from zerotrust.sources._workload_convert import SvidEntry, x509_context

    def entries(svid: X509Svid) -> list[SvidEntry]:
        item = x509_response(svid, ca.bundle).svids[0]
        return [SvidEntry(item.spiffe_id, item.x509_svid, item.x509_svid_key, item.bundle)]

    stranger = DevCA.create("example.org").issue_svid("spiffe://example.org/web")
    with pytest.raises(SvidError, match="not usable"):
        x509_context(entries(stranger), {}, previous=None, now=now())  # nothing to keep
    good = ca.issue_svid("spiffe://example.org/web")
    first = x509_context(entries(good), {}, previous=None, now=now())
    later = x509_context(entries(stranger), {}, previous=first, now=now())
    assert later.svid is first.svid
    assert later.refused is not None and "not usable" in later.refused
    assert "kept does not validate" not in later.refused  # the kept one still does


def test_a_federated_copy_of_the_workloads_own_domain_does_not_replace_its_bundle(
    ca: DevCA,
) -> None:
    from zerotrust.sources._workload_convert import SvidEntry, x509_context

    impostor = DevCA.create("example.org")
    item = x509_response(ca.issue_svid("spiffe://example.org/web"), ca.bundle).svids[0]
    entry = SvidEntry(item.spiffe_id, item.x509_svid, item.x509_svid_key, item.bundle)
    federated = {"spiffe://example.org": der_certs(impostor.bundle.x509_authorities)}
    context = x509_context([entry], federated, previous=None, now=now())
    assert context.bundles.get("example.org") == ca.bundle


def test_an_svid_valid_up_to_the_clock_skew_ahead_is_taken(ca: DevCA) -> None:
    from zerotrust.sources._workload_convert import MAX_CLOCK_SKEW, SvidEntry, x509_context

    svid = ca.issue_svid("spiffe://example.org/web")
    item = x509_response(svid, ca.bundle).svids[0]
    entry = SvidEntry(item.spiffe_id, item.x509_svid, item.x509_svid_key, item.bundle)
    start = svid.leaf.not_valid_before_utc
    taken = x509_context([entry], {}, previous=None, now=start - MAX_CLOCK_SKEW)
    assert taken.svid is not None and taken.refused is None
    too_early = start - MAX_CLOCK_SKEW - dt.timedelta(seconds=1)
    with pytest.raises(SvidError, match="not usable"):
        x509_context([entry], {}, previous=None, now=too_early)


def test_jwt_bundle_documents_are_read_up_to_the_size_limit() -> None:
    from zerotrust.sources._workload_convert import _MAX_JWKS_BYTES

    at_limit = b'{"keys": []}'.ljust(_MAX_JWKS_BYTES)
    assert jwt_bundle_set({"example.org": at_limit}, None) == (BundleSet(), None)
    _, left_out = jwt_bundle_set({"example.org": at_limit + b" "}, None)
    assert left_out is not None and "exceeds" in left_out
