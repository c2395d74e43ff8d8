"""The shared backend: PostgreSQL through psycopg 3, for several dpsctl processes (and machines) on one fleet.

Chosen by a `postgresql://` or `postgres://` URL. The layout mirrors the SQLite store and is generic over
dpsctl/store/schema.py: one `records` table (kind, key, JSON text), one `record_index` row per indexed field
of a record, a `changes` counter per kind, and `meta` (marker, versions, the index set). A new record kind
needs no DDL; a new or removed index is rebuilt when a store is first opened by a dpsctl that has it.

Concurrency: a writing transaction takes a transaction-scoped advisory lock of its schema before it reads
anything, so writers are serialised exactly as SQLite's BEGIN IMMEDIATE and the TinyDB lock file serialise
them (every registration writes the service record anyway); readers take a REPEATABLE READ snapshot and
never wait. The lock dies with the transaction, so a killed process never wedges the store.
"""

from __future__ import annotations

import json
import threading
import uuid
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import errors as pgerrors
from psycopg.pq import TransactionStatus

from dpsctl.core.errors import StoreBusy, StoreError
from dpsctl.store.base import DELETED, Store, Transaction
from dpsctl.store.locking import lock_timeout
from dpsctl.store.memory import MemoryTransaction
from dpsctl.store.pg_statements import LAYOUT_VERSION, MIGRATIONS, Statements
from dpsctl.store.pglocation import PostgresLocation, parse, scrub
from dpsctl.store.schema import APP_MARKER, KINDS, SCHEMA_VERSION, Doc, compact_json, index_rows, index_set

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

COPY_THRESHOLD = 2000  # changes of one commit from which rows go by COPY instead of one multi-row statement
LOCK_CLASS = 0x4450  # "DP": the first half of the advisory lock key; the second is the schema name's CRC


class _PgTransaction(Transaction):
    def __init__(self, conn: psycopg.Connection[Any], sql: Statements, writable: bool) -> None:
        super().__init__(writable)
        self.conn = conn
        self.sql = sql
        self.creates = False  # this transaction made the schema (committed with it, or rolled back with it)
        self._fetched: dict[str, dict[str, Doc | None]] = {}  # prefetched records (None: known not to exist)

    def _load(self, kind: str) -> dict[str, Doc]:
        rows = self.conn.execute(self.sql.load, (kind,))
        return {key: json.loads(doc) for key, doc in rows}

    def prefetch(self, kind: str, keys: Iterable[str]) -> None:
        """Read these records in a few queries (50,000 keys each) instead of a round trip per `get`."""
        if kind in self._loaded:
            return
        cache = self._fetched.setdefault(kind, {})
        wanted = sorted({key.lower() for key in keys} - cache.keys())
        for start in range(0, len(wanted), 50_000):
            chunk = wanted[start : start + 50_000]
            found = dict(self.conn.execute(self.sql.get_many, (kind, chunk)).fetchall())
            for key in chunk:
                cache[key] = json.loads(found[key]) if key in found else None

    def _base_get(self, kind: str, key: str) -> Doc | None:
        if kind in self._loaded:
            return self._loaded[kind].get(key)
        fetched = self._fetched.get(kind)
        if fetched is not None and key in fetched:
            return fetched[key]
        row = self.conn.execute(self.sql.get, (kind, key)).fetchone()
        return json.loads(row[0]) if row else None

    def _base_keys(self, kind: str) -> Iterable[str]:
        return [row[0] for row in self.conn.execute(self.sql.keys, (kind,))]

    def count(self, kind: str) -> int:
        """count(*) in the database, adjusted for this transaction's pending changes."""
        row = self.conn.execute(self.sql.count, (kind,)).fetchone()
        total = int(row[0]) if row else 0
        pending = self.changes.get(kind, {})
        if pending:
            stored = {key for (key,) in self.conn.execute(self.sql.stored_keys, (kind, list(pending)))}
            for key, doc in pending.items():
                if doc is DELETED and key in stored:
                    total -= 1
                elif doc is not DELETED and key not in stored:
                    total += 1
        return total

    def find(self, kind: str, index: str, value: str) -> list[Doc]:
        """Indexed lookup in the database, merged with this transaction's pending changes."""
        wanted = value.lower()
        found = {key: json.loads(doc) for key, doc in self.conn.execute(self.sql.find, (kind, index, wanted))}
        return self._merge_found(kind, index, wanted, found)


