"""``zerotrust config check`` and ``zerotrust policy explain``."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_cli import run
from tests.config.helpers import AUD, PSEUDONYM_KEY, ROUTE, TOML, make_files, make_issuer, write
from zerotrust.dev import DevCA

POLICY = """
id = "orders"

[[rules]]
id = "shop-reads"
scopes = ["orders:read"]
from = [{ spiffe_ids = ["spiffe://example.org/ns/shop/*"] }]
to = [{ methods = ["GET"], routes = ["/orders/{order_id}"] }]

[[rules]]
id = "health"
from = [{ anonymous = true }]
to = [{ routes = ["/healthz"] }]

[[rules]]
id = "no-partner-deletes"
action = "DENY"
from = [{ trust_domains = ["partner.example"] }]
to = [{ methods = ["DELETE"] }]

[[rules]]
id = "auditors"
from = [{ issuers = ["https://issuer.example"], proven_by = ["jwt"] }]
to = [{ routes = ["/reports"] }]
when = [{ key = "claims.tenant", values = ["acme"] }]

[[rules]]
id = "tools-of-the-issuer"
from = [{ subjects = ["tool-*"] }]
to = [{ routes = ["/tools"] }]
[[rules.when]]
key = "claims.iss"
values = ["https://issuer.example"]
[[rules.when]]
key = "claims.sub"
values = ["tool-a"]

[[rules]]
id = "grpc-reads"
from = [{ trust_domains = ["example.org"], proven_by = ["mtls", "mtls+jwt"] }]
to = [{ kinds = ["grpc"], routes = ["/shop.Orders/Get"] }]

[[rules]]
id = "opa"
action = "CUSTOM"
hook = "opa"
to = [{ routes = ["/admin/*"] }]

[[rules]]
id = "admins-soon-read-only"
action = "DENY"
dry_run = true
from = [{ spiffe_ids = ["spiffe://example.org/ns/ops/*"] }]
to = [{ routes = ["/admin/*"], not_methods = ["GET"] }]

