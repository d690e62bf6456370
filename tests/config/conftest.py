"""Fixtures of the settings tests (tests/test_config.py has the same three)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.config.helpers import make_bundle_file, make_files, make_issuer
from zerotrust.dev import DevCA
from zerotrust.tokens import TokenIssuer


@pytest.fixture
def issuer() -> TokenIssuer:
    return make_issuer()


@pytest.fixture
def files(tmp_path: Path, issuer: TokenIssuer) -> Path:
    return make_files(tmp_path, issuer)


@pytest.fixture
def bundle_file(files: Path, ca: DevCA) -> Path:
    return make_bundle_file(files, ca)
