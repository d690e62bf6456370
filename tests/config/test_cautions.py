"""Valid settings that weaken what the Guard enforces are named by ``Settings.cautions()``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.config.helpers import base, write
from zerotrust.config import Settings

ALLOW_WEB = {"id": "web", "from": [{"spiffe_ids": ["spiffe://example.org/web"]}]}


def test_the_defaults_call_for_no_caution(files: Path) -> None:
    assert Settings.from_dict(base(files)).cautions() == ()
    # a policy that names every default explicitly is no different
    doc = base(files, policy=None) | {"policy": {"default": "deny", "dry_run": False}}
    doc["policy"]["rules"] = [{**ALLOW_WEB, "dry_run": False}]
    assert Settings.from_dict(doc).cautions() == ()


def test_store_checks_failing_open_or_turned_off(files: Path) -> None:
    doc = base(files, store={"rate_limit": "open", "check_revocation": False})
    env = {"ZEROTRUST_STORE__REVOCATION": "open", "ZEROTRUST_STORE__REPLAY": "open"}
    assert Settings.from_dict(doc, env=env).cautions() == (
        "<dict>: store.check_revocation: false: revoked tokens are accepted until they expire",
        "ZEROTRUST_STORE__REVOCATION: 'open': while the store cannot be reached, a revoked"
        " token is accepted",
        "ZEROTRUST_STORE__REPLAY: 'open': while the store cannot be reached, a DPoP proof can"
        " be used again",
        "<dict>: store.rate_limit: 'open': while the store cannot be reached, no rate limit is"
        " enforced",
    )


def test_redis_tls_verification_turned_off(files: Path) -> None:
    url = "rediss://cache:6380/0?ssl_cert_reqs=required&ssl_check_hostname=true"
    assert Settings.from_dict(base(files, store={"url": url})).cautions() == ()
    env = {"ZEROTRUST_STORE__URL": "rediss://cache:6380/0?ssl_cert_reqs=none"}
    assert Settings.from_dict(base(files), env=env).cautions() == (
        "ZEROTRUST_STORE__URL: ssl_cert_reqs=none: the Redis server's certificate is not"
        " verified: anyone on the network path can pose as the store",
    )
    url = "rediss://cache:6380/0?ssl_check_hostname=False"
    assert Settings.from_dict(base(files, store={"url": url})).cautions() == (
        "<dict>: store.url: ssl_check_hostname=False: the Redis server's certificate may name"
        " any host: anyone on the network path can pose as the store",
    )


def test_the_outermost_xfcc_element_trusted(files: Path, bundle_file: Path) -> None:
    doc = base(files, mtls={"bundles": {"example.org": str(bundle_file)}})
    doc["proxies"] = {"addresses": ["10.0.0.0/8"], "hop": "last"}
    assert Settings.from_dict(doc).cautions() == ()
    env = {"ZEROTRUST_PROXIES__HOP": "first"}
    assert Settings.from_dict(doc, env=env).cautions() == (
        "ZEROTRUST_PROXIES__HOP: 'first': the outermost XFCC element decides; a client can send"
        " its own unless every proxy on the path is trusted and the outermost one strips the"
        " header",
    )


def test_a_proxy_range_open_to_every_address(files: Path, bundle_file: Path) -> None:
    doc = base(files, mtls={"bundles": {"example.org": str(bundle_file)}})
    everything = ["0.0.0.0/0", "::/0", "::ffff:0.0.0.0/96"]
    doc["proxies"] = {"addresses": ["10.0.0.0/8", *everything, "::ffff:10.0.0.0/104", "1.2.3.4"]}
    found = Settings.from_dict(doc).cautions()
    assert [c.split(": ")[2] for c in found] == [repr(a) for a in everything]
    assert found[0] == (
        "<dict>: proxies.addresses: '0.0.0.0/0': any address may forward a client certificate:"
        " any caller can pass off a certificate it has seen as its own"
    )


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        # allow by default, with only a DENY rule: everything else is allowed
        (
            {
                "default": "allow",
                "rules": [{"id": "d", "action": "DENY", "from": [{"subjects": ["x"]}]}],
            },
            [
                "<dict>: policy.default: 'allow', and no ALLOW rule: every request that no DENY"
                " rule denies is allowed"
            ],
        ),
        ({"default": "allow", "rules": []}, ["<dict>: policy.default: 'allow', and no ALLOW"]),
        ({"default": "allow"}, ["<dict>: policy.default: 'allow', and no ALLOW"]),
        # denying by default, DENY rules alone allow nothing
        ({"default": "deny", "rules": [{"id": "d", "action": "DENY"}]}, []),
        # with an ALLOW rule, the default decides nothing
        ({"default": "allow", "rules": [ALLOW_WEB]}, []),
        ({"default": "allow", "rules": [{**ALLOW_WEB, "action": "ALLOW"}]}, []),
        # ... unless it is in dry-run: it restricts nothing, the default allows everyone
        (
            {"default": "allow", "rules": [{**ALLOW_WEB, "id": "trial", "dry_run": True}]},
            [
                "<dict>: policy.default: 'allow', and no ALLOW rule: every request",
                "<dict>: policy.rules[0].dry_run: true: rule 'trial' is not enforced",
            ],
        ),
        (
            {"dry_run": True, "rules": [ALLOW_WEB]},
            ["<dict>: policy.dry_run: true: the policy refuses nothing (dry-run)"],
        ),
        (
            {"rules": [ALLOW_WEB, {**ALLOW_WEB, "id": "trial", "dry_run": True}]},
            ["<dict>: policy.rules[1].dry_run: true: rule 'trial' is not enforced (dry-run)"],
        ),
    ],
)
def test_inline_policies_that_enforce_less(
    files: Path, policy: dict[str, object], expected: list[str]
) -> None:
    doc = base(files, policy=None) | {"policy": policy}
    found = Settings.from_dict(doc).cautions()
    assert len(found) == len(expected)
    for caution, start in zip(found, expected, strict=True):
        assert caution.startswith(start), caution


def test_a_policy_file_is_named_by_its_path(files: Path) -> None:
    policy = write(
        files / "trial.toml",
        'default = "allow"\ndry_run = true\n'
        '[[rules]]\nid = "d"\naction = "DENY"\ndry_run = true\nfrom = [{ subjects = ["x"] }]\n',
    )
    found = Settings.from_dict(base(files, policy={"file": str(policy)})).cautions()
    assert [c.split(": true")[0].split(": 'allow'")[0] for c in found] == [
        f"{policy}: default",
        f"{policy}: dry_run",
        f"{policy}: rules[0].dry_run",
    ]


def test_rules_from_the_environment_are_named_by_their_variable(files: Path) -> None:
    rules = '[{"id": "web", "from": [{"spiffe_ids": ["spiffe://example.org/web"]}]},'
    rules += ' {"id": "trial", "dry_run": true}]'
    env = {"ZEROTRUST_POLICY__FILE": "", "ZEROTRUST_POLICY__RULES": rules}
    assert Settings.from_dict(base(files), env=env).cautions() == (
        "ZEROTRUST_POLICY__RULES[1].dry_run: true: rule 'trial' is not enforced (dry-run)",
    )


def test_building_a_guard_logs_each_caution_once(
    files: Path, caplog: pytest.LogCaptureFixture
) -> None:
    doc = base(files, store={"rate_limit": "open"})
    settings = Settings.from_dict(doc, env={"ZEROTRUST_STORE__REVOCATION": "open"})
    with caplog.at_level(logging.WARNING, logger="zerotrust.config"):
        settings.build_guard()
    logged = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert logged == [
        ("zerotrust.config", logging.WARNING, f"caution: {caution}")
        for caution in settings.cautions()
    ]
    assert len(logged) == 2


def test_building_a_guard_from_settings_without_cautions_logs_nothing(
    files: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="zerotrust.config"):
        Settings.from_dict(base(files)).build_guard()
    assert [r for r in caplog.records if r.name == "zerotrust.config"] == []
