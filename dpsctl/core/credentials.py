"""Attestation material as users give it (keys, certificate files, TPM keys), turned into a checked Attestation."""

from __future__ import annotations

from dataclasses import dataclass, replace

from dpsctl.core.errors import InvalidInput
from dpsctl.core.ids import MAX_X509_REGISTRATION_ID
from dpsctl.core.models import Attestation, CertificateRef, Enrollment
from dpsctl.core.validation import choice

# Imports inside functions in this module load what only some commands need: every dpsctl process that imports
# the engine would pay for them otherwise (docs/development.md, "Checks that run in CI").


@dataclass(frozen=True)
class CredentialInput:
    """Attestation material as a user gives it: keys, certificate file contents, or TPM keys (None = not given)."""

    primary_key: str | None = None
    secondary_key: str | None = None
    certificate: tuple[bytes, str] | None = None  # (file contents, file name)
    secondary_certificate: tuple[bytes, str] | None = None
    ca_reference: str | None = None
    secondary_ca_reference: str | None = None
    endorsement_key: str | None = None
    storage_root_key: str | None = None
    remove_certificate: bool = False  # update only: drop the stored primary / secondary certificate (az --rc, --rsc)
    remove_secondary_certificate: bool = False


def certificate_ref(
    data: bytes | str, source: str, *, registration_id: str | None = None, require_ca: bool = False
) -> CertificateRef:
    """Parse an uploaded certificate and derive its DPS info; checks CN (device) or CA flag (signing cert)."""
    from dpsctl.core.certs import cert_to_pem, certificate_info, common_name, is_ca, load_certificates

    certs = load_certificates(data, source=source)
    cert = certs[0]
    if registration_id is not None:
        cn = common_name(cert)
        if cn is None or cn.lower() != registration_id.lower():
            raise InvalidInput(
                f"certificate {source} has CN={cn!r}, but the registration ID is {registration_id!r}",
                hint="DPS requires the device certificate's subject CN to equal the registration ID",
            )
    if require_ca and not is_ca(cert):
        raise InvalidInput(
            f"certificate {source} is not a CA certificate (no basicConstraints CA=true)",
            hint="an enrollment group's signing certificate is the root or intermediate CA that issues device certificates",
        )
    return CertificateRef(cert_to_pem(cert), certificate_info(cert))


def build_attestation(kind: str, cred: CredentialInput, *, group: bool, registration_id: str | None) -> Attestation:
    """Turn user input into a checked Attestation; missing symmetric keys are generated (64 bytes, as DPS)."""
    from dpsctl.core.keys import decode_key, generate_key

    kind = choice(kind, ("symmetricKey", "x509") if group else ("symmetricKey", "x509", "tpm"), "attestation type")
    if kind == "symmetricKey":
        _refuse_other(cred, kind, ("primary_key", "secondary_key"))
        # None means "not given": generate, as DPS does. An empty string was given, and is refused as a bad key.
        primary = generate_key() if cred.primary_key is None else cred.primary_key
        secondary = generate_key() if cred.secondary_key is None else cred.secondary_key
        decode_key(primary, what="primary key")
        decode_key(secondary, what="secondary key")
        return Attestation(kind, primary_key=primary.strip(), secondary_key=secondary.strip())
    if kind == "tpm":
        from dpsctl.core.tpm import validate_endorsement_key

        _refuse_other(cred, kind, ("endorsement_key", "storage_root_key"))
        if not cred.endorsement_key:
            raise InvalidInput(
                "a TPM enrollment needs --endorsement-key",
                hint="print a software TPM's key with `dpsctl tpm show FILE`",
            )
        return Attestation(
            kind, endorsement_key=validate_endorsement_key(cred.endorsement_key), storage_root_key=cred.storage_root_key
        )
    _refuse_other(cred, kind, ("certificate", "secondary_certificate", "ca_reference", "secondary_ca_reference"))
    if group:
        if not cred.certificate and not cred.ca_reference:
            raise InvalidInput("an X.509 enrollment group needs --signing-cert FILE (or --ca-ref NAME)")
        if cred.certificate and cred.ca_reference:
            raise InvalidInput("give either --signing-cert or --ca-ref, not both")
    elif not cred.certificate:
        raise InvalidInput("an X.509 enrollment needs --cert FILE (the device certificate)")
    max_id = None if group else registration_id
    if max_id is not None and len(max_id) > MAX_X509_REGISTRATION_ID:
        raise InvalidInput(
            f"X.509 registration IDs are at most {MAX_X509_REGISTRATION_ID} characters (the certificate CN limit)"
        )
    refs = [
        certificate_ref(*c, registration_id=max_id, require_ca=group) if c else None
        for c in (cred.certificate, cred.secondary_certificate)
    ]
    return Attestation(
        kind,
        primary_cert=refs[0],
        secondary_cert=refs[1],
        primary_ca=cred.ca_reference,
        secondary_ca=cred.secondary_ca_reference,
    )


