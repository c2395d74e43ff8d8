"""The provisioning engine: match an enrollment, attest, allocate, reprovision, update the hub, record.

One way through, in phases (docs/provisioning.md, "Provisioning in phases"):
1. `plan`: match and attest on a snapshot, and note every record the decision relies on;
2. `allocate`: a custom allocation (webhook or command) runs here, with no transaction held;
3. `settle`: in a short write transaction, check that those records are unchanged, then allocate (the fast
   policies) and commit; when they changed, decide again.

`provision_phased()` runs the phases over a `Transactions` source (a store, or a server's own); `provision()`
runs all three in the caller's one transaction (dry runs, and callers that hold a transaction anyway). Neither
raises for what a device does wrong (bad credential, disabled entry, no hub): those are outcomes, recorded and
returned. They raise only for input errors of the caller (an invalid registration ID, an unknown region).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dpsctl.core import attestation as att
from dpsctl.core.attestation import Credential, SasCredential, TpmCredential, Trace, X509Credential
from dpsctl.core.checks import Check
from dpsctl.core.clock import format_timestamp, new_history_id, new_operation_id, new_registration_etag
from dpsctl.core.errors import AllocationFailed, Disabled, DpsError, InvalidInput, RegistrationConflict, Unauthorized
from dpsctl.core.ids import validate_registration_id
from dpsctl.core.matching import Match, Refused, match_and_attest
from dpsctl.core.models import EnrollmentGroup, IndividualEnrollment
from dpsctl.core.service import count_operations, load_service
from dpsctl.core.service_records import LinkedHub, ServiceSettings
from dpsctl.core.transactions import StoreTransactions, Transactions
from dpsctl.store import Transaction

__all__ = [
    "Plan",
    "ProvisionResult",
    "RegistrationRequest",
    "StoreTransactions",
    "Transactions",
    "allocate",
    "check_request",
    "commit_plan",
    "plan_registration",
    "provision",
    "provision_phased",
    "provision_planned",
    "settle",
]

Entry = IndividualEnrollment | EnrollmentGroup
Json = dict[str, Any]

HISTORY_LIMIT = 1000
HISTORY_TRIM_EVERY = 32  # on average, one registration in 32 trims the history back to HISTORY_LIMIT
ALLOCATION_ROUNDS = 2  # a custom allocation is made again once when what it relied on changed, then refused
ERROR_UNAUTHORIZED = 401002
ERROR_CONFLICT = 409203  # what DPS answers to concurrent registrations of one device ("Precondition failed")
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
    explain: list[Check]
    error: DpsError | None = None
    connection_string: str | None = None

    @property
    def assigned(self) -> bool:
        """True when the device got a hub."""
        return self.status == "assigned"


# --------------------------------------------------------------------------- entry points


# (hub, initial twin from the allocator, payload), or a refusal
Decision = tuple[str, Json | None, Any] | Refused


@dataclass
class Plan:
    """One registration decided from one snapshot: the match (or refusal), the allocation inputs, and what it relied on.

    `relied_on` holds each record the decision read, as read (None: it did not exist), and `hubs` every linked
    hub; `settle` commits the plan only when all of them are still the same.
    """

    registration_id: str
    request: RegistrationRequest
    service: ServiceSettings
    previous: Json | None
    trace: Trace
    hubs: list[Json]
    relied_on: dict[tuple[str, str], Json | None] = field(default_factory=dict)
    match: Match | None = None
    refused: Refused | None = None
    policy: str | None = None
    candidates: list[LinkedHub] = field(default_factory=list)
    current: str | None = None  # the hub the device is in now, if that hub is still linked
    stay: bool = False  # reprovision policy 'never' keeps the device where it is

    @property
    def needs_allocator(self) -> bool:
        """True when a custom allocation (webhook or command) must run before this plan can be committed."""
        return self.refused is None and self.match is not None and self.policy == "custom"

    @property
    def authenticated(self) -> bool:
        """True when the device proved its credential against its entry (refusals after that are recorded anyway)."""
        return self.match is not None


def provision(
    tx: Transaction,
    request: RegistrationRequest,
    now: datetime,
    *,
    webhook_timeout: float = 10.0,
    record_refusals: bool = True,
) -> ProvisionResult:
    """Run one registration in the caller's transaction `tx`, a custom allocation included (the caller commits, or discards)."""
    reg_id = check_request(request)
    return commit_plan(
        tx,
        plan_registration(tx, request, now, registration_id=reg_id),
        None,
        now,
        webhook_timeout=webhook_timeout,
        record_refusals=record_refusals,
    )


