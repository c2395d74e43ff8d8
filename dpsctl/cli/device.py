"""`dpsctl device ...`: the simulated IoT hubs' device registries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from dpsctl.cli.context import DpsNameOpt, OutputOpt, ResourceGroupOpt, ShowKeysOpt, json_arg, now, session
from dpsctl.cli.render import Output, emit
from dpsctl.core.errors import InvalidInput

if TYPE_CHECKING:  # for annotations only: the commands that open the store load it
    from dpsctl.store import Transaction

# The core and the store are imported inside the commands that use them: loading this module, for its --help or
# for another of its commands, stays cheap (tests/test_startup.py); each command loads what it needs.

app = typer.Typer(
    add_completion=False,
    help="Devices as the linked IoT hubs see them after provisioning (identity, auth, twin).",
    no_args_is_help=True,
)

IdArg = Annotated[str, typer.Argument(help="Device ID.")]
HubOpt = Annotated[str | None, typer.Option("--hub", help="The hub (needed when the ID exists in several hubs).")]
COLUMNS = ("HUB", "DEVICE ID", "REGISTRATION ID", "AUTH", "EDGE", "TAGS", "DESIRED", "LAST UPDATED")


def _public(doc: dict, show_keys: bool) -> dict:
    """Hide symmetric keys unless asked, as everywhere in dpsctl."""
    out = dict(doc)
    auth = dict(out.get("authentication") or {})
    if auth.get("symmetricKey") and not show_keys:
        auth["symmetricKey"] = {}
    out["authentication"] = auth
    return out


def _rows(docs: list[dict]) -> list[tuple]:
    return [
        (
            d["hub"],
            d["deviceId"],
            d.get("registrationId"),
            d["authentication"].get("type"),
            d["capabilities"]["iotEdge"],
            d.get("tags"),
            d["properties"]["desired"],
            d.get("lastUpdatedDateTimeUtc"),
        )
        for d in docs
    ]


@app.command("list")
def list_(hub: HubOpt = None, show_keys: ShowKeysOpt = False, output: OutputOpt = Output.table) -> None:
    """List devices in all linked hubs, or in one."""
    from dpsctl.core.devices import list_devices

    with session() as tx:
        docs = [_public(d, show_keys) for d in list_devices(tx, hub)]
    emit(
        docs,
        output,
        columns=COLUMNS,
        rows=lambda: _rows(docs),
        drop=("LAST UPDATED", "DESIRED", "TAGS", "EDGE", "REGISTRATION ID"),
    )


@app.command("show")
def show(
    device_id: IdArg, hub: HubOpt = None, show_keys: ShowKeysOpt = False, output: OutputOpt = Output.table
) -> None:
    """Show one device and its twin (exit 3 if absent)."""
    from dpsctl.core.devices import get_device

    with session() as tx:
        doc = _public(get_device(tx, device_id, hub), show_keys)
    emit(doc, output)


@app.command("update-twin")
def update_twin(
    device_id: IdArg,
    hub: HubOpt = None,
    desired: Annotated[
        str | None, typer.Option("--desired", help="Desired properties patch (JSON or @FILE; null removes a key).")
    ] = None,
    tags: Annotated[str | None, typer.Option("--tags", help="Tags patch (JSON or @FILE).")] = None,
    output: OutputOpt = Output.table,
) -> None:
    """Change a device twin as a back end would, so that migrate and reset can be seen on re-registration."""
    from dpsctl.core.devices import update_twin as patch

    if desired is None and tags is None:
        raise InvalidInput("give --desired and/or --tags")
    with session(write=True) as tx:
        doc = patch(
            tx,
            device_id,
            hub=hub,
            desired=json_arg(desired, "desired properties") if desired is not None else None,
            tags=json_arg(tags, "tags") if tags is not None else None,
            now=now(),
        )
    emit(_public(doc, False), output)


# az's `iot device registration create`: a device registers, as `dpsctl provision` does, in az's words and shape.
registration = typer.Typer(
    add_completion=False,
    hidden=True,
    no_args_is_help=True,
    help="az's `iot device registration`: register a simulated device (dpsctl's own command is `provision`).",
)
app.add_typer(registration, name="registration")

# az's three-state flags here: a bare `--compute-key` means true.
THREE_STATE = ("--compute-key", "--ck")


@registration.command("create")
def registration_create(
    registration_id: Annotated[str, typer.Option("--registration-id", "--rid", help="The device's registration ID.")],
    id_scope: Annotated[
        str | None, typer.Option("--id-scope", "--scope", help="ID scope: must be the store's.")
    ] = None,
    group_id: Annotated[
        str | None,
        typer.Option("--enrollment-group-id", "--gid", help="The enrollment group of a symmetric-key device."),
    ] = None,
    symmetric_key: Annotated[
        str | None,
        typer.Option(
            "--symmetric-key",
            "--key",
            help="The device key (or with --compute-key, the group key); looked up in the store when absent.",
        ),
    ] = None,
    compute_key: Annotated[
        str | None,
        typer.Option(
            "--compute-key",
            "--ck",
            metavar="true|false",
            help="Derive the device key from the group key (--key, or the group's in the store).",
        ),
    ] = None,
    certificate_file: Annotated[
        str | None,
        typer.Option("--certificate-file-path", "--cp", metavar="FILE", help="X.509: the device certificate."),
    ] = None,
    key_file: Annotated[
        str | None, typer.Option("--key-file-path", "--kp", metavar="FILE", help="X.509: the device's private key.")
    ] = None,
    passphrase: Annotated[
        str | None, typer.Option("--passphrase", "--pass", help="X.509: the private key's passphrase.")
    ] = None,
    payload: Annotated[str | None, typer.Option("--payload", help="Custom payload (JSON, or a file).")] = None,
    host: Annotated[
        str | None,
        typer.Option("--provisioning-host", "--host", help="Accepted: the device registers with this store."),
    ] = None,
    dps_name: DpsNameOpt = None,
    resource_group: ResourceGroupOpt = None,
    login: Annotated[
        str | None, typer.Option("--login", "-l", help="A DPS connection string: must be this store's.")
    ] = None,
    auth_type: Annotated[str | None, typer.Option("--auth-type", help="key or login: accepted.")] = None,
    output: OutputOpt = Output.table,
) -> None:
    """Register a device: prints {operationId, status, registrationState}; exit 5 unauthorized, 6 disabled, 7 no hub."""
    from dpsctl.cli.az_compat import check_login, tri_state
    from dpsctl.cli.provision import credential
    from dpsctl.core.provisioning import RegistrationRequest, provision
    from dpsctl.core.service import load_service

    if login is not None:
        check_login(login)
    x509 = certificate_file is not None or key_file is not None
    if x509 and (symmetric_key or group_id):
        raise InvalidInput("give a symmetric key (--key/--gid) or an X.509 certificate (--cp/--kp), not both")
    if x509 and not (certificate_file and key_file):
        raise InvalidInput("X.509 registration needs both --certificate-file-path and --key-file-path")
    body = json_arg(payload, "payload", lenient=True) if payload is not None else None
    with session(write=True) as tx:
        scope = load_service(tx, now()).id_scope
        if id_scope is not None and id_scope.lower() != scope.lower():
            raise InvalidInput(
                f"--id-scope {id_scope} is not this store's ID scope ({scope})",
                hint="drop --id-scope, or use `dpsctl service show --query properties.idScope -o tsv`",
            )
        key = None if x509 else _device_key(tx, registration_id, group_id, symmetric_key, tri_state(compute_key))
        presented = credential(scope, registration_id, key, None, certificate_file, key_file, None, None, passphrase)
        result = provision(tx, RegistrationRequest(presented, registration_id, body, None), now())
    if result.error is not None:
        raise result.error
    emit(result.operation, output)


def _device_key(
    tx: Transaction, registration_id: str, group_id: str | None, key: str | None, compute: bool | None
) -> str:
    """The device's symmetric key, as az finds it: given, derived from a group key, or read from the enrollment."""
    if compute and not group_id and key is None:
        raise InvalidInput(
            "--compute-key derives from an enrollment group's key: give --enrollment-group-id (and --key, or let the store's be used)"
        )
    if key is not None and not compute:
        return key
    if key is not None:
        from dpsctl.core.keys import derive_device_key

        return derive_device_key(key, registration_id)
    if group_id is not None:
        from dpsctl.core.enrollments import compute_device_key

        return compute_device_key(tx, group_id, registration_id)
    from dpsctl.core.enrollments import get_enrollment

    attestation = get_enrollment(tx, registration_id).attestation
    if attestation.type != "symmetricKey" or not attestation.primary_key:
        raise InvalidInput(
            f"enrollment {registration_id!r} uses {attestation.type} attestation: give its certificate (--cp/--kp)"
        )
    return attestation.primary_key
