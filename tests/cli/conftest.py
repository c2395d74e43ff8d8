"""The CLI tests run over every backend: the two files and PostgreSQL (a fresh schema per test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.backends import BACKENDS, store_for
from tests.helpers.cli import Dps


@pytest.fixture(params=BACKENDS)
def dps(request: pytest.FixtureRequest, tmp_path: Path) -> Dps:
    """A dpsctl bound to a fresh store of each backend in turn."""
    return Dps(store_for(request, tmp_path, request.param))
