"""The provisioning engine: match an enrollment, attest, allocate, reprovision, update the hub, record.

`provision()` is what `dpsctl provision` and a network server both call. It never raises for what a device
does wrong (bad credential, disabled entry, no hub): those are outcomes, recorded and returned. It raises
only for input errors of the caller (an invalid registration ID, an unknown region).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Union

from dpsctl.core import attestation as att
from dpsctl.core.attestation import Credential, SasCredential, TpmCredential, Trace, X509Credential
from dpsctl.core.clock import format_timestamp, new_operation_id, new_registration_etag
from dpsctl.core.errors import AllocationFailed, Disabled, DpsError, InvalidInput, Unauthorized
from dpsctl.core.ids import validate_registration_id
from dpsctl.core.matching import Match, Refused, match_and_attest
from dpsctl.core.models import EnrollmentGroup, IndividualEnrollment, LinkedHub, ServiceSettings
from dpsctl.core.service import load_service, save_service
from dpsctl.store import Transaction

Entry = Union[IndividualEnrollment, EnrollmentGroup]
Json = dict[str, Any]

HISTORY_LIMIT = 1000
ERROR_UNAUTHORIZED = 401002
ERROR_NO_HUB = 400208
ERROR_DISABLED = 401003  # dpsctl's choice: DPS reports status "disabled" but documents no code for it


@dataclass(frozen=True)
class RegistrationRequest:
    """One device registration attempt."""

    credential: Credential
    registration_id: str | None = None
    payload: Any = None
    region: str | None = None


@dataclass
class ProvisionResult:
    """What the device is told, what was decided and why."""

    status: str  # assigned | failed | disabled | unauthorized
    registration_id: str
    operation: Json
    explain: list[dict[str, str]]
    error: DpsError | None = None
    connection_string: str | None = None

    @property
    def assigned(self) -> bool:
        """True when the device got a hub."""
        return self.status == "assigned"


# --------------------------------------------------------------------------- entry point


def provision(tx: Transaction, request: RegistrationRequest, now: datetime, *, webhook_timeout: float = 10.0) -> ProvisionResult:
    """Run one registration against the store in `tx` (the caller commits, or discards for a dry run)."""
    service = load_service(tx, now)
    trace = Trace()
    reg_id = _registration_id(request)
    if request.payload is not None:
        from dpsctl.core.jsondepth import check_value

        # A payload nested too deep would fail later (deepcopy, store write, output) with RecursionError.
        check_value(request.payload, "the registration payload")
    if request.region is not None:
        from dpsctl.core.regions import normalize_region

        # Checked before anything else: a mistyped region is the caller's error whatever the entry's policy,
        # not something to ignore (hashed, static) or to find only after a device has been attested.
        normalize_region(request.region)
    trace.note(f"device {reg_id!r} registers with {att.credential_type(request.credential)} attestation in ID scope {service.id_scope}")
    previous = tx.get("registrations", reg_id)
    match: Match | None = None
    try:
        match = match_and_attest(tx, service, reg_id, request.credential, now, trace)
        if not match.entry.enabled:
            noun = "enrollment group" if match.entry.is_group else "individual enrollment"
            trace.fail(f"{noun} {match.entry.id!r} is disabled")
            raise Refused(Disabled(f"{noun} {match.entry.id!r} is disabled", hint="enable it with --enabled, or the device stays blocked"), match.entry)
        hub, twin_override, payload = _allocate(tx, service, reg_id, match, previous, request, trace, webhook_timeout)
        state = _assign(tx, reg_id, match, previous, hub, twin_override, payload, now, trace)
        status = "assigned"
        error: DpsError | None = None
    except Refused as refused:
        error = refused.error
        status = {Unauthorized: "unauthorized", Disabled: "disabled"}.get(type(error), "failed")
        entry = refused.entry or (match.entry if match else None)
        state = _refusal_state(tx, reg_id, previous, status, error, entry, match, now)
    result = _result(reg_id, status, state, trace, error, match, now)
    _record_attempt(tx, service, now, reg_id, request, status, state, error, match)
    return result


@dataclass
class Diagnosis:
    """Which enrollment entry a credential would match, and every check on the way (nothing is written)."""

    registration_id: str
    entry: Entry | None
    explain: list[dict[str, str]]
    error: DpsError | None


def diagnose(tx: Transaction, request: RegistrationRequest, now: datetime) -> Diagnosis:
    """Run matching and attestation only: what `cert check` and `keys check` report before a device connects."""
    service = load_service(tx, now)
    trace = Trace()
    reg_id = _registration_id(request)
    try:
        match = match_and_attest(tx, service, reg_id, request.credential, now, trace)
    except Refused as refused:
        return Diagnosis(reg_id, refused.entry, trace.steps, refused.error)
    if not match.entry.enabled:
        trace.fail(f"{'enrollment group' if match.entry.is_group else 'individual enrollment'} {match.entry.id!r} is disabled")
        return Diagnosis(reg_id, match.entry, trace.steps, Disabled(f"{match.entry.id!r} is disabled"))
    return Diagnosis(reg_id, match.entry, trace.steps, None)


def _registration_id(request: RegistrationRequest) -> str:
    """The registration ID: given, else the certificate CN (X.509), the TPM default, or the SAS token's resource."""
    cred = request.credential
    reg_id = request.registration_id
    if reg_id is None and isinstance(cred, X509Credential):
        from dpsctl.core import x509

        reg_id = x509.common_name(cred.chain[0])
        if not reg_id:
            raise InvalidInput("the device certificate has no subject CN, so it has no registration ID")
    if reg_id is None and isinstance(cred, TpmCredential):
        from dpsctl.core.tpm import default_registration_id

        reg_id = default_registration_id(cred.endorsement_key)
    if reg_id is None and isinstance(cred, SasCredential):
        reg_id = _registration_id_from_token(cred.token)
    if reg_id is None:
        raise InvalidInput("the registration ID is missing", hint="pass --registration-id ID")
    return validate_registration_id(reg_id)