[[rules]]
id = "admins"
from = [{ spiffe_ids = ["spiffe://example.org/ns/ops/*"] }]
to = [{ routes = ["/admin/*"] }]
"""
WEB = "spiffe://example.org/ns/shop/sa/web"
OPS = "spiffe://example.org/ns/ops/sa/a"
AUDITOR = ["--route", "/reports", "--issuer", "https://issuer.example", "--subject", "auditor"]
ADMIN = ["--route", "/admin/users", "--spiffe-id", OPS]


@pytest.fixture
def settings_dir(tmp_path: Path) -> Path:
    files = make_files(tmp_path, make_issuer())
    write(files / "zerotrust.toml", TOML)
    return files


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    return write(tmp_path / "explain.toml", POLICY)


# --- config check -----------------------------------------------------------------------------


def test_config_check_loads_the_settings_as_the_service_would(
    settings_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    file = str(settings_dir / "zerotrust.toml")
    monkeypatch.delenv("ZEROTRUST_CONFIG", raising=False)
    assert run(capsys, "config", "check", file, "--no-env") == (
        0,
        f"ok: settings from {file}\n",
        "",
    )
    # the environment takes part, as at start-up: a bad variable is named
    monkeypatch.setenv("ZEROTRUST_TOKENS__LEEWAY", "sixty")
    code, out, err = run(capsys, "config", "check", file)
    assert (code, out) == (2, "")
    assert err == "zerotrust: error: [configuration_error] ZEROTRUST_TOKENS__LEEWAY: not a number\n"
    assert run(capsys, "config", "check", file, "--no-env")[0] == 0
    monkeypatch.setenv("ZEROTRUST_TOKENS__LEEWAY", "5")
    monkeypatch.setenv("ZEROTRUST_CONFIG", file)  # names the file, as Settings.load reads it
    assert run(capsys, "config", "check")[1] == f"ok: settings from {file}, environment\n"
    # a file named on the command line is the one checked
    other = write(settings_dir / "other.toml", TOML.replace('"orders"', '"billing"', 1))
    code, out, _ = run(capsys, "config", "check", str(other), "--show")
    assert code == 0 and json.loads(out)["settings"]["service"] == "billing"


def test_config_check_show_redacts_secrets_and_names_origins(
    settings_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    file = str(settings_dir / "zerotrust.toml")
    monkeypatch.delenv("ZEROTRUST_CONFIG", raising=False)
    monkeypatch.setenv("ZEROTRUST_AUDIT__PSEUDONYMIZE", "subject")
    monkeypatch.setenv("ZEROTRUST_AUDIT__PSEUDONYM_KEY", PSEUDONYM_KEY)
    code, out, _ = run(capsys, "config", "check", file, "--show")
    assert code == 0 and PSEUDONYM_KEY not in out
    shown = json.loads(out)
    assert out.endswith("}\n")
    assert shown["settings"]["audit"]["pseudonym_key"] == "<redacted>"
    assert shown["settings"]["tokens"]["leeway"] == 30
    assert shown["origins"]["tokens.leeway"] == f"{file}: tokens.leeway"
    assert shown["origins"]["audit.pseudonym_key"] == "ZEROTRUST_AUDIT__PSEUDONYM_KEY"
    # the Redis URL's query may hold what the client needs, secrets among it: names only
    monkeypatch.setenv("ZEROTRUST_STORE__URL", "rediss://cache:6380/0?ssl_keyfile=/run/k.pem")
    code, out, _ = run(capsys, "config", "check", file, "--show")
    assert code == 0 and "/run/k.pem" not in out
    shown_url = "rediss://cache:6380/0?ssl_keyfile=<redacted>"
    assert json.loads(out)["settings"]["store"]["url"] == shown_url
    # so may a JWKS URL's (user information in one is refused, and not shown either)
    monkeypatch.setenv("ZEROTRUST_TOKENS__JWKS_URL", "https://idp.example/keys?api_key=k-2")
    code, out, err = run(capsys, "config", "check", file, "--show")
    assert code == 0 and "k-2" not in out + err, err
    shown = json.loads(out)["settings"]["tokens"]["jwks_url"]
    assert shown == "https://idp.example/keys?api_key=<redacted>"
    monkeypatch.setenv("ZEROTRUST_TOKENS__JWKS_URL", "https://reader:pw-1@idp.example/keys")
    code, out, err = run(capsys, "config", "check", file, "--show")
    assert code == 2 and "pw-1" not in out + err and "reader" not in out + err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ('jwks_file = "jwks.json"', 'jwks_file = "missing.json"'),
            "tokens.jwks_file: cannot read",
        ),
        (('issuer = "https://issuer.example"\n', ""), "tokens.issuer: required: only JWT-SVIDs"),
        (('file = "policy.toml"', 'file = "nowhere.toml"'), "policy.file: cannot read"),
        (("[zerotrust]", "[zerotrst]"), "unknown table (did you mean 'zerotrust'?)"),
    ],
)
def test_config_check_reports_the_first_problem(
    settings_dir: Path,
    capsys: pytest.CaptureFixture[str],
    change: tuple[str, str],
    message: str,
) -> None:
    file = settings_dir / "zerotrust.toml"
    assert change[0] in TOML
    write(file, TOML.replace(*change))
    code, out, err = run(capsys, "config", "check", str(file), "--no-env")
    assert (code, out) == (2, "")
    assert err.startswith("zerotrust: error: [configuration_error] ") and message in err, err
    assert "Traceback" not in err


def test_config_check_prints_cautions_and_fails_on_them_when_strict(
    settings_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    file = str(settings_dir / "zerotrust.toml")
    monkeypatch.delenv("ZEROTRUST_CONFIG", raising=False)
    monkeypatch.setenv("ZEROTRUST_STORE__REVOCATION", "open")
    caution = (
        "zerotrust: caution: ZEROTRUST_STORE__REVOCATION: 'open': while the store cannot be"
        " reached, a revoked token is accepted\n"
    )
    assert run(capsys, "config", "check", file) == (
        0,
        f"ok: settings from {file}, environment\n",
        caution,
    )
    assert run(capsys, "config", "check", file, "--strict")[::2] == (1, caution)
    code, out, err = run(capsys, "config", "check", file, "--show", "--strict")
    assert (code, err) == (1, caution)
    assert json.loads(out)["cautions"] == [caution.removeprefix("zerotrust: caution: ").strip()]
    # without the variable: nothing to say, strict or not
    assert run(capsys, "config", "check", file, "--strict", "--no-env")[::2] == (0, "")


def test_config_explain_prints_each_caution_once_as_check_does(
    settings_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Building the Guard logs the cautions (WARNING, ``zerotrust.config``); the command
    prints them in its own form instead, not a second time through logging's last-resort
    handler (a separate process: the test run's own log handlers would hide that one)."""
    file = str(settings_dir / "zerotrust.toml")
    monkeypatch.delenv("ZEROTRUST_CONFIG", raising=False)
    monkeypatch.setenv("ZEROTRUST_STORE__REVOCATION", "open")
    argv = [sys.executable, "-m", "zerotrust", "config", "explain", file, "--route", ROUTE]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 1 and json.loads(done.stdout)["error"] == "missing_credentials"
    assert done.stderr == (
        "zerotrust: caution: ZEROTRUST_STORE__REVOCATION: 'open': while the store cannot be"
        " reached, a revoked token is accepted\n"
    )


