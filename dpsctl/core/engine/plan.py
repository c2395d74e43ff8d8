"""Phase 1, the plan: match and attest on a snapshot, choose the allocation inputs, note what the decision relies on."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dpsctl.core import attestation as att
from dpsctl.core.checks import Trace
from dpsctl.core.engine.request import Json, RegistrationRequest, check_request
from dpsctl.core.errors import Disabled
from dpsctl.core.matching import Match, Refused, match_and_attest
from dpsctl.core.registrations import Registration
from dpsctl.core.service import find_service, load_service
from dpsctl.core.service_records import LinkedHub, ServiceSettings
from dpsctl.store import Transaction


@dataclass(frozen=True)
class Allocated:
    """A hub chosen for the device, with what a custom allocator returned besides (initial twin, payload)."""

    hub: str
    initial_twin: Json | None = None
    payload: Any = None  # the allocator's custom JSON reply for the device, whatever its shape


# What the allocation phase decides: a hub, or a refusal.
Decision = Allocated | Refused


@dataclass
class Plan:
    """One registration decided from one snapshot: the match (or refusal), the allocation inputs, and what it relied on.

    `relied_on` holds each record the decision read, as read (None: it did not exist), and `hubs` every linked
    hub; `settle` commits the plan only when all of them are still the same.
    """

    registration_id: str
    request: RegistrationRequest
    service: ServiceSettings
    previous: Registration | None  # the device's registration record, as read
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


def plan_registration(
    tx: Transaction,
    request: RegistrationRequest,
    now: datetime,
    *,
    registration_id: str | None = None,
    service: ServiceSettings | None = None,
    trace: Trace | None = None,
) -> Plan:
    """Phase 1: match and attest on the snapshot in `tx`, and note the records the decision relies on (writes nothing*).

    `service`: the settings the caller read in `tx` already (read here otherwise; the plan carries them on).
    *Except the service settings of a store that has none, in a writable transaction.
    """
    reg_id = registration_id or check_request(request)
    service = service or load_service(tx, now)
    trace = trace or Trace()
    trace.note(
        f"device {reg_id!r} registers with {att.credential_type(request.credential)} attestation in ID scope {service.id_scope}"
    )
    hubs = tx.memo("hubs", "docs", lambda: list(tx.scan("hubs")))
    stored = tx.get("registrations", reg_id)
    previous = None if stored is None else Registration.from_doc(stored)
    result = Plan(reg_id, request, service, previous, trace, hubs)
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
    _note_relied_on(tx, result, stored)
    return result


def _note_relied_on(tx: Transaction, plan: Plan, registration: Json | None) -> None:
    """Record, as read now, each record the plan's decision depends on (besides the linked hubs, kept in plan.hubs)."""
    keys = [("registrations", plan.registration_id), ("enrollments", plan.registration_id)]
    entry = plan.refused.entry if plan.refused and plan.refused.entry else (plan.match.entry if plan.match else None)
    if entry is not None and entry.is_group:
        keys.append(("groups", entry.id))
    if entry is not None:
        a = entry.attestation
        keys += [("cas", name) for name in (getattr(a, "primary_ca", None), getattr(a, "secondary_ca", None)) if name]
    plan.relied_on = {(kind, key.lower()): _relied(tx, plan, kind, key, registration) for kind, key in keys}


def _relied(tx: Transaction, plan: Plan, kind: str, key: str, registration: Json | None) -> Json | None:
    """A record the plan relies on, as the plan read it (the registration was read once already)."""
    if kind == "registrations":
        return registration
    return _read(tx, kind, key)


def _read(tx: Transaction, kind: str, key: str) -> Json | None:
    """tx.get, kept for the transaction where many registrations read the same record (a group)."""
    if kind == "groups":
        return tx.memo(kind, f"record:{key.lower()}", lambda: tx.get(kind, key))
    return tx.get(kind, key)


_NOUNS = {
    "registrations": "registration",
    "enrollments": "individual enrollment",
    "groups": "enrollment group",
    "cas": "CA certificate",
}


def changed_since(tx: Transaction, plan: Plan) -> list[str]:
    """What changed since the plan was made (empty: the plan still holds), in words."""
    changed = ["the service settings"] if find_service(tx) != plan.service else []
    changed += [f"{_NOUNS[kind]} {key!r}" for (kind, key), doc in plan.relied_on.items() if _read(tx, kind, key) != doc]
    if tx.memo("hubs", "docs", lambda: list(tx.scan("hubs"))) != plan.hubs:
        changed.append("the linked hubs")
    return changed


def current_hub(tx: Transaction, previous: Registration | None) -> str | None:
    """The hub the device lives in now, if it is still linked."""
    hub = previous.current_hub if previous else None
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
    plan.current = current_hub(tx, plan.previous)
    plan.stay = plan.current is not None and not entry.reprovision_policy.update_hub_assignment
    if plan.stay:
        trace.note(f"reprovision policy 'never': the device stays on {plan.current}")
