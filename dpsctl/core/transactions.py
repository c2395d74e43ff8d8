"""Where the provisioning engine takes its transactions from: a store, a server's own, or a dry run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Protocol

from dpsctl.store import Store, Transaction


class Transactions(Protocol):
    """A source of transactions over one store: `read()` a snapshot, `write()` one that commits when its block ends."""

    def read(self) -> AbstractContextManager[Transaction]:
        """A read-only snapshot."""
        ...

    def write(self) -> AbstractContextManager[Transaction]:
        """A write transaction, committed when the block ends without an exception."""
        ...


class StoreTransactions:
    """A `Store` as a `Transactions` source (the CLI's; a server passes its own, which adds its locks)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def read(self) -> AbstractContextManager[Transaction]:
        """A read transaction of the store."""
        return self.store.transaction()

    def write(self) -> AbstractContextManager[Transaction]:
        """A write transaction of the store."""
        return self.store.transaction(write=True)


class _OneTransaction:
    """Every read and write is the same transaction (a dry run's, never committed)."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx

    def read(self) -> AbstractContextManager[Transaction]:
        return nullcontext(self.tx)

    def write(self) -> AbstractContextManager[Transaction]:
        return nullcontext(self.tx)


@contextmanager
def dry_run(store: Store) -> Iterator[Transactions]:
    """A source whose writes are seen by later phases but never reach the store, and that takes no write lock."""
    with store.transaction() as tx:
        # A read transaction is never committed (Store.transaction commits only writes), so its changes stay here.
        tx.writable = True
        yield _OneTransaction(tx)
