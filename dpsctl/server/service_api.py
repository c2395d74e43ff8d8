"""The DPS service API (reference §7): individual enrollments, enrollment groups, attestation mechanisms, bulk
operations, queries and registration states, authorised by a SAS token of the service's owner policy.

It speaks HTTP only (DPS has no other transport for it): `HttpRequest` in, `HttpResponse` out; refusals are
`Refusal`s, which the HTTPS front end renders.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any
from urllib.parse import unquote, urlsplit

from dpsctl.core.clock import Clock, SystemClock, format_timestamp, new_etag, same_etag
from dpsctl.core.credentials import certificate_ref
from dpsctl.core.enrollments import KIND, NOUN, add_entry, check_entry, delete_entry
from dpsctl.core.errors import DpsError, InvalidInput
from dpsctl.core.keys import decode_key, generate_key
from dpsctl.core.models import Attestation, EnrollmentGroup, IndividualEnrollment
from dpsctl.core.registrations import Registration, list_registrations
from dpsctl.core.sas import is_expired, parse_sas_token, signature_matches
from dpsctl.core.service import SERVICE_POLICY, count_operations, load_service
from dpsctl.core.tpm import validate_endorsement_key
from dpsctl.core.untrusted_json import parse_json
from dpsctl.core.validation import choice
from dpsctl.server.errors import (
    E_BAD_REQUEST,
    E_CONFLICT,
    E_ENROLLMENT_NOT_FOUND,
    E_METHOD,
    E_NO_RESOURCE,
    E_PRECONDITION,
    E_REGISTRATION_NOT_FOUND,
    E_UNAUTHORIZED,
    Refusal,
    refusal_for,
)
from dpsctl.server.faults import Options
from dpsctl.server.http_types import HttpRequest, HttpResponse
from dpsctl.server.store_access import StoreAccess
from dpsctl.store import Transaction

Json = dict[str, Any]

MAX_BULK_ITEMS = 10
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


class ServiceApi:
    """The service API over one store."""

    def __init__(self, access: StoreAccess, options: Options | None = None, *, clock: Clock | None = None) -> None:
        self.access = access
        self.options = options or Options()
        self.clock = clock or SystemClock()

    def read(self) -> AbstractContextManager[Transaction]:
        """A read transaction."""
        return self.access.read()

    def write(self) -> AbstractContextManager[Transaction]:
        """A write transaction."""
        return self.access.write()

    def handle(self, request: HttpRequest, segments: list[str]) -> HttpResponse:
        """Answer one service API request (path already split into decoded segments)."""
        return self._service(request, segments)

    def _service(self, request: HttpRequest, segments: list[str]) -> HttpResponse:
        head, rest = segments[0].lower(), segments[1:]
        method = request.method
        if head == "registrations":
            if len(rest) == 1:
                return self._allowing(request, ("GET", "DELETE"), lambda: self._registration(request, rest[0]))
            if len(rest) == 2 and rest[1].lower() == "query":
                return self._allowing(request, ("POST",), lambda: self._registration_query(request, rest[0]))
            raise Refusal(404, E_NO_RESOURCE, f"no such resource: /{'/'.join(segments)}")
        group = head == "enrollmentgroups"
        if not rest:
            return self._allowing(request, ("POST",), lambda: self._bulk(request, group))
        if len(rest) == 1:
            if method == "POST" and rest[0].lower() == "query":
                return self._entry_query(request, group)
            return self._allowing(request, ("GET", "PUT", "DELETE"), lambda: self._entry(request, group, rest[0]))
        if len(rest) == 2 and rest[1].lower() == "attestationmechanism":
            return self._allowing(request, ("POST",), lambda: self._attestation(request, group, rest[0]))
        raise Refusal(404, E_NO_RESOURCE, f"no such resource: /{'/'.join(segments)}")

    @staticmethod
    def _allowing(request: HttpRequest, methods: tuple[str, ...], run: Callable[[], HttpResponse]) -> HttpResponse:
        if request.method not in methods:
            raise Refusal(
                405,
                E_METHOD,
                f"{request.method} is not allowed here; use {' or '.join(methods)}",
                headers={"Allow": ", ".join(methods)},
            )
        return run()

    def _authorize(self, tx: Transaction, request: HttpRequest) -> None:
        """The service SAS token: owner policy, signed with the service key, for this host, not expired."""

        header = request.header("Authorization")
        hint = "sign with the connection string from `dpsctl service connection-string`"
        if not header:
            raise Refusal(401, E_UNAUTHORIZED, "the request carries no Authorization header", hint=hint)
        try:
            token = parse_sas_token(header)
        except InvalidInput as exc:
            raise Refusal(401, E_UNAUTHORIZED, exc.message, hint=hint) from None
        settings = load_service(tx, self.clock.now())
        if (token.skn or "").lower() != SERVICE_POLICY:
            raise Refusal(
                401,
                E_UNAUTHORIZED,
                f"unknown shared access policy {token.skn!r}",
                hint=f"the service's policy is {SERVICE_POLICY}; {hint}",
            )
        if not settings.service_key or not signature_matches(
            token, decode_key(settings.service_key, what="service key")
        ):
            raise Refusal(401, E_UNAUTHORIZED, "the SAS token is not signed with the service key", hint=hint)
        if is_expired(token, self.clock.now().timestamp()):
            raise Refusal(401, E_UNAUTHORIZED, f"the SAS token expired (se={token.se})", hint=hint)
        host, path = _token_resource(token.sr)
        # The configured names only: the client's Host header is the client's to choose, so it proves nothing.
        allowed = {"localhost", "127.0.0.1", "::1", settings.service_host.lower(), *self.options.host_names}
        if host not in allowed:
            raise Refusal(401, E_UNAUTHORIZED, f"the SAS token is for {host!r}, not this service", hint=hint)
        target = [s.lower() for s in urlsplit(request.target).path.split("/") if s]
        scope = [s for s in path.split("/") if s]
        if target[: len(scope)] != scope:
            raise Refusal(401, E_UNAUTHORIZED, f"the SAS token is scoped to /{path}, not to this resource", hint=hint)

    # -- individual enrollments and groups

    def _entry(self, request: HttpRequest, group: bool, entry_id: str) -> HttpResponse:

        if request.method == "GET":
            with self.read() as tx:
                self._authorize(tx, request)
                doc = tx.get(KIND[group], entry_id)
                if doc is None:
                    raise _not_found(group, entry_id)
                body = self._entry_view(tx, doc, group)
            return HttpResponse(200, body, note=f"{NOUN[group]} {entry_id}")
        if request.method == "DELETE":
            with self.write() as tx:
                self._authorize(tx, request)
                doc = tx.get(KIND[group], entry_id)
                if doc is None:
                    raise _not_found(group, entry_id)
                _check_if_match(request, doc)
                delete_entry(tx, entry_id, group=group, etag=None)
            return HttpResponse(204, note=f"{NOUN[group]} {entry_id} deleted")
        with self.write() as tx:
            self._authorize(tx, request)
            body = _json_body(request)
            old = tx.get(KIND[group], entry_id)
            if_match = request.header("If-Match")
            if if_match is not None and old is None:
                raise Refusal(
                    412,
                    E_PRECONDITION,
                    f"{NOUN[group]} {entry_id!r} does not exist, so If-Match {if_match} cannot match",
                )
            if old is not None:
                _check_if_match(request, old)
            entry, created = self._put_entry(tx, body, group, entry_id, old)
        return HttpResponse(
            200, entry.to_dict(show_keys=True), note=f"{NOUN[group]} {entry.id} {'created' if created else 'updated'}"
        )

    def _put_entry(self, tx: Transaction, body: Any, group: bool, entry_id: str, old: Json | None) -> tuple[Any, bool]:
        """Create or replace one entry from its REST body; returns (entry, created)."""

        entry = _entry_from_body(body, group, entry_id, old)
        now = self.clock.now()
        if old is None:
            return add_entry(tx, entry, now), True
        entry = check_entry(tx, entry, load_service(tx, now).allocation_policy)
        entry = replace(entry, etag=new_etag(), created=old.get("createdDateTimeUtc"), updated=format_timestamp(now))
        tx.put(KIND[group], entry.to_dict())
        count_operations(tx, now)
        return entry, False

    def _entry_view(self, tx: Transaction, doc: Json, group: bool) -> Json:
        """An entry as GET and query return it: no symmetric keys; an individual enrollment with its registration state."""

        if group:
            return EnrollmentGroup.from_stored(doc).to_dict(show_keys=False)
        view = IndividualEnrollment.from_stored(doc).to_dict(show_keys=False)
        record = tx.get("registrations", doc["registrationId"])
        if record is not None:
            view["registrationState"] = _registration_view(record)
        return view

    def _attestation(self, request: HttpRequest, group: bool, entry_id: str) -> HttpResponse:

        with self.read() as tx:
            self._authorize(tx, request)
            doc = tx.get(KIND[group], entry_id)
        if doc is None:
            raise _not_found(group, entry_id)
        mechanism = Attestation.from_stored(doc["attestation"], group=group).to_dict(group=group, show_keys=True)
        return HttpResponse(200, mechanism, note=f"{NOUN[group]} {entry_id} attestation mechanism")

    def _entry_query(self, request: HttpRequest, group: bool) -> HttpResponse:

        with self.read() as tx:
            self._authorize(tx, request)
            _check_query(_json_body(request, default=None))
            docs = list(tx.scan(KIND[group]))
            size, after = _page_request(request)
            page, more = _page(docs, "enrollmentGroupId" if group else "registrationId", size, after)
            items = [self._entry_view(tx, doc, group) for doc in page]
        return _page_response(
            items,
            more,
            size,
            "EnrollmentGroup" if group else "Enrollment",
            "enrollmentGroupId" if group else "registrationId",
        )

    def _bulk(self, request: HttpRequest, group: bool) -> HttpResponse:

        items_field = "enrollmentGroups" if group else "enrollments"
        id_field = "enrollmentGroupId" if group else "registrationId"
        errors: list[Json] = []
        with self.write() as tx:
            self._authorize(tx, request)
            body = _json_body(request)
            if not isinstance(body, dict):
                raise Refusal(
                    400, E_BAD_REQUEST, f"the body must be a BulkEnrollmentOperation object {{mode, {items_field}}}"
                )
            mode = choice(body.get("mode"), ("create", "update", "updateIfMatchETag", "delete"), "mode")
            items = body.get(items_field)
            if not isinstance(items, list) or not items:
                raise Refusal(400, E_BAD_REQUEST, f"{items_field} must be a non-empty list")
            if len(items) > MAX_BULK_ITEMS:
                raise Refusal(
                    400,
                    E_BAD_REQUEST,
                    f"a bulk operation takes at most {MAX_BULK_ITEMS} items, not {len(items)}",
                    hint="split it into several calls",
                )
            for item in items:
                item_id = item.get(id_field) if isinstance(item, dict) else None
                try:
                    if not isinstance(item_id, str) or not item_id:
                        raise Refusal(400, E_BAD_REQUEST, f"every item needs {id_field}")
                    old = tx.get(KIND[group], item_id)
                    if mode == "create" and old is not None:
                        raise Refusal(409, E_CONFLICT, f"{item_id!r} already exists")
                    if mode in ("updateIfMatchETag", "delete") and old is None:
                        raise _not_found(group, item_id)
                    stale = old is not None and not same_etag(str(item.get("etag") or ""), old.get("etag"))
                    if mode == "updateIfMatchETag" and stale:
                        raise Refusal(412, E_PRECONDITION, f"the etag of {item_id!r} does not match")
                    if mode == "delete":
                        delete_entry(tx, item_id, group=group, etag=None)
                    else:
                        self._put_entry(tx, item, group, item_id, old)
                except (Refusal, DpsError) as exc:
                    refusal = exc if isinstance(exc, Refusal) else refusal_for(exc)
                    errors.append({id_field: item_id, "errorCode": refusal.code, "errorStatus": refusal.message})
        return HttpResponse(
            200,
            {"isSuccessful": not errors, "errors": errors},
            note=f"bulk {mode} of {len(items)}: {len(errors)} failed",
        )

    # -- registration states

    def _registration(self, request: HttpRequest, registration_id: str) -> HttpResponse:
        if request.method == "GET":
            with self.read() as tx:
                self._authorize(tx, request)
                record = tx.get("registrations", registration_id)
            if record is None:
                raise _registration_not_found(registration_id)
            return HttpResponse(200, _registration_view(record), note=f"registration {registration_id}")
        with self.write() as tx:
            self._authorize(tx, request)
            record = tx.get("registrations", registration_id)
            if record is None:
                raise _registration_not_found(registration_id)
            _check_if_match(request, record)
            tx.delete("registrations", registration_id)
        return HttpResponse(204, note=f"registration {registration_id} deleted")

    def _registration_query(self, request: HttpRequest, group_id: str) -> HttpResponse:

        with self.read() as tx:
            self._authorize(tx, request)
            _check_query(_json_body(request, default=None))  # the CLI sends no body, Node a QuerySpecification
            views = [found.service_view() for found in list_registrations(tx, group=group_id)]
        size, after = _page_request(request)
        page, more = _page(views, "registrationId", size, after)
        return _page_response(page, more, size, "DeviceRegistration", "registrationId")


# --------------------------------------------------------------------------- helpers


def _json_body(request: HttpRequest, default: Any = ...) -> Any:
    """The request's JSON body, through the one parser for untrusted JSON (nesting limited)."""
    if not request.body.strip():
        if default is ...:
            raise Refusal(400, E_BAD_REQUEST, "the request needs a JSON body")
        return default
    try:
        return parse_json(request.body, "the request body", document=True)
    except InvalidInput as exc:
        raise Refusal(400, E_BAD_REQUEST, exc.message) from None


