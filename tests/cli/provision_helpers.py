"""Shared steps of the `dpsctl provision` scenarios: a fixed ID scope, hubs, and reading the results."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes

from dpsctl.core.certs import write_certificates, write_private_key
from dpsctl.core.keys import derive_device_key
from dpsctl.core.registrations import STATE_FIELDS
from tests.helpers.constants import HUB_A, HUB_B, HUB_C, ID_SCOPE  # noqa: F401 - re-exported to the provision tests

# What an assigned record shows: every DPS field but the error ones, and the payload (none was sent).
REGISTRATION_STATE_FIELDS = set(STATE_FIELDS) - {"errorCode", "errorMessage", "payload"}


def init(dps: Any, *hubs: str) -> None:
    """A store with a known ID scope (tokens made elsewhere need it) and the given hubs linked."""
    dps.ok("init", "--id-scope", ID_SCOPE)
    for hub in hubs:
        dps.ok("hub", "add", hub)


def provision(dps: Any, *args: str, code: int = 0) -> dict[str, Any]:
    """`dpsctl provision ... -o json --explain`, insisting on the exit code; the parsed output."""
    run = dps("provision", *args, "-o", "json", "--explain")
    assert run.exit_code == code, run
    return run.json()


def refused(dps: Any, *args: str, code: int) -> tuple[dict[str, Any], str]:
    """A provision that must fail with `code`: (parsed output, stderr)."""
    run = dps("provision", *args, "-o", "json", "--explain")
    assert run.exit_code == code, run
    assert run.stderr.startswith("error: "), run
    assert "Traceback" not in run.stderr, run
    return run.json(), run.stderr


def failed_checks(doc: dict[str, Any]) -> list[str]:
    """The messages of the failed checks in an --explain trace."""
    assert all(step["result"] in ("ok", "fail", "note") and step["message"] for step in doc["explain"]), doc["explain"]
    return [step["message"] for step in doc["explain"] if step["result"] == "fail"]


def connection_string_fields(doc: dict[str, Any]) -> dict[str, str]:
    """The connection string of a provision result as a dict (values may contain '=', as Base64 does)."""
    parts = [part.partition("=") for part in doc["connectionString"].split(";")]
    return {name: value for name, _, value in parts}


def group_key(dps: Any, group: str, registration_id: str, *, secondary: bool = False) -> str:
    """The device key `enrollment-group compute-device-key` derives."""
    args = ["enrollment-group", "compute-device-key", group, "--registration-id", registration_id]
    return dps.json(*args, *(["--secondary"] if secondary else []))


def registration(dps: Any, registration_id: str) -> dict[str, Any]:
    """`registration show ID -o json`."""
    return dps.json("registration", "show", registration_id)


def devices(dps: Any, device_id: str | None = None) -> list[tuple[str, str]]:
    """(hub, device ID) of every device in the hub registries, or of one device ID."""
    return sorted((d["hub"], d["deviceId"]) for d in dps.json("device", "list") if device_id in (None, d["deviceId"]))


def history(dps: Any, registration_id: str | None = None) -> list[tuple[str, str | None]]:
    """(status, substatus) of every attempt in `registration history`, oldest first."""
    return [(h["status"], h["substatus"]) for h in dps.json("registration", "history", *([registration_id] if registration_id else []))]


def operations(dps: Any) -> int:
    """The billable operations count `service show` reports."""
    return dps.json("service", "show")["properties"]["operationsCount"]


def thumbprint(cert: Any) -> str:
    """SHA-1 thumbprint as DPS and IoT Hub print it."""
    return cert.fingerprint(hashes.SHA1()).hex().upper()


def write_pem(folder: Path, name: str, *certs: Any) -> str:
    """Certificates (leaf first) in one PEM file; the path as the CLI takes it."""
    path = folder / name
    write_certificates(path, list(certs))
    return str(path)


def write_key(folder: Path, name: str, key: Any) -> str:
    """A private key file; the path as the CLI takes it."""
    path = folder / name
    write_private_key(path, key)
    return str(path)


# The symmetric-key group of the allocation tests.
GROUP_KEY = base64.b64encode(b"g" * 64).decode()
SECONDARY_KEY = base64.b64encode(b"s" * 64).decode()


def add_group(dps, group: str = "fleet", *options: str) -> None:
    dps.ok("enrollment-group", "add", group, "--attestation", "symmetricKey", "--primary-key", GROUP_KEY, "--secondary-key", SECONDARY_KEY, *options)


def register(dps, registration_id: str, *options: str, code: int = 0) -> dict[str, Any]:
    """A device of the symmetric-key group registers with its derived key."""
    key = derive_device_key(GROUP_KEY, registration_id)
    if code:
        return refused(dps, "--registration-id", registration_id, "--symmetric-key", key, *options, code=code)[0]
    return provision(dps, "--registration-id", registration_id, "--symmetric-key", key, *options)
