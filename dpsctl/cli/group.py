"""`dpsctl enrollment-group ...`: groups of devices sharing a symmetric key or a signing CA."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from dpsctl.cli import entry as e
from dpsctl.cli.context import EtagOpt, OutputOpt, ShowKeysOpt, session
from dpsctl.cli.render import Output, emit
from dpsctl.core.errors import InvalidInput

if TYPE_CHECKING:  # for annotations only: the core's enrollment code is slow to load, and `--help` needs none of it
    from dpsctl.core.credentials import CredentialInput

# The core and the store are imported inside the commands that use them: loading this module, for its --help or
# for another of its commands, stays cheap (tests/test_startup.py); each command loads what it needs.

app = typer.Typer(
    add_completion=False,
    help="Enrollment groups: many devices sharing a group key or a signing CA.",
    no_args_is_help=True,
)

IdArg = Annotated[str, typer.Argument(help="Enrollment group ID.")]
SigningCertOpt = Annotated[
    str | None,
    typer.Option("--signing-cert", metavar="FILE", help="X.509: the root or intermediate CA certificate (PEM or DER)."),
]
SecondarySigningCertOpt = Annotated[
    str | None, typer.Option("--secondary-signing-cert", metavar="FILE", help="X.509: a secondary signing certificate.")
]
CaRefOpt = Annotated[
    str | None, typer.Option("--ca-ref", help="X.509: name of a CA certificate uploaded with `dpsctl ca add`.")
]
GroupAttestationOpt = Annotated[
    str | None,
    typer.Option(
        "--attestation",
        metavar="symmetricKey|x509",
        help="Attestation type (default: x509 when a signing certificate or CA is given, else symmetricKey, as az).",
    ),
]
SecondaryCaRefOpt = Annotated[
    str | None, typer.Option("--secondary-ca-ref", help="X.509: a secondary CA certificate name.")
]


def _credentials(
    given: e.SharedInput, certs: tuple[str | None, str | None], cas: tuple[str | None, str | None]
) -> CredentialInput:
    """The credential options: the keys and removals given, signing certificate files and CA names."""
    return e.credentials(
        given.keys, certs, "signing certificate", given.removed, ca_reference=cas[0], secondary_ca_reference=cas[1]
    )


@app.command("add")
@e.entry_options(update=False, keys_before="signing_cert", allocation_before="edge")
def add(
    group_id: IdArg,
    attestation: GroupAttestationOpt = None,
    signing_cert: SigningCertOpt = None,
    secondary_signing_cert: SecondarySigningCertOpt = None,
    ca_ref: CaRefOpt = None,
    secondary_ca_ref: SecondaryCaRefOpt = None,
    **shared: Any,
) -> None:
    """Create an enrollment group (symmetric keys are generated when not given)."""
    from dpsctl.core.enrollments import new_group

    given = e.SharedInput(shared)
    cred = _credentials(given, (signing_cert, secondary_signing_cert), (ca_ref, secondary_ca_ref))
    opts = given.options()
    if attestation is None:
        attestation = (
            "x509" if (signing_cert or secondary_signing_cert or ca_ref or secondary_ca_ref) else "symmetricKey"
        )
    e.add(new_group(group_id, attestation, cred, opts), given)


app.command("list")(e.list_command(group=True))


@app.command("show")
def show(group_id: IdArg, show_keys: ShowKeysOpt = False, output: OutputOpt = Output.table) -> None:
    """Show one enrollment group (exit 3 if absent)."""
    from dpsctl.core.enrollments import get_group

    with session() as tx:
        doc = get_group(tx, group_id).to_dict(show_keys=show_keys)
    e.render_entry(doc, output)


@app.command("update")
@e.entry_options(update=True, keys_before="signing_cert", allocation_before="edge")
def update(
    group_id: IdArg,
    signing_cert: SigningCertOpt = None,
    secondary_signing_cert: SecondarySigningCertOpt = None,
    ca_ref: CaRefOpt = None,
    secondary_ca_ref: SecondaryCaRefOpt = None,
    **shared: Any,
) -> None:
    """Change an enrollment group; with --etag, refused (exit 4) if it changed meanwhile."""
    given = e.SharedInput(shared)
    cred = _credentials(given, (signing_cert, secondary_signing_cert), (ca_ref, secondary_ca_ref))
    e.update(group_id, True, given.options(), cred, given)


@app.command("delete")
def delete(group_id: IdArg, etag: EtagOpt = None) -> None:
    """Delete an enrollment group (its devices' registration records stay, as in DPS)."""
    e.delete(group_id, True, etag)


@app.command("compute-device-key")
def compute_device_key(
    registration_id: Annotated[str, typer.Option("--registration-id", help="The device's registration ID.")],
    group_id: Annotated[str | None, typer.Argument(help="Enrollment group ID (not needed with --group-key).")] = None,
    group_key: Annotated[
        str | None,
        typer.Option(
            "--group-key", metavar="KEY", help="Derive offline from this Base64 group key, without the store."
        ),
    ] = None,
    secondary: Annotated[bool, typer.Option("--secondary", help="Derive from the group's secondary key.")] = False,
    output: OutputOpt = Output.table,
) -> None:
    """Print the device key derived from the group key: Base64(HMAC-SHA256(group key, registration ID))."""
    if group_key is not None:
        if secondary:
            raise InvalidInput(
                "--secondary chooses a stored group's key; with --group-key, give the secondary key itself"
            )
        from dpsctl.core.ids import validate_registration_id
        from dpsctl.core.keys import derive_device_key

        emit(derive_device_key(group_key, validate_registration_id(registration_id)), output)
        return
    if group_id is None:
        raise InvalidInput(
            "name the enrollment group (GROUP_ID), or give its key with --group-key",
            hint="see `dpsctl enrollment-group list`",
        )
    from dpsctl.core.enrollments import compute_device_key as derive

    with session() as tx:
        key = derive(tx, group_id, registration_id, secondary=secondary)
    emit(key, output)
