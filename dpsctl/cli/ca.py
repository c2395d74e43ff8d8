"""`dpsctl ca ...`: CA certificates of the service, verified by proof of possession as in DPS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from dpsctl.cli.context import EtagOpt, OutputOpt, now, read_file, session
from dpsctl.cli.render import Output, emit, info

# The core and the store are imported inside the commands that use them: loading this module, for its --help or
# for another of its commands, stays cheap (tests/test_startup.py); each command loads what it needs.

app = typer.Typer(
    add_completion=False,
    help="CA certificates for enrollment groups (--ca-ref): upload, prove possession, list, delete. At most 25.",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="Certificate name: letters, digits, '-', '.', '_' (case-insensitive).")]
COLUMNS = ("NAME", "SUBJECT", "VERIFIED", "EXPIRY", "THUMBPRINT")


def row(doc: dict[str, Any]) -> tuple:
    """The table row of one CA certificate (its ARM view)."""
    props = doc["properties"]
    return (doc["name"], props["subject"], props["isVerified"], props["expiry"], props["thumbprint"])


def _show(doc: dict[str, Any], output: Output, table: Callable[[], str] | None = None) -> None:
    """One certificate: FIELD/VALUE without the PEM body in a table; the whole ARM object otherwise."""
    from dpsctl.core.cas import public_ca

    emit(public_ca(doc, with_certificate=output != Output.table), output, table=table)


@app.command("add")
def add(
    name: NameArg,
    cert: Annotated[
        str, typer.Option("--cert", metavar="FILE", help="The CA certificate (PEM, DER or Base64), one certificate.")
    ],
    verified: Annotated[
        bool, typer.Option("--verified", help="Mark it verified now, skipping proof of possession.")
    ] = False,
    output: OutputOpt = Output.table,
) -> None:
    """Upload a CA certificate; it stays unverified until `ca verify` (or --verified)."""
    from dpsctl.core.cas import add_ca

    data = read_file(cert, "certificate")
    with session(write=True) as tx:
        doc = add_ca(tx, name, data, cert, verified=verified, now=now())
    _show(doc, output)
    if not verified:
        info(
            f"unverified: groups that reference it refuse devices until you prove possession: dpsctl ca verification-code {doc['name']}"
        )


@app.command("list")
def list_(output: OutputOpt = Output.table) -> None:
    """List the CA certificates."""
    from dpsctl.core.cas import list_cas, public_ca

    with session() as tx:
        docs = [public_ca(d, with_certificate=output != Output.table) for d in list_cas(tx)]
    emit(docs, output, columns=COLUMNS, rows=lambda: [row(d) for d in docs], drop=("EXPIRY", "SUBJECT"))


@app.command("show")
def show(name: NameArg, output: OutputOpt = Output.table) -> None:
    """Show one CA certificate: subject, expiry, SHA-1 thumbprint, isVerified, created, updated (exit 3 if absent)."""
    from dpsctl.core.cas import get_ca

    with session() as tx:
        doc = get_ca(tx, name)
    _show(doc, output)


@app.command("verification-code")
def verification_code(name: NameArg, etag: EtagOpt = None, output: OutputOpt = Output.table) -> None:
    """Make a fresh verification code (replacing any earlier one): sign a certificate with it as CN, then `ca verify`."""
    from dpsctl.core.cas import generate_verification_code

    with session(write=True) as tx:
        doc = generate_verification_code(tx, name, now=now(), etag=etag)
    code = doc["verificationCode"]
    _show(doc, output, table=lambda: code + "\n")
    info(
        f"next: dpsctl cert create-verification {code} --ca CA.cert.pem --ca-key CA.key.pem, then dpsctl ca verify {doc['name']} --cert verification.cert.pem"
    )


@app.command("verify")
def verify(
    name: NameArg,
    cert: Annotated[
        str,
        typer.Option(
            "--cert",
            metavar="FILE",
            help="The verification certificate: CN = the current code, signed by the CA's key.",
        ),
    ],
    etag: EtagOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Prove possession of the CA's private key; on success the certificate is verified."""
    from dpsctl.core.cas import verify_ca

    data = read_file(cert, "verification certificate")
    with session(write=True) as tx:
        doc = verify_ca(tx, name, data, cert, now=now(), etag=etag)
    _show(doc, output)
    info(f"verified: {doc['name']}")


@app.command("delete")
def delete(
    name: NameArg,
    force: Annotated[
        bool,
        typer.Option("--force", help="Delete even while enrollment groups reference it (they then match no device)."),
    ] = False,
    etag: EtagOpt = None,
) -> None:
    """Delete a CA certificate; refused (exit 4) while an enrollment group references it, unless --force."""
    from dpsctl.core.cas import delete_ca

    with session(write=True) as tx:
        doc, users = delete_ca(tx, name, force=force, etag=etag)
    info(f"deleted CA certificate {doc['name']}")
    if users:
        info(
            f"warning: enrollment group(s) {', '.join(users)} still reference {doc['name']!r} and match no device until it is added again"
        )
