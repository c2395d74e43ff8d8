"""The server's way into the store: read and write transactions that never queue without bound.

The store's own locks keep `serve` and CLI commands safe on one store. A process-wide lock in front of them
spares in-process writers the file-lock polling (and serialises the memory store, which has no lock of its
own); it is taken with the store's lock timeout, so under contention every request is refused with 503 within
that timeout instead of waiting behind all the requests before it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from dpsctl.core.errors import StoreBusy
from dpsctl.store import Store, Transaction
from dpsctl.store.locking import lock_timeout
from dpsctl.store.memory import MemoryStore

BUSY_HINT = "retry after the Retry-After seconds; another process holds the store (DPSCTL_LOCK_TIMEOUT sets the wait)"


class StoreAccess:
    """Read and write transactions over one store, shared by every request thread of a server."""

    def __init__(self, store: Store, *, timeout: float | None = None) -> None:
        self.store = store
        self.timeout = lock_timeout() if timeout is None else timeout
        self._write_lock = threading.RLock()  # re-entrant: a read inside a write must not deadlock a memory store
        # The memory store has no lock: its readers must not see a commit half-applied.
        self._read_lock = self._write_lock if isinstance(store, MemoryStore) else None

    @contextmanager
    def read(self) -> Iterator[Transaction]:
        """A read transaction."""
        with self._locked(self._read_lock) if self._read_lock else nullcontext(), self.store.transaction() as tx:
            yield tx

    @contextmanager
    def write(self) -> Iterator[Transaction]:
        """A write transaction, committed when the block ends without an exception."""
        with self._locked(self._write_lock), self.store.transaction(write=True) as tx:
            yield tx

    @contextmanager
    def _locked(self, lock: threading.RLock) -> Iterator[None]:
        if not lock.acquire(timeout=self.timeout):
            raise StoreBusy(f"the store was busy for {self.timeout:g} s", hint=BUSY_HINT)
        try:
            yield
        finally:
            lock.release()
