"""`dpsctl enrollment ...`: individual enrollments."""

from __future__ import annotations

from typing import Annotated

import typer

from dpsctl.cli import entry as e
from dpsctl.cli.context import EtagOpt, OutputOpt, ShowKeysOpt, now, session
from dpsctl.cli.render import Output, info

app = typer.Typer(
    add_completion=False, help="Individual enrollments: one device each, by registration ID.", no_args_is_help=True
)

IdArg = Annotated[str, typer.Argument(help="Registration ID (case-insensitive, up to 128 characters).")]
CertOpt = Annotated[
    str | None,
    typer.Option(
        "--cert", metavar="FILE", help="X.509: the device certificate (PEM or DER); its CN must be the registration ID."
    ),
]
SecondaryCertOpt = Annotated[
    str | None, typer.Option("--secondary-cert", metavar="FILE", help="X.509: a secondary device certificate.")
]
EkOpt = Annotated[
    str | None,
    typer.Option(
        "--endorsement-key",
        metavar="KEY|@FILE",
        help="TPM: Base64 endorsement key, or @FILE: a file holding it or a software TPM file (`dpsctl tpm create`).",
    ),
]
SrkOpt = Annotated[
    str | None,
    typer.Option(
        "--storage-root-key",
        metavar="KEY|@FILE",
        help="TPM: Base64 storage root key, or @FILE as for --endorsement-key.",
    ),
]
DeviceIdOpt = Annotated[
    str | None, typer.Option("--device-id", help="IoT Hub device ID (default: the registration ID).")
]


def _credentials(
    primary_key,
    secondary_key,
    cert,
    secondary_cert,
    endorsement_key,
    storage_root_key,
    remove_cert=False,
    remove_secondary_cert=False,
):
    from dpsctl.core.enrollments import CredentialInput

    return CredentialInput(
        remove_certificate=remove_cert,
        remove_secondary_certificate=remove_secondary_cert,
        primary_key=primary_key,
        secondary_key=secondary_key,
        certificate=e.cert_input(cert, "certificate"),
        secondary_certificate=e.cert_input(secondary_cert, "secondary certificate"),
        endorsement_key=_tpm_key(endorsement_key, "endorsementKey", "--endorsement-key"),
        storage_root_key=_tpm_key(storage_root_key, "storageRootKey", "--storage-root-key"),
    )


def _tpm_key(value: str | None, field: str, option: str) -> str | None:
    """A TPM public key given inline, or as @FILE (its Base64 text, or the TPM file itself)."""
    if value is None or not value.startswith("@"):
        return value
    from dpsctl.cli.context import read_file
    from dpsctl.core.tpm import public_key_in

    return public_key_in(read_file(value[1:], f"{option} file").decode("utf-8", "replace"), field, value[1:])


@app.command("add")
def add(
    registration_id: IdArg,
    attestation: e.AttestationOpt,
    primary_key: e.PrimaryKeyOpt = None,
    secondary_key: e.SecondaryKeyOpt = None,
    cert: CertOpt = None,
    secondary_cert: SecondaryCertOpt = None,
    endorsement_key: EkOpt = None,
    storage_root_key: SrkOpt = None,
    device_id: DeviceIdOpt = None,
    hub: e.HubOpt = None,
    allocation_policy: e.PolicyOpt = None,
    webhook_url: e.WebhookOpt = None,
    allocation_command: e.CommandOpt = None,
    api_version: e.ApiVersionOpt = None,
    initial_twin: e.TwinOpt = None,
    twin_tags: e.TwinTagsOpt = None,
    twin_desired: e.TwinDesiredOpt = None,
    device_information: e.DeviceInfoOpt = None,
    edge: e.EdgeOpt = None,
    disabled: e.AddDisabledOpt = False,
    reprovision_policy: e.ReprovisionOpt = None,
    show_keys: ShowKeysOpt = False,
    output: OutputOpt = Output.table,
) -> None:
    """Create an individual enrollment (symmetric keys are generated when not given)."""
    from dpsctl.core.enrollments import add_entry, new_enrollment

    cred = _credentials(primary_key, secondary_key, cert, secondary_cert, endorsement_key, storage_root_key)
    opts = e.options(
        hub=hub,
        allocation_policy=allocation_policy,
        webhook_url=webhook_url,
        allocation_command=allocation_command,
        api_version=api_version,
        initial_twin=initial_twin,
        twin_tags=twin_tags,
        twin_desired=twin_desired,
        edge=edge,
        device_information=device_information,
        reprovision_policy=reprovision_policy,
        status="disabled" if disabled else None,
        device_id=device_id,
    )
    entry = new_enrollment(registration_id, attestation, cred, opts)
    with session(write=True) as tx:
        entry = add_entry(tx, entry, now())
    e.render_entry(entry.to_dict(show_keys=show_keys), output)


