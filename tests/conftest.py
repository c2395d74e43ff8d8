"""Shared fixtures: a `dps` runner (tests/helpers/cli.py) on a temp store, a PostgreSQL server, the conformance marker."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.backends import POSTGRES_URL_ENV, STORE_FILES
from tests.helpers.cli import Dps
from tests.helpers.webhook import PROXY_VARIABLES, Webhook


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DPSCTL_DB", "DPSCTL_OUTPUT", "DPSCTL_LOCK_TIMEOUT", "DPSCTL_DEBUG"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(params=sorted(STORE_FILES))
def dps(request: pytest.FixtureRequest, tmp_path: Path) -> Dps:
    """A dpsctl bound to a fresh store file; every test using it runs once per file backend (tests/cli adds PostgreSQL)."""
    return Dps(tmp_path / STORE_FILES[request.param])


@pytest.fixture
def webhook_key() -> str:
    """The function key in the webhook fixture's URL (a test module may override it)."""
    return "s3cret"


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch, webhook_key: str) -> Iterator[Webhook]:
    """A local allocation webhook at http://127.0.0.1:PORT/api/allocate?code=KEY, stopped after the test."""
    for name in PROXY_VARIABLES:  # a proxy from the environment would send the local calls elsewhere
        monkeypatch.delenv(name, raising=False)
    hook = Webhook(key=webhook_key).start()
    yield hook
    hook.stop()


def _no_postgres(reason: str) -> None:
    """Skip the PostgreSQL tests (one line: why), or fail under CI, where they must run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL tests cannot run under CI=true: {reason}", pytrace=False)
    pytest.skip(f"no PostgreSQL server: {reason} (set {POSTGRES_URL_ENV}, or install PostgreSQL's initdb and pg_ctl)")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server URL: DPSCTL_TEST_POSTGRES_URL, else a throwaway server started for this session."""
    import importlib.util

    if importlib.util.find_spec("psycopg") is None:
        _no_postgres("psycopg is not installed (pip install -e '.[test,postgres]')")
    url = os.environ.get(POSTGRES_URL_ENV)
    if url:
        yield url
        return
    from tests.postgres_server import start

    try:
        server = start()
    except RuntimeError as exc:
        _no_postgres(str(exc))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A store URL of its own for one test: a fresh schema (and the schemas of its siblings), dropped afterwards."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield f"{postgres_server}{'&' if '?' in postgres_server else '?'}schema={schema}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        names = [row[0] for row in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (schema + "%",))]
        for name in names:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A rule marker must name a rule of the catalogue: a typo fails the run at once, not only the drift test."""
    from tests.conformance.catalogue import BY_ID

    for item in items:
        for mark in item.iter_markers("rule"):
            rule_id = mark.args[0] if len(mark.args) == 1 else None
            if rule_id not in BY_ID:
                raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.rule({', '.join(map(repr, mark.args))}) names no rule of tests/conformance/catalogue.py")
