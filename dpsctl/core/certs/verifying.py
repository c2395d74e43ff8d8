"""Verifying certificates as DPS does: proof of possession, validity, key strength, and each link of a chain.

Every check returns a `Check` naming the certificate it is about, so the engine's trace, `cert check` and
`ca verify` report the same sentences.
"""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from dpsctl.core.certs.describing import (
    PARSE_ERRORS,
    PrivateKey,
    as_utc,
    common_name,
    distinguished_name,
    extension,
    key_kind,
    names_registration_id,
    subject_of,
    utc_iso,
)
from dpsctl.core.checks import Check, held, passed, refused
from dpsctl.core.errors import InvalidInput
from dpsctl.core.ids import MAX_X509_REGISTRATION_ID, validate_registration_id

ACCEPTED_EC_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384"}
MIN_RSA_BITS = 2048


# --------------------------------------------------------------------------- proof of possession


def sign_possession_challenge(private_key: PrivateKey, nonce: bytes) -> bytes:
    """Sign a server nonce the way a device proves it holds its certificate's key (modelled mTLS)."""
    if not nonce:
        raise InvalidInput("the possession challenge nonce is empty", hint="use a fresh random nonce")
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return private_key.sign(nonce, ec.ECDSA(hashes.SHA256()))
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key.sign(nonce, _pss(), hashes.SHA256())
    raise InvalidInput(f"cannot sign with {key_kind(private_key)} key; dpsctl supports RSA and EC keys")


def verify_possession(cert: x509.Certificate, nonce: bytes, signature: bytes) -> bool:
    """Whether the signature over the nonce was made with the key of this certificate; never raises."""
    if not nonce:
        return False  # an empty challenge proves nothing, whoever signed it
    try:
        public_key = cert.public_key()
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, nonce, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, nonce, _pss(), hashes.SHA256())
        else:
            return False
    except (InvalidSignature, *PARSE_ERRORS):
        return False
    return True


def _pss() -> padding.PSS:
    """RSA-PSS with SHA-256 and a digest-length salt, fixed so both sides agree."""
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


# --------------------------------------------------------------------------- the device certificate's CN


def check_common_name(leaf: x509.Certificate, registration_id: str | None = None) -> Check:
    """DPS reads the registration ID from the CN: it must be a valid X.509 registration ID, and the device's own.

    With `registration_id` (what the device sends) the engine's rule: the CN names it, within 64 characters.
    Without one (`cert check` before any lookup) the CN itself must be a valid registration ID.
    """
    if registration_id is not None:
        if not names_registration_id(leaf, registration_id):
            cn = common_name(leaf)
            return refused(f"the device certificate's CN is {cn!r}, but the registration ID is {registration_id!r}")
        if len(registration_id) > MAX_X509_REGISTRATION_ID:
            return refused(f"X.509 registration IDs are at most {MAX_X509_REGISTRATION_ID} characters")
        return passed(f"the device certificate's CN is the registration ID {registration_id!r}")
    cn = common_name(leaf)
    if cn is None:
        return refused("has no subject CN, so it carries no registration ID", subject_of(leaf))
    try:
        validate_registration_id(cn, what="the CN", max_length=MAX_X509_REGISTRATION_ID)
    except InvalidInput as exc:
        return refused(f"{exc.message}: DPS uses the CN as the registration ID ({exc.hint or 'see the ID rules'})")
    return passed(f"the CN {cn!r} is a valid registration ID")


# --------------------------------------------------------------------------- chain verification


def check_validity(cert: x509.Certificate, now: datetime) -> Check:
    """Whether now lies inside the certificate's validity window (both ends inclusive, RFC 5280)."""
    now = as_utc(now)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    window = f"validity window {utc_iso(start)}..{utc_iso(end)}"
    if now < start:
        return refused(subject=subject_of(cert), what=f"is not yet valid: {window} starts after now ({utc_iso(now)})")
    if now > end:
        return refused(subject=subject_of(cert), what=f"has expired: {window} ended before now ({utc_iso(now)})")
    return passed(subject=subject_of(cert), what=f"{window} covers now")


def check_key_strength(cert: x509.Certificate) -> Check:
    """Whether the public key is one DPS accepts: RSA >= 2048 bits, or EC on P-256/P-384."""
    subject = subject_of(cert)
    rule = f"DPS accepts RSA >= {MIN_RSA_BITS} bits or EC P-256/P-384"
    try:
        key = cert.public_key()
    except PARSE_ERRORS:
        return refused(subject=subject, what=f"has a public key dpsctl cannot read; {rule}")
    if isinstance(key, rsa.RSAPublicKey):
        ok = key.key_size >= MIN_RSA_BITS
        return held(ok, subject=subject, what=f"has an RSA {key.key_size}-bit key" + ("" if ok else f"; {rule}"))
    if isinstance(key, ec.EllipticCurvePublicKey):
        nist_name = ACCEPTED_EC_CURVES.get(key.curve.name)
        if nist_name is not None:
            return passed(subject=subject, what=f"has an EC {nist_name} key")
        return refused(subject=subject, what=f"has an EC {key.curve.name} key; {rule}")
    return refused(subject=subject, what=f"has {key_kind(key)} key; {rule}")


def check_issued_by(child: x509.Certificate, issuer: x509.Certificate, *, ca_depth: int) -> list[Check]:
    """Whether issuer may have issued child: name link, signature, CA flag, keyCertSign, path length."""
    checks = [_check_issuer_name(child, issuer), _check_signature(child, issuer)]
    ca_check = _check_is_ca(issuer, child)
    checks.append(ca_check)
    key_usage = extension(issuer, x509.KeyUsage)
    if key_usage is not None:
        checks.append(_check_key_cert_sign(issuer, key_usage))
    if ca_check.ok:
        # A path length only means something on a CA; a non-CA already failed above.
        checks.append(_check_path_length(issuer, ca_depth))
    return checks


