"""Shared pieces of the reliability tests: warmed-up dpsctl child processes, stores in a known state, and checks
that a store is whole (opens, parses, no duplicate keys, SQLite integrity and indexes, no stray temporary files)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpsctl.core.keys import derive_device_key
from dpsctl.store import open_store
from dpsctl.store.schema import KINDS, key_of
from tests.helpers.cli import Dps
from tests.helpers.constants import ID_SCOPE

Location = Path | str  # a store file, or a PostgreSQL URL
GROUP = "fleet"
GROUP_KEY = "oiK77Oy7rBw8YB6IS6ukRChAw+Yq6GC61RMrPLSTiOOtdI+XDu0LmLuNm11p+qv2I+adqGUdZHm46zXAQdZoOA=="
HUBS = ("hub-a", "hub-b")
BUSY_MESSAGE = "is locked by another dpsctl process"

# A dpsctl process that imports everything, says "ready", then waits for one JSON line on stdin:
# {"commands": [[args...], ...]}. It says "started", runs each command in-process through dpsctl's real entry
# point (run_guarded over the Click command, exactly as the console script does), and prints one JSON line of
# [exit code, stderr] per command. With "markers" it also prints "c <time>" when a store commit begins and
# "C <time>" when it has returned, so that a test knows which commits a SIGKILL interrupted.
CHILD = textwrap.dedent(
    """
    import io, json, os, sys, time
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # the commands' own output goes nowhere

    import typer
    import yaml  # noqa: F401 - warm the lazy imports, so that timing starts at the command, not at loading
    import dpsctl.core.batch, dpsctl.core.provisioning, dpsctl.core.transfer  # noqa: F401
    from dpsctl.cli.app import app
    from dpsctl.cli.errors import run_guarded
    from dpsctl.store.sqlite_store import SqliteStore
    from dpsctl.store.tinydb_store import TinyDBStore
    from dpsctl.store.postgres_store import PostgresStore

    if sys.argv[1] == "markers":
        for cls in (SqliteStore, TinyDBStore, PostgresStore):
            def wrap(real):
                def _commit(self, tx):
                    proto.write(f"c {time.monotonic()}\\n")
                    real(self, tx)
                    proto.write(f"C {time.monotonic()}\\n")
                return _commit
            cls._commit = wrap(cls._commit)

    command = typer.main.get_command(app)
    proto.write("ready\\n")
    plan = json.loads(sys.stdin.readline())
    proto.write(f"started {time.monotonic()}\\n")
    results = []
    for argv in plan["commands"]:
        sys.stderr = io.StringIO()
        try:
            code = run_guarded(command, argv, "dpsctl")
        finally:
            err, sys.stderr = sys.stderr.getvalue(), sys.__stderr__
        results.append([code, err])
    proto.write("result " + json.dumps(results) + "\\n")
    """
)


@dataclass
class Outcome:
    """What one child did: exit codes and stderr of its commands (None if killed), commits begun and finished."""

    returncode: int
    results: list[tuple[int, str]] | None
    started_at: float
    commits_begun: list[float] = field(default_factory=list)
    commits_done: list[float] = field(default_factory=list)
    finished_at: float | None = None
    stderr: str = ""

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL

    @property
    def duration(self) -> float:
        """Seconds from start to the result (infinite for a run that did not finish)."""
        return self.finished_at - self.started_at if self.finished_at is not None else float("inf")


class Child:
    """One warmed-up dpsctl process (see CHILD)."""

    def __init__(self, env: dict[str, str] | None = None, *, markers: bool = False) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, "markers" if markers else "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.started_at = 0.0

    def wait_ready(self) -> None:
        line = self._line()
        assert line == "ready", f"child did not start: {line!r} {self.proc.stderr.read() if self.proc.stderr else ''}"

    def go(self, commands: list[list[str]]) -> None:
        """Send the commands (the child starts them at once; `wait_started` waits for that)."""
        assert self.proc.stdin
        self.proc.stdin.write(json.dumps({"commands": commands}) + "\n")
        self.proc.stdin.flush()

    def wait_started(self) -> float:
        line = self._line()
        assert line.startswith("started "), line
        self.started_at = float(line.split()[1])
        return self.started_at

    def _line(self) -> str:
        assert self.proc.stdout
        return self.proc.stdout.readline().strip()

    def finish(self, *, kill: bool = False, timeout: float = 120) -> Outcome:
        """SIGKILL the child (if asked, and if it is still running), then collect what it reported."""
        if kill:
            self.proc.send_signal(signal.SIGKILL)  # a no-op on a process that already exited (not yet reaped)
        assert self.proc.stdout and self.proc.stderr
        outcome = Outcome(0, None, self.started_at)
        for line in self.proc.stdout:  # until EOF: the process has exited or died
            tag, _, rest = line.strip().partition(" ")
            if tag == "c":
                outcome.commits_begun.append(float(rest))
            elif tag == "C":
                outcome.commits_done.append(float(rest))
            elif tag == "result":
                outcome.results = [(code, err) for code, err in json.loads(rest)]
                outcome.finished_at = time.monotonic()
        outcome.stderr = self.proc.stderr.read()
        outcome.returncode = self.proc.wait(timeout=timeout)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream:
                try:
                    stream.close()
                except BrokenPipeError:
                    pass
        return outcome


def run_workers(plans: list[list[list[str]]], env: dict[str, str]) -> list[Outcome]:
    """Run one child per plan, all released at the same moment; wait for all of them."""
    children = [Child(env) for _ in plans]
    for child in children:
        child.wait_ready()
    for child, plan in zip(children, plans):
        child.go(plan)
    outcomes = [child.finish(timeout=300) for child in children]
    for outcome in outcomes:
        assert outcome.returncode == 0 and outcome.results is not None, outcome.stderr[-3000:]
    return outcomes


def device_key(registration_id: str) -> str:
    """The key a device of the test group derives from the group key."""
    return derive_device_key(GROUP_KEY, registration_id)


def provision_one(store: Path, registration_id: str) -> list[str]:
    """A single-device `dpsctl provision` (its own command, its own lock and transaction)."""
    return ["--db", str(store), "provision", "--registration-id", registration_id, "--symmetric-key", device_key(registration_id)]


def storm(store: Path, pattern: str, count: int, chunk: int) -> list[str]:
    """A provisioning storm of the test group, committed in chunks of `chunk` devices."""
    return ["--db", str(store), "provision", "--count", str(count), "--id-pattern", pattern, "--group", GROUP, "--chunk-size", str(chunk), "-o", "json"]


def add_enrollment(store: Path, registration_id: str) -> list[str]:
    return ["--db", str(store), "enrollment", "add", registration_id, "--attestation", "symmetricKey"]


def make_base(store: Path) -> Dps:
    """A store with an ID scope, two linked hubs and a symmetric-key group (1 operation: the group)."""
    dps = Dps(store)
    dps.ok("init", "--id-scope", ID_SCOPE)
    for hub in HUBS:
        dps.ok("hub", "add", hub)
    dps.ok("enrollment-group", "add", GROUP, "--attestation", "symmetricKey", "--primary-key", GROUP_KEY)
    return dps


def contents(store: Location) -> dict[str, list[dict[str, Any]]]:
    """Every record of every kind, read through the store API (in one read transaction)."""
    with open_store(store) as opened, opened.transaction() as tx:
        return {kind: list(tx.scan(kind)) for kind in KINDS}


def label(store: Location) -> str:
    """The backend, for test summaries: the file suffix, or postgresql."""
    return store.suffix if isinstance(store, Path) else "postgresql"


def exists(store: Location) -> bool:
    """True when the store has been created."""
    if isinstance(store, Path):
        return store.exists()
    with open_store(store) as opened:
        return opened.exists()


def _pg(store: str) -> tuple[Any, str]:
    """A psycopg connection to the store's database, and the store's schema."""
    import psycopg

    from dpsctl.store.pglocation import parse

    where = parse(store)
    return psycopg.connect(where.conninfo, autocommit=True), where.schema


def drop_pg_store(store: str) -> None:
    """Remove a PostgreSQL store altogether (its schema)."""
    conn, schema = _pg(store)
    with conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def service_of(snapshot: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    (service,) = snapshot["service"]
    return service


def operations_of(snapshot: dict[str, list[dict[str, Any]]]) -> int:
    """The billable operations count of a snapshot: the service record's (older stores) plus every counter shard."""
    return service_of(snapshot)["operations"] + sum(doc["value"] for doc in snapshot.get("counters", []))