def provision_phased(
    source: Transactions,
    request: RegistrationRequest,
    now: Callable[[], datetime],
    *,
    webhook_timeout: float = 10.0,
    record_refusals: bool = True,
) -> ProvisionResult:
    """Run one registration in phases: plan on a read snapshot, allocate with no transaction held, settle in a short write.

    A custom allocation runs again once when the enrollment, its group, the linked hubs or the device's registration
    changed while it ran; if they changed again, the result is a refusal with `RegistrationConflict` (recorded in
    the history). With `record_refusals=False` a device that does not prove its credential writes nothing to the
    store (unauthorized, or refused by a disabled individual enrollment before attesting) and takes no write lock.
    Raises only for the caller's input errors (see `check_request`).
    """
    reg_id = check_request(request)
    with source.read() as tx:
        current = (
            plan_registration(tx, request, now(), registration_id=reg_id)
            if tx.get("service", "service") is not None
            else None
        )
    if current is None:
        # A store without service settings yet: the first write creates them (planning in the write is as valid).
        with source.write() as tx:
            current = plan_registration(tx, request, now(), registration_id=reg_id)
    return provision_planned(source, current, now, webhook_timeout=webhook_timeout, record_refusals=record_refusals)


def provision_planned(
    source: Transactions,
    plan: Plan,
    now: Callable[[], datetime],
    *,
    webhook_timeout: float = 10.0,
    record_refusals: bool = True,
    alongside: Callable[[Transaction, ProvisionResult], None] | None = None,
) -> ProvisionResult:
    """The rest of `provision_phased` for a plan the caller made on a snapshot it read anyway (the CLI reads the
    ID scope it builds the device's credential for in the same snapshot): allocate, then settle, deciding again once.

    `alongside` writes the caller's own record of the outcome in the same transaction as the outcome (a server's
    operation, which a device polls): both are committed, or neither. It is not called for an unrecorded refusal.
    """
    current = plan
    if not current.authenticated and not record_refusals:
        return _unrecorded_result(current, now())
    for round_ in range(ALLOCATION_ROUNDS):
        decision = allocate(current, webhook_timeout) if current.needs_allocator else None
        with source.write() as tx:
            outcome = settle(
                tx,
                current,
                decision,
                now(),
                webhook_timeout=webhook_timeout,
                record_refusals=record_refusals,
                last=round_ == ALLOCATION_ROUNDS - 1,
            )
            if isinstance(outcome, ProvisionResult) and alongside is not None:
                alongside(tx, outcome)
        if isinstance(outcome, ProvisionResult):
            return outcome
        current = outcome
    raise AssertionError("settle(last=True) always returns a result")  # pragma: no cover


def check_request(request: RegistrationRequest) -> str:
    """The request's registration ID, after the checks that make a request the caller's error (raise InvalidInput)."""
    reg_id = _registration_id(request)
    if request.payload is not None:
        from dpsctl.core.untrusted_json import check_value

        # A payload nested too deep would fail later (deepcopy, store write, output) with RecursionError.
        check_value(request.payload, "the registration payload")
    if request.region is not None:
        from dpsctl.core.regions import normalize_region

        # Checked before anything else: a mistyped region is the caller's error whatever the entry's policy,
        # not something to ignore (hashed, static) or to find only after a device has been attested.
        normalize_region(request.region)
    return reg_id


