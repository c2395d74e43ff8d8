"""What the store holds: record kinds, how each is keyed, and which fields are looked up by value."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

SCHEMA_VERSION = 1
APP_MARKER = "dpsctl"

Doc = dict[str, Any]


def _lower(field: str) -> Callable[[Doc], str]:
    return lambda doc: str(doc[field]).lower()


def _group_of(doc: Doc) -> str | None:
    """The enrollment group a registration came through, whatever its attestation type."""
    for kind in ("symmetricKey", "x509", "tpm"):
        sub = doc.get(kind)
        if isinstance(sub, dict) and sub.get("enrollmentGroupId"):
            return str(sub["enrollmentGroupId"]).lower()
    return None


# kind -> function giving the record's unique, case-insensitive key
KEYS: dict[str, Callable[[Doc], str]] = {
    "service": lambda doc: "service",
    "hubs": _lower("name"),
    "enrollments": _lower("registrationId"),
    "groups": _lower("enrollmentGroupId"),
    "registrations": _lower("registrationId"),
    "devices": lambda doc: f"{doc['hub']}/{doc['deviceId']}".lower(),
    # An int (stores before issue 12) or a time-ordered string ID (core/clock.new_history_id).
    "history": lambda doc: str(doc["sequence"]),
    "cas": _lower("name"),
    # `dpsctl serve`'s device operations and pending TPM challenges: kept in the store (not in one process's
    # memory) so that a poll after a restart, or on another instance sharing the store, is answered.
    "operations": _lower("operationId"),
    "challenges": _lower("slot"),
    # Shards of service-wide counters (`operations.07`): a writer adds to one shard, so none waits on a shared row.
    "counters": _lower("name"),
}

# kind -> index name -> function giving the indexed value (None: not indexed for that record)
INDEXES: dict[str, dict[str, Callable[[Doc], str | None]]] = {
    "registrations": {
        "group": _group_of,
        "hub": lambda doc: (doc.get("assignedHub") or "").lower() or None,
        "status": lambda doc: doc.get("status"),
    },
    "devices": {"hub": lambda doc: str(doc["hub"]).lower()},
    "groups": {"attestation": lambda doc: doc["attestation"]["type"]},
    "history": {"registration": lambda doc: str(doc.get("registrationId") or "").lower() or None},
}

KINDS = tuple(KEYS)


def index_set() -> str:
    """The indexes of INDEXES as a stored fingerprint (JSON list of `kind.name`): a store written with another set
    has the index rows of the difference rebuilt when it is opened (a new index is named anew, never redefined)."""
    return json.dumps(sorted(f"{kind}.{name}" for kind, names in INDEXES.items() for name in names))


def key_of(kind: str, doc: Doc) -> str:
    """The unique key of `doc` within `kind`."""
    return KEYS[kind](doc)


# A record as the stores write it: compact, and readable (non-ASCII kept as is).
compact_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def index_rows(kind: str, key: str, doc: Doc, names: Iterable[str] | None = None) -> list[tuple[str, str, str, str]]:
    """(kind, key, name, value) rows for the indexed fields of one record (of the indexes `names` only, if given):
    what the SQL stores keep in their record_index table, values lower-cased as DPS compares IDs."""
    rows = []
    for name, extract in INDEXES.get(kind, {}).items():
        if names is not None and name not in names:
            continue
        value = extract(doc)
        if value:
            rows.append((kind, key, name, str(value).lower()))
    return rows
