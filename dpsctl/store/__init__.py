"""Storage backends: the only code that touches a database. The core talks to `Store` and `Transaction`."""

from __future__ import annotations

from pathlib import Path

from dpsctl.store.base import Store, Transaction

__all__ = ["Store", "Transaction", "open_store", "DEFAULT_STORE"]

DEFAULT_STORE = "dps.json"


def open_store(path: str | Path) -> Store:
    """Open the store at `path`; the backend is chosen from the file name (`:memory:` for a throw-away one)."""
    text = str(path)
    if text == ":memory:":
        from dpsctl.store.memory import MemoryStore

        return MemoryStore()
    from dpsctl.store.tinydb_store import TinyDBStore

    return TinyDBStore(Path(text))
