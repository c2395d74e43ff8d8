"""Validation of the identifiers DPS and IoT Hub accept (registration IDs, group IDs, hub names, ID scopes)."""

from __future__ import annotations

import re

from dpsctl.core.errors import InvalidInput

HUB_DOMAIN = ".azure-devices.net"
MAX_REGISTRATION_ID = 128
MAX_X509_REGISTRATION_ID = 64

# Swagger and docs disagree on the first and last character; this is the intersection of both rules
# (alphanumeric start, alphanumeric or '-' end), written with explicit ASCII classes so that Unicode
# look-alikes (Cyrillic 'а', full-width digits) are refused rather than folded.
_REGISTRATION_ID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._:-]*[A-Za-z0-9-])?")
_DEVICE_ID = re.compile(r"[A-Za-z0-9\-.%_*?!(),:=@$']{1,128}")
_HUB_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_ID_SCOPE = re.compile(r"0ne[0-9A-Fa-f]{8}")

_ID_RULES = "1 to {n} characters: letters, digits and - . _ : (ASCII only), starting with a letter or digit and ending with a letter, digit or -"


def _printable(value: str) -> str:
    """Quote an ID for an error message without letting control characters through."""
    shown = value if len(value) <= 80 else value[:77] + "..."
    return repr(shown)


def validate_registration_id(
    value: str, *, what: str = "registration ID", max_length: int = MAX_REGISTRATION_ID
) -> str:
    """Return the registration ID unchanged if DPS would accept it, else raise InvalidInput."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{what} is empty", hint=_ID_RULES.format(n=max_length))
    if len(value) > max_length:
        raise InvalidInput(f"{what} {_printable(value)} is {len(value)} characters long; the limit is {max_length}")
    if not _REGISTRATION_ID.fullmatch(value):
        raise InvalidInput(f"{what} {_printable(value)} is not valid", hint=_ID_RULES.format(n=max_length))
    return value


def validate_group_id(value: str) -> str:
    """Return the enrollment group ID unchanged if valid (same rules as registration IDs)."""
    return validate_registration_id(value, what="enrollment group ID")


def validate_device_id(value: str) -> str:
    """Return an IoT Hub device ID unchanged if the hub would accept it."""
    if not isinstance(value, str) or not _DEVICE_ID.fullmatch(value):
        raise InvalidInput(
            f"device ID {_printable(str(value))} is not valid",
            hint="1 to 128 ASCII characters: letters, digits and - . % _ * ? ! ( ) , : = @ $ '",
        )
    return value


def hub_host_name(name: str) -> str:
    """Turn a bare hub name or a host name into the hub's host name (`NAME.azure-devices.net`)."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("hub name is empty")
    # ASCII first: lower() would fold the Kelvin sign (U+212A) into 'k' and accept a name that only looks valid.
    host = name.strip().lower() if name.isascii() else name.strip()
    if "." not in host:
        host += HUB_DOMAIN
    labels = host.split(".")
    if len(host) > 253 or not all(_HUB_LABEL.fullmatch(label) for label in labels):
        raise InvalidInput(
            f"hub name {_printable(name)} is not a valid host name",
            hint="use the hub's name (letters, digits, hyphens) or its host name, e.g. myhub.azure-devices.net",
        )
    return host


def validate_id_scope(value: str) -> str:
    """Return a normalised ID scope (`0ne` + 8 upper-case hex digits)."""
    if not isinstance(value, str) or not _ID_SCOPE.fullmatch(value):
        raise InvalidInput(
            f"ID scope {_printable(str(value))} is not valid",
            hint="DPS ID scopes are '0ne' followed by 8 hexadecimal digits, e.g. 0ne0045B3C6",
        )
    return "0ne" + value[3:].upper()
