"""A software TPM that models DPS TPM attestation: possession of the endorsement key's private half (reference §6).

This is deliberately not TPM 2.0: keys are RSA SubjectPublicKeyInfo instead of TPM2B_PUBLIC, and the challenge is
a plain RSA-OAEP encryption of a fresh HMAC key to the EK instead of MakeCredential + Duplicate. The message flow is
the same: the engine answers an unauthenticated register with an `authenticationKey` only the EK holder can open,
and the device proves itself by signing a SAS token with the key it recovered.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from dpsctl.core.errors import Conflict, InvalidInput, Unauthorized
from dpsctl.core.untrusted_json import parse_json

# Imports inside functions in this module load what only some commands need: every dpsctl process that imports
# the engine would pay for them otherwise (docs/development.md, "Checks that run in CI").

FILE_FORMAT = "dpsctl-software-tpm"
FILE_VERSION = 1
RSA_BITS = 2048
CHALLENGE_KEY_BYTES = 32
MAX_TPM_FILE_BYTES = 1024 * 1024  # a dpsctl TPM file is about 4 KB
# TPM2 MakeCredential uses the label "IDENTITY\0" when encrypting the seed to the EK; reusing it keeps the model honest.
_IDENTITY_LABEL = b"IDENTITY\x00"
_WHITESPACE = re.compile(r"\s+")
_EK_HINT = (
    "pass the Base64 DER SubjectPublicKeyInfo of an RSA-2048 key, e.g. the endorsementKey from `dpsctl tpm create`"
)


@dataclass(frozen=True)
class SoftwareTpm:
    """An in-memory TPM holding an RSA-2048 endorsement key (EK) and storage root key (SRK)."""

    endorsement_private_key: rsa.RSAPrivateKey = field(repr=False)
    storage_root_private_key: rsa.RSAPrivateKey = field(repr=False)

    @property
    def endorsement_key(self) -> str:
        """Base64 DER SubjectPublicKeyInfo of the EK public key, as sent in `tpm.endorsementKey`."""
        return _public_key_b64(self.endorsement_private_key)

    @property
    def storage_root_key(self) -> str:
        """Base64 DER SubjectPublicKeyInfo of the SRK public key, as sent in `tpm.storageRootKey`."""
        return _public_key_b64(self.storage_root_private_key)

    @property
    def registration_id(self) -> str:
        """The default registration ID derived from the EK, as the Node SDK computes it."""
        return default_registration_id(self.endorsement_key)

    def activate_credential(self, authentication_key_b64: str) -> bytes:
        """Recover the key hidden in the engine's `authenticationKey`; only this TPM's EK can open it."""
        try:
            blob = base64.b64decode(_WHITESPACE.sub("", authentication_key_b64), validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise InvalidInput("authentication key is not valid Base64") from None
        try:
            return self.endorsement_private_key.decrypt(blob, _challenge_padding())
        except ValueError:
            raise Unauthorized(
                "authentication key could not be decrypted with this TPM's endorsement key",
                hint="the challenge was issued for a different endorsement key; check the enrollment's endorsementKey",
            ) from None

    def __repr__(self) -> str:
        return f"SoftwareTpm(registration_id={self.registration_id!r})"


def create_tpm() -> SoftwareTpm:
    """Create a software TPM with fresh RSA-2048 endorsement and storage root keys."""
    return SoftwareTpm(
        endorsement_private_key=rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS),
        storage_root_private_key=rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS),
    )


def save_tpm(tpm: SoftwareTpm, path: Path, *, force: bool = False) -> None:
    """Write the TPM, private keys included, to a JSON file that is mode 0600 from its first byte."""
    document = {
        "format": FILE_FORMAT,
        "version": FILE_VERSION,
        "endorsementKey": tpm.endorsement_key,
        "storageRootKey": tpm.storage_root_key,
        "endorsementPrivateKey": _private_key_pem(tpm.endorsement_private_key),
        "storageRootPrivateKey": _private_key_pem(tpm.storage_root_private_key),
    }
    payload = (json.dumps(document, indent=2) + "\n").encode("utf-8")
    from dpsctl.core.safefiles import os_error, write_atomically, write_new

    # Never through a link planted at the path: a new file is created O_EXCL|O_NOFOLLOW, and --force renames a
    # new file over whatever is there (a symbolic link is replaced, its target left alone).
    try:
        if force:
            write_atomically(Path(path), payload, mode=0o600)
        else:
            write_new(Path(path), payload, mode=0o600)
    except FileExistsError:
        raise Conflict(f"{path} already exists", hint="use --force to overwrite it") from None
    except OSError as exc:
        raise os_error(exc, path, "write TPM file", InvalidInput) from None


def load_tpm(path: Path) -> SoftwareTpm:
    """Read a TPM file written by `save_tpm`, checking that its public and private keys belong together."""
    document = _read_tpm_document(path)
    endorsement = _load_private_key(document, "endorsementPrivateKey", path)
    storage_root = _load_private_key(document, "storageRootPrivateKey", path)
    tpm = SoftwareTpm(endorsement_private_key=endorsement, storage_root_private_key=storage_root)
    # A hand-edited file whose public key no longer matches would make enrollments silently fail later.
    if document.get("endorsementKey") != tpm.endorsement_key:
        raise InvalidInput(f"{path}: endorsementKey does not match endorsementPrivateKey")
    if document.get("storageRootKey") != tpm.storage_root_key:
        raise InvalidInput(f"{path}: storageRootKey does not match storageRootPrivateKey")
    return tpm


def validate_endorsement_key(ek_b64: str) -> str:
    """Check that an endorsement key is a Base64 DER RSA (>= 2048 bit) public key and return its canonical Base64."""
    return _public_key_b64(_load_endorsement_public_key(ek_b64))


def default_registration_id(endorsement_key_b64: str) -> str:
    """Return the Node SDK's default registration ID: lowercase unpadded base32 of SHA-256 of the decoded EK."""
    ek_der = base64.b64decode(validate_endorsement_key(endorsement_key_b64))
    return base64.b32encode(hashlib.sha256(ek_der).digest()).decode("ascii").lower().rstrip("=")


