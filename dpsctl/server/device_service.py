"""The DPS device API, knowing no transport: register, operation status and status lookup.

HTTPS and MQTT are thin adapters over this: each hands over (ID scope, registration ID, what the device
presented, the request body) and turns the `DeviceReply` or `Refusal` into its own frames. Operations and TPM
challenges live in the store (operations.py), so a poll is answered after a restart or by another instance.

A registration is authenticated at once, on a read snapshot, and a device that fails authentication is
refused then (401) with nothing written. The allocation itself (a webhook may take seconds) runs on a bounded
pool; the device polls "assigning" until it is committed, and every other device is served meanwhile.
"""

from __future__ import annotations

import base64
import logging
import math
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from cryptography.x509 import Certificate

from dpsctl.core.attestation import Credential, SasCredential, TpmCredential, X509Credential
from dpsctl.core.clock import Clock, SystemClock, new_operation_id
from dpsctl.core.errors import Disabled, DpsError, InvalidInput, StoreBusy, Unauthorized
from dpsctl.core.models import Attestation
from dpsctl.core.provisioning import (
    Plan,
    ProvisionResult,
    RegistrationRequest,
    check_request,
    diagnose,
    plan_registration,
    provision_planned,
)
from dpsctl.core.registrations import Registration, find_registration
from dpsctl.core.service import load_service
from dpsctl.core.tpm import issue_challenge, seal_to_endorsement_key, validate_endorsement_key
from dpsctl.core.untrusted_json import parse_json
from dpsctl.server.errors import (
    E_BAD_REQUEST,
    E_INTERNAL,
    E_OPERATION_NOT_FOUND,
    E_REGISTRATION_NOT_FOUND,
    E_TOO_LARGE,
    E_UNAUTHORIZED,
    Refusal,
    error_body,
    refusal_for,
)
from dpsctl.server.faults import FaultInjector, Options, RateLimiter
from dpsctl.server.operations import Operation, OperationBook
from dpsctl.server.store_access import StoreAccess
from dpsctl.store import Transaction

Json = dict[str, Any]

# The device API's documented message limit (reference §1: 96 KB per request).
MAX_DEVICE_BODY_BYTES = 96 * 1024
TPM_KEY_NAME = "registration"
BUSY_RETRIES = 3  # allocations on the pool tried again when the store stays busy past the lock timeout

_log = logging.getLogger("dpsctl.serve")


@dataclass(frozen=True)
class Presented:
    """What a device presented besides its body: a SAS token (HTTP Authorization, MQTT password) and/or its TLS chain."""

    sas_token: str | None = None
    client_chain: tuple[Certificate, ...] = ()


@dataclass(frozen=True)
class Challenge:
    """A TPM challenge to send: its key (kept in the store) sealed to the EK as `authenticationKey`."""

    key: bytes = field(repr=False)
    blob: str
    new: bool


@dataclass
class DeviceReply:
    """A device API answer: status (200, 202, or 401 for a TPM challenge), body, Retry-After, and a log note."""

    status: int
    body: Json
    retry_after: int | None = None
    note: str = ""


