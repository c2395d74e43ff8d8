"""`dpsctl certificate ...`: az's `iot dps certificate`, in az's words, over the same core as `dpsctl ca`.

The JSON is ARM's `CertificateResponse` (`id`, `name`, `etag`, `type`, `properties.subject`, `.thumbprint`,
`.isVerified`, `.expiry`, `.created`, `.updated`, `.certificate`; `.verificationCode` once generated); `list`
is ARM's `{"value": [...]}`; `delete` prints nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dpsctl.cli.az_compat import TriState, tri_state
from dpsctl.cli.ca import COLUMNS, row
from dpsctl.cli.context import OutputOpt, ResourceGroupOpt, now, read_file, session, shared_options
from dpsctl.cli.render import Output, emit

if TYPE_CHECKING:  # for annotations only: the commands that open the store load it
    from dpsctl.store import Transaction

# The core and the store are imported inside the commands that use them: loading this module, for its --help or
# for another of its commands, stays cheap (tests/test_startup.py); each command loads what it needs.

app = typer.Typer(
    add_completion=False,
    help="az's `iot dps certificate`: CA certificates and proof of possession (dpsctl's own command is `ca`).",
    no_args_is_help=True,
)

THREE_STATE = ("--verified", "-v")

NameOpt = Annotated[str, typer.Option("--certificate-name", "--name", "-n", help="The certificate's name.")]
PathOpt = Annotated[str, typer.Option("--path", "-p", metavar="FILE", help="The certificate file (.pem or .cer).")]
EtagOpt = Annotated[
    str | None,
    typer.Option("--etag", "-e", help="Refuse unless the certificate still has this etag ('*' matches any)."),
]
VerifiedOpt = Annotated[
    TriState | None,
    typer.Option(
        "--verified", "-v", help="true: mark it verified now, skipping proof of possession.", case_sensitive=False
    ),
]
# az's resource options, accepted and ignored (one store is one DPS; the commands take them as `**_`); here -n is
# the certificate's name.
DpsNameOpt = Annotated[str | None, typer.Option("--dps-name", help="The DPS name: accepted, one store is one DPS.")]
az_resource = shared_options(
    {"dps_name": (DpsNameOpt, None), "resource_group": (ResourceGroupOpt, None)}, before="output"
)


def _emit(tx: Transaction, doc: dict[str, Any], output: Output) -> None:
    from dpsctl.core.cas import arm_certificate
    from dpsctl.core.service import load_service

    view = arm_certificate(doc, load_service(tx, now()).name)
    emit(view, output, columns=COLUMNS, rows=lambda: [row(view)], drop=("EXPIRY", "SUBJECT"))


def _write(change: Callable[[Transaction], dict[str, Any]], output: Output) -> None:
    """Change a certificate in one write session and print it as it is then."""
    with session(write=True) as tx:
        _emit(tx, change(tx), output)


@app.command("create")
@az_resource
def create(
    name: NameOpt, path: PathOpt, verified: VerifiedOpt = None, output: OutputOpt = Output.table, **_: object
) -> None:
    """Upload a CA certificate; unverified until `verify` (or --verified)."""
    from dpsctl.core.cas import add_ca

    data = read_file(path, "certificate")
    _write(lambda tx: add_ca(tx, name, data, path, verified=bool(tri_state(verified)), now=now()), output)


@app.command("list")
@az_resource
def list_(output: OutputOpt = Output.table, **_: object) -> None:
    """List the CA certificates (ARM's {"value": [...]})."""
    from dpsctl.core.cas import arm_certificate, list_cas
    from dpsctl.core.service import load_service

    with session() as tx:
        service = load_service(tx, now()).name
        docs = [arm_certificate(d, service) for d in list_cas(tx)]
    emit({"value": docs}, output, columns=COLUMNS, rows=lambda: [row(d) for d in docs], drop=("EXPIRY", "SUBJECT"))


@app.command("show")
@az_resource
def show(name: NameOpt, output: OutputOpt = Output.table, **_: object) -> None:
    """Show one CA certificate (exit 3 if absent)."""
    from dpsctl.core.cas import get_ca

    with session() as tx:
        _emit(tx, get_ca(tx, name), output)


@app.command("update")
@az_resource
def update(
    name: NameOpt,
    path: PathOpt,
    etag: EtagOpt = None,
    verified: VerifiedOpt = None,
    output: OutputOpt = Output.table,
    **_: object,
) -> None:
    """Replace the certificate under this name (unverified again unless --verified)."""
    from dpsctl.core.cas import replace_ca

    data = read_file(path, "certificate")
    _write(lambda tx: replace_ca(tx, name, data, path, verified=tri_state(verified), now=now(), etag=etag), output)


@app.command("delete")
@az_resource
def delete(name: NameOpt, etag: EtagOpt = None, **_: object) -> None:
    """Delete a CA certificate; refused (exit 4) while an enrollment group references it. Prints nothing."""
    from dpsctl.core.cas import delete_ca

    with session(write=True) as tx:
        delete_ca(tx, name, etag=etag)


@app.command("generate-verification-code")
@az_resource
def generate_verification_code(
    name: NameOpt, etag: EtagOpt = None, output: OutputOpt = Output.table, **_: object
) -> None:
    """A fresh verification code in properties.verificationCode: sign a certificate with it as CN, then `verify`."""
    from dpsctl.core.cas import generate_verification_code as generate

    _write(lambda tx: generate(tx, name, now=now(), etag=etag), output)


@app.command("verify")
@az_resource
def verify(name: NameOpt, path: PathOpt, etag: EtagOpt = None, output: OutputOpt = Output.table, **_: object) -> None:
    """Prove possession of the CA's private key with a certificate whose CN is the verification code."""
    from dpsctl.core.cas import verify_ca

    data = read_file(path, "verification certificate")
    _write(lambda tx: verify_ca(tx, name, data, path, now=now(), etag=etag), output)
