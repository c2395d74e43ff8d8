"""The enrollment list: individual enrollments and enrollment groups, created, changed and removed as DPS does."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

from dpsctl.core.clock import format_timestamp, new_etag, same_etag
from dpsctl.core.credentials import CredentialInput, build_attestation, updated_attestation
from dpsctl.core.errors import Conflict, InvalidInput, NotFound
from dpsctl.core.ids import (
    validate_device_id,
    validate_group_id,
    validate_registration_id,
)
from dpsctl.core.models import (
    ALLOCATION_POLICIES,
    PROVISIONING_STATUSES,
    Attestation,
    CustomAllocation,
    EnrollmentGroup,
    IndividualEnrollment,
    ReprovisionPolicy,
)
from dpsctl.core.service import count_operations, load_service
from dpsctl.core.validation import (
    choice,
    filter_choice,
    validate_custom_api_version,
    validate_initial_twin,
    validate_webhook_url,
)
from dpsctl.store import Transaction

# Imports inside functions in this module load what only some commands need: every dpsctl process that imports
# the engine would pay for them otherwise (docs/development.md, "Checks that run in CI").

AnyEnrollment = IndividualEnrollment | EnrollmentGroup
EntryT = TypeVar("EntryT", bound=IndividualEnrollment | EnrollmentGroup)  # the entry type a function keeps

MAX_INDIVIDUAL_ENROLLMENTS = 1_000_000
MAX_GROUPS_PER_TYPE = 100

KIND = {False: "enrollments", True: "groups"}
NOUN = {False: "enrollment", True: "enrollment group"}


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class EnrollmentOptions:
    """The settings shared by `add` and `update` of enrollments and groups (None = leave as is / default)."""

    device_id: str | None = None
    hubs: tuple[str, ...] | None = None
    allocation_policy: str | None = None
    webhook_url: str | None = None
    allocation_command: str | None = None
    api_version: str | None = None
    initial_twin: dict[str, Any] | None = None
    iot_edge: bool | None = None
    provisioning_status: str | None = None
    reprovision_policy: str | None = None
    # One part of the initial twin, the other part kept (az --initial-twin-tags / --initial-twin-properties).
    twin_tags: dict[str, Any] | None = None
    twin_desired: dict[str, Any] | None = None
    device_information: dict[str, Any] | None = None


# --------------------------------------------------------------------------- reading


def get_enrollment(tx: Transaction, registration_id: str) -> IndividualEnrollment:
    """The individual enrollment for a registration ID, or NotFound."""
    doc = tx.get("enrollments", registration_id)
    if doc is None:
        raise NotFound(f"enrollment {registration_id!r} not found", hint="see `dpsctl enrollment list`")
    return IndividualEnrollment.from_stored(doc)


def get_group(tx: Transaction, group_id: str) -> EnrollmentGroup:
    """The enrollment group, or NotFound."""
    doc = tx.get("groups", group_id)
    if doc is None:
        raise NotFound(f"enrollment group {group_id!r} not found", hint="see `dpsctl enrollment-group list`")
    return EnrollmentGroup.from_stored(doc)


def get_entry(tx: Transaction, entry_id: str, *, group: bool) -> AnyEnrollment:
    """An individual enrollment or a group by ID."""
    return get_group(tx, entry_id) if group else get_enrollment(tx, entry_id)


def list_entries(
    tx: Transaction, *, group: bool, status: str | None = None, attestation: str | None = None
) -> list[AnyEnrollment]:
    """Entries of one kind, filtered by provisioning status and attestation type."""
    model = EnrollmentGroup if group else IndividualEnrollment
    if status is not None:
        status = filter_choice(status, PROVISIONING_STATUSES, "status")
    if attestation is not None:
        attestation = filter_choice(attestation, ("symmetricKey", "x509", "tpm"), "attestation type")
    entries = [model.from_stored(doc) for doc in tx.scan(KIND[group])]
    return [
        e
        for e in entries
        if (status is None or e.provisioning_status == status)
        and (attestation is None or e.attestation.type == attestation)
    ]


# --------------------------------------------------------------------------- checks


def apply_options(entry: EntryT, opts: EnrollmentOptions) -> EntryT:
    """Merge user options into an entry (pure); references are checked by `check_entry`."""
    changes: dict[str, Any] = {}
    if opts.device_id is not None:
        if entry.is_group:
            raise InvalidInput("enrollment groups have no device ID: devices use their registration ID")
        changes["device_id"] = validate_device_id(opts.device_id) if opts.device_id else None
    if opts.hubs is not None:
        changes["iot_hubs"] = tuple(opts.hubs)
    if opts.allocation_policy is not None:
        changes["allocation_policy"] = choice(opts.allocation_policy, ALLOCATION_POLICIES, "allocation policy")
    if opts.initial_twin is not None:
        changes["initial_twin"] = validate_initial_twin(opts.initial_twin) or None
    if opts.twin_tags is not None or opts.twin_desired is not None:
        changes["initial_twin"] = _twin_parts(
            changes.get("initial_twin", entry.initial_twin), opts.twin_tags, opts.twin_desired
        )
    if opts.device_information is not None:
        if entry.is_group:
            raise InvalidInput("enrollment groups have no device information: it belongs to individual enrollments")
        changes["optional_device_information"] = opts.device_information or None
    if opts.iot_edge is not None:
        changes["iot_edge"] = opts.iot_edge
    if opts.provisioning_status is not None:
        changes["provisioning_status"] = choice(opts.provisioning_status, PROVISIONING_STATUSES, "provisioning status")
    if opts.reprovision_policy is not None:
        changes["reprovision_policy"] = ReprovisionPolicy.from_name(opts.reprovision_policy)
    if opts.webhook_url is not None or opts.allocation_command is not None or opts.api_version is not None:
        current = entry.custom_allocation or CustomAllocation()
        url = opts.webhook_url if opts.webhook_url is not None else current.webhook_url
        changes["custom_allocation"] = CustomAllocation(
            validate_webhook_url(url) if url else None,
            opts.api_version or current.api_version,
            opts.allocation_command if opts.allocation_command is not None else current.allocation_command,
        )
        if opts.allocation_policy is None and entry.allocation_policy is None:
            changes["allocation_policy"] = "custom"  # a webhook only means something with custom allocation
    return replace(entry, **changes)


def _twin_parts(
    twin: dict[str, Any] | None, tags: dict[str, Any] | None, desired: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The initial twin with its tags and/or desired properties replaced, the part not given kept (as az merges them)."""
    import copy

    merged: dict[str, Any] = copy.deepcopy(twin) if twin else {}
    if tags is not None:
        merged["tags"] = tags
    if desired is not None:
        merged["properties"] = {**merged.get("properties", {}), "desired": desired}
    return validate_initial_twin(merged) or None


