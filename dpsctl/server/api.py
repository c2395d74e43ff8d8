"""The emulator behind `dpsctl serve`, free of HTTP plumbing: a `Request` in, a `Response` out.

Device API (reference §2): register, operation status, registration status lookup; credentials are a SAS token
in `Authorization`, the TLS client certificate, or TPM keys answered with DPS's 401 challenge.
Service API (reference §7): individual enrollments, enrollment groups, attestation mechanisms, bulk operations,
queries and registration states, authorised by a SAS token of the service's owner policy.

Every request is one store transaction, taken through `Emulator.read()` / `Emulator.write()`: the store's own
locks keep the server and CLI commands safe on one store, and a process-wide lock spares in-process writers the
file-lock polling (and serialises the memory store, which has no lock of its own).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import random
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from dpsctl.core.clock import format_timestamp, same_etag, utc_now
from dpsctl.core.errors import Conflict, Disabled, DpsError, InvalidInput, NotFound, StoreBusy, Unauthorized

Json = dict[str, Any]

MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_BULK_ITEMS = 10
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
OPERATION_TTL = 1800.0
MAX_OPERATIONS = 20_000
CHALLENGE_TTL = 600.0
MAX_CHALLENGES = 10_000
DEVICE_API_VERSIONS = ("2019-03-31", "2021-06-01", "2021-10-01")
SERVICE_API_VERSIONS = ("2021-10-01",)
TRANSIENT_STATUSES = (429, 500, 502, 503, 504)

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

REGISTRATION_STATE_FIELDS = (
    "registrationId",
    "createdDateTimeUtc",
    "assignedHub",
    "deviceId",
    "status",
    "substatus",
    "errorCode",
    "errorMessage",
    "lastUpdatedDateTimeUtc",
    "etag",
    "payload",
)


# --------------------------------------------------------------------------- requests, responses, errors


@dataclass
class Request:
    """One HTTP request as the emulator sees it."""

    method: str
    target: str  # path and query, as sent
    headers: Mapping[str, str]  # case-insensitive lookups (an email.message.Message, or a dict in tests)
    body: bytes = b""
    client_chain: tuple[Any, ...] = ()  # the TLS client certificate chain the handshake verified, leaf first
    host: str = ""

    def header(self, name: str) -> str | None:
        """A header value, looked up case-insensitively."""
        value = self.headers.get(name)
        if value is None and isinstance(self.headers, dict):
            lowered = name.lower()
            value = next((v for k, v in self.headers.items() if k.lower() == lowered), None)
        return value


@dataclass
class Response:
    """What to send back; `note` goes into the request's log line."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    note: str = ""


