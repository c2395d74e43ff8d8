"""The simulated IoT hubs' device registries: what each linked hub knows after provisioning."""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from dpsctl.core.clock import format_timestamp, new_etag
from dpsctl.core.errors import InvalidInput, NotFound
from dpsctl.core.ids import hub_host_name
from dpsctl.core.validation import require_named, validate_initial_twin
from dpsctl.store import Transaction

Json = dict[str, Any]


def twin_from_initial(initial_twin: Json | None) -> Json:
    """A device twin's tags and desired properties as set from an initial twin."""
    twin = initial_twin or {}
    return {
        "tags": copy.deepcopy(twin.get("tags") or {}),
        "properties": {"desired": copy.deepcopy((twin.get("properties") or {}).get("desired") or {})},
    }


def device_doc(
    *,
    hub: str,
    device_id: str,
    registration_id: str,
    authentication: Json,
    iot_edge: bool,
    twin: Json,
    now: datetime,
    created: str | None = None,
) -> Json:
    """A hub device identity with its twin, in the IoT Hub REST shape plus the hub it lives in."""
    ts = format_timestamp(now)
    return {
        "deviceId": device_id,
        "hub": hub,
        "registrationId": registration_id,
        "status": "enabled",
        "authentication": authentication,
        "capabilities": {"iotEdge": iot_edge},
        "tags": twin["tags"],
        "properties": {"desired": twin["properties"]["desired"]},
        "etag": new_etag(),
        "createdDateTimeUtc": created or ts,
        "lastUpdatedDateTimeUtc": ts,
    }


def twin_of(doc: Json) -> Json:
    """The tags and desired properties of a stored device."""
    return {
        "tags": copy.deepcopy(doc.get("tags") or {}),
        "properties": {"desired": copy.deepcopy(doc.get("properties", {}).get("desired") or {})},
    }


def find_devices(tx: Transaction, device_id: str, hub: str | None = None) -> list[Json]:
    """Devices with this ID, in one hub or in all of them."""
    if hub is not None:
        doc = tx.get("devices", f"{hub_host_name(hub)}/{device_id}")
        return [doc] if doc else []
    return [d for d in tx.scan("devices") if d["deviceId"].lower() == device_id.lower()]


def get_device(tx: Transaction, device_id: str, hub: str | None = None) -> Json:
    """One device; with no hub given, the ID must be unambiguous."""
    found = find_devices(tx, device_id, hub)
    if not found:
        where = f" in {hub_host_name(hub)}" if hub else " in any linked hub"
        raise NotFound(f"device {device_id!r} not found{where}", hint="see `dpsctl device list`")
    if len(found) > 1:
        raise InvalidInput(
            f"device {device_id!r} exists in several hubs: {', '.join(d['hub'] for d in found)}", hint="pass --hub NAME"
        )
    return found[0]


def list_devices(tx: Transaction, hub: str | None = None) -> list[Json]:
    """All devices, or those of one hub."""
    if hub is not None:
        host = hub_host_name(hub)
        found = tx.find("devices", "hub", host)
        require_named(tx.get("hubs", host) is not None, bool(found), f"IoT hub {host}", "see `dpsctl hub list`")
        return found
    return list(tx.scan("devices"))


def update_twin(tx: Transaction, device_id: str, *, hub: str | None, desired: Any, tags: Any, now: datetime) -> Json:
    """Merge desired properties and tags into a device twin, as a back end would (null removes a key)."""
    doc = get_device(tx, device_id, hub)
    patch = validate_initial_twin(
        {
            k: v
            for k, v in (("tags", tags), ("properties", {"desired": desired} if desired is not None else None))
            if v is not None
        },
        "twin patch",
    )
    twin = twin_of(doc)
    _merge(twin["tags"], patch.get("tags") or {})
    _merge(twin["properties"]["desired"], (patch.get("properties") or {}).get("desired") or {})
    updated = {
        **doc,
        "tags": twin["tags"],
        "properties": twin["properties"],
        "etag": new_etag(),
        "lastUpdatedDateTimeUtc": format_timestamp(now),
    }
    tx.put("devices", updated)
    return updated


def _merge(target: Json, patch: Json) -> None:
    """JSON merge patch (RFC 7386), the semantics of IoT Hub twin updates."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
