"""`cert check`: what DPS would say about a device certificate before the device ever connects.

It runs the engine's own matching and attestation (`provisioning.diagnose`, the code behind `provision
--explain`), and adds what the engine does not need to know: why a certificate is shaped wrong. Nothing here
writes to the store, and no key ever appears in a message.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from dpsctl.core.attestation import POSSESSION_BY_TLS
from dpsctl.core.certs.describing import (
    PrivateKey,
    as_utc,
    common_name,
    distinguished_name,
    extension,
    is_self_signed,
    issuer_of,
    key_belongs_to,
    sha1_thumbprint,
    subject_of,
    utc_iso,
)
from dpsctl.core.certs.verifying import check_common_name, sign_possession_challenge, verify_chain
from dpsctl.core.checks import Check, Level, note, passed, refused, warning
from dpsctl.core.errors import DpsError, InvalidInput, Unauthorized
from dpsctl.core.models import Attestation, EnrollmentGroup, IndividualEnrollment
from dpsctl.store import Transaction

# Imports inside functions in this module load what only some commands need: every dpsctl process that imports
# the engine would pay for them otherwise (docs/development.md, "Checks that run in CI").

Json = dict[str, Any]
Entry = IndividualEnrollment | EnrollmentGroup

EXPIRY_WARNING_DAYS = 30


def _entry_ref(entry: Entry | None) -> Json | None:
    """Which enrollment entry a diagnosis reached."""
    if entry is None:
        return None
    return {"kind": "enrollmentGroup" if entry.is_group else "individualEnrollment", "id": entry.id}


def _entry_noun(entry: Entry) -> str:
    """'individual enrollment ID' or 'enrollment group ID', for sentences."""
    return f"{'enrollment group' if entry.is_group else 'individual enrollment'} {entry.id!r}"


def _verdict(entry: Entry | None, error: DpsError | None) -> str:
    """One sentence: accepted, or refused and why (or that no enrollment was looked up)."""
    if error is not None:
        return f"DPS would refuse it: {error.message}"
    if entry is None:
        return "no enrollment lookup"
    return f"DPS would accept it: it matches {_entry_noun(entry)}"


@dataclass
class CertReport:
    """The outcome of `cert check`: facts about the leaf, static checks, the engine's trace, and the verdict."""

    registration_id: str | None
    certificate: Json
    checks: list[Check]
    explain: list[Check]
    entry: Entry | None
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
            "checks": [check.to_dict() for check in self.checks],
            "enrollment": _entry_ref(self.entry),
            "explain": [step.to_dict() for step in self.explain],
            "accepted": self.accepted,
            "verdict": _verdict(self.entry, self.error),
        }
        if self.error is not None and self.error.hint:
            doc["hint"] = self.error.hint
        return doc