def test_config_check_without_env_needs_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "config", "check", "--no-env")
    assert code == 2 and "--no-env needs a settings file" in err


# --- config explain ----------------------------------------------------------------------------

MTLS = """
[zerotrust.mtls]
bundles = { "example.org" = "bundle.pem" }
[zerotrust.proxies]
addresses = ["10.0.0.0/8"]
"""


@pytest.fixture
def mtls_settings(settings_dir: Path, ca: DevCA) -> Path:
    write(settings_dir / "bundle.pem", ca.bundle.to_pem().decode())
    return write(
        settings_dir / "mtls.toml", TOML.replace("[zerotrust.policy]", MTLS + "[zerotrust.policy]")
    )


def ask(capsys: pytest.CaptureFixture[str], file: Path, *argv: str) -> tuple[int, dict[str, Any]]:
    code, out, err = run(capsys, "config", "explain", str(file), "--no-env", *argv)
    assert code in (0, 1), err
    assert out.endswith("}\n")
    return code, json.loads(out)


def test_config_explain_answers_as_the_service_would(
    settings_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = settings_dir / "zerotrust.toml"
    issuer = make_issuer()
    token = issuer.issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    code, shown = ask(capsys, file, "--route", ROUTE, "--token", token)
    assert code == 0 and token not in json.dumps(shown)
    assert (shown["verdict"], shown["status"], shown["error"]) == ("allow", 200, None)
    assert shown["decision"]["rule_id"] == "read-orders"
    assert shown["caller"]["proven_by"] == "jwt" and shown["caller"]["spiffe_id"] == WEB
    assert shown["operation"] == {"kind": "http", "method": "GET", "route": ROUTE}
    assert "www_authenticate" not in shown and "notes" not in shown  # nothing to say
    assert shown["reason"] is None
    # the precise reason, which the caller's response leaves out
    elsewhere = issuer.issue(subject=WEB, audience="another-api", scopes=["orders:read"])
    code, shown = ask(capsys, file, "--route", ROUTE, "--token", elsewhere)
    assert (code, shown["status"], shown["grpc_status"]) == (1, 401, "UNAUTHENTICATED")
    assert shown["verdict"] == "deny"
    assert (shown["error"], shown["reason"]) == ("invalid_audience", "audience does not match")
    assert shown["www_authenticate"] == 'Bearer realm="orders", error="invalid_token"'
    assert shown["decision"] is None and shown["caller"] is None
    code, shown = ask(capsys, file, "--route", ROUTE, "--method", "DELETE", "--token", token)
    assert (code, shown["status"], shown["error"]) == (1, 403, "access_denied")
    assert shown["decision"]["reason"] == "no_allow_rule_matched"
    code, shown = ask(capsys, file, "--route", ROUTE)
    assert (code, shown["status"], shown["error"]) == (1, 401, "missing_credentials")
    assert shown["www_authenticate"] == 'Bearer realm="orders"'


def test_config_explain_reads_the_token_from_stdin_and_never_echoes_it(
    settings_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    file = settings_dir / "zerotrust.toml"
    token = make_issuer().issue(subject=WEB, audience=AUD, scopes=["orders:read"])
    monkeypatch.setattr(sys, "stdin", io.StringIO(token + "\n"))
    assert ask(capsys, file, "--route", ROUTE, "--token", "-")[0] == 0
    code, out, err = run(capsys, "config", "explain", str(file), "--route", ROUTE, token)
    assert (code, out) == (2, "") and "[usage_error]" in err and token not in err
    assert token[:30] not in err


def test_config_explain_verifies_a_client_certificate_against_the_bundles(
    mtls_settings: Path,
    capsys: pytest.CaptureFixture[str],
    ca: DevCA,
    other_ca: DevCA,
    ca_with_intermediate: DevCA,
    tmp_path: Path,
) -> None:
    chain = write(tmp_path / "web.pem", ca.issue_svid(WEB).cert_chain_pem().decode())
    code, shown = ask(capsys, mtls_settings, "--route", ROUTE, "--cert", str(chain))
    # a certificate carries no scope: the rule asks for one
    assert (code, shown["status"], shown["error"]) == (1, 403, "insufficient_scope")
    assert shown["caller"]["proven_by"] == "mtls" and shown["caller"]["spiffe_id"] == WEB
    # a chain file may be as large as the bound (text before the PEM blocks is allowed)
    pem = chain.read_text()
    write(chain, "#" * ((1 << 20) - len(pem) - 1) + "\n" + pem)
    assert chain.stat().st_size == 1 << 20
    assert ask(capsys, mtls_settings, "--route", ROUTE, "--cert", str(chain))[1]["caller"]
    stranger = other_ca.issue_svid("spiffe://other.org/web").cert_chain_pem().decode()
    code, shown = ask(
        capsys, mtls_settings, "--route", ROUTE, "--cert", str(write(tmp_path / "o.pem", stranger))
    )
    assert (code, shown["status"]) == (1, 401) and shown["caller"] is None
    assert shown["error"] == "no_trust_bundle"
    # the same trust domain's name from a CA the bundle does not hold
    impostor = ca_with_intermediate.issue_svid(WEB).cert_chain_pem().decode()
    code, shown = ask(
        capsys, mtls_settings, "--route", ROUTE, "--cert", str(write(tmp_path / "i.pem", impostor))
    )
    assert (code, shown["status"], shown["caller"]) == (1, 401, None)
    assert shown["error"] == "untrusted_certificate", shown
    # a forwarded certificate from an address that is not a trusted proxy is ignored
    pem = urllib.parse.quote(ca.issue_svid(WEB).cert_chain_pem().decode(), safe="")
    argv = ["--route", ROUTE, "--header", f'x-forwarded-client-cert: Cert="{pem}"']
    code, shown = ask(capsys, mtls_settings, *argv, "--remote-addr", "192.0.2.7")
    assert (code, shown["error"]) == (1, "missing_credentials")
    assert shown["notes"] == ["forwarded_cert_ignored_untrusted_peer"], shown


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--header", "no-colon"], "--header: expected 'Name: value'"),
        (["--header", " x: y"], "--header: expected 'Name: value'"),
        (["--header", ": y"], "--header: expected 'Name: value'"),
        (["--cert", "{tmp}/empty.pem"], "--cert: empty.pem holds no PEM certificate"),
        (["--cert", "{tmp}/big.pem"], "--cert: big.pem is larger than 1048576 bytes"),
        (["--token", ""], "no token given"),
        (["--hook", "x"], "--hook 'x': expected NAME=allow or NAME=deny"),
    ],
)
def test_config_explain_refuses_what_it_cannot_ask(
    settings_dir: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    argv: list[str],
    message: str,
) -> None:
    write(tmp_path / "empty.pem", "nothing here\n")
    write(tmp_path / "big.pem", "x" * (1 << 20 | 1))
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    file = str(settings_dir / "zerotrust.toml")
    code, out, err = run(capsys, "config", "explain", file, "--no-env", "--route", ROUTE, *argv)
    assert (code, out) == (2, "")
    assert message in err, err


