"""``encode_path``: a path rebuilt from the bytes a server decoded it to."""

from __future__ import annotations

import pytest

from zerotrust.authn.request import encode_path


@pytest.mark.parametrize(
    ("decoded", "expected"),
    [
        (b"", "/"),  # a server that decoded an empty path: the root, never an empty string
        (b"/", "/"),
        (b"/orders/42", "/orders/42"),
        # decoded delimiters are data again: never read as a query, a fragment or an escape
        (b"/a?b", "/a%3Fb"),
        (b"/a#b", "/a%23b"),
        (b"/a%2Fb", "/a%252Fb"),
        (b"/a b", "/a%20b"),
        # RFC 3986 pchar stays as it is
        (b"/!$&'()*+,;=:@-._~", "/!$&'()*+,;=:@-._~"),
        # bytes outside ASCII, as UTF-8 or not, are percent-encoded
        ("/caf\u00e9".encode(), "/caf%C3%A9"),
        (b"/\xff", "/%FF"),
        (b"/\x00\r\n", "/%00%0D%0A"),
    ],
)
def test_encode_path(decoded: bytes, expected: str) -> None:
    assert encode_path(decoded) == expected