def _registration_id_from_token(token: str) -> str | None:
    """The registration ID named in a SAS token's `sr`, when the caller did not give one."""
    from urllib.parse import unquote

    from dpsctl.core.sas import parse_sas_token

    try:
        resource = unquote(parse_sas_token(token).sr)
    except InvalidInput:
        return None
    parts = resource.split("/")
    return parts[2] if len(parts) == 3 and parts[1].lower() == "registrations" else None


# --------------------------------------------------------------------------- allocation


def _current_hub(tx: Transaction, previous: Json | None) -> str | None:
    """The hub the device lives in now, if it is still linked."""
    hub = (previous or {}).get("_currentHub")
    return hub if hub and tx.get("hubs", hub) is not None else None


def _allocate(
    tx: Transaction,
    service: ServiceSettings,
    reg_id: str,
    match: Match,
    previous: Json | None,
    request: RegistrationRequest,
    trace: Trace,
    webhook_timeout: float,
) -> tuple[str, Json | None, Any]:
    """Choose the hub; returns (hub, initial twin from a webhook or None, payload for the device)."""
    from dpsctl.core import allocation

    entry = match.entry
    linked = tx.memo("hubs", "linked", lambda: [LinkedHub.from_dict(d) for d in tx.scan("hubs")])
    if entry.iot_hubs:
        candidates = [h for h in linked if h.name in entry.iot_hubs]
        trace.note(f"candidate hubs (named by the entry): {', '.join(h.name for h in candidates) or 'none'}")
    else:
        candidates = [h for h in linked if h.applies_policy]
        trace.note(f"candidate hubs (all linked hubs that apply allocation policy): {', '.join(h.name for h in candidates) or 'none'}")
    policy = entry.allocation_policy or service.allocation_policy
    trace.note(f"allocation policy: {policy} ({'set on the entry' if entry.allocation_policy else 'the service default'})")
    current = _current_hub(tx, previous)
    stay = current is not None and not entry.reprovision_policy.update_hub_assignment
    if stay:
        trace.note(f"reprovision policy 'never': the device stays on {current}")
    choices = [allocation.HubChoice(h.name, h.weight, h.location) for h in candidates]
    try:
        if policy == "custom":
            hubs = [current] if stay else [h.name for h in candidates]
            return _custom(entry, reg_id, match, hubs, current, previous, request.payload, trace, webhook_timeout)
        if stay:
            return current, None, None  # type: ignore[return-value]
        if not choices:
            raise AllocationFailed("no linked IoT hub is available for this device", hint="link one with `dpsctl hub add NAME`")
        if policy == "static":
            hub = allocation.static(choices)
        elif policy == "geoLatency":
            region = request.region or service.location
            if region is None:
                trace.note("geoLatency: neither --region nor a service location is set; hashing among the candidates instead")
                hub = allocation.hashed(reg_id, choices)
            else:
                from dpsctl.core.regions import normalize_region

                region = normalize_region(region)
                hub = allocation.geo_latency(reg_id, choices, region)
                trace.note(f"geoLatency: device region {region}; hub locations: " + ", ".join(f"{h.name}={h.location}" for h in candidates))
        else:
            hub = allocation.hashed(reg_id, choices)
            trace.note("hashed: weighted rendezvous hash of the registration ID; weights: " + ", ".join(f"{h.name}={h.weight}" for h in candidates))
    except AllocationFailed as exc:
        trace.fail(f"allocation failed: {exc.message}")
        raise Refused(exc, entry) from None
    trace.ok(f"assigned hub: {hub}")
    return hub, None, None


