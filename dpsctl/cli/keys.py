"""`dpsctl keys ...`: symmetric keys offline: generate, derive a group device's key, build a SAS token, diagnose a key."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from dpsctl.cli.context import OutputOpt, now, secret_option, session
from dpsctl.cli.render import Output, emit, info
from dpsctl.cli.safetext import safe_lines
from dpsctl.core.errors import InvalidInput

# The core and the store are imported inside the commands that use them: loading this module, for its --help or
# for another of its commands, stays cheap (tests/test_startup.py); each command loads what it needs.

app = typer.Typer(
    add_completion=False,
    help="Symmetric keys: generate, derive group device keys, build SAS tokens, and find out why a key is refused.",
    no_args_is_help=True,
)

RegIdOpt = Annotated[
    str, typer.Option("--registration-id", help="The device's registration ID (exactly as the device sends it).")
]
KeyOpt = Annotated[
    str,
    secret_option(
        "--key",
        "device key",
        "The device's Base64 key (its enrollment key, or the key derived from a group key).",
        envvar="DPSCTL_SYMMETRIC_KEY",
    ),
]


@app.command("generate")
def generate(
    nbytes: Annotated[int, typer.Option("--bytes", help="Key length in bytes, 16 to 64 (DPS generates 64).")] = 64,
    output: OutputOpt = Output.table,
) -> None:
    """Print a fresh random Base64 key."""
    from dpsctl.core.keys import generate_key

    emit(generate_key(nbytes), output)


@app.command("derive")
def derive(
    group_key: Annotated[
        str,
        secret_option(
            "--group-key",
            "group key",
            "The enrollment group's Base64 primary or secondary key.",
            envvar="DPSCTL_GROUP_KEY",
        ),
    ],
    registration_id: RegIdOpt,
    output: OutputOpt = Output.table,
) -> None:
    """Print a group device's key, offline: Base64(HMAC-SHA256(group key, registration ID))."""
    from dpsctl.core.ids import validate_registration_id
    from dpsctl.core.keys import derive_device_key

    emit(derive_device_key(group_key, validate_registration_id(registration_id)), output)


@app.command("sas")
def sas(
    registration_id: RegIdOpt,
    key: KeyOpt,
    id_scope: Annotated[str | None, typer.Option("--id-scope", help="ID scope (default: the store's).")] = None,
    ttl: Annotated[int | None, typer.Option("--ttl", help="Seconds the token stays valid (default 3600).")] = None,
    expiry: Annotated[
        int | None, typer.Option("--expiry", help="Expiry as seconds since the Unix epoch (instead of --ttl).")
    ] = None,
    output: OutputOpt = Output.table,
) -> None:
    """Print the SAS token a device sends to DPS: sr={scope}/registrations/{id}, signed with its key, skn=registration."""
    from dpsctl.core.ids import validate_id_scope, validate_registration_id
    from dpsctl.core.sas import build_sas_token, device_resource_uri

    reg_id = validate_registration_id(registration_id)
    if ttl is not None and expiry is not None:
        raise InvalidInput("give --ttl or --expiry, not both")
    if ttl is not None and ttl <= 0:
        raise InvalidInput(f"--ttl must be a positive number of seconds, got {ttl}")
    if id_scope is not None:
        scope = validate_id_scope(id_scope)
    else:
        from dpsctl.core.service import load_service

        with session() as tx:
            scope = load_service(tx, now()).id_scope
    se = expiry if expiry is not None else int(now().timestamp()) + (ttl or 3600)
    if se < 0 or se > 253402300799:
        raise InvalidInput(f"--expiry {se} is outside 0..253402300799 (the year 9999)")
    from dpsctl.core.sas import MAX_TOKEN_LIFETIME_SECONDS

    if se - now().timestamp() > MAX_TOKEN_LIFETIME_SECONDS:
        days = MAX_TOKEN_LIFETIME_SECONDS // 86400
        raise InvalidInput(
            f"the token would be valid for more than {days} days; dpsctl accepts tokens valid for at most {days} days",
            hint=f"use --ttl of at most {MAX_TOKEN_LIFETIME_SECONDS} seconds",
        )
    resource = device_resource_uri(scope, reg_id)
    token = build_sas_token(resource, key, se)
    expires = datetime.fromtimestamp(se, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    doc = {
        "registrationId": reg_id,
        "idScope": scope,
        "resourceUri": resource,
        "expiry": se,
        "expiryUtc": expires,
        "sasToken": token,
    }
    emit(doc, output, table=lambda: token + "\n")


@app.command("check")
def check(registration_id: RegIdOpt, key: KeyOpt, output: OutputOpt = Output.table) -> None:
    """Say which key this is for the device and whether DPS would accept it: exit 0 accepted, 2 not a key, 5 refused, 6 disabled."""
    from dpsctl.core.checks import format_checks
    from dpsctl.core.key_report import check_symmetric_key

    with session() as tx:
        report = check_symmetric_key(tx, registration_id, key, now())

    def table() -> str:
        lines = [f"registration ID: {report.registration_id}", f"diagnosis: {report.message}"]
        lines += [format_checks(report.explain)] if report.explain else []
        return (
            safe_lines("\n".join(lines + ["DPS would accept it" if report.accepted else "DPS would refuse it"])) + "\n"
        )

    emit(report.to_dict(), output, table=table)
    if report.error is not None:
        raise report.error
    info(f"ok: a SAS token signed with this key is accepted for {report.registration_id}")
