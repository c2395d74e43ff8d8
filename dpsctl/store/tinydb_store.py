"""The default backend: one TinyDB JSON file, read once and written once (atomically) per command."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.storages import Storage

from dpsctl.core.errors import StoreError
from dpsctl.core.safefiles import os_error, remove_stale_temporaries
from dpsctl.core.safefiles import write_atomically as _write_atomically
from dpsctl.store.base import DELETED, Store, Transaction
from dpsctl.store.files import check_store_file, read_store_bytes, store_target
from dpsctl.store.locking import FileLock
from dpsctl.store.schema import APP_MARKER, SCHEMA_VERSION, Doc, compact_json, key_of

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


def _read(path: Path, target: Path) -> tuple[dict[str, Any], bytes] | None:
    """The parsed store and its raw bytes (kept so that untouched records are written back as they were)."""
    raw = read_store_bytes(path, target)
    if raw is None:
        return None
    if not raw.strip():
        raise _damaged(path, "is empty (perhaps a crash of another program, or a truncated copy)")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _damaged(path, "is not valid JSON (truncated or damaged)") from None
    except RecursionError:  # hand-edited: nested deeper than Python's parser goes
        raise _damaged(path, "nests objects or arrays too deeply to be a dpsctl store") from None
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
    return data, raw


def _raw_lines(raw: bytes, data: dict[str, Any]) -> dict[str, dict[str, bytes]]:
    """Each record's line as it stands in a file dpsctl wrote (one record per line), by table and doc id.

    Only tables whose lines account for exactly the parsed records are returned; a file laid out any other
    way (written by plain TinyDB, edited by hand) simply gets every record serialised again.
    """
    found: dict[str, dict[str, bytes]] = {}
    table: str | None = None
    rows: dict[str, bytes] = {}
    for line in raw.split(b"\n"):
        if table is None:
            if line.endswith(b": {") and line.startswith(b'"'):
                table, rows = json.loads(line[:-3]), {}
            continue
        if line.startswith(b"}"):
            if len(rows) == len(data.get(table, ())) and all(k in rows for k in data.get(table, ())):
                found[table] = rows
            table = None
            continue
        doc_id, sep, _ = line.partition(b": ")
        if not sep or not doc_id.startswith(b'  "'):
            table = None  # not our layout: leave this table to be serialised afresh
            continue
        rows[doc_id[3:-1].decode()] = line.rstrip(b",")
    return found


def _dump(data: dict[str, Any], raw_lines: dict[str, dict[str, bytes]], changed: dict[str, set[str]]) -> bytes:
    """One record per line, so the file stays readable and diffs well; untouched records are copied as read."""
    out = [b"{"]
    names = sorted(data)
    for t, name in enumerate(names):
        records = data[name]
        reuse = raw_lines.get(name, {})
        dirty = changed.get(name, set())
        out.append(
            compact_json(name).encode() + (b": {" if records else b": {}" + (b"," if t < len(names) - 1 else b""))
        )
        if not records:
            continue
        last = len(records) - 1
        for i, (doc_id, doc) in enumerate(records.items()):
            line = reuse.get(doc_id) if doc_id not in dirty else None
            if line is None:
                line = f"  {compact_json(doc_id)}: {compact_json(doc)}".encode()
            out.append(line + b"," if i < last else line)
        out.append(b"}," if t < len(names) - 1 else b"}")
    out.append(b"}\n")
    return b"\n".join(out)


def write_atomically(path: Path, payload: bytes) -> None:
    """Replace the store file by a new one, 0600 from its first byte (see dpsctl.core.safefiles.write_atomically)."""
    try:
        _write_atomically(path, payload)
    except OSError as exc:
        raise os_error(exc, path, "write store") from None


class _TinyTransaction(Transaction):
    def __init__(self, db: TinyDB, writable: bool, lock: FileLock | None, raw: bytes | None, target: Path) -> None:
        super().__init__(writable)
        self.target = target
        self.db = db
        self.lock = lock
        self.raw = raw
        self.doc_ids: dict[str, dict[str, int]] = {}

    @property
    def data(self) -> dict[str, Any]:
        """The whole store as TinyDB holds it in memory: {table: {doc id: record}}."""
        storage = self.db.storage
        assert isinstance(storage, _SnapshotStorage)  # _begin opens every TinyDB over one
        return storage.data

    def _load(self, kind: str) -> dict[str, Doc]:
        # The table as TinyDB stores it ({doc id: record}); reading it raw spares a Document per record.
        table = self.data.get(kind, {})
        ids: dict[str, int] = {}
        docs: dict[str, Doc] = {}
        for doc_id, doc in table.items():
            key = key_of(kind, doc)
            ids[key] = int(doc_id)
            docs[key] = dict(doc)
        self.doc_ids[kind] = ids
        return docs


class TinyDBStore(Store):
    """A TinyDB file; parallel writers are serialised by a lock file, readers see whole snapshots."""

    backend = "tinydb"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)
        self._swept = False

    def exists(self) -> bool:
        """True when the store file exists."""
        return os.path.exists(self.path)  # False, not OSError, for a name too long: opening it says why

    def size_bytes(self) -> int:
        """Size of the store file."""
        return self.path.stat().st_size if self.path.exists() else 0

    def _begin(self, writable: bool) -> Transaction:
        lock = None
        # A symbolic link is followed to its target, which is locked, read and replaced; the link stays.
        target = store_target(self.path)
        check_store_file(self.path, target, write=writable)
        if writable:
            if not target.parent.is_dir():
                raise StoreError(f"folder {target.parent} of store {self.path} does not exist")
            lock = FileLock(target)
            lock.acquire()
        try:
            if lock:
                check_store_file(self.path, target, write=True)  # again: it may have changed while we waited
                if not self._swept:  # once per command, not once per chunk of a batch
                    remove_stale_temporaries(target)
                    self._swept = True
            loaded = _read(self.path, target)
            data, raw = (
                loaded if loaded else ({META_TABLE: {"1": {"app": APP_MARKER, "schemaVersion": SCHEMA_VERSION}}}, None)
            )
            return _TinyTransaction(TinyDB(storage=_SnapshotStorage, data=data), writable, lock, raw, target)
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
        raw_lines = _raw_lines(tx.raw, tx.data) if tx.raw else {}  # before the tables change
        changed: dict[str, set[str]] = {}
        for kind, changes in tx.changes.items():
            if not changes:
                continue
            tx._base(kind)  # make sure doc ids are known
            ids = tx.doc_ids[kind]
            table = tx.db.table(kind)
            removed = [ids[key] for key, doc in changes.items() if doc is DELETED and key in ids]
            replaced = {key: doc for key, doc in changes.items() if doc is not DELETED and key in ids}
            added = [doc for key, doc in changes.items() if doc is not DELETED and key not in ids]
            # At most one pass over the table per kind of change: TinyDB rebuilds a table on every call.
            if removed:
                table.remove(doc_ids=removed)
            if replaced:
                table.update(_replacer(kind, replaced), doc_ids=[ids[k] for k in replaced])
            if added:
                changed.setdefault(kind, set()).update(str(i) for i in table.insert_multiple(added))
            changed.setdefault(kind, set()).update(str(ids[k]) for k in replaced)
        write_atomically(tx.target, _dump(tx.data, raw_lines, changed))


def _replacer(kind: str, replaced: dict[str, Doc]) -> Callable[[MutableMapping[str, Any]], None]:
    """TinyDB's update callback: each stored record of `kind` takes its new version's fields, in place."""

    def replace(old: MutableMapping[str, Any]) -> None:
        assert isinstance(old, dict)  # TinyDB hands its Document, a dict
        new = replaced[key_of(kind, old)]
        old.clear()
        old.update(new)

    return replace
