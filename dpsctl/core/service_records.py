"""Records of the service itself and of its linked hubs, converted to and from the DPS REST (camelCase) shape.

As in models.py: `from_dict` checks input, `from_stored` builds from what dpsctl wrote to the store.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from dpsctl.core.ids import hub_host_name, validate_id_scope
from dpsctl.core.validation import (
    Json,
    choice,
    default_hub_connection_string,
    expect,
    input_object,
    mask_connection_string,
    validate_weight,
)

# Imports inside functions in this module load what only some commands need: every dpsctl process that imports
# the engine would pay for them otherwise (docs/development.md, "Checks that run in CI").

SERVICE_POLICIES: tuple[str, ...] = ("hashed", "geoLatency", "static")


@dataclass(frozen=True)
class LinkedHub:
    """An IoT hub linked to the service (`IotHubDefinitionDescription`)."""

    name: str
    connection_string: str
    location: str | None = None
    allocation_weight: int | None = None
    apply_allocation_policy: bool | None = None

    @property
    def weight(self) -> int:
        """The effective allocation weight (DPS treats null as 1)."""
        return self.allocation_weight or 1

    @property
    def applies_policy(self) -> bool:
        """Whether the hub takes part in allocation when an enrollment names no hubs (null means yes)."""
        return self.apply_allocation_policy is not False

    def to_dict(self, *, show_keys: bool = True) -> Json:
        """The DPS `IotHubDefinitionDescription` object; the access key is masked unless `show_keys`."""
        cs = self.connection_string if show_keys else mask_connection_string(self.connection_string)
        return {
            "allocationWeight": self.allocation_weight,
            "applyAllocationPolicy": self.apply_allocation_policy,
            "connectionString": cs,
            "location": self.location,
            "name": self.name,
        }

    @classmethod
    def from_dict(cls, doc: Any, where: str = "linked hub") -> LinkedHub:
        """Parse and check a linked hub from input."""
        input_object(doc, {"allocationWeight", "applyAllocationPolicy", "connectionString", "location", "name"}, where)
        name = hub_host_name(expect(doc.get("name"), str, f"{where}.name"))
        where = f"linked hub {name!r}"
        weight = doc.get("allocationWeight")
        if weight is not None:
            validate_weight(expect(weight, int, f"{where}.allocationWeight"))
        if doc.get("applyAllocationPolicy") is not None:
            expect(doc["applyAllocationPolicy"], bool, f"{where}.applyAllocationPolicy")
        cs = expect(
            doc.get("connectionString") or default_hub_connection_string(name), str, f"{where}.connectionString"
        )
        return cls.from_stored({**doc, "name": name, "location": _location(doc, where), "connectionString": cs})

    @classmethod
    def from_stored(cls, doc: Json) -> LinkedHub:
        """Build from a stored linked hub, without checking it again."""
        weight, apply = doc.get("allocationWeight"), doc.get("applyAllocationPolicy")
        return cls(doc["name"], doc["connectionString"], doc.get("location"), weight, apply)


def _location(doc: Json, where: str) -> str | None:
    """The `location` field of an input object, as a known region name."""
    location = doc.get("location")
    if location is None:
        return None
    from dpsctl.core.regions import normalize_region

    return normalize_region(expect(location, str, f"{where}.location"))


_SERVICE_FIELDS = {
    "name",
    "idScope",
    "allocationPolicy",
    "location",
    "operations",
    "createdDateTimeUtc",
    "serviceKey",
    "historySequence",
}


@dataclass(frozen=True)
class ServiceSettings:
    """The provisioning service instance: ID scope, default allocation policy, location, operations count."""

    id_scope: str
    allocation_policy: str = "hashed"
    location: str | None = None
    name: str = "dpsctl"
    operations: int = 0
    created: str | None = None
    service_key: str | None = None
    history_sequence: int = 0

    @property
    def device_endpoint(self) -> str:
        """The global device endpoint host name devices use."""
        return "global.azure-devices-provisioning.net"

    @property
    def service_host(self) -> str:
        """The service operations host name of this instance."""
        return f"{self.name}.azure-devices-provisioning.net"

    def to_dict(self, *, show_keys: bool = True) -> Json:
        """Stored form of the settings (the ARM-like view is built by the service module)."""
        doc = {
            "name": self.name,
            "idScope": self.id_scope,
            "allocationPolicy": self.allocation_policy,
            "location": self.location,
            "operations": self.operations,
            "createdDateTimeUtc": self.created,
            "historySequence": self.history_sequence,
        }
        if show_keys:
            doc["serviceKey"] = self.service_key
        return doc

    @classmethod
    def from_dict(cls, doc: Any, where: str = "service") -> ServiceSettings:
        """Parse and check imported service settings."""
        input_object(doc, _SERVICE_FIELDS, where)
        location = _location(doc, where)
        id_scope = validate_id_scope(expect(doc.get("idScope"), str, f"{where}.idScope"))
        policy = choice(doc.get("allocationPolicy") or "hashed", SERVICE_POLICIES, f"{where}.allocationPolicy")
        for name, kind in (("name", str), ("operations", int), ("historySequence", int)):
            expect(doc.get(name) or kind(), kind, f"{where}.{name}")
        return cls.from_stored({**doc, "idScope": id_scope, "allocationPolicy": policy, "location": location})

    @classmethod
    def from_stored(cls, doc: Json) -> ServiceSettings:
        """Build from the stored service settings, without checking them again."""
        return cls(
            id_scope=doc["idScope"],
            allocation_policy=doc.get("allocationPolicy") or "hashed",
            location=doc.get("location"),
            name=doc.get("name") or "dpsctl",
            operations=doc.get("operations") or 0,
            created=doc.get("createdDateTimeUtc"),
            service_key=doc.get("serviceKey"),
            history_sequence=doc.get("historySequence") or 0,
        )

    def with_operations(self, added: int) -> ServiceSettings:
        """A copy with `added` more billable operations counted."""
        return replace(self, operations=self.operations + added)
