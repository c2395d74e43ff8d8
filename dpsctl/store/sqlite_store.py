"""The scale backend: SQLite (standard library), indexed lookups, WAL, one SQL transaction per command.

Chosen by the store's file name (`.sqlite`, `.sqlite3`, `.db`). Records are the same JSON documents as in
the TinyDB file; each kind's key and indexed fields (dpsctl/store/schema.py) get their own columns so that
a provisioning run with a million enrollments reads only the rows it needs.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from dpsctl.core.errors import StoreBusy, StoreError
from dpsctl.core.safefiles import CLOEXEC, NOFOLLOW, os_error, sync_folder
from dpsctl.store.base import DELETED, Store, Transaction
from dpsctl.store.files import check_store_file, remove_empty, secure_side_files, store_target
from dpsctl.store.locking import lock_timeout
from dpsctl.store.schema import APP_MARKER, SCHEMA_VERSION, Doc, compact_json, index_rows, index_set

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS records_by_key ON records (kind, key);
-- One row per indexed field of a record. Keyed by the record, so that replacing or deleting a record finds its
-- rows directly (keyed by value, every chunk of a batch scanned all of a kind's rows: O(n) per commit);
-- looked up by value through the second index.
-- (Columns in key order: SQLite 3.40's integrity_check misreads a WITHOUT ROWID table whose key columns
-- are declared in another order, and reports its values as NULL.)
CREATE TABLE IF NOT EXISTS record_index (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (kind, key, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS record_index_by_value ON record_index (kind, name, value);
"""

_CREATING = (".new",)  # the suffix of a store being built beside its path (see SqliteStore._create)


def _busy(path: Path) -> StoreBusy:
    return StoreBusy(
        f"store {path} is locked by another dpsctl process (waited {lock_timeout():g} s)",
        hint="retry, or raise the wait with DPSCTL_LOCK_TIMEOUT=SECONDS",
    )


# SQLite's words for the operating system's failures, as dpsctl's one-line errors (the transaction is rolled back).
_WRITE_FAILURES = (
    (
        "full",
        "the disk is full (no space left on device)",
        "free some space on that disk, or move the store to another one",
    ),
    (
        "readonly",
        "the store or its folder is read-only",
        "check the owner and mode of the store, its -wal and -shm files and its folder (ls -la)",
    ),
    ("disk i/o", "an input/output error (a failing disk?)", "check the disk (dmesg)"),
)


def _write_failure(path: Path, exc: sqlite3.OperationalError) -> Exception:
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return _busy(path)
    for words, reason, hint in _WRITE_FAILURES:
        if words in text:
            return StoreError(f"cannot write store {path}: {reason}; nothing was written", hint=hint)
    return StoreError(f"cannot write store {path}: {exc}; nothing was written")


