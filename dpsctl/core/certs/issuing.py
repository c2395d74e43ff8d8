"""Issuing certificates for a test PKI: root, intermediate, device and verification certificates, in memory.

Nothing here enforces chain rules (CA flags, path lengths, validity nesting): tests and demos need to build
bad chains too, and `verifying.verify_chain` is the one judge of a chain. `files` writes what is issued here.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dpsctl.core.certs.describing import PrivateKey, as_utc, key_belongs_to, subject_of
from dpsctl.core.certs.verifying import MIN_RSA_BITS
from dpsctl.core.errors import InvalidInput

MAX_RSA_BITS = 8192
MAX_DAYS = 100 * 366
"""Longest validity accepted; beyond it dates approach year 9999, which X.509 cannot encode."""

CLOCK_SKEW = timedelta(minutes=5)
"""Default backdating of notBefore so a peer whose clock runs a little behind still accepts a new cert."""

MAX_COMMON_NAME = 64  # ub-common-name in RFC 5280
_REGISTRATION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


# --------------------------------------------------------------------------- keys


def new_private_key(key_type: str = "ec", rsa_bits: int = 2048) -> PrivateKey:
    """A fresh private key: 'ec' is NIST P-256, 'rsa' is RSA of rsa_bits (2048..8192)."""
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        if not MIN_RSA_BITS <= rsa_bits <= MAX_RSA_BITS:
            raise InvalidInput(
                f"RSA key size {rsa_bits} is outside {MIN_RSA_BITS}..{MAX_RSA_BITS} bits",
                hint="use 2048, 3072 or 4096 bits",
            )
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    raise InvalidInput(f"unknown key type {key_type!r}", hint="use 'ec' (P-256) or 'rsa'")


# --------------------------------------------------------------------------- certificates


def issue_root(
    common_name: str,
    *,
    key_type: str = "ec",
    rsa_bits: int = 2048,
    days: int = 3650,
    path_length: int | None = None,
    not_before: datetime | None = None,
) -> tuple[x509.Certificate, PrivateKey]:
    """A self-signed root CA certificate and its new key."""
    name = _subject(common_name, what="root CA common name")
    _require_path_length(path_length)
    validity = _validity(days, not_before)
    key = new_private_key(key_type, rsa_bits)
    builder = _builder(name, name, key.public_key(), validity)
    builder = _with_ca_extensions(builder, path_length)
    builder = _with_key_identifiers(builder, key.public_key(), issuer_cert=None)
    return _sign(builder, key), key


def issue_intermediate(
    common_name: str,
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    *,
    key_type: str = "ec",
    rsa_bits: int = 2048,
    days: int = 1825,
    path_length: int | None = 0,
    not_before: datetime | None = None,
) -> tuple[x509.Certificate, PrivateKey]:
    """An intermediate CA certificate signed by ca_cert/ca_key, and its new key."""
    name = _subject(common_name, what="intermediate CA common name")
    _require_path_length(path_length)
    _require_key_of(ca_cert, ca_key)
    validity = _validity(days, not_before)
    key = new_private_key(key_type, rsa_bits)
    builder = _builder(name, ca_cert.subject, key.public_key(), validity)
    builder = _with_ca_extensions(builder, path_length)
    builder = _with_key_identifiers(builder, key.public_key(), issuer_cert=ca_cert)
    return _sign(builder, ca_key), key


def issue_device(
    registration_id: str,
    ca_cert: x509.Certificate | None,
    ca_key: PrivateKey | None,
    *,
    key_type: str = "ec",
    rsa_bits: int = 2048,
    days: int = 365,
    not_before: datetime | None = None,
    is_ca: bool = False,
) -> tuple[x509.Certificate, PrivateKey]:
    """A device (leaf) certificate whose CN is the registration ID; self-signed when ca_cert is None."""
    _require_device_cn(registration_id)
    if (ca_cert is None) != (ca_key is None):
        raise InvalidInput(
            "a device certificate needs both the CA certificate and the CA key, or neither (self-signed)"
        )
    if ca_cert is not None and ca_key is not None:
        _require_key_of(ca_cert, ca_key)
    validity = _validity(days, not_before)
    key = new_private_key(key_type, rsa_bits)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, registration_id)])
    issuer_name = name if ca_cert is None else ca_cert.subject
    builder = _builder(name, issuer_name, key.public_key(), validity)
    # is_ca exists only for tests that need a CA-flagged leaf, which verify_chain must refuse.
    builder = _with_ca_extensions(builder, None) if is_ca else _with_end_entity_extensions(builder)
    builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    builder = _with_key_identifiers(builder, key.public_key(), issuer_cert=ca_cert)
    return _sign(builder, key if ca_key is None else ca_key), key


def issue_verification(code: str, ca_cert: x509.Certificate, ca_key: PrivateKey, *, days: int = 30) -> x509.Certificate:
    """The proof-of-possession certificate DPS asks for: CN = verification code, signed by the CA key."""
    name = _subject(code, what="verification code")
    _require_key_of(ca_cert, ca_key)
    validity = _validity(days, None)
    # The leaf's own key is never used: DPS only checks that the CA key signed this CN.
    leaf_key = new_private_key("ec")
    builder = _builder(name, ca_cert.subject, leaf_key.public_key(), validity)
    builder = _with_end_entity_extensions(builder)
    builder = _with_key_identifiers(builder, leaf_key.public_key(), issuer_cert=ca_cert)
    return _sign(builder, ca_key)


def issue_server(
    names: list[str], ca_cert: x509.Certificate, ca_key: PrivateKey, now: datetime, *, days: int
) -> tuple[x509.Certificate, PrivateKey]:
    """A TLS server certificate for `names` (DNS names and IP addresses), ending no later than its CA, and its key."""
    _require_key_of(ca_cert, ca_key)
    key = new_private_key("ec")
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    start = as_utc(now) - CLOCK_SKEW
    validity = (start, min(as_utc(now) + timedelta(days=days), ca_cert.not_valid_after_utc))
    localhost = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    builder = _with_end_entity_extensions(_builder(localhost, ca_cert.subject, key.public_key(), validity))
    builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    builder = _with_key_identifiers(builder, key.public_key(), issuer_cert=ca_cert)
    return _sign(builder, ca_key), key


def _require_device_cn(registration_id: str) -> None:
    """Refuse a registration ID that cannot be an X.509 device CN (1..64 chars, alnum first, then alnum - . _ :)."""
    if _REGISTRATION_ID.fullmatch(registration_id) is None:
        raise InvalidInput(
            f"registration ID {registration_id!r} cannot be a device certificate CN",
            hint="use 1-64 characters: letters, digits, '-', '.', '_', ':', starting with a letter or digit",
        )


def _subject(common_name: str, *, what: str) -> x509.Name:
    """A CN-only name, checked against the X.509 length limit."""
    if not common_name.strip() or len(common_name) > MAX_COMMON_NAME:
        raise InvalidInput(f"the {what} must be 1..{MAX_COMMON_NAME} characters, got {len(common_name)}")
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _require_path_length(path_length: int | None) -> None:
    """A path length is absent or a non-negative count of CAs."""
    if path_length is not None and path_length < 0:
        raise InvalidInput(f"path length {path_length} is negative", hint="use 0 or more, or leave it unset")


def _require_key_of(ca_cert: x509.Certificate, ca_key: PrivateKey) -> None:
    """The CA key is the private half of the CA certificate's public key (catches swapped files early)."""
    if not key_belongs_to(ca_key, ca_cert):
        raise InvalidInput(
            f"the CA key does not belong to the CA certificate '{subject_of(ca_cert)}'",
            hint="pass the key file that was created together with that certificate",
        )