def issue_challenge(endorsement_key_b64: str) -> tuple[bytes, str]:
    """Engine side: make a fresh key and return it with its `authenticationKey`, the key encrypted to the EK."""
    key = secrets.token_bytes(CHALLENGE_KEY_BYTES)
    return key, _seal(endorsement_key_b64, key)


def seal_to_endorsement_key(endorsement_key_b64: str, key_b64: str) -> str:
    """Encrypt a Base64 key (the device's hub key) to the EK, so only that TPM can recover it."""
    return _seal(endorsement_key_b64, base64.b64decode(key_b64))


def _seal(endorsement_key_b64: str, secret: bytes) -> str:
    public_key = _load_endorsement_public_key(endorsement_key_b64)
    return base64.b64encode(public_key.encrypt(secret, _challenge_padding())).decode("ascii")


def _challenge_padding() -> padding.OAEP:
    """RSA-OAEP with SHA-256 and the TPM identity label, shared by both sides of the challenge."""
    return padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=_IDENTITY_LABEL)


def _load_endorsement_public_key(ek_b64: str) -> rsa.RSAPublicKey:
    """Parse an EK given as Base64 DER SubjectPublicKeyInfo; line breaks inside the Base64 are tolerated."""
    if not isinstance(ek_b64, str) or not ek_b64.strip():
        raise InvalidInput("endorsement key is empty", hint=_EK_HINT)
    try:
        der = base64.b64decode(_WHITESPACE.sub("", ek_b64), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("endorsement key is not valid Base64", hint=_EK_HINT) from None
    try:
        public_key = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidInput("endorsement key is not a DER public key", hint=_EK_HINT) from None
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise InvalidInput("endorsement key is not an RSA key", hint=_EK_HINT)
    if public_key.key_size < RSA_BITS:
        raise InvalidInput(
            f"endorsement key is RSA-{public_key.key_size}; at least RSA-{RSA_BITS} is required", hint=_EK_HINT
        )
    return public_key


def _public_key_b64(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> str:
    """Base64 of the DER SubjectPublicKeyInfo of a key's public half."""
    public_key = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii")


def _private_key_pem(key: rsa.RSAPrivateKey) -> str:
    """Unencrypted PKCS#8 PEM; the file's 0600 mode is what protects it."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def public_key_in(text: str, field: str, source: str) -> str:
    """A TPM public key given in a file: the file's Base64 text, or the `field` (endorsementKey, storageRootKey) of a TPM file."""
    if text.lstrip().startswith("{"):
        try:
            document = parse_json(text, source)
        except InvalidInput:
            raise InvalidInput(f"{source} is neither Base64 nor a dpsctl software TPM file") from None
        if (
            not isinstance(document, dict)
            or document.get("format") != FILE_FORMAT
            or not isinstance(document.get(field), str)
        ):
            raise InvalidInput(f"{source} is JSON but not a dpsctl software TPM file with {field}")
        return document[field]
    return "".join(text.split())


def _read_tpm_document(path: Path) -> dict[str, Any]:
    """Read and shape-check the JSON of a TPM file."""
    from dpsctl.core.safefiles import read_bounded

    if not os.path.lexists(path):
        raise InvalidInput(f"TPM file {path} does not exist", hint="create one with `dpsctl tpm create`")
    try:
        # A TPM file is about 4 KB: a FIFO, a device or a huge file is refused before it is read.
        text = read_bounded(path, "TPM file", MAX_TPM_FILE_BYTES).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"cannot read TPM file {path}: not UTF-8 text") from None
    try:
        document = parse_json(text, f"TPM file {path}")
    except InvalidInput:
        raise InvalidInput(f"TPM file {path} is not JSON") from None
    if not isinstance(document, dict) or document.get("format") != FILE_FORMAT:
        raise InvalidInput(f"{path} is not a dpsctl software TPM file")
    version = document.get("version")
    if type(version) is not int or version != FILE_VERSION:  # type() check: JSON true/1.0 are not version 1
        raise InvalidInput(f"{path} has unsupported software TPM file version {version!r}", hint="expected version 1")
    return document


def _load_private_key(document: dict[str, Any], name: str, path: Path) -> rsa.RSAPrivateKey:
    """Load one PEM private key field, which must be an unencrypted RSA key of at least 2048 bits."""
    pem = document.get(name)
    if not isinstance(pem, str) or not pem:
        raise InvalidInput(f"{path}: {name} is missing")
    try:
        key = serialization.load_pem_private_key(pem.encode("utf-8"), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm, UnicodeEncodeError):
        # TypeError is what an encrypted key without a password gives; never echo the PEM.
        raise InvalidInput(f"{path}: {name} is not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < RSA_BITS:
        raise InvalidInput(f"{path}: {name} is not an RSA key of at least {RSA_BITS} bits")
    return key
