"""Strict base64url, strict JSON, the algorithm table, and the package's public names."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, x25519

import zerotrust.tokens
from zerotrust.errors import ConfigurationError
from zerotrust.tokens import PrivateJWK
from zerotrust.tokens._b64 import b64url_decode, b64url_encode, is_canonical
from zerotrust.tokens._json import MAX_DEPTH, JSONError, depth_ok, freeze, loads_object, thaw
from zerotrust.tokens.algorithms import (
    ASYMMETRIC_ALGORITHMS,
    EC_CURVES,
    HMAC_ALGORITHMS,
    JWT_SVID_ALGORITHMS,
    SUPPORTED_ALGORITHMS,
    check_allowlist,
    check_rsa_exponent,
    default_algorithm,
    is_none,
    make_signer,
    make_verifier,
)

# --- base64url ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("", True),
        ("AA", True),
        ("AB", False),  # non-zero unused bits
        ("AAA", True),
        ("AAB", False),
        ("AAAA", True),
        ("A", False),
        ("AAAAA", False),
        ("AA==", False),
        ("A+A/", False),
        ("AA AA", False),
        ("-_-_", True),
        ("é", False),
    ],
)
def test_canonical_base64url(text: str, ok: bool) -> None:
    if ok:
        assert b64url_encode(b64url_decode(text)) == text
    else:
        with pytest.raises(ValueError):
            b64url_decode(text)
    if text.isascii():
        assert is_canonical(text.encode()) is ok


def test_base64url_of_bytes_and_of_endings_that_look_like_padding() -> None:
    assert b64url_decode(b"AQID") == b64url_decode("AQID") == b"\x01\x02\x03"
    for data in (b"\x00\x00\x17", b"\x00\x05\xf7", b"\xff"):  # AAAX, AAX3, _w
        assert b64url_decode(b64url_encode(data)) == data
    assert b64url_encode(b"\x00\x00\x17") == "AAAX"
    with pytest.raises(ValueError, match="base64url text must be ASCII"):
        b64url_decode("AAA\u0410")  # a Cyrillic A: no UnicodeEncodeError from deeper down


# --- JSON ----------------------------------------------------------------------------------------


def test_depth_bound_without_recursion() -> None:
    assert depth_ok("{" * MAX_DEPTH + "}" * MAX_DEPTH)
    assert not depth_ok("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    assert not depth_ok("[" * 100_000)
    # brackets inside strings (even escaped quotes) do not count
    text = '{"a":"' + "[{" * 50 + '\\"' + '","b":[[1]]}'
    assert depth_ok(text)
    assert dict(loads_object(text))["b"] == ((1,),)
    assert not depth_ok("[}" * 20)
    # exactly MAX_DEPTH deep, with more brackets than that in all: the exact count decides
    deepest = '{"a":' + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + ',"b":[],"c":{}}'
    assert depth_ok(deepest)
    assert loads_object(deepest)["c"] == {}
    assert not depth_ok('{"a":' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + ',"b":[]}')


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "[]",
        "null",
        '"x"',
        "{",
        '{"a":1}}',
        '{"a":1} x',
        '{"a":1,"a":2}',
        '{"o":{"a":1,"a":1}}',
        '{"a":NaN}',
        '{"a":Infinity}',
        '{"a":-Infinity}',
        '{"a":1e400}',
        '{"a":"\x01"}',
        "\ufeff{}",
        '{"a":' + "[" * 20 + "]" * 20 + "}",
        # unpaired surrogates (RFC 7493 2.1), in values and names, flat and nested
        '{"a":"\\ud800"}',
        '{"a":"x\\udfff"}',
        '{"\\udc00":1}',
        '{"a":"\\ude00\\ud83d"}',  # a pair in the wrong order
        '{"a":[{"b":"\\udbff"}]}',
        '{"a":{"\\ud800b":1}}',
        '{"a":["\\\\u", "\\ud800"]}',
    ],
)
def test_strict_json_refusals(text: str) -> None:
    with pytest.raises(JSONError):
        loads_object(text)


def test_escapes_that_make_unicode_text_are_read() -> None:
    assert loads_object('{"a":"\\ud83d\\ude00"}')["a"] == "\U0001f600"  # a surrogate pair
    assert loads_object('{"a":"\\u00e9\\uffff"}')["a"] == "\u00e9\uffff"
    assert loads_object('{"a":["\\\\ud800"]}')["a"] == ("\\ud800",)  # an escaped backslash
    assert loads_object('{"\\u0061":{"b":"\\u0062"}}') == {"a": {"b": "b"}}


def test_strict_json_bytes_and_freeze() -> None:
    with pytest.raises(JSONError):
        loads_object(b"\xff{}")
    value = loads_object(b' \n{"a": [1, {"b": [true, null]}], "c": 1.5}\t')
    assert loads_object('{"a":1} \r\n\t') == {"a": 1}  # RFC 8259 2: whitespace after the value
    assert value["a"][1]["b"] == (True, None)
    with pytest.raises(TypeError):
        value["a"][1]["b"] = 1  # type: ignore[index]
    assert thaw(value) == {"a": [1, {"b": [True, None]}], "c": 1.5}
    assert thaw(freeze({"x": [{"y": (1,)}]})) == {"x": [{"y": [1]}]}


# --- algorithms ----------------------------------------------------------------------------------


def test_curve_orders_match_cryptography() -> None:
    for algorithm, (_, curve_cls, size, order) in EC_CURVES.items():
        curve = curve_cls()
        assert (curve.key_size + 7) // 8 == size, algorithm
        group_order = getattr(curve, "group_order", None)
        if group_order is not None:
            assert group_order == order
        ec.derive_private_key(order - 1, curve)
        with pytest.raises(ValueError):
            ec.derive_private_key(order, curve)


def test_algorithm_sets() -> None:
    assert HMAC_ALGORITHMS.isdisjoint(ASYMMETRIC_ALGORITHMS)
    assert SUPPORTED_ALGORITHMS == HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS
    assert JWT_SVID_ALGORITHMS <= ASYMMETRIC_ALGORITHMS
    assert "EdDSA" not in JWT_SVID_ALGORITHMS
    assert not any(is_none(name) for name in SUPPORTED_ALGORITHMS)


@pytest.mark.parametrize(
    "algorithms",
    [
        *(["ES256", "HS256"], ["ES256", "es256"], ["none"], ["NoNe"], [b"ES256"], 5, "ES256"),
        *([], (), iter([]), None, b"ES256", "", ["ES256", ["ES256"]]),
    ],
)
def test_allowlist_refusals(algorithms: Any) -> None:
    with pytest.raises(ConfigurationError):
        check_allowlist(algorithms)


def test_rsa_public_exponent_rule() -> None:
    """Odd, at least 3 and at most 2**32, whatever the key library would also refuse."""
    for e in (3, 65537, 2**32 - 1):
        check_rsa_exponent(e)
    for e in (-3, 0, 1, 2, 4, 65536, 2**32, 2**32 + 1):
        with pytest.raises(ConfigurationError):
            check_rsa_exponent(e)


def test_keys_of_other_types_have_no_default_algorithm() -> None:
    for key in (
        x25519.X25519PrivateKey.generate(),
        x25519.X25519PrivateKey.generate().public_key(),
    ):
        with pytest.raises(ConfigurationError, match="unsupported key type"):
            default_algorithm(key)  # type: ignore[arg-type]


def test_a_signer_is_made_only_for_a_key_that_fits_its_algorithm() -> None:
    p256 = ec.generate_private_key(ec.SECP256R1())
    assert len(make_signer("ES256", p256)(b"data")) == 64
    for algorithm in ("ES384", "RS256", "EdDSA", "HS256", "none"):
        with pytest.raises(ConfigurationError):
            make_signer(algorithm, p256)


@pytest.mark.parametrize("algorithms", ["ES256", b"ES256", None, "", b""])
def test_an_allowlist_is_a_collection_of_names_not_one_name(algorithms: Any) -> None:
    with pytest.raises(ConfigurationError, match="must be a non-empty list of algorithm names"):
        check_allowlist(algorithms)


def test_a_key_on_another_curve_has_no_default_algorithm() -> None:
    for curve in (ec.SECP256K1(), ec.BrainpoolP256R1()):
        key = ec.generate_private_key(curve)
        for form in (key, key.public_key()):
            with pytest.raises(ConfigurationError, match="unsupported elliptic curve"):
                default_algorithm(form)


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA", "RS256", "PS256"])
def test_a_verifier_answers_true_or_false(algorithm: str) -> None:
    """``verify(signature, data)`` is a bool, never another falsy value, for a signature of the
    wrong length, a wrong one, or a right one."""
    key = PrivateJWK.generate(algorithm)
    verify = make_verifier(algorithm, key.public().public_key)
    signature = key.sign(b"data")
    assert verify(signature, b"data") is True
    assert verify(signature, b"date") is False
    assert verify(signature[:-1], b"data") is False
    assert verify(signature + b"\x00", b"data") is False


def test_allowlist_accepts_iterables() -> None:
    assert check_allowlist(("ES256", "EdDSA")) == {"ES256", "EdDSA"}
    assert check_allowlist(iter(["HS256", "HS512"])) == {"HS256", "HS512"}


# --- public names --------------------------------------------------------------------------------


def test_public_names_are_sorted_and_importable() -> None:
    names = zerotrust.tokens.__all__
    # isort style (as ruff's RUF022 keeps it): CONSTANTS, then Classes, then functions
    assert names == sorted(
        names, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n)
    )
    for name in names:
        assert getattr(zerotrust.tokens, name) is not None