def check_entry(tx: Transaction, entry: AnyEnrollment, service_policy: str) -> AnyEnrollment:
    """Validate the allocation settings against the linked hubs; returns the entry with hub names normalised."""
    from dpsctl.core.hubs import resolve_hubs

    hubs = resolve_hubs(tx, entry.iot_hubs)
    if hubs != entry.iot_hubs:  # dataclasses.replace is costly; an import of a million entries notices
        entry = replace(entry, iot_hubs=hubs)
    policy = entry.allocation_policy or service_policy
    noun = f"{NOUN[entry.is_group]} {entry.id!r}"
    if policy == "static" and len(entry.iot_hubs) != 1:
        raise InvalidInput(
            f"{noun} uses static allocation and must name exactly one hub (it names {len(entry.iot_hubs)})",
            hint="pass --hub NAME once",
        )
    if policy == "custom":
        custom = entry.custom_allocation
        if custom is None or not (custom.webhook_url or custom.allocation_command):
            raise InvalidInput(f"{noun} uses custom allocation and needs --webhook-url or --allocation-command")
    if entry.custom_allocation is not None:
        version = validate_custom_api_version(
            entry.custom_allocation.api_version, f"the custom allocation api-version of {noun}"
        )
        if version != entry.custom_allocation.api_version:
            entry = replace(entry, custom_allocation=replace(entry.custom_allocation, api_version=version))
    if entry.attestation.type == "symmetricKey":
        from dpsctl.core.keys import decode_key

        decode_key(entry.attestation.primary_key or "", what=f"primary key of {noun}")
        decode_key(entry.attestation.secondary_key or "", what=f"secondary key of {noun}")
    if entry.attestation.primary_ca or entry.attestation.secondary_ca:
        for name in (entry.attestation.primary_ca, entry.attestation.secondary_ca):
            if name and tx.get("cas", name) is None:
                raise InvalidInput(
                    f"CA certificate {name!r} is not uploaded to the service",
                    hint="add it with `dpsctl ca add NAME --cert FILE`",
                )
    if entry.attestation.type == "x509":
        _check_certificates_unique(tx, entry)
    return entry


