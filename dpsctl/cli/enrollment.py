"""`dpsctl enrollment ...`: individual enrollments."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from dpsctl.cli import entry as e
from dpsctl.cli.context import EtagOpt, OutputOpt, ShowKeysOpt, read_file, session
from dpsctl.cli.render import Output

if TYPE_CHECKING:  # for annotations only: the core's enrollment code is slow to load, and `--help` needs none of it
    from dpsctl.core.credentials import CredentialInput

# The core and the store are imported inside the commands that use them: loading this module, for its --help or
# for another of its commands, stays cheap (tests/test_startup.py); each command loads what it needs.

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
    keys: tuple[str | None, str | None],
    certs: tuple[str | None, str | None],
    tpm: tuple[str | None, str | None],
    removed: tuple[bool, bool] = (False, False),
) -> CredentialInput:
    """The credential options; TPM keys as given, or read from @FILE."""
    return e.credentials(
        keys,
        certs,
        "certificate",
        removed,
        endorsement_key=_tpm_key(tpm[0], "endorsementKey", "--endorsement-key"),
        storage_root_key=_tpm_key(tpm[1], "storageRootKey", "--storage-root-key"),
    )


def _tpm_key(value: str | None, field: str, option: str) -> str | None:
    """A TPM public key given inline, or as @FILE (its Base64 text, or the TPM file itself)."""
    if value is None or not value.startswith("@"):
        return value
    from dpsctl.core.tpm import public_key_in

    return public_key_in(read_file(value[1:], f"{option} file").decode("utf-8", "replace"), field, value[1:])


@app.command("add")
@e.entry_options(update=False, keys_before="cert", allocation_before="device_information")
def add(
    registration_id: IdArg,
    attestation: e.AttestationOpt,
    cert: CertOpt = None,
    secondary_cert: SecondaryCertOpt = None,
    endorsement_key: EkOpt = None,
    storage_root_key: SrkOpt = None,
    device_id: DeviceIdOpt = None,
    device_information: e.DeviceInfoOpt = None,
    **shared: Any,
) -> None:
    """Create an individual enrollment (symmetric keys are generated when not given)."""
    from dpsctl.core.enrollments import new_enrollment

    given = e.SharedInput(shared)
    cred = _credentials(given.keys, (cert, secondary_cert), (endorsement_key, storage_root_key))
    opts = given.options(device_information=device_information, device_id=device_id)
    e.add(new_enrollment(registration_id, attestation, cred, opts), given)


app.command("list")(e.list_command(group=False))


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
@e.entry_options(update=True, keys_before="cert", allocation_before="device_information")
def update(
    registration_id: IdArg,
    cert: CertOpt = None,
    secondary_cert: SecondaryCertOpt = None,
    endorsement_key: EkOpt = None,
    storage_root_key: SrkOpt = None,
    device_id: DeviceIdOpt = None,
    device_information: e.DeviceInfoOpt = None,
    **shared: Any,
) -> None:
    """Change an individual enrollment; with --etag, refused (exit 4) if it changed meanwhile."""
    given = e.SharedInput(shared)
    cred = _credentials(given.keys, (cert, secondary_cert), (endorsement_key, storage_root_key), given.removed)
    opts = given.options(device_information=device_information, device_id=device_id)
    e.update(registration_id, False, opts, cred, given)


@app.command("delete")
def delete(registration_id: IdArg, etag: EtagOpt = None) -> None:
    """Delete an individual enrollment (its registration record stays)."""
    e.delete(registration_id, False, etag)
