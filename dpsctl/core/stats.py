"""Counts across the store, for `dpsctl stats`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dpsctl.core.service import load_service
from dpsctl.store import Transaction


def collect(tx: Transaction, now: datetime) -> dict[str, Any]:
    """Hubs, enrollments, groups, registrations by status, operations and devices per hub."""
    by_status: dict[str, int] = {}
    for doc in tx.scan("registrations"):
        by_status[doc["status"]] = by_status.get(doc["status"], 0) + 1
    per_hub = {d["name"]: 0 for d in tx.scan("hubs")}
    for doc in tx.scan("devices"):
        per_hub[doc["hub"]] = per_hub.get(doc["hub"], 0) + 1
    return {
        "linkedHubs": tx.count("hubs"),
        "enrollments": tx.count("enrollments"),
        "enrollmentGroups": tx.count("groups"),
        "registrations": sum(by_status.values()),
        "registrationsByStatus": dict(sorted(by_status.items())),
        "devices": sum(per_hub.values()),
        "operations": load_service(tx, now).operations,
        "devicesPerHub": per_hub,
    }
