"""Registration records (`DeviceRegistrationState`): written by provisioning, read and deleted by users."""

from __future__ import annotations

from typing import Any

from dpsctl.core.clock import same_etag
from dpsctl.core.errors import Conflict, NotFound
from dpsctl.core.ids import hub_host_name
from dpsctl.core.validation import filter_choice, require_named
from dpsctl.store import Transaction

REGISTRATION_STATUSES = ("unassigned", "assigning", "assigned", "failed", "disabled")


def public_registration(doc: dict[str, Any]) -> dict[str, Any]:
    """The DPS view of a stored registration: dpsctl's bookkeeping (`_`-prefixed fields) removed."""
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def get_registration(tx: Transaction, registration_id: str) -> dict[str, Any]:
    """The registration record of a device, or NotFound."""
    doc = tx.get("registrations", registration_id)
    if doc is None:
        raise NotFound(
            f"no registration record for {registration_id!r}",
            hint="the device has not provisioned yet (dpsctl provision ...), or its record was deleted",
        )
    return doc


def list_registrations(
    tx: Transaction, *, group: str | None = None, hub: str | None = None, status: str | None = None
) -> list[dict[str, Any]]:
    """Registration records filtered by enrollment group, assigned hub and status (indexed lookups first)."""
    if status is not None:
        status = filter_choice(status, REGISTRATION_STATUSES, "status")
    if hub is not None:
        hub = hub_host_name(hub)
    if group is not None:
        docs = tx.find("registrations", "group", group)
    elif hub is not None:
        docs = tx.find("registrations", "hub", hub)
    elif status is not None:
        docs = tx.find("registrations", "status", status)
    else:
        docs = list(tx.scan("registrations"))
    found = [
        doc
        for doc in docs
        if (hub is None or (doc.get("assignedHub") or "").lower() == hub)
        and (status is None or doc.get("status") == status)
    ]
    # A filter naming a hub or group that does not exist is a typo until shown otherwise (records of an unlinked
    # hub or a deleted group still list).
    if hub is not None:
        require_named(
            tx.get("hubs", hub) is not None,
            bool(tx.find("registrations", "hub", hub)),
            f"IoT hub {hub}",
            "see `dpsctl hub list`",
        )
    if group is not None:
        require_named(
            tx.get("groups", group) is not None,
            bool(docs),
            f"enrollment group {group!r}",
            "see `dpsctl enrollment-group list`",
        )
    return found


def delete_registration(tx: Transaction, registration_id: str, *, etag: str | None = None) -> dict[str, Any]:
    """Delete a registration record: the device's next registration is an initial assignment again."""
    doc = get_registration(tx, registration_id)
    if etag is not None and not same_etag(etag, doc.get("etag")):
        raise Conflict(
            f"registration {registration_id!r} has changed since etag {etag}", hint="show it again and retry"
        )
    tx.delete("registrations", doc["registrationId"])
    return doc
