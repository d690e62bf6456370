"""SPIFFE identities: validated :class:`SpiffeId` / :class:`TrustDomain` values and matchers.

The matcher factories live in :mod:`zerotrust.match` (also importable as
``zerotrust.identity.match``).
"""

from zerotrust.identity.match import Matcher, MatchResult
from zerotrust.identity.spiffe_id import SpiffeId, TrustDomain

__all__ = ["MatchResult", "Matcher", "SpiffeId", "TrustDomain"]
