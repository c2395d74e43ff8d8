"""X.509 for DPS: load certificates and keys in every format real clients send, describe them, and verify chains."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import TypeAlias, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa

from dpsctl.core.errors import InvalidInput

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
"""The private key types dpsctl reads, creates and signs with."""

MAX_INPUT_BYTES = 1024 * 1024
"""Largest certificate or key input accepted; real chains are a few KiB, so more is a wrong file."""

MAX_CERTIFICATES = 20
"""Most certificates accepted in one input; DPS chains are short and this bounds the work per request."""

ACCEPTED_EC_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384"}
MIN_RSA_BITS = 2048

# Exceptions cryptography raises for malformed or unsupported input; never a bug of ours.
_PARSE_ERRORS = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)

_Ext = TypeVar("_Ext", bound=x509.ExtensionType)

_PEM_BEGIN = re.compile(rb"-----BEGIN ([^\r\n-]*)-----")
_PEM_END = re.compile(rb"-----END ([^\r\n-]*)-----")
_ASCII_WHITESPACE = re.compile(rb"[ \t\r\n\v\f]+")


# --------------------------------------------------------------------------- loading


def load_certificates(data: bytes | str, *, source: str) -> list[x509.Certificate]:
    """Parse PEM (one or many), DER, Base64 of DER or Base64 of PEM into certificates, in input order."""
    raw = _as_bounded_bytes(data, source=source, what="certificate")
    if _looks_like_pem(raw):
        ders = _pem_certificate_ders(raw, source=source)
    else:
        ders = _non_pem_certificate_ders(raw, source=source)
    return [_parse_certificate(der, index, len(ders), source=source) for index, der in enumerate(ders, 1)]


def load_private_key(data: bytes | str, *, source: str, password: bytes | None = None) -> PrivateKey:
    """Parse an RSA or EC private key from PEM (PKCS#8 or traditional) or DER; encrypted ones need `password`."""
    raw = _as_bounded_bytes(data, source=source, what="private key")
    is_pem = _looks_like_pem(raw)
    try:
        if is_pem:
            key = serialization.load_pem_private_key(
                _pem_private_key_block(raw, source=source, encrypted=password is not None), password=password
            )
        else:
            key = serialization.load_der_private_key(raw, password=password)
    except TypeError:
        if password is not None:
            raise InvalidInput(
                f"{source}: the key is not encrypted, but a passphrase was given", hint="drop the passphrase"
            ) from None
        # cryptography signals "this key needs a password" with TypeError.
        raise _encrypted_key_error(source) from None
    except _PARSE_ERRORS:
        # The original exception is dropped on purpose: it must never drag key bytes into a message.
        if password is not None:
            raise InvalidInput(
                f"{source}: the passphrase does not open this private key (or the key is damaged)",
                hint="check the passphrase",
            ) from None
        raise InvalidInput(
            f"{source}: found {'a damaged PEM key' if is_pem else _describe_der(raw)}, not a usable private key",
            hint="pass an unencrypted PEM or DER private key file",
        ) from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise InvalidInput(
            f"{source}: found {_key_kind(key)} private key; dpsctl supports only RSA and EC keys",
            hint="create an EC P-256 or RSA >= 2048-bit key",
        )
    return key


def _as_bounded_bytes(data: bytes | str, *, source: str, what: str) -> bytes:
    """The input as bytes, refusing empty and oversized input before any parsing work."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if len(raw) > MAX_INPUT_BYTES:
        raise InvalidInput(
            f"{source}: input is {len(raw)} bytes, more than the {MAX_INPUT_BYTES}-byte limit for a {what}",
            hint=f"pass a single {what} file, not an archive or bundle",
        )
    if not raw.strip():
        raise InvalidInput(f"{source}: is empty, expected a {what}")
    return raw


def _looks_like_pem(raw: bytes) -> bool:
    """Whether the input carries PEM armour (possibly only half of it, when truncated)."""
    return b"-----BEGIN " in raw or b"-----END " in raw


def _pem_blocks(raw: bytes, *, source: str) -> list[tuple[str, bytes]]:
    """(label, Base64 body) of every PEM block in order; text around blocks is ignored, as openssl does."""
    begins = list(_PEM_BEGIN.finditer(raw))
    if not begins:
        raise InvalidInput(f"{source}: has a PEM END line but no BEGIN line; the file looks truncated at the start")
    if len(begins) > MAX_CERTIFICATES:
        raise InvalidInput(
            f"{source}: holds {len(begins)} PEM blocks, more than the limit of {MAX_CERTIFICATES}",
            hint="pass only the device certificate and its chain up to the CA",
        )
    blocks: list[tuple[str, bytes]] = []
    for number, begin in enumerate(begins, 1):
        label = begin.group(1).decode("ascii", "replace")
        limit = begins[number].start() if number < len(begins) else len(raw)
        end = _PEM_END.search(raw, begin.end(), limit)
        if end is None or end.group(1) != begin.group(1):
            raise InvalidInput(
                f"{source}: PEM block #{number} ('-----BEGIN {label}-----') has no matching END line; "
                "the file looks truncated"
            )
        blocks.append((label, raw[begin.end() : end.start()]))
    return blocks


def _pem_body_der(body: bytes, number: int, label: str, *, source: str) -> bytes:
    """Decode one PEM body; RFC 1421 headers ('Proc-Type: 4,ENCRYPTED') mean a legacy encrypted key."""
    if b":" in body:
        if b"ENCRYPTED" in body:
            raise _encrypted_key_error(source)
        raise InvalidInput(f"{source}: PEM block #{number} ('{label}') has headers dpsctl does not understand")
    der = _strict_base64(body)
    if der is None:
        raise InvalidInput(f"{source}: PEM block #{number} ('{label}') is damaged: its body is not valid Base64")
    return der


def _pem_certificate_ders(raw: bytes, *, source: str) -> list[bytes]:
    """DER of every CERTIFICATE block; any other block means the wrong file was given."""
    blocks = _pem_blocks(raw, source=source)
    for number, (label, _body) in enumerate(blocks, 1):
        if label != "CERTIFICATE":
            raise InvalidInput(
                f"{source}: PEM block #{number} is {_describe_pem_label(label)}, not a certificate",
                hint=_hint_for_label(label),
            )
    return [_pem_body_der(body, number, "CERTIFICATE", source=source) for number, (_l, body) in enumerate(blocks, 1)]


def _pem_private_key_block(raw: bytes, *, source: str, encrypted: bool = False) -> bytes:
    """The one PEM private key block of the input, re-armoured alone for cryptography's PEM loader.

    `encrypted`: a passphrase was given, so a PKCS#8 ENCRYPTED PRIVATE KEY block is expected."""
    blocks = _pem_blocks(raw, source=source)
    if not encrypted and any("ENCRYPTED" in label for label, _body in blocks):
        raise _encrypted_key_error(source)
    key_blocks = [
        (number, label, body) for number, (label, body) in enumerate(blocks, 1) if label.endswith("PRIVATE KEY")
    ]
    if not key_blocks:
        labels = ", ".join(sorted({label for label, _body in blocks}))
        raise InvalidInput(
            f"{source}: holds no private key (found PEM blocks: {labels})",
            hint="pass the key file, not the certificate",
        )
    if len(key_blocks) > 1:
        raise InvalidInput(f"{source}: holds {len(key_blocks)} private keys; expected exactly one")
    number, label, body = key_blocks[0]
    der = _pem_body_der(body, number, label, source=source)
    return f"-----BEGIN {label}-----\n".encode() + base64.encodebytes(der) + f"-----END {label}-----\n".encode()


def _non_pem_certificate_ders(raw: bytes, *, source: str) -> list[bytes]:
    """One DER certificate given raw, as Base64 of DER (az CLI .cer), or the PEM text inside Base64."""
    # Raw DER is tried unstripped: its last bytes may legitimately be whitespace values.
    if raw[:1] == b"\x30" and _is_der_certificate(raw):
        return [raw]
    stripped = raw.strip()
    decoded = _strict_base64(stripped)
    if decoded is not None and decoded:
        if _looks_like_pem(decoded):
            return _pem_certificate_ders(decoded, source=f"{source} (Base64-encoded PEM)")
        if _is_der_certificate(decoded):
            return [decoded]
        raise InvalidInput(
            f"{source}: is Base64 of {_describe_der(decoded)}, not of a certificate",
            hint="pass a PEM, DER or Base64-encoded certificate",
        )
    # Describe DER as given: stripping would cut a key whose last bytes happen to be whitespace values.
    raise InvalidInput(
        f"{source}: found {_describe_der(raw if raw[:1] == b'0' else stripped)}, not a PEM, DER or Base64 certificate",
        hint="pass a PEM, DER or Base64-encoded certificate",
    )


def _strict_base64(data: bytes) -> bytes | None:
    """Base64-decoded bytes, or None when the input is not entirely Base64 (whitespace allowed)."""
    try:
        return base64.b64decode(_ASCII_WHITESPACE.sub(b"", data), validate=True)
    except (binascii.Error, ValueError):
        return None


def _is_der_certificate(der: bytes) -> bool:
    """Whether the bytes parse as exactly one DER certificate."""
    try:
        x509.load_der_x509_certificate(der)
    except _PARSE_ERRORS:
        return False
    return True


def _describe_der(data: bytes) -> str:
    """What some non-certificate bytes are, for an error message that never quotes them."""
    # Each probe is only a guess at the kind of file; any failure just means "not this kind".
    if _is_der_certificate(data):
        return "a certificate"
    try:
        serialization.load_der_private_key(data, password=None)
        return "a private key"
    except TypeError:
        return "an encrypted private key"
    except Exception:  # noqa: BLE001 - any failure to parse means "not a private key"
        pass
    for kind, probe in (
        ("a public key", serialization.load_der_public_key),
        ("a certificate signing request", x509.load_der_x509_csr),
    ):
        try:
            probe(data)
            return kind
        except Exception:  # noqa: BLE001 - any failure to parse means "not this kind"
            pass
    if _is_printable_text(data):
        return "text"
    return f"{len(data)} bytes of binary data"


def _is_printable_text(data: bytes) -> bool:
    """Whether the bytes read as ordinary UTF-8 text."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch.isspace() for ch in text)


def _describe_pem_label(label: str) -> str:
    """A human name for a PEM block label."""
    if "PRIVATE KEY" in label:
        return f"a private key ('{label}')"
    return f"a '{label}' block"


def _hint_for_label(label: str) -> str:
    """What the user probably meant when a PEM block is not a certificate."""
    if "PRIVATE KEY" in label:
        return "pass the certificate file (.pem/.cer), not the private key"
    if "REQUEST" in label:
        return "a CSR must be signed by a CA first; pass the resulting certificate"
    return "pass a PEM file with '-----BEGIN CERTIFICATE-----' blocks"


def _encrypted_key_error(source: str) -> InvalidInput:
    """The error for a password-protected key."""
    return InvalidInput(
        f"{source}: the private key is encrypted; dpsctl reads only unencrypted keys",
        hint="decrypt a copy first: openssl pkey -in KEY -out KEY.plain.pem (keep it private)",
    )


def _parse_certificate(der: bytes, index: int, count: int, *, source: str) -> x509.Certificate:
    """Parse one DER certificate fully now, so later checks never meet a lazily-raised parse error."""
    which = f"certificate #{index}" if count > 1 else "the certificate"
    try:
        cert = x509.load_der_x509_certificate(der)
        # cryptography parses these on first access; touching them here turns damage into InvalidInput.
        _ = (cert.version, cert.serial_number, cert.subject, cert.issuer, cert.extensions)
        _ = (cert.not_valid_before_utc, cert.not_valid_after_utc)
    except _PARSE_ERRORS:
        raise InvalidInput(
            f"{source}: {which} is damaged or not a valid X.509 certificate",
            hint="re-export it, e.g. openssl x509 -in CERT -out fixed.pem",
        ) from None
    if cert.serial_number <= 0:
        # RFC 5280 forbids it and newer cryptography releases refuse to load such certificates at all.
        raise InvalidInput(
            f"{source}: {which} ('{subject_of(cert)}') has a serial number that is not positive",
            hint="reissue the certificate; RFC 5280 requires a positive serial number",
        )
    try:
        cert.public_key()
    except _PARSE_ERRORS:
        raise InvalidInput(
            f"{source}: {which} ('{subject_of(cert)}') has a public key of an unsupported algorithm",
            hint="use an EC P-256/P-384 or RSA >= 2048-bit key",
        ) from None
    return cert


# --------------------------------------------------------------------------- description


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
    constraints = _extension(cert, x509.BasicConstraints)
    return bool(constraints is not None and constraints.ca)


def common_name(cert: x509.Certificate) -> str | None:
    """The subject's common name (the DPS registration ID of a device certificate), or None."""
    values = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if not values:
        return None
    # With several CNs the most specific one (last in DER order) names the entity, as in RFC 6125.
    value = values[-1].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


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


def utc_iso(moment: datetime) -> str:
    """An instant as ISO 8601 UTC with a 'Z' suffix, second precision."""
    return _as_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


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


# --------------------------------------------------------------------------- proof of possession


def sign_possession_challenge(private_key: PrivateKey, nonce: bytes) -> bytes:
    """Sign a server nonce the way a device proves it holds its certificate's key (modelled mTLS)."""
    if not nonce:
        raise InvalidInput("the possession challenge nonce is empty", hint="use a fresh random nonce")
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return private_key.sign(nonce, ec.ECDSA(hashes.SHA256()))
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key.sign(nonce, _pss(), hashes.SHA256())
    raise InvalidInput(f"cannot sign with {_key_kind(private_key)} key; dpsctl supports RSA and EC keys")


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
    except (InvalidSignature, *_PARSE_ERRORS):
        return False
    return True


def _pss() -> padding.PSS:
    """RSA-PSS with SHA-256 and a digest-length salt, fixed so both sides agree."""
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


# --------------------------------------------------------------------------- chain verification


@dataclass(frozen=True)
class Check:
    """One verification step: which certificate, what was checked (a sentence), and whether it held."""

    ok: bool
    subject: str
    what: str


def check_validity(cert: x509.Certificate, now: datetime) -> Check:
    """Whether now lies inside the certificate's validity window (both ends inclusive, RFC 5280)."""
    now = _as_utc(now)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    window = f"validity window {utc_iso(start)}..{utc_iso(end)}"
    if now < start:
        return Check(False, subject_of(cert), f"is not yet valid: {window} starts after now ({utc_iso(now)})")
    if now > end:
        return Check(False, subject_of(cert), f"has expired: {window} ended before now ({utc_iso(now)})")
    return Check(True, subject_of(cert), f"{window} covers now")


def check_key(cert: x509.Certificate) -> Check:
    """Whether the public key is one DPS accepts: RSA >= 2048 bits, or EC on P-256/P-384."""
    subject = subject_of(cert)
    rule = f"DPS accepts RSA >= {MIN_RSA_BITS} bits or EC P-256/P-384"
    try:
        key = cert.public_key()
    except _PARSE_ERRORS:
        return Check(False, subject, f"has a public key dpsctl cannot read; {rule}")
    if isinstance(key, rsa.RSAPublicKey):
        ok = key.key_size >= MIN_RSA_BITS
        return Check(ok, subject, f"has an RSA {key.key_size}-bit key" + ("" if ok else f"; {rule}"))
    if isinstance(key, ec.EllipticCurvePublicKey):
        nist_name = ACCEPTED_EC_CURVES.get(key.curve.name)
        if nist_name is not None:
            return Check(True, subject, f"has an EC {nist_name} key")
        return Check(False, subject, f"has an EC {key.curve.name} key; {rule}")
    return Check(False, subject, f"has {_key_kind(key)} key; {rule}")


def check_issued_by(child: x509.Certificate, issuer: x509.Certificate, *, ca_depth: int) -> list[Check]:
    """Whether issuer may have issued child: name link, signature, CA flag, keyCertSign, path length."""
    checks = [_check_issuer_name(child, issuer), _check_signature(child, issuer)]
    ca_check = _check_is_ca(issuer, child)
    checks.append(ca_check)
    key_usage = _extension(issuer, x509.KeyUsage)
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
            Check(
                False,
                subject_of(chain[0]),
                f"chain has {len(chain)} certificates, more than the limit of {max_length}",
            )
        )
    checks.append(_check_is_end_entity(chain[0]))
    for cert in chain:
        checks.append(check_validity(cert, now))
        checks.append(check_key(cert))
    for depth, (child, issuer) in enumerate(pairwise(chain)):
        # Between issuer chain[depth + 1] and the leaf sit chain[1..depth]: `depth` intermediates, which
        # count against a path length even when one wrongly lacks the CA flag (RFC 5280 6.1.4 (l)).
        checks.extend(check_issued_by(child, issuer, ca_depth=depth))
    return checks