class DeviceService:
    """The device API over one store, shared by every front end of one `serve`."""

    def __init__(
        self,
        access: StoreAccess,
        options: Options | None = None,
        *,
        clock: Clock | None = None,
        faults: FaultInjector | None = None,
    ) -> None:
        self.access = access
        self.options = options or Options()
        self.clock = clock or SystemClock()
        self.book = OperationBook(self.clock)
        self.faults = faults or FaultInjector(self.options.faults)
        self.limiter = RateLimiter(self.options.registrations_per_minute, self.clock)
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, self.options.allocation_workers), thread_name_prefix="dpsctl-allocate"
        )
        self._in_flight: set[Future[None]] = set()
        self._lock = threading.Lock()
        self.refused = 0  # authentication refusals since start: counted here, never written to the store

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._in_flight.discard(future)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait for the allocations in flight (tests: no sleeping until a poll would see the outcome)."""
        with self._lock:
            pending = list(self._in_flight)
        _, not_done = wait(pending, timeout=timeout)
        return not not_done

    def close(self) -> None:
        """Let allocations in flight finish, then stop the pool."""
        self._pool.shutdown(wait=True, cancel_futures=False)

    # -- the three calls

    def register(
        self, id_scope: str, registration_id: str, presented: Presented, body: bytes, *, tpm_allowed: bool = True
    ) -> DeviceReply:
        """PUT .../register: authenticate now; allocate on the pool (or at once with --fast)."""
        self.faults.check()
        self.limiter.check()
        document = _device_registration(body, registration_id)
        tpm = document.get("tpm")
        if tpm is not None and not tpm_allowed:
            raise Refusal(
                400,
                E_BAD_REQUEST,
                "TPM attestation is not supported over MQTT",
                hint="DPS takes TPM devices over HTTPS or AMQP; use the HTTPS transport",
            )
        challenge: Challenge | None = None
        with self.access.read() as tx:
            self._check_scope(tx, id_scope)
            if tpm is not None:
                credential, challenge = self._tpm_credential(tx, registration_id, tpm, presented.sas_token)
            else:
                credential = _credential(presented)
            if challenge is None:
                # Phase 1 of the engine, on this snapshot: match and attest. A device that fails is refused now.
                request = RegistrationRequest(credential, registration_id, document.get("payload"))
                plan = plan_registration(tx, request, self.clock.now(), registration_id=_checked(request))
                if plan.refused is not None and isinstance(plan.refused.error, Unauthorized):
                    self.refused += 1
                    raise Refusal(401, E_UNAUTHORIZED, plan.refused.error.message, hint=plan.refused.error.hint)
        if challenge is not None:
            assert tpm is not None  # only a TPM device is challenged
            if challenge.new:
                with self.access.write() as tx:
                    self.book.save_challenge(tx, registration_id, _ek(tpm), challenge.key)
            issued = {"authenticationKey": challenge.blob, "keyName": TPM_KEY_NAME}
            return DeviceReply(401, issued, note="TPM challenge issued (401 with authenticationKey)")
        tpm_keys = (
            {"endorsementKey": _ek(tpm), "storageRootKey": tpm.get("storageRootKey")} if isinstance(tpm, dict) else None
        )
        operation = self.book.new(
            new_operation_id(), id_scope, registration_id, delay=self.options.assigning_delay, tpm=tpm_keys
        )
        if self.options.fast:
            self._allocate(operation, plan, busy_retries=0)  # a busy store is the device's 503 (Retry-After)
            result = operation.result or _internal_error(operation)
            return DeviceReply(200, result, note=_outcome_note(registration_id, result))
        with self.access.write() as tx:
            self.book.save(tx, operation)
        future = self._pool.submit(self._allocate, operation, plan)
        with self._lock:
            self._in_flight.add(future)
        future.add_done_callback(self._done)
        retry = _whole_seconds(self.options.assigning_delay)
        assigning = {"operationId": operation.operation_id, "status": "assigning"}
        return DeviceReply(
            202, assigning, retry, note=f"{registration_id} assigning (operation {operation.operation_id})"
        )

    def operation_status(
        self, id_scope: str, registration_id: str, operation_id: str, presented: Presented
    ) -> DeviceReply:
        """GET .../operations/{id}: 202 while assigning, then the outcome (RegistrationOperationStatus)."""
        self.faults.check()
        with self.access.read() as tx:
            self._check_scope(tx, id_scope)
            operation = self.book.get(tx, operation_id)
            if (
                operation is None
                or operation.registration_id.lower() != registration_id.lower()
                or operation.id_scope.lower() != id_scope.lower()
            ):
                raise Refusal(
                    404,
                    E_OPERATION_NOT_FOUND,
                    f"operation {operation_id!r} not found for {registration_id!r}",
                    hint="operations are kept for 30 minutes; register again",
                )
            if operation.tpm is not None:
                credential, _ = self._tpm_credential(
                    tx, registration_id, operation.tpm, presented.sas_token, issue=False
                )
            else:
                credential = _credential(presented)
            self._authenticate(tx, credential, registration_id)
        remaining = self.book.seconds_until_ready(operation)
        if operation.result is None or (remaining > 0 and not self.options.fast):
            wait = _whole_seconds(remaining) if operation.result is not None else 1
            body = {
                "operationId": operation_id,
                "status": "assigning",
                "registrationState": {"registrationId": registration_id, "status": "assigning"},
            }
            return DeviceReply(202, body, wait, note=f"{registration_id} assigning")
        return DeviceReply(200, operation.result, note=_outcome_note(registration_id, operation.result))

    def status_lookup(self, id_scope: str, registration_id: str, presented: Presented, body: bytes) -> DeviceReply:
        """POST .../registrations/{id}: the device's own registration state (counts against the quota)."""
        self.faults.check()
        self.limiter.check()
        document = _device_registration(body, registration_id)
        tpm = document.get("tpm")
        with self.access.read() as tx:
            self._check_scope(tx, id_scope)
            if tpm is not None:
                credential, _ = self._tpm_credential(tx, registration_id, tpm, presented.sas_token, issue=False)
            else:
                credential = _credential(presented)
            self._authenticate(tx, credential, registration_id)
            record = find_registration(tx, registration_id)
        if record is None:
            raise Refusal(
                404,
                E_REGISTRATION_NOT_FOUND,
                f"no registration record for {registration_id!r}",
                hint="the device has not registered yet",
            )
        return DeviceReply(200, record.view(), note=f"{registration_id} {record.status}")

    # -- allocation, on the pool

    def _allocate(self, operation: Operation, plan: Plan, *, busy_retries: int = BUSY_RETRIES) -> None:
        """Phases 2 and 3 of the engine: allocate with no store lock held (a webhook may take seconds), then commit
        the outcome and the operation in one short transaction.

        On the pool, a store busy for longer than the lock timeout is tried again (the device keeps polling
        "assigning"); with --fast the StoreBusy goes back to the device as 503 with Retry-After.
        """

        def record(tx: Transaction, result: ProvisionResult) -> None:
            operation.result = {**result.operation, "operationId": operation.operation_id}
            operation.status = result.status
            self.book.save(tx, operation)

        try:
            for attempt in range(busy_retries + 1):
                try:
                    result = provision_planned(
                        self.access,
                        plan,
                        self.clock.now,
                        webhook_timeout=self.options.webhook_timeout,
                        record_refusals=False,
                        alongside=record,
                    )
                    if operation.result is None:  # refused without a record (a disabled entry before attesting)
                        record_unwritten = {**result.operation, "operationId": operation.operation_id}
                        operation.result, operation.status = record_unwritten, result.status
                        with self.access.write() as tx:
                            self.book.save(tx, operation)
                    return
                except StoreBusy:
                    if attempt == busy_retries:
                        raise
        except StoreBusy:
            if busy_retries == 0:
                raise
            self._fail(operation, "the store stayed busy; register again")
        except Exception as exc:  # noqa: BLE001 - the device must learn the outcome whatever went wrong
            message = exc.message if isinstance(exc, DpsError) else f"unexpected {type(exc).__name__} while allocating"
            self._fail(operation, message)

    def _fail(self, operation: Operation, message: str) -> None:
        """Record a failed outcome that the engine did not produce (an error while allocating)."""
        _log.warning("allocation of %s failed: %s", operation.registration_id, message)
        state = Registration(operation.registration_id, "failed", error_code=E_INTERNAL, error_message=message)
        operation.result = {
            "operationId": operation.operation_id,
            "status": "failed",
            "registrationState": state.view(),
        }
        operation.status = "failed"
        try:
            with self.access.write() as tx:
                self.book.save(tx, operation)
        except DpsError:
            pass  # the store is unusable: the operation expires and the device registers again

    def purge(self) -> int:
        """Remove expired operations and challenges; how many went."""
        with self.access.write() as tx:
            return self.book.purge(tx)

    # -- authentication

    def _check_scope(self, tx: Transaction, id_scope: str) -> None:
        actual = load_service(tx, self.clock.now()).id_scope
        if actual.lower() != id_scope.lower():
            self.refused += 1
            raise Refusal(
                401,
                E_UNAUTHORIZED,
                f"ID scope {id_scope!r} is not this service's",
                hint="see `dpsctl service show` for the ID scope",
            )

    def _authenticate(self, tx: Transaction, credential: Credential, registration_id: str) -> None:
        """Attestation only, nothing written. A disabled entry passes: its device learns "disabled" from the outcome."""
        diagnosis = diagnose(tx, RegistrationRequest(credential, registration_id), self.clock.now())
        if diagnosis.error is not None and not isinstance(diagnosis.error, Disabled):
            self.refused += 1
            if isinstance(diagnosis.error, Unauthorized):
                raise Refusal(401, E_UNAUTHORIZED, diagnosis.error.message, hint=diagnosis.error.hint)
            raise refusal_for(diagnosis.error)

    def _tpm_credential(
        self, tx: Transaction, registration_id: str, tpm: Any, token: str | None, *, issue: bool = True
    ) -> tuple[Credential, Challenge | None]:
        """A TPM device: its first request gets the 401 challenge; its signed retry is checked against that challenge.

        A pending challenge is never replaced by another request for the same device and EK: anyone may know
        a public EK, and replacing the challenge would make the real device's answer fail. Such a request is
        sent the same key again, sealed to the EK, which only the TPM can open.
        """
        endorsement_key = _ek(tpm)
        storage_root_key = tpm.get("storageRootKey") if isinstance(tpm.get("storageRootKey"), str) else None
        key = self.book.challenge_key(tx, registration_id, endorsement_key)
        if token and key is not None:
            return TpmCredential(endorsement_key, storage_root_key, lambda _blob: token, challenge_key=key), None

        def unanswered(_blob: str) -> str:
            raise Unauthorized(
                "no answer to the TPM challenge",
                hint="answer the 401's authenticationKey with a SAS token signed by the TPM",
            )

        refused = TpmCredential(endorsement_key, storage_root_key, unanswered)
        if not issue:
            return refused, None
        doc = tx.get("enrollments", registration_id)
        enrolled = Attestation.from_stored(doc["attestation"], group=False) if doc is not None else None
        if enrolled is None or enrolled.type != "tpm" or _canonical_ek(enrolled) != endorsement_key:
            return refused, None  # the engine says why (no enrollment, another type, another EK)
        if key is None:
            key, blob = issue_challenge(endorsement_key)
            return refused, Challenge(key, blob, new=True)
        return refused, Challenge(
            key, seal_to_endorsement_key(endorsement_key, base64.b64encode(key).decode("ascii")), new=False
        )


