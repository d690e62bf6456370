"""A real server: gunicorn (sync worker) serving the Django test project over direct mTLS with
zerotrust's SSL context, called by a real httpx client presenting its X509-SVID."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests._gunicorn import GunicornServer, gunicorn_server
from tests.adapters.django.conftest import WEB
from zerotrust import X509Svid, client_ssl_context, match
from zerotrust.dev import DevCA

pytestmark = pytest.mark.network

APP = "tests.adapters.django.project.wsgi:application"
SERVER_ID = "spiffe://example.org/ns/shop/sa/orders"
GUNICORN_CONF = """
import os
from zerotrust.adapters.gunicorn import ZeroTrustTLS

tls = ZeroTrustTLS.from_env()
certfile = os.environ["ZEROTRUST_SVID_CERT"]
keyfile = os.environ["ZEROTRUST_SVID_KEY"]
ssl_context = tls.ssl_context
worker_class = "zerotrust.adapters.gunicorn.SyncWorker"
"""


@dataclass(frozen=True)
class Served:
    server: GunicornServer
    ca: DevCA

    def context(self, svid: X509Svid | None) -> ssl.SSLContext:
        return client_ssl_context(svid, self.ca.bundle, authorizer=match.exact(SERVER_ID))

    def get(self, path: str, svid: X509Svid | None) -> httpx.Response:
        with httpx.Client(verify=self.context(svid), timeout=30) as client:
            return client.get(f"https://localhost:{self.server.port}{path}")


@pytest.fixture(scope="module")
def served(ca: DevCA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("django-gunicorn")
    svid = ca.issue_svid(SERVER_ID, dns_names=["localhost"])
    (tmp / "svid.pem").write_bytes(svid.cert_chain_pem())
    (tmp / "svid.key").write_bytes(svid.private_key_pem())
    (tmp / "svid.key").chmod(0o600)
    (tmp / "bundle.pem").write_bytes(ca.bundle.to_pem())
    (tmp / "gunicorn_conf.py").write_text(GUNICORN_CONF, encoding="utf-8")
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.adapters.django.project.settings",
        "ZEROTRUST_SVID_CERT": str(tmp / "svid.pem"),
        "ZEROTRUST_SVID_KEY": str(tmp / "svid.key"),
        "ZEROTRUST_BUNDLE": str(tmp / "bundle.pem"),
        "ZEROTRUST_TRUST_DOMAIN": "example.org",
        "ZT_TEST_BUNDLE": str(tmp / "bundle.pem"),
    }
    with gunicorn_server(APP, config=tmp / "gunicorn_conf.py", env=env) as server:
        yield Served(server, ca)


def test_the_view_sees_the_callers_spiffe_id(served: Served) -> None:
    response = served.get("/headers/", served.ca.issue_svid(WEB))
    assert response.status_code == 200, served.server.log()
    data = response.json()
    assert (data["principal"], data["context"], data["proven_by"]) == (WEB, WEB, "mtls")


def test_the_policy_still_decides(served: Served) -> None:
    # accepted by the TLS authorizer (same trust domain), refused by the policy
    response = served.get("/headers/", served.ca.issue_svid("spiffe://example.org/ns/ops/sa/x"))
    assert response.status_code == 403
    assert json.loads(response.content)["error"] == "access_denied"


def test_a_client_without_certificate_cannot_connect(served: Served) -> None:
    with pytest.raises(httpx.TransportError):
        served.get("/headers/", None)
