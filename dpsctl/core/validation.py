"""Checks of values from outside (users, devices, files): types, known fields, choices, URLs, twins, connection strings.

Records read back from the store were checked when they were written and are not checked again
(`from_stored` in models.py); everything here is for input.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from dpsctl.core.errors import InvalidInput, NotFound

# Imports inside functions in this module load what only some commands need: every dpsctl process that imports
# the engine would pay for them otherwise (docs/development.md, "Checks that run in CI").

DEFAULT_CUSTOM_API_VERSION = "2021-10-01"
MIN_CUSTOM_API_VERSION = "2018-09-01-preview"  # the oldest the service accepts (reference §1, SPEC-SVC)
MAX_TWIN_BYTES = 32 * 1024  # IoT Hub's limit for desired properties and tags, each; DPS documents none of its own

Json = dict[str, Any]

_WANTED = {"dict": "an object", "list": "a list", "str": "a string", "bool": "true or false", "int": "an integer"}


def expect(doc: Any, kind: type | tuple[type, ...], where: str) -> Any:
    """Type-check one field of an input document, naming the field on failure."""
    if not isinstance(doc, kind) or (kind is int and isinstance(doc, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise InvalidInput(f"{where} must be {_WANTED.get(names, names)}")
    return doc


def check_keys(doc: Json, allowed: set[str], where: str) -> None:
    """Refuse fields we do not know, so that a typo in an import file is not silently dropped."""
    if allowed.issuperset(doc):  # the usual case, without building a set per record of a large import
        return
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise InvalidInput(
            f"{where} has unknown field {unknown[0]!r}", hint=f"known fields: {', '.join(sorted(allowed))}"
        )


def input_object(doc: Any, allowed: set[str], where: str) -> Json:
    """An input JSON object holding only known fields."""
    check_keys(expect(doc, dict, where), allowed, where)
    return doc


def optional_field(doc: Json, key: str, kind: type, where: str, default: Any = None) -> Any:
    """`doc[key]` type-checked (naming `where.key`), or `default` when it is absent, null or empty."""
    value = doc.get(key)
    if value is None or (not value and isinstance(value, (str, list, dict))):
        return default
    return expect(value, kind, f"{where}.{key}")


def choice(value: Any, choices: tuple[str, ...], where: str) -> str:
    """Match an enum value case-insensitively (as az does) and return its canonical spelling."""
    if isinstance(value, str):
        for known in choices:
            if known.lower() == value.lower():
                return known
    raise InvalidInput(f"{where} is {value!r}; expected one of: {', '.join(choices)}")


def filter_choice(value: str, choices: tuple[str, ...], where: str) -> str:
    """A list filter's value: like `choice`, but a value that names nothing is not found (exit 3), as `show` says."""
    try:
        return choice(value, choices, where)
    except InvalidInput:
        raise NotFound(f"there is no {where} {value!r}; expected one of: {', '.join(choices)}") from None


def require_named(found: bool, referenced: bool, what: str, hint: str) -> None:
    """A list filter naming a record: refused (exit 3) when no such record exists and nothing refers to it."""
    if not found and not referenced:
        raise NotFound(f"{what} does not exist", hint=hint)


def validate_initial_twin(doc: Any, where: str = "initialTwin") -> Json:
    """Check an initial twin `{"tags": {...}, "properties": {"desired": {...}}}` and return a clean copy."""
    from dpsctl.core.untrusted_json import check_depth

    expect(doc, dict, where)
    check_depth(doc, where)  # before json.dumps and deepcopy below, which recurse once per level
    check_keys(doc, {"tags", "properties"}, where)
    twin: Json = {}
    if doc.get("tags") is not None:
        twin["tags"] = expect(doc["tags"], dict, f"{where}.tags")
    if doc.get("properties") is not None:
        props = expect(doc["properties"], dict, f"{where}.properties")
        check_keys(props, {"desired"}, f"{where}.properties")
        desired = props.get("desired") or {}
        twin["properties"] = {"desired": expect(desired, dict, f"{where}.properties.desired")}
    for part in ("tags", "properties"):
        size = len(json.dumps(twin.get(part, {}), separators=(",", ":")).encode())
        if size > MAX_TWIN_BYTES:
            raise InvalidInput(f"{where}.{part} is {size} bytes; the limit is {MAX_TWIN_BYTES} (IoT Hub's twin limit)")
    return copy.deepcopy(twin)


