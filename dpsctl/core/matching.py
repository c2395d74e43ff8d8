"""Matching a device to its enrollment entry, and attesting its credential against that entry.

Precedence as in DPS: the individual enrollment for the registration ID first (whatever its attestation
type), then the groups (symmetric-key groups by derived key; X.509 groups walking the chain leaf to root).
A refusal is raised as `Refused`, carrying the DPS error and, when one was found, the entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from dpsctl.core import attestation as att
from dpsctl.core.attestation import Credential, SasCredential, TpmCredential, X509Credential
from dpsctl.core.checks import Trace
from dpsctl.core.errors import Disabled, DpsError, Unauthorized
from dpsctl.core.ids import MAX_X509_REGISTRATION_ID
from dpsctl.core.models import EnrollmentGroup, IndividualEnrollment
from dpsctl.core.sas import SasToken
from dpsctl.core.service_records import ServiceSettings
from dpsctl.store import Transaction

if TYPE_CHECKING:  # cryptography's X.509 module is loaded by the X.509 checks that need it: a SAS device's
    # command does not pay its start-up time (about 40 ms)
    from cryptography.x509 import Certificate

    # A group's signing certificate: uploaded with the group, or a referenced CA with its stored record.
    Signer = Certificate | tuple[Certificate, dict[str, Any]]

# Imports inside functions in this module load what only some commands need: every dpsctl process that imports
# the engine would pay for them otherwise (docs/development.md, "Checks that run in CI").

Entry = IndividualEnrollment | EnrollmentGroup
Json = dict[str, Any]


@dataclass
class Match:
    """The enrollment entry a device matched and what its credential told us."""

    entry: Entry
    hub_auth: Json = field(default_factory=dict)  # hub device authentication
    device_key: str | None = None  # the symmetric key the device will use on its hub
    attestation_state: Json = field(default_factory=dict)  # registrationState sub-object
    runtime_attestation: Json = field(default_factory=dict)  # deviceRuntimeContext sub-object for webhooks


class Refused(Exception):
    """The device is refused: carries the DPS error, and the entry when one was found."""

    def __init__(self, error: DpsError, entry: Entry | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.entry = entry


def match_and_attest(
    tx: Transaction, service: ServiceSettings, reg_id: str, cred: Credential, now: datetime, trace: Trace
) -> Match:
    """Individual enrollment first (whatever its type), then groups; returns the match or raises Refused."""
    kind = att.credential_type(cred)
    doc = tx.get("enrollments", reg_id)
    if doc is not None:
        entry = IndividualEnrollment.from_stored(doc)
        trace.note(
            f"individual enrollment {entry.id!r} found ({entry.attestation.type}, {entry.provisioning_status}); "
            "it takes precedence over any group"
        )
        if entry.attestation.type == kind:
            try:
                return _attest_individual(tx, entry, service, reg_id, cred, now, trace)
            except Refused:
                # A disabled entry refuses with its own credential (provision() reports that after attestation), and
                # with any other one: the docs block one device of a group by adding a disabled enrollment with
                # generated keys, so the device's group-derived key never matches it and must not make this a 401.
                if entry.enabled:
                    raise
        elif entry.enabled:
            trace.fail(
                f"enrollment {entry.id!r} expects {entry.attestation.type} attestation, but the device presented {kind}"
            )
            raise Refused(
                _unauthorized(f"enrollment {entry.id!r} expects {entry.attestation.type} attestation, not {kind}")
            )
        trace.fail(
            f"individual enrollment {entry.id!r} is disabled: it blocks this registration ID whatever the credential"
        )
        raise Refused(Disabled(f"individual enrollment {entry.id!r} is disabled and blocks this device"), entry)
    trace.note(f"no individual enrollment for {reg_id!r}; trying enrollment groups")
    if isinstance(cred, SasCredential):
        return _match_symmetric_group(tx, service, reg_id, cred, now, trace)
    if isinstance(cred, X509Credential):
        return _match_x509_group(tx, reg_id, cred, now, trace)
    trace.fail("TPM devices need an individual enrollment (DPS has no TPM enrollment groups)")
    raise Refused(
        _unauthorized(
            f"no individual enrollment for TPM device {reg_id!r}",
            hint=f"enroll it: dpsctl enrollment add {reg_id} --attestation tpm --endorsement-key ...",
        )
    )


def _unauthorized(message: str, hint: str | None = None) -> Unauthorized:
    return Unauthorized(message, hint=hint)


def _attest_individual(
    tx: Transaction,
    entry: IndividualEnrollment,
    service: ServiceSettings,
    reg_id: str,
    cred: Credential,
    now: datetime,
    trace: Trace,
) -> Match:
    a = entry.attestation
    if isinstance(cred, SasCredential):
        token = _token_for(cred, service, reg_id, now, trace)
        label = att.match_key(token, [("primary", a.primary_key or ""), ("secondary", a.secondary_key or "")])
        if label is None:
            trace.fail(
                f"the SAS signature matches neither the primary nor the secondary key of enrollment {entry.id!r}"
            )
            raise Refused(
                _unauthorized(
                    f"the SAS token is not signed with a key of enrollment {entry.id!r}",
                    hint="sign it with the enrollment's primary or secondary key (dpsctl enrollment show ID --show-keys)",
                )
            )
        trace.ok(f"the SAS signature matches the {label} key of enrollment {entry.id!r}")
        _check_lifetime(token, now, trace)
        key = a.primary_key if label == "primary" else a.secondary_key
        return Match(
            entry,
            hub_auth={"type": "sas", "symmetricKey": {"primaryKey": a.primary_key, "secondaryKey": a.secondary_key}},
            device_key=key,
            attestation_state={"symmetricKey": {}},
            runtime_attestation={"symmetricKey": {}},
        )
    if isinstance(cred, X509Credential):
        from dpsctl.core.certs import certificate_info, sha1_thumbprint

        leaf = cred.chain[0]
        _check_cn(leaf, reg_id, trace)
        if not att.check_chain(cred, now, trace):
            raise Refused(_unauthorized(trace.last_failure(), hint="see the failed check with --explain"))
        slot = next(
            (
                s
                for s, ref in (("primary", a.primary_cert), ("secondary", a.secondary_cert))
                if ref and _same_cert(ref.certificate, leaf)
            ),
            None,
        )
        if slot is None:
            trace.fail(
                f"the device certificate (SHA-1 {sha1_thumbprint(leaf)}) is neither the primary nor the secondary certificate of enrollment {entry.id!r}"
            )
            raise Refused(
                _unauthorized(
                    f"the device certificate is not the one enrolled for {entry.id!r}",
                    hint="compare thumbprints: dpsctl enrollment show ID",
                )
            )
        trace.ok(f"the device certificate is the {slot} certificate of enrollment {entry.id!r}")
        _check_chain_reaches_verified(tx, cred, now, trace)
        info = certificate_info(leaf)
        return Match(
            entry,
            hub_auth={
                "type": "selfSigned",
                "x509Thumbprint": {"primaryThumbprint": info["sha1Thumbprint"], "secondaryThumbprint": None},
            },
            attestation_state={"x509": {"certificateInfo": info}},
            runtime_attestation={"x509": {"clientCertificate": {"info": info}}},
        )
    assert isinstance(cred, TpmCredential)
    if not att.run_tpm_challenge(cred, a.endorsement_key or "", service.id_scope, reg_id, now, trace):
        raise Refused(_unauthorized(trace.last_failure()))
    key = att.random_device_key()
    secondary = att.random_device_key()
    return Match(
        entry,
        hub_auth={"type": "sas", "symmetricKey": {"primaryKey": key, "secondaryKey": secondary}},
        device_key=key,
        attestation_state={"tpm": {}},
        runtime_attestation={"tpm": {"endorsementKey": a.endorsement_key, "storageRootKey": a.storage_root_key}},
    )


def _verified_certificates(tx: Transaction) -> list[tuple[str, Certificate]]:
    """Certificates DPS counts as verified: uploaded CAs verified by proof of possession (or --verified), and the
    signing certificates of X.509 enrollment groups (verified automatically when added; docs/choices.md)."""
    from dpsctl.core.certs import load_certificates

    out: list[tuple[str, Certificate]] = []
    for ca in tx.scan("cas"):
        if ca.get("isVerified"):
            out.append(
                (
                    f"verified CA certificate {ca['name']!r}",
                    load_certificates(ca["certificate"], source=f"CA {ca['name']}")[0],
                )
            )
    for group, signers in _group_candidates(tx):
        for label, signer in signers:
            if not isinstance(signer, tuple):  # CA references are covered above, when verified
                out.append((f"the {label} of enrollment group {group.id!r}", signer))
    return out


def _check_chain_reaches_verified(tx: Transaction, cred: X509Credential, now: datetime, trace: Trace) -> None:
    """An individual enrollment's device with a CA-issued certificate must chain up to a verified certificate.

    DOC:iot-dps-https-x509-support: "If you're using a certificate chain for either an individual enrollment or an
    enrollment group, you must upload and verify at least one certificate in the device certificate's signing chain";
    for an individual enrollment "this certificate can be any signing certificate in the device's certificate chain".
    A self-signed device certificate has no chain and needs none.
    """
    from dpsctl.core.certs import common_name, is_ca, is_self_signed, issuer_of, same_certificate, subject_of

    leaf = cred.chain[0]
    if len(cred.chain) == 1 and is_self_signed(leaf):
        trace.ok("the device certificate is self-signed: no signing chain to verify")
        return
    anchors = tx.memo(("groups", "cas"), "verified-certificates", lambda: _verified_certificates(tx))
    for position, cert in enumerate(cred.chain[1:], start=1):
        for label, anchor in anchors:
            if same_certificate(anchor, cert):
                trace.ok(f"chain certificate {position} ({subject_of(cert)!r}) is {label}")
                return
    top = cred.chain[-1]
    depth = sum(1 for c in cred.chain[1:] if is_ca(c))
    for label, anchor in anchors:
        if not is_self_signed(top) and anchor.subject == top.issuer:
            trace.note(f"the chain's top certificate names issuer {issuer_of(top)!r}, {label}")
            if att.check_link_to_signer(top, anchor, depth, now, trace):
                return
    trace.fail(
        "the device certificate is CA-issued, but its chain reaches no verified certificate (no uploaded, verified CA and no group's signing certificate)"
    )
    raise Refused(
        _unauthorized(
            f"the certificate chain of {common_name(leaf)!r} leads to no verified certificate (issuer {issuer_of(cred.chain[-1])!r})",
            hint="upload a CA of the device's chain and verify it: dpsctl ca add NAME --cert ROOT.cert.pem --verified (or prove possession)",
        )
    )


def _token_for(cred: SasCredential, service: ServiceSettings, reg_id: str, now: datetime, trace: Trace) -> SasToken:
    checked = att.check_token(cred, service.id_scope, reg_id, now, trace)
    if isinstance(checked, att.TokenRefusal):
        raise Refused(_unauthorized(checked.message, hint=checked.hint))
    return checked


def _check_lifetime(token: SasToken, now: datetime, trace: Trace) -> None:
    if not att.check_token_lifetime(token, now, trace):
        raise Refused(
            _unauthorized(
                trace.last_failure(),
                hint="build a token that expires sooner: dpsctl keys sas --registration-id ID --key @KEY_FILE --ttl SECONDS",
            )
        )


def _same_cert(pem: str, cert: Certificate) -> bool:
    from dpsctl.core.certs import load_certificates, same_certificate

    return same_certificate(load_certificates(pem, source="enrolled certificate")[0], cert)


def _check_cn(leaf: Certificate, reg_id: str, trace: Trace) -> None:
    from dpsctl.core.certs import check_common_name, common_name, names_registration_id

    if trace.add([check_common_name(leaf, reg_id)]):
        return
    if not names_registration_id(leaf, reg_id):
        raise Refused(
            _unauthorized(
                f"the device certificate's CN {common_name(leaf)!r} is not the registration ID {reg_id!r}",
                hint="DPS takes the registration ID from the certificate CN; omit --registration-id or fix the CN",
            )
        )
    raise Refused(
        _unauthorized(f"X.509 registration ID {reg_id!r} is longer than {MAX_X509_REGISTRATION_ID} characters")
    )


def _match_symmetric_group(
    tx: Transaction, service: ServiceSettings, reg_id: str, cred: SasCredential, now: datetime, trace: Trace
) -> Match:
    from dpsctl.core.keys import derive_device_key

    token = _token_for(cred, service, reg_id, now, trace)
    groups = tx.memo(
        "groups",
        "symmetricKey",
        lambda: [EnrollmentGroup.from_stored(d) for d in tx.find("groups", "attestation", "symmetricKey")],
    )
    for group in groups:
        a = group.attestation
        derived = [
            (label, derive_device_key(key, reg_id))
            for label, key in (("primary", a.primary_key), ("secondary", a.secondary_key))
            if key
        ]
        label = att.match_key(token, derived)
        if label is not None:
            trace.ok(f"the SAS signature matches the key derived from the {label} key of enrollment group {group.id!r}")
            _check_lifetime(token, now, trace)
            keys = dict(derived)
            return Match(
                group,
                hub_auth={
                    "type": "sas",
                    "symmetricKey": {"primaryKey": keys.get("primary"), "secondaryKey": keys.get("secondary")},
                },
                device_key=keys[label],
                attestation_state={"symmetricKey": {"enrollmentGroupId": group.id}},
                runtime_attestation={"symmetricKey": {}},
            )
        if att.match_key(token, [("primary", a.primary_key or ""), ("secondary", a.secondary_key or "")]):
            trace.fail(f"the token is signed with the group key of {group.id!r} itself, not with a key derived from it")
            raise Refused(
                _unauthorized(
                    f"the device signed with the group key of enrollment group {group.id!r} instead of its own derived key",
                    # The most common DPS mistake: say exactly how to get the right key.
                    hint=f"derive the device key: dpsctl enrollment-group compute-device-key {group.id} --registration-id {reg_id}",
                )
            ) from None
    trace.fail(f"the SAS signature matches no key derived from the {len(groups)} symmetric-key group(s)")
    raise Refused(
        _unauthorized(
            f"no enrollment matches {reg_id!r}: there is no individual enrollment, and the token is not signed with a key derived from any symmetric-key group",
            hint=f"a group device's key is: dpsctl enrollment-group compute-device-key GROUP --registration-id {reg_id}",
        )
    )


def _group_candidates(tx: Transaction) -> list[tuple[EnrollmentGroup, list[tuple[str, Signer]]]]:
    """X.509 groups with their signing certificates (uploaded, or referenced CA certificates)."""
    from dpsctl.core.certs import load_certificates

    out = []
    for doc in tx.find("groups", "attestation", "x509"):
        group = EnrollmentGroup.from_stored(doc)
        a = group.attestation
        signers: list[tuple[str, Signer]] = []
        for slot, ref in (("primary", a.primary_cert), ("secondary", a.secondary_cert)):
            if ref:
                signers.append(
                    (
                        f"{slot} signing certificate",
                        load_certificates(ref.certificate, source="signing certificate")[0],
                    )
                )
        for slot, name in (("primary", a.primary_ca), ("secondary", a.secondary_ca)):
            ca = tx.get("cas", name) if name else None
            if ca is not None:
                signers.append(
                    (
                        f"{slot} CA reference {name!r}",
                        (load_certificates(ca["certificate"], source=f"CA {name}")[0], ca),
                    )
                )
        out.append((group, signers))
    return out


def _match_x509_group(tx: Transaction, reg_id: str, cred: X509Credential, now: datetime, trace: Trace) -> Match:
    """Walk the chain leaf to root; the first group whose signer is in the chain (or issued its top) wins."""
    from dpsctl.core.certs import certificate_info, common_name, is_ca, issuer_of, same_certificate, subject_of

    leaf = cred.chain[0]
    _check_cn(leaf, reg_id, trace)
    if not att.check_chain(cred, now, trace):
        raise Refused(_unauthorized(trace.last_failure(), hint="see the failed check with --explain"))
    # Parsed once per transaction (until groups or CAs change): a batch of devices reuses them.
    candidates = tx.memo(("groups", "cas"), "x509-candidates", lambda: _group_candidates(tx))
    found: tuple[EnrollmentGroup, str, Signer, Certificate] | None = None
    for position, cert in enumerate(cred.chain[1:], start=1):
        for group, signers in candidates:
            for label, signer in signers:
                signer_cert = signer[0] if isinstance(signer, tuple) else signer
                if same_certificate(signer_cert, cert):
                    found = (group, label, signer, cert)
                    trace.ok(
                        f"chain certificate {position} ({subject_of(cert)!r}) is the {label} of enrollment group {group.id!r}"
                    )
                    break
            if found:
                break
        if found:
            break
    if found is None:
        top = cred.chain[-1]
        depth = sum(1 for c in cred.chain[1:] if is_ca(c))
        for group, signers in candidates:
            for label, signer in signers:
                signer_cert = signer[0] if isinstance(signer, tuple) else signer
                if subject_of(signer_cert) != issuer_of(top):
                    continue
                trace.note(
                    f"the chain's top certificate names issuer {issuer_of(top)!r}, the {label} of enrollment group {group.id!r}"
                )
                if att.check_link_to_signer(top, signer_cert, depth, now, trace):
                    found = (group, label, signer, signer_cert)
                    break
                raise Refused(_unauthorized(trace.last_failure(), hint="see the failed check with --explain"), group)
            if found:
                break
    if found is None:
        trace.fail(
            "no individual enrollment, and no X.509 enrollment group's signing certificate is in the chain or issued it"
        )
        raise Refused(
            _unauthorized(
                f"no enrollment matches the certificate chain of {common_name(leaf)!r} (issuer {issuer_of(cred.chain[-1])!r})",
                hint="enroll the device certificate, or add a group whose --signing-cert is the CA that issued it",
            )
        )
    group, label, signer, signer_cert = found
    if isinstance(signer, tuple):
        _, ca = signer
        if not ca.get("isVerified"):
            trace.fail(
                f"CA certificate {ca['name']!r} referenced by group {group.id!r} is not verified (no proof of possession)"
            )
            raise Refused(
                _unauthorized(
                    f"CA certificate {ca['name']!r} is not verified",
                    hint=(
                        f"CODE=$(dpsctl ca verification-code {ca['name']}); "
                        f"dpsctl cert create-verification $CODE --ca CA.cert.pem --ca-key CA.key.pem; "
                        f"dpsctl ca verify {ca['name']} --cert verification.cert.pem"
                    ),
                ),
                group,
            )
        trace.ok(f"CA certificate {ca['name']!r} is verified")
    info = certificate_info(leaf)
    signer_info = certificate_info(signer_cert)
    return Match(
        group,
        hub_auth={
            "type": "selfSigned",
            "x509Thumbprint": {"primaryThumbprint": info["sha1Thumbprint"], "secondaryThumbprint": None},
        },
        attestation_state={
            "x509": {"certificateInfo": info, "enrollmentGroupId": group.id, "signingCertificateInfo": signer_info}
        },
        runtime_attestation={"x509": {"clientCertificate": {"info": info}}},
    )
