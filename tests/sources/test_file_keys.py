"""FileKeySource: JWKS or PEM public keys from a file, reloaded on change."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests._files import settled
from zerotrust.dev import DevCA
from zerotrust.errors import ConfigurationError
from zerotrust.sources import FileKeySource
from zerotrust.tokens import PrivateJWK, TokenIssuer, TokenVerifier

KEY_A = PrivateJWK.generate("ES256", kid="a")
KEY_B = PrivateJWK.generate("EdDSA", kid="b")


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def write_jwks(path: Path, *keys: PrivateJWK) -> None:
    path.write_text(json.dumps({"keys": [k.public().to_public_dict() for k in keys]}))


def public_pem(key: PrivateJWK) -> bytes:
    return key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def bump(path: Path) -> None:
    """Mark ``path`` changed (a rewrite within one tick of a coarse clock may not change its
    stamp) and settled: its writer finished a while ago."""
    settled(path)


def test_jwks_file_and_reload(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, KEY_A)
    ticks = Ticks()
    source = FileKeySource(path, check_interval=5, monotonic=ticks)
    keys = source.get_keys()
    assert keys.get("a") == KEY_A.public()
    assert asyncio.run(source.get_keys_async()) is keys
    write_jwks(path, KEY_A, KEY_B)
    bump(path)
    assert source.get_keys() is keys  # not checked before the interval
    ticks.now = 5
    assert set(source.get_keys()) == {KEY_A.public(), KEY_B.public()}
    assert source.reloads == 1


def test_a_check_under_way_never_blocks_another_reader(tmp_path: Path) -> None:
    # while one thread checks the file (it holds the watch's lock), every other reader gets
    # the current keys at once rather than waiting on the disk
    path = tmp_path / "jwks.json"
    write_jwks(path, KEY_A)
    ticks = Ticks()
    source = FileKeySource(path, check_interval=5, monotonic=ticks)
    keys = source.get_keys()
    write_jwks(path, KEY_A, KEY_B)
    bump(path)
    ticks.now = 5
    lock = source._watched._lock
    assert lock.acquire(blocking=False)
    try:
        assert source.get_keys() is keys  # answered without waiting
    finally:
        lock.release()
    assert set(source.get_keys()) == {KEY_A.public(), KEY_B.public()}


@pytest.mark.parametrize("algorithms", ["ES256", ["ES256", 256], [None]])
def test_algorithms_are_a_list_of_names(tmp_path: Path, algorithms: object) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, KEY_A)
    with pytest.raises(ConfigurationError, match="list of algorithm names"):
        FileKeySource(path, algorithms=algorithms)  # type: ignore[arg-type]


def test_rewritten_file_with_the_same_keys_keeps_the_set_object(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, KEY_A)
    source = FileKeySource(path, check_interval=0)
    keys = source.get_keys()
    write_jwks(path, KEY_A)
    bump(path)
    assert source.get_keys() is keys


def test_pem_public_keys_and_certificates(tmp_path: Path, ca: DevCA) -> None:
    svid = ca.issue_svid("spiffe://example.org/issuer")
    path = tmp_path / "keys.pem"
    path.write_bytes(public_pem(KEY_A) + public_pem(KEY_B) + svid.cert_chain_pem())
    keys = FileKeySource(path).get_keys()
    assert len(keys) == 3
    assert keys.get(KEY_A.thumbprint()) is not None  # PEM keys are named by thumbprint
    assert keys.get(KEY_B.thumbprint()) is not None


def test_pem_key_verifies_a_token_without_kid_or_with_thumbprint_kid(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(public_pem(KEY_A))
    issuer = TokenIssuer(KEY_A.private_key, issuer="https://issuer.example")
    verifier = TokenVerifier(
        issuer="https://issuer.example",
        audience="api",
        keys=FileKeySource(path),
        algorithms=["ES256"],
    )
    assert verifier.verify(issuer.issue(subject="s", audience="api")).subject == "s"


def test_a_pem_rsa_key_is_bound_to_the_one_allowed_algorithm_that_fits_it(
    tmp_path: Path,
) -> None:
    rsa_key, ec_key = PrivateJWK.generate("PS256"), PrivateJWK.generate("ES256")
    path = tmp_path / "keys.pem"
    path.write_bytes(public_pem(rsa_key) + public_pem(ec_key))

    def algorithms(allowed: list[str]) -> set[str]:
        return {key.algorithm for key in FileKeySource(path, algorithms=allowed).get_keys()}

    # the key's own type decides when it is allowed (a PEM RSA key is an RS256 key)
    assert algorithms([]) == {"RS256", "ES256"}
    assert algorithms(["RS256", "PS256", "ES256"]) == {"RS256", "ES256"}
    # otherwise the one allowed algorithm that fits it
    assert algorithms(["PS256", "ES256"]) == {"PS256", "ES256"}
    assert algorithms(["ES256"]) == {"RS256", "ES256"}  # nothing fits: as before
    issuer = TokenIssuer(rsa_key, issuer="https://issuer.example")
    verifier = TokenVerifier(
        issuer="https://issuer.example",
        audience="api",
        keys=FileKeySource(path, algorithms=["PS256"]),
        algorithms=["PS256"],
    )
    assert verifier.verify(issuer.issue(subject="s", audience="api")).subject == "s"
    with pytest.raises(ConfigurationError) as info:
        FileKeySource(path, algorithms=["PS256", "PS384"])
    assert str(info.value) == (
        "key file keys.pem: its RSA key names no algorithm and PS256, PS384 all fit it:"
        " allow one of them, or publish the key as a JWK with its alg"
    )
    with pytest.raises(ConfigurationError, match="list of algorithm names"):
        FileKeySource(path, algorithms="PS256")


def test_jwks_entries_keep_their_alg(tmp_path: Path) -> None:
    rs256 = PrivateJWK.generate("RS256", kid="r")
    path = tmp_path / "jwks.json"
    write_jwks(path, rs256)
    [key] = FileKeySource(path, algorithms=["PS256"]).get_keys()
    assert key.algorithm == "RS256"


def test_bad_update_keeps_previous_keys(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, KEY_A)
    source = FileKeySource(path, check_interval=0)
    keys = source.get_keys()
    for broken in (b"{not json", b'{"keys": []}', b"", public_pem(KEY_A)[:40]):
        path.write_bytes(broken)
        bump(path)
        assert source.get_keys() is keys
        assert source.last_error
    path.unlink()
    assert source.get_keys() is keys
    write_jwks(path, KEY_B)
    settled(path)
    assert "b" in source.get_keys()
    assert source.last_error is None


@pytest.mark.parametrize(
    "content",
    [
        b'{"keys": []}',
        b'{"keys": [{"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0", "kid": "s"}]}',
        b"not a key",
        b"{" * 100,
    ],
)
def test_first_load_without_usable_keys_is_a_configuration_error(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "keys"
    path.write_bytes(content)
    with pytest.raises(ConfigurationError):
        FileKeySource(path)


def test_private_keys_and_missing_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "private.pem"
    path.write_bytes(
        KEY_A.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ConfigurationError, match="private key"):
        FileKeySource(path)
    with pytest.raises(ConfigurationError, match="cannot read"):
        FileKeySource(tmp_path / "missing.json")


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_bytes(b" " * (2 << 20))
    with pytest.raises(ConfigurationError, match="larger"):
        FileKeySource(path)


def test_a_pem_key_file_caught_mid_block_keeps_the_keys(tmp_path: Path) -> None:
    """A PEM block without its END line is a file caught mid-write: its complete blocks are not
    a smaller set of keys."""
    path = tmp_path / "keys.pem"
    key_c = PrivateJWK.generate("ES256")
    path.write_bytes(public_pem(key_c))
    source = FileKeySource(path, check_interval=0)
    keys = source.get_keys()
    both = public_pem(KEY_A) + public_pem(KEY_B)
    path.write_bytes(both[:-40])  # KEY_A whole, KEY_B cut
    bump(path)
    assert source.get_keys() is keys
    assert source.last_error is not None and "incomplete" in source.last_error
    path.write_bytes(both)
    bump(path)
    assert {key.kid for key in source.get_keys()} == {KEY_A.thumbprint(), KEY_B.thumbprint()}
    cut = tmp_path / "cut.pem"
    cut.write_bytes(both[:-40])
    with pytest.raises(ConfigurationError, match="incomplete"):
        FileKeySource(cut)
