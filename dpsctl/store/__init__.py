"""Storage backends: the only code that touches a database. The core talks to `Store` and `Transaction`."""

from __future__ import annotations

from pathlib import Path

from dpsctl.store.base import Store, Transaction

__all__ = ["Store", "Transaction", "open_store", "DEFAULT_STORE"]

DEFAULT_STORE = "dps.json"
SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")


def open_store(path: str | Path) -> Store:
    """Open the store at `path`: SQLite for .sqlite/.sqlite3/.db, else a TinyDB JSON file (`:memory:`: throw-away)."""
    text = str(path)
    if text == ":memory:":
        from dpsctl.store.memory import MemoryStore

        return MemoryStore()
    if Path(text).suffix.lower() in SQLITE_SUFFIXES:
        from dpsctl.store.sqlite_store import SqliteStore

        return SqliteStore(Path(text))
    from dpsctl.store.tinydb_store import TinyDBStore

    return TinyDBStore(Path(text))
