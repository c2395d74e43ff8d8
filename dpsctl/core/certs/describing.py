"""What a certificate says, in the words DPS uses: names, common name, thumbprints, dates, and key identity.

Every other certificate module and the engine describe certificates through here, so a rule such as "a
certificate naming itself as issuer is self-signed" or "two keys are the same key" is written once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TypeAlias, TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
"""The private key types dpsctl reads, creates and signs with."""

# Exceptions cryptography raises for malformed or unsupported input; never a bug of ours.
PARSE_ERRORS = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)

_Ext = TypeVar("_Ext", bound=x509.ExtensionType)


def distinguished_name(name: x509.Name) -> str:
    """A name as DPS and Windows show it: most specific first, ', '-separated (e.g. 'CN=x, O=y, C=US')."""
    return ", ".join(rdn.rfc4514_string() for rdn in reversed(name.rdns))


def subject_of(cert: x509.Certificate) -> str:
    """The certificate's subject for messages, never empty."""
    return distinguished_name(cert.subject) or f"(empty subject, serial {serial_hex(cert)})"


def issuer_of(cert: x509.Certificate) -> str:
    """The certificate's issuer name for messages and for matching a signer by name."""
    return distinguished_name(cert.issuer)


def is_ca(cert: x509.Certificate) -> bool:
    """True when basicConstraints says CA=true (what a group signing certificate must be)."""
    constraints = extension(cert, x509.BasicConstraints)
    return bool(constraints is not None and constraints.ca)


def is_self_signed(cert: x509.Certificate) -> bool:
    """Whether the certificate names itself as issuer (a root, or a self-signed device certificate)."""
    return cert.issuer == cert.subject


def common_name(cert: x509.Certificate) -> str | None:
    """The subject's common name (the DPS registration ID of a device certificate), or None."""
    values = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if not values:
        return None
    # With several CNs the most specific one (last in DER order) names the entity, as in RFC 6125.
    value = values[-1].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def names_registration_id(cert: x509.Certificate, registration_id: str) -> bool:
    """Whether the certificate's CN is this registration ID; registration IDs ignore letter case."""
    cn = common_name(cert)
    return cn is not None and cn.lower() == registration_id.lower()


def sha1_thumbprint(cert: x509.Certificate) -> str:
    """SHA-1 fingerprint of the DER certificate: upper-case hex, no colons (DPS and IoT Hub format)."""
    # SHA-1 here is an identifier DPS and IoT Hub display and match on, not a security decision.
    return cert.fingerprint(hashes.SHA1()).hex().upper()


def sha256_thumbprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint of the DER certificate: upper-case hex, no colons."""
    return cert.fingerprint(hashes.SHA256()).hex().upper()


def serial_hex(cert: x509.Certificate) -> str:
    """The serial number in upper-case hex, padded to whole bytes as openssl prints it."""
    digits = format(cert.serial_number, "X")
    return digits.zfill(len(digits) + len(digits) % 2)


def as_utc(moment: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken as UTC, as cryptography does."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def utc_iso(moment: datetime) -> str:
    """An instant as ISO 8601 UTC with a 'Z' suffix, second precision."""
    return as_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def certificate_info(cert: x509.Certificate) -> dict[str, str | int]:
    """The DPS X509CertificateInfo object the service fills in for an uploaded certificate."""
    return {
        "subjectName": distinguished_name(cert.subject),
        "sha1Thumbprint": sha1_thumbprint(cert),
        "sha256Thumbprint": sha256_thumbprint(cert),
        "issuerName": distinguished_name(cert.issuer),
        "notBeforeUtc": utc_iso(cert.not_valid_before_utc),
        "notAfterUtc": utc_iso(cert.not_valid_after_utc),
        "serialNumber": serial_hex(cert),
        # The ASN.1 field counts from 0; humans and DPS say "version 3".
        "version": cert.version.value + 1,
    }


def cert_to_pem(cert: x509.Certificate) -> str:
    """The certificate as PEM text."""
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def same_certificate(a: x509.Certificate, b: x509.Certificate) -> bool:
    """Whether two certificates are byte-for-byte the same DER."""
    return a.public_bytes(serialization.Encoding.DER) == b.public_bytes(serialization.Encoding.DER)


def key_belongs_to(key: PrivateKey, cert: x509.Certificate) -> bool:
    """Whether the private key is the other half of the certificate's public key."""
    return _public_der(key.public_key()) == _public_der(cert.public_key())


def _public_der(public_key: CertificatePublicKeyTypes) -> bytes:
    """SubjectPublicKeyInfo DER of a public key: two keys are the same key when these bytes are equal."""
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def extension(cert: x509.Certificate, kind: type[_Ext]) -> _Ext | None:
    """The value of one extension, or None when absent or unreadable."""
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except (x509.ExtensionNotFound, *PARSE_ERRORS):
        return None


def key_kind(key: object) -> str:
    """An article and a short name of an unsupported key's algorithm, for messages."""
    kinds = (
        ((ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey), "an Ed25519"),
        ((ed448.Ed448PrivateKey, ed448.Ed448PublicKey), "an Ed448"),
        ((dsa.DSAPrivateKey, dsa.DSAPublicKey), "a DSA"),
    )
    for types, kind in kinds:
        if isinstance(key, types):
            return kind
    return "an unknown kind of"