class ApiError(Exception):
    """A refusal in the DPS error shape."""

    def __init__(self, status: int, code: int, message: str, *, hint: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.hint = hint
        self.headers = headers or {}


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


def error_response(exc: ApiError) -> Response:
    """The response for a refusal: the DPS error body and its code in `x-ms-error-code`."""
    headers = {"x-ms-error-code": str(exc.code), **exc.headers}
    return Response(exc.status, error_body(exc.code, exc.message, exc.hint), headers, note=f"{exc.code} {exc.message}")


def from_dps_error(exc: DpsError, *, not_found: int = E_ENROLLMENT_NOT_FOUND) -> ApiError:
    """The HTTP refusal for an engine or store error."""
    if isinstance(exc, InvalidInput):
        return ApiError(400, E_BAD_REQUEST, exc.message, hint=exc.hint)
    if isinstance(exc, NotFound):
        return ApiError(404, not_found, exc.message, hint=exc.hint)
    if isinstance(exc, Conflict):
        return ApiError(409, E_CONFLICT, exc.message, hint=exc.hint)
    if isinstance(exc, Unauthorized):
        return ApiError(401, E_UNAUTHORIZED, exc.message, hint=exc.hint)
    if isinstance(exc, StoreBusy):
        return ApiError(503, E_BUSY, exc.message, hint=exc.hint, headers={"Retry-After": "1"})
    return ApiError(500, E_INTERNAL, exc.message, hint=exc.hint)


# --------------------------------------------------------------------------- options and faults


@dataclass(frozen=True)
class Fault:
    """`--inject STATUS:RATE[:RETRY_AFTER]`: answer that share of device requests with STATUS."""

    status: int
    rate: float
    retry_after: int = 1

    @classmethod
    def parse(cls, text: str) -> Fault:
        """Parse `429:0.1` or `503:0.05:5`."""
        parts = text.strip().split(":")
        hint = "write STATUS:RATE[:RETRY_AFTER], e.g. 429:0.1 (10% of device requests) or 503:0.05:5"
        try:
            status, rate = int(parts[0]), float(parts[1])
            retry_after = int(parts[2]) if len(parts) > 2 else 1
        except (ValueError, IndexError):
            raise InvalidInput(f"--inject {text!r} is not STATUS:RATE", hint=hint) from None
        if len(parts) > 3:
            raise InvalidInput(f"--inject {text!r} has too many parts", hint=hint)
        if status not in TRANSIENT_STATUSES:
            raise InvalidInput(
                f"--inject status {status} is not one devices retry on",
                hint=f"use one of {', '.join(map(str, TRANSIENT_STATUSES))} (clients give up on other errors)",
            )
        if not 0.0 <= rate <= 1.0 or math.isnan(rate):
            raise InvalidInput(f"--inject rate {parts[1]} is not between 0 and 1", hint=hint)
        if not 0 <= retry_after <= 3600:
            raise InvalidInput(f"--inject Retry-After {retry_after} is not 0..3600 seconds", hint=hint)
        return cls(status, rate, retry_after)


@dataclass(frozen=True)
class Options:
    """How the emulator answers: the `dpsctl serve` flags."""

    fast: bool = False
    assigning_delay: float = 0.0
    faults: tuple[Fault, ...] = ()
    registrations_per_minute: int | None = None
    webhook_timeout: float = 10.0
    host_names: frozenset[str] = frozenset()  # extra names a service SAS token's resource may use


class RateLimiter:
    """A sliding one-minute window over registrations (DPS's quota is 1,000 per minute per service)."""

    def __init__(self, per_minute: int | None) -> None:
        self.per_minute = per_minute
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def admit(self) -> int | None:
        """None when admitted (and counted), else the seconds until a slot frees."""
        if self.per_minute is None:
            return None
        now = time.monotonic()
        with self._lock:
            while self._times and self._times[0] <= now - 60.0:
                self._times.popleft()
            if len(self._times) >= self.per_minute:
                return max(1, math.ceil(self._times[0] + 60.0 - now))
            self._times.append(now)
            return None


@dataclass
class Operation:
    """A registration's outcome, held for the device's polls."""

    operation_id: str
    id_scope: str
    registration_id: str
    final: Json  # RegistrationOperationStatus
    ready_at: float  # time.monotonic() when polls start answering 200
    endorsement_key: str | None = None
    storage_root_key: str | None = None
    created: float = field(default_factory=time.monotonic)


class _Expiring:
    """A bounded, time-limited map shared by the request threads."""

    def __init__(self, ttl: float, limit: int) -> None:
        self.ttl = ttl
        self.limit = limit
        self._items: OrderedDict[Any, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = (time.monotonic() + self.ttl, value)
            self._items.move_to_end(key)
            while len(self._items) > self.limit:
                self._items.popitem(last=False)

    def get(self, key: Any) -> Any:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if item[0] < time.monotonic():
                del self._items[key]
                return None
            return item[1]


# --------------------------------------------------------------------------- the emulator


class Emulator:
    """The DPS device and service REST APIs over one store."""

    def __init__(self, store: Any, options: Options | None = None, *, rng: random.Random | None = None) -> None:
        from dpsctl.store.memory import MemoryStore

        self.store = store
        self.options = options or Options()
        self._write_lock = threading.RLock()  # re-entrant: a read inside a write must not deadlock a memory store
        # The memory store has no lock: its readers must not see a commit half-applied.
        self._read_lock = self._write_lock if isinstance(store, MemoryStore) else None
        self.operations = _Expiring(OPERATION_TTL, MAX_OPERATIONS)
        self.challenges = _Expiring(CHALLENGE_TTL, MAX_CHALLENGES)
        self.limiter = RateLimiter(self.options.registrations_per_minute)
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()

    # -- transactions

    @contextmanager
    def read(self) -> Iterator[Any]:
        """A read transaction."""
        with self._read_lock or nullcontext(), self.store.transaction() as tx:
            yield tx

    @contextmanager
    def write(self) -> Iterator[Any]:
        """A write transaction (committed when the block ends without an exception)."""
        with self._write_lock, self.store.transaction(write=True) as tx:
            yield tx

    def prepare(self) -> Any:
        """Create the store, the service and its key if missing; returns the service settings."""
        from dpsctl.core.service import ensure_service_key

        with self.write() as tx:
            return ensure_service_key(tx, utc_now())

    # -- entry point

    def handle(self, request: Request) -> Response:
        """Answer one request; never raises for anything a client sends."""
        try:
            return self._route(request)
        except ApiError as exc:
            return error_response(exc)
        except DpsError as exc:
            return error_response(from_dps_error(exc))

    def _route(self, request: Request) -> Response:
        url = urlsplit(request.target)
        # Split before decoding, so that an encoded '/' stays inside its segment; empty segments (a trailing
        # slash, as the Node bulk call sends) are dropped.
        segments = [unquote(s) for s in url.path.split("/") if s]
        query = parse_qs(url.query)
        head = segments[0].lower() if segments else ""
        if head in ("enrollments", "enrollmentgroups", "registrations"):
            _require_api_version(query)
            return self._service(request, segments)
        if len(segments) >= 3 and segments[1].lower() == "registrations":
            _require_api_version(query)
            return self._device(request, segments)
        raise ApiError(404, E_NO_RESOURCE, f"no such resource: {url.path or '/'}", hint="device paths are /{idScope}/registrations/{id}/register; service paths start with /enrollments, /enrollmentGroups or /registrations")

    # ======================================================================= device API

    def _device(self, request: Request, segments: list[str]) -> Response:
        id_scope, registration_id, rest = segments[0], segments[2], [s.lower() for s in segments[3:]]
        if rest == ["register"]:
            action = "register"
        elif len(rest) == 2 and rest[0] == "operations":
            action = "poll"
        elif not rest:
            action = "lookup"
        else:
            raise ApiError(404, E_NO_RESOURCE, f"no such device resource: {'/'.join(segments[3:])}")
        wanted = {"register": "PUT", "poll": "GET", "lookup": "POST"}[action]
        if request.method != wanted:
            raise ApiError(405, E_METHOD, f"{request.method} is not allowed here; use {wanted}", headers={"Allow": wanted})
        self._inject_fault()
        if action != "poll":
            # A status lookup counts as a registration against the quota, as DPS documents.
            wait = self.limiter.admit()
            if wait is not None:
                raise ApiError(
                    429,
                    E_THROTTLED,
                    f"registration quota of {self.options.registrations_per_minute} per minute exceeded",
                    headers={"Retry-After": str(wait)},
                )
        body = _json_body(request, default={})
        if not isinstance(body, dict):
            raise ApiError(400, E_BAD_REQUEST, "the request body must be a JSON object (DeviceRegistration)")
        given = body.get("registrationId")
        if given is not None and (not isinstance(given, str) or given.lower() != registration_id.lower()):
            raise ApiError(400, E_BAD_REQUEST, f"registrationId {given!r} in the body is not the {registration_id!r} of the path")
        if action == "register":
            return self._register(request, id_scope, registration_id, body)
        if action == "poll":
            return self._poll(request, id_scope, registration_id, segments[4])
        return self._lookup(request, id_scope, registration_id, body)

    def _inject_fault(self) -> None:
        for fault in self.options.faults:
            with self._rng_lock:
                hit = self._rng.random() < fault.rate
            if hit:
                code = E_THROTTLED if fault.status == 429 else E_INJECTED
                raise ApiError(
                    fault.status,
                    code,
                    f"injected fault: {fault.status} (dpsctl serve --inject)",
                    headers={"Retry-After": str(fault.retry_after)},
                )

    def _check_scope(self, tx: Any, id_scope: str) -> None:
        from dpsctl.core.service import load_service

        actual = load_service(tx, utc_now()).id_scope
        if actual.lower() != id_scope.lower():
            raise ApiError(401, E_UNAUTHORIZED, f"ID scope {id_scope!r} is not this service's ({actual})", hint="see `dpsctl service show`")

    def _credential(self, request: Request, id_scope: str, registration_id: str, tpm: Any, *, issue: bool) -> Any:
        """What the device presents: TPM keys, a SAS token, or its TLS client certificate."""
        from dpsctl.core.attestation import SasCredential, X509Credential

        token = request.header("Authorization")
        if tpm is not None:
            return self._tpm_credential(id_scope, registration_id, tpm, token, issue=issue)
        if token:
            return SasCredential(token)
        if request.client_chain:
            return X509Credential(request.client_chain, prove=None)
        raise ApiError(
            401,
            E_UNAUTHORIZED,
            "the request carries no credential",
            hint="send a SAS token in Authorization (symmetric key), a TLS client certificate (X.509), or tpm keys in the body",
        )

    def _tpm_credential(self, id_scope: str, registration_id: str, tpm: Any, token: str | None, *, issue: bool) -> Any:
        """A TPM device: answer its first request with the 401 challenge, check the signed retry against it."""
        from dpsctl.core.attestation import TpmCredential
        from dpsctl.core.tpm import issue_challenge, validate_endorsement_key

        if not isinstance(tpm, dict) or not isinstance(tpm.get("endorsementKey"), str):
            raise ApiError(400, E_BAD_REQUEST, "tpm.endorsementKey must be a Base64 string")
        endorsement_key = validate_endorsement_key(tpm["endorsementKey"])
        storage_root_key = tpm.get("storageRootKey") if isinstance(tpm.get("storageRootKey"), str) else None
        slot = (registration_id.lower(), endorsement_key)
        key = self.challenges.get(slot)
        if token and key is not None:
            return TpmCredential(endorsement_key, storage_root_key, lambda _blob: token, challenge_key=key)

        def unanswered(_blob: str) -> str:
            raise Unauthorized("no answer to the TPM challenge")

        refused = TpmCredential(endorsement_key, storage_root_key, unanswered)
        if not issue:
            return refused
        with self.read() as tx:
            self._check_scope(tx, id_scope)
            doc = tx.get("enrollments", registration_id)
        enrolled = doc is not None and (doc.get("attestation") or {}).get("type") == "tpm"
        if not enrolled or _canonical_ek(doc) != endorsement_key:
            return refused  # the engine says why (no enrollment, another type, another EK) and records it
        key, blob = issue_challenge(endorsement_key)
        self.challenges.put(slot, key)
        raise _Challenge(blob)

    def _register(self, request: Request, id_scope: str, registration_id: str, body: Json) -> Response:
        from dpsctl.core.provisioning import RegistrationRequest, provision

        try:
            credential = self._credential(request, id_scope, registration_id, body.get("tpm"), issue=True)
        except _Challenge as challenge:
            return challenge.response()
        with self.write() as tx:
            self._check_scope(tx, id_scope)
            result = provision(
                tx,
                RegistrationRequest(credential, registration_id, body.get("payload")),
                utc_now(),
                webhook_timeout=self.options.webhook_timeout,
            )
        if result.status == "unauthorized":
            message = result.error.message if result.error else "Unauthorized"
            return Response(
                401,
                {**result.operation, **({"info": {"hint": result.error.hint}} if result.error and result.error.hint else {})},
                {"x-ms-error-code": str(E_UNAUTHORIZED)},
                note=f"{registration_id} unauthorized: {message}",
            )
        operation_id = result.operation["operationId"]
        tpm = body.get("tpm") if isinstance(body.get("tpm"), dict) else None
        self.operations.put(
            operation_id,
            Operation(
                operation_id,
                id_scope,
                registration_id,
                result.operation,
                time.monotonic() + self.options.assigning_delay,
                endorsement_key=getattr(credential, "endorsement_key", None) if tpm else None,
                storage_root_key=getattr(credential, "storage_root_key", None) if tpm else None,
            ),
        )
        note = _outcome_note(registration_id, result.operation)
        if self.options.fast:
            return Response(200, result.operation, note=note)
        headers = {"Retry-After": str(_retry_after(self.options.assigning_delay))}
        if request.host:
            headers["Location"] = f"https://{request.host}/{id_scope}/registrations/{registration_id}/register"
        return Response(202, {"operationId": operation_id, "status": "assigning"}, headers, note=f"{note} (202 assigning)")

    def _authenticate(self, tx: Any, credential: Any, registration_id: str) -> None:
        """Attestation only, nothing written: a poll or lookup must come from the device itself."""
        from dpsctl.core.provisioning import RegistrationRequest, diagnose

        diagnosis = diagnose(tx, RegistrationRequest(credential, registration_id), utc_now())
        # A disabled entry still lets its device read the outcome ("disabled"), as DPS does.
        if diagnosis.error is not None and not isinstance(diagnosis.error, Disabled):
            raise ApiError(401, E_UNAUTHORIZED, diagnosis.error.message, hint=diagnosis.error.hint)

    def _poll(self, request: Request, id_scope: str, registration_id: str, operation_id: str) -> Response:
        operation: Operation | None = self.operations.get(operation_id)
        if operation is None or operation.registration_id.lower() != registration_id.lower() or operation.id_scope.lower() != id_scope.lower():
            raise ApiError(404, E_OPERATION_NOT_FOUND, f"operation {operation_id!r} not found for {registration_id!r}", hint="operations are kept in memory for 30 minutes; register again")
        tpm = {"endorsementKey": operation.endorsement_key, "storageRootKey": operation.storage_root_key} if operation.endorsement_key else None
        credential = self._credential(request, id_scope, registration_id, tpm, issue=False)
        with self.read() as tx:
            self._check_scope(tx, id_scope)
            self._authenticate(tx, credential, registration_id)
        remaining = operation.ready_at - time.monotonic()
        if remaining > 0 and not self.options.fast:
            body = {"operationId": operation_id, "status": "assigning", "registrationState": {"registrationId": registration_id, "status": "assigning"}}
            return Response(202, body, {"Retry-After": str(_retry_after(remaining))}, note=f"{registration_id} assigning")
        return Response(200, operation.final, note=_outcome_note(registration_id, operation.final))

    def _lookup(self, request: Request, id_scope: str, registration_id: str, body: Json) -> Response:
        from dpsctl.core.registrations import public_registration

        try:
            credential = self._credential(request, id_scope, registration_id, body.get("tpm"), issue=True)
        except _Challenge as challenge:
            return challenge.response()
        with self.read() as tx:
            self._check_scope(tx, id_scope)
            self._authenticate(tx, credential, registration_id)
            record = tx.get("registrations", registration_id)
        if record is None:
            raise ApiError(404, E_REGISTRATION_NOT_FOUND, f"no registration record for {registration_id!r}", hint="the device has not registered yet")
        return Response(200, public_registration(record), note=f"{registration_id} {record.get('status')}")

    # ======================================================================= service API

    def _service(self, request: Request, segments: list[str]) -> Response:
        head, rest = segments[0].lower(), segments[1:]
        method = request.method
        if head == "registrations":
            if len(rest) == 1:
                return self._allowing(request, ("GET", "DELETE"), lambda: self._registration(request, rest[0]))
            if len(rest) == 2 and rest[1].lower() == "query":
                return self._allowing(request, ("POST",), lambda: self._registration_query(request, rest[0]))
            raise ApiError(404, E_NO_RESOURCE, f"no such resource: /{'/'.join(segments)}")
        group = head == "enrollmentgroups"
        if not rest:
            return self._allowing(request, ("POST",), lambda: self._bulk(request, group))
        if len(rest) == 1:
            if method == "POST" and rest[0].lower() == "query":
                return self._entry_query(request, group)
            return self._allowing(request, ("GET", "PUT", "DELETE"), lambda: self._entry(request, group, rest[0]))
        if len(rest) == 2 and rest[1].lower() == "attestationmechanism":
            return self._allowing(request, ("POST",), lambda: self._attestation(request, group, rest[0]))
        raise ApiError(404, E_NO_RESOURCE, f"no such resource: /{'/'.join(segments)}")

    @staticmethod
    def _allowing(request: Request, methods: tuple[str, ...], run: Callable[[], Response]) -> Response:
        if request.method not in methods:
            raise ApiError(405, E_METHOD, f"{request.method} is not allowed here; use {' or '.join(methods)}", headers={"Allow": ", ".join(methods)})
        return run()

    def _authorize(self, tx: Any, request: Request) -> None:
        """The service SAS token: owner policy, signed with the service key, for this host, not expired."""
        from dpsctl.core.keys import decode_key
        from dpsctl.core.sas import is_expired, parse_sas_token, signature_matches
        from dpsctl.core.service import SERVICE_POLICY, load_service

        header = request.header("Authorization")
        hint = "sign with the connection string from `dpsctl service connection-string`"
        if not header:
            raise ApiError(401, E_UNAUTHORIZED, "the request carries no Authorization header", hint=hint)
        try:
            token = parse_sas_token(header)
        except InvalidInput as exc:
            raise ApiError(401, E_UNAUTHORIZED, exc.message, hint=hint) from None
        settings = load_service(tx, utc_now())
        if (token.skn or "").lower() != SERVICE_POLICY:
            raise ApiError(401, E_UNAUTHORIZED, f"unknown shared access policy {token.skn!r}", hint=f"the service's policy is {SERVICE_POLICY}; {hint}")
        if not settings.service_key or not signature_matches(token, decode_key(settings.service_key, what="service key")):
            raise ApiError(401, E_UNAUTHORIZED, "the SAS token is not signed with the service key", hint=hint)
        if is_expired(token, time.time()):
            raise ApiError(401, E_UNAUTHORIZED, f"the SAS token expired (se={token.se})", hint=hint)
        host, path = _token_resource(token.sr)
        allowed = {"localhost", "127.0.0.1", "::1", settings.service_host.lower(), *self.options.host_names}
        if request.host:
            allowed.add(_strip_port(request.host.lower()))
        if host not in allowed:
            raise ApiError(401, E_UNAUTHORIZED, f"the SAS token is for {host!r}, not this service", hint=hint)
        target = [s.lower() for s in urlsplit(request.target).path.split("/") if s]
        scope = [s for s in path.split("/") if s]
        if target[: len(scope)] != scope:
            raise ApiError(401, E_UNAUTHORIZED, f"the SAS token is scoped to /{path}, not to this resource", hint=hint)

    # -- individual enrollments and groups

    def _entry(self, request: Request, group: bool, entry_id: str) -> Response:
        from dpsctl.core.enrollments import KIND, NOUN

        if request.method == "GET":
            with self.read() as tx:
                self._authorize(tx, request)
                doc = tx.get(KIND[group], entry_id)
                if doc is None:
                    raise _not_found(group, entry_id)
                body = self._entry_view(tx, doc, group)
            return Response(200, body, note=f"{NOUN[group]} {entry_id}")
        if request.method == "DELETE":
            from dpsctl.core.enrollments import delete_entry

            with self.write() as tx:
                self._authorize(tx, request)
                doc = tx.get(KIND[group], entry_id)
                if doc is None:
                    raise _not_found(group, entry_id)
                _check_if_match(request, doc)
                delete_entry(tx, entry_id, group=group, etag=None)
            return Response(204, note=f"{NOUN[group]} {entry_id} deleted")
        with self.write() as tx:
            self._authorize(tx, request)
            body = _json_body(request)
            old = tx.get(KIND[group], entry_id)
            if_match = request.header("If-Match")
            if if_match is not None and old is None:
                raise ApiError(412, E_PRECONDITION, f"{NOUN[group]} {entry_id!r} does not exist, so If-Match {if_match} cannot match")
            if old is not None:
                _check_if_match(request, old)
            entry, created = self._put_entry(tx, body, group, entry_id, old)
        return Response(200, entry.to_dict(show_keys=True), note=f"{NOUN[group]} {entry.id} {'created' if created else 'updated'}")

    def _put_entry(self, tx: Any, body: Any, group: bool, entry_id: str, old: Json | None) -> tuple[Any, bool]:
        """Create or replace one entry from its REST body; returns (entry, created)."""
        from dpsctl.core.clock import new_etag
        from dpsctl.core.enrollments import KIND, add_entry, check_entry
        from dpsctl.core.service import count_operations, load_service

        entry = _entry_from_body(body, group, entry_id, old)
        now = utc_now()
        if old is None:
            return add_entry(tx, entry, now), True
        entry = check_entry(tx, entry, load_service(tx, now).allocation_policy)
        entry = replace(entry, etag=new_etag(), created=old.get("createdDateTimeUtc"), updated=format_timestamp(now))
        tx.put(KIND[group], entry.to_dict())
        count_operations(tx, now)
        return entry, False

    def _entry_view(self, tx: Any, doc: Json, group: bool) -> Json:
        """An entry as GET and query return it: no symmetric keys; an individual enrollment with its registration state."""
        from dpsctl.core.models import EnrollmentGroup, IndividualEnrollment

        if group:
            return EnrollmentGroup.from_dict(doc).to_dict(show_keys=False)
        view = IndividualEnrollment.from_dict(doc).to_dict(show_keys=False)
        record = tx.get("registrations", doc["registrationId"])
        if record is not None:
            view["registrationState"] = _registration_view(record)
        return view

    def _attestation(self, request: Request, group: bool, entry_id: str) -> Response:
        from dpsctl.core.enrollments import KIND, NOUN
        from dpsctl.core.models import Attestation

        with self.read() as tx:
            self._authorize(tx, request)
            doc = tx.get(KIND[group], entry_id)
        if doc is None:
            raise _not_found(group, entry_id)
        mechanism = Attestation.from_dict(doc["attestation"], group=group).to_dict(group=group, show_keys=True)
        return Response(200, mechanism, note=f"{NOUN[group]} {entry_id} attestation mechanism")

    def _entry_query(self, request: Request, group: bool) -> Response:
        from dpsctl.core.enrollments import KIND

        with self.read() as tx:
            self._authorize(tx, request)
            _check_query(_json_body(request, default=None))
            docs = list(tx.scan(KIND[group]))
            size, after = _page_request(request)
            page, more = _page(docs, "enrollmentGroupId" if group else "registrationId", size, after)
            items = [self._entry_view(tx, doc, group) for doc in page]
        return _page_response(items, more, size, "EnrollmentGroup" if group else "Enrollment", "enrollmentGroupId" if group else "registrationId")

    def _bulk(self, request: Request, group: bool) -> Response:
        from dpsctl.core.enrollments import KIND, delete_entry
        from dpsctl.core.models import _choice

        items_field = "enrollmentGroups" if group else "enrollments"
        id_field = "enrollmentGroupId" if group else "registrationId"
        errors: list[Json] = []
        with self.write() as tx:
            self._authorize(tx, request)
            body = _json_body(request)
            if not isinstance(body, dict):
                raise ApiError(400, E_BAD_REQUEST, f"the body must be a BulkEnrollmentOperation object {{mode, {items_field}}}")
            mode = _choice(body.get("mode"), ("create", "update", "updateIfMatchETag", "delete"), "mode")
            items = body.get(items_field)
            if not isinstance(items, list) or not items:
                raise ApiError(400, E_BAD_REQUEST, f"{items_field} must be a non-empty list")
            if len(items) > MAX_BULK_ITEMS:
                raise ApiError(400, E_BAD_REQUEST, f"a bulk operation takes at most {MAX_BULK_ITEMS} items, not {len(items)}", hint="split it into several calls")
            for item in items:
                item_id = item.get(id_field) if isinstance(item, dict) else None
                try:
                    if not isinstance(item_id, str) or not item_id:
                        raise ApiError(400, E_BAD_REQUEST, f"every item needs {id_field}")
                    old = tx.get(KIND[group], item_id)
                    if mode == "create" and old is not None:
                        raise ApiError(409, E_CONFLICT, f"{item_id!r} already exists")
                    if mode in ("updateIfMatchETag", "delete") and old is None:
                        raise _not_found(group, item_id)
                    if mode == "updateIfMatchETag" and not same_etag(str(item.get("etag") or ""), old.get("etag")):  # type: ignore[union-attr]
                        raise ApiError(412, E_PRECONDITION, f"the etag of {item_id!r} does not match")
                    if mode == "delete":
                        delete_entry(tx, item_id, group=group, etag=None)
                    else:
                        self._put_entry(tx, item, group, item_id, old)
                except (ApiError, DpsError) as exc:
                    refusal = exc if isinstance(exc, ApiError) else from_dps_error(exc)
                    errors.append({id_field: item_id, "errorCode": refusal.code, "errorStatus": refusal.message})
        return Response(200, {"isSuccessful": not errors, "errors": errors}, note=f"bulk {mode} of {len(items)}: {len(errors)} failed")

    # -- registration states

    def _registration(self, request: Request, registration_id: str) -> Response:
        if request.method == "GET":
            with self.read() as tx:
                self._authorize(tx, request)
                record = tx.get("registrations", registration_id)
            if record is None:
                raise _registration_not_found(registration_id)
            return Response(200, _registration_view(record), note=f"registration {registration_id}")
        with self.write() as tx:
            self._authorize(tx, request)
            record = tx.get("registrations", registration_id)
            if record is None:
                raise _registration_not_found(registration_id)
            _check_if_match(request, record)
            tx.delete("registrations", registration_id)
        return Response(204, note=f"registration {registration_id} deleted")

    def _registration_query(self, request: Request, group_id: str) -> Response:
        from dpsctl.core.registrations import list_registrations

        with self.read() as tx:
            self._authorize(tx, request)
            _check_query(_json_body(request, default=None))  # the CLI sends no body, Node a QuerySpecification
            docs = list_registrations(tx, group=group_id)
        size, after = _page_request(request)
        page, more = _page(docs, "registrationId", size, after)
        return _page_response([_registration_view(d) for d in page], more, size, "DeviceRegistration", "registrationId")


# --------------------------------------------------------------------------- helpers


class _Challenge(Exception):
    """Internal: answer with DPS's TPM challenge."""

    def __init__(self, blob: str) -> None:
        super().__init__("tpm challenge")
        self.blob = blob

    def response(self) -> Response:
        return Response(401, {"authenticationKey": self.blob, "keyName": "registration"}, note="TPM challenge issued (401 with authenticationKey)")


def _canonical_ek(doc: Json) -> str | None:
    from dpsctl.core.tpm import validate_endorsement_key

    try:
        return validate_endorsement_key(doc["attestation"]["tpm"]["endorsementKey"])
    except (DpsError, KeyError, TypeError):
        return None


def _require_api_version(query: dict[str, list[str]]) -> None:
    if not query.get("api-version"):
        raise ApiError(400, E_API_VERSION, "the api-version query parameter is missing", hint="add ?api-version=2021-10-01 (devices may use 2019-03-31)")


def _json_body(request: Request, default: Any = ...) -> Any:
    if not request.body.strip():
        if default is ...:
            raise ApiError(400, E_BAD_REQUEST, "the request needs a JSON body")
        return default
    from dpsctl.core.jsondepth import parse_json

    # The one parser of untrusted JSON: line and column in errors, and the nesting limit of documents.
    try:
        return parse_json(request.body, "the JSON body", document=True)
    except InvalidInput as exc:
        raise ApiError(400, E_BAD_REQUEST, exc.message) from None


def _retry_after(seconds: float) -> int:
    """Retry-After is whole seconds; at least 1 so that clients do not spin."""
    return max(1, math.ceil(seconds))


def _outcome_note(registration_id: str, operation: Json) -> str:
    state = operation.get("registrationState") or {}
    status = operation.get("status")
    if status == "assigned":
        return f"{registration_id} assigned to {state.get('assignedHub')}"
    return f"{registration_id} {status}: {state.get('errorMessage', '')}".rstrip(": ")


def _not_found(group: bool, entry_id: str) -> ApiError:
    noun = "enrollment group" if group else "enrollment"
    return ApiError(404, E_ENROLLMENT_NOT_FOUND, f"{noun} {entry_id!r} not found")


def _registration_not_found(registration_id: str) -> ApiError:
    return ApiError(404, E_REGISTRATION_NOT_FOUND, f"no registration record for {registration_id!r}")


def _check_if_match(request: Request, doc: Json) -> None:
    if_match = request.header("If-Match")
    if if_match is not None and not same_etag(if_match.strip(), doc.get("etag")):
        raise ApiError(412, E_PRECONDITION, f"precondition failed: etag {if_match} is not the current {doc.get('etag')}", hint="read it again and retry with the current etag")


def _registration_view(record: Json) -> Json:
    """The service's `DeviceRegistrationState` of a stored registration record."""
    return {name: record[name] for name in REGISTRATION_STATE_FIELDS if record.get(name) is not None}


def _entry_from_body(body: Any, group: bool, entry_id: str, old: Json | None) -> Any:
    """An entry from a REST body: ID checked against the path, missing keys kept or generated, certificates re-read."""
    from dpsctl.core.enrollments import certificate_ref
    from dpsctl.core.keys import generate_key
    from dpsctl.core.models import Attestation, EnrollmentGroup, IndividualEnrollment

    if not isinstance(body, dict):
        raise ApiError(400, E_BAD_REQUEST, f"the body must be an {'EnrollmentGroup' if group else 'IndividualEnrollment'} object")
    id_field = "enrollmentGroupId" if group else "registrationId"
    given = body.get(id_field)
    if given is None:
        body = {**body, id_field: entry_id}
    elif not isinstance(given, str) or given.lower() != entry_id.lower():
        raise ApiError(400, E_BAD_REQUEST, f"{id_field} {given!r} in the body is not the {entry_id!r} of the path")
    model = EnrollmentGroup if group else IndividualEnrollment
    entry = model.from_dict(body)
    att = entry.attestation
    if att.type == "symmetricKey":
        previous = Attestation.from_dict(old["attestation"], group=group) if old is not None else None
        keep = previous if previous is not None and previous.type == "symmetricKey" else None
        # A GET answer sent back (keys left out) keeps the stored keys; a new entry without keys gets fresh ones.
        att = replace(
            att,
            primary_key=att.primary_key or (keep.primary_key if keep else None) or generate_key(),
            secondary_key=att.secondary_key or (keep.secondary_key if keep else None) or generate_key(),
        )
    elif att.type == "tpm":
        from dpsctl.core.tpm import validate_endorsement_key

        att = replace(att, endorsement_key=validate_endorsement_key(att.endorsement_key or ""))
    else:
        registration_id = None if group else entry.id
        where = f"{'enrollment group' if group else 'enrollment'} {entry.id!r}"
        refs = [
            certificate_ref(ref.certificate, f"{where} {slot} certificate", registration_id=registration_id, require_ca=group) if ref else None
            for slot, ref in (("primary", att.primary_cert), ("secondary", att.secondary_cert))
        ]
        if refs[0] is None and not att.primary_ca:
            raise ApiError(400, E_BAD_REQUEST, f"{where} needs a primary certificate" + (" or CA reference" if group else ""))
        att = replace(att, primary_cert=refs[0], secondary_cert=refs[1])
    return replace(entry, attestation=att)


def _check_query(spec: Any) -> None:
    """DPS queries select everything: `*` or `SELECT *`; WHERE clauses are not supported (DPS FAQ)."""
    if spec is None:
        return
    if not isinstance(spec, dict):
        raise ApiError(400, E_BAD_REQUEST, "the body must be a QuerySpecification object {\"query\": \"*\"}")
    text = spec.get("query", "*")
    if not isinstance(text, str):
        raise ApiError(400, E_BAD_REQUEST, "query must be a string")
    if " where " in f" {' '.join(text.lower().split())} ":
        raise ApiError(400, E_BAD_REQUEST, "DPS queries do not support WHERE clauses", hint="query \"*\" and filter the results")


def _page_request(request: Request) -> tuple[int, str | None]:
    raw = request.header("x-ms-max-item-count")
    size = DEFAULT_PAGE_SIZE
    if raw:
        try:
            size = int(raw)
        except ValueError:
            raise ApiError(400, E_BAD_REQUEST, f"x-ms-max-item-count {raw!r} is not a whole number") from None
        if size < 1:
            raise ApiError(400, E_BAD_REQUEST, "x-ms-max-item-count must be at least 1")
        size = min(size, MAX_PAGE_SIZE)
    token = request.header("x-ms-continuation")
    after = None
    if token:
        try:
            after = base64.b64decode(token.encode("ascii") + b"=" * (-len(token) % 4), altchars=b"-_", validate=True).decode("utf-8")
        except (binascii.Error, ValueError, UnicodeError):
            raise ApiError(400, E_BAD_REQUEST, "x-ms-continuation is not a token this service gave") from None
    return size, after


def _page(docs: list[Json], id_field: str, size: int, after: str | None) -> tuple[list[Json], bool]:
    """Keyset paging over the (case-insensitive) ID: a page stays right when records come and go between pages."""
    ordered = sorted(docs, key=lambda d: str(d[id_field]).lower())
    if after is not None:
        ordered = [d for d in ordered if str(d[id_field]).lower() > after]
    return ordered[:size], len(ordered) > size


def _page_response(items: list[Json], more: bool, size: int, item_type: str, id_field: str) -> Response:
    headers = {"x-ms-item-type": item_type, "x-ms-max-item-count": str(size)}
    if more:
        # Present only when another page exists: the Node client's hasMoreResults is "the header is there".
        last = str(items[-1][id_field]).lower()
        headers["x-ms-continuation"] = base64.urlsafe_b64encode(last.encode("utf-8")).decode("ascii").rstrip("=")
    return Response(200, items, headers, note=f"query: {len(items)} {item_type}{'' if len(items) == 1 else 's'}{', more' if more else ''}")


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _token_resource(sr: str) -> tuple[str, str]:
    """(host, path) of a service token's `sr`, whatever its encoding, scheme or letter case."""
    resource = unquote(sr).strip().lower()
    for scheme in ("https://", "http://"):
        if resource.startswith(scheme):
            resource = resource[len(scheme) :]
    host, _, path = resource.partition("/")
    return _strip_port(host), path
