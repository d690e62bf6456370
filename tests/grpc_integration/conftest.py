from __future__ import annotations

import pytest

from tests.grpc_integration._support import World, make_world
from zerotrust.dev import DevCA


@pytest.fixture
def world(ca: DevCA, other_ca: DevCA) -> World:
    return make_world(ca, other_ca)
