"""Phase 2, the allocation: a built-in policy (hashed, geoLatency, static) or a custom one (webhook or command)."""

from __future__ import annotations

from dpsctl.core.engine.plan import Allocated, Decision, Plan
from dpsctl.core.errors import AllocationFailed
from dpsctl.core.matching import Refused

# Imports inside functions in this module load what only some commands need: every dpsctl process that imports
# the engine would pay for them otherwise (docs/development.md, "Checks that run in CI").


def allocate(plan: Plan, webhook_timeout: float) -> Decision:
    """Phase 2: run the plan's custom allocation (webhook or command). Call it with no transaction held; never raises Refused."""
    try:
        return allocate_custom(plan, webhook_timeout)
    except Refused as refused:
        return refused


def allocate_fast(plan: Plan) -> Allocated:
    """Choose the hub by a built-in policy (hashed, geoLatency, static), or raise Refused."""
    from dpsctl.core import allocation

    assert plan.match is not None and plan.policy != "custom"
    entry, trace, reg_id, candidates = plan.match.entry, plan.trace, plan.registration_id, plan.candidates
    if plan.stay and plan.current is not None:
        return Allocated(plan.current)
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
    return Allocated(hub)


def allocate_custom(plan: Plan, timeout: float) -> Allocated:
    """Ask the entry's webhook or allocation command for the hub; reads and writes nothing in the store."""
    from dpsctl.core.custom_allocation import build_allocation_request, call_command, call_webhook, redacted_url

    assert plan.match is not None
    match, trace, previous = plan.match, plan.trace, plan.previous
    entry = match.entry
    custom = entry.custom_allocation
    hubs = [plan.current] if plan.stay and plan.current else [h.name for h in plan.candidates]
    if not hubs:
        exc = AllocationFailed("no linked IoT hub is available for custom allocation")
        trace.fail(exc.message)
        raise Refused(exc, entry)
    body = build_allocation_request(
        enrollment=entry.to_dict(show_keys=False),
        is_group=entry.is_group,
        registration_id=plan.registration_id,
        linked_hubs=hubs,
        current_hub=plan.current,
        current_device_id=previous.current_device_id if plan.current and previous else None,
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
    return Allocated(answer.iot_hub_host_name, answer.initial_twin, answer.payload)
