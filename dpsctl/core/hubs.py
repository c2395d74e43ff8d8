"""Linked IoT hubs: the hubs the service may assign devices to."""

from __future__ import annotations

from dpsctl.core.errors import Conflict, InvalidInput, NotFound
from dpsctl.core.ids import hub_host_name
from dpsctl.core.service_records import LinkedHub
from dpsctl.core.validation import (
    check_hub_connection_string,
    connection_string_fields,
    default_hub_connection_string,
    validate_weight,
)
from dpsctl.store import Transaction

# Imports inside functions in this module load what only some commands need: every dpsctl process that imports
# the engine would pay for them otherwise (docs/development.md, "Checks that run in CI").

MAX_LINKED_HUBS = 50
# The location of a hub linked without one when the service has none either: the region of the reference's
# example instance (§13). ARM requires a location on every linked hub (IotHubDefinitionDescription).
DEFAULT_HUB_LOCATION = "eastus"


def default_hub_location(tx: Transaction) -> str:
    """Where a hub linked without --location is: the service's location, else DEFAULT_HUB_LOCATION."""
    from dpsctl.core.service_records import ServiceSettings

    doc = tx.get("service", "service")
    location = ServiceSettings.from_stored(doc).location if doc is not None else None
    return location or DEFAULT_HUB_LOCATION


def get_hub(tx: Transaction, name: str) -> LinkedHub:
    """The linked hub `name` (bare name or host name), or NotFound."""
    host = hub_host_name(name)
    doc = tx.get("hubs", host)
    if doc is None:
        raise NotFound(f"IoT hub {host} is not linked", hint="see `dpsctl hub list`, or link it with `dpsctl hub add`")
    return LinkedHub.from_stored(doc)


def list_hubs(tx: Transaction) -> list[LinkedHub]:
    """All linked hubs, by host name."""
    return [LinkedHub.from_stored(doc) for doc in tx.scan("hubs")]


def hub_of_connection_string(cs: str) -> str:
    """The hub a connection string names (its HostName), for linking by connection string alone."""
    host = connection_string_fields(cs).get("hostname")
    if not host:
        raise InvalidInput(
            "the hub connection string has no HostName",
            hint="expected HostName=<hub>.azure-devices.net;SharedAccessKeyName=<policy>;SharedAccessKey=<key>",
        )
    return host


def add_hub(
    tx: Transaction,
    name: str,
    *,
    location: str | None = None,
    weight: int | None = None,
    apply_allocation_policy: bool | None = None,
    connection_string: str | None = None,
) -> LinkedHub:
    """Link a hub; refuses a duplicate or a 51st hub."""
    host = hub_host_name(name)
    if tx.get("hubs", host) is not None:
        raise Conflict(f"IoT hub {host} is already linked", hint=f"change it with `dpsctl hub update {host}`")
    if tx.count("hubs") >= MAX_LINKED_HUBS:
        raise Conflict(f"the service already has {MAX_LINKED_HUBS} linked hubs, the DPS limit")
    hub = _build(host, location or default_hub_location(tx), weight, apply_allocation_policy, connection_string)
    tx.put("hubs", hub.to_dict())
    return hub


def _build(host: str, location: str | None, weight: int | None, apply: bool | None, cs: str | None) -> LinkedHub:
    if weight is not None:
        validate_weight(weight)
    if location is not None:
        from dpsctl.core.regions import normalize_region

        location = normalize_region(location)
    cs = check_hub_connection_string(cs, host) if cs else default_hub_connection_string(host)
    return LinkedHub(host, cs, location, weight, apply)


def update_hub(
    tx: Transaction,
    name: str,
    *,
    location: str | None = None,
    weight: int | None = None,
    apply_allocation_policy: bool | None = None,
    connection_string: str | None = None,
) -> LinkedHub:
    """Change a linked hub's location, weight, policy participation or connection string."""
    hub = get_hub(tx, name)
    hub = _build(
        hub.name,
        location if location is not None else (hub.location or default_hub_location(tx)),
        weight if weight is not None else hub.allocation_weight,
        apply_allocation_policy if apply_allocation_policy is not None else hub.apply_allocation_policy,
        connection_string if connection_string is not None else hub.connection_string,
    )
    tx.put("hubs", hub.to_dict())
    return hub


def hub_users(tx: Transaction, host: str) -> list[str]:
    """Entries of the enrollment list that name this hub."""
    users = [f"enrollment {d['registrationId']}" for d in tx.scan("enrollments") if host in d.get("iotHubs", [])]
    users += [f"enrollment group {d['enrollmentGroupId']}" for d in tx.scan("groups") if host in d.get("iotHubs", [])]
    return users


def delete_hub(tx: Transaction, name: str, *, force: bool = False) -> LinkedHub:
    """Unlink a hub; refused while enrollments name it, unless forced (then they lose it)."""
    hub = get_hub(tx, name)
    users = hub_users(tx, hub.name)
    if users and not force:
        shown = ", ".join(users[:3]) + (f" and {len(users) - 3} more" if len(users) > 3 else "")
        raise Conflict(
            f"IoT hub {hub.name} is still named by {shown}", hint="change those entries first, or pass --force"
        )
    if users:
        for kind in ("enrollments", "groups"):
            for doc in list(tx.scan(kind)):
                if hub.name in doc.get("iotHubs", []):
                    tx.put(kind, {**doc, "iotHubs": [h for h in doc["iotHubs"] if h != hub.name]})
    tx.delete("hubs", hub.name)
    return hub


def resolve_hubs(tx: Transaction, names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Host names of hubs an enrollment names; each must be linked."""
    hosts: list[str] = []
    for name in names:
        host = hub_host_name(name)
        if tx.get("hubs", host) is None:
            raise InvalidInput(
                f"IoT hub {host} is not linked to the service", hint=f"link it first: dpsctl hub add {host}"
            )
        if host not in hosts:
            hosts.append(host)
    return tuple(hosts)
