"""The same store contract, run over every backend."""

from __future__ import annotations

import contextlib
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

from tests.helpers.backends import BACKENDS as STORED_BACKENDS

BACKENDS = ["memory", *STORED_BACKENDS]


def make_store(backend, tmp_path, request):
    if backend == "memory":
        return MemoryStore()
    if backend == "sqlite":
        return SqliteStore(tmp_path / "dps.sqlite")
    if backend == "postgresql":
        return open_store(request.getfixturevalue("postgres_url"))
    return TinyDBStore(tmp_path / "dps.json")


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    with make_store(request.param, tmp_path, request) as opened:
        yield opened


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


def test_keys_are_sorted_and_include_this_transactions_changes(store):
    with store.transaction(write=True) as tx:
        tx.put_many("enrollments", [enrollment(f"d{i}") for i in (3, 1, 2)])
    with store.transaction(write=True) as tx:
        assert tx.keys("enrollments") == ["d1", "d2", "d3"]
        tx.delete("enrollments", "d2")
        tx.put("enrollments", enrollment("D0"))
        assert tx.keys("enrollments") == ["d0", "d1", "d3"]
    with store.transaction() as tx:
        assert tx.keys("enrollments") == ["d0", "d1", "d3"]
        assert tx.keys("groups") == []


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
    assert isinstance(open_store(tmp_path / "x.sqlite"), SqliteStore)
    pytest.importorskip("psycopg")
    from dpsctl.store.postgres_store import PostgresStore

    for url in ("postgresql://dps@db.lab/fleet", "postgres://dps:pw@db.lab:5433/fleet?schema=ci_1&sslmode=disable"):
        opened = open_store(url)  # connects to nothing yet
        assert isinstance(opened, PostgresStore) and opened.backend == "postgresql" and "pw" not in opened.location
    assert open_store("postgres://dps:pw@db.lab:5433/fleet?schema=ci_1&sslmode=disable").schema == "ci_1"


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
        assert dict(conn.execute("SELECT name, value FROM meta WHERE name IN ('app', 'schemaVersion')")) == {"app": "dpsctl", "schemaVersion": "1"}


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


# --------------------------------------------------------------------------- every backend: lost updates


