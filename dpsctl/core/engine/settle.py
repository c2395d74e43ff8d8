"""Phase 3, settling: commit a plan in a write transaction if what it relied on is unchanged, else decide again."""

from __future__ import annotations

from datetime import datetime

from dpsctl.core.clock import format_timestamp
from dpsctl.core.engine.allocate import allocate, allocate_fast
from dpsctl.core.engine.history import record_attempt
from dpsctl.core.engine.outcome import ERROR_CONFLICT, ProvisionResult, result_of, status_of
from dpsctl.core.engine.plan import Decision, Plan, changed_since, plan_registration
from dpsctl.core.engine.record import assign, refusal_record
from dpsctl.core.errors import DpsError, RegistrationConflict
from dpsctl.core.matching import Refused
from dpsctl.core.registrations import Registration, save_registration
from dpsctl.store import Transaction


def settle(
    tx: Transaction,
    plan: Plan,
    decision: Decision | None,
    now: datetime,
    *,
    last: bool = True,
    webhook_timeout: float = 10.0,
    record_refusals: bool = True,
) -> ProvisionResult | Plan:
    """Phase 3, in a write transaction: commit `plan` (with its custom `decision`) if what it relied on is unchanged.

    Otherwise decide again on this transaction's records: a fast policy (or a refusal) is committed at once; a
    custom one is returned as a new Plan for its allocation to run again (outside the transaction), or, when
    `last`, refused with RegistrationConflict. Without a decision, a custom plan's allocation runs here, in `tx`.
    """
    changed = changed_since(tx, plan)
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
            decision = allocate(plan, webhook_timeout) if plan.needs_allocator else allocate_fast(plan)
        if isinstance(decision, Refused):
            raise decision
        record = assign(tx, plan, decision, now)
    except Refused as refused:
        error = refused.error
        if not plan.authenticated and not record_refusals:
            return unrecorded_result(plan, now)
        record = refusal_record(plan, status_of(error), error, refused.entry or (match.entry if match else None), now)
        if record.entry is not None:
            save_registration(tx, record)
    record_attempt(tx, now, reg_id, plan.request, record, error, match)
    return result_of(reg_id, record, trace, error, match, now)


def _conflict(tx: Transaction, plan: Plan, changed: list[str], now: datetime, record_refusals: bool) -> ProvisionResult:
    """Refuse after the records a custom allocation relied on changed twice; the registration record is left as it was."""
    what = ", ".join(changed)
    error = RegistrationConflict(
        f"{what} changed while custom allocation ran, twice; nothing was assigned",
        hint="register again (the device's SDK retries); stop changing the enrollment while its devices register",
    )
    plan.trace.fail(error.message)
    record = Registration(
        plan.registration_id,
        "failed",
        error_code=ERROR_CONFLICT,
        error_message=error.message,
        last_updated=format_timestamp(now),
    )
    record_attempt(tx, now, plan.registration_id, plan.request, record, error, plan.match)
    return result_of(plan.registration_id, record, plan.trace, error, plan.match, now)


def unrecorded_result(plan: Plan, now: datetime) -> ProvisionResult:
    """The answer to a device that did not prove its credential (unauthorized, or blocked by a disabled individual
    enrollment before attesting), without writing anything: what `record_refusals=False` asks for."""
    assert plan.refused is not None
    error = plan.refused.error
    record = refusal_record(plan, status_of(error), error, plan.refused.entry, now)
    return result_of(plan.registration_id, record, plan.trace, error, plan.match, now)
