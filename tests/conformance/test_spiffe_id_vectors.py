"""SPIFFE-ID specification, section 2, as go-spiffe's ``spiffeid`` tests check it: every
character in a trust domain and in a path segment, and the structural cases (scheme,
authority, empty, dot and trailing segments, percent-encoding, query, fragment, port,
userinfo, length).
"""

from __future__ import annotations

import string

import pytest

from zerotrust.errors import InvalidSpiffeId, InvalidTrustDomain
from zerotrust.identity import SpiffeId, TrustDomain

# SPIFFE-ID 2.1: trust domain characters; 2.2: path segment characters
TD_CHARS = frozenset(string.ascii_lowercase + string.digits + ".-_")
PATH_CHARS = TD_CHARS | frozenset(string.ascii_uppercase)
# every ASCII character but "/" (which separates), and a few beyond ASCII
CHARACTERS = [chr(c) for c in range(128) if chr(c) != "/"]
CHARACTERS += ["\u00e9", "\u0435", "\uff41", "\u00a0"]


@pytest.mark.parametrize("char", CHARACTERS, ids=lambda c: f"U+{ord(c):04X}")
def test_trust_domain_characters(char: str) -> None:
    text = f"spiffe://trust{char}domain/path"
    if char in TD_CHARS:
        assert str(SpiffeId.parse(text).trust_domain) == f"trust{char}domain"
        assert TrustDomain(f"trust{char}domain").name == f"trust{char}domain"
    else:
        with pytest.raises(InvalidSpiffeId):
            SpiffeId.parse(text)
        with pytest.raises(InvalidTrustDomain):
            TrustDomain(f"trust{char}domain")


@pytest.mark.parametrize("char", CHARACTERS, ids=lambda c: f"U+{ord(c):04X}")
def test_path_characters(char: str) -> None:
    text = f"spiffe://trustdomain/pa{char}th"
    if char in PATH_CHARS:
        assert SpiffeId.parse(text).path == f"/pa{char}th"
        assert str(SpiffeId.from_segments("trustdomain", f"pa{char}th")) == text
    else:
        with pytest.raises(InvalidSpiffeId):
            SpiffeId.parse(text)
        with pytest.raises(InvalidSpiffeId):
            SpiffeId.from_segments("trustdomain", f"pa{char}th")


@pytest.mark.parametrize(
    ("text", "trust_domain", "path"),
    [
        ("spiffe://trustdomain", "trustdomain", ""),
        ("spiffe://trustdomain/path", "trustdomain", "/path"),
        ("spiffe://trustdomain/path1/path2", "trustdomain", "/path1/path2"),
        ("spiffe://trustdomain/.path", "trustdomain", "/.path"),
        ("spiffe://trustdomain/..path", "trustdomain", "/..path"),
        ("spiffe://trustdomain/...", "trustdomain", "/..."),
        ("spiffe://trustdomain/path.", "trustdomain", "/path."),
        ("spiffe://trust.domain-1_2/P-a_t.h", "trust.domain-1_2", "/P-a_t.h"),
        ("spiffe://1.2.3.4/path", "1.2.3.4", "/path"),  # an IP address is a valid name here
    ],
)
def test_valid_ids(text: str, trust_domain: str, path: str) -> None:
    spiffe_id = SpiffeId.parse(text)
    assert (spiffe_id.trust_domain.name, spiffe_id.path, str(spiffe_id)) == (
        trust_domain,
        path,
        text,
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "spiffe",
        "spiffe:",
        "spiffe:/",
        "spiffe://",
        "spiffe:///",
        "spiffe:///path",
        "spiffe:trustdomain/path",  # missing "//"
        "spiffe:/trustdomain/path",
        "SPIFFE://trustdomain/path",  # the scheme is lowercase
        "Spiffe://trustdomain/path",
        "http://trustdomain/path",
        "://trustdomain/path",
        "//trustdomain/path",
        "trustdomain/path",
        "spiffe://trustdomain/",  # trailing slash
        "spiffe://trustdomain/path/",
        "spiffe://trustdomain//path",  # empty segment
        "spiffe://trustdomain/path//",
        "spiffe://trustdomain/./path",  # dot segments
        "spiffe://trustdomain/../path",
        "spiffe://trustdomain/path/.",
        "spiffe://trustdomain/path/..",
        "spiffe://trustdomain/.",
        "spiffe://trustdomain/..",
        "spiffe://trustdomain/pa%20th",  # percent-encoding
        "spiffe://trustdomain/%2e%2e/path",
        "spiffe://trust%2Edomain/path",
        "spiffe://trustdomain/path?query=1",  # query and fragment
        "spiffe://trustdomain/path?",
        "spiffe://trustdomain/path#fragment-1",
        "spiffe://trustdomain/path#",
        "spiffe://trustdomain?query",
        "spiffe://trustdomain:8080/path",  # port
        "spiffe://trustdomain:/path",
        "spiffe://user:password@trustdomain/path",  # userinfo
        "spiffe://@trustdomain/path",
        "spiffe://[::1]/path",  # IP literal
        "spiffe://Trustdomain/path",  # trust domains are lowercase
        "spiffe://trustdomain/path\n",
        " spiffe://trustdomain/path",
        "spiffe://trustdomain/path ",
        "spiffe://trustdomain\\path",
    ],
)
def test_invalid_ids(text: str) -> None:
    with pytest.raises(InvalidSpiffeId):
        SpiffeId.parse(text)