def plan_registration(
    tx: Transaction,
    request: RegistrationRequest,
    now: datetime,
    *,
    registration_id: str | None = None,
    trace: Trace | None = None,
) -> Plan:
    """Phase 1: match and attest on the snapshot in `tx`, and note the records the decision relies on (writes nothing*).

    *Except the service settings of a store that has none, in a writable transaction.
    """
    reg_id = registration_id or check_request(request)
    service = load_service(tx, now)
    trace = trace or Trace()
    trace.note(
        f"device {reg_id!r} registers with {att.credential_type(request.credential)} attestation in ID scope {service.id_scope}"
    )
    hubs = tx.memo("hubs", "docs", lambda: list(tx.scan("hubs")))
    result = Plan(reg_id, request, service, tx.get("registrations", reg_id), trace, hubs)
    try:
        result.match = match_and_attest(tx, service, reg_id, request.credential, now, trace)
        entry = result.match.entry
        if not entry.enabled:
            noun = "enrollment group" if entry.is_group else "individual enrollment"
            trace.fail(f"{noun} {entry.id!r} is disabled")
            raise Refused(
                Disabled(
                    f"{noun} {entry.id!r} is disabled", hint="enable it with --enabled, or the device stays blocked"
                ),
                entry,
            )
        _plan_allocation(tx, result)
    except Refused as refused:
        result.refused = refused
    _note_relied_on(tx, result)
    return result


def allocate(plan: Plan, webhook_timeout: float) -> Decision:
    """Phase 2: run the plan's custom allocation (webhook or command). Call it with no transaction held; never raises Refused."""
    try:
        return _custom(plan, webhook_timeout)
    except Refused as refused:
        return refused


def settle(
    tx: Transaction,
    plan: Plan,
    decision: Decision | None,
    now: datetime,
    *,
    webhook_timeout: float = 10.0,
    record_refusals: bool = True,
    last: bool = True,
) -> ProvisionResult | Plan:
    """Phase 3, in a write transaction: commit `plan` (with its custom `decision`) if what it relied on is unchanged.

    Otherwise decide again on this transaction's records: a fast policy (or a refusal) is committed at once; a
    custom one is returned as a new Plan for its allocation to run again (outside the transaction), or, when
    `last`, refused with RegistrationConflict. Without a decision, a custom plan's allocation runs here, in `tx`.
    """
    changed = _changed(tx, plan)
    if changed:
        trace = plan.trace
        trace.note(
            f"{', '.join(changed)} changed while the device was being allocated: deciding again on the current records"
        )
        plan = plan_registration(tx, plan.request, now, registration_id=plan.registration_id, trace=trace)
        decision = None
        if plan.needs_allocator:
            return _conflict(tx, plan, changed, now, record_refusals) if last else plan
    return commit_plan(tx, plan, decision, now, webhook_timeout=webhook_timeout, record_refusals=record_refusals)


def commit_plan(
    tx: Transaction,
    plan: Plan,
    decision: Decision | None,
    now: datetime,
    *,
    webhook_timeout: float = 10.0,
    record_refusals: bool = True,
) -> ProvisionResult:
    """Phase 3 for a plan made in this same transaction `tx` (nothing to check): allocate unless decided, write the
    registration and the hub's device, and record the attempt. A custom plan without a decision allocates here, in `tx`."""
    reg_id, match, trace = plan.registration_id, plan.match, plan.trace
    error: DpsError | None = None
    try:
        if plan.refused is not None:
            raise plan.refused
        assert match is not None
        if decision is None:
            decision = allocate(plan, webhook_timeout) if plan.needs_allocator else _allocate_fast(plan)
        if isinstance(decision, Refused):
            raise decision
        hub, twin_override, payload = decision
        state = _assign(tx, reg_id, match, plan.previous, hub, twin_override, payload, now, trace)
        status = "assigned"
    except Refused as refused:
        error = refused.error
        status = _status_of(error)
        if not plan.authenticated and not record_refusals:
            return _unrecorded_result(plan, now)
        entry = refused.entry or (match.entry if match else None)
        state = _refusal_state(tx, reg_id, plan.previous, status, error, entry, match, now)
    result = _result(reg_id, status, state, trace, error, match, now)
    _record_attempt(tx, now, reg_id, plan.request, status, state, error, match)
    return result