def _validity(days: int, not_before: datetime | None) -> tuple[datetime, datetime]:
    """(notBefore, notAfter): backdated for clock skew by default; days may yield an already expired cert."""
    if not 1 <= days <= MAX_DAYS:
        raise InvalidInput(f"validity of {days} days is outside 1..{MAX_DAYS}")
    start = datetime.now(UTC) - CLOCK_SKEW if not_before is None else as_utc(not_before)
    try:
        return start, start + timedelta(days=days)
    except OverflowError:
        raise InvalidInput(f"a validity of {days} days from {start:%Y-%m-%d} ends after the year 9999") from None


def _random_serial() -> int:
    """A random positive 128-bit serial: unpredictable, and well inside RFC 5280's 20-octet limit."""
    return secrets.randbits(128) or 1


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: CertificatePublicKeyTypes,
    validity: tuple[datetime, datetime],
) -> x509.CertificateBuilder:
    """A v3 certificate builder with names, key, serial and validity set."""
    start, end = validity
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(_random_serial())
        .not_valid_before(start)
        .not_valid_after(end)
    )


def _key_usage(*, digital_signature: bool, cert_sign: bool) -> x509.KeyUsage:
    """A KeyUsage with only the listed bits set."""
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _with_ca_extensions(builder: x509.CertificateBuilder, path_length: int | None) -> x509.CertificateBuilder:
    """basicConstraints CA=true and keyUsage keyCertSign+cRLSign+digitalSignature, both critical."""
    return builder.add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True).add_extension(
        _key_usage(digital_signature=True, cert_sign=True), critical=True
    )


def _with_end_entity_extensions(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    """basicConstraints CA=false and keyUsage digitalSignature (critical), as a TLS client cert needs."""
    return builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True).add_extension(
        _key_usage(digital_signature=True, cert_sign=False), critical=True
    )


def _with_key_identifiers(
    builder: x509.CertificateBuilder,
    public_key: CertificatePublicKeyTypes,
    *,
    issuer_cert: x509.Certificate | None,
) -> x509.CertificateBuilder:
    """Subject and authority key identifiers; the AKI copies the issuer's SKI so path builders can link them."""
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    if issuer_cert is None:
        issuer_ski = ski
    else:
        try:
            issuer_ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:
            # An issuer from elsewhere may lack an SKI; derive the identifier it would have had.
            issuer_ski = x509.SubjectKeyIdentifier.from_public_key(issuer_cert.public_key())
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski)
    return builder.add_extension(ski, critical=False).add_extension(aki, critical=False)


def _sign(builder: x509.CertificateBuilder, signing_key: PrivateKey) -> x509.Certificate:
    """Sign with SHA-384 for a P-384 key and SHA-256 otherwise (hash strength matched to the key)."""
    digest: hashes.SHA256 | hashes.SHA384 = hashes.SHA256()
    if isinstance(signing_key, ec.EllipticCurvePrivateKey) and signing_key.curve.key_size >= 384:
        digest = hashes.SHA384()
    return builder.sign(signing_key, digest)
