"""Store bugs the reliability runs found, each pinned down deterministically (each fails without its fix)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers.cli import Dps
from tests.reliability.support import BUSY_MESSAGE, assert_store_whole, make_base, stray_files

# `dpsctl enrollment add` whose process is SIGKILLed just before a new SQLite store gets its dpsctl marker:
# the moment between "the file exists" and "the file is a dpsctl store".
KILLED_WHILE_CREATING = textwrap.dedent(
    """
    import os, signal, sqlite3, sys
    import dpsctl.store.sqlite_store as module

    class Connection:
        def __init__(self, real):
            self.real = real
        def __getattr__(self, name):
            return getattr(self.real, name)
        def executemany(self, sql, rows):
            if "INTO meta" in sql:
                os.kill(os.getpid(), signal.SIGKILL)
            return self.real.executemany(sql, rows)

    class Sqlite3:
        def __getattr__(self, name):
            return getattr(sqlite3, name)
        def connect(self, *args, **kwargs):
            return Connection(sqlite3.connect(*args, **kwargs))

    module.sqlite3 = Sqlite3()
    from dpsctl.cli.app import main
    sys.argv = ["dpsctl", "--db", sys.argv[1], "enrollment", "add", "first", "--attestation", "symmetricKey"]
    main()
    """
)


@pytest.mark.slow  # a real process killed, then a real one started: seconds
def test_a_sqlite_store_killed_while_being_created_does_not_block_the_next_command(tmp_path: Path) -> None:
    # Before the fix the store was created in place: the kill left a file with tables but no marker, and every
    # later command failed with "is a SQLite database but not a dpsctl store" (and parallel first commands
    # could see the same half-made file, or crash on the O_EXCL race).
    store = tmp_path / "dps.sqlite"
    killed = subprocess.run([sys.executable, "-c", KILLED_WHILE_CREATING, str(store)], capture_output=True, text=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    dps = Dps(store)
    dps.ok("enrollment", "add", "second", "--attestation", "symmetricKey")
    assert [e["registrationId"] for e in dps.json("enrollment", "list")] == ["second"]
    assert_store_whole(store)


def test_a_sqlite_store_held_by_another_process_is_busy_not_foreign(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A connection in exclusive locking mode keeps everyone else from even reading the WAL store. Before the
    # fix the failed read of the marker table was taken for "not a dpsctl store" (exit 1, telling the user
    # to restore a backup of a healthy store); it is the documented lock-wait timeout (exit 8).
    store = tmp_path / "dps.sqlite"
    make_base(store)
    holder = sqlite3.connect(store, isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("UPDATE meta SET value = value WHERE name = 'app'")
        holder.execute("COMMIT")  # the exclusive lock stays held until the connection closes
        monkeypatch.setenv("DPSCTL_LOCK_TIMEOUT", "0.2")
        dps = Dps(store)
        for args in (["enrollment", "list"], ["enrollment", "add", "x", "--attestation", "symmetricKey"], ["store", "info"]):
            run = dps(*args)
            assert run.exit_code == 8, (args, run)
            assert run.stderr.startswith(f"error: store {store} {BUSY_MESSAGE}") and "DPSCTL_LOCK_TIMEOUT" in run.stderr, run
    finally:
        holder.close()
    Dps(store).ok("enrollment", "add", "x", "--attestation", "symmetricKey")


def test_a_killed_writers_temporary_file_is_removed_by_the_next_writer(tmp_path: Path) -> None:
    # A TinyDB writer killed between writing its temporary copy and renaming it left a full copy of the store
    # (keys included) beside it, forever. The next writer, holding the lock, knows it is stale and removes it.
    store = tmp_path / "dps.json"
    dps = make_base(store)
    stale = tmp_path / f".{store.name}.{os.getpid() + 1}.tmp"
    stale.write_bytes(store.read_bytes()[:100])  # half a store, as a kill during the write leaves it
    other = tmp_path / ".other.json.1.tmp"  # another store's: not ours to touch
    other.write_bytes(b"{}")
    before = Dps(store).snapshot()
    dps.ok("enrollment", "list")  # readers take no lock and leave it
    assert stale.exists()
    dps.ok("enrollment", "add", "after", "--attestation", "symmetricKey")
    assert not stale.exists() and other.exists()
    assert stray_files(store) == [other.name]
    after = Dps(store).snapshot()
    assert [e["registrationId"] for e in after["enrollments"]] == ["after"]
    assert {k: v for k, v in after.items() if k not in ("enrollments", "counters")} == {k: v for k, v in before.items() if k not in ("enrollments", "counters")}
