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


def decode_key(key_b64: str, *, what: str = "key", hint: str | None = None) -> bytes:
    """Decode a Base64 symmetric key strictly and check DPS's 16..64 byte size rule; a refusal says what is wrong.

    `hint` is the caller's next step for a key that is simply wrong (default: generate one); a recognisable
    mistake (quotes, URL-safe Base64, lost padding) gets its own fix instead.
    """
    fallback = hint or _GENERATE_HINT
    if not isinstance(key_b64, str):
        raise InvalidInput(f"{what} must be Base64 text", hint=fallback)
    text = key_b64.strip()
    if not text:
        raise InvalidInput(f"{what} is empty", hint=fallback)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        # ValueError covers non-ASCII text. The key itself is deliberately left out of every message.
        message, fix = explain_undecodable(text, what)
        raise InvalidInput(message, hint=fix or fallback) from None
    if not MIN_KEY_BYTES <= len(raw) <= MAX_KEY_BYTES:
        raise InvalidInput(
            f"{what} decodes to {len(raw)} bytes; DPS requires {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes", hint=fallback
        )
    return raw


_BASE64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def _is_key(text: str) -> bool:
    try:
        return MIN_KEY_BYTES <= len(base64.b64decode(text, validate=True)) <= MAX_KEY_BYTES
    except (binascii.Error, ValueError):
        return False


def explain_undecodable(text: str, what: str) -> tuple[str, str | None]:
    """(message, fix) for text that is not Base64: a quoted key, URL-safe Base64, lost padding, or not a key at all."""
    if len(text) > 2 and text[0] == text[-1] and text[0] in "\"'" and _is_key(text[1:-1].strip()):
        return (
            f"{what} is not valid Base64: it is wrapped in quotes ({text[0]}...{text[0]}), which are not part of the key",
            "remove them; to capture a value in a script use -o tsv, which prints it bare: KEY=$(dpsctl ... -o tsv)",
        )
    if ("-" in text or "_" in text) and _is_key(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4)):
        return (
            f"{what} is not valid Base64: it uses URL-safe Base64 ('-' and '_'); DPS keys use standard Base64 ('+' and '/')",
            "replace '-' with '+' and '_' with '/', or copy the key as DPS shows it",
        )
    if len(text) % 4 and _is_key(text + "=" * (-len(text) % 4)):
        return f"{what} is not valid Base64: it has lost its '=' padding at the end", "copy the key whole, '=' included"
    strange = sorted({c for c in text if c not in _BASE64})
    if strange:
        shown = ", ".join(repr(c) if c.isprintable() and c.isascii() else f"U+{ord(c):04X}" for c in strange[:5])
        return f"{what} is not valid Base64: it contains {shown}, which Base64 never does", None
    return (
        f"{what} is not valid Base64 of a key: {len(text)} characters (keys of {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes are 24 to 88, a multiple of 4)",
        None,
    )


def derive_device_key(group_key_b64: str, registration_id: str) -> str:
    """Derive a device's key from an enrollment-group key: Base64(HMAC-SHA256(group key, registration ID))."""
    group_key = decode_key(group_key_b64, what="group key")
    try:
        message = registration_id.encode("utf-8")
    except (AttributeError, UnicodeEncodeError):
        raise InvalidInput("registration ID must be text encodable as UTF-8") from None
    digest = hmac.new(group_key, message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")
