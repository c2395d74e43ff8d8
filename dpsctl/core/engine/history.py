"""The bounded history of registration attempts, refused ones included, and the operations count."""

from __future__ import annotations

import secrets
from datetime import datetime

from dpsctl.core import attestation as att
from dpsctl.core.clock import format_timestamp, new_history_id
from dpsctl.core.engine.request import Json, RegistrationRequest
from dpsctl.core.errors import DpsError
from dpsctl.core.matching import Match
from dpsctl.core.registrations import Registration
from dpsctl.core.service import add_operations
from dpsctl.store import Transaction

HISTORY_LIMIT = 1000
HISTORY_TRIM_EVERY = 32  # on average, one registration in 32 trims the history back to HISTORY_LIMIT


def record_attempt(
    tx: Transaction,
    now: datetime,
    reg_id: str,
    request: RegistrationRequest,
    record: Registration,
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
            "status": record.status,
            "substatus": record.substatus,
            "assignedHub": record.assigned_hub,
            "enrollment": None if entry is None else f"{'group' if entry.is_group else 'individual'}:{entry.id}",
            "errorMessage": error.message if error else None,
        },
    )
    if record.status == "assigned":
        add_operations(tx)  # the plan read (or created) the service settings: no need to load them again
    if secrets.randbelow(HISTORY_TRIM_EVERY) == 0:
        trim_history(tx)


def _history_order(doc: Json) -> tuple[int, int, str]:
    """Oldest first: integer sequences (stores before issue 12) before time-ordered IDs."""
    sequence = doc["sequence"]
    return (0, sequence, "") if isinstance(sequence, int) else (1, 0, str(sequence))


def _key_order(key: str) -> tuple[int, int, str]:
    """`_history_order` from a record's key alone: an integer sequence's key is all digits, an ID's has a dot."""
    return (0, int(key), "") if key.isdigit() else (1, 0, key)


def trim_history(tx: Transaction) -> int:
    """Delete all but the newest HISTORY_LIMIT attempts; returns how many went.

    Run by one registration in HISTORY_TRIM_EVERY (on average) rather than by each: finding the oldest costs a
    scan, and a shared counter to find it by would be the row every writer waits on. The store may so hold a few
    more than HISTORY_LIMIT for a while; `history()` never shows them.
    """
    keys = sorted(tx.keys("history"), key=_key_order)  # keys only: decoding a thousand records is what costs
    excess = keys[: max(0, len(keys) - HISTORY_LIMIT)]
    for key in excess:
        tx.delete("history", key)
    return len(excess)


def history(tx: Transaction, registration_id: str | None = None) -> list[Json]:
    """Recent registration attempts (the newest HISTORY_LIMIT), oldest first, refused ones included."""
    newest = sorted(tx.scan("history"), key=_history_order)[-HISTORY_LIMIT:]
    if registration_id is None:
        return newest
    wanted = registration_id.lower()
    return [d for d in newest if str(d.get("registrationId") or "").lower() == wanted]
