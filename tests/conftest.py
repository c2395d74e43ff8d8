"""Shared fixtures: a `dps` runner that drives the real CLI (through its error boundary) against a temp store."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from dpsctl.cli.app import app
from dpsctl.cli.errors import run_guarded


@dataclass
class Run:
    """What one dpsctl invocation did."""

    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """stdout parsed as JSON."""
        return json.loads(self.stdout)

    def __repr__(self) -> str:  # shown by pytest when an assertion on exit_code fails
        return f"Run(exit_code={self.exit_code}, stdout={self.stdout[-2000:]!r}, stderr={self.stderr[-2000:]!r})"


class Dps:
    """Runs `dpsctl --db STORE ...` in-process, as a user would type it (STORE: a file, or a PostgreSQL URL)."""

    def __init__(self, store: Path | str) -> None:
        self.store = store
        self.runner = CliRunner()
        self.command = typer.main.get_command(app)

    def __call__(self, *args: str, input: str | None = None) -> Run:
        # CliRunner's isolation (stdin, stdout, stderr, env), but through dpsctl's own error boundary,
        # exactly as the console entry point runs it.
        with self.runner.isolation(input=input) as (out, err, _):
            code = run_guarded(self.command, ["--db", str(self.store), *args], "dpsctl")
            sys.stdout.flush()
            sys.stderr.flush()
            return Run(code, out.getvalue().decode(), err.getvalue().decode())

    def ok(self, *args: str, input: str | None = None) -> Run:
        """Run and insist on exit 0."""
        run = self(*args, input=input)
        assert run.exit_code == 0, run
        return run

    def json(self, *args: str) -> Any:
        """Run with -o json and return the parsed output."""
        return self.ok(*args, "-o", "json").json()

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """Every record of every kind, read through the backend: compares stores by content, not bytes."""
        from dpsctl.store import open_store
        from dpsctl.store.schema import KINDS

        if not self.exists():
            return {}
        with open_store(self.store) as store, store.transaction() as tx:
            return {kind: list(tx.scan(kind)) for kind in KINDS}

    @property
    def is_file(self) -> bool:
        """True for a file store (TinyDB, SQLite), False for a PostgreSQL URL."""
        return isinstance(self.store, Path)

    def exists(self) -> bool:
        """True when the store has been created."""
        if self.is_file:
            return self.store.exists()  # type: ignore[union-attr]
        from dpsctl.store import open_store

        with open_store(self.store) as store:
            return store.exists()

    def sibling(self, name: str) -> Dps:
        """A dpsctl on another, new store of the same backend (for copies and round trips)."""
        if isinstance(self.store, Path):
            return Dps(self.store.with_name(name + self.store.suffix))
        return Dps(re.sub(r"schema=([a-z0-9_]+)", lambda m: f"schema={m.group(1)}_{name}", self.store))

    def fingerprint(self) -> object:
        """What proves the store unchanged: a file's bytes; a database's records."""
        return self.store.read_bytes() if isinstance(self.store, Path) else self.snapshot()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DPSCTL_DB", "DPSCTL_OUTPUT", "DPSCTL_LOCK_TIMEOUT", "DPSCTL_DEBUG"):
        monkeypatch.delenv(name, raising=False)


STORE_FILES = {"tinydb": "dps.json", "sqlite": "dps.sqlite"}
BACKENDS = [*sorted(STORE_FILES), "postgresql"]  # every backend a store can be opened with (memory aside)
POSTGRES_URL_ENV = "DPSCTL_TEST_POSTGRES_URL"


@pytest.fixture(params=sorted(STORE_FILES))
def dps(request: pytest.FixtureRequest, tmp_path: Path) -> Dps:
    """A dpsctl bound to a fresh store file; every test using it runs once per file backend (tests/cli adds PostgreSQL)."""
    return Dps(tmp_path / STORE_FILES[request.param])


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


def store_for(request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> Path | str:
    """A new store location of `backend`: a file in tmp_path, or a fresh PostgreSQL schema."""
    if backend == "postgresql":
        return request.getfixturevalue("postgres_url")
    return tmp_path / STORE_FILES[backend]


def dpsctl_process(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The installed entry point in a subprocess (python -m dpsctl, the same code as the `dpsctl` script)."""
    return subprocess.run([sys.executable, "-m", "dpsctl", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def pytest_configure(config: pytest.Config) -> None:
    """Register the conformance marker (docs/conformance.md is generated from it)."""
    config.addinivalue_line("markers", 'rule(id, differs=None): the test shows DPS rule `id` of tests/conformance/catalogue.py (differs="how" for a deliberate difference)')


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A rule marker must name a rule of the catalogue: a typo fails the run at once, not only the drift test."""
    from tests.conformance.catalogue import BY_ID

    for item in items:
        for mark in item.iter_markers("rule"):
            rule_id = mark.args[0] if len(mark.args) == 1 else None
            if rule_id not in BY_ID:
                raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.rule({', '.join(map(repr, mark.args))}) names no rule of tests/conformance/catalogue.py")
