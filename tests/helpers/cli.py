"""The `dps` runner: the real CLI, in-process through its error boundary, against one store; and the entry point as a subprocess."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def dpsctl_process(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The installed entry point in a subprocess (python -m dpsctl, the same code as the `dpsctl` script)."""
    return subprocess.run([sys.executable, "-m", "dpsctl", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
