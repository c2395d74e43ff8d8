"""The default backend: one TinyDB JSON file, read once and written once (atomically) per command."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.storages import Storage

from dpsctl.core.errors import StoreError
from dpsctl.store.base import _DELETED, Store, Transaction
from dpsctl.store.locking import FileLock
from dpsctl.store.schema import APP_MARKER, SCHEMA_VERSION, Doc, key_of

META_TABLE = "_dpsctl"


class _SnapshotStorage(Storage):
    """TinyDB storage over a dict we read ourselves, so TinyDB's per-operation writes stay in memory."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def read(self) -> dict[str, Any]:
        return self.data

    def write(self, data: dict[str, Any]) -> None:
        self.data = data


def _damaged(path: Path, problem: str) -> StoreError:
    return StoreError(
        f"store {path} {problem}; it was left untouched",
        hint="restore it from a backup or `dpsctl export`, or point --db / DPSCTL_DB at another file",
    )


def read_store_file(path: Path) -> dict[str, Any] | None:
    """Read and check a store file; None if it does not exist. Never modifies the file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise _damaged(path, "is a directory") from None
    except OSError as exc:
        raise StoreError(f"cannot read store {path}: {exc.strerror}") from None
    if not raw.strip():
        raise _damaged(path, "is empty (perhaps a crash of another program, or a truncated copy)")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _damaged(path, "is not valid JSON (truncated or damaged)") from None
    meta = data.get(META_TABLE) if isinstance(data, dict) else None
    marker = next(iter(meta.values()), None) if isinstance(meta, dict) and meta else None
    if not isinstance(marker, dict) or marker.get("app") != APP_MARKER:
        raise _damaged(path, "is JSON but not a dpsctl store")
    version = marker.get("schemaVersion")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise StoreError(
            f"store {path} was written by a newer dpsctl (schema version {version}; this dpsctl reads {SCHEMA_VERSION}); it was left untouched",
            hint="upgrade dpsctl (pip install -U dpsctl)",
        )
    if not all(isinstance(table, dict) for table in data.values()):
        raise _damaged(path, "has a table that is not a JSON object")
    return data


def _dump(data: dict[str, Any]) -> bytes:
    """One record per line: the file stays readable and diffs well, at little cost over compact JSON."""
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    tables = []
    for name in sorted(data):
        rows = ",\n".join(f"  {dumps(doc_id)}: {dumps(doc)}" for doc_id, doc in data[name].items())
        tables.append(f"{dumps(name)}: {{\n{rows}\n}}" if rows else f"{dumps(name)}: {{}}")
    return ("{\n" + ",\n".join(tables) + "\n}\n").encode()


def write_atomically(path: Path, payload: bytes) -> None:
    """Write a temporary file (0600 from the first byte) beside `path`, fsync it, and rename it over `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # The rename is durable only once the directory entry is on disk too.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class _TinyTransaction(Transaction):
    def __init__(self, db: TinyDB, writable: bool, lock: FileLock | None) -> None:
        super().__init__(writable)
        self.db = db
        self.lock = lock
        self.doc_ids: dict[str, dict[str, int]] = {}

    def _load(self, kind: str) -> dict[str, Doc]:
        table = self.db.table(kind)
        ids: dict[str, int] = {}
        docs: dict[str, Doc] = {}
        for doc in table:
            key = key_of(kind, doc)
            ids[key] = doc.doc_id
            docs[key] = dict(doc)
        self.doc_ids[kind] = ids
        return docs


class TinyDBStore(Store):
    """A TinyDB file; parallel writers are serialised by a lock file, readers see whole snapshots."""

    backend = "tinydb"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)

    def exists(self) -> bool:
        """True when the store file exists."""
        return self.path.exists()

    def size_bytes(self) -> int:
        """Size of the store file."""
        return self.path.stat().st_size if self.path.exists() else 0

    def _begin(self, writable: bool) -> Transaction:
        lock = None
        if writable:
            if not self.path.parent.is_dir():
                raise StoreError(f"folder {self.path.parent} of store {self.path} does not exist")
            lock = FileLock(self.path)
            lock.acquire()
        try:
            data = read_store_file(self.path)
            if data is None:
                data = {META_TABLE: {"1": {"app": APP_MARKER, "schemaVersion": SCHEMA_VERSION}}}
            return _TinyTransaction(TinyDB(storage=_SnapshotStorage, data=data), writable, lock)
        except BaseException:
            if lock:
                lock.release()
            raise

    def _end(self, tx: Transaction) -> None:
        assert isinstance(tx, _TinyTransaction)
        if tx.lock:
            tx.lock.release()

    def _commit(self, tx: Transaction) -> None:
        assert isinstance(tx, _TinyTransaction)
        for kind, changes in tx.changes.items():
            if not changes:
                continue
            tx._base(kind)  # make sure doc ids are known
            ids = tx.doc_ids[kind]
            table = tx.db.table(kind)
            removed = [ids[key] for key, doc in changes.items() if doc is _DELETED and key in ids]
            replaced = {key: doc for key, doc in changes.items() if doc is not _DELETED and key in ids}
            added = [doc for key, doc in changes.items() if doc is not _DELETED and key not in ids]
            # At most one pass over the table per kind of change: TinyDB rebuilds a table on every call.
            if removed:
                table.remove(doc_ids=removed)
            if replaced:
                table.update(lambda old: _replace(old, replaced[key_of(kind, old)]), doc_ids=[ids[k] for k in replaced])
            if added:
                table.insert_multiple(added)
        write_atomically(self.path, _dump(tx.db.storage.data))


def _replace(old: dict[str, Any], new: dict[str, Any]) -> None:
    old.clear()
    old.update(new)