def _status_of(error: DpsError) -> str:
    """The registration status a refusal reports."""
    return {Unauthorized: "unauthorized", Disabled: "disabled"}.get(type(error), "failed")


def _unrecorded_result(plan: Plan, now: datetime) -> ProvisionResult:
    """The answer to a device that did not prove its credential (unauthorized, or blocked by a disabled individual
    enrollment before attesting), without writing anything: what `record_refusals=False` asks for."""
    assert plan.refused is not None
    error = plan.refused.error
    status = _status_of(error)
    state = _refusal_state(
        None, plan.registration_id, plan.previous, status, error, plan.refused.entry, plan.match, now
    )
    return _result(plan.registration_id, status, state, plan.trace, error, plan.match, now)


def _conflict(tx: Transaction, plan: Plan, changed: list[str], now: datetime, record_refusals: bool) -> ProvisionResult:
    """Refuse after the records a custom allocation relied on changed twice; the registration record is left as it was."""
    what = ", ".join(changed)
    error = RegistrationConflict(
        f"{what} changed while custom allocation ran, twice; nothing was assigned",
        hint="register again (the device's SDK retries); stop changing the enrollment while its devices register",
    )
    plan.trace.fail(error.message)
    ts = format_timestamp(now)
    state: Json = {
        "registrationId": plan.registration_id,
        "status": "failed",
        "errorCode": ERROR_CONFLICT,
        "errorMessage": error.message,
        "lastUpdatedDateTimeUtc": ts,
    }
    result = _result(plan.registration_id, "failed", state, plan.trace, error, plan.match, now)
    _record_attempt(tx, now, plan.registration_id, plan.request, "failed", state, error, plan.match)
    return result


def _note_relied_on(tx: Transaction, plan: Plan) -> None:
    """Record, as read now, each record the plan's decision depends on (besides the linked hubs, kept in plan.hubs)."""
    keys = [("service", "service"), ("registrations", plan.registration_id), ("enrollments", plan.registration_id)]
    entry = plan.refused.entry if plan.refused and plan.refused.entry else (plan.match.entry if plan.match else None)
    if entry is not None and entry.is_group:
        keys.append(("groups", entry.id))
    if entry is not None:
        a = entry.attestation
        keys += [("cas", name) for name in (getattr(a, "primary_ca", None), getattr(a, "secondary_ca", None)) if name]
    plan.relied_on = {
        (kind, key.lower()): plan.previous if kind == "registrations" else _read(tx, kind, key) for kind, key in keys
    }


def _read(tx: Transaction, kind: str, key: str) -> Json | None:
    """tx.get, kept for the transaction where many registrations read the same record (the service, a group)."""
    if kind in ("service", "groups"):
        return tx.memo(kind, f"record:{key.lower()}", lambda: tx.get(kind, key))
    return tx.get(kind, key)


_NOUNS = {
    "service": "the service settings",
    "registrations": "registration",
    "enrollments": "individual enrollment",
    "groups": "enrollment group",
    "cas": "CA certificate",
}


def _changed(tx: Transaction, plan: Plan) -> list[str]:
    """What changed since the plan was made (empty: the plan still holds), in words."""
    changed = [
        _NOUNS[kind] if kind == "service" else f"{_NOUNS[kind]} {key!r}"
        for (kind, key), doc in plan.relied_on.items()
        if _read(tx, kind, key) != doc
    ]
    if tx.memo("hubs", "docs", lambda: list(tx.scan("hubs"))) != plan.hubs:
        changed.append("the linked hubs")
    return changed


@dataclass
class Diagnosis:
    """Which enrollment entry a credential would match, and every check on the way (nothing is written)."""

    registration_id: str
    entry: Entry | None
    explain: list[Check]
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
        trace.fail(
            f"{'enrollment group' if match.entry.is_group else 'individual enrollment'} {match.entry.id!r} is disabled"
        )
        return Diagnosis(reg_id, match.entry, trace.steps, Disabled(f"{match.entry.id!r} is disabled"))
    return Diagnosis(reg_id, match.entry, trace.steps, None)


