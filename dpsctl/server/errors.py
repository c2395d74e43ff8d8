"""Refusals in DPS's terms: an HTTP status, a six-digit `errorCode`, and the error body every front end sends.

The device service and the service API raise `Refusal`; each front end turns it into its own frame (an HTTP
response, or an MQTT publish on `$dps/registrations/res/{status}/...`, which reuses the HTTP status as DPS does).
`refusal_for` is the one table from the core's typed errors to a status and a code.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from dpsctl.core.clock import format_timestamp, utc_now
from dpsctl.core.errors import (
    AllocationFailed,
    Conflict,
    Disabled,
    DpsError,
    InvalidInput,
    NotFound,
    StoreBusy,
    Unauthorized,
)

Json = dict[str, Any]

# Six-digit DPS error codes: HTTP status x 1000 + a sub-code. 401002 is the service's own; the others are
# dpsctl's choices where DPS publishes none (docs/serve.md lists them).
E_API_VERSION = 400001
E_BAD_REQUEST = 400004
E_UNAUTHORIZED = 401002
E_NO_RESOURCE = 404001
E_ENROLLMENT_NOT_FOUND = 404201
E_REGISTRATION_NOT_FOUND = 404202
E_OPERATION_NOT_FOUND = 404203
E_METHOD = 405001
E_CONFLICT = 409201
E_PRECONDITION = 412001
E_TOO_LARGE = 413001
E_THROTTLED = 429001
E_INTERNAL = 500001
E_INJECTED = 500002
E_BUSY = 503001


class Refusal(Exception):
    """A request refused in the DPS error shape (status, errorCode, message, optional hint and headers)."""

    def __init__(
        self, status: int, code: int, message: str, *, hint: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.hint = hint
        self.headers = dict(headers or {})

    @property
    def retry_after(self) -> int | None:
        """The Retry-After seconds this refusal asks for, if any."""
        value = self.headers.get("Retry-After")
        return int(value) if value and value.isdigit() else None


# The one table: core error type -> (HTTP status, DPS errorCode). Order matters only for subclasses.
ERROR_TABLE: tuple[tuple[type[DpsError], int, int], ...] = (
    (InvalidInput, 400, E_BAD_REQUEST),
    (NotFound, 404, E_ENROLLMENT_NOT_FOUND),
    (Conflict, 409, E_CONFLICT),
    (Unauthorized, 401, E_UNAUTHORIZED),
    (Disabled, 401, E_UNAUTHORIZED),
    (AllocationFailed, 400, 400208),
    (StoreBusy, 503, E_BUSY),
)


def refusal_for(exc: DpsError, *, not_found: int = E_ENROLLMENT_NOT_FOUND) -> Refusal:
    """The refusal for an engine or store error, by the table above (500 for anything it does not name)."""
    for kind, status, code in ERROR_TABLE:
        if isinstance(exc, kind):
            if kind is NotFound:
                code = not_found
            headers = {"Retry-After": "1"} if kind is StoreBusy else None
            return Refusal(status, code, exc.message, hint=exc.hint, headers=headers)
    return Refusal(500, E_INTERNAL, exc.message, hint=exc.hint)


def error_body(code: int, message: str, hint: str | None = None, now: datetime | None = None) -> Json:
    """`ProvisioningServiceErrorDetails`: errorCode, trackingId, message, timestampUtc (and the hint in `info`)."""
    body: Json = {
        "errorCode": code,
        "trackingId": str(uuid.uuid4()),
        "message": message,
        "timestampUtc": format_timestamp(now or utc_now()),
    }
    if hint:
        body["info"] = {"hint": hint}
    return body
