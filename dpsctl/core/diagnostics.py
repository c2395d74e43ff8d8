"""`cert check` and `keys check`: what DPS would say about a credential before a device ever connects.

Both run the engine's own matching and attestation (`provisioning.diagnose`, the code behind `provision
--explain`), and add what the engine does not need to know: why a certificate is shaped wrong, or what a
rejected key actually is. Nothing here writes to the store, and no key ever appears in a message.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography import x509 as cx509
from cryptography.x509.oid import ExtendedKeyUsageOID

from dpsctl.core import x509
from dpsctl.core.attestation import POSSESSION_BY_TLS
from dpsctl.core.errors import DpsError, InvalidInput, Unauthorized
from dpsctl.core.x509 import PrivateKey
from dpsctl.store import Transaction

Json = dict[str, Any]
Step = dict[str, str]

EXPIRY_WARNING_DAYS = 30
DIAGNOSIS_TOKEN_TTL = 3600


def _step(result: str, message: str) -> Step:
    """One line of a report: result is ok, fail, warn or note."""
    return {"result": result, "message": message}


def format_steps(steps: list[Step]) -> str:
    """Report lines as text: '[ok]', '[fail]', '[warn]' or blank, then the message."""
    marks = {"ok": "[ok]  ", "fail": "[fail]", "warn": "[warn]", "note": "      "}
    return "\n".join(f"{marks.get(step['result'], '      ')} {step['message']}" for step in steps)


def _entry_ref(entry: Any) -> Json | None:
    """Which enrollment entry a diagnosis reached."""
    if entry is None:
        return None
    return {"kind": "enrollmentGroup" if entry.is_group else "individualEnrollment", "id": entry.id}


def _entry_noun(entry: Any) -> str:
    return f"{'enrollment group' if entry.is_group else 'individual enrollment'} {entry.id!r}"


def _verdict(entry: Any, error: DpsError | None) -> str:
    """One sentence: accepted, or refused and why."""
    if error is None:
        return f"DPS would accept it: it matches {_entry_noun(entry)}"
    return f"DPS would refuse it: {error.message}"


# --------------------------------------------------------------------------- certificates


@dataclass
class CertReport:
    """The outcome of `cert check`: facts about the leaf, static checks, the engine's trace, and the verdict."""

    registration_id: str | None
    certificate: Json
    checks: list[Step]
    explain: list[Step]
    entry: Any
    error: DpsError | None

    @property
    def accepted(self) -> bool:
        """True when DPS would accept the device."""
        return self.error is None

    def to_dict(self) -> Json:
        """The report as data (`-o json`)."""
        doc: Json = {
            "registrationId": self.registration_id,
            "certificate": self.certificate,
            "checks": self.checks,
            "enrollment": _entry_ref(self.entry),
            "explain": self.explain,
            "accepted": self.accepted,
            "verdict": _verdict(self.entry, self.error)
            if self.entry is not None or self.error
            else "no enrollment lookup",
        }
        if self.error is not None and self.error.hint:
            doc["hint"] = self.error.hint
        return doc


def check_certificate(
    tx: Transaction,
    chain: list[cx509.Certificate],
    now: datetime,
    *,
    key: PrivateKey | None = None,
    registration_id: str | None = None,
) -> CertReport:
    """Check a device certificate (leaf first, then its chain) and find the enrollment it would match."""
    from dpsctl.core.attestation import X509Credential
    from dpsctl.core.provisioning import RegistrationRequest, diagnose

    if not chain:
        raise InvalidInput("no certificate to check")
    leaf = chain[0]
    checks: list[Step] = []
    cn_ok = _check_common_name(leaf, checks)
    _check_order(chain, checks)
    _check_top(chain, checks)
    for check in x509.verify_chain(chain, now):
        checks.append(_step("ok" if check.ok else "fail", f"{check.subject}: {check.what}"))
    _check_days_left(chain, now, checks)
    _check_client_auth(leaf, checks)
    _check_key_match(leaf, key, checks)

    explain: list[Step] = []
    entry = None
    error: DpsError | None = None
    if cn_ok or registration_id is not None:
        prove = None if key is None else (lambda nonce: x509.sign_possession_challenge(key, nonce))
        diagnosis = diagnose(tx, RegistrationRequest(X509Credential(tuple(chain), prove), registration_id), now)
        registration_id = diagnosis.registration_id
        explain = _engine_steps(diagnosis.explain, checks, key_given=key is not None)
        explain += _dangling_references(tx)
        entry, error = diagnosis.entry, diagnosis.error
        if error is not None and entry is None and _issuer_unknown(tx, chain):
            error = error.amended(
                hint=f"the chain ends with a certificate issued by '{x509.issuer_of(chain[-1])}', which is not in the chain:"
                " if that is an intermediate CA, send it too (--chain FILE, or the device's NAME.fullchain.pem);"
                " otherwise enroll the CA that issued it (enrollment-group add --signing-cert, or --ca-ref)"
            )
    else:
        explain.append(_step("note", "no enrollment lookup: the certificate's CN is not a usable registration ID"))
    if error is None:
        failed = next((step for step in checks if step["result"] == "fail"), None)
        if failed is not None:
            error = Unauthorized(f"DPS would refuse this certificate: {failed['message']}")
    return CertReport(registration_id, _facts(leaf, now), checks, explain, entry, error)


