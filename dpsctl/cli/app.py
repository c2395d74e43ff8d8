"""The root `dpsctl` command: global options, sub-command registration, and the entry point."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from dpsctl import __version__
from dpsctl.cli.context import DEFAULT_DB, STATE

app = typer.Typer(
    name="dpsctl",
    help="A local Azure IoT Hub Device Provisioning Service (DPS): administer it, and provision simulated devices against it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"dpsctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    db: Annotated[
        str,
        typer.Option("--db", envvar="DPSCTL_DB", help="Store file (TinyDB JSON). Created 0600 on first use.", show_default=True),
    ] = DEFAULT_DB,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Global options come before the sub-command: dpsctl --db ci.json enrollment list."""
    STATE.db = db


def _register() -> None:
    from dpsctl.cli import demo, device, enrollment, group, hub, provision, registration, service, stats, store, tpm, transfer

    app.add_typer(service.app, name="service")
    app.add_typer(hub.app, name="hub")
    app.add_typer(enrollment.app, name="enrollment")
    app.add_typer(group.app, name="enrollment-group")
    app.add_typer(registration.app, name="registration")
    app.add_typer(device.app, name="device")
    app.add_typer(tpm.app, name="tpm")
    from dpsctl.cli import ca, cert, keys

    app.add_typer(cert.app, name="cert")
    app.add_typer(ca.app, name="ca")
    app.add_typer(keys.app, name="keys")
    app.add_typer(store.app, name="store")
    provision.register(app)
    stats.register(app)
    transfer.register(app)
    demo.register(app)
    service.register_init(app)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app behind the single error boundary."""
    from dpsctl.cli.errors import run_guarded

    command = typer.main.get_command(app)
    sys.exit(run_guarded(command, argv if argv is not None else sys.argv[1:], "dpsctl"))
