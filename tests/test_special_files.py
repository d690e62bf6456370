"""A FIFO (or any file that is not a regular one) where a certificate, key, bundle, key set or
settings file belongs is refused at once, with an error naming it: opening a FIFO for reading
waits for a writer, forever, on whichever thread asked (an event loop's included)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests._files import settled
from tests.config.helpers import base, error_of, make_files, make_issuer
from zerotrust import FileBundleSource, FileSvidSource, X509Svid
from zerotrust.cli import main
from zerotrust.config import Settings
from zerotrust.dev import DevCA
from zerotrust.errors import BundleError, ConfigurationError, SvidError
from zerotrust.sources import FileKeySource
from zerotrust.sources.jwks_http import RemoteJWKSource
from zerotrust.tokens import PrivateJWK

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")

NOT_REGULAR = "not a regular file (a FIFO)"


def refused(path: Path | str) -> str:
    return re.escape(f"{path}: {NOT_REGULAR}")


def fifo(path: Path) -> Path:
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path


def returns(call: Callable[[], Any], *fifos: Path) -> Any:
    """``call()``, which must not wait on ``fifos``: if it is still running after a few seconds,
    the FIFOs are opened for writing (which lets a reader blocked opening one go on) and the
    test fails."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(5)
    if thread.is_alive():
        for path in fifos:
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
        pytest.fail(f"blocked opening a FIFO: {', '.join(map(str, fifos))}")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


@pytest.fixture
def pair(ca: DevCA, tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "svid.pem", tmp_path / "svid.key"
    ca.issue_svid("spiffe://example.org/web").save(cert, key)
    return cert, key


@pytest.mark.parametrize("which", [0, 1], ids=["certificate", "key"])
def test_svid_files(pair: tuple[Path, Path], which: int) -> None:
    special = fifo(pair[which])
    with pytest.raises(SvidError, match=refused(special)):
        returns(lambda: X509Svid.load(*pair), special)
    with pytest.raises(SvidError, match=refused(special)):
        returns(lambda: FileSvidSource(*pair), special)


def test_an_svid_source_reloading_a_fifo_keeps_its_snapshot(pair: tuple[Path, Path]) -> None:
    source = FileSvidSource(*pair, check_interval=0)
    before = source.get_x509_svid()
    special = fifo(pair[0])
    settled(special)
    assert returns(source.get_x509_svid, special) is before
    assert source.last_error is not None and NOT_REGULAR in source.last_error
    assert str(special) in source.last_error


def test_bundle_source(ca: DevCA, tmp_path: Path) -> None:
    path = tmp_path / "bundle.pem"
    path.write_bytes(ca.bundle.to_pem())
    source = FileBundleSource({"example.org": path}, check_interval=0)
    before = source.get_bundle_set()
    settled(fifo(path))
    assert returns(source.get_bundle_set, path) is before
    assert source.last_error is not None and NOT_REGULAR in source.last_error
    with pytest.raises(BundleError, match=refused(path)):
        returns(lambda: FileBundleSource({"example.org": path}), path)


def test_key_source(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    key = PrivateJWK.generate("ES256", kid="a")
    path.write_text(json.dumps({"keys": [key.public().to_public_dict()]}))
    source = FileKeySource(path, check_interval=0)
    before = source.get_keys()
    settled(fifo(path))
    assert returns(source.get_keys, path) is before
    assert source.last_error is not None and NOT_REGULAR in source.last_error
    with pytest.raises(ConfigurationError, match=refused(path)):
        returns(lambda: FileKeySource(path), path)


@pytest.mark.parametrize("name", ["ca.json", "root.crt.pem", "root.key.pem"])
def test_dev_ca_files(tmp_path: Path, name: str) -> None:
    directory = DevCA.create("example.org").save(tmp_path / "ca")
    special = fifo(directory / name)
    with pytest.raises(ConfigurationError, match=refused(name)):
        returns(lambda: DevCA.load(directory), special)


@pytest.mark.parametrize(
    "argv",
    [
        ["cert", "inspect", "{fifo}"],
        ["jwks", "{fifo}"],
        [
            "token",
            "mint",
            "--key",
            "{fifo}",
            "--issuer",
            "https://issuer.example",
            "--subject",
            "s",
            "--audience",
            "a",
        ],
        [
            "token",
            "verify",
            "--jwks",
            "{fifo}",
            "--issuer",
            "https://issuer.example",
            "--audience",
            "a",
            "--algorithm",
            "ES256",
            "e30.e30.e30",
        ],
    ],
    ids=["cert-inspect", "jwks", "token-mint", "token-verify"],
)
def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    special = fifo(tmp_path / "special.pem")
    code = returns(lambda: main([arg.replace("{fifo}", str(special)) for arg in argv]), special)
    _, err = capsys.readouterr()
    assert code == 2
    assert err == f"zerotrust: error: [io_error] {special}: {NOT_REGULAR}\n"


def test_settings_files(tmp_path: Path) -> None:
    files = make_files(tmp_path, make_issuer())
    settings = fifo(files / "zerotrust.toml")
    message = returns(lambda: error_of(Settings.load, settings, env={}), settings)
    assert message == f"settings file: cannot read '{settings}' ({NOT_REGULAR})"
    settings.unlink()
    remote = {"jwks_url": "https://issuer.example", "remote": {"ca_file": "ca.pem"}}
    cases: dict[str, tuple[str, dict[str, Any]]] = {
        "tokens.jwks_file": ("jwks.json", base(files)),
        "policy.file": ("policy.toml", base(files)),
        "tokens.remote.ca_file": ("ca.pem", base(files, tokens=remote)),
        "audit.pseudonym_key_file": (
            "pseudonyms",
            base(files, audit={"pseudonymize": ["subject"], "pseudonym_key_file": "pseudonyms"}),
        ),
    }
    for dotted, (name, template) in cases.items():
        special = fifo(files / name)
        if "jwks_url" in template["tokens"]:
            del template["tokens"]["jwks_file"]
        doc = json.loads(json.dumps(template).replace(f'"{name}"', json.dumps(str(special))))
        found = returns(lambda: error_of(Settings.from_dict, doc), special)  # noqa: B023
        assert found == f"<dict>: {dotted}: cannot read '{special}' ({NOT_REGULAR})", found
        special.unlink()
        make_files(files, make_issuer())


def test_a_remote_key_source_ca_file(tmp_path: Path) -> None:
    special = fifo(tmp_path / "ca.pem")
    with pytest.raises(ConfigurationError, match=re.escape(NOT_REGULAR)):
        returns(
            lambda: RemoteJWKSource("https://issuer.example/jwks", verify=str(special)), special
        )
