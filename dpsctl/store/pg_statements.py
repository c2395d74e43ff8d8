"""The PostgreSQL store's tables and statements: the layout's migrations, and every SQL statement with its schema."""

from __future__ import annotations

# The layout's own version (the tables), apart from SCHEMA_VERSION (the records' format, shared by all backends).
# Step N takes a store from layout N-1 to N; a store is brought up to date, in one transaction, when first opened.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE {s}.meta (name text PRIMARY KEY, value text NOT NULL)",
        "CREATE TABLE {s}.records (kind text NOT NULL, key text NOT NULL, doc text NOT NULL, PRIMARY KEY (kind, key))",
        # One row per indexed field of a record, keyed by the record (replacing a record finds its rows directly),
        # looked up by value through the second index.
        "CREATE TABLE {s}.record_index (kind text NOT NULL, key text NOT NULL, name text NOT NULL, value text NOT NULL, PRIMARY KEY (kind, key, name))",
        "CREATE INDEX record_index_by_value ON {s}.record_index (kind, name, value)",
        # Counters of commits per kind, read by a change stamp this dpsctl no longer has: kept in layout 1 so that
        # stores made by earlier versions and by this one have the same tables.
        "CREATE TABLE {s}.changes (kind text PRIMARY KEY, counter bigint NOT NULL)",
    ],
}
LAYOUT_VERSION = max(MIGRATIONS)


class Statements:
    """The statements, with the schema name quoted in once."""

    def __init__(self, schema: str) -> None:
        s = '"' + schema + '"'
        self.schema = s
        self.load = f"SELECT key, doc FROM {s}.records WHERE kind = %s"
        self.get = f"SELECT doc FROM {s}.records WHERE kind = %s AND key = %s"
        self.count = f"SELECT count(*) FROM {s}.records WHERE kind = %s"
        self.keys = f"SELECT key FROM {s}.records WHERE kind = %s"
        self.stored_keys = f"SELECT key FROM {s}.records WHERE kind = %s AND key = ANY(%s)"
        self.get_many = f"SELECT key, doc FROM {s}.records WHERE kind = %s AND key = ANY(%s)"
        self.find = (
            f"SELECT r.key, r.doc FROM {s}.record_index i JOIN {s}.records r ON r.kind = i.kind AND r.key = i.key "
            "WHERE i.kind = %s AND i.name = %s AND i.value = %s ORDER BY r.key"
        )
        pairs = "unnest(%s::text[], %s::text[]) AS c(kind, key)"
        self.delete_index = f"DELETE FROM {s}.record_index i USING {pairs} WHERE i.kind = c.kind AND i.key = c.key"
        self.delete_records = f"DELETE FROM {s}.records r USING {pairs} WHERE r.kind = c.kind AND r.key = c.key"
        self.upsert = (
            f"INSERT INTO {s}.records (kind, key, doc) SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]) "
            "ON CONFLICT (kind, key) DO UPDATE SET doc = EXCLUDED.doc"
        )
        self.insert_index = f"INSERT INTO {s}.record_index (kind, key, name, value) SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])"
        self.copy_records = f"COPY {s}.records (kind, key, doc) FROM STDIN"
        self.copy_index = f"COPY {s}.record_index (kind, key, name, value) FROM STDIN"
        self.meta = f"SELECT name, value FROM {s}.meta"
        self.tables = (
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname IN ('meta', 'records') AND c.relkind = 'r'"
        )
        self.set_meta = f"INSERT INTO {s}.meta (name, value) VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value"
        self.size = (
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'r'"
        )