@app.command("list")
def list_(
    status: Annotated[str | None, typer.Option("--status", help="Only enabled or disabled entries.")] = None,
    attestation: Annotated[str | None, typer.Option("--attestation", help="Only this attestation type.")] = None,
    show_keys: ShowKeysOpt = False,
    output: OutputOpt = Output.table,
) -> None:
    """List individual enrollments."""
    from dpsctl.core.enrollments import list_entries

    with session() as tx:
        docs = [
            x.to_dict(show_keys=show_keys)
            for x in list_entries(tx, group=False, status=status, attestation=attestation)
        ]
    e.render_entries(docs, output, group=False)


@app.command("show")
def show(registration_id: IdArg, show_keys: ShowKeysOpt = False, output: OutputOpt = Output.table) -> None:
    """Show one individual enrollment with its registration state (exit 3 if absent)."""
    from dpsctl.core.enrollments import get_enrollment
    from dpsctl.core.registrations import find_registration

    with session() as tx:
        doc = get_enrollment(tx, registration_id).to_dict(show_keys=show_keys)
        state = find_registration(tx, registration_id)
    if state is not None:
        doc["registrationState"] = state.view()
    e.render_entry(doc, output)


@app.command("update")
def update(
    registration_id: IdArg,
    primary_key: e.NewPrimaryKeyOpt = None,
    secondary_key: e.NewSecondaryKeyOpt = None,
    cert: CertOpt = None,
    secondary_cert: SecondaryCertOpt = None,
    endorsement_key: EkOpt = None,
    storage_root_key: SrkOpt = None,
    device_id: DeviceIdOpt = None,
    hub: e.HubOpt = None,
    allocation_policy: e.PolicyOpt = None,
    webhook_url: e.WebhookOpt = None,
    allocation_command: e.CommandOpt = None,
    api_version: e.ApiVersionOpt = None,
    initial_twin: e.TwinOpt = None,
    twin_tags: e.TwinTagsOpt = None,
    twin_desired: e.TwinDesiredOpt = None,
    device_information: e.DeviceInfoOpt = None,
    edge: e.EdgeOpt = None,
    enabled: e.EnabledOpt = None,
    reprovision_policy: e.ReprovisionOpt = None,
    remove_cert: e.RemoveCertOpt = False,
    remove_secondary_cert: e.RemoveSecondaryCertOpt = False,
    etag: EtagOpt = None,
    show_keys: ShowKeysOpt = False,
    output: OutputOpt = Output.table,
) -> None:
    """Change an individual enrollment; with --etag, refused (exit 4) if it changed meanwhile."""
    from dpsctl.core.enrollments import update_entry

    cred = _credentials(
        primary_key,
        secondary_key,
        cert,
        secondary_cert,
        endorsement_key,
        storage_root_key,
        remove_cert,
        remove_secondary_cert,
    )
    opts = e.options(
        hub=hub,
        allocation_policy=allocation_policy,
        webhook_url=webhook_url,
        allocation_command=allocation_command,
        api_version=api_version,
        initial_twin=initial_twin,
        twin_tags=twin_tags,
        twin_desired=twin_desired,
        edge=edge,
        device_information=device_information,
        reprovision_policy=reprovision_policy,
        status=None if enabled is None else ("enabled" if enabled else "disabled"),
        device_id=device_id,
    )
    with session(write=True) as tx:
        entry = update_entry(tx, registration_id, group=False, opts=opts, cred=cred, etag=etag, now=now())
    e.render_entry(entry.to_dict(show_keys=show_keys), output)


@app.command("delete")
def delete(registration_id: IdArg, etag: EtagOpt = None) -> None:
    """Delete an individual enrollment (its registration record stays)."""
    from dpsctl.core.enrollments import delete_entry

    with session(write=True) as tx:
        entry = delete_entry(tx, registration_id, group=False, etag=etag)
    info(f"deleted enrollment {entry.id}")
