"""Symmetric keys: generation, strict decoding and enrollment-group key derivation (DPS reference §4.2, §4.3)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from dpsctl.core.errors import InvalidInput

MIN_KEY_BYTES = 16
MAX_KEY_BYTES = 64
# The service auto-generates 64-byte keys (reference §4.3); we do the same by default.
DEFAULT_KEY_BYTES = 64

_GENERATE_HINT = "generate one with `dpsctl keys generate`"


def generate_key(nbytes: int = DEFAULT_KEY_BYTES) -> str:
    """Return a fresh random symmetric key as Base64 text."""
    # bool is an int subclass; `generate_key(True)` is a bug, not a 1-byte key.
    if isinstance(nbytes, bool) or not isinstance(nbytes, int):
        raise InvalidInput("key size must be an integer number of bytes")
    if not MIN_KEY_BYTES <= nbytes <= MAX_KEY_BYTES:
        raise InvalidInput(
            f"key size must be between {MIN_KEY_BYTES} and {MAX_KEY_BYTES} bytes, got {nbytes}",
            hint=f"DPS accepts keys of {MIN_KEY_BYTES}-{MAX_KEY_BYTES} bytes; the default is {DEFAULT_KEY_BYTES}",
        )
    return base64.b64encode(secrets.token_bytes(nbytes)).decode("ascii")


def decode_key(key_b64: str, *, what: str = "key") -> bytes:
    """Decode a Base64 symmetric key strictly and check DPS's 16..64 byte size rule."""
    if not isinstance(key_b64, str):
        raise InvalidInput(f"{what} must be Base64 text", hint=_GENERATE_HINT)
    text = key_b64.strip()
    if not text:
        raise InvalidInput(f"{what} is empty", hint=_GENERATE_HINT)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        # ValueError covers non-ASCII text. The key itself is deliberately left out of the message.
        raise InvalidInput(f"{what} is not valid Base64", hint=_GENERATE_HINT) from None
    if not MIN_KEY_BYTES <= len(raw) <= MAX_KEY_BYTES:
        raise InvalidInput(
            f"{what} decodes to {len(raw)} bytes; DPS requires {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes",
            hint=_GENERATE_HINT,
        )
    return raw


def derive_device_key(group_key_b64: str, registration_id: str) -> str:
    """Derive a device's key from an enrollment-group key: Base64(HMAC-SHA256(group key, registration ID))."""
    group_key = decode_key(group_key_b64, what="group key")
    try:
        message = registration_id.encode("utf-8")
    except (AttributeError, UnicodeEncodeError):
        raise InvalidInput("registration ID must be text encodable as UTF-8") from None
    digest = hmac.new(group_key, message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")