def _facts(leaf: cx509.Certificate, now: datetime) -> Json:
    """What a user wants to see about the device certificate at a glance."""
    end = leaf.not_valid_after_utc
    return {
        "subject": x509.distinguished_name(leaf.subject),
        "issuer": x509.distinguished_name(leaf.issuer),
        "commonName": x509.common_name(leaf),
        "thumbprint": x509.sha1_thumbprint(leaf),
        "notBeforeUtc": x509.utc_iso(leaf.not_valid_before_utc),
        "notAfterUtc": x509.utc_iso(end),
        "daysLeft": (end - _aware(now)).days,
    }


def _check_common_name(leaf: cx509.Certificate, checks: list[Step]) -> bool:
    """The CN is the registration ID, so it must follow DPS's rules and X.509's 64-character limit."""
    from dpsctl.core.ids import MAX_X509_REGISTRATION_ID, validate_registration_id

    cn = x509.common_name(leaf)
    if cn is None:
        checks.append(_step("fail", f"{x509.subject_of(leaf)}: has no subject CN, so it carries no registration ID"))
        return False
    try:
        validate_registration_id(cn, what="the CN", max_length=MAX_X509_REGISTRATION_ID)
    except InvalidInput as exc:
        checks.append(
            _step("fail", f"{exc.message}: DPS uses the CN as the registration ID ({exc.hint or 'see the ID rules'})")
        )
        return False
    checks.append(_step("ok", f"the CN {cn!r} is a valid registration ID"))
    return True


def _check_order(chain: list[cx509.Certificate], checks: list[Step]) -> None:
    """The chain must be leaf first, each certificate followed by its issuer; suggest the order that links."""
    if len(chain) < 2:
        return
    if all(child.issuer == parent.subject for child, parent in zip(chain, chain[1:], strict=False)):
        checks.append(
            _step("ok", f"the chain of {len(chain)} certificates is in order: leaf first, each followed by its issuer")
        )
        return
    names = [x509.common_name(c) or x509.subject_of(c) for c in chain]
    linked = _linked_order(chain)
    found = ", ".join(repr(n) for n in names)
    if linked is None:
        checks.append(
            _step(
                "fail",
                f"the certificates do not form one chain: found {found}, and not every certificate's issuer follows it",
            )
        )
        return
    better = ", ".join(repr(x509.common_name(c) or x509.subject_of(c)) for c in linked)
    checks.append(
        _step("fail", f"the chain is out of order: found {found}; leaf first, each followed by its issuer, is {better}")
    )


def _linked_order(chain: list[cx509.Certificate]) -> list[cx509.Certificate] | None:
    """The certificates reordered leaf to top by issuer names, when they form exactly one chain."""
    issuers = {c.issuer for c in chain if not _is_self_signed(c)}
    leaves = [c for c in chain if c.subject not in issuers]
    if len(leaves) != 1:
        return None
    order = [leaves[0]]
    while len(order) < len(chain):
        nxt = next((c for c in chain if c.subject == order[-1].issuer and c not in order), None)
        if nxt is None:
            return None
        order.append(nxt)
    return order


def _check_top(chain: list[cx509.Certificate], checks: list[Step]) -> None:
    """Say where the chain ends: at a root, or at a certificate whose issuer DPS must know."""
    top = chain[-1]
    if _is_self_signed(top):
        what = "a self-signed device certificate" if len(chain) == 1 else "the self-signed root"
        checks.append(_step("note", f"the chain ends with {what} {x509.subject_of(top)!r}"))
    else:
        checks.append(
            _step(
                "note",
                f"the chain ends with {x509.subject_of(top)!r}, issued by {x509.issuer_of(top)!r}: DPS must know that issuer"
                " (a group's signing certificate or CA reference), or it must be sent in the chain",
            )
        )


def _check_days_left(chain: list[cx509.Certificate], now: datetime, checks: list[Step]) -> None:
    """Days left for the leaf, and a warning for any certificate inside the last 30 days."""
    now = _aware(now)
    for index, cert in enumerate(chain):
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        if not start <= now <= end:
            continue  # already a failed validity check
        days = (end - now).days
        text = f"{x509.subject_of(cert)}: expires in {days} day(s), on {x509.utc_iso(end)}"
        if days < EXPIRY_WARNING_DAYS:
            checks.append(_step("warn", text + f" (less than {EXPIRY_WARNING_DAYS} days)"))
        elif index == 0:
            checks.append(_step("ok", text))