def _check_limits(tx: Transaction, entry: AnyEnrollment) -> None:
    if entry.is_group:
        same_type = len(tx.find("groups", "attestation", entry.attestation.type))
        if same_type >= MAX_GROUPS_PER_TYPE:
            raise Conflict(
                f"the service already has {MAX_GROUPS_PER_TYPE} {entry.attestation.type} enrollment groups, the DPS limit"
            )
    elif tx.count("enrollments") >= MAX_INDIVIDUAL_ENROLLMENTS:
        raise Conflict(f"the service already has {MAX_INDIVIDUAL_ENROLLMENTS:,} individual enrollments, the DPS limit")


def _stamp(entry: AnyEnrollment, now: datetime, *, created: bool) -> AnyEnrollment:
    ts = format_timestamp(now)
    return replace(entry, etag=new_etag(), updated=ts, created=ts if created else entry.created)


# --------------------------------------------------------------------------- one entry per certificate


def _entry_certificates(tx: Transaction, attestation: Attestation, *, group: bool) -> list[tuple[str, str]]:
    """(SHA-1 thumbprint, how the entry names it) of each certificate an X.509 entry stands for."""
    out = []
    for slot, ref in attestation.certificates:
        thumbprint = ref.info.get("sha1Thumbprint")
        if thumbprint:
            out.append((str(thumbprint).upper(), f"its {slot} {'signing' if group else 'device'} certificate"))
    for slot, name in attestation.ca_references:
        ca = tx.get("cas", name)
        if ca is not None:
            out.append((str(ca["thumbprint"]).upper(), f"its {slot} CA reference {ca['name']!r}"))
    return out


def _group_certificate_owners(tx: Transaction) -> dict[str, list[tuple[str, str]]]:
    """Thumbprint -> [(lower-case group ID, "enrollment group 'x' (its primary ...)")] over every X.509 group."""
    owners: dict[str, list[tuple[str, str]]] = {}
    for doc in tx.find("groups", "attestation", "x509"):
        group_id = doc["enrollmentGroupId"]
        attestation = Attestation.from_stored(doc["attestation"], group=True)
        for thumbprint, how in _entry_certificates(tx, attestation, group=True):
            owners.setdefault(thumbprint, []).append((group_id.lower(), f"enrollment group {group_id!r} ({how})"))
    return owners


def _check_certificates_unique(tx: Transaction, entry: AnyEnrollment) -> None:
    """DPS: a certificate can be specified in only one enrollment entry (reference §5, DOC:concepts-x509-attestation).

    Groups hold CA certificates and individual enrollments device certificates, which a device may only present
    as its leaf (a CA leaf is refused); two individual enrollments cannot share one (its CN is the unique
    registration ID). So an entry is compared with the groups, which keeps an import of a million entries linear.
    A group's --signing-cert may not be a CA certificate already uploaded to the service either: that CA is
    named with --ca-ref, so the certificate stays in one place (a dpsctl choice, docs/choices.md).
    """
    mine = _entry_certificates(tx, entry.attestation, group=entry.is_group)
    if not mine:
        return
    # Parsed once per transaction until groups or CAs change: an import of many enrollments reads them once.
    owners = tx.memo(("groups", "cas"), "x509-group-certificates", lambda: _group_certificate_owners(tx))
    noun = f"{NOUN[entry.is_group]} {entry.id!r}"
    for thumbprint, how in mine:
        others = [
            owner
            for group_id, owner in owners.get(thumbprint, [])
            if not (entry.is_group and group_id == entry.id.lower())
        ]
        if others:
            raise Conflict(
                f"{noun}: {how.removeprefix('its ')} (SHA-1 {thumbprint}) is already in {others[0]}; DPS allows a certificate in only one enrollment entry",
                hint="use another certificate, or change or delete the entry that holds it",
            )
    if entry.is_group:
        cas = {str(doc["thumbprint"]).upper(): doc["name"] for doc in tx.scan("cas")}
        for thumbprint, how in mine:
            if "signing certificate" in how and thumbprint in cas:
                raise Conflict(
                    f"{noun}: {how.removeprefix('its ')} (SHA-1 {thumbprint}) is the CA certificate {cas[thumbprint]!r} uploaded to the service",
                    hint=f"refer to the uploaded CA instead: --ca-ref {cas[thumbprint]}",
                )


