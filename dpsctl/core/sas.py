"""SAS tokens: build, parse and verify them the way DPS clients really send them (reference §4.1)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from dpsctl.core.errors import InvalidInput
from dpsctl.core.keys import decode_key

SAS_PREFIX = "SharedAccessSignature "
DEVICE_KEY_NAME = "registration"

MAX_TOKEN_LIFETIME_SECONDS = 365 * 24 * 3600
"""The longest a token may still be valid when used (docs/choices.md): DPS documents no bound; one year is generous."""

_REQUIRED_FIELDS = ("sr", "sig", "se")
_KNOWN_FIELDS = frozenset((*_REQUIRED_FIELDS, "skn"))
_SE_DIGITS = re.compile(r"[0-9]{1,19}")  # ASCII only: int() would also take "+1", " 1", "1_0" and Arabic-Indic digits
_TOKEN_HINT = "expected `SharedAccessSignature sr=<resource>&sig=<signature>&se=<expiry>[&skn=<key name>]`"


@dataclass(frozen=True)
class SasToken:
    """The fields of a parsed SAS token; `sr` is kept exactly as sent because the signature covers that text."""

    sr: str
    sig: str
    se: int
    skn: str | None = None

    @property
    def resource(self) -> str:
        """The resource the token is scoped to, URL-decoded (`{idScope}/registrations/{registrationId}`)."""
        return unquote(self.sr)

    @property
    def registration_id(self) -> str | None:
        """The registration ID the resource names, if it is a device resource."""
        parts = self.resource.split("/")
        return parts[2] if len(parts) == 3 and parts[1].lower() == "registrations" else None


def device_resource_uri(id_scope: str, registration_id: str) -> str:
    """Return the resource a device token is scoped to: `{idScope}/registrations/{registrationId}`."""
    return f"{id_scope}/registrations/{registration_id}"


def sign(key: bytes, sr: str, se: int) -> str:
    """Return Base64(HMAC-SHA256(key, sr + "\\n" + se)), the signature DPS expects."""
    message = f"{sr}\n{se}".encode()
    return base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode("ascii")


def build_sas_token(
    resource_uri: str,
    key_b64: str,
    expiry: int,
    *,
    key_name: str | None = DEVICE_KEY_NAME,
    encode_sr: bool = True,
) -> str:
    """Build a SAS token for `resource_uri`, signed over the `sr` text exactly as it is placed in the token."""
    if not resource_uri:
        raise InvalidInput("resource URI is empty")
    if isinstance(expiry, bool) or not isinstance(expiry, int) or expiry < 0:
        raise InvalidInput("token expiry must be a non-negative integer (seconds since the Unix epoch)")
    key = decode_key(key_b64, what="signing key")
    sr = quote(resource_uri, safe="") if encode_sr else resource_uri
    if not encode_sr and any(ch in sr for ch in "& "):
        # A raw '&' would split the field and a space would be cut by HTTP header handling.
        raise InvalidInput("resource URI contains '&' or a space and must be URL-encoded", hint="leave sr encoding on")
    parts = [f"sr={sr}", f"sig={quote(sign(key, sr, expiry), safe='')}", f"se={expiry}"]
    if key_name is not None:
        if not key_name:
            raise InvalidInput("key name is empty", hint="omit it instead (device tokens do not need skn)")
        parts.append(f"skn={quote(key_name, safe='')}")
    return SAS_PREFIX + "&".join(parts)


def parse_sas_token(token: str) -> SasToken:
    """Parse a `SharedAccessSignature ...` token; fields may come in any order and unknown fields are ignored."""
    if not isinstance(token, str):
        raise InvalidInput("SAS token must be text", hint=_TOKEN_HINT)
    text = token.strip()
    if text == SAS_PREFIX.rstrip():
        raise InvalidInput("SAS token has no fields", hint=_TOKEN_HINT)
    if not text.startswith(SAS_PREFIX):
        raise InvalidInput("SAS token does not start with 'SharedAccessSignature '", hint=_TOKEN_HINT)
    _require_utf8(text)
    fields = _split_fields(text[len(SAS_PREFIX) :])
    missing = [name for name in _REQUIRED_FIELDS if name not in fields]
    if missing:
        raise InvalidInput(f"SAS token is missing field(s): {', '.join(missing)}", hint=_TOKEN_HINT)
    skn = fields.get("skn")
    return SasToken(
        sr=fields["sr"],
        sig=unquote(fields["sig"]),
        se=_parse_expiry(fields["se"]),
        skn=unquote(skn) if skn is not None else None,
    )


def signature_matches(token: SasToken, key: bytes) -> bool:
    """Tell whether the token's signature was made with `key` over its literal `sr` and `se`, in constant time."""
    expected = base64.b64decode(sign(key, token.sr, token.se))
    try:
        presented = base64.b64decode(token.sig, validate=True)
    except (binascii.Error, ValueError):
        return False  # a signature that is not Base64 cannot be right; it is not a malformed request
    return hmac.compare_digest(expected, presented)


def resource_matches(token: SasToken, id_scope: str, registration_id: str) -> bool:
    """Tell whether the token is scoped to this device, whatever URL-encoding style and letter case the client used."""
    wanted = device_resource_uri(id_scope, registration_id)
    return token.resource.casefold() == wanted.casefold()


def is_expired(token: SasToken, now_epoch: float) -> bool:
    """Tell whether the token's expiry `se` lies in the past at `now_epoch`; a token is still valid at second `se`."""
    return token.se < now_epoch


def lives_too_long(token: SasToken, now_epoch: float) -> bool:
    """Tell whether the token stays valid for more than MAX_TOKEN_LIFETIME_SECONDS after `now_epoch`."""
    return token.se - now_epoch > MAX_TOKEN_LIFETIME_SECONDS


def _split_fields(body: str) -> dict[str, str]:
    """Split `k=v&k=v...` into known fields, refusing duplicates, empty values and malformed pairs."""
    fields: dict[str, str] = {}
    for part in body.split("&"):
        name, sep, value = part.partition("=")
        if not sep or not name or name != name.strip():
            raise InvalidInput("SAS token has a field that is not of the form name=value", hint=_TOKEN_HINT)
        if name not in _KNOWN_FIELDS:
            continue
        if name in fields:
            # Two different sr/sig/se values leave it ambiguous which one was signed.
            raise InvalidInput(f"SAS token has field '{name}' more than once", hint=_TOKEN_HINT)
        if not value:
            raise InvalidInput(f"SAS token field '{name}' is empty", hint=_TOKEN_HINT)
        fields[name] = value
    return fields


def _parse_expiry(value: str) -> int:
    """Read `se`: a plain non-negative decimal number of seconds since the Unix epoch."""
    if not _SE_DIGITS.fullmatch(value):
        raise InvalidInput(
            "SAS token field 'se' must be a non-negative whole number of seconds since the Unix epoch",
            hint=_TOKEN_HINT,
        )
    return int(value)


def _require_utf8(text: str) -> None:
    """Refuse text that cannot be signed (lone surrogates), so verification never fails with an encoding error."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("SAS token contains characters that are not valid Unicode", hint=_TOKEN_HINT) from None