# --------------------------------------------------------------------------- helpers


def _device_registration(body: bytes, registration_id: str) -> Json:
    """The DeviceRegistration body: a JSON object whose registrationId, if any, is the path's."""
    if len(body) > MAX_DEVICE_BODY_BYTES:
        raise Refusal(
            413,
            E_TOO_LARGE,
            f"the request body is {len(body)} bytes; DPS takes at most {MAX_DEVICE_BODY_BYTES} (96 KB)",
        )
    if not body.strip():
        return {}
    try:
        document = parse_json(body, "the request body", limit_depth=True)
    except InvalidInput as exc:
        raise Refusal(400, E_BAD_REQUEST, exc.message) from None
    if document is None:
        return {}  # the poll body some clients send, and `null`
    if not isinstance(document, dict):
        raise Refusal(400, E_BAD_REQUEST, "the request body must be a JSON object (DeviceRegistration)")
    given = document.get("registrationId")
    if given is not None and (not isinstance(given, str) or given.lower() != registration_id.lower()):
        raise Refusal(
            400,
            E_BAD_REQUEST,
            f"registrationId {given!r} in the body is not the {registration_id!r} the device connected as",
        )
    tpm = document.get("tpm")
    if tpm is not None and (not isinstance(tpm, dict) or not isinstance(tpm.get("endorsementKey"), str)):
        raise Refusal(400, E_BAD_REQUEST, "tpm.endorsementKey must be a Base64 string")
    return document


