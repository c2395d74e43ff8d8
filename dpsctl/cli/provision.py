"""`dpsctl provision`: a simulated device registers, with real attestation, allocation and reprovisioning."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dpsctl.cli.context import STATE, OutputOpt, ShowKeysOpt, json_arg, now, read_file, secret_option, session
from dpsctl.cli.render import Output, emit, format_table
from dpsctl.cli.safetext import safe_lines
from dpsctl.core.errors import InvalidInput

# The core and the store are imported inside the commands that use them: loading this module, for its --help or
# for another of its commands, stays cheap (tests/test_startup.py); each command loads what it needs.
if TYPE_CHECKING:
    from dpsctl.core.attestation import Credential
    from dpsctl.core.provisioning import ProvisionResult, RegistrationRequest

SAS_TTL_SECONDS = 3600


def credential(
    scope: str,
    reg_id: str | None,
    symmetric_key: str | None,
    sas_token: str | None,
    cert: str | None,
    key: str | None,
    chain: str | None,
    tpm: str | None,
    passphrase: str | None = None,
) -> Credential:
    """Build what the device presents; the engine verifies it (nothing is trusted because dpsctl built it)."""
    from dpsctl.core.attestation import SasCredential, TpmCredential, X509Credential

    given = [
        name
        for name, value in (
            ("--symmetric-key", symmetric_key),
            ("--sas-token", sas_token),
            ("--cert", cert),
            ("--tpm", tpm),
        )
        if value
    ]
    if len(given) != 1:
        raise InvalidInput(
            "give exactly one credential: --symmetric-key, --sas-token, --cert/--key or --tpm"
            + (f" (got {', '.join(given)})" if given else ""),
            hint="see `dpsctl provision --help`",
        )
    if (key or chain) and not cert:
        raise InvalidInput("--key and --chain go with --cert")
    if symmetric_key:
        from dpsctl.core.keys import decode_key
        from dpsctl.core.sas import build_sas_token, device_resource_uri

        if not reg_id:
            raise InvalidInput("--symmetric-key needs --registration-id")
        from dpsctl.core.key_report import DEVICE_KEY_HINT

        decode_key(symmetric_key, what="device key", hint=DEVICE_KEY_HINT)
        return SasCredential(
            build_sas_token(device_resource_uri(scope, reg_id), symmetric_key, int(time.time()) + SAS_TTL_SECONDS)
        )
    if sas_token:
        return SasCredential(sas_token)
    if cert:
        from dpsctl.core.certs import load_certificates, load_private_key, sign_possession_challenge

        if not key:
            raise InvalidInput("--cert needs --key, the device's private key (a TLS client proves possession of it)")
        certs = load_certificates(read_file(cert, "certificate"), source=cert)
        if chain:
            certs += load_certificates(read_file(chain, "chain"), source=chain)
        private = load_private_key(
            read_file(key, "private key"), source=key, password=passphrase.encode() if passphrase is not None else None
        )
        return X509Credential(tuple(certs), prove=lambda nonce: sign_possession_challenge(private, nonce))

    from dpsctl.core.sas import build_sas_token, device_resource_uri
    from dpsctl.core.tpm import load_tpm

    device = load_tpm(Path(tpm or ""))
    rid = reg_id or device.registration_id

    def answer(authentication_key: str) -> str:
        # The device side of the challenge: decrypt with the EK private key, sign a SAS token with the result.
        import base64

        secret = device.activate_credential(authentication_key)
        return build_sas_token(
            device_resource_uri(scope, rid), base64.b64encode(secret).decode(), int(time.time()) + SAS_TTL_SECONDS
        )

    return TpmCredential(device.endorsement_key, device.storage_root_key, answer)


def _mask(cs: str | None, show_keys: bool) -> str | None:
    if cs is None or show_keys:
        return cs
    from dpsctl.core.validation import mask_connection_string

    return mask_connection_string(cs)


def _register(
    request: Callable[[str], RegistrationRequest], *, dry_run: bool, webhook_timeout: float
) -> ProvisionResult:
    """One device through the engine in phases: no store lock is held while a custom allocation runs.

    The snapshot that gives the ID scope (to build the device's credential) is the one the engine plans on; a
    dry run plans and settles in one read transaction whose changes are dropped, and takes no write lock.
    """
    from dpsctl.core.provisioning import (
        StoreTransactions,
        check_request,
        plan_registration,
        provision_phased,
        provision_planned,
    )
    from dpsctl.core.service import find_service, load_service
    from dpsctl.core.transactions import dry_run as dry
    from dpsctl.store import open_store

    with open_store(STATE.db) as store:
        if dry_run:
            with dry(store) as source, source.write() as tx:
                built = request(load_service(tx, now()).id_scope)
                return provision_phased(source, built, now, webhook_timeout=webhook_timeout)
        source = StoreTransactions(store)
        with source.read() as tx:
            service = find_service(tx)
            planned = None
            if service is not None:
                planned = plan_registration(tx, request(service.id_scope), now(), service=service)
        if planned is not None:
            return provision_planned(source, planned, now, webhook_timeout=webhook_timeout)
        # A new store: its service settings (the ID scope the credential is built for) are written only if the
        # request is valid, as one command's one write.
        with source.write() as tx:
            built = request(load_service(tx, now()).id_scope)
            check_request(built)
        return provision_phased(source, built, now, webhook_timeout=webhook_timeout)


def register(app: typer.Typer) -> None:
    """Add `dpsctl provision` to the root app."""

    @app.command("provision")
    def provision(
        registration_id: Annotated[
            str | None,
            typer.Option(
                "--registration-id",
                help="Registration ID (X.509: defaults to the certificate CN; TPM: to the EK hash).",
            ),
        ] = None,
        symmetric_key: Annotated[
            str | None,
            secret_option(
                "--symmetric-key",
                "device key",
                "The device's own key (enrollment key, or the key derived from a group key).",
                envvar="DPSCTL_SYMMETRIC_KEY",
                metavar="KEY",
            ),
        ] = None,
        sas_token: Annotated[
            str | None,
            secret_option(
                "--sas-token",
                "SAS token",
                "A SAS token made elsewhere (firmware, an SDK).",
                envvar="DPSCTL_SAS_TOKEN",
                metavar="TOKEN",
            ),
        ] = None,
        cert: Annotated[
            str | None,
            typer.Option(
                "--cert", metavar="FILE", help="X.509 device certificate (may hold the full chain, leaf first)."
            ),
        ] = None,
        key: Annotated[
            str | None, typer.Option("--key", metavar="FILE", help="X.509 device private key (PEM or DER).")
        ] = None,
        chain: Annotated[
            str | None,
            typer.Option("--chain", metavar="FILE", help="X.509 intermediate certificates, if not in --cert."),
        ] = None,
        tpm: Annotated[
            str | None, typer.Option("--tpm", metavar="FILE", help="A software TPM file made by `dpsctl tpm create`.")
        ] = None,
        payload: Annotated[
            str | None, typer.Option("--payload", help="Custom payload sent with the registration: JSON or @FILE.")
        ] = None,
        region: Annotated[
            str | None,
            typer.Option("--region", help="The device's Azure region for geoLatency (default: the service location)."),
        ] = None,
        explain: Annotated[
            bool,
            typer.Option(
                "--explain", help="Print the decision trace: matching, every check, allocation, reprovisioning."
            ),
        ] = False,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Do everything but write to the store.")] = False,
        webhook_timeout: Annotated[
            float, typer.Option("--webhook-timeout", help="Seconds to wait for a custom allocation webhook or command.")
        ] = 10.0,
        batch: Annotated[
            str | None,
            typer.Option(
                "--batch",
                metavar="FILE",
                help="Provision every device of a CSV (with header) or JSON Lines file; columns as the flags: registrationId, symmetricKey, sasToken, cert, key, chain, tpm, payload, region.",
                rich_help_panel="Many devices",
            ),
        ] = None,
        count: Annotated[
            int | None,
            typer.Option(
                "--count",
                help="Storm: provision N devices of a symmetric-key group, each with its derived key.",
                rich_help_panel="Many devices",
            ),
        ] = None,
        id_pattern: Annotated[
            str,
            typer.Option(
                "--id-pattern",
                help="Storm: registration IDs, {n} is the device number (1..N).",
                rich_help_panel="Many devices",
            ),
        ] = "device-{n:06d}",
        group: Annotated[
            str | None,
            typer.Option(
                "--group",
                help="Storm: the enrollment group whose primary key the devices derive theirs from.",
                rich_help_panel="Many devices",
            ),
        ] = None,
        group_key: Annotated[
            str | None,
            secret_option(
                "--group-key",
                "group key",
                "Storm: the group key itself (instead of --group).",
                envvar="DPSCTL_GROUP_KEY",
                rich_help_panel="Many devices",
            ),
        ] = None,
        chunk_size: Annotated[
            int,
            typer.Option(
                "--chunk-size",
                help="Devices per store transaction in a batch or storm.",
                rich_help_panel="Many devices",
            ),
        ] = 500,
        show_keys: ShowKeysOpt = False,
        output: OutputOpt = Output.table,
    ) -> None:
        """Simulate a device registering: exit 0 assigned, 5 unauthorized, 6 disabled, 7 allocation failed.

        With --batch or --count, many devices register in one process and a summary is printed;
        the exit code is 0 only when every device was assigned.
        """
        from dpsctl.core.provisioning import RegistrationRequest

        if batch is not None or count is not None:
            from dpsctl.cli.storm import run_many

            single = [
                f
                for f, v in (
                    ("--registration-id", registration_id),
                    ("--symmetric-key", symmetric_key),
                    ("--sas-token", sas_token),
                    ("--cert", cert),
                    ("--tpm", tpm),
                    ("--explain", explain),
                )
                if v
            ]
            if single:
                raise InvalidInput(f"{', '.join(single)} cannot be combined with --batch or --count")
            run_many(
                batch=batch,
                count=count,
                id_pattern=id_pattern,
                group=group,
                group_key=group_key,
                chunk_size=chunk_size,
                region=region,
                webhook_timeout=webhook_timeout,
                output=output,
            )
            return
        body = json_arg(payload, "payload") if payload is not None else None

        def request(scope: str) -> RegistrationRequest:
            presented = credential(scope, registration_id, symmetric_key, sas_token, cert, key, chain, tpm)
            return RegistrationRequest(presented, registration_id, body, region)

        result = _register(request, dry_run=dry_run, webhook_timeout=webhook_timeout)
        error = result.error
        if error is not None and symmetric_key and registration_id:
            from dpsctl.core.key_report import key_mistake

            with session() as tx:
                error = error.amended(hint=key_mistake(tx, registration_id, symmetric_key) or None)
        doc = dict(result.operation)
        if result.connection_string:
            doc["connectionString"] = result.connection_string
        if explain:
            doc["explain"] = [step.to_dict() for step in result.explain]

        def table() -> str:
            text = ""
            if explain:
                from dpsctl.core.checks import format_checks

                text = (
                    safe_lines(format_checks(result.explain)) + "\n"
                )  # the trace quotes allocators, payloads, certificate names
            state = doc.get("registrationState", {})
            return text + format_table(
                ("REGISTRATION ID", "STATUS", "SUBSTATUS", "ASSIGNED HUB", "DEVICE ID", "CONNECTION STRING"),
                [
                    (
                        result.registration_id,
                        result.status,
                        state.get("substatus"),
                        state.get("assignedHub"),
                        state.get("deviceId"),
                        _mask(result.connection_string, show_keys),
                    )
                ],
                drop=("CONNECTION STRING", "SUBSTATUS"),
                title="dry run: nothing was written" if dry_run else None,
            )

        emit(doc, output, table=table)
        if error is not None:
            if explain or error.hint is not None:
                raise error
            raise error.amended(hint="rerun with --explain to see every check")
