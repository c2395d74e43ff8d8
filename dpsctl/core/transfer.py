"""Import and export of the whole enrollment list as one YAML or JSON document."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from dpsctl.core.credentials import certificate_ref
from dpsctl.core.enrollments import KIND, AnyEnrollment, check_entry
from dpsctl.core.errors import DpsError, InvalidInput
from dpsctl.core.models import Attestation, EnrollmentGroup, IndividualEnrollment
from dpsctl.core.service import count_operations, load_service, save_service
from dpsctl.core.service_records import LinkedHub, ServiceSettings
from dpsctl.core.untrusted_json import MAX_DOCUMENT_DEPTH, check_depth, parse_json
from dpsctl.core.validation import check_hub_connection_string, check_keys, default_hub_connection_string, expect
from dpsctl.store import Transaction

# Imports inside functions in this module load what only some commands need: every dpsctl process that imports
# the engine would pay for them otherwise (docs/development.md, "Checks that run in CI").

DOCUMENT_FIELDS = {"service", "linkedHubs", "certificates", "enrollments", "enrollmentGroups"}
CA_FIELDS = {"name", "certificate", "isVerified", "created", "updated", "etag"}
MAX_DOCUMENT_BYTES = 512 * 1024 * 1024


RECORD_SECTIONS = ("linkedHubs", "certificates", "enrollments", "enrollmentGroups")


@dataclass
class ImportPlan:
    """What an import will do (or did): IDs per action and record type."""

    created: dict[str, list[str]] = field(default_factory=lambda: {name: [] for name in RECORD_SECTIONS})
    updated: dict[str, list[str]] = field(default_factory=lambda: {name: [] for name in RECORD_SECTIONS})
    unchanged: dict[str, list[str]] = field(default_factory=lambda: {name: [] for name in RECORD_SECTIONS})
    service: str = "unchanged"

    def to_dict(self) -> dict[str, Any]:
        """The plan as shown by `import -o json`."""
        return {
            "service": self.service,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "counts": {
                action: sum(len(v) for v in getattr(self, action).values())
                for action in ("created", "updated", "unchanged")
            },
        }


def parse_document(text: str | bytes, source: str) -> dict[str, Any]:
    """Parse an import file: JSON, or YAML with the safe loader (no Python tags, no aliases bombs)."""
    if isinstance(text, bytes):
        if len(text) > MAX_DOCUMENT_BYTES:
            raise InvalidInput(f"{source} is larger than {MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB")
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InvalidInput(f"{source} is not UTF-8 text") from None
    stripped = text.lstrip()
    if stripped.startswith("{") or stripped.startswith("["):
        doc = parse_json(text, source, document=True)
    else:
        doc = load_yaml(text, source)
    if doc is None:
        doc = {}
    check_depth(doc, source, limit=MAX_DOCUMENT_DEPTH)  # YAML too: the values in it are checked where they are read
    if not isinstance(doc, dict):
        raise InvalidInput(f"{source} must hold an object with linkedHubs, enrollments and enrollmentGroups")
    check_keys(doc, DOCUMENT_FIELDS, source)
    return doc


def load_yaml(text: str, source: str) -> Any:
    """A YAML import document: the safe loader (no Python tags), refusing anchors and aliases (their expansion is exponential)."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        node = yaml.compose(text, Loader=loader)
        if node is not None and _has_alias(node, set()):
            # Aliases are how "billion laughs" documents expand; enrollment files never need them.
            raise InvalidInput(
                f"{source} uses YAML anchors/aliases, which dpsctl does not accept", hint="write the values out in full"
            )
        return yaml.load(text, Loader=loader)
    except RecursionError:  # composing and the alias check recurse once per level
        raise InvalidInput(f"{source} nests YAML collections too deeply to be an import document") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise InvalidInput(f"{source} is not valid YAML{line}: {getattr(exc, 'problem', None) or exc}") from None


def _has_alias(node: Any, seen: set[int]) -> bool:
    """True when a composed YAML node graph refers to a node twice (an alias)."""
    if id(node) in seen:
        return True
    seen.add(id(node))
    value = node.value
    if isinstance(value, list):
        for item in value:
            children = item if isinstance(item, tuple) else (item,)
            if any(_has_alias(child, seen) for child in children):
                return True
    return False


def _records(doc: dict[str, Any], name: str) -> list[Any]:
    return expect(doc.get(name) or [], list, name)


def _comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """A record without the fields the service stamps, for deciding 'unchanged'."""
    return {
        k: v
        for k, v in doc.items()
        if k not in ("etag", "createdDateTimeUtc", "lastUpdatedDateTimeUtc", "registrationState")
    }


