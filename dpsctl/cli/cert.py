"""`dpsctl cert ...`: a test PKI (root, intermediate, device and verification certificates) and a certificate doctor."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dpsctl.cli.context import OutputOpt, SharedOptions, now, read_file, session, shared_options
from dpsctl.cli.render import Output, emit, info
from dpsctl.cli.safetext import safe_lines
from dpsctl.core.errors import InvalidInput

# The core and the store are imported inside the commands that use them: loading this module, for its --help or
# for another of its commands, stays cheap (tests/test_startup.py); each command loads what it needs.

app = typer.Typer(
    add_completion=False,
    help="Test certificates for DPS (EC P-256 by default) and `cert check`, which tells what DPS would say about one.",
    no_args_is_help=True,
)

OutOpt = Annotated[
    Path, typer.Option("--out", metavar="DIR", help="Directory for the files (default: the current directory).")
]
KeyTypeOpt = Annotated[str, typer.Option("--key-type", help="ec (NIST P-256) or rsa.")]
RsaBitsOpt = Annotated[int, typer.Option("--rsa-bits", help="RSA key size with --key-type rsa (2048 to 8192).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing files.")]
CnOpt = Annotated[str | None, typer.Option("--cn", help="Subject common name (default: NAME).")]
CaOpt = Annotated[
    str,
    typer.Option(
        "--ca", metavar="FILE", help="The issuing CA's certificate (the file may also hold the chain above it)."
    ),
]
CaKeyOpt = Annotated[str, typer.Option("--ca-key", metavar="FILE", help="The issuing CA's private key.")]

TEST_CREDENTIALS = "these are test credentials: the private key is unencrypted; do not use it in production"


def _issuer(ca: str, ca_key: str) -> Any:
    from dpsctl.core.certs.files import load_issuer

    return load_issuer(read_file(ca, "CA certificate"), ca, read_file(ca_key, "CA private key"), ca_key)


def _key_type(key_type: str) -> str:
    value = key_type.lower()
    if value not in ("ec", "rsa"):
        raise InvalidInput(f"--key-type is {key_type!r}; expected ec or rsa")
    return value


def _report(created: Any, output: Output, *, next_step: str | None) -> None:
    """Print what was made (data to stdout) and the warnings and next step (stderr)."""
    emit(created.summary(), output)
    for warning in created.warnings:
        info(f"warning: {warning}")
    if "key" in created.files:
        info(f"warning: {created.files['key']}: {TEST_CREDENTIALS}")
    if next_step:
        info(f"next: {next_step}")


def _ca_options(days: int, days_help: str, path_length: int, path_length_help: str) -> SharedOptions:
    """The options create-root and create-intermediate share, after their own (defaults of days and path length)."""
    return {
        "cn": (CnOpt, None),
        "out": (OutOpt, Path(".")),
        "key_type": (KeyTypeOpt, "ec"),
        "rsa_bits": (RsaBitsOpt, 2048),
        "days": (Annotated[int, typer.Option("--days", help=days_help)], days),
        "path_length": (Annotated[int, typer.Option("--path-length", help=path_length_help)], path_length),
        "force": (ForceOpt, False),
    }


def _ca_settings(cn: str | None, out: Path, key_type: str, **rest: Any) -> tuple[Path, dict[str, Any]]:
    """The `_ca_options` as the core takes them: the directory, then the keywords (the key type checked)."""
    return out, {"common_name": cn, "key_type": _key_type(key_type), **rest}


@app.command("create-root")
@shared_options(
    _ca_options(
        3650,
        "Validity in days (default 3650, ten years).",
        2,
        "How many intermediate CAs may sit below it (default 2).",
    ),
    before="output",
)
def create_root(
    name: Annotated[
        str, typer.Argument(help="Base name of the files NAME.cert.pem and NAME.key.pem (and the CN unless --cn).")
    ],
    output: OutputOpt = Output.table,
    **shared: Any,
) -> None:
    """Create a self-signed root CA: basicConstraints CA with a path length, keyCertSign and cRLSign, key identifiers."""
    from dpsctl.core.certs.files import create_root as make

    out, settings = _ca_settings(**shared)
    created = make(name, out, **settings)
    _report(
        created,
        output,
        next_step=f"dpsctl ca add {name} --cert {created.files['certificate']}, or use it as --ca for create-intermediate/create-device",
    )


@app.command("create-intermediate")
@shared_options(
    _ca_options(
        1825,
        "Validity in days (default 1825, five years).",
        0,
        "How many CAs may sit below it (default 0: it signs devices only).",
    ),
    before="output",
)
def create_intermediate(
    name: Annotated[
        str,
        typer.Argument(
            help="Base name of the files NAME.cert.pem, NAME.key.pem, NAME.fullchain.pem (and the CN unless --cn)."
        ),
    ],
    ca: CaOpt,
    ca_key: CaKeyOpt,
    output: OutputOpt = Output.table,
    **shared: Any,
) -> None:
    """Create an intermediate CA signed by --ca; NAME.fullchain.pem holds it and the intermediates above it."""
    from dpsctl.core.certs.files import create_intermediate as make

    issuer = _issuer(ca, ca_key)
    out, settings = _ca_settings(**shared)
    created = make(name, issuer, out, **settings, now=now())
    _report(
        created,
        output,
        next_step=f"sign devices with --ca {created.files['fullchain']} --ca-key {created.files['key']}",
    )


@app.command("create-device")
def create_device(
    registration_id: Annotated[
        str,
        typer.Argument(
            help="The device's registration ID: the certificate's CN and the files' base name (at most 64 characters)."
        ),
    ],
    ca: Annotated[
        str | None,
        typer.Option(
            "--ca",
            metavar="FILE",
            help="The issuing CA's certificate (may hold its chain); omit with --ca-key for a self-signed certificate.",
        ),
    ] = None,
    ca_key: Annotated[
        str | None, typer.Option("--ca-key", metavar="FILE", help="The issuing CA's private key.")
    ] = None,
    out: OutOpt = Path("."),
    key_type: KeyTypeOpt = "ec",
    rsa_bits: RsaBitsOpt = 2048,
    days: Annotated[int, typer.Option("--days", help="Validity in days (default 365).")] = 365,
    force: ForceOpt = False,
    output: OutputOpt = Output.table,
) -> None:
    """Create a device certificate (CN = registration ID, digitalSignature, clientAuth) and NAME.fullchain.pem (leaf, then intermediates)."""
    from dpsctl.core.certs.files import create_device as make

    if (ca is None) != (ca_key is None):
        raise InvalidInput(
            "--ca and --ca-key go together",
            hint="give both to sign with a CA, or neither for a self-signed certificate",
        )
    issuer = _issuer(ca, ca_key) if ca is not None and ca_key is not None else None
    created = make(
        registration_id, issuer, out, key_type=_key_type(key_type), rsa_bits=rsa_bits, days=days, force=force, now=now()
    )
    if issuer is None:
        next_step = f"self-signed: enroll it individually: dpsctl enrollment add {registration_id} --attestation x509 --cert {created.files['certificate']}"
    else:
        next_step = f"dpsctl provision --cert {created.files['fullchain']} --key {created.files['key']}"
    _report(created, output, next_step=next_step)


@app.command("create-verification")
def create_verification(
    code: Annotated[str, typer.Argument(help="The verification code from `dpsctl ca verification-code NAME`.")],
    ca: CaOpt,
    ca_key: CaKeyOpt,
    name: Annotated[str, typer.Option("--name", help="Base name of the file NAME.cert.pem.")] = "verification",
    out: OutOpt = Path("."),
    days: Annotated[int, typer.Option("--days", help="Validity in days (it is used once, by `ca verify`).")] = 30,
    force: ForceOpt = False,
    output: OutputOpt = Output.table,
) -> None:
    """Create the proof-of-possession certificate: CN = the code, signed by the CA's private key (writes no key)."""
    from dpsctl.core.certs.files import create_verification as make

    created = make(code, _issuer(ca, ca_key), out, name=name, days=days, force=force)
    _report(created, output, next_step=f"dpsctl ca verify CA-NAME --cert {created.files['certificate']}")


