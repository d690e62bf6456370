"""SPIFFE ID matchers: ``from zerotrust import match`` then ``match.member_of("example.org")``.

This is the public home of :mod:`zerotrust.identity.match`; see there for details.
"""

from zerotrust.identity.match import (
    Matcher,
    MatchResult,
    all_of,
    any,
    any_of,
    exact,
    member_of,
    not_,
    one_of,
    path_glob,
    path_prefix,
)

__all__ = [
    "MatchResult",
    "Matcher",
    "all_of",
    "any",
    "any_of",
    "exact",
    "member_of",
    "not_",
    "one_of",
    "path_glob",
    "path_prefix",
]
