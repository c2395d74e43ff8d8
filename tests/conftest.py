"""Shared fixtures: a `dps` runner that drives the real CLI (through its error boundary) against a temp store."""

from __future__ import annotations

import json
import subprocess
import sys
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
    """Runs `dpsctl --db STORE ...` in-process, as a user would type it."""

    def __init__(self, store: Path) -> None:
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

        if not self.store.exists():
            return {}
        with open_store(self.store).transaction() as tx:
            return {kind: list(tx.scan(kind)) for kind in KINDS}


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DPSCTL_DB", "DPSCTL_OUTPUT", "DPSCTL_LOCK_TIMEOUT", "DPSCTL_DEBUG"):
        monkeypatch.delenv(name, raising=False)


STORE_FILES = {"tinydb": "dps.json", "sqlite": "dps.sqlite"}


@pytest.fixture(params=sorted(STORE_FILES))
def dps(request: pytest.FixtureRequest, tmp_path: Path) -> Dps:
    """A dpsctl bound to a fresh store file; every CLI test runs once per file backend."""
    return Dps(tmp_path / STORE_FILES[request.param])


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
