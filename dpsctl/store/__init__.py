"""Storage backends: the only code that touches a database. The core talks to `Store` and `Transaction`."""

from __future__ import annotations

from pathlib import Path

from dpsctl.core.errors import InvalidInput, StoreError
from dpsctl.store.base import Store, Transaction
from dpsctl.store.memory import MemoryStore
from dpsctl.store.pglocation import POSTGRES_SCHEMES, redact, url_scheme

__all__ = ["Store", "Transaction", "open_store", "DEFAULT_STORE"]

DEFAULT_STORE = "dps.json"
SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")


def open_store(path: str | Path) -> Store:
    """Open the store at `path`: PostgreSQL for a postgresql:// or postgres:// URL; SQLite for .sqlite/.sqlite3/.db;
    else a TinyDB JSON file (`:memory:`: throw-away). Opening connects to nothing and creates nothing yet."""
    # Each backend is imported when a store of its kind is opened: a command loads one database library (the
    # PostgreSQL driver is an optional extra that may be missing).
    text = str(path)
    if text == ":memory:":
        return MemoryStore()
    scheme = url_scheme(text) if isinstance(path, str) else None
    if scheme is not None:
        if scheme not in POSTGRES_SCHEMES:
            raise InvalidInput(
                f"store {redact(text)}: dpsctl cannot open a {scheme}:// store",
                hint="give a postgresql://user@host:port/dbname URL, or a file: *.sqlite for SQLite, any other name for TinyDB JSON (./NAME for a file whose name looks like a URL)",
            )
        try:
            from dpsctl.store.postgres_store import PostgresStore
        except ImportError:
            raise StoreError(
                f"store {redact(text)} is a PostgreSQL URL, but the PostgreSQL driver is not installed",
                hint="pip install 'dpsctl[postgres]' (psycopg 3 and psycopg_pool)",
            ) from None
        return PostgresStore(text)
    if Path(text).suffix.lower() in SQLITE_SUFFIXES:
        from dpsctl.store.sqlite_store import SqliteStore

        return SqliteStore(Path(text))
    from dpsctl.store.tinydb_store import TinyDBStore

    return TinyDBStore(Path(text))
