"""The records a decision writes: the device in its hub's registry and the registration record (reprovisioning)."""

from __future__ import annotations

from datetime import datetime

from dpsctl.core.clock import format_timestamp, new_registration_etag
from dpsctl.core.engine.outcome import ERROR_DISABLED, ERROR_NO_HUB
from dpsctl.core.engine.plan import Allocated, Plan
from dpsctl.core.engine.request import Entry
from dpsctl.core.errors import DpsError
from dpsctl.core.registrations import EntryRef, Registration, save_registration
from dpsctl.store import Transaction

# Imports inside functions in this module load what only some commands need: every dpsctl process that imports
# the engine would pay for them otherwise (docs/development.md, "Checks that run in CI").


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


def assign(tx: Transaction, plan: Plan, decision: Allocated, now: datetime) -> Registration:
    """Create or move the device in the hub registries and write its registration record."""
    from dpsctl.core.devices import device_doc, twin_from_initial, twin_of

    assert plan.match is not None
    match, previous, trace = plan.match, plan.previous, plan.trace
    entry, hub, webhook_twin = match.entry, decision.hub, decision.initial_twin
    reg_id = _record_spelling(plan.registration_id, previous, entry)
    device_id = getattr(entry, "device_id", None) or reg_id
    current = plan.current  # read by the plan in this transaction, or checked unchanged since
    old_key = f"{current}/{previous.current_device_id}" if current and previous else None
    old_device = tx.get("devices", old_key) if old_key else None
    if current and old_device is None:
        current = None  # the device was removed from its hub meanwhile: provision it afresh
    policy = entry.reprovision_policy
    substatus, twin_source = decide_reprovision(
        previous_hub=current,
        initial_hub=previous.initial_hub if previous else None,
        new_hub=hub,
        update_hub=policy.update_hub_assignment,
        migrate=policy.migrate_device_data,
        previous_substatus=previous.previous_substatus if previous else None,
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
        trace.note(f"device {previous.current_device_id if previous else None!r} removed from {current}")
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
    attestation = dict(match.attestation_state)
    if "tpm" in attestation:
        from dpsctl.core.tpm import seal_to_endorsement_key

        # The hub key travels to the device encrypted to its endorsement key, as DPS's authenticationKey does.
        attestation["tpm"] = {
            "authenticationKey": seal_to_endorsement_key(
                entry.attestation.endorsement_key or "", match.device_key or ""
            )
        }
    record = Registration(
        registration_id=reg_id,
        status="assigned",
        created=(previous.created if previous else None) or ts,
        assigned_hub=hub,
        device_id=device_id,
        substatus=substatus,
        last_updated=ts,
        etag=new_registration_etag(),
        payload=decision.payload,
        attestation=attestation,
        current_hub=hub,
        current_device_id=device_id,
        initial_hub=(previous.initial_hub if previous else None) if current else hub,
        entry=EntryRef(entry.is_group, entry.id),
    )
    save_registration(tx, record)
    return record


def _record_spelling(reg_id: str, previous: Registration | None, entry: Entry) -> str:
    """The spelling a registration keeps: registration IDs are case-insensitive, hub device IDs are not.

    One registration has one record and one hub device, so `SYMDEV` after `symdev` is `symdev` again: the record's
    spelling, else the individual enrollment's, else the one the device sent first (docs/choices.md).
    """
    if previous and previous.registration_id:
        return previous.registration_id
    return reg_id if entry.is_group else entry.id


def refusal_record(plan: Plan, status: str, error: DpsError, entry: Entry | None, now: datetime) -> Registration:
    """The registration record after a refusal (the caller writes it when it names an entry: attempts that never
    reached an entry, and 401s, leave none)."""
    reg_id, previous = plan.registration_id, plan.previous
    if status == "unauthorized" or entry is None:
        return Registration(reg_id, status)
    ts = format_timestamp(now)
    return Registration(
        registration_id=_record_spelling(reg_id, previous, entry),
        status=status,
        created=(previous.created if previous else None) or ts,
        error_code=ERROR_DISABLED if status == "disabled" else ERROR_NO_HUB,
        error_message=error.message,
        last_updated=ts,
        etag=new_registration_etag(),
        attestation=dict(plan.match.attestation_state) if plan.match else {},
        # The device still lives where it was: keep that for the next attempt's reprovisioning decision.
        current_hub=previous.current_hub if previous else None,
        current_device_id=previous.current_device_id if previous else None,
        initial_hub=previous.initial_hub if previous else None,
        # A refused record has no substatus, yet a later same-hub registration must report the last assignment's.
        last_substatus=previous.previous_substatus if previous else None,
        entry=EntryRef(entry.is_group, entry.id),
    )