@pytest.mark.parametrize("shared", [False, True], ids=["a-handle-each", "one-handle"])
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "memory"])
def test_parallel_read_modify_writes_lose_no_update(backend, shared, request, tmp_path):
    """Threads increment one counter: with a store handle each (their own connections, as separate processes
    have), or sharing one (as a server's request threads do: PostgreSQL's pool, SQLite's idle connections)."""
    import threading

    first = make_store(backend, tmp_path, request)
    location = request.getfixturevalue("postgres_url") if backend == "postgresql" else first.location
    with first.transaction(write=True) as tx:
        tx.put("service", {"counter": 0})
    errors = []

    def bump(times):
        try:
            with (contextlib.nullcontext(first) if shared else open_store(location)) as mine:
                for _ in range(times):
                    with mine.transaction(write=True) as tx:
                        doc = tx.get("service", "service")
                        tx.put("service", {"counter": doc["counter"] + 1})
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=bump, args=(25,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with first, first.transaction() as tx:
        assert tx.get("service", "service")["counter"] == 100


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def pg(postgres_url):
    with open_store(postgres_url) as store:
        yield store


def _psql(postgres_url):
    import psycopg

    from dpsctl.store.pglocation import parse

    return psycopg.connect(parse(postgres_url).conninfo, autocommit=True)


def test_postgresql_lookups_do_not_load_whole_tables_and_use_indexes(pg, postgres_url, monkeypatch):
    with pg.transaction(write=True) as tx:
        tx.put_many("enrollments", [enrollment(f"d{i}") for i in range(100)])
        tx.put_many("registrations", [{"registrationId": f"d{i}", "status": "assigned", "symmetricKey": {"enrollmentGroupId": "g"}} for i in range(10)])
    with pg.transaction() as tx:
        monkeypatch.setattr(type(tx), "_load", lambda self, kind: pytest.fail(f"loaded all {kind}"))
        assert tx.get("enrollments", "D7")["registrationId"] == "d7"
        assert tx.count("enrollments") == 100
        assert len(tx.find("registrations", "group", "G")) == 10
    schema = pg.schema
    with _psql(postgres_url) as conn:
        conn.execute("SET enable_seqscan = off")  # a tiny table: ask whether an index *can* answer
        for sql, args in (
            (pg.sql.get, ("enrollments", "d1")),
            (pg.sql.find, ("registrations", "group", "g")),
            (pg.sql.delete_index.replace("DELETE FROM", "EXPLAIN DELETE FROM"), (["registrations"], ["d1"])),
        ):
            statement = sql if sql.startswith("EXPLAIN") else "EXPLAIN " + sql
            plan = " | ".join(row[0] for row in conn.execute(statement, args))
            assert "Seq Scan" not in plan, f"{sql}: {plan}"
        assert schema in [r[0] for r in conn.execute("SELECT nspname FROM pg_namespace")]


def test_postgresql_store_is_made_by_its_first_write_and_not_by_reads(postgres_url):
    with open_store(postgres_url) as store:
        assert not store.exists()
        with store.transaction() as tx:
            assert tx.count("enrollments") == 0
        with store.transaction(write=True) as tx:
            tx.get("enrollments", "nothing")  # writes nothing: rolled back, schema included
        assert not store.exists()
        with store.transaction(write=True) as tx:
            tx.put("enrollments", enrollment("a"))
        assert store.exists()
    with _psql(postgres_url) as conn:
        schema = postgres_url.rsplit("schema=", 1)[1]
        meta = dict(conn.execute(f'SELECT name, value FROM "{schema}".meta').fetchall())
    assert meta["app"] == "dpsctl" and meta["schemaVersion"] == "1" and meta["layoutVersion"] == "1"


@pytest.mark.parametrize("case", ["foreign tables", "newer layout", "newer records"])
def test_a_foreign_or_newer_postgresql_schema_is_refused_and_left_untouched(postgres_url, case):
    schema = postgres_url.rsplit("schema=", 1)[1]
    with _psql(postgres_url) as conn:
        if case == "foreign tables":
            conn.execute(f'CREATE SCHEMA "{schema}"')
            conn.execute(f'CREATE TABLE "{schema}".records (id int)')
        else:
            with open_store(postgres_url) as store, store.transaction(write=True) as tx:
                tx.put("enrollments", enrollment("a"))
            name = "layoutVersion" if case == "newer layout" else "schemaVersion"
            conn.execute(f"UPDATE \"{schema}\".meta SET value = '42' WHERE name = %s", (name,))
        before = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1", (schema,)).fetchall()
        for write in (False, True):
            with pytest.raises(StoreError) as info:
                with open_store(postgres_url) as store, store.transaction(write=write) as tx:
                    tx.count("enrollments")
            assert "left untouched" in info.value.message and schema in postgres_url
        after = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1", (schema,)).fetchall()
        assert before == after


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_new_kind_and_a_new_index_work_on_an_existing_store(backend, request, tmp_path, monkeypatch):
    """What the server's next record kinds need: added to schema.py, they work on a store made before them."""
    location = request.getfixturevalue("postgres_url") if backend == "postgresql" else str(tmp_path / "dps.sqlite")
    with open_store(location) as store, store.transaction(write=True) as tx:
        tx.put_many("registrations", [{"registrationId": f"r{i}", "status": "assigned" if i % 2 else "failed"} for i in range(6)])
    import dpsctl.store.schema as schema

    monkeypatch.setitem(schema.KEYS, "operations", lambda doc: str(doc["operationId"]).lower())
    monkeypatch.setattr(schema, "KINDS", tuple(schema.KEYS))
    monkeypatch.setitem(schema.INDEXES, "operations", {"registration": lambda doc: str(doc["registrationId"]).lower()})
    monkeypatch.setitem(schema.INDEXES, "registrations", {**schema.INDEXES["registrations"], "parity": lambda doc: "odd" if int(doc["registrationId"][1:]) % 2 else "even"})
    import dpsctl.store.base as base

    monkeypatch.setattr(base, "KINDS", schema.KINDS)
    with open_store(location) as store:
        with store.transaction(write=True) as tx:
            tx.put("operations", {"operationId": "Op-1", "registrationId": "r1", "status": "assigning"})
        with store.transaction() as tx:
            assert tx.get("operations", "op-1")["status"] == "assigning"
            assert [d["operationId"] for d in tx.find("operations", "registration", "R1")] == ["Op-1"]
            # the index added after these records were written was built for them when the store was opened
            assert [d["registrationId"] for d in tx.find("registrations", "parity", "odd")] == ["r1", "r3", "r5"]


def test_prefetch_is_only_a_hint(store):
    with store.transaction(write=True) as tx:
        tx.put_many("enrollments", [enrollment(f"d{i}") for i in range(3)])
    with store.transaction(write=True) as tx:
        tx.put("enrollments", enrollment("d1", "disabled"))
        tx.prefetch("enrollments", ["D0", "d1", "missing"])
        assert tx.get("enrollments", "d0")["provisioningStatus"] == "enabled"
        assert tx.get("enrollments", "d1")["provisioningStatus"] == "disabled"  # the pending change wins
        assert tx.get("enrollments", "missing") is None
        tx.delete("enrollments", "d0")
        assert tx.get("enrollments", "d0") is None
        tx.put("enrollments", enrollment("missing"))
        assert tx.get("enrollments", "MISSING") is not None
    with store.transaction() as tx:
        assert [d["registrationId"] for d in tx.scan("enrollments")] == ["d1", "d2", "missing"]
