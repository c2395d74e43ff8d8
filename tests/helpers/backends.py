"""The store backends every store-level test runs over, and where a test's store of each backend lives."""

from __future__ import annotations

from pathlib import Path

import pytest

STORE_FILES = {"tinydb": "dps.json", "sqlite": "dps.sqlite"}  # the file backends, and their store file names
# Every backend a store can be opened with (the in-memory store aside). PostgreSQL tests run against
# DPSCTL_TEST_POSTGRES_URL, else a throwaway server, else they skip (fail under CI): see tests/conftest.py.
BACKENDS = [*sorted(STORE_FILES), "postgresql"]
POSTGRES_URL_ENV = "DPSCTL_TEST_POSTGRES_URL"


def store_for(request: pytest.FixtureRequest, folder: Path, backend: str) -> Path | str:
    """A new store location of `backend`: a file in `folder`, or a fresh PostgreSQL schema."""
    if backend == "postgresql":
        return request.getfixturevalue("postgres_url")
    return folder / STORE_FILES[backend]
