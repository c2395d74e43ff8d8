"""Loading certificates and private keys in every format real clients send: PEM, DER, Base64, bundles.

Every refusal says what the input was instead (a key, a CSR, text), and never quotes key bytes.
"""

from __future__ import annotations

import base64
import binascii
import re

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from dpsctl.core.certs.describing import PARSE_ERRORS, PrivateKey, key_kind, subject_of
from dpsctl.core.errors import InvalidInput

MAX_INPUT_BYTES = 1024 * 1024
"""Largest certificate or key input accepted; real chains are a few KiB, so more is a wrong file."""

MAX_CERTIFICATES = 20
"""Most certificates accepted in one input; DPS chains are short and this bounds the work per request."""

_PEM_BEGIN = re.compile(rb"-----BEGIN ([^\r\n-]*)-----")
_PEM_END = re.compile(rb"-----END ([^\r\n-]*)-----")
_ASCII_WHITESPACE = re.compile(rb"[ \t\r\n\v\f]+")


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
    except PARSE_ERRORS:
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
            f"{source}: found {key_kind(key)} private key; dpsctl supports only RSA and EC keys",
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
    except PARSE_ERRORS:
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
    except PARSE_ERRORS:
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
    except PARSE_ERRORS:
        raise InvalidInput(
            f"{source}: {which} ('{subject_of(cert)}') has a public key of an unsupported algorithm",
            hint="use an EC P-256/P-384 or RSA >= 2048-bit key",
        ) from None
    return cert