def test_maximum_lengths() -> None:
    # SPIFFE-ID 2.3: URIs up to 2048 bytes; 2.1: trust domain names up to 255 bytes
    longest_td = "a" * 255
    assert SpiffeId.parse(f"spiffe://{longest_td}/p").trust_domain.name == longest_td
    with pytest.raises(InvalidSpiffeId):
        SpiffeId.parse(f"spiffe://{longest_td}a/p")
    prefix = "spiffe://trustdomain/"
    longest = prefix + "p" * (2048 - len(prefix))
    assert str(SpiffeId.parse(longest)) == longest
    with pytest.raises(InvalidSpiffeId):
        SpiffeId.parse(longest + "p")


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("trustdomain", "trustdomain"),
        ("spiffe://trustdomain", "trustdomain"),
        ("spiffe://trustdomain/path", "trustdomain"),
        ("spiffe://trustdomain/path/element", "trustdomain"),
    ],
)
def test_trust_domain_from_name_or_id(text: str, name: str) -> None:
    assert TrustDomain.parse(text).name == name


@pytest.mark.parametrize(
    "text",
    [
        "",
        "spiffe://",
        "spiffe:///path",
        "spiffe://trustdomain/",
        "spiffe://trustdomain/path/",
        "spiffe://trustdomain//path",
        "spiffe:/trustdomain",
        "Trustdomain",
        "trustdomain:8080",
        "user@trustdomain",
        "trust domain",
        "SPIFFE://trustdomain",
    ],
)
def test_trust_domain_invalid(text: str) -> None:
    with pytest.raises(InvalidTrustDomain):
        TrustDomain.parse(text)


@pytest.mark.parametrize(
    ("path", "valid"),
    [
        ("", True),
        ("/path", True),
        ("/path/element", True),
        ("/", False),
        ("//", False),
        ("path", False),  # no leading slash
        ("/path/", False),
        ("/./path", False),
        ("/path/..", False),
        ("/pa%41th", False),
    ],
)
def test_from_path(path: str, valid: bool) -> None:
    if valid:
        assert SpiffeId.from_path("trustdomain", path).path == path
    else:
        with pytest.raises(InvalidSpiffeId):
            SpiffeId.from_path("trustdomain", path)


@pytest.mark.parametrize(
    ("segments", "valid"),
    [
        ((), True),
        (("path",), True),
        (("path", "element"), True),
        (("",), False),
        (("path", ""), False),
        ((".",), False),
        (("..",), False),
        (("pa/th",), False),
        (("/path",), False),
    ],
)
def test_from_segments(segments: tuple[str, ...], valid: bool) -> None:
    if valid:
        assert SpiffeId.from_segments("trustdomain", *segments).segments == segments
    else:
        with pytest.raises(InvalidSpiffeId):
            SpiffeId.from_segments("trustdomain", *segments)
