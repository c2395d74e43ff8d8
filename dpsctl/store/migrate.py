"""Copy a store into another backend, record for record."""

from __future__ import annotations

from dpsctl.core.errors import Conflict, StoreError
from dpsctl.store.base import Store
from dpsctl.store.schema import KINDS


def record_counts(store: Store) -> dict[str, int]:
    """How many records of each kind the store holds."""
    with store.transaction() as tx:
        return {kind: tx.count(kind) for kind in KINDS}


def migrate(source: Store, target: Store) -> dict[str, int]:
    """Copy every record of `source` into a new store `target` in one transaction; returns the counts copied."""
    if target.exists():
        raise Conflict(
            f"store {target.location} already exists",
            hint="migrate into a new store (a new file, or another ?schema= of the database), or delete it first",
        )
    if source.location == target.location:
        raise Conflict("source and target are the same store")
    counts: dict[str, int] = {}
    with source.transaction() as src:
        with target.transaction(write=True) as dst:
            for kind in KINDS:
                docs = list(src.scan(kind))
                dst.put_many(kind, docs)
                counts[kind] = len(docs)
    copied = record_counts(target)
    if copied != counts:
        raise StoreError(f"migration check failed: {copied} records in {target.location}, expected {counts}")
    return counts
