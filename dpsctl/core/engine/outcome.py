"""What a registration answers: the device's operation, the status, the connection string."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from dpsctl.core.checks import Check, Trace
from dpsctl.core.clock import format_timestamp, new_operation_id
from dpsctl.core.engine.request import Json
from dpsctl.core.errors import Disabled, DpsError, Unauthorized
from dpsctl.core.matching import Match
from dpsctl.core.registrations import Registration

ERROR_UNAUTHORIZED = 401002
ERROR_CONFLICT = 409203  # what DPS answers to concurrent registrations of one device ("Precondition failed")
ERROR_NO_HUB = 400208
ERROR_DISABLED = 401003  # dpsctl's choice: DPS reports status "disabled" but documents no code for it


@dataclass
class ProvisionResult:
    """What the device is told, what was decided and why."""

    status: str  # assigned | failed | disabled | unauthorized
    registration_id: str
    operation: Json
    explain: list[Check]
    error: DpsError | None = None
    connection_string: str | None = None
    record: Registration | None = None  # the registration record as decided (written unless unrecorded or a 401)

    @property
    def assigned(self) -> bool:
        """True when the device got a hub."""
        return self.status == "assigned"


def status_of(error: DpsError) -> str:
    """The registration status a refusal reports."""
    return {Unauthorized: "unauthorized", Disabled: "disabled"}.get(type(error), "failed")


def result_of(
    reg_id: str, record: Registration, trace: Trace, error: DpsError | None, match: Match | None, now: datetime
) -> ProvisionResult:
    """The answer to the device: an operation with the record's DPS view (or a 401's error body) and its hub credential."""
    status = record.status
    if status == "unauthorized":
        operation: Json = {
            "errorCode": ERROR_UNAUTHORIZED,
            "trackingId": str(uuid.uuid4()),
            "message": error.message if error else "Unauthorized",
            "timestampUtc": format_timestamp(now),
        }
        return ProvisionResult(status, reg_id, operation, trace.steps, error, record=record)
    operation = {"operationId": new_operation_id(), "status": status, "registrationState": record.view()}
    cs = None
    if status == "assigned":
        cs = f"HostName={record.assigned_hub};DeviceId={record.device_id};"
        cs += (
            "x509=true"
            if match and match.device_key is None
            else f"SharedAccessKey={match.device_key if match else ''}"
        )
    return ProvisionResult(status, reg_id, operation, trace.steps, error, cs, record)