def chain_ok(checks: list[Check]) -> bool:
    """Whether every check passed."""
    return all(check.ok for check in checks)


def _check_issuer_name(child: x509.Certificate, issuer: x509.Certificate) -> Check:
    """The child names the issuer's subject as its issuer."""
    named = distinguished_name(child.issuer)
    if child.issuer == issuer.subject:
        return Check(True, subject_of(child), f"names its issuer '{named}', the next certificate")
    return Check(
        False, subject_of(child), f"names its issuer '{named}', but the next certificate is '{subject_of(issuer)}'"
    )


def _check_signature(child: x509.Certificate, issuer: x509.Certificate) -> Check:
    """The child's signature verifies with the issuer's public key; a wrong key is a failed check."""
    issuer_name = subject_of(issuer)
    ok = _signature_verifies(child, issuer)
    what = f"is signed by '{issuer_name}'" if ok else f"signature does not verify with the key of '{issuer_name}'"
    return Check(ok, subject_of(child), what)


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
    except (InvalidSignature, *_PARSE_ERRORS):
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
    constraints = _extension(issuer, x509.BasicConstraints)
    if constraints is not None and constraints.ca:
        return Check(True, subject_of(issuer), "is a CA (basicConstraints CA=true)")
    found = "has basicConstraints CA=false" if constraints is not None else "has no basicConstraints"
    return Check(False, subject_of(issuer), f"is not a CA ({found}), so it may not sign '{subject_of(child)}'")


