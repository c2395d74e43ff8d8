"""`keys check`: which key a symmetric key is for a device, and whether DPS would accept a SAS token signed with it.

It runs the engine's own matching and attestation (`provisioning.diagnose`, the code behind `provision
--explain`), and adds what the engine does not need to know: what a rejected key actually is. Nothing here
writes to the store, and no key ever appears in a message.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dpsctl.core.checks import Check
from dpsctl.core.errors import DpsError, InvalidInput
from dpsctl.store import Transaction

# Imports inside functions in this module load what only some commands need: every dpsctl process that imports
# the engine would pay for them otherwise (docs/development.md, "Checks that run in CI").

Json = dict[str, Any]

DIAGNOSIS_TOKEN_TTL = 3600


@dataclass
class KeyReport:
    """The outcome of `keys check`: what the key is, and what the engine says about it."""

    registration_id: str
    diagnosis: str  # enrollmentPrimaryKey | enrollmentSecondaryKey | derivedFromGroupKey | groupKey | derivedForOtherSpelling | otherEnrollmentKey | invalid | unknown
    message: str
    match: Json | None = None
    explain: list[Check] = field(default_factory=list)
    error: DpsError | None = None
    hint: str | None = None  # what to do, when the key is a known mistake

    @property
    def accepted(self) -> bool:
        """True when DPS would accept a SAS token signed with this key."""
        return self.error is None

    def to_dict(self) -> Json:
        """The report as data (`-o json`)."""
        doc: Json = {
            "registrationId": self.registration_id,
            "diagnosis": self.diagnosis,
            "message": self.message,
            "match": self.match,
            "accepted": self.accepted,
            "explain": [step.to_dict() for step in self.explain],
        }
        if self.error is not None:
            doc["error"] = self.error.message
            if self.error.hint:
                doc["hint"] = self.error.hint
        return doc


def check_symmetric_key(tx: Transaction, registration_id: str, key_text: str, now: datetime) -> KeyReport:
    """Say which key this is for the registration ID, and whether DPS would accept a SAS token signed with it."""
    from dpsctl.core.attestation import SasCredential
    from dpsctl.core.ids import validate_registration_id
    from dpsctl.core.keys import decode_key
    from dpsctl.core.provisioning import RegistrationRequest, diagnose
    from dpsctl.core.sas import build_sas_token, device_resource_uri
    from dpsctl.core.service import load_service

    reg_id = validate_registration_id(registration_id)
    try:
        raw = decode_key(key_text, what="the key", hint=DEVICE_KEY_HINT)
    except InvalidInput as exc:
        return KeyReport(reg_id, "invalid", exc.message, error=exc)
    report = _identify(tx, reg_id, raw)
    scope = load_service(tx, now).id_scope
    token = build_sas_token(device_resource_uri(scope, reg_id), key_text, int(now.timestamp()) + DIAGNOSIS_TOKEN_TTL)
    diagnosis = diagnose(tx, RegistrationRequest(SasCredential(token), reg_id), now)
    report.explain = diagnosis.explain
    report.error = diagnosis.error
    if report.error is not None and report.hint is not None:
        report.error = report.error.amended(hint=report.hint)
    return report


DEVICE_KEY_HINT = (
    "a device's key is its individual enrollment's key (dpsctl enrollment show ID --show-keys) or, in a group,"
    " the key derived for it (dpsctl enrollment-group compute-device-key GROUP --registration-id ID -o tsv)"
)


def key_mistake(tx: Transaction, registration_id: str, key_text: str) -> str | None:
    """For a refused device key: what the key really is and what to use instead, when it is a known mistake."""
    from dpsctl.core.keys import decode_key

    try:
        report = _identify(tx, registration_id, decode_key(key_text))
    except InvalidInput:
        return None
    return report.hint


def _identify(tx: Transaction, reg_id: str, raw: bytes) -> KeyReport:
    """Compare the key with every key the store holds, and with keys derived from group keys."""
    from dpsctl.core.keys import derive_device_key
    from dpsctl.core.models import EnrollmentGroup, IndividualEnrollment

    def same(candidate: str | None) -> bool:
        if not candidate:
            return False
        try:
            other = base64.b64decode(candidate.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(other, raw)

    def slots(a: Any) -> list[tuple[str, str]]:
        return [(slot, k) for slot, k in (("primary", a.primary_key), ("secondary", a.secondary_key)) if k]

    doc = tx.get("enrollments", reg_id)
    own = IndividualEnrollment.from_stored(doc) if doc is not None else None
    if own is not None and own.attestation.type == "symmetricKey":
        for slot, k in slots(own.attestation):
            if same(k):
                return KeyReport(
                    reg_id,
                    f"enrollment{slot.title()}Key",
                    f"the {slot} key of individual enrollment {own.id!r}",
                    {"individualEnrollment": own.id, "key": slot},
                )
    groups = [EnrollmentGroup.from_stored(d) for d in tx.find("groups", "attestation", "symmetricKey")]
    precedence = f"; but individual enrollment {own.id!r} takes precedence over every group" if own is not None else ""
    for group in groups:
        for slot, k in slots(group.attestation):
            if same(derive_device_key(k, reg_id)):
                return KeyReport(
                    reg_id,
                    "derivedFromGroupKey",
                    f"derived for {reg_id!r} from the {slot} key of enrollment group {group.id!r}{precedence}",
                    {"enrollmentGroup": group.id, "key": slot},
                )
    for group in groups:
        for slot, k in slots(group.attestation):
            if same(k):
                return KeyReport(
                    reg_id,
                    "groupKey",
                    f"the {slot} key of enrollment group {group.id!r} itself, not a device key: a device must use the key derived from it"
                    f" (dpsctl keys derive --group-key @GROUP_KEY_FILE --registration-id {reg_id})",
                    {"enrollmentGroup": group.id, "key": slot},
                    hint=f"use the derived key: dpsctl enrollment-group compute-device-key {group.id} --registration-id {reg_id}"
                    + (" --secondary" if slot == "secondary" else "")
                    + " -o tsv",
                )
    for spelling in _other_spellings(tx, reg_id):
        for group in groups:
            for slot, k in slots(group.attestation):
                if same(derive_device_key(k, spelling)):
                    return KeyReport(
                        reg_id,
                        "derivedForOtherSpelling",
                        f"derived from the {slot} key of enrollment group {group.id!r}, but for {spelling!r}, not {reg_id!r}:"
                        " the key is an HMAC of the exact registration ID text",
                        {"enrollmentGroup": group.id, "key": slot, "derivedFor": spelling},
                        hint=f"derive it from {reg_id!r} exactly (same letter case, no surrounding spaces or newline):"
                        f" dpsctl keys derive --group-key @GROUP_KEY_FILE --registration-id {reg_id}",
                    )
    for other in tx.scan("enrollments"):
        enrollment = IndividualEnrollment.from_stored(other)
        if enrollment.attestation.type != "symmetricKey" or (own is not None and enrollment.id == own.id):
            continue
        for slot, k in slots(enrollment.attestation):
            if same(k):
                return KeyReport(
                    reg_id,
                    "otherEnrollmentKey",
                    f"the {slot} key of individual enrollment {enrollment.id!r}, another device",
                    {"individualEnrollment": enrollment.id, "key": slot},
                    hint=f"each individual enrollment has its own keys: dpsctl enrollment show {reg_id} --show-keys",
                )
    return KeyReport(
        reg_id, "unknown", f"no key in the store, and no key derived from a group key for {reg_id!r}, is this key"
    )


def _other_spellings(tx: Transaction, reg_id: str) -> list[str]:
    """Registration ID texts a key is often derived from by mistake: other letter cases, and stray whitespace."""
    cases = [reg_id, reg_id.lower(), reg_id.upper(), reg_id.capitalize(), reg_id.swapcase(), reg_id.title()]
    # The store may know how the device spells its ID (an earlier registration, an enrollment).
    for kind in ("registrations", "enrollments"):
        doc = tx.get(kind, reg_id)
        if doc is not None:
            cases.append(str(doc["registrationId"]))
    out: list[str] = []
    for base in dict.fromkeys(cases):
        for text in (base, base + "\n", base + "\r\n", " " + base, base + " ", " " + base + " ", "\t" + base):
            if text != reg_id and text not in out:
                out.append(text)
    return out