def _recheck_certificates(entry: AnyEnrollment) -> AnyEnrollment:
    """Certificates in a file are parsed again: their info is derived, never trusted from the file."""
    att = entry.attestation
    if att.type == "symmetricKey":
        from dpsctl.core.keys import generate_key

        if att.primary_key and att.secondary_key:
            return entry
        return replace(
            entry,
            attestation=replace(
                att, primary_key=att.primary_key or generate_key(), secondary_key=att.secondary_key or generate_key()
            ),
        )
    if att.type == "tpm":
        from dpsctl.core.tpm import validate_endorsement_key

        return replace(
            entry, attestation=replace(att, endorsement_key=validate_endorsement_key(att.endorsement_key or ""))
        )
    reg_id = None if entry.is_group else entry.id
    where = f"{'enrollmentGroups' if entry.is_group else 'enrollments'} {entry.id!r}"
    refs = [
        certificate_ref(
            ref.certificate, f"{where} {slot} certificate", registration_id=reg_id, require_ca=entry.is_group
        )
        if ref
        else None
        for slot, ref in (("primary", att.primary_cert), ("secondary", att.secondary_cert))
    ]
    if refs[0] is None and not att.primary_ca:
        raise InvalidInput(f"{where} has no primary certificate")
    return replace(entry, attestation=replace(att, primary_cert=refs[0], secondary_cert=refs[1]))


def _keep_existing_keys(new: AnyEnrollment, old_doc: dict[str, Any] | None) -> AnyEnrollment:
    """A key the file leaves out keeps its stored value (an export without --show-keys has none to give)."""
    att = new.attestation
    if old_doc is None or att.type != "symmetricKey" or (att.primary_key and att.secondary_key):
        return new
    old = Attestation.from_stored(old_doc["attestation"], group=new.is_group)
    if old.type != "symmetricKey":
        return new
    keys = replace(
        att, primary_key=att.primary_key or old.primary_key, secondary_key=att.secondary_key or old.secondary_key
    )
    return replace(new, attestation=keys)


def import_document(tx: Transaction, doc: dict[str, Any], now: datetime, *, dry_run: bool = False) -> ImportPlan:
    """Validate every record first, then create or update; idempotent. With dry_run nothing is written."""
    from dpsctl.core.clock import format_timestamp, new_etag

    plan = ImportPlan()
    service = load_service(tx, now)
    new_service = service
    if doc.get("service") is not None:
        given = ServiceSettings.from_dict({**service.to_dict(), **expect(doc["service"], dict, "service")}, "service")
        new_service = replace(
            given, operations=service.operations, created=service.created, history_sequence=service.history_sequence
        )
        if new_service != service:
            plan.service = "updated"

    hubs: list[LinkedHub] = []
    seen: set[str] = set()
    for i, raw in enumerate(_records(doc, "linkedHubs")):
        hub = LinkedHub.from_dict(raw, f"linkedHubs[{i}]")
        if hub.name in seen:
            raise InvalidInput(f"linkedHubs[{i}] repeats hub {hub.name}")
        seen.add(hub.name)
        hubs.append(hub)
    cas = _parse_cas(doc, now)
    known_hubs = {d["name"] for d in tx.scan("hubs")} | seen
    if len(known_hubs) > 50:
        raise InvalidInput(f"the import would link {len(known_hubs)} hubs; DPS allows 50")

    entries: list[AnyEnrollment] = []
    for name, model in (("enrollments", IndividualEnrollment), ("enrollmentGroups", EnrollmentGroup)):
        ids: set[str] = set()
        for i, raw in enumerate(_records(doc, name)):
            entry = model.from_dict(raw, f"{name}[{i}]")
            if entry.id.lower() in ids:
                raise InvalidInput(f"{name}[{i}] repeats ID {entry.id!r} (IDs are case-insensitive)")
            ids.add(entry.id.lower())
            entries.append(entry)

    # Hubs first, so that the entries' hub references resolve inside the same transaction.
    for hub in hubs:
        old = tx.get("hubs", hub.name)
        if "=****" in hub.connection_string:
            # An export without --show-keys masks hub keys: keep the stored key, or simulate a new one.
            hub = replace(
                hub, connection_string=old["connectionString"] if old else default_hub_connection_string(hub.name)
            )
        else:
            check_hub_connection_string(hub.connection_string, hub.name)
        if hub.location is None:
            from dpsctl.core.hubs import DEFAULT_HUB_LOCATION

            # Every linked hub has a location (ARM requires one): the service's, as `hub add` defaults it.
            hub = replace(hub, location=new_service.location or DEFAULT_HUB_LOCATION)
        action = "created" if old is None else ("unchanged" if old == hub.to_dict() else "updated")
        getattr(plan, action)["linkedHubs"].append(hub.name)
        if action != "unchanged":
            tx.put("hubs", hub.to_dict())
    if plan.service == "updated":
        save_service(tx, new_service)
    _import_cas(tx, cas, plan)

    # The stored versions in one read, not one per record (a round trip each on a database server).
    for kind in sorted(set(KIND.values())):
        tx.prefetch(kind, [entry.id for entry in entries if KIND[entry.is_group] == kind])
    operations = 0
    ts = format_timestamp(now)
    group_types: dict[str, int] = {}
    for entry in entries:
        kind = KIND[entry.is_group]
        name = "enrollmentGroups" if entry.is_group else "enrollments"
        old = tx.get(kind, entry.id)
        try:
            entry = _recheck_certificates(_keep_existing_keys(entry, old))
            entry = check_entry(tx, entry, new_service.allocation_policy)
        except DpsError as exc:
            where = f"{name} {entry.id!r}"
            if not exc.message.startswith(where):  # certificate errors name the record already
                raise exc.amended(message=f"{where}: {exc.message}") from exc
            raise
        if entry.is_group:
            group_types[entry.attestation.type] = group_types.get(entry.attestation.type, 0) + 1
        if old is not None and _comparable(old) == _comparable(entry.to_dict()):
            plan.unchanged[name].append(entry.id)
            continue
        if old is None:
            # Keep the file's stamps so that export -> import reproduces a store exactly.
            entry = replace(
                entry, etag=entry.etag or new_etag(), created=entry.created or ts, updated=entry.updated or ts
            )
            plan.created[name].append(entry.id)
        else:
            entry = replace(entry, etag=new_etag(), created=old.get("createdDateTimeUtc"), updated=ts)
            plan.updated[name].append(entry.id)
        operations += 1
        tx.put(kind, entry.to_dict())
    _check_import_limits(tx, group_types)
    count_operations(tx, now, operations)
    if dry_run:
        tx.changes.clear()  # validate and plan everything, write nothing
    return plan