class PostgresStore(Store):
    """Records in a schema of a PostgreSQL database, shared by every dpsctl process that opens the same URL."""

    backend = "postgresql"

    def __init__(self, location: str | PostgresLocation) -> None:
        self.where = parse(location) if isinstance(location, str) else location
        self.location = self.where.shown
        self.schema = self.where.schema
        self.sql = Statements(self.schema)
        self._lock_key = (LOCK_CLASS, zlib.crc32(self.schema.encode()) - (1 << 31))
        self._ready = False  # the schema exists and is up to date (checked once per process)
        self._store_id = ""
        self._pool: ConnectionPool[Any] | None = None
        # The connection that checked the schema, handed to the first transaction and kept between them: a command
        # (one transaction at a time) never needs the pool; a server's concurrent transactions take the pool's.
        self._own: psycopg.Connection[Any] | None = None
        self._spare: psycopg.Connection[Any] | None = None
        self._guard = threading.Lock()

    # -- connections
    def _connect(self) -> psycopg.Connection[Any]:
        """A new connection (autocommit: dpsctl sends BEGIN and COMMIT itself), or a StoreError saying why not."""
        try:
            return psycopg.connect(self.where.conninfo, **self._connect_args())
        except psycopg.Error as exc:
            raise self._translate(exc) from None

    def _connect_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"autocommit": True}
        params = psycopg.conninfo.conninfo_to_dict(self.where.conninfo)
        if "connect_timeout" not in params:
            args["connect_timeout"] = 10  # an unreachable host is an error in seconds, not minutes
        if "application_name" not in params:
            args["application_name"] = "dpsctl"
        return args

    def _getconn(self) -> psycopg.Connection[Any]:
        with self._guard:
            if self._spare is not None:
                conn, self._spare = self._spare, None
                return conn
            if self._pool is None:
                # psycopg_pool is imported only here and below, by a store whose transactions run concurrently
                # (serve): a command, with one transaction, never loads it.
                from psycopg_pool import ConnectionPool

                self._pool = ConnectionPool(
                    self.where.conninfo,
                    kwargs=self._connect_args(),
                    min_size=1,
                    max_size=self.where.pool_size,
                    timeout=max(lock_timeout(), 5.0),
                    open=True,
                    name=f"dpsctl-{self.schema}",
                )
            pool = self._pool
        from psycopg_pool import PoolTimeout  # loaded with the pool, above

        try:
            return pool.getconn()
        except PoolTimeout:
            # Either the server went away (say why: connect once ourselves) or every connection is in use.
            self._connect().close()
            raise StoreBusy(
                f"store {self.location}: all {self.where.pool_size} connections of this process stayed busy",
                hint="retry, or allow more with ?pool_size=N in the store URL",
            ) from None

    def _putconn(self, conn: psycopg.Connection[Any]) -> None:
        if conn is self._own:
            if not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE:
                with self._guard:
                    if self._own is conn:
                        self._spare = conn
                        return
            self._own = None
            conn.close()
            return
        pool = self._pool
        if pool is not None:
            pool.putconn(conn)  # a broken connection is discarded by the pool
        else:
            conn.close()

    def close(self) -> None:
        """Close the connections (a command calls this when it ends)."""
        with self._guard:
            pool, self._pool = self._pool, None
            spare, self._spare, self._own = self._spare, None, None
        if spare is not None:
            spare.close()
        if pool is not None:
            pool.close()

    def _translate(self, exc: BaseException) -> BaseException:
        """psycopg's errors as dpsctl's: busy (exit 8) or a store it cannot use (exit 1); never the password."""
        if not isinstance(exc, psycopg.Error):
            return exc
        first = scrub(
            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, list(self.where.secrets)
        )
        if isinstance(exc, (pgerrors.LockNotAvailable, pgerrors.QueryCanceled)):
            return self._busy()
        if isinstance(exc, pgerrors.InsufficientPrivilege):
            return StoreError(
                f"store {self.location}: {first}",
                hint="grant the user CREATE on the database (or on the schema), or use ?schema= to pick one it owns",
            )
        if isinstance(exc, psycopg.OperationalError):
            hint = "is the server running and the URL right? (user, password via PGPASSWORD or ~/.pgpass, host, port, database)"
            if "does not exist" in first and "database" in first:
                hint = "create the database first (createdb NAME, or CREATE DATABASE NAME)"
            return StoreError(f"store {self.location} cannot be reached: {first}", hint=hint)
        if isinstance(exc, psycopg.ProgrammingError) and "conninfo" in type(exc).__name__.lower() + first.lower():
            return StoreError(f"store {self.location} is not a valid PostgreSQL URL: {first}")
        return StoreError(f"store {self.location}: PostgreSQL error: {first}")

    def _busy(self) -> StoreBusy:
        return StoreBusy(
            f"store {self.location} is locked by another dpsctl process (waited {lock_timeout():g} s)",
            hint="retry, or raise the wait with DPSCTL_LOCK_TIMEOUT=SECONDS",
        )

    # -- the schema: checked, created and migrated once per process
    def _lock(self, conn: psycopg.Connection[Any]) -> None:
        """Take the store's write lock for the current transaction, waiting at most DPSCTL_LOCK_TIMEOUT."""
        wait = lock_timeout()
        if wait <= 0:
            row = conn.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", self._lock_key).fetchone()
            if not (row and row[0]):
                raise self._busy()
            return
        # lock_timeout 0 would mean "wait for ever": the no-wait case is the try-lock above.
        conn.execute(f"SET LOCAL lock_timeout = '{max(1, int(wait * 1000))}ms'")
        try:
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", self._lock_key)
        except pgerrors.LockNotAvailable:
            raise self._busy() from None

    def _state(self, conn: psycopg.Connection[Any]) -> dict[str, str] | None:
        """The store's meta rows, None when there is no store in the schema; refuses a foreign or newer one."""
        # From pg_class itself (read with this statement's snapshot), not to_regclass: that one trusts the backend's
        # catalog cache, which can still remember "no such table" from before another process created the store.
        tables = {name for (name,) in conn.execute(self.sql.tables, (self.schema,))}
        has_meta, has_records = "meta" in tables, "records" in tables
        if not has_meta:
            if has_records:
                raise self._foreign()
            return None
        meta = dict(conn.execute(self.sql.meta).fetchall())
        if meta.get("app") != APP_MARKER:
            raise self._foreign()
        for name, known in (("schemaVersion", SCHEMA_VERSION), ("layoutVersion", LAYOUT_VERSION)):
            version = int(meta.get(name, "0") or 0)
            if version > known:
                raise StoreError(
                    f"store {self.location} was written by a newer dpsctl ({name} {version}; this dpsctl reads {known}); it was left untouched",
                    hint="upgrade dpsctl (pip install -U 'dpsctl[postgres]')",
                )
        return meta

    def _foreign(self) -> StoreError:
        return StoreError(
            f"store {self.location}: schema {self.schema} holds tables that are not a dpsctl store; they were left untouched",
            hint="pick another schema with ?schema=NAME in the store URL",
        )

    def _up_to_date(self, meta: dict[str, str]) -> bool:
        return int(meta.get("layoutVersion", "0")) == LAYOUT_VERSION and meta.get("indexes") == index_set()

    def _check(self) -> bool:
        """True when the schema holds a store (checked once per process; an older layout is migrated then)."""
        if self._ready:
            return True
        conn = self._connect()  # not the pool's: a wrong URL or password fails here at once, with libpq's reason
        keep = False
        try:
            meta = self._state(conn)
            if meta is None:
                return False
            if not self._up_to_date(meta):
                conn.execute("BEGIN")
                self._lock(conn)
                self._migrate(
                    conn, self._state(conn) or {}
                )  # again, under the lock: another process may have been first
                conn.execute("COMMIT")
            else:
                self._store_id = meta.get("storeId", "")
            self._ready = True
            return True
        except psycopg.Error as exc:
            raise self._translate(exc) from None
        finally:
            with self._guard:
                if self._own is None and not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE:
                    self._own = self._spare = conn  # the first transaction's connection
                    keep = True
            if not keep:
                conn.close()

    def _migrate(self, conn: psycopg.Connection[Any], meta: dict[str, str]) -> None:
        """Bring the layout up to date and rebuild the index rows of indexes added (or drop those removed)."""
        layout = int(meta.get("layoutVersion", "0"))
        for step in range(layout + 1, LAYOUT_VERSION + 1):
            for statement in MIGRATIONS[step]:
                conn.execute(statement.format(s=self.sql.schema))
        if not meta:
            self._store_id = uuid.uuid4().hex
            for name, value in (
                ("app", APP_MARKER),
                ("schemaVersion", str(SCHEMA_VERSION)),
                ("storeId", self._store_id),
            ):
                conn.execute(self.sql.set_meta, (name, value))
        else:
            self._store_id = meta.get("storeId", "")
        conn.execute(self.sql.set_meta, ("layoutVersion", str(LAYOUT_VERSION)))
        old = set(json.loads(meta.get("indexes", "[]"))) if meta.get("indexes") else set()
        new = set(json.loads(index_set()))
        if meta and old != new:
            for removed in sorted(old - new):
                kind, _, name = removed.partition(".")
                conn.execute(f"DELETE FROM {self.sql.schema}.record_index WHERE kind = %s AND name = %s", (kind, name))
            added: dict[str, set[str]] = {}
            for entry in sorted(new - old):
                kind, _, name = entry.partition(".")
                added.setdefault(kind, set()).add(name)
            for kind, names in added.items():
                records = conn.execute(self.sql.load, (kind,)).fetchall()  # all read before COPY takes the connection
                with conn.cursor() as cur, cur.copy(self.sql.copy_index) as copy:
                    for key, doc in records:
                        for row in index_rows(kind, key, json.loads(doc), names):
                            copy.write_row(row)
        conn.execute(self.sql.set_meta, ("indexes", index_set()))

    def exists(self) -> bool:
        """True when the schema holds a dpsctl store."""
        return self._check()

    # -- transactions
    @contextmanager
    def transaction(self, *, write: bool = False) -> Iterator[Transaction]:
        """One command's unit of work: all of it is written, or none of it (psycopg errors become dpsctl's)."""
        try:
            with super().transaction(write=write) as tx:
                yield tx
        except psycopg.Error as exc:
            raise self._translate(exc) from None

    def _begin(self, writable: bool) -> Transaction:
        exists = self._check()
        if not exists and not writable:
            # Like a file that does not exist yet: read as empty, and nothing is created.
            return MemoryTransaction({kind: {} for kind in KINDS}, writable)
        conn = self._getconn()
        tx = _PgTransaction(conn, self.sql, writable)
        try:
            if writable:
                conn.execute("BEGIN")  # READ COMMITTED, after the lock: every read sees every earlier commit
                self._lock(conn)
                if not exists and self._state(conn) is None:
                    # The store is made in the command's own transaction (DDL is transactional in PostgreSQL):
                    # a command that ends up writing nothing, or fails, leaves no schema behind.
                    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.sql.schema}")
                    self._migrate(conn, {})
                    tx.creates = True
            else:
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")  # one snapshot for the whole command
        except BaseException as exc:  # noqa: BLE001 - translated and re-raised; the connection goes back whatever happened
            self._release(conn)
            raise self._translate(exc) from None
        return tx

    def _commit(self, tx: Transaction) -> None:
        assert isinstance(tx, _PgTransaction)
        conn, sql = tx.conn, self.sql
        touched = [kind for kind, changes in tx.changes.items() if changes]
        gone_kinds: list[str] = []
        gone_keys: list[str] = []
        changed_kinds: list[str] = []
        changed_keys: list[str] = []
        kept: list[tuple[str, str, Doc]] = []
        for kind in touched:
            for key, doc in tx.changes[kind].items():
                changed_kinds.append(kind)
                changed_keys.append(key)
                if doc is DELETED:
                    gone_kinds.append(kind)
                    gone_keys.append(key)
                else:
                    kept.append((kind, key, doc))
        with conn.cursor() as cur:
            cur.execute(sql.delete_index, (changed_kinds, changed_keys))
            if len(changed_keys) >= COPY_THRESHOLD:
                # Big batches (an import): replaced records go too, and everything is streamed back with COPY.
                cur.execute(sql.delete_records, (changed_kinds, changed_keys))
                with cur.copy(sql.copy_records) as copy:
                    for kind, key, doc in kept:
                        copy.write_row((kind, key, compact_json(doc)))
                with cur.copy(sql.copy_index) as copy:
                    for kind, key, doc in kept:
                        for row in index_rows(kind, key, doc):
                            copy.write_row(row)
            else:
                if gone_keys:
                    cur.execute(sql.delete_records, (gone_kinds, gone_keys))
                if kept:
                    cur.execute(
                        sql.upsert,
                        (
                            [k for k, _, _ in kept],
                            [key for _, key, _ in kept],
                            [compact_json(doc) for _, _, doc in kept],
                        ),
                    )
                    rows = [row for kind, key, doc in kept for row in index_rows(kind, key, doc)]
                    if rows:
                        cur.execute(sql.insert_index, tuple(list(column) for column in zip(*rows, strict=False)))
        conn.execute("COMMIT")
        if tx.creates:
            self._ready = True

    def _end(self, tx: Transaction) -> None:
        if isinstance(tx, _PgTransaction):
            self._release(tx.conn)

    def _release(self, conn: psycopg.Connection[Any]) -> None:
        try:
            if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
                conn.execute("ROLLBACK")
        except psycopg.Error:
            conn.close()  # the pool drops a closed connection
        self._putconn(conn)

    # -- what `store info` and `serve` ask
    def size_bytes(self) -> int:
        """Size of the store's tables and their indexes."""
        if not self.exists():
            return 0
        conn = self._getconn()
        try:
            row = conn.execute(self.sql.size, (self.schema,)).fetchone()
            return int(row[0]) if row else 0
        except psycopg.Error as exc:
            raise self._translate(exc) from None
        finally:
            self._release(conn)