def _refuse_other(cred: CredentialInput, kind: str, allowed: tuple[str, ...]) -> None:
    """A credential option that does not belong to the attestation type is a mistake worth reporting."""
    flags = {
        "primary_key": "--primary-key",
        "secondary_key": "--secondary-key",
        "certificate": "--cert/--signing-cert",
        "secondary_certificate": "--secondary-cert",
        "ca_reference": "--ca-ref",
        "secondary_ca_reference": "--secondary-ca-ref",
        "endorsement_key": "--endorsement-key",
        "storage_root_key": "--storage-root-key",
        "remove_certificate": "--remove-certificate",
        "remove_secondary_certificate": "--remove-secondary-certificate",
    }
    for name, flag in flags.items():
        if name not in allowed and getattr(cred, name) not in (None, False):
            raise InvalidInput(f"{flag} does not apply to {kind} attestation")


def updated_attestation(entry: Enrollment, cred: CredentialInput) -> Attestation:
    """New keys or certificates of the same attestation type; the parts not given are kept."""
    from dpsctl.core.keys import decode_key

    att = entry.attestation
    noun = f"{'enrollment group' if entry.is_group else 'enrollment'} {entry.id!r}"
    if att.type == "symmetricKey":
        _refuse_other(cred, att.type, ("primary_key", "secondary_key"))
        for key, what in ((cred.primary_key, "primary key"), (cred.secondary_key, "secondary key")):
            if key is not None:
                decode_key(key, what=what)
        return replace(
            att, primary_key=cred.primary_key or att.primary_key, secondary_key=cred.secondary_key or att.secondary_key
        )
    if att.type == "tpm":
        _refuse_other(cred, att.type, ("endorsement_key", "storage_root_key"))
        fresh = build_attestation(
            "tpm",
            replace(cred, endorsement_key=cred.endorsement_key or att.endorsement_key),
            group=False,
            registration_id=None,
        )
        return replace(fresh, storage_root_key=cred.storage_root_key or att.storage_root_key)
    _refuse_other(
        cred,
        att.type,
        (
            "certificate",
            "secondary_certificate",
            "ca_reference",
            "secondary_ca_reference",
            "remove_certificate",
            "remove_secondary_certificate",
        ),
    )
    reg_id = None if entry.is_group else entry.id
    kept_primary = None if cred.remove_certificate else att.primary_cert
    kept_secondary = None if cred.remove_secondary_certificate else att.secondary_cert
    primary = (
        certificate_ref(*cred.certificate, registration_id=reg_id, require_ca=entry.is_group)
        if cred.certificate
        else kept_primary
    )
    secondary = (
        certificate_ref(*cred.secondary_certificate, registration_id=reg_id, require_ca=entry.is_group)
        if cred.secondary_certificate
        else kept_secondary
    )
    if primary is None and secondary is not None and cred.remove_certificate:
        primary, secondary = secondary, None  # as DPS, a lone certificate is the primary one
    if primary is None and not (cred.ca_reference or att.primary_ca):
        raise InvalidInput(
            f"{noun} would have no certificate", hint="give a new one with the removal, or keep the current one"
        )
    return replace(
        att,
        primary_cert=primary,
        secondary_cert=secondary,
        primary_ca=cred.ca_reference or att.primary_ca,
        secondary_ca=cred.secondary_ca_reference or att.secondary_ca,
    )