def validate_custom_api_version(version: str, where: str = "customAllocationDefinition.apiVersion") -> str:
    """A DPS api-version (`YYYY-MM-DD` or `YYYY-MM-DD-preview`) no older than 2018-09-01-preview; returned in lower case."""
    import re
    from datetime import date

    match = (
        re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})(-preview)?", version.strip().lower())
        if isinstance(version, str)
        else None
    )
    try:
        day = date(int(match[1]), int(match[2]), int(match[3])) if match else None
    except ValueError:
        day = None
    hint = (
        f"use an api-version such as {DEFAULT_CUSTOM_API_VERSION} (the oldest DPS accepts is {MIN_CUSTOM_API_VERSION})"
    )
    if match is None or day is None:
        shown = repr(version[:40]) if isinstance(version, str) else "?"
        raise InvalidInput(f"{where} {shown} is not an api-version (YYYY-MM-DD or YYYY-MM-DD-preview)", hint=hint)
    # On the same day a preview comes before the stable version.
    if (day, match[4] is None) < (date(2018, 9, 1), False):
        raise InvalidInput(
            f"{where} {version!r} is older than {MIN_CUSTOM_API_VERSION}, the oldest DPS accepts", hint=hint
        )
    return version.strip().lower()


def validate_allocation_command(command: str, where: str = "allocation command") -> str:
    """An allocation command must split into a program and its arguments (it runs without a shell)."""
    import shlex

    if command:  # empty means "none", as for the webhook URL
        try:
            shlex.split(command)
        except ValueError as error:
            # Refused when stored, not at the first device's registration.
            raise InvalidInput(
                f"{where} cannot be parsed: {error}",
                hint="quote it as for a POSIX shell; it is split, never run by a shell",
            ) from None
    return command


def validate_webhook_url(url: str, where: str = "webhook URL") -> str:
    """A webhook must be an absolute http(s) URL with a host."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"{where} must be an http:// or https:// URL with a host name")
    return url


def validate_weight(weight: int) -> int:
    """Allocation weights are 1 to 1000, as in DPS."""
    if not 1 <= weight <= 1000:
        raise InvalidInput(f"allocation weight {weight} is out of range", hint="use a whole number from 1 to 1000")
    return weight


def check_hub_connection_string(cs: str, host: str) -> str:
    """A hub connection string must name the same hub and carry a valid Base64 key, as DPS checks when linking."""
    fields = {}
    for part in cs.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            fields[name.strip().lower()] = value
    missing = [f for f in ("hostname", "sharedaccesskeyname", "sharedaccesskey") if not fields.get(f)]
    if missing:
        raise InvalidInput(
            "hub connection string is missing " + ", ".join(missing),
            hint="expected HostName=<hub>.azure-devices.net;SharedAccessKeyName=<policy>;SharedAccessKey=<key>",
        )
    if not fields["hostname"].isascii() or fields["hostname"].lower() != host:
        raise InvalidInput(f"the connection string is for {fields['hostname']}, not {host}")
    from dpsctl.core.keys import decode_key

    decode_key(fields["sharedaccesskey"], what="hub key (SharedAccessKey of the connection string)")
    return cs


def default_hub_connection_string(host: str) -> str:
    """A placeholder owner connection string for a simulated hub, with a stable fake key."""
    import base64
    import hashlib

    key = base64.b64encode(hashlib.sha256(f"dpsctl-simulated-hub:{host}".encode()).digest()).decode()
    return f"HostName={host};SharedAccessKeyName=iothubowner;SharedAccessKey={key}"


def connection_string_fields(text: str) -> dict[str, str]:
    """The `Name=value;...` fields of a connection string, names lower-cased (a value may hold '=')."""
    fields: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return fields


def mask_connection_string(cs: str) -> str:
    """Hide the SharedAccessKey part of a connection string, as the Azure portal and az do."""
    parts = []
    for part in cs.split(";"):
        name, sep, _ = part.partition("=")
        parts.append(f"{name}=****" if sep and name.lower() == "sharedaccesskey" else part)
    return ";".join(parts)
