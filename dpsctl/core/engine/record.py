"""The records a decision writes: the device in its hub's registry and the registration record (reprovisioning)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dpsctl.core.attestation import Trace
from dpsctl.core.clock import format_timestamp, new_registration_etag
from dpsctl.core.engine.outcome import ERROR_DISABLED, ERROR_NO_HUB
from dpsctl.core.engine.plan import current_hub
from dpsctl.core.engine.request import Entry, Json
from dpsctl.core.errors import DpsError
from dpsctl.core.matching import Match
from dpsctl.store import Transaction


def decide_reprovision(
    *,
    previous_hub: str | None,
    initial_hub: str | None,
    new_hub: str,
    update_hub: bool,
    migrate: bool,
    previous_substatus: str | None,
) -> tuple[str, str]:
    """(substatus, twin source) for a registration; twin source is 'initial', 'migrate' or 'keep'.

    Documented in docs/provisioning.md: the same hub with migrate keeps the previous substatus (DPS keeps
    `initialAssignment` on repeated registrations); a reset on the same hub is a factory reset (`deviceDataReset`);
    moving back to the hub of the initial assignment is `reprovisionedToInitialAssignment`.
    """
    if previous_hub is None:
        return "initialAssignment", "initial"
    if not update_hub or new_hub == previous_hub:
        if update_hub and not migrate:
            return "deviceDataReset", "initial"
        return previous_substatus or "initialAssignment", "keep"
    if new_hub == initial_hub:
        return "reprovisionedToInitialAssignment", "migrate" if migrate else "initial"
    return ("deviceDataMigrated", "migrate") if migrate else ("deviceDataReset", "initial")


def assign(
    tx: Transaction,
    reg_id: str,
    match: Match,
    previous: Json | None,
    hub: str,
    webhook_twin: Json | None,
    payload: Any,
    now: datetime,
    trace: Trace,
) -> Json:
    """Create or move the device in the hub registries and write the registration record."""
    from dpsctl.core.devices import device_doc, twin_from_initial, twin_of

    entry = match.entry
    reg_id = _record_spelling(reg_id, previous, entry)
    device_id = getattr(entry, "device_id", None) or reg_id
    current = current_hub(tx, previous)
    old_key = f"{current}/{previous.get('_currentDeviceId')}" if current and previous else None
    old_device = tx.get("devices", old_key) if old_key else None
    if current and old_device is None:
        current = None  # the device was removed from its hub meanwhile: provision it afresh
    policy = entry.reprovision_policy
    substatus, twin_source = decide_reprovision(
        previous_hub=current,
        initial_hub=(previous or {}).get("_initialHub"),
        new_hub=hub,
        update_hub=policy.update_hub_assignment,
        migrate=policy.migrate_device_data,
        previous_substatus=(previous or {}).get("substatus") or (previous or {}).get("_substatus"),
    )
    # DOC:concepts-custom-allocation: when reprovisioning, the webhook's initialTwin counts only if the hub changes and
    # the policy resets to the initial config; "in all other cases, DPS ignores the initialTwin property".
    if webhook_twin is not None and current is not None and not (hub != current and twin_source == "initial"):
        trace.note(
            "the webhook's initialTwin is ignored: on reprovisioning DPS uses it only when the hub changes and the data is reset"
        )
        webhook_twin = None
    initial = webhook_twin if webhook_twin is not None else entry.initial_twin
    twin = twin_of(old_device) if twin_source in ("keep", "migrate") and old_device else twin_from_initial(initial)
    source = (
        "the webhook's initial twin"
        if webhook_twin is not None
        else ("the entry's initial twin" if entry.initial_twin else "nothing (the entry has no initial twin): empty")
    )
    trace.note(
        {
            "initial": f"twin: set from {source}",
            "migrate": f"twin: migrated from {current}",
            "keep": "twin: kept as it is on the hub",
        }[twin_source]
    )
    trace.ok(f"substatus: {substatus}")
    same_place = old_key is not None and old_key.lower() == f"{hub}/{device_id}".lower()
    if old_key and old_device is not None and not same_place:
        tx.delete("devices", old_key)
        trace.note(f"device {previous.get('_currentDeviceId')!r} removed from {current}")  # type: ignore[union-attr]
    tx.put(
        "devices",
        device_doc(
            hub=hub,
            device_id=device_id,
            registration_id=reg_id,
            authentication=match.hub_auth,
            iot_edge=entry.iot_edge,
            twin=twin,
            now=now,
            created=old_device.get("createdDateTimeUtc") if same_place and old_device else None,
        ),
    )
    ts = format_timestamp(now)
    state: Json = {
        "registrationId": reg_id,
        "createdDateTimeUtc": (previous or {}).get("createdDateTimeUtc") or ts,
        "assignedHub": hub,
        "deviceId": device_id,
        "status": "assigned",
        "substatus": substatus,
        "lastUpdatedDateTimeUtc": ts,
        "etag": new_registration_etag(),
    }
    if payload is not None:
        state["payload"] = payload
    state.update(match.attestation_state)
    if "tpm" in state:
        from dpsctl.core.tpm import seal_to_endorsement_key

        # The hub key travels to the device encrypted to its endorsement key, as DPS's authenticationKey does.
        state["tpm"] = {
            "authenticationKey": seal_to_endorsement_key(
                entry.attestation.endorsement_key or "", match.device_key or ""
            )
        }
    state["_currentHub"] = hub
    state["_currentDeviceId"] = device_id
    state["_initialHub"] = (previous or {}).get("_initialHub") if current else hub
    state["_entry"] = {"group": entry.is_group, "id": entry.id}
    tx.put("registrations", state)
    return state


def _record_spelling(reg_id: str, previous: Json | None, entry: Entry) -> str:
    """The spelling a registration keeps: registration IDs are case-insensitive, hub device IDs are not.

    One registration has one record and one hub device, so `SYMDEV` after `symdev` is `symdev` again: the record's
    spelling, else the individual enrollment's, else the one the device sent first (docs/choices.md).
    """
    if previous and previous.get("registrationId"):
        return str(previous["registrationId"])
    return reg_id if entry.is_group else entry.id


def refusal_state(
    tx: Transaction | None,
    reg_id: str,
    previous: Json | None,
    status: str,
    error: DpsError,
    entry: Entry | None,
    match: Match | None,
    now: datetime,
) -> Json:
    """The registration record after a refusal, written in `tx` (None: only built); attempts that never reached an entry leave none (401)."""
    if status == "unauthorized" or entry is None:
        return {"registrationId": reg_id, "status": status}
    reg_id = _record_spelling(reg_id, previous, entry)
    ts = format_timestamp(now)
    state: Json = {
        "registrationId": reg_id,
        "createdDateTimeUtc": (previous or {}).get("createdDateTimeUtc") or ts,
        "status": status,
        "errorCode": ERROR_DISABLED if status == "disabled" else ERROR_NO_HUB,
        "errorMessage": error.message,
        "lastUpdatedDateTimeUtc": ts,
        "etag": new_registration_etag(),
    }
    if match is not None:
        state.update(match.attestation_state)
    # The device still lives where it was: keep that for the next attempt's reprovisioning decision.
    for key in ("_currentHub", "_currentDeviceId", "_initialHub"):
        if previous and previous.get(key):
            state[key] = previous[key]
    # A refused record has no substatus, yet a later same-hub registration must report the last assignment's.
    if previous and (previous.get("substatus") or previous.get("_substatus")):
        state["_substatus"] = previous.get("substatus") or previous["_substatus"]
    state["_entry"] = {"group": entry.is_group, "id": entry.id}
    if tx is not None:
        tx.put("registrations", state)
    return state
