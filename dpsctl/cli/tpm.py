"""`dpsctl tpm ...`: software TPMs for simulated TPM devices."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from dpsctl.cli.context import OutputOpt
from dpsctl.cli.render import Output, emit, info

# The core and the store are imported inside the commands that use them: loading this module, for its --help or
# for another of its commands, stays cheap (tests/test_startup.py); each command loads what it needs.

app = typer.Typer(
    add_completion=False,
    help="Software TPMs: an RSA-2048 endorsement key pair and storage root key, kept in a 0600 file.",
    no_args_is_help=True,
)

FileArg = Annotated[Path, typer.Argument(help="The software TPM file.")]


def _show(tpm, output: Output) -> None:
    doc = {
        "registrationId": tpm.registration_id,
        "endorsementKey": tpm.endorsement_key,
        "storageRootKey": tpm.storage_root_key,
    }
    emit(doc, output)


@app.command("create")
def create(
    file: FileArg,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    output: OutputOpt = Output.table,
) -> None:
    """Make a software TPM and print the endorsement key to enroll."""
    from dpsctl.core.tpm import create_tpm, save_tpm

    tpm = create_tpm()
    save_tpm(tpm, file, force=force)
    _show(tpm, output)
    info(f"warning: {file} holds private keys of a software TPM for testing; never use it for a real device")
    info(
        f"enroll it: dpsctl enrollment add {tpm.registration_id} --attestation tpm --endorsement-key {shlex.quote('@' + str(file))}"
    )


@app.command("show")
def show(file: FileArg, output: OutputOpt = Output.table) -> None:
    """Print a software TPM's registration ID and public keys again."""
    from dpsctl.core.tpm import load_tpm

    _show(load_tpm(file), output)