def test_config_explain_refuses_a_chain_the_service_would_refuse(
    settings_dir: Path, capsys: pytest.CaptureFixture[str], ca: DevCA, tmp_path: Path
) -> None:
    """A chain file is read as the service reads PEM: one cut inside a block (caught while
    being written) is refused, never read as a shorter chain."""
    pem = ca.issue_svid(WEB).cert_chain_pem().decode()
    leaf_end = pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----\n")
    cases = {
        "cut.pem": (pem[:leaf_end] + "-----BEGIN CERTIFICATE-----\nMIIB\n", "is incomplete"),
        "trailing.pem": (pem + "more text\n", "is incomplete"),
        "end-cut.pem": (pem[: leaf_end - 10], "is incomplete"),
        "garbled.pem": (pem.replace("M", "*", 3), "could not be parsed"),
    }
    file = str(settings_dir / "zerotrust.toml")
    for name, (text, problem) in cases.items():
        path = str(write(tmp_path / name, text))
        argv = ["config", "explain", file, "--no-env", "--route", ROUTE, "--cert", path]
        code, out, err = run(capsys, *argv)
        assert (code, out) == (2, ""), name
        assert f"--cert PEM {problem}" in err and f"({name})" in err, err
        assert str(tmp_path) not in err


# --- policy explain ---------------------------------------------------------------------------


