"""The store interface the core uses: one transaction per command, buffered so that it writes at most once."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from dpsctl.store.schema import INDEXES, KINDS, Doc, key_of

T = TypeVar("T")

# What `changes` holds for a deleted record (a marker no document can equal).
DELETED: Any = object()


class Transaction:
    """A unit of work over a snapshot of the store; changes are kept here until the store commits them.

    Backends give the snapshot through `_load(kind)` (key -> doc) and apply `changes` on commit, so the
    whole command is read once, validated in memory, and written (or not) as one unit.
    """

    def __init__(self, writable: bool) -> None:
        self.writable = writable
        self.changes: dict[str, dict[str, Any]] = {}
        self._loaded: dict[str, dict[str, Doc]] = {}
        self._memo: dict[tuple[tuple[str, ...], str], Any] = {}

    def memo(self, kinds: str | tuple[str, ...], name: str, build: Callable[[], T]) -> T:
        """A value derived from the records of `kinds` (parsed groups, say), kept until one of them changes.

        A batch of registrations in one transaction reads the same groups and hubs thousands of times;
        parsing them once per change instead of once per device is what makes batches fast.
        """
        kinds = (kinds,) if isinstance(kinds, str) else kinds
        if (kinds, name) not in self._memo:
            self._memo[(kinds, name)] = build()
        built: T = self._memo[(kinds, name)]  # what `build` made for this name
        return built

    def _forget(self, kind: str) -> None:
        for memo_key in [k for k in self._memo if kind in k[0]]:
            del self._memo[memo_key]

    # -- for backends
    def _load(self, kind: str) -> dict[str, Doc]:
        """All records of `kind`, keyed; a backend may override `get`/`find` to avoid loading everything."""
        raise NotImplementedError

    def _base(self, kind: str) -> dict[str, Doc]:
        if kind not in KINDS:
            raise KeyError(kind)
        if kind not in self._loaded:
            self._loaded[kind] = self._load(kind)
        return self._loaded[kind]

    def _base_get(self, kind: str, key: str) -> Doc | None:
        return self._base(kind).get(key)

    def _base_keys(self, kind: str) -> Iterable[str]:
        """The keys of `kind` in the snapshot; a database backend reads them without reading the records."""
        return self._base(kind).keys()

    @property
    def dirty(self) -> bool:
        """True when the transaction has changes to write."""
        return any(self.changes.values())

    # -- the interface the core uses
    def get(self, kind: str, key: str) -> Doc | None:
        """The record of `kind` with this (case-insensitive) key, or None."""
        key = key.lower()
        pending = self.changes.get(kind, {})
        if key in pending:
            doc = pending[key]
            return None if doc is DELETED else doc
        return self._base_get(kind, key)

    def prefetch(self, kind: str, keys: Iterable[str]) -> None:
        """A hint: these records of `kind` are about to be read one by one (an import, say).

        A backend across a network reads them in one go instead of one round trip each; the others ignore it.
        """

    def put(self, kind: str, doc: Doc) -> None:
        """Create or replace a record."""
        self._check_writable()
        self.changes.setdefault(kind, {})[key_of(kind, doc)] = doc
        if self._memo:
            self._forget(kind)

    def put_many(self, kind: str, docs: Iterable[Doc]) -> None:
        """Create or replace many records."""
        for doc in docs:
            self.put(kind, doc)

    def delete(self, kind: str, key: str) -> bool:
        """Delete a record; True if it existed."""
        self._check_writable()
        existed = self.get(kind, key) is not None
        if existed:
            self.changes.setdefault(kind, {})[key.lower()] = DELETED
            if self._memo:
                self._forget(kind)
        return existed

    def scan(self, kind: str) -> Iterator[Doc]:
        """Every record of `kind`, in key order."""
        pending = self.changes.get(kind, {})
        merged = dict(self._base(kind))
        for key, doc in pending.items():
            if doc is DELETED:
                merged.pop(key, None)
            else:
                merged[key] = doc
        for key in sorted(merged):
            yield merged[key]

    def keys(self, kind: str) -> list[str]:
        """The key of every record of `kind`, in key order, without reading the records themselves."""
        merged = set(self._loaded[kind] if kind in self._loaded else self._base_keys(kind))
        for key, doc in self.changes.get(kind, {}).items():
            if doc is DELETED:
                merged.discard(key)
            else:
                merged.add(key)
        return sorted(merged)

    def count(self, kind: str) -> int:
        """How many records of `kind` there are."""
        return sum(1 for _ in self.scan(kind))

    def find(self, kind: str, index: str, value: str) -> list[Doc]:
        """Records whose indexed field `index` equals `value`, compared case-insensitively (as DPS compares IDs)."""
        extract = INDEXES[kind][index]
        wanted = value.lower()
        return [doc for doc in self.scan(kind) if (extract(doc) or "").lower() == wanted]

    def _merge_found(self, kind: str, index: str, wanted: str, found: dict[str, Doc]) -> list[Doc]:
        """Records a database's index lookup `found` (key -> doc), corrected by this transaction's pending changes."""
        extract = INDEXES[kind][index]
        for key, doc in self.changes.get(kind, {}).items():
            found.pop(key, None)
            if doc is not DELETED and (extract(doc) or "").lower() == wanted:
                found[key] = doc
        return [found[key] for key in sorted(found)]

    def _check_writable(self) -> None:
        if not self.writable:
            raise RuntimeError("write in a read-only transaction")  # a programming error, not a user one


class Store(abc.ABC):
    """A place where dpsctl keeps the service, its enrollment list and registrations."""

    location: str = ":memory:"
    backend: str = "memory"

    @abc.abstractmethod
    def _begin(self, writable: bool) -> Transaction:
        """Start a transaction (taking the lock when writable)."""

    @abc.abstractmethod
    def _commit(self, tx: Transaction) -> None:
        """Write the transaction's changes in one atomic step."""

    def _end(self, tx: Transaction) -> None:  # noqa: B027 - optional hook: most backends have nothing to release
        """Release whatever `_begin` took."""

    @contextmanager
    def transaction(self, *, write: bool = False) -> Iterator[Transaction]:
        """One command's unit of work: all of it is written, or none of it."""
        tx = self._begin(write)
        try:
            yield tx
            if write and tx.dirty:
                self._commit(tx)
        finally:
            self._end(tx)

    def exists(self) -> bool:
        """True when the store has been created."""
        return True

    def close(self) -> None:  # noqa: B027 - optional hook: most backends keep nothing open
        """Release what the store keeps open between transactions (nothing, for most backends)."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def size_bytes(self) -> int:
        """Size of the store on disk (0 for memory)."""
        return 0