def verify_chain(chain: list[x509.Certificate], now: datetime, *, max_length: int = 10) -> list[Check]:
    """Every check of a leaf-first chain: validity and key of each, each issuance link, and a non-CA leaf."""
    if not chain:
        raise InvalidInput("the certificate chain is empty", hint="pass at least the device certificate")
    checks: list[Check] = []
    if len(chain) > max_length:
        checks.append(
            refused(
                subject=subject_of(chain[0]),
                what=f"chain has {len(chain)} certificates, more than the limit of {max_length}",
            )
        )
    checks.append(_check_is_end_entity(chain[0]))
    for cert in chain:
        checks.append(check_validity(cert, now))
        checks.append(check_key_strength(cert))
    for depth, (child, issuer) in enumerate(pairwise(chain)):
        # Between issuer chain[depth + 1] and the leaf sit chain[1..depth]: `depth` intermediates, which
        # count against a path length even when one wrongly lacks the CA flag (RFC 5280 6.1.4 (l)).
        checks.extend(check_issued_by(child, issuer, ca_depth=depth))
    return checks


def _check_issuer_name(child: x509.Certificate, issuer: x509.Certificate) -> Check:
    """The child names the issuer's subject as its issuer."""
    named = distinguished_name(child.issuer)
    if child.issuer == issuer.subject:
        return passed(subject=subject_of(child), what=f"names its issuer '{named}', the next certificate")
    return refused(
        subject=subject_of(child),
        what=f"names its issuer '{named}', but the next certificate is '{subject_of(issuer)}'",
    )


def _check_signature(child: x509.Certificate, issuer: x509.Certificate) -> Check:
    """The child's signature verifies with the issuer's public key; a wrong key is a failed check."""
    issuer_name = subject_of(issuer)
    ok = _signature_verifies(child, issuer)
    what = f"is signed by '{issuer_name}'" if ok else f"signature does not verify with the key of '{issuer_name}'"
    return held(ok, subject=subject_of(child), what=what)


def _signature_verifies(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Verify child's signature by the signature algorithm the child declares (PKCS#1 v1.5, PSS or ECDSA)."""
    if not _signature_bits_are_whole_bytes(child):
        return False
    try:
        key = issuer.public_key()
        signature_padding = child.signature_algorithm_parameters
        if isinstance(key, rsa.RSAPublicKey) and isinstance(signature_padding, (padding.PKCS1v15, padding.PSS)):
            digest = child.signature_hash_algorithm
            if digest is None:
                return False
            key.verify(child.signature, child.tbs_certificate_bytes, signature_padding, digest)
        elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(signature_padding, ec.ECDSA):
            key.verify(child.signature, child.tbs_certificate_bytes, signature_padding)
        else:
            return False  # key type and declared algorithm disagree, or an algorithm DPS does not use
    except (InvalidSignature, *PARSE_ERRORS):
        return False
    return True


def _signature_bits_are_whole_bytes(cert: x509.Certificate) -> bool:
    """Whether the signature BIT STRING declares 0 unused bits, as openssl requires.

    cryptography ignores that octet, so without this a certificate whose DER (and thumbprint) differs
    from the issued one would still verify. The signature BIT STRING ends the DER, so its unused-bits
    octet sits right before the signature bytes.
    """
    der = cert.public_bytes(serialization.Encoding.DER)
    return der[-len(cert.signature) - 1] == 0


def _check_is_ca(issuer: x509.Certificate, child: x509.Certificate) -> Check:
    """The issuer carries basicConstraints CA=true."""
    constraints = extension(issuer, x509.BasicConstraints)
    if constraints is not None and constraints.ca:
        return passed(subject=subject_of(issuer), what="is a CA (basicConstraints CA=true)")
    found = "has basicConstraints CA=false" if constraints is not None else "has no basicConstraints"
    return refused(subject=subject_of(issuer), what=f"is not a CA ({found}), so it may not sign '{subject_of(child)}'")


def _check_key_cert_sign(issuer: x509.Certificate, key_usage: x509.KeyUsage) -> Check:
    """When keyUsage is present it must allow keyCertSign (RFC 5280 4.2.1.3)."""
    if key_usage.key_cert_sign:
        return passed(subject=subject_of(issuer), what="keyUsage allows signing certificates (keyCertSign)")
    return refused(subject=subject_of(issuer), what="keyUsage lacks keyCertSign, so it may not sign certificates")


def _check_path_length(issuer: x509.Certificate, ca_depth: int) -> Check:
    """The issuer's pathLenConstraint, if any, allows ca_depth CA certificates below it."""
    constraints = extension(issuer, x509.BasicConstraints)
    limit = constraints.path_length if constraints is not None else None
    if limit is None:
        return passed(subject=subject_of(issuer), what="has no path length limit")
    below = f"{ca_depth} CA certificate(s) sit between it and the leaf"
    if ca_depth <= limit:
        return passed(subject=subject_of(issuer), what=f"path length limit {limit} holds: {below}")
    return refused(subject=subject_of(issuer), what=f"path length limit {limit} is exceeded: {below}")


def _check_is_end_entity(leaf: x509.Certificate) -> Check:
    """The leaf (the device certificate) is not a CA."""
    constraints = extension(leaf, x509.BasicConstraints)
    if constraints is not None and constraints.ca:
        return refused(
            subject=subject_of(leaf),
            what="is a CA certificate; a device must present an end-entity (CA=false) certificate",
        )
    return passed(subject=subject_of(leaf), what="is an end-entity certificate (not a CA)")
