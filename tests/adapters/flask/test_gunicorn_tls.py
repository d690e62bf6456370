"""The gunicorn pieces without a server: configuration, the context hook, the worker check."""

from __future__ import annotations

from pathlib import Path

import pytest
from gunicorn.config import Config

from zerotrust import ZeroTrustSSLContext, match
from zerotrust.adapters.gunicorn import SyncWorker, ThreadWorker, ZeroTrustTLS
from zerotrust.dev import DevCA
from zerotrust.errors import ConfigurationError


def files(ca: DevCA, tmp_path: Path) -> dict[str, str]:
    svid = ca.issue_svid("spiffe://example.org/ns/shop/sa/orders")
    (tmp_path / "svid.pem").write_bytes(svid.cert_chain_pem())
    (tmp_path / "svid.key").write_bytes(svid.private_key_pem())
    (tmp_path / "bundle.pem").write_bytes(ca.bundle.to_pem())
    return {
        "ZEROTRUST_SVID_CERT": str(tmp_path / "svid.pem"),
        "ZEROTRUST_SVID_KEY": str(tmp_path / "svid.key"),
        "ZEROTRUST_BUNDLE": str(tmp_path / "bundle.pem"),
        "ZEROTRUST_TRUST_DOMAIN": "example.org",
    }


def config(worker: str) -> Config:
    cfg = Config()
    cfg.set("worker_class", worker)
    return cfg


def test_context_hook_builds_one_context_per_process(ca: DevCA, tmp_path: Path) -> None:
    tls = ZeroTrustTLS.from_env(files(ca, tmp_path))
    for worker in (SyncWorker, ThreadWorker):
        cfg = config(f"{worker.__module__}.{worker.__name__}")
        context = tls.ssl_context(cfg, lambda: None)
        assert isinstance(context, ZeroTrustSSLContext)
        assert tls.ssl_context(cfg, lambda: None) is context  # gunicorn asks per connection
        assert context.current_svid is not None
    assert "member_of" in repr(tls)


def test_other_workers_are_refused(ca: DevCA, tmp_path: Path) -> None:
    tls = ZeroTrustTLS.from_env(files(ca, tmp_path), authorizer=match.member_of("example.org"))
    for worker in ("sync", "gthread"):
        with pytest.raises(ConfigurationError, match="worker"):
            tls.ssl_context(config(worker), lambda: None)


def test_configuration_errors(ca: DevCA, tmp_path: Path) -> None:
    env = files(ca, tmp_path)
    with pytest.raises(ConfigurationError, match="ZEROTRUST_BUNDLE"):
        ZeroTrustTLS.from_env({k: v for k, v in env.items() if k != "ZEROTRUST_BUNDLE"})
    with pytest.raises(ConfigurationError, match="authorizer"):
        ZeroTrustTLS(ca.issue_svid("spiffe://example.org/x"), ca.bundle, authorizer=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("setting", "value"),
    [("ciphers", "AES128-SHA"), ("ca_certs", "other-ca.pem"), ("cert_reqs", 1)],
)
def test_gunicorn_tls_settings_that_would_be_ignored_are_refused(
    ca: DevCA, tmp_path: Path, setting: str, value: object
) -> None:
    """gunicorn's ciphers, ca_certs and cert_reqs configure the context ZeroTrustTLS replaces:
    set, they would be silently ignored (a cipher list believed in force), so the hook refuses
    them."""
    tls = ZeroTrustTLS.from_env(files(ca, tmp_path))
    cfg = config("zerotrust.adapters.gunicorn.SyncWorker")
    cfg.set(setting, value)
    with pytest.raises(ConfigurationError, match=f"gunicorn's {setting} do not apply"):
        tls.ssl_context(cfg, lambda: None)
