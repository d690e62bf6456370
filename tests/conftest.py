from __future__ import annotations

import datetime as dt

import pytest

from zerotrust import FixedClock
from zerotrust.dev import DevCA


@pytest.fixture(scope="session")
def ca() -> DevCA:
    """A root-only dev CA for example.org."""
    return DevCA.create("example.org")


@pytest.fixture(scope="session")
def ca_with_intermediate() -> DevCA:
    return DevCA.create("example.org", intermediate=True)


@pytest.fixture(scope="session")
def other_ca() -> DevCA:
    """A CA for a second trust domain, other.org."""
    return DevCA.create("other.org")


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(dt.datetime.now(dt.timezone.utc))
