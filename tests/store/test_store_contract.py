"""The same store contract, run over every backend."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from dpsctl.core.errors import StoreError
from dpsctl.store import open_store
from dpsctl.store.memory import MemoryStore
from dpsctl.store.sqlite_store import SqliteStore
from dpsctl.store.tinydb_store import TinyDBStore

BACKENDS = ["memory", "tinydb", "sqlite"]


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    if request.param == "memory":
        return MemoryStore()
    if request.param == "sqlite":
        return SqliteStore(tmp_path / "dps.sqlite")
    return TinyDBStore(tmp_path / "dps.json")


def enrollment(reg_id: str, status: str = "enabled") -> dict:
    return {"registrationId": reg_id, "attestation": {"type": "symmetricKey"}, "provisioningStatus": status}


def test_put_then_get_is_case_insensitive(store):
    with store.transaction(write=True) as tx:
        tx.put("enrollments", enrollment("Dev-1"))
    with store.transaction() as tx:
        assert tx.get("enrollments", "dev-1")["registrationId"] == "Dev-1"
        assert tx.get("enrollments", "DEV-1") is not None
        assert tx.get("enrollments", "dev-2") is None


def test_replace_delete_scan_count(store):
    with store.transaction(write=True) as tx:
        tx.put_many("enrollments", [enrollment(f"d{i}") for i in range(5)])
    with store.transaction(write=True) as tx:
        tx.put("enrollments", enrollment("d1", "disabled"))
        assert tx.delete("enrollments", "D3") is True
        assert tx.delete("enrollments", "nope") is False
    with store.transaction() as tx:
        assert [d["registrationId"] for d in tx.scan("enrollments")] == ["d0", "d1", "d2", "d4"]
        assert tx.count("enrollments") == 4
        assert tx.get("enrollments", "d1")["provisioningStatus"] == "disabled"


def test_changes_are_visible_inside_the_transaction_before_commit(store):
    with store.transaction(write=True) as tx:
        tx.put("enrollments", enrollment("a"))
        assert tx.get("enrollments", "a") is not None
        tx.delete("enrollments", "a")
        assert tx.get("enrollments", "a") is None
        assert tx.count("enrollments") == 0


def test_an_exception_rolls_back_everything(store):
    with store.transaction(write=True) as tx:
        tx.put("enrollments", enrollment("kept"))
    with pytest.raises(RuntimeError):
        with store.transaction(write=True) as tx:
            tx.put("enrollments", enrollment("lost"))
            tx.delete("enrollments", "kept")
            raise RuntimeError("boom")
    with store.transaction() as tx:
        assert [d["registrationId"] for d in tx.scan("enrollments")] == ["kept"]


def test_find_by_index(store):
    regs = [
        {"registrationId": "a", "status": "assigned", "assignedHub": "h1.azure-devices.net", "symmetricKey": {"enrollmentGroupId": "G1"}},
        {"registrationId": "b", "status": "failed", "x509": {"enrollmentGroupId": "g2"}},
        {"registrationId": "c", "status": "assigned", "assignedHub": "h2.azure-devices.net", "symmetricKey": {}},
    ]
    with store.transaction(write=True) as tx:
        tx.put_many("registrations", regs)
    with store.transaction() as tx:
        assert [d["registrationId"] for d in tx.find("registrations", "group", "g1")] == ["a"]
        assert [d["registrationId"] for d in tx.find("registrations", "group", "G2")] == ["b"]
        assert [d["registrationId"] for d in tx.find("registrations", "status", "assigned")] == ["a", "c"]
        assert [d["registrationId"] for d in tx.find("registrations", "hub", "h2.azure-devices.net")] == ["c"]


def test_a_read_only_transaction_refuses_writes(store):
    with store.transaction() as tx:
        with pytest.raises(RuntimeError):
            tx.put("enrollments", enrollment("x"))


def test_returned_records_do_not_alias_the_store(store):
    with store.transaction(write=True) as tx:
        tx.put("enrollments", enrollment("a"))
    with store.transaction() as tx:
        tx.get("enrollments", "a")["provisioningStatus"] = "disabled"
    with store.transaction() as tx:
        assert tx.get("enrollments", "a")["provisioningStatus"] == "enabled"


# --------------------------------------------------------------------------- the TinyDB file


def test_file_is_created_0600_and_is_a_tinydb_document(tmp_path):
    path = tmp_path / "dps.json"
    store = TinyDBStore(path)
    with store.transaction(write=True) as tx:
        tx.put("enrollments", enrollment("a"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["_dpsctl"]["1"] == {"app": "dpsctl", "schemaVersion": 1}
    assert list(data["enrollments"].values()) == [enrollment("a")]
    from tinydb import TinyDB

    with TinyDB(path) as db:  # a plain TinyDB reads it too
        assert db.table("enrollments").all()[0]["registrationId"] == "a"


def test_one_read_and_one_atomic_write_per_transaction(tmp_path, monkeypatch):
    path = tmp_path / "dps.json"
    store = TinyDBStore(path)
    with store.transaction(write=True) as tx:
        tx.put("enrollments", enrollment("seed"))
    reads, writes = [], []
    import dpsctl.store.tinydb_store as mod

    real_read = mod.read_store_bytes
    monkeypatch.setattr(mod, "read_store_bytes", lambda path, target: reads.append(path) or real_read(path, target))

    real_write = mod.write_atomically
    monkeypatch.setattr(mod, "write_atomically", lambda p, b: writes.append(p) or real_write(p, b))
    with store.transaction(write=True) as tx:
        for i in range(200):
            tx.put("enrollments", enrollment(f"d{i}"))
        tx.delete("enrollments", "seed")
        tx.put("registrations", {"registrationId": "d1", "status": "assigned"})
    assert len(reads) == 1 and len(writes) == 1
    with store.transaction() as tx:
        assert tx.count("enrollments") == 200


def test_a_read_only_transaction_never_writes(tmp_path):
    path = tmp_path / "dps.json"
    with TinyDBStore(path).transaction() as tx:
        assert tx.count("enrollments") == 0
    assert not path.exists()


DAMAGED = {
    "empty": b"",
    "truncated": b'{"_dpsctl": {"1": {"app": "dpsctl", "schemaVersion": 1}}, "enrollments": {"1": {"registr',
    "not JSON": b"\x89PNG\r\n\x1a\n binary",
    "another program's JSON": b'{"_default": {"1": {"name": "x"}}}',
    "a JSON list": b"[1, 2, 3]",
    "newer dpsctl": b'{"_dpsctl": {"1": {"app": "dpsctl", "schemaVersion": 99}}}',
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_a_damaged_store_is_refused_and_left_untouched(tmp_path, case):
    path = tmp_path / "dps.json"
    path.write_bytes(DAMAGED[case])
    for write in (False, True):
        with pytest.raises(StoreError) as info:
            with TinyDBStore(path).transaction(write=write) as tx:
                tx.count("enrollments")
        assert str(path) in info.value.message
    assert path.read_bytes() == DAMAGED[case]


def test_open_store_picks_backends(tmp_path):
    assert isinstance(open_store(":memory:"), MemoryStore)
    assert isinstance(open_store(tmp_path / "x.json"), TinyDBStore)


def test_no_temporary_files_are_left_behind(tmp_path):
    store = TinyDBStore(tmp_path / "dps.json")
    for i in range(3):
        with store.transaction(write=True) as tx:
            tx.put("enrollments", enrollment(f"d{i}"))
    assert sorted(os.listdir(tmp_path)) == ["dps.json", "dps.json.lock"]


# --------------------------------------------------------------------------- the SQLite file


def test_sqlite_file_is_0600_with_wal(tmp_path):
    path = tmp_path / "dps.sqlite"
    store = SqliteStore(path)
    with store.transaction(write=True) as tx:
        tx.put("enrollments", enrollment("a"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    import sqlite3

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert dict(conn.execute("SELECT name, value FROM meta")) == {"app": "dpsctl", "schemaVersion": "1"}


def _foreign_sqlite(path):
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE photos (id INTEGER)")
    return path.read_bytes()


def _newer_sqlite(path):
    with SqliteStore(path).transaction(write=True) as tx:
        tx.put("enrollments", enrollment("a"))
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE meta SET value = '42' WHERE name = 'schemaVersion'")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path.read_bytes()


@pytest.mark.parametrize("case", ["random bytes", "json", "another program's database", "newer dpsctl"])
def test_a_damaged_sqlite_store_is_refused_and_left_untouched(tmp_path, case):
    path = tmp_path / "dps.db"
    if case == "random bytes":
        path.write_bytes(os.urandom(4096))
    elif case == "json":
        path.write_text('{"_dpsctl": {}}')
    elif case == "another program's database":
        _foreign_sqlite(path)
    else:
        _newer_sqlite(path)
    before = path.read_bytes()
    for write in (False, True):
        with pytest.raises(StoreError) as info:
            with open_store(path).transaction(write=write) as tx:
                tx.count("enrollments")
        assert str(path) in info.value.message
    assert path.read_bytes() == before


def test_sqlite_lookups_do_not_load_whole_tables(tmp_path, monkeypatch):
    store = SqliteStore(tmp_path / "dps.sqlite")
    with store.transaction(write=True) as tx:
        tx.put_many("enrollments", [enrollment(f"d{i}") for i in range(100)])
        tx.put_many("registrations", [{"registrationId": f"d{i}", "status": "assigned", "symmetricKey": {"enrollmentGroupId": "g"}} for i in range(10)])
    with store.transaction() as tx:
        monkeypatch.setattr(type(tx), "_load", lambda self, kind: pytest.fail(f"loaded all {kind}"))
        assert tx.get("enrollments", "D7")["registrationId"] == "d7"
        assert tx.count("enrollments") == 100
        assert len(tx.find("registrations", "group", "G")) == 10


def test_memo_is_forgotten_when_its_kind_changes(store):
    builds = []
    with store.transaction(write=True) as tx:
        def build():
            builds.append(1)
            return tx.count("groups")

        assert tx.memo("groups", "n", build) == 0
        assert tx.memo("groups", "n", build) == 0
        tx.put("enrollments", enrollment("other-kind"))
        assert tx.memo("groups", "n", build) == 0 and len(builds) == 1
        tx.put("groups", {"enrollmentGroupId": "g", "attestation": {"type": "symmetricKey"}})
        assert tx.memo("groups", "n", build) == 1 and len(builds) == 2


def test_untouched_records_are_written_back_byte_for_byte(tmp_path):
    path = tmp_path / "dps.json"
    store = TinyDBStore(path)
    with store.transaction(write=True) as tx:
        tx.put_many("enrollments", [enrollment(f"d{i}") for i in range(5)])
    # Hand-edit one record's spacing: valid JSON, same data; an untouched record keeps its bytes.
    text = path.read_text().replace('"provisioningStatus":"enabled"}', '"provisioningStatus": "enabled"}', 1)
    path.write_text(text)
    with store.transaction(write=True) as tx:
        tx.put("registrations", {"registrationId": "d1", "status": "assigned"})
        tx.put("enrollments", enrollment("d4", "disabled"))
    after = path.read_text()
    assert '"provisioningStatus": "enabled"}' in after
    with store.transaction() as tx:
        assert [d["provisioningStatus"] for d in tx.scan("enrollments")] == ["enabled"] * 4 + ["disabled"]
        assert tx.get("registrations", "d1") == {"registrationId": "d1", "status": "assigned"}
    assert json.loads(after)["enrollments"]["5"]["provisioningStatus"] == "disabled"


def test_a_store_written_by_plain_tinydb_is_read_and_rewritten(tmp_path):
    from tinydb import TinyDB

    path = tmp_path / "dps.json"
    with TinyDB(path, indent=4) as db:
        db.table("_dpsctl").insert({"app": "dpsctl", "schemaVersion": 1})
        db.table("enrollments").insert_multiple([enrollment("a"), enrollment("b")])
    store = TinyDBStore(path)
    with store.transaction(write=True) as tx:
        tx.put("enrollments", enrollment("c"))
        tx.delete("enrollments", "a")
    with store.transaction() as tx:
        assert [d["registrationId"] for d in tx.scan("enrollments")] == ["b", "c"]


def test_sqlite_statements_never_scan_a_whole_kind(tmp_path):
    # A commit used to delete a record's index rows with a scan of all the kind's rows (the key was not a
    # prefix of the index), so a batch slowed down as the store grew. Every statement must use an index.
    import sqlite3

    path = tmp_path / "dps.sqlite"
    with SqliteStore(path).transaction(write=True) as tx:
        tx.put("registrations", {"registrationId": "a", "status": "assigned"})
    conn = sqlite3.connect(path)
    statements = [
        ("DELETE FROM record_index WHERE kind = ? AND key IN (?, ?)", ("registrations", "a", "b")),
        ("SELECT doc FROM records WHERE kind = ? AND key = ?", ("registrations", "a")),
        (
            "SELECT r.key, r.doc FROM record_index i CROSS JOIN records r ON r.kind = i.kind AND r.key = i.key "
            "WHERE i.kind = ? AND i.name = ? AND i.value = ? ORDER BY r.key",
            ("registrations", "status", "assigned"),
        ),
    ]
    for sql, args in statements:
        plan = " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, args))
        assert "SCAN" not in plan, f"{sql}: {plan}"
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