def _credential(presented: Presented) -> Credential:
    """A SAS token, else the TLS client certificate chain."""
    if presented.sas_token:
        return SasCredential(presented.sas_token)
    if presented.client_chain:
        return X509Credential(presented.client_chain, prove=None)
    raise Refusal(
        401,
        E_UNAUTHORIZED,
        "the request carries no credential",
        hint="send a SAS token (HTTP Authorization or MQTT password) for a symmetric key, a TLS client certificate for X.509, or tpm keys in the body",
    )


def _checked(request: RegistrationRequest) -> str:
    """The request's registration ID after the engine's input checks; a failure is the device's 400."""
    try:
        return check_request(request)
    except InvalidInput as exc:
        raise Refusal(400, E_BAD_REQUEST, exc.message, hint=exc.hint) from None


def _ek(tpm: Json) -> str:
    try:
        return validate_endorsement_key(tpm["endorsementKey"])
    except DpsError as exc:
        raise Refusal(400, E_BAD_REQUEST, exc.message, hint=exc.hint) from None


def _canonical_ek(attestation: Attestation) -> str | None:
    try:
        return validate_endorsement_key(attestation.endorsement_key or "")
    except DpsError:
        return None


def _whole_seconds(seconds: float) -> int:
    """Retry-After is whole seconds; at least 1 so that clients do not spin."""
    return max(1, math.ceil(seconds))


def _internal_error(operation: Operation) -> Json:
    return error_body(E_INTERNAL, f"the outcome of operation {operation.operation_id} was lost")


def _outcome_note(registration_id: str, operation: Json) -> str:
    state = operation.get("registrationState") or {}
    status = operation.get("status")
    if status == "assigned":
        return f"{registration_id} assigned to {state.get('assignedHub')}"
    return f"{registration_id} {status}: {state.get('errorMessage', '')}".rstrip(": ")