def explain(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    code, out, err = run(capsys, "policy", "explain", *argv)
    assert code in (0, 1), err
    assert out.endswith("}\n")  # one JSON document, one line end
    return code, json.loads(out)


@pytest.mark.parametrize(
    ("argv", "verdict", "reason", "rule"),
    [
        # a workload with the scope it needs, by token (its sub names it)
        (
            ["--subject", WEB, "--issuer", "https://i", "--scope", "orders:read"],
            "allow",
            "allowed_by_rule",
            "shop-reads",
        ),
        # the same workload by certificate alone carries no scope
        (["--spiffe-id", WEB], "deny", "insufficient_scope", "shop-reads"),
        (["--route", "/healthz"], "allow", "allowed_by_rule", "health"),  # no credentials
        (
            ["--spiffe-id", "spiffe://example.org/ns/other/sa/x"],
            "deny",
            "no_allow_rule_matched",
            None,
        ),
        (
            ["--spiffe-id", "spiffe://partner.example/billing", "--method", "DELETE"],
            "deny",
            "denied_by_rule",
            "no-partner-deletes",
        ),
        (
            [*AUDITOR, "--claims", '{"tenant": "acme"}'],
            "allow",
            "allowed_by_rule",
            "auditors",
        ),
        (
            [*AUDITOR, "--claims", '{"tenant": "other"}'],
            "deny",
            "no_allow_rule_matched",
            None,
        ),
        # the token's sub and iss are claims too, as conditions read them
        (
            ["--route", "/tools", "--subject", "tool-a", "--issuer", "https://issuer.example"],
            "allow",
            "allowed_by_rule",
            "tools-of-the-issuer",
        ),
        (
            ["--route", "/tools", "--subject", "tool-a", "--issuer", "https://elsewhere"],
            "deny",
            "no_allow_rule_matched",
            None,
        ),
        # gRPC: kind and the full method name; the method defaults to POST
        (
            ["--kind", "grpc", "--route", "/shop.Orders/Get", "--spiffe-id", WEB],
            "allow",
            "allowed_by_rule",
            "grpc-reads",
        ),
        (
            ["--kind", "grpc", "--route", "/shop.Orders/Get", "--subject", WEB],
            "deny",
            "no_allow_rule_matched",
            None,
        ),  # by token alone: the rule asks for a certificate
        (
            [*ADMIN, "--hook", "opa=allow"],
            "allow",
            "allowed_by_rule",
            "admins",
        ),
        (
            [*ADMIN, "--hook", "opa=deny"],
            "deny",
            "denied_by_custom",
            "opa",
        ),
    ],
)
def test_policy_explain_decides_as_the_policy_does(
    policy_file: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    verdict: str,
    reason: str,
    rule: str | None,
) -> None:
    if "--route" not in argv:
        argv = [*argv, "--route", "/orders/{order_id}"]
    if "--hook" not in argv:
        argv = [*argv, "--hook", "opa=allow"]
    code, shown = explain(capsys, str(policy_file), *argv)
    assert (shown["verdict"], shown["reason"], shown["rule_id"]) == (verdict, reason, rule)
    assert code == (0 if verdict == "allow" else 1)
    assert shown["policy_id"] == "orders"
    missing = ["orders:read"] if reason == "insufficient_scope" else []
    assert shown["required_scopes"] == missing
    kind = argv[argv.index("--kind") + 1] if "--kind" in argv else "http"
    method = argv[argv.index("--method") + 1] if "--method" in argv else None
    route = argv[argv.index("--route") + 1]
    expected = {"kind": kind, "method": method or ("POST" if kind == "grpc" else "GET")}
    assert shown["operation"] == expected | {"route": route}


def test_policy_explain_shows_what_dry_run_rules_would_do(
    policy_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(policy_file), *ADMIN, "--hook", "opa=allow"]
    code, shown = explain(capsys, *argv, "--method", "POST")
    assert code == 0 and shown["verdict"] == "allow" and shown["rule_id"] == "admins"
    assert shown["dry_run"] is True and shown["would_allow"] is False
    assert shown["would_rule_id"] == "admins-soon-read-only"
    assert shown["would_reason"] == "denied_by_rule"
    code, shown = explain(capsys, *argv)  # a GET: the dry-run rule does not match
    assert code == 0 and "dry_run" not in shown and "would_allow" not in shown


def test_policy_explain_describes_the_caller_as_the_authenticator_would(
    policy_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [str(policy_file), "--route", "/orders/{order_id}", "--hook", "opa=allow"]
    _, shown = explain(capsys, *base, "--spiffe-id", WEB)
    assert shown["caller"] == {
        "proven_by": "mtls",
        "spiffe_id": WEB,
        "subject": WEB,
        "issuer": "spiffe://example.org",
        "scopes": [],
    }
    _, shown = explain(capsys, *base, "--subject", WEB, "--scope", "b a", "--scope", "c")
    assert shown["caller"] == {
        "proven_by": "jwt",
        "spiffe_id": WEB,
        "subject": WEB,
        "issuer": None,
        "scopes": ["a", "b", "c"],
    }
    _, shown = explain(capsys, *base, "--spiffe-id", WEB, "--proven-by", "jwt")
    assert shown["caller"]["subject"] == WEB  # type: ignore[index]
    _, same = explain(capsys, *base, "--spiffe-id", WEB, "--subject", WEB, "--proven-by", "jwt")
    assert same["caller"] == shown["caller"]
    _, shown = explain(
        capsys, *base, "--spiffe-id", WEB, "--subject", "svc", "--proven-by", "mtls+jwt"
    )
    assert shown["caller"]["spiffe_id"] == WEB and shown["caller"]["subject"] == "svc"  # type: ignore[index]
    # the certificate names the workload, whatever the token's sub says
    argv = ["--spiffe-id", WEB, "--subject", OPS, "--proven-by", "mtls+jwt"]
    _, shown = explain(capsys, *base, *argv)
    assert shown["caller"]["spiffe_id"] == WEB and shown["caller"]["subject"] == OPS  # type: ignore[index]
    # a token without sub, or with scopes alone
    _, shown = explain(capsys, *base, "--issuer", "https://i")
    assert shown["caller"] == {  # type: ignore[comparison-overlap]
        "proven_by": "jwt",
        "spiffe_id": None,
        "subject": None,
        "issuer": "https://i",
        "scopes": [],
    }
    _, shown = explain(capsys, *base, "--spiffe-id", OPS, "--proven-by", "proxy-mtls")
    assert shown["caller"] == {  # type: ignore[comparison-overlap]
        "proven_by": "proxy-mtls",
        "spiffe_id": OPS,
        "subject": OPS,
        "issuer": "spiffe://example.org",
        "scopes": [],
    }
    _, shown = explain(capsys, *base, "--scope", "orders:read")
    assert shown["caller"]["proven_by"] == "jwt" and shown["caller"]["scopes"] == ["orders:read"]  # type: ignore[index]
    _, named = explain(capsys, *base, "--api-key-id", "ci", "--proven-by", "api-key")
    _, shown = explain(capsys, *base, "--api-key-id", "ci")
    assert named == shown
    assert shown["caller"]["subject"] == "api-key:ci"  # type: ignore[index]
    assert shown["caller"]["proven_by"] == "api-key"  # type: ignore[index]
    _, shown = explain(capsys, *base)
    assert shown["caller"] is None
    assert shown["operation"] == {"kind": "http", "method": "GET", "route": "/orders/{order_id}"}


def test_policy_explain_reads_the_policy_of_a_settings_file(
    settings_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inline = TOML.replace('[zerotrust.policy]\nfile = "policy.toml"', "[zerotrust.policy]")
    inline += '\n[[zerotrust.policy.rules]]\nid = "any-shop"\n'
    inline += 'from = [{ spiffe_ids = ["spiffe://example.org/ns/shop/*"] }]\n'
    file = write(settings_dir / "inline.toml", inline)
    argv = ["--config", str(file), "--no-env", "--route", "/x", "--spiffe-id", WEB]
    code, shown = explain(capsys, *argv)
    assert (code, shown["rule_id"]) == (0, "any-shop")
    code, shown = explain(capsys, *argv[:-1], OPS)
    assert (code, shown["reason"]) == (1, "no_allow_rule_matched")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--spiffe-id", "spiffe://Bad/x"], "--spiffe-id: "),
        (["--subject", "x", "--proven-by", "mtls"], "--proven-by mtls describes a certificate"),
        (["--proven-by", "mtls"], "--proven-by needs a caller"),
        (["--subject", "x", "--proven-by", "mtls+jwt"], "--proven-by mtls+jwt needs --spiffe-id"),
        (
            ["--subject", "x", "--proven-by", "mtls+bound-jwt"],
            "--proven-by mtls+bound-jwt needs --spiffe-id",
        ),
        (["--subject", "x", "--proven-by", "proxy-mtls"], "--proven-by proxy-mtls describes a"),
        (
            ["--spiffe-id", WEB, "--subject", "svc", "--proven-by", "jwt"],
            "--spiffe-id and --subject differ",
        ),
        (
            ["--api-key-id", "ci", "--subject", "x"],
            "--api-key-id describes a caller with an API key",
        ),
        (["--api-key-id", "ci", "--spiffe-id", WEB], "--api-key-id describes a caller with an API"),
        (["--api-key-id", "ci", "--proven-by", "mtls"], "--api-key-id describes a caller with an"),
        (["--subject", "x", "--proven-by", "api-key"], "--proven-by api-key needs --api-key-id"),
        (["--method", "G\u00c9T"], "--method must be an HTTP method name"),
        (["--hook", "=allow"], "--hook '=allow': expected NAME=allow or NAME=deny"),
        (["--hook", "opa=maybe"], "--hook 'opa=maybe': expected NAME=allow or NAME=deny"),
        (["--subject", "x", "--claims", "[1]"], "--claims: not a JSON object"),
        (["--subject", "x", "--claims", '{"a":1,"a":2}'], "--claims: duplicate member name"),
        (["--subject", "x", "--claims", "{" * 70_000], "--claims is longer than 65536"),
        (["--method", "GET /x"], "--method must be an HTTP method name"),
        (["--hook", "opa"], "--hook 'opa': expected NAME=allow or NAME=deny"),
        (["--hook", "opa=allow", "--hook", "opa=deny"], "--hook 'opa' is given twice"),
        (["--hook", "other=allow"], "unknown hook 'opa' (known: other)"),
        (["--no-env"], "--no-env applies to --config only"),
    ],
)
def test_policy_explain_refuses_what_it_cannot_ask(
    policy_file: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    if "--hook" not in argv:
        argv = [*argv, "--hook", "opa=allow"]
    code, out, err = run(capsys, "policy", "explain", str(policy_file), "--route", "/x", *argv)
    assert (code, out) == (2, "")
    assert err.startswith("zerotrust: error: [") and message in err, err


def test_policy_explain_claims_up_to_the_bound(
    policy_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    claims = '{"tenant": "acme", "pad": "' + "x" * (65_536 - 29) + '"}'
    assert len(claims) == 65_536
    code, shown = explain(
        capsys, str(policy_file), *AUDITOR, "--claims", claims, "--hook", "opa=allow"
    )
    assert (code, shown["rule_id"]) == (0, "auditors")


def test_policy_explain_needs_one_policy(
    policy_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "policy", "explain", "--route", "/x")
    assert code == 2 and "[usage_error]" in err
    code, _, err = run(
        capsys, "policy", "explain", str(policy_file), "--config", "z.toml", "--route", "/x"
    )
    assert code == 2 and "[usage_error]" in err
    code, _, err = run(capsys, "policy", "explain", str(policy_file), "--spiffe-id", WEB)
    assert code == 2 and "the following arguments are required: --route" in err


def test_policy_explain_exit_status_from_a_shell(policy_file: Path) -> None:
    """Scripts branch on the exit status: 0 allowed, 1 denied."""
    argv = [
        sys.executable,
        "-m",
        "zerotrust",
        "policy",
        "explain",
        str(policy_file),
        "--hook",
        "opa=allow",
    ]
    allowed = subprocess.run([*argv, "--route", "/healthz"], capture_output=True, check=False)
    denied = subprocess.run([*argv, "--route", "/nowhere"], capture_output=True, check=False)
    assert (allowed.returncode, denied.returncode) == (0, 1)
    assert json.loads(denied.stdout)["reason"] == "no_allow_rule_matched"


CLAIMS_POLICY = """
id = "claims"
[[rules]]
id = "no-admin-scope"
action = "DENY"
when = [{ key = "claims.scope", values = ["admin"] }]
[[rules]]
id = "no-batch-client"
action = "DENY"
when = [{ key = "claims.client_id", values = ["batch"] }]
[[rules]]
id = "no-acting-ops"
action = "DENY"
when = [{ key = "claims.act.sub", values = ["ops"] }]
[[rules]]
id = "tenant"
when = [{ key = "claims.tenant", values = ["acme"] }]
"""


@pytest.mark.parametrize(
    ("token", "argv", "rule"),
    [
        ({}, [], "tenant"),
        ({"scopes": ["read", "admin"]}, ["--scope", "read admin"], "no-admin-scope"),
        ({"extra_claims": {"client_id": "batch"}}, ["--client-id", "batch"], "no-batch-client"),
        ({"act": {"sub": "ops"}}, ["--actor", "ops"], "no-acting-ops"),
    ],
)
def test_policy_explain_decides_on_claims_as_the_service_does_on_the_token(
    settings_dir: Path,
    capsys: pytest.CaptureFixture[str],
    token: dict[str, Any],
    argv: list[str],
    rule: str,
) -> None:
    """The token's claims hold what the options say, as the service reads them from a token."""
    write(settings_dir / "policy.toml", CLAIMS_POLICY)
    file = settings_dir / "zerotrust.toml"
    extra = {"tenant": "acme", **token.pop("extra_claims", {})}
    issued = make_issuer().issue(subject="svc", audience=AUD, extra_claims=extra, **token)
    # the service, on a real token ...
    _, served = ask(capsys, file, "--route", "/x", "--token", issued)
    assert served["decision"]["rule_id"] == rule
    # ... and the policy, asked about the caller the options describe
    caller = ["--subject", "svc", "--issuer", "https://issuer.example", *argv]
    code, shown = explain(
        capsys, "--config", str(file), "--no-env", "--route", "/x", *caller,
        "--claims", '{"tenant": "acme"}',
    )  # fmt: skip
    assert (shown["verdict"], shown["rule_id"]) == (served["verdict"], rule)
    assert code == (0 if rule == "tenant" else 1)


@pytest.mark.parametrize("name", ["sub", "iss", "scope", "scp", "client_id", "azp", "act"])
def test_policy_explain_refuses_claims_the_caller_is_read_from(
    policy_file: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    argv = ["--subject", "x", "--hook", "opa=allow", "--claims", json.dumps({name: "v"})]
    code, out, err = run(capsys, "policy", "explain", str(policy_file), "--route", "/x", *argv)
    assert (code, out) == (2, "")
    assert f"--claims: give {name!r} with --" in err, err
