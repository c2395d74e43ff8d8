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

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from dpsctl.core.checks import Check, Trace
from dpsctl.core.engine.allocate import allocate
from dpsctl.core.engine.history import HISTORY_LIMIT, history, trim_history
from dpsctl.core.engine.outcome import ProvisionResult
from dpsctl.core.engine.plan import Decision, Plan, plan_registration
from dpsctl.core.engine.record import decide_reprovision
from dpsctl.core.engine.request import Entry, RegistrationRequest, check_request, registration_id_of
from dpsctl.core.engine.settle import commit_plan, settle, unrecorded_result
from dpsctl.core.errors import Disabled, DpsError
from dpsctl.core.matching import Refused, match_and_attest
from dpsctl.core.service import find_service, load_service
from dpsctl.core.transactions import StoreTransactions, Transactions
from dpsctl.store import Transaction

__all__ = [
    "HISTORY_LIMIT",
    "Decision",
    "Plan",
    "ProvisionResult",
    "RegistrationRequest",
    "StoreTransactions",
    "Transactions",
    "allocate",
    "check_request",
    "commit_plan",
    "decide_reprovision",
    "history",
    "plan_registration",
    "provision",
    "provision_phased",
    "provision_planned",
    "settle",
    "trim_history",
]

ALLOCATION_ROUNDS = 2  # a custom allocation is made again once when what it relied on changed, then refused


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
        service = find_service(tx)
        current = (
            plan_registration(tx, request, now(), registration_id=reg_id, service=service)
            if service is not None
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
        return unrecorded_result(current, now())
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
    reg_id = registration_id_of(request)
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
