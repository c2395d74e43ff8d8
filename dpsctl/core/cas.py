"""CA certificates uploaded to the service, and DPS's proof of possession for them (reference §5).

A CA record is stored flat (the engine reads "name", "certificate" and "isVerified") and shown in the ARM
shape of `az iot dps certificate show`: {"name", "etag", "properties": CertificateProperties}.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from dpsctl.core.clock import new_etag, same_etag
from dpsctl.core.errors import Conflict, InvalidInput, NotFound, Unauthorized
from dpsctl.store import Transaction

# Imports inside functions in this module load what only some commands need: every dpsctl process that imports
# the engine would pay for them otherwise (docs/development.md, "Checks that run in CI").

Json = dict[str, Any]

MAX_CAS = 25  # DPS quota: 25 CA certificates per service
MAX_NAME = 256
_NAME = re.compile(r"[A-Za-z0-9._-]+")
VERIFICATION_CODE_BYTES = 24  # 48 hex digits: unguessable, and well inside the 64-character CN limit


def validate_ca_name(name: str) -> str:
    """Return the certificate name unchanged if DPS would accept it (letters, digits, - . _; up to 256)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > MAX_NAME:
        shown = repr(name[:80]) if isinstance(name, str) else "?"
        raise InvalidInput(
            f"CA certificate name {shown} is not valid",
            hint=f"use 1 to {MAX_NAME} characters: letters, digits, '-', '.' and '_' (no spaces)",
        )
    return name


def rfc1123(moment: datetime) -> str:
    """A time in the RFC 1123 form DPS uses for certificate properties ('Tue, 01 Jan 2030 00:00:00 GMT')."""

    return format_datetime(moment.astimezone(UTC).replace(microsecond=0), usegmt=True)


def new_verification_code() -> str:
    """A fresh random verification code (upper-case hex), the CN the proof-of-possession certificate must carry."""
    return secrets.token_hex(VERIFICATION_CODE_BYTES).upper()


# --------------------------------------------------------------------------- reading


def get_ca(tx: Transaction, name: str) -> Json:
    """The stored CA record, or NotFound."""
    doc = tx.get("cas", name)
    if doc is None:
        raise NotFound(f"CA certificate {name!r} not found", hint="see `dpsctl ca list`")
    return doc


def list_cas(tx: Transaction) -> list[Json]:
    """Every stored CA record, by name."""
    return list(tx.scan("cas"))


def public_ca(doc: Json, *, with_certificate: bool = True) -> Json:
    """The record as ARM shows it: name, etag and CertificateProperties (plus a pending verification code)."""
    props: Json = {
        "subject": doc["subject"],
        "expiry": doc["expiry"],
        "thumbprint": doc["thumbprint"],
        "isVerified": doc["isVerified"],
        "created": doc["created"],
        "updated": doc["updated"],
    }
    if doc.get("verificationCode"):
        props["verificationCode"] = doc["verificationCode"]
    if with_certificate:
        props["certificate"] = doc["certificate"]
    return {"name": doc["name"], "etag": doc["etag"], "properties": props}


ARM_TYPE = "Microsoft.Devices/provisioningServices/certificates"


def arm_certificate(doc: Json, service_name: str) -> Json:
    """The `CertificateResponse` of ARM (`az iot dps certificate show`): id and type around `public_ca`'s view."""
    view = public_ca(doc)
    resource = f"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/dpsctl/providers/Microsoft.Devices/provisioningServices/{service_name}"
    return {
        "id": f"{resource}/certificates/{view['name']}",
        "name": view["name"],
        "etag": view["etag"],
        "type": ARM_TYPE,
        "properties": view["properties"],
    }


def ca_users(tx: Transaction, name: str) -> list[str]:
    """IDs of the enrollment groups whose primary or secondary CA reference names this CA."""
    from dpsctl.core.models import Attestation

    key = name.lower()
    users = []
    for doc in tx.find("groups", "attestation", "x509"):
        refs = Attestation.from_stored(doc["attestation"], group=True).ca_references
        if any(ref.lower() == key for _, ref in refs):
            users.append(doc["enrollmentGroupId"])
    return users


# --------------------------------------------------------------------------- writing


def add_ca(tx: Transaction, name: str, data: bytes, source: str, *, verified: bool, now: datetime) -> Json:
    """Upload a CA certificate (unverified unless `verified`, which skips proof of possession as `--verified` does in az)."""
    validate_ca_name(name)
    if tx.get("cas", name) is not None:
        raise Conflict(f"CA certificate {name!r} already exists", hint=f"delete it first: dpsctl ca delete {name}")
    if tx.count("cas") >= MAX_CAS:
        raise Conflict(
            f"the service already has {MAX_CAS} CA certificates, the DPS limit",
            hint="delete one with `dpsctl ca delete NAME`",
        )
    doc = ca_record(name, data, source, verified=verified, now=now)
    tx.put("cas", doc)
    return doc