class _SqliteTransaction(Transaction):
    def __init__(self, conn: sqlite3.Connection, writable: bool, path: Path) -> None:
        super().__init__(writable)
        self.conn = conn
        self.path = path
        self.stand_in = False

    def _load(self, kind: str) -> dict[str, Doc]:
        rows = self.conn.execute("SELECT key, doc FROM records WHERE kind = ?", (kind,))
        return {key: json.loads(doc) for key, doc in rows}

    def _base_get(self, kind: str, key: str) -> Doc | None:
        if kind in self._loaded:
            return self._loaded[kind].get(key)
        row = self.conn.execute("SELECT doc FROM records WHERE kind = ? AND key = ?", (kind, key)).fetchone()
        return json.loads(row[0]) if row else None

    def _base_keys(self, kind: str) -> Iterable[str]:
        return [row[0] for row in self.conn.execute("SELECT key FROM records WHERE kind = ?", (kind,))]

    def _stored_keys(self, kind: str, keys: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(f"SELECT key FROM records WHERE kind = ? AND key IN ({marks})", (kind, *chunk))
            found.update(row[0] for row in rows)
        return found

    def count(self, kind: str) -> int:
        """COUNT(*) in the database, adjusted for this transaction's pending changes."""
        (total,) = self.conn.execute("SELECT COUNT(*) FROM records WHERE kind = ?", (kind,)).fetchone()
        pending = self.changes.get(kind, {})
        if pending:
            stored = self._stored_keys(kind, list(pending))
            for key, doc in pending.items():
                if doc is DELETED and key in stored:
                    total -= 1
                elif doc is not DELETED and key not in stored:
                    total += 1
        return int(total)

    def find(self, kind: str, index: str, value: str) -> list[Doc]:
        """Indexed lookup in the database, merged with this transaction's pending changes."""
        wanted = value.lower()
        rows = self.conn.execute(
            "SELECT r.key, r.doc FROM record_index i CROSS JOIN records r ON r.kind = i.kind AND r.key = i.key "
            "WHERE i.kind = ? AND i.name = ? AND i.value = ? ORDER BY r.key",
            (kind, index, wanted),
        )
        found = {key: json.loads(doc) for key, doc in rows}
        return self._merge_found(kind, index, wanted, found)


class SqliteStore(Store):
    """A SQLite database file; SQLite's own locking serialises writers, WAL lets readers run alongside."""

    backend = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)
        # Checked connections, kept across transactions and handed to one transaction at a time: opening and
        # checking a connection costs more than a registration, and a server or a batch does thousands.
        self._idle: list[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()

    def close(self) -> None:
        """Close the idle connections (a command calls this when it ends)."""
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def exists(self) -> bool:
        """True when the database file exists."""
        return os.path.exists(self.path)  # False, not OSError, for a name too long: opening it says why

    def size_bytes(self) -> int:
        """Size of the database and its WAL file."""
        wal = self.path.with_name(self.path.name + "-wal")
        return sum(p.stat().st_size for p in (self.path, wal) if p.exists())

    def _connect(self, writable: bool, target: Path) -> sqlite3.Connection:
        with self._pool_lock:
            if self._idle:
                return self._idle.pop()
        info = check_store_file(self.path, target, write=writable, creating=_CREATING)
        if info is None:
            if not writable:
                # Like the TinyDB file: reading a store that does not exist yet sees an empty one, and creates nothing.
                empty = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
                empty.executescript(SCHEMA)
                empty.executemany(
                    "INSERT INTO meta VALUES (?, ?)", [("app", APP_MARKER), ("schemaVersion", str(SCHEMA_VERSION))]
                )
                return empty
            if not target.parent.is_dir():
                raise StoreError(f"folder {target.parent} of store {self.path} does not exist")
            remove_empty(
                secure_side_files(self.path, target, os.geteuid())
            )  # before creating: a planted -wal is refused first
            self._create(target)
            info = check_store_file(self.path, target, write=writable, creating=_CREATING)
            assert info is not None
        if info.st_size == 0:
            raise StoreError(
                f"store {self.path} is empty (perhaps a crash of another program, or a truncated copy); it was left untouched",
                hint="point --db / DPSCTL_DB at another file, or restore it from a backup",
            )
        created = secure_side_files(self.path, target, info.st_uid)
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(target, timeout=lock_timeout(), isolation_level=None, check_same_thread=False)
            self._check(conn)
            conn.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable at checkpoints, never corrupt
            conn.execute("PRAGMA cache_size=-65536")  # 64 MiB of pages: a million-record store stays mostly in memory
        except BaseException as exc:  # noqa: BLE001 - translated and re-raised after closing the file
            if conn is not None:
                conn.close()  # a refused file must not stay open (a server would leak it, with its -wal)
            remove_empty(created)
            raise self._translate(exc) from None
        return conn

    def _translate(self, exc: BaseException) -> BaseException:
        """SQLite's errors on opening a store, as dpsctl's: busy (exit 8) or a store it will not touch (exit 1)."""
        if isinstance(exc, sqlite3.OperationalError):
            if "locked" in str(exc) or "busy" in str(exc):
                return _busy(self.path)
            return StoreError(f"store {self.path} cannot be opened: {exc}; it was left untouched")
        if isinstance(exc, sqlite3.DatabaseError):
            return StoreError(
                f"store {self.path} is not a SQLite database (damaged, or another kind of file); it was left untouched",
                hint="point --db / DPSCTL_DB at another file, or restore it from a backup",
            )
        return exc

    def _create(self, target: Path) -> None:
        """Make a new store beside its path and link it into place whole.

        Creating it in place (empty file, then schema, then marker) let a parallel first command open the
        half-made file and call it "not a dpsctl store", or lose the O_EXCL race with FileExistsError, and a
        process killed in between left a file that no later command could open. Built aside, the path only
        ever holds a complete store; when another process links first, theirs is kept and used.
        """
        # An unpredictable name, created O_EXCL|O_NOFOLLOW and 0600 before SQLite opens it (SQLite gives its
        # -wal and -shm files the same mode): nothing planted beside the store can be adopted.
        tmp = target.with_name(f".{target.name[:200]}.{secrets.token_hex(8)}{_CREATING[0]}")
        parts = [tmp, *(tmp.with_name(tmp.name + suffix) for suffix in ("-wal", "-shm", "-journal"))]
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC, 0o600))
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(SCHEMA)
                conn.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [("app", APP_MARKER), ("schemaVersion", str(SCHEMA_VERSION)), ("indexes", index_set())],
                )
            finally:
                conn.close()  # the last connection: checkpoints into the main file and removes the -wal
            try:
                os.link(tmp, target)  # never replaces: a store another process made meanwhile wins
            except FileExistsError:
                pass
            except OSError:  # a file system without hard links: rename, unless someone was first
                if not target.exists():
                    os.rename(tmp, target)
            tmp.unlink(missing_ok=True)  # at once: until then the store has two links
            sync_folder(target.parent)
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path} cannot be created: {exc}") from None
        except OSError as exc:
            raise os_error(exc, self.path, "create store") from None
        finally:
            for part in parts:
                part.unlink(missing_ok=True)

    def _check(self, conn: sqlite3.Connection) -> None:
        """Refuse a SQLite file of another program, or of a newer dpsctl, without changing it."""
        try:
            meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        except sqlite3.OperationalError as exc:
            # Only a missing table means "not ours". "database is locked" (another process recovering or
            # checkpointing the WAL, and the lock wait ran out) is raised on, to become StoreBusy (exit 8),
            # instead of calling a good store foreign (exit 1).
            if "no such table" not in str(exc):
                raise
            meta = {}
        if meta.get("app") != APP_MARKER:
            raise StoreError(
                f"store {self.path} is a SQLite database but not a dpsctl store; it was left untouched",
                hint="point --db / DPSCTL_DB at another file",
            )
        version = int(meta.get("schemaVersion", "0"))
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.path} was written by a newer dpsctl (schema version {version}; this dpsctl reads {SCHEMA_VERSION}); it was left untouched",
                hint="upgrade dpsctl (pip install -U dpsctl)",
            )
        if meta.get("indexes", index_set()) != index_set():  # (a store from before the fingerprint: today's set)
            self._reindex(conn)

    def _reindex(self, conn: sqlite3.Connection) -> None:
        """Build the index rows of indexes this dpsctl has and the store's writer had not; drop those it has not."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT value FROM meta WHERE name = 'indexes'").fetchone()
            old, new = set(json.loads(row[0])) if row else set(), set(json.loads(index_set()))
            for entry in sorted(old - new):
                kind, _, name = entry.partition(".")
                conn.execute("DELETE FROM record_index WHERE kind = ? AND name = ?", (kind, name))
            added: dict[str, set[str]] = {}
            for entry in sorted(new - old):
                kind, _, name = entry.partition(".")
                added.setdefault(kind, set()).add(name)
            for kind, names in added.items():
                records = conn.execute("SELECT key, doc FROM records WHERE kind = ?", (kind,)).fetchall()
                conn.executemany(
                    "INSERT OR REPLACE INTO record_index VALUES (?, ?, ?, ?)",
                    [r for key, doc in records for r in index_rows(kind, key, json.loads(doc), names)],
                )
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('indexes', ?)", (index_set(),))
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    def _begin(self, writable: bool) -> Transaction:
        # A symbolic link is followed to its target, which SQLite opens (its side files and locks are there).
        target = store_target(self.path)
        if writable and self._idle:  # a pooled connection: the file may have become read-only or linked since
            check_store_file(self.path, target, write=True, creating=_CREATING)
        conn = self._connect(writable, target)
        try:
            # IMMEDIATE takes the write lock now, so the whole read-modify-write is serialised like the TinyDB file.
            conn.execute("BEGIN IMMEDIATE" if writable else "BEGIN")
        except sqlite3.OperationalError:
            conn.close()
            raise _busy(self.path) from None
        tx = _SqliteTransaction(conn, writable, self.path)
        tx.stand_in = conn.execute("PRAGMA database_list").fetchone()[2] == ""
        return tx

    def _commit(self, tx: Transaction) -> None:
        assert isinstance(tx, _SqliteTransaction)
        try:
            self._write(tx)
        except sqlite3.OperationalError as exc:
            raise _write_failure(self.path, exc) from None

    def _write(self, tx: _SqliteTransaction) -> None:
        conn = tx.conn
        for kind, changes in tx.changes.items():
            if not changes:
                continue
            keys = list(changes)
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                conn.execute(f"DELETE FROM record_index WHERE kind = ? AND key IN ({marks})", (kind, *chunk))
            deleted = [(kind, key) for key, doc in changes.items() if doc is DELETED]
            kept = [(key, doc) for key, doc in changes.items() if doc is not DELETED]
            rows = [row for key, doc in kept for row in index_rows(kind, key, doc)]
            # Only the statements that have rows: a registration's commit touches several kinds, most of them
            # with one record and no index.
            if deleted:
                conn.executemany("DELETE FROM records WHERE kind = ? AND key = ?", deleted)
            if kept:
                conn.executemany(
                    "INSERT OR REPLACE INTO records (kind, key, doc) VALUES (?, ?, ?)",
                    [(kind, key, compact_json(doc)) for key, doc in kept],
                )
            if rows:
                conn.executemany("INSERT INTO record_index (kind, key, name, value) VALUES (?, ?, ?, ?)", rows)
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('indexes', ?)", (index_set(),))  # what the index rows hold
        conn.execute("COMMIT")

    def _end(self, tx: Transaction) -> None:
        assert isinstance(tx, _SqliteTransaction)
        if tx.conn.in_transaction:
            tx.conn.execute("ROLLBACK")
        if tx.stand_in:
            tx.conn.close()  # the in-memory stand-in for a store that does not exist yet
        else:
            with self._pool_lock:
                self._idle.append(tx.conn)