# --------------------------------------------------------------------------- writing


def add_entry(tx: Transaction, entry: AnyEnrollment, now: datetime) -> AnyEnrollment:
    """Create an enrollment or group; refuses a duplicate ID (case-insensitive) and enforces DPS limits."""
    kind = KIND[entry.is_group]
    if tx.get(kind, entry.id) is not None:
        raise Conflict(
            f"{NOUN[entry.is_group]} {entry.id!r} already exists",
            hint=f"change it with `dpsctl {'enrollment-group' if entry.is_group else 'enrollment'} update {entry.id}`",
        )
    service = load_service(tx, now)
    entry = check_entry(tx, entry, service.allocation_policy)
    _check_limits(tx, entry)
    entry = _stamp(entry, now, created=True)
    tx.put(kind, entry.to_dict())
    count_operations(tx, now)
    return entry


def new_enrollment(
    registration_id: str, attestation_type: str, cred: CredentialInput, opts: EnrollmentOptions
) -> IndividualEnrollment:
    """An individual enrollment built from user input (not yet stored)."""
    reg_id = validate_registration_id(registration_id)
    attestation = build_attestation(attestation_type, cred, group=False, registration_id=reg_id)
    entry = IndividualEnrollment(registration_id=reg_id, attestation=attestation)
    return apply_options(entry, opts)


def new_group(group_id: str, attestation_type: str, cred: CredentialInput, opts: EnrollmentOptions) -> EnrollmentGroup:
    """An enrollment group built from user input (not yet stored)."""
    gid = validate_group_id(group_id)
    attestation = build_attestation(attestation_type, cred, group=True, registration_id=None)
    entry = EnrollmentGroup(enrollment_group_id=gid, attestation=attestation)
    return apply_options(entry, opts)


def check_etag(entry: AnyEnrollment, etag: str | None) -> None:
    """A stale etag is a conflict (DPS answers 412)."""
    if etag is not None and not same_etag(etag, entry.etag):
        raise Conflict(
            f"{NOUN[entry.is_group]} {entry.id!r} has changed since etag {etag} (it is now {entry.etag})",
            hint="show it again, then retry with the current --etag",
        )


def update_entry(
    tx: Transaction,
    entry_id: str,
    *,
    group: bool,
    opts: EnrollmentOptions,
    cred: CredentialInput | None,
    etag: str | None,
    now: datetime,
) -> AnyEnrollment:
    """Change an entry in place (same attestation type); the etag changes."""
    entry = get_entry(tx, entry_id, group=group)
    check_etag(entry, etag)
    if cred is not None and cred != CredentialInput():
        entry = replace(entry, attestation=updated_attestation(entry, cred))
    entry = apply_options(entry, opts)
    entry = check_entry(tx, entry, load_service(tx, now).allocation_policy)
    entry = _stamp(entry, now, created=False)
    tx.put(KIND[group], entry.to_dict())
    count_operations(tx, now)
    return entry


def delete_entry(tx: Transaction, entry_id: str, *, group: bool, etag: str | None) -> AnyEnrollment:
    """Remove an entry; registration records stay (DPS keeps them, orphaned for groups)."""
    try:
        entry = get_entry(tx, entry_id, group=group)
    except InvalidInput:
        # A record an older dpsctl stored beyond today's limits (optionalDeviceInformation 400 levels deep):
        # it no longer parses, but it must stay deletable. Read it without that field.
        doc = tx.get(KIND[group], entry_id)
        if doc is None or "optionalDeviceInformation" not in doc:
            raise
        model = EnrollmentGroup if group else IndividualEnrollment
        entry = model.from_stored({k: v for k, v in doc.items() if k != "optionalDeviceInformation"})
    check_etag(entry, etag)
    tx.delete(KIND[group], entry.id)
    return entry


def compute_device_key(tx: Transaction, group_id: str, registration_id: str, *, secondary: bool = False) -> str:
    """The key a device of a symmetric-key group uses: HMAC-SHA256 of its registration ID with the group key."""
    from dpsctl.core.keys import derive_device_key

    group = get_group(tx, group_id)
    if group.attestation.type != "symmetricKey":
        raise InvalidInput(
            f"enrollment group {group.id!r} uses {group.attestation.type} attestation, not symmetric keys"
        )
    validate_registration_id(registration_id)
    key = group.attestation.secondary_key if secondary else group.attestation.primary_key
    return derive_device_key(key or "", registration_id)
