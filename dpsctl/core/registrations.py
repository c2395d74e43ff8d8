"""Registration records (`DeviceRegistrationState`): written by provisioning, read and deleted by users."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dpsctl.core.clock import same_etag
from dpsctl.core.errors import Conflict, NotFound
from dpsctl.core.ids import hub_host_name
from dpsctl.core.validation import filter_choice, require_named
from dpsctl.store import Transaction

REGISTRATION_STATUSES = ("unassigned", "assigning", "assigned", "failed", "disabled")
# The fields of DPS's `DeviceRegistrationState`, in the order a record shows them, and their attributes here.
_ATTRIBUTES = {
    "registrationId": "registration_id",
    "createdDateTimeUtc": "created",
    "assignedHub": "assigned_hub",
    "deviceId": "device_id",
    "status": "status",
    "substatus": "substatus",
    "errorCode": "error_code",
    "errorMessage": "error_message",
    "lastUpdatedDateTimeUtc": "last_updated",
    "etag": "etag",
    "payload": "payload",
}
STATE_FIELDS = tuple(_ATTRIBUTES)
# The attestation sub-object a record carries (`registrationState.symmetricKey` ...), one of these.
ATTESTATION_FIELDS = ("symmetricKey", "x509", "tpm")
# dpsctl's bookkeeping, stored beside the DPS fields under `_` keys that no view shows.
_BOOKKEEPING = {
    "_currentHub": "current_hub",
    "_currentDeviceId": "current_device_id",
    "_initialHub": "initial_hub",
    "_substatus": "last_substatus",
}


@dataclass(frozen=True)
class EntryRef:
    """The enrollment entry a registration came through."""

    group: bool
    id: str


@dataclass
class Registration:
    """A device's registration record: DPS's `DeviceRegistrationState`, and where the device lives for reprovisioning.

    Stored as a document with DPS's keys (and `_`-prefixed ones for the bookkeeping), as stores have always held it.
    """

    registration_id: str
    status: str
    created: str | None = None
    assigned_hub: str | None = None
    device_id: str | None = None
    substatus: str | None = None
    error_code: int | None = None
    error_message: str | None = None
    last_updated: str | None = None
    etag: str | None = None
    payload: Any = None  # the device's or the allocator's custom JSON, whatever its shape
    attestation: dict[str, Any] = field(default_factory=dict)  # {"symmetricKey" | "x509" | "tpm": {...}}
    current_hub: str | None = None  # the hub the device lives in now (kept across refusals)
    current_device_id: str | None = None
    initial_hub: str | None = None  # the hub of the initial assignment (reprovisionedToInitialAssignment)
    last_substatus: str | None = None  # a refused record has no substatus, but a later same-hub assignment reports it
    entry: EntryRef | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as they were

    @property
    def previous_substatus(self) -> str | None:
        """The substatus of the device's last assignment (this record's, or the one a refusal kept)."""
        return self.substatus or self.last_substatus

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Registration:
        """The record of a stored document (any version of it)."""
        values: dict[str, Any] = {"attestation": {}, "extra": {}}
        for key, value in doc.items():
            if key in _ATTRIBUTES:
                values[_ATTRIBUTES[key]] = value
            elif key in _BOOKKEEPING:
                values[_BOOKKEEPING[key]] = value
            elif key in ATTESTATION_FIELDS:
                values["attestation"][key] = value
            elif key == "_entry" and isinstance(value, dict):
                values["entry"] = EntryRef(bool(value.get("group")), str(value.get("id")))
            else:
                values["extra"][key] = value
        values.setdefault("registration_id", "")
        values.setdefault("status", "unassigned")
        return cls(**values)

    def view(self) -> dict[str, Any]:
        """The DPS view (`DeviceRegistrationState` with its attestation): what the CLI and the device API show."""
        doc = {name: getattr(self, attr) for name, attr in _ATTRIBUTES.items()}
        shown = {name: value for name, value in doc.items() if value is not None}
        shown.update(self.attestation)
        shown.update({k: v for k, v in self.extra.items() if not k.startswith("_")})
        return shown

    def service_view(self) -> dict[str, Any]:
        """The service API's `DeviceRegistrationState`: the DPS fields only (it has no attestation sub-object)."""
        return {name: value for name, value in self.view().items() if name in _ATTRIBUTES}

    def to_doc(self) -> dict[str, Any]:
        """The stored document: the DPS view, then the bookkeeping under `_` keys."""
        doc = self.view()
        doc.update({key: getattr(self, attr) for key, attr in _BOOKKEEPING.items() if getattr(self, attr)})
        if self.entry is not None:
            doc["_entry"] = {"group": self.entry.group, "id": self.entry.id}
        doc.update({k: v for k, v in self.extra.items() if k.startswith("_")})
        return doc


def find_registration(tx: Transaction, registration_id: str) -> Registration | None:
    """The registration record of a device, or None."""
    doc = tx.get("registrations", registration_id)
    return None if doc is None else Registration.from_doc(doc)


def save_registration(tx: Transaction, registration: Registration) -> None:
    """Write a registration record (in the stored document format every version reads)."""
    tx.put("registrations", registration.to_doc())


def get_registration(tx: Transaction, registration_id: str) -> Registration:
    """The registration record of a device, or NotFound."""
    found = find_registration(tx, registration_id)
    if found is None:
        raise NotFound(
            f"no registration record for {registration_id!r}",
            hint="the device has not provisioned yet (dpsctl provision ...), or its record was deleted",
        )
    return found


def list_registrations(
    tx: Transaction, *, group: str | None = None, hub: str | None = None, status: str | None = None
) -> list[Registration]:
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
    return [Registration.from_doc(doc) for doc in found]


def delete_registration(tx: Transaction, registration_id: str, *, etag: str | None = None) -> Registration:
    """Delete a registration record: the device's next registration is an initial assignment again."""
    found = get_registration(tx, registration_id)
    if etag is not None and not same_etag(etag, found.etag):
        raise Conflict(
            f"registration {registration_id!r} has changed since etag {etag}", hint="show it again and retry"
        )
    tx.delete("registrations", found.registration_id)
    return found