def store_files(store: Path) -> set[str]:  # (file stores only)
    """The names a store may legitimately have beside it."""
    return {store.name, store.name + ".lock", store.name + "-wal", store.name + "-shm", store.name + "-journal"}


def stray_files(store: Location) -> list[str]:
    """Files in the store's folder that are not the store or its lock/WAL files (temporary files, say)."""
    if not isinstance(store, Path):
        return []  # a database has no files of its own beside it
    return sorted(p.name for p in store.parent.iterdir() if p.name not in store_files(store))


def assert_store_whole(store: Location) -> dict[str, list[dict[str, Any]]]:
    """The store opens, every kind reads, keys are unique, and SQLite's own checks pass; returns its contents.

    (A TinyDB file that reads at all has passed its checks: JSON, the dpsctl marker, the schema version.)
    """
    snapshot = contents(store)
    for kind, docs in snapshot.items():
        keys = [key_of(kind, doc) for doc in docs]
        assert len(keys) == len(set(keys)), f"duplicate {kind} keys in {store}"
    if not isinstance(store, Path):
        from dpsctl.store.schema import index_rows as pg_index_rows

        pg, schema = _pg(store)
        with pg:
            if pg.execute("SELECT to_regclass(%s)", (f'"{schema}".record_index',)).fetchone()[0] is None:
                assert snapshot == {kind: [] for kind in KINDS}
                return snapshot
            stored = set(pg.execute(f'SELECT kind, key, name, value FROM "{schema}".record_index').fetchall())
            expected = {row for kind, docs in snapshot.items() for doc in docs for row in pg_index_rows(kind, key_of(kind, doc), doc)}
            assert stored == expected, f"record_index disagrees with records in {store}"
        return snapshot
    if store.suffix == ".sqlite":
        conn = sqlite3.connect(store)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            # Every index row points at a record, and every record's indexed values are there: a commit that
            # stopped between the records and their index would show here.
            from dpsctl.store.schema import index_rows as _index_rows

            stored = set(conn.execute("SELECT kind, key, name, value FROM record_index"))
            expected = {row for kind, docs in snapshot.items() for doc in docs for row in _index_rows(kind, key_of(kind, doc), doc)}
            assert stored == expected, f"record_index disagrees with records in {store}"
        finally:
            conn.close()
    return snapshot


def reset_store(store: Location, base: Any) -> None:
    """Put the base store back (and nothing else: no WAL of an earlier run, no temporary files)."""
    if not isinstance(store, Path):
        drop_pg_store(store)
        with open_store(store) as opened, opened.transaction(write=True) as tx:
            for kind, docs in base.items():
                tx.put_many(kind, docs)
        return
    for path in store.parent.iterdir():
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    fd = os.open(store, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(base)


def frozen_base(store: Location) -> Any:
    """The bytes of a closed store (for SQLite: checkpointed, so that the main file is the whole store);
    a database's records."""
    if not isinstance(store, Path):
        return contents(store)
    if store.suffix == ".sqlite":
        conn = sqlite3.connect(store)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        assert not Path(str(store) + "-wal").exists() or Path(str(store) + "-wal").stat().st_size == 0
    return store.read_bytes()