def _check_key_cert_sign(issuer: x509.Certificate, key_usage: x509.KeyUsage) -> Check:
    """When keyUsage is present it must allow keyCertSign (RFC 5280 4.2.1.3)."""
    if key_usage.key_cert_sign:
        return Check(True, subject_of(issuer), "keyUsage allows signing certificates (keyCertSign)")
    return Check(False, subject_of(issuer), "keyUsage lacks keyCertSign, so it may not sign certificates")


def _check_path_length(issuer: x509.Certificate, ca_depth: int) -> Check:
    """The issuer's pathLenConstraint, if any, allows ca_depth CA certificates below it."""
    constraints = _extension(issuer, x509.BasicConstraints)
    limit = constraints.path_length if constraints is not None else None
    if limit is None:
        return Check(True, subject_of(issuer), "has no path length limit")
    below = f"{ca_depth} CA certificate(s) sit between it and the leaf"
    if ca_depth <= limit:
        return Check(True, subject_of(issuer), f"path length limit {limit} holds: {below}")
    return Check(False, subject_of(issuer), f"path length limit {limit} is exceeded: {below}")


def _check_is_end_entity(leaf: x509.Certificate) -> Check:
    """The leaf (the device certificate) is not a CA."""
    constraints = _extension(leaf, x509.BasicConstraints)
    if constraints is not None and constraints.ca:
        return Check(
            False, subject_of(leaf), "is a CA certificate; a device must present an end-entity (CA=false) certificate"
        )
    return Check(True, subject_of(leaf), "is an end-entity certificate (not a CA)")


def _extension(cert: x509.Certificate, kind: type[_Ext]) -> _Ext | None:
    """The value of one extension, or None when absent or unreadable."""
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except (x509.ExtensionNotFound, *_PARSE_ERRORS):
        return None


def _as_utc(moment: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken as UTC, as cryptography does."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _key_kind(key: object) -> str:
    """An article and a short name of a key's algorithm, for messages."""
    kinds = (
        ((ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey), "an Ed25519"),
        ((ed448.Ed448PrivateKey, ed448.Ed448PublicKey), "an Ed448"),
        ((dsa.DSAPrivateKey, dsa.DSAPublicKey), "a DSA"),
    )
    for types, kind in kinds:
        if isinstance(key, types):
            return kind
    return "an unknown kind of"