def _custom(
    entry: Entry,
    reg_id: str,
    match: Match,
    hubs: list[str],
    current: str | None,
    previous: Json | None,
    payload: Any,
    trace: Trace,
    timeout: float,
) -> tuple[str, Json | None, Any]:
    from dpsctl.core.custom_allocation import build_allocation_request, call_command, call_webhook, redacted_url

    custom = entry.custom_allocation
    if not hubs:
        exc = AllocationFailed("no linked IoT hub is available for custom allocation")
        trace.fail(exc.message)
        raise Refused(exc, entry)
    body = build_allocation_request(
        enrollment=entry.to_dict(show_keys=False),
        is_group=entry.is_group,
        registration_id=reg_id,
        linked_hubs=hubs,
        current_hub=current,
        current_device_id=(previous or {}).get("_currentDeviceId") if current else None,
        attestation=match.runtime_attestation,
        payload=payload,
    )
    try:
        if custom and custom.webhook_url:
            trace.note(f"custom allocation: POST to {redacted_url(custom.webhook_url)} with linkedHubs {hubs}")
            answer = call_webhook(custom.webhook_url, body, timeout=timeout)
        elif custom and custom.allocation_command:
            trace.note(f"custom allocation: running the allocation command with linkedHubs {hubs}")
            answer = call_command(custom.allocation_command, body, timeout=timeout)
        else:
            raise AllocationFailed(f"entry {entry.id!r} uses custom allocation but has no webhook URL or allocation command")
    except AllocationFailed as exc:
        trace.fail(f"custom allocation failed: {exc.message}")
        raise Refused(exc, entry) from None
    trace.ok(f"custom allocation chose {answer.iot_hub_host_name}" + (" and returned an initial twin" if answer.initial_twin else ""))
    return answer.iot_hub_host_name, answer.initial_twin, answer.payload


# --------------------------------------------------------------------------- reprovisioning and hub registry


def decide_reprovision(*, previous_hub: str | None, initial_hub: str | None, new_hub: str, update_hub: bool, migrate: bool, previous_substatus: str | None) -> tuple[str, str]:
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


def _assign(
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
    current = _current_hub(tx, previous)
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
        trace.note("the webhook's initialTwin is ignored: on reprovisioning DPS uses it only when the hub changes and the data is reset")
        webhook_twin = None
    initial = webhook_twin if webhook_twin is not None else entry.initial_twin
    twin = twin_of(old_device) if twin_source in ("keep", "migrate") and old_device else twin_from_initial(initial)
    source = "the webhook's initial twin" if webhook_twin is not None else ("the entry's initial twin" if entry.initial_twin else "nothing (the entry has no initial twin): empty")
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
        state["tpm"] = {"authenticationKey": seal_to_endorsement_key(entry.attestation.endorsement_key or "", match.device_key or "")}
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


def _refusal_state(tx: Transaction, reg_id: str, previous: Json | None, status: str, error: DpsError, entry: Entry | None, match: Match | None, now: datetime) -> Json:
    """The registration record after a refusal; attempts that never reached an entry leave none (401)."""
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
    tx.put("registrations", state)
    return state


# --------------------------------------------------------------------------- results and history


def _result(reg_id: str, status: str, state: Json, trace: Trace, error: DpsError | None, match: Match | None, now: datetime) -> ProvisionResult:
    from dpsctl.core.registrations import public_registration

    if status == "unauthorized":
        operation: Json = {
            "errorCode": ERROR_UNAUTHORIZED,
            "trackingId": str(uuid.uuid4()),
            "message": error.message if error else "Unauthorized",
            "timestampUtc": format_timestamp(now),
        }
        return ProvisionResult(status, reg_id, operation, trace.steps, error)
    public = public_registration(state)
    operation = {"operationId": new_operation_id(), "status": status, "registrationState": public}
    cs = None
    if status == "assigned":
        cs = f"HostName={state['assignedHub']};DeviceId={state['deviceId']};"
        cs += "x509=true" if match and match.device_key is None else f"SharedAccessKey={match.device_key if match else ''}"
    return ProvisionResult(status, reg_id, operation, trace.steps, error, cs)


def _record_attempt(
    tx: Transaction,
    service: ServiceSettings,
    now: datetime,
    reg_id: str,
    request: RegistrationRequest,
    status: str,
    state: Json,
    error: DpsError | None,
    match: Match | None,
) -> None:
    """Count the operation and append the attempt to the bounded history (the oldest entry falls out)."""
    from dataclasses import replace

    service = load_service(tx, now)
    sequence = service.history_sequence + 1
    entry = match.entry if match else None
    tx.put(
        "history",
        {
            "sequence": sequence,
            "timestampUtc": format_timestamp(now),
            "registrationId": reg_id,
            "attestation": att.credential_type(request.credential),
            "status": status,
            "substatus": state.get("substatus"),
            "assignedHub": state.get("assignedHub"),
            "enrollment": None if entry is None else f"{'group' if entry.is_group else 'individual'}:{entry.id}",
            "errorMessage": error.message if error else None,
        },
    )
    if sequence > HISTORY_LIMIT:
        tx.delete("history", str(sequence - HISTORY_LIMIT))
    save_service(tx, replace(service, history_sequence=sequence, operations=service.operations + (1 if status == "assigned" else 0)))


def history(tx: Transaction, registration_id: str | None = None) -> list[Json]:
    """Recent registration attempts, oldest first (refused ones included)."""
    docs = tx.find("history", "registration", registration_id) if registration_id else list(tx.scan("history"))
    return sorted(docs, key=lambda d: d["sequence"])