def check_certificate(
    tx: Transaction,
    chain: list[x509.Certificate],
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
    checks: list[Check] = []
    checks.append(check_common_name(leaf))
    cn_ok = checks[-1].ok
    _check_order(chain, checks)
    _check_top(chain, checks)
    checks.extend(verify_chain(chain, now))
    _check_days_left(chain, now, checks)
    _check_client_auth(leaf, checks)
    _check_key_match(leaf, key, checks)

    explain: list[Check] = []
    entry = None
    error: DpsError | None = None
    if cn_ok or registration_id is not None:
        prove = None if key is None else (lambda nonce: sign_possession_challenge(key, nonce))
        diagnosis = diagnose(tx, RegistrationRequest(X509Credential(tuple(chain), prove), registration_id), now)
        registration_id = diagnosis.registration_id
        explain = _engine_steps(diagnosis.explain, checks, key_given=key is not None)
        explain += _dangling_references(tx)
        entry, error = diagnosis.entry, diagnosis.error
        if error is not None and entry is None and _issuer_unknown(tx, chain):
            error = error.amended(
                hint=f"the chain ends with a certificate issued by '{issuer_of(chain[-1])}', which is not in the chain:"
                " if that is an intermediate CA, send it too (--chain FILE, or the device's NAME.fullchain.pem);"
                " otherwise enroll the CA that issued it (enrollment-group add --signing-cert, or --ca-ref)"
            )
    else:
        explain.append(note("no enrollment lookup: the certificate's CN is not a usable registration ID"))
    if error is None:
        failed = next((check for check in checks if not check.ok), None)
        if failed is not None:
            error = Unauthorized(f"DPS would refuse this certificate: {failed.message}")
    return CertReport(registration_id, _facts(leaf, now), checks, explain, entry, error)


def _facts(leaf: x509.Certificate, now: datetime) -> Json:
    """What a user wants to see about the device certificate at a glance."""
    end = leaf.not_valid_after_utc
    return {
        "subject": distinguished_name(leaf.subject),
        "issuer": distinguished_name(leaf.issuer),
        "commonName": common_name(leaf),
        "thumbprint": sha1_thumbprint(leaf),
        "notBeforeUtc": utc_iso(leaf.not_valid_before_utc),
        "notAfterUtc": utc_iso(end),
        "daysLeft": (end - as_utc(now)).days,
    }


def _check_order(chain: list[x509.Certificate], checks: list[Check]) -> None:
    """The chain must be leaf first, each certificate followed by its issuer; suggest the order that links."""
    if len(chain) < 2:
        return
    if all(child.issuer == parent.subject for child, parent in zip(chain, chain[1:], strict=False)):
        checks.append(
            passed(f"the chain of {len(chain)} certificates is in order: leaf first, each followed by its issuer")
        )
        return
    names = [common_name(c) or subject_of(c) for c in chain]
    linked = _linked_order(chain)
    found = ", ".join(repr(n) for n in names)
    if linked is None:
        checks.append(
            refused(
                f"the certificates do not form one chain: found {found}, and not every certificate's issuer follows it",
            )
        )
        return
    better = ", ".join(repr(common_name(c) or subject_of(c)) for c in linked)
    checks.append(
        refused(f"the chain is out of order: found {found}; leaf first, each followed by its issuer, is {better}")
    )


def _linked_order(chain: list[x509.Certificate]) -> list[x509.Certificate] | None:
    """The certificates reordered leaf to top by issuer names, when they form exactly one chain."""
    issuers = {c.issuer for c in chain if not is_self_signed(c)}
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


def _check_top(chain: list[x509.Certificate], checks: list[Check]) -> None:
    """Say where the chain ends: at a root, or at a certificate whose issuer DPS must know."""
    top = chain[-1]
    if is_self_signed(top):
        what = "a self-signed device certificate" if len(chain) == 1 else "the self-signed root"
        checks.append(note(f"the chain ends with {what} {subject_of(top)!r}"))
    else:
        checks.append(
            note(
                f"the chain ends with {subject_of(top)!r}, issued by {issuer_of(top)!r}: DPS must know that issuer"
                " (a group's signing certificate or CA reference), or it must be sent in the chain",
            )
        )


def _check_days_left(chain: list[x509.Certificate], now: datetime, checks: list[Check]) -> None:
    """Days left for the leaf, and a warning for any certificate inside the last 30 days."""
    now = as_utc(now)
    for index, cert in enumerate(chain):
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        if not start <= now <= end:
            continue  # already a failed validity check
        days = (end - now).days
        text = f"{subject_of(cert)}: expires in {days} day(s), on {utc_iso(end)}"
        if days < EXPIRY_WARNING_DAYS:
            checks.append(warning(text + f" (less than {EXPIRY_WARNING_DAYS} days)"))
        elif index == 0:
            checks.append(passed(text))


def _check_client_auth(leaf: x509.Certificate, checks: list[Check]) -> None:
    """A device authenticates as a TLS client: extendedKeyUsage, when present, must allow clientAuth."""
    subject = subject_of(leaf)
    usages = extension(leaf, x509.ExtendedKeyUsage)
    if usages is None:
        checks.append(passed("has no extendedKeyUsage, so TLS client authentication is allowed", subject))
        return
    if ExtendedKeyUsageOID.CLIENT_AUTH in usages or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usages:
        checks.append(passed("extendedKeyUsage allows TLS client authentication (clientAuth)", subject))
        return
    names = ", ".join(getattr(oid, "_name", None) or oid.dotted_string for oid in usages)
    checks.append(
        warning(
            f"extendedKeyUsage ({names}) lacks clientAuth; TLS servers refuse such a client certificate"
            " (dpsctl's engine does not check extendedKeyUsage)",
            subject,
        )
    )


def _check_key_match(leaf: x509.Certificate, key: PrivateKey | None, checks: list[Check]) -> None:
    """The private key, when given, is the other half of the certificate's public key."""
    if key is None:
        checks.append(note("no --key given: whether the device holds the certificate's private key is not checked"))
        return
    if key_belongs_to(key, leaf):
        checks.append(passed("the private key belongs to the device certificate"))
    else:
        checks.append(refused("the private key does not belong to the device certificate"))


def _engine_steps(steps: list[Check], shown: list[Check], *, key_given: bool) -> list[Check]:
    """The engine's trace without lines the static checks already showed."""
    seen = {check.message for check in shown}
    out = []
    for step in steps:
        if step.message in seen:
            continue
        if not key_given and step.level is Level.OK and step.message == POSSESSION_BY_TLS:
            continue  # without --key nothing was proven; the static checks say so
        out.append(step)
    return out


def _dangling_references(tx: Transaction) -> list[Check]:
    """Groups whose CA reference names a CA that no longer exists (left by `ca delete --force`)."""
    notes = []
    for doc in tx.find("groups", "attestation", "x509"):
        for slot, name in Attestation.from_stored(doc["attestation"], group=True).ca_references:
            if tx.get("cas", name) is None:
                notes.append(
                    note(
                        f"enrollment group {doc['enrollmentGroupId']!r}: its {slot} CA reference {name!r} names no uploaded CA certificate, so it matches no device",
                    )
                )
    return notes


def _issuer_unknown(tx: Transaction, chain: list[x509.Certificate]) -> bool:
    """Whether the chain stops below a CA the store does not know: the typical missing intermediate."""
    top = chain[-1]
    if is_self_signed(top):
        return False
    known: set[str] = set()
    for doc in tx.find("groups", "attestation", "x509"):
        attestation = Attestation.from_stored(doc["attestation"], group=True)
        known.update(ref.info.get("subjectName", "") for _, ref in attestation.certificates)
        for _, name in attestation.ca_references:
            ca = tx.get("cas", name)
            if ca is not None:
                known.add(ca["subject"])
    return issuer_of(top) not in known and not any(distinguished_name(c.subject) in known for c in chain[1:])