def _parse_cas(doc: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
    """CA certificates of the document, parsed and checked (subject, expiry, thumbprint are derived again)."""
    from dpsctl.core.cas import ca_record

    records: list[dict[str, Any]] = []
    names: set[str] = set()
    for i, raw in enumerate(_records(doc, "certificates")):
        where = f"certificates[{i}]"
        expect(raw, dict, where)
        check_keys(raw, CA_FIELDS, where)
        name = expect(raw.get("name"), str, f"{where}.name")
        if name.lower() in names:
            raise InvalidInput(f"{where} repeats CA name {name!r}")
        names.add(name.lower())
        verified = expect(raw.get("isVerified", False), bool, f"{where}.isVerified")
        record = ca_record(
            name,
            expect(raw.get("certificate"), str, f"{where}.certificate"),
            f"{where} ({name})",
            verified=verified,
            now=now,
        )
        for stamp in ("created", "updated", "etag"):
            if raw.get(stamp):
                record[stamp] = expect(raw[stamp], str, f"{where}.{stamp}")
        records.append(record)
    return records


def _import_cas(tx: Transaction, cas: list[dict[str, Any]], plan: ImportPlan) -> None:
    """Create or update CA records (before the groups that reference them)."""
    from dpsctl.core.cas import MAX_CAS

    for record in cas:
        old = tx.get("cas", record["name"])
        same = old is not None and all(old.get(k) == record[k] for k in ("certificate", "isVerified"))
        if same:
            plan.unchanged["certificates"].append(record["name"])
            continue
        if old is not None:
            record = {**record, "created": old.get("created", record["created"]), "verificationCode": None}
        (plan.updated if old is not None else plan.created)["certificates"].append(record["name"])
        tx.put("cas", record)
    if tx.count("cas") > MAX_CAS:
        raise InvalidInput(f"the import would exceed {MAX_CAS} CA certificates, the DPS limit")


def _check_import_limits(tx: Transaction, group_types: dict[str, int]) -> None:
    from dpsctl.core.enrollments import MAX_GROUPS_PER_TYPE, MAX_INDIVIDUAL_ENROLLMENTS

    if tx.count("enrollments") > MAX_INDIVIDUAL_ENROLLMENTS:
        raise InvalidInput(
            f"the import would exceed {MAX_INDIVIDUAL_ENROLLMENTS:,} individual enrollments, the DPS limit"
        )
    for kind in group_types:
        if len(tx.find("groups", "attestation", kind)) > MAX_GROUPS_PER_TYPE:
            raise InvalidInput(f"the import would exceed {MAX_GROUPS_PER_TYPE} {kind} enrollment groups, the DPS limit")


def export_document(tx: Transaction, now: datetime, *, show_keys: bool = False) -> dict[str, Any]:
    """The whole enrollment list as one importable document (keys only with show_keys)."""
    service = load_service(tx, now).to_dict(show_keys=show_keys)
    service.pop("operations", None)
    service.pop("createdDateTimeUtc", None)
    service.pop("historySequence", None)
    return {
        "service": service,
        "linkedHubs": [LinkedHub.from_stored(d).to_dict(show_keys=show_keys) for d in tx.scan("hubs")],
        "certificates": [
            {
                k: d[k]
                for k in ("name", "certificate", "isVerified", "created", "updated", "etag")
                if d.get(k) is not None
            }
            for d in tx.scan("cas")
        ],
        "enrollments": [
            IndividualEnrollment.from_stored(d).to_dict(show_keys=show_keys) for d in tx.scan("enrollments")
        ],
        "enrollmentGroups": [EnrollmentGroup.from_stored(d).to_dict(show_keys=show_keys) for d in tx.scan("groups")],
    }