def _not_found(group: bool, entry_id: str) -> Refusal:
    noun = "enrollment group" if group else "enrollment"
    return Refusal(404, E_ENROLLMENT_NOT_FOUND, f"{noun} {entry_id!r} not found")


def _registration_not_found(registration_id: str) -> Refusal:
    return Refusal(404, E_REGISTRATION_NOT_FOUND, f"no registration record for {registration_id!r}")


def _check_if_match(request: HttpRequest, doc: Json) -> None:
    if_match = request.header("If-Match")
    if if_match is not None and not same_etag(if_match.strip(), doc.get("etag")):
        raise Refusal(
            412,
            E_PRECONDITION,
            f"precondition failed: etag {if_match} is not the current {doc.get('etag')}",
            hint="read it again and retry with the current etag",
        )


def _registration_view(record: Json) -> Json:
    """The service's `DeviceRegistrationState` of a stored registration record."""
    return Registration.from_doc(record).service_view()


def _entry_from_body(body: Any, group: bool, entry_id: str, old: Json | None) -> Any:
    """An entry from a REST body: ID checked against the path, missing keys kept or generated, certificates re-read."""

    if not isinstance(body, dict):
        raise Refusal(
            400, E_BAD_REQUEST, f"the body must be an {'EnrollmentGroup' if group else 'IndividualEnrollment'} object"
        )
    id_field = "enrollmentGroupId" if group else "registrationId"
    given = body.get(id_field)
    if given is None:
        body = {**body, id_field: entry_id}
    elif not isinstance(given, str) or given.lower() != entry_id.lower():
        raise Refusal(400, E_BAD_REQUEST, f"{id_field} {given!r} in the body is not the {entry_id!r} of the path")
    model = EnrollmentGroup if group else IndividualEnrollment
    entry = model.from_dict(body)
    att = entry.attestation
    if att.type == "symmetricKey":
        previous = Attestation.from_stored(old["attestation"], group=group) if old is not None else None
        keep = previous if previous is not None and previous.type == "symmetricKey" else None
        # A GET answer sent back (keys left out) keeps the stored keys; a new entry without keys gets fresh ones.
        att = replace(
            att,
            primary_key=att.primary_key or (keep.primary_key if keep else None) or generate_key(),
            secondary_key=att.secondary_key or (keep.secondary_key if keep else None) or generate_key(),
        )
    elif att.type == "tpm":
        att = replace(att, endorsement_key=validate_endorsement_key(att.endorsement_key or ""))
    else:
        registration_id = None if group else entry.id
        where = f"{'enrollment group' if group else 'enrollment'} {entry.id!r}"
        refs = [
            certificate_ref(
                ref.certificate, f"{where} {slot} certificate", registration_id=registration_id, require_ca=group
            )
            if ref
            else None
            for slot, ref in (("primary", att.primary_cert), ("secondary", att.secondary_cert))
        ]
        if refs[0] is None and not att.primary_ca:
            raise Refusal(
                400, E_BAD_REQUEST, f"{where} needs a primary certificate" + (" or CA reference" if group else "")
            )
        att = replace(att, primary_cert=refs[0], secondary_cert=refs[1])
    return replace(entry, attestation=att)


