"""Device operations and pending TPM challenges, kept in the store with an expiry.

In the store rather than in one process's memory: a device that polls after `serve` restarted is answered, and
several `serve` instances sharing one store answer each other's operations. Expired records are ignored on
read and removed by `purge`, which the server runs now and then.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

from dpsctl.core.clock import Clock
from dpsctl.store import Transaction

Json = dict[str, Any]

OPERATION_TTL = 1800.0  # seconds a device may poll an operation (DPS keeps them "for a while"; docs/serve.md)
CHALLENGE_TTL = 600.0
PURGE_BATCH = 500


@dataclass
class Operation:
    """A registration's progress, as a device polls it."""

    operation_id: str
    id_scope: str
    registration_id: str
    status: str  # assigning until the allocation commits, then the outcome's status
    ready_at: float  # epoch seconds: polls answer 202 until then (--assigning-delay)
    expires_at: float
    result: Json | None = None  # RegistrationOperationStatus, once decided
    tpm: Json | None = field(default=None)  # the TPM's public keys, so that its polls are authenticated alike

    def to_doc(self) -> Json:
        """The stored record."""
        doc: Json = {
            "operationId": self.operation_id,
            "idScope": self.id_scope,
            "registrationId": self.registration_id,
            "status": self.status,
            "readyAt": self.ready_at,
            "expiresAt": self.expires_at,
        }
        if self.result is not None:
            doc["result"] = self.result
        if self.tpm is not None:
            doc["tpm"] = self.tpm
        return doc

    @classmethod
    def from_doc(cls, doc: Json) -> Operation:
        """The operation of a stored record."""
        return cls(
            doc["operationId"],
            doc["idScope"],
            doc["registrationId"],
            doc["status"],
            float(doc["readyAt"]),
            float(doc["expiresAt"]),
            doc.get("result"),
            doc.get("tpm"),
        )


class OperationBook:
    """Reads and writes operations and challenges in a caller's transaction, by the server's clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def _epoch(self) -> float:
        return self.clock.now().timestamp()

    def new(
        self, operation_id: str, id_scope: str, registration_id: str, *, delay: float, tpm: Json | None = None
    ) -> Operation:
        """A new operation, assigning, not yet stored."""
        now = self._epoch()
        return Operation(
            operation_id, id_scope, registration_id, "assigning", now + delay, now + OPERATION_TTL, tpm=tpm
        )

    def save(self, tx: Transaction, operation: Operation) -> None:
        """Store (or replace) an operation."""
        tx.put("operations", operation.to_doc())

    def get(self, tx: Transaction, operation_id: str) -> Operation | None:
        """The operation with this ID, unless it expired."""
        doc = tx.get("operations", operation_id)
        if doc is None:
            return None
        operation = Operation.from_doc(doc)
        return None if operation.expires_at < self._epoch() else operation

    def seconds_until_ready(self, operation: Operation) -> float:
        """How long polls still answer 'assigning' for a decided operation (0 when ready)."""
        return max(0.0, round(operation.ready_at - self._epoch(), 3))  # stamps are microseconds: no float residue

    # -- TPM challenges

    def challenge_key(self, tx: Transaction, registration_id: str, endorsement_key: str) -> bytes | None:
        """The key of the pending challenge for this device and EK, unless it expired."""
        doc = tx.get("challenges", _slot(registration_id, endorsement_key))
        if doc is None or float(doc["expiresAt"]) < self._epoch():
            return None
        return base64.b64decode(doc["key"])

    def save_challenge(self, tx: Transaction, registration_id: str, endorsement_key: str, key: bytes) -> None:
        """Store a challenge key for this device and EK (replacing an expired one only: see DeviceService)."""
        doc = {
            "slot": _slot(registration_id, endorsement_key),
            "key": base64.b64encode(key).decode("ascii"),
            "expiresAt": self._epoch() + CHALLENGE_TTL,
        }
        tx.put("challenges", doc)

    # -- housekeeping

    def purge(self, tx: Transaction) -> int:
        """Delete expired operations and challenges (at most PURGE_BATCH of each per call); how many went."""
        now = self._epoch()
        removed = 0
        for kind, key_field in (("operations", "operationId"), ("challenges", "slot")):
            expired = [doc[key_field] for doc in tx.scan(kind) if float(doc.get("expiresAt", 0)) < now]
            for key in expired[:PURGE_BATCH]:
                tx.delete(kind, key)
                removed += 1
        return removed


def _slot(registration_id: str, endorsement_key: str) -> str:
    """A challenge's key: the device and a digest of its EK (the EK itself is 400 characters)."""
    digest = hashlib.sha256(endorsement_key.encode("ascii")).hexdigest()[:32]
    return f"{registration_id.lower()}|{digest}"
