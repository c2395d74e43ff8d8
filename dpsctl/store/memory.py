"""An in-memory store for tests and dry runs; same semantics as the file backends."""

from __future__ import annotations

import copy

from dpsctl.store.base import DELETED, Store, Transaction
from dpsctl.store.schema import KINDS, Doc


class MemoryTransaction(Transaction):
    """A transaction over records held in memory (also the PostgreSQL store's stand-in for a schema not created yet)."""

    def __init__(self, data: dict[str, dict[str, Doc]], writable: bool) -> None:
        super().__init__(writable)
        self._data = data

    def _load(self, kind: str) -> dict[str, Doc]:
        # Deep copies so that a caller mutating a returned record cannot change the store behind its back.
        return copy.deepcopy(self._data[kind])


class MemoryStore(Store):
    """Records in a dict of dicts, lost when the process ends."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Doc]] = {kind: {} for kind in KINDS}

    def _begin(self, writable: bool) -> Transaction:
        return MemoryTransaction(self.data, writable)

    def _commit(self, tx: Transaction) -> None:
        for kind, changes in tx.changes.items():
            for key, doc in changes.items():
                if doc is DELETED:
                    self.data[kind].pop(key, None)
                else:
                    self.data[kind][key] = copy.deepcopy(doc)