def _registration_id(request: RegistrationRequest) -> str:
    """The registration ID: given, else the certificate CN (X.509), the TPM default, or the SAS token's resource."""
    cred = request.credential
    reg_id = request.registration_id
    if reg_id is None and isinstance(cred, X509Credential):
        from dpsctl.core.certs import common_name

        reg_id = common_name(cred.chain[0])
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


def _plan_allocation(tx: Transaction, plan: Plan) -> None:
    """The allocation inputs of a matched, enabled entry: candidate hubs, policy, the device's current hub."""
    assert plan.match is not None
    entry, trace = plan.match.entry, plan.trace
    linked = tx.memo("hubs", "linked", lambda: [LinkedHub.from_stored(d) for d in plan.hubs])
    if entry.iot_hubs:
        plan.candidates = [h for h in linked if h.name in entry.iot_hubs]
        trace.note(f"candidate hubs (named by the entry): {', '.join(h.name for h in plan.candidates) or 'none'}")
    else:
        plan.candidates = [h for h in linked if h.applies_policy]
        trace.note(
            f"candidate hubs (all linked hubs that apply allocation policy): {', '.join(h.name for h in plan.candidates) or 'none'}"
        )
    plan.policy = entry.allocation_policy or plan.service.allocation_policy
    trace.note(
        f"allocation policy: {plan.policy} ({'set on the entry' if entry.allocation_policy else 'the service default'})"
    )
    plan.current = _current_hub(tx, plan.previous)
    plan.stay = plan.current is not None and not entry.reprovision_policy.update_hub_assignment
    if plan.stay:
        trace.note(f"reprovision policy 'never': the device stays on {plan.current}")


def _allocate_fast(plan: Plan) -> tuple[str, Json | None, Any]:
    """Choose the hub by a built-in policy (hashed, geoLatency, static); returns (hub, None, None) or raises Refused."""
    from dpsctl.core import allocation

    assert plan.match is not None and plan.policy != "custom"
    entry, trace, reg_id, candidates = plan.match.entry, plan.trace, plan.registration_id, plan.candidates
    if plan.stay:
        return plan.current, None, None  # type: ignore[return-value]
    choices = [allocation.HubChoice(h.name, h.weight, h.location) for h in candidates]
    try:
        if not choices:
            raise AllocationFailed(
                "no linked IoT hub is available for this device", hint="link one with `dpsctl hub add NAME`"
            )
        if plan.policy == "static":
            hub = allocation.static(choices)
        elif plan.policy == "geoLatency":
            region = plan.request.region or plan.service.location
            if region is None:
                trace.note(
                    "geoLatency: neither --region nor a service location is set; hashing among the candidates instead"
                )
                hub = allocation.hashed(reg_id, choices)
            else:
                from dpsctl.core.regions import normalize_region

                region = normalize_region(region)
                hub = allocation.geo_latency(reg_id, choices, region)
                trace.note(
                    f"geoLatency: device region {region}; hub locations: "
                    + ", ".join(f"{h.name}={h.location}" for h in candidates)
                )
        else:
            hub = allocation.hashed(reg_id, choices)
            trace.note(
                "hashed: weighted rendezvous hash of the registration ID; weights: "
                + ", ".join(f"{h.name}={h.weight}" for h in candidates)
            )
    except AllocationFailed as exc:
        trace.fail(f"allocation failed: {exc.message}")
        raise Refused(exc, entry) from None
    trace.ok(f"assigned hub: {hub}")
    return hub, None, None