@app.command("check")
def check(
    cert: Annotated[str, typer.Argument(help="The device certificate (may hold its chain, leaf first).")],
    chain: Annotated[
        str | None,
        typer.Option("--chain", metavar="FILE", help="Intermediate certificates the device sends, if not in CERT."),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key", metavar="FILE", help="The device's private key, to check that it belongs to the certificate."
        ),
    ] = None,
    registration_id: Annotated[
        str | None,
        typer.Option("--registration-id", help="The registration ID the device will send (default: the CN)."),
    ] = None,
    output: OutputOpt = Output.table,
) -> None:
    """Tell what DPS would say about a device certificate: exit 0 accepted, 5 refused, 6 disabled."""
    from dpsctl.core.certs import load_certificates, load_private_key
    from dpsctl.core.certs.report import check_certificate
    from dpsctl.core.checks import format_checks

    certs = load_certificates(read_file(cert, "certificate"), source=cert)
    if chain:
        certs += load_certificates(read_file(chain, "chain"), source=chain)
    private = load_private_key(read_file(key, "private key"), source=key) if key else None
    with session() as tx:
        report = check_certificate(tx, certs, now(), key=private, registration_id=registration_id)
    doc = report.to_dict()

    def table() -> str:
        facts = report.certificate
        # Subjects and issuers are the certificate's own text: escape sequences in them are shown escaped.
        lines = [
            f"certificate: {facts['subject']} (issuer {facts['issuer']})",
            f"thumbprint:  {facts['thumbprint']}, valid until {facts['notAfterUtc']}",
        ]
        lines.append(format_checks(report.checks))
        if report.explain:
            lines += ["enrollment:", format_checks(report.explain)]
        return safe_lines("\n".join(lines + [doc["verdict"]])) + "\n"

    emit(doc, output, table=table)
    if report.error is not None:
        raise report.error