def _check_query(spec: Any) -> None:
    """DPS queries select everything: `*` or `SELECT *`; WHERE clauses are not supported (DPS FAQ)."""
    if spec is None:
        return
    if not isinstance(spec, dict):
        raise Refusal(400, E_BAD_REQUEST, 'the body must be a QuerySpecification object {"query": "*"}')
    text = spec.get("query", "*")
    if not isinstance(text, str):
        raise Refusal(400, E_BAD_REQUEST, "query must be a string")
    if " where " in f" {' '.join(text.lower().split())} ":
        raise Refusal(
            400, E_BAD_REQUEST, "DPS queries do not support WHERE clauses", hint='query "*" and filter the results'
        )


def _page_request(request: HttpRequest) -> tuple[int, str | None]:
    raw = request.header("x-ms-max-item-count")
    size = DEFAULT_PAGE_SIZE
    if raw:
        try:
            size = int(raw)
        except ValueError:
            raise Refusal(400, E_BAD_REQUEST, f"x-ms-max-item-count {raw!r} is not a whole number") from None
        if size < 1:
            raise Refusal(400, E_BAD_REQUEST, "x-ms-max-item-count must be at least 1")
        size = min(size, MAX_PAGE_SIZE)
    token = request.header("x-ms-continuation")
    after = None
    if token:
        try:
            after = base64.b64decode(
                token.encode("ascii") + b"=" * (-len(token) % 4), altchars=b"-_", validate=True
            ).decode("utf-8")
        except (binascii.Error, ValueError, UnicodeError):
            raise Refusal(400, E_BAD_REQUEST, "x-ms-continuation is not a token this service gave") from None
    return size, after


def _page(docs: list[Json], id_field: str, size: int, after: str | None) -> tuple[list[Json], bool]:
    """Keyset paging over the (case-insensitive) ID: a page stays right when records come and go between pages."""
    ordered = sorted(docs, key=lambda d: str(d[id_field]).lower())
    if after is not None:
        ordered = [d for d in ordered if str(d[id_field]).lower() > after]
    return ordered[:size], len(ordered) > size


def _page_response(items: list[Json], more: bool, size: int, item_type: str, id_field: str) -> HttpResponse:
    headers = {"x-ms-item-type": item_type, "x-ms-max-item-count": str(size)}
    if more:
        # Present only when another page exists: the Node client's hasMoreResults is "the header is there".
        last = str(items[-1][id_field]).lower()
        headers["x-ms-continuation"] = base64.urlsafe_b64encode(last.encode("utf-8")).decode("ascii").rstrip("=")
    return HttpResponse(
        200,
        items,
        headers,
        note=f"query: {len(items)} {item_type}{'' if len(items) == 1 else 's'}{', more' if more else ''}",
    )


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