def _custom(plan: Plan, timeout: float) -> tuple[str, Json | None, Any]:
    """Ask the entry's webhook or allocation command for the hub; reads and writes nothing in the store."""
    from dpsctl.core.custom_allocation import build_allocation_request, call_command, call_webhook, redacted_url

    assert plan.match is not None
    match, trace, previous = plan.match, plan.trace, plan.previous
    entry = match.entry
    custom = entry.custom_allocation
    hubs = [plan.current] if plan.stay else [h.name for h in plan.candidates]
    if not hubs:
        exc = AllocationFailed("no linked IoT hub is available for custom allocation")
        trace.fail(exc.message)
        raise Refused(exc, entry)
    body = build_allocation_request(
        enrollment=entry.to_dict(show_keys=False),
        is_group=entry.is_group,
        registration_id=plan.registration_id,
        linked_hubs=hubs,  # type: ignore[arg-type]
        current_hub=plan.current,
        current_device_id=(previous or {}).get("_currentDeviceId") if plan.current else None,
        attestation=match.runtime_attestation,
        payload=plan.request.payload,
    )
    try:
        if custom and custom.webhook_url:
            trace.note(f"custom allocation: POST to {redacted_url(custom.webhook_url)} with linkedHubs {hubs}")
            answer = call_webhook(custom.webhook_url, body, timeout=timeout)
        elif custom and custom.allocation_command:
            trace.note(f"custom allocation: running the allocation command with linkedHubs {hubs}")
            answer = call_command(custom.allocation_command, body, timeout=timeout)
        else:
            raise AllocationFailed(
                f"entry {entry.id!r} uses custom allocation but has no webhook URL or allocation command"
            )
    except AllocationFailed as exc:
        trace.fail(f"custom allocation failed: {exc.message}")
        raise Refused(exc, entry) from None
    trace.ok(
        f"custom allocation chose {answer.iot_hub_host_name}"
        + (" and returned an initial twin" if answer.initial_twin else "")
    )
    return answer.iot_hub_host_name, answer.initial_twin, answer.payload


# --------------------------------------------------------------------------- reprovisioning and hub registry


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


def _refusal_state(
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


# --------------------------------------------------------------------------- results and history


def _result(
    reg_id: str, status: str, state: Json, trace: Trace, error: DpsError | None, match: Match | None, now: datetime
) -> ProvisionResult:
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
        cs += (
            "x509=true"
            if match and match.device_key is None
            else f"SharedAccessKey={match.device_key if match else ''}"
        )
    return ProvisionResult(status, reg_id, operation, trace.steps, error, cs)


def _record_attempt(
    tx: Transaction,
    now: datetime,
    reg_id: str,
    request: RegistrationRequest,
    status: str,
    state: Json,
    error: DpsError | None,
    match: Match | None,
) -> None:
    """Count the operation and add the attempt to the bounded history, touching no record another registration writes."""
    entry = match.entry if match else None
    tx.put(
        "history",
        {
            "sequence": new_history_id(),
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
    if status == "assigned":
        count_operations(tx, now)
    if secrets.randbelow(HISTORY_TRIM_EVERY) == 0:
        trim_history(tx)


def _history_order(doc: Json) -> tuple[int, int, str]:
    """Oldest first: integer sequences (stores before issue 12) before time-ordered IDs."""
    sequence = doc["sequence"]
    return (0, sequence, "") if isinstance(sequence, int) else (1, 0, str(sequence))


def trim_history(tx: Transaction) -> int:
    """Delete all but the newest HISTORY_LIMIT attempts; returns how many went.

    Run by one registration in HISTORY_TRIM_EVERY (on average) rather than by each: finding the oldest costs a
    scan, and a shared counter to find it by would be the row every writer waits on. The store may so hold a few
    more than HISTORY_LIMIT for a while; `history()` never shows them.
    """
    docs = sorted(tx.scan("history"), key=_history_order)
    excess = docs[: max(0, len(docs) - HISTORY_LIMIT)]
    for doc in excess:
        tx.delete("history", str(doc["sequence"]))
    return len(excess)


def history(tx: Transaction, registration_id: str | None = None) -> list[Json]:
    """Recent registration attempts (the newest HISTORY_LIMIT), oldest first, refused ones included."""
    newest = sorted(tx.scan("history"), key=_history_order)[-HISTORY_LIMIT:]
    if registration_id is None:
        return newest
    wanted = registration_id.lower()
    return [d for d in newest if str(d.get("registrationId") or "").lower() == wanted]