def ca_record(name: str, data: bytes | str, source: str, *, verified: bool, now: datetime) -> Json:
    """A new CA record from one CA certificate (PEM or DER); its subject, expiry and thumbprint are derived."""
    from dpsctl.core.certs import cert_to_pem, distinguished_name, is_ca, load_certificates, sha1_thumbprint, subject_of

    validate_ca_name(name)
    certs = load_certificates(data, source=source)
    if len(certs) != 1:
        raise InvalidInput(
            f"{source}: holds {len(certs)} certificates; upload exactly one CA certificate",
            hint="pass the root or intermediate CA certificate alone (NAME.cert.pem), not a chain",
        )
    cert = certs[0]
    if not is_ca(cert):
        raise InvalidInput(
            f"{source}: '{subject_of(cert)}' is not a CA certificate (no basicConstraints CA=true)",
            hint="upload the root or intermediate CA that signs the device certificates",
        )
    stamp = rfc1123(now)
    return {
        "name": name,
        "certificate": cert_to_pem(cert),
        "subject": distinguished_name(cert.subject),
        "expiry": rfc1123(cert.not_valid_after_utc),
        "thumbprint": sha1_thumbprint(cert),
        "isVerified": bool(verified),
        "created": stamp,
        "updated": stamp,
        "verificationCode": None,
        "etag": new_etag(),
    }


def replace_ca(
    tx: Transaction,
    name: str,
    data: bytes,
    source: str,
    *,
    verified: bool | None,
    now: datetime,
    etag: str | None = None,
) -> Json:
    """Upload a new certificate under an existing name (az `certificate update`): unverified unless `verified`."""
    current = _current(tx, name, etag)
    doc = ca_record(current["name"], data, source, verified=bool(verified), now=now)
    doc["created"] = current["created"]
    tx.put("cas", doc)
    return doc


def generate_verification_code(tx: Transaction, name: str, *, now: datetime, etag: str | None = None) -> Json:
    """Give the CA a fresh verification code; any earlier code stops working."""
    doc = _current(tx, name, etag)
    doc = {**doc, "verificationCode": new_verification_code(), "updated": rfc1123(now), "etag": new_etag()}
    tx.put("cas", doc)
    return doc


def verify_ca(tx: Transaction, name: str, data: bytes, source: str, *, now: datetime, etag: str | None = None) -> Json:
    """Accept proof of possession: a certificate whose CN is the current code, signed by this CA's key."""
    from dpsctl.core.certs import check_issued_by, check_validity, common_name, load_certificates

    doc = _current(tx, name, etag)
    code = doc.get("verificationCode")
    if doc["isVerified"] and not code:
        return doc  # nothing to prove again; verifying twice is not an error
    if not code:
        raise Conflict(
            f"CA certificate {name!r} has no verification code yet",
            hint=f"get one: dpsctl ca verification-code {name}",
        )
    certs = load_certificates(data, source=source)
    proof = certs[0]
    ca_cert = load_certificates(doc["certificate"], source=f"CA {name}")[0]
    cn = common_name(proof)
    sign_hint = f"dpsctl cert create-verification {code} --ca CA.cert.pem --ca-key CA.key.pem"
    if cn != code:
        raise InvalidInput(
            f"{source}: the certificate's CN is {cn!r}, not the current verification code of CA {name!r}"
            " (each `ca verification-code` replaces the previous code)",
            hint=f"sign a certificate for the current code: {sign_hint}",
        )
    failed = [c for c in check_issued_by(proof, ca_cert, ca_depth=0) if not c.ok]
    if failed:
        raise Unauthorized(
            f"{source}: the verification certificate does not prove possession of CA {name!r}: {failed[0].subject} {failed[0].what}",
            hint=f"sign it with the private key of that CA: {sign_hint}",
        )
    validity = check_validity(proof, now)
    if not validity.ok:
        raise InvalidInput(
            f"{source}: the verification certificate {validity.what}", hint=f"create a new one: {sign_hint}"
        )
    # The code is single-use: a leaked verification certificate cannot verify this CA again later.
    doc = {**doc, "isVerified": True, "verificationCode": None, "updated": rfc1123(now), "etag": new_etag()}
    tx.put("cas", doc)
    return doc


def delete_ca(tx: Transaction, name: str, *, force: bool = False, etag: str | None = None) -> tuple[Json, list[str]]:
    """Remove a CA certificate; refused while groups reference it unless forced. Returns (record, referencing groups)."""
    doc = _current(tx, name, etag)
    users = ca_users(tx, doc["name"])
    if users and not force:
        shown = ", ".join(users[:3]) + (f" and {len(users) - 3} more" if len(users) > 3 else "")
        raise Conflict(
            f"CA certificate {doc['name']!r} is referenced by enrollment group(s) {shown}",
            hint="point those groups at another CA (enrollment-group update --ca-ref), or pass --force",
        )
    tx.delete("cas", doc["name"])
    return doc, users


def _current(tx: Transaction, name: str, etag: str | None) -> Json:
    """The record, refusing a stale etag (DPS answers 412 to a stale If-Match)."""
    doc = get_ca(tx, name)
    if etag is not None and not same_etag(etag, doc.get("etag")):
        raise Conflict(
            f"CA certificate {doc['name']!r} has changed since etag {etag} (it is now {doc['etag']})",
            hint="show it again, then retry with the current --etag",
        )
    return doc