def _check_client_auth(leaf: cx509.Certificate, checks: list[Step]) -> None:
    """A device authenticates as a TLS client: extendedKeyUsage, when present, must allow clientAuth."""
    subject = x509.subject_of(leaf)
    try:
        usages = leaf.extensions.get_extension_for_class(cx509.ExtendedKeyUsage).value
    except cx509.ExtensionNotFound:
        checks.append(_step("ok", f"{subject}: has no extendedKeyUsage, so TLS client authentication is allowed"))
        return
    if ExtendedKeyUsageOID.CLIENT_AUTH in usages or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usages:
        checks.append(_step("ok", f"{subject}: extendedKeyUsage allows TLS client authentication (clientAuth)"))
        return
    names = ", ".join(getattr(oid, "_name", None) or oid.dotted_string for oid in usages)
    checks.append(
        _step(
            "warn",
            f"{subject}: extendedKeyUsage ({names}) lacks clientAuth; TLS servers refuse such a client certificate"
            " (dpsctl's engine does not check extendedKeyUsage)",
        )
    )


def _check_key_match(leaf: cx509.Certificate, key: PrivateKey | None, checks: list[Step]) -> None:
    """The private key, when given, is the other half of the certificate's public key."""
    if key is None:
        checks.append(
            _step("note", "no --key given: whether the device holds the certificate's private key is not checked")
        )
        return
    from cryptography.hazmat.primitives import serialization

    def der(public: Any) -> bytes:
        return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    if der(leaf.public_key()) == der(key.public_key()):
        checks.append(_step("ok", "the private key belongs to the device certificate"))
    else:
        checks.append(_step("fail", "the private key does not belong to the device certificate"))


def _engine_steps(steps: list[Step], shown: list[Step], *, key_given: bool) -> list[Step]:
    """The engine's trace without lines the static checks already showed."""
    seen = {step["message"] for step in shown}
    out = []
    for step in steps:
        if step["message"] in seen:
            continue
        if not key_given and step["result"] == "ok" and step["message"] == POSSESSION_BY_TLS:
            continue  # without --key nothing was proven; the static checks say so
        out.append(step)
    return out


def _dangling_references(tx: Transaction) -> list[Step]:
    """Groups whose CA reference names a CA that no longer exists (left by `ca delete --force`)."""
    notes = []
    for doc in tx.find("groups", "attestation", "x509"):
        refs = doc["attestation"].get("x509", {}).get("caReferences") or {}
        for slot, name in refs.items():
            if name and tx.get("cas", name) is None:
                notes.append(
                    _step(
                        "note",
                        f"enrollment group {doc['enrollmentGroupId']!r}: its {slot} CA reference {name!r} names no uploaded CA certificate, so it matches no device",
                    )
                )
    return notes


def _issuer_unknown(tx: Transaction, chain: list[cx509.Certificate]) -> bool:
    """Whether the chain stops below a CA the store does not know: the typical missing intermediate."""
    top = chain[-1]
    if _is_self_signed(top):
        return False
    known: set[str] = set()
    for doc in tx.find("groups", "attestation", "x509"):
        x = doc["attestation"].get("x509", {})
        for ref in (x.get("signingCertificates") or {}).values():
            known.add(ref.get("info", {}).get("subjectName", ""))
        for name in (x.get("caReferences") or {}).values():
            ca = tx.get("cas", name) if name else None
            if ca is not None:
                known.add(ca["subject"])
    return x509.issuer_of(top) not in known and not any(x509.distinguished_name(c.subject) in known for c in chain[1:])


def _is_self_signed(cert: cx509.Certificate) -> bool:
    return cert.issuer == cert.subject


def _aware(now: datetime) -> datetime:

    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- symmetric keys


@dataclass
class KeyReport:
    """The outcome of `keys check`: what the key is, and what the engine says about it."""

    registration_id: str
    diagnosis: str  # enrollmentPrimaryKey | enrollmentSecondaryKey | derivedFromGroupKey | groupKey | derivedForOtherSpelling | otherEnrollmentKey | invalid | unknown
    message: str
    match: Json | None = None
    explain: list[Step] = field(default_factory=list)
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
            "explain": self.explain,
        }
        if self.error is not None:
            doc["error"] = self.error.message
            if self.error.hint:
                doc["hint"] = self.error.hint
        return doc


def check_key(tx: Transaction, registration_id: str, key_text: str, now: datetime) -> KeyReport:
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
    own = IndividualEnrollment.from_dict(doc) if doc is not None else None
    if own is not None and own.attestation.type == "symmetricKey":
        for slot, k in slots(own.attestation):
            if same(k):
                return KeyReport(
                    reg_id,
                    f"enrollment{slot.title()}Key",
                    f"the {slot} key of individual enrollment {own.id!r}",
                    {"individualEnrollment": own.id, "key": slot},
                )
    groups = [EnrollmentGroup.from_dict(d) for d in tx.find("groups", "attestation", "symmetricKey")]
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
        enrollment = IndividualEnrollment.from_dict(other)
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
