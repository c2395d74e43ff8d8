"""The root `dpsctl` command: global options, sub-command registration, and the entry point."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from dpsctl import __version__
from dpsctl.cli.context import DEFAULT_DB, STATE

# Every sub-command, with the module that defines it and its one-line help. Modules are imported only when
# their command runs, so `dpsctl --version`, `--help` and each command pay only for what they use
# (tests/test_startup.py checks the help lines against the commands themselves).
COMMANDS: dict[str, tuple[str, str, str]] = {
    # name: (module, how it is defined: a Typer "app" or a "register" function, short help)
    "init": ("dpsctl.cli.service", "register_init", "Create the store explicitly; refuses to overwrite an existing one."),
    "service": ("dpsctl.cli.service", "app", "Show and change the service settings (ID scope, default allocation policy, location)."),
    "hub": ("dpsctl.cli.hub", "app", "Link, list, change and unlink IoT hubs (NAME or NAME.azure-devices.net)."),
    "enrollment": ("dpsctl.cli.enrollment", "app", "Individual enrollments: one device each, by registration ID."),
    "enrollment-group": ("dpsctl.cli.group", "app", "Enrollment groups: many devices sharing a group key or a signing CA."),
    "registration": ("dpsctl.cli.registration", "app", "Registration records (DeviceRegistrationState): created by provisioning, deletable, never updated."),
    "provision": ("dpsctl.cli.provision", "register", "Simulate a device registering: exit 0 assigned, 5 unauthorized, 6 disabled, 7 allocation failed."),
    "device": ("dpsctl.cli.device", "app", "Devices as the linked IoT hubs see them after provisioning (identity, auth, twin)."),
    "tpm": ("dpsctl.cli.tpm", "app", "Software TPMs: an RSA-2048 endorsement key pair and storage root key, kept in a 0600 file."),
    "cert": ("dpsctl.cli.cert", "app", "Test certificates for DPS (EC P-256 by default) and `cert check`, which tells what DPS would say about one."),
    "ca": ("dpsctl.cli.ca", "app", "CA certificates for enrollment groups (--ca-ref): upload, prove possession, list, delete. At most 25."),
    "keys": ("dpsctl.cli.keys", "app", "Symmetric keys: generate, derive group device keys, build SAS tokens, and find out why a key is refused."),
    "import": ("dpsctl.cli.transfer", "register", "Create or update everything in FILE, all or nothing; running it twice changes nothing."),
    "export": ("dpsctl.cli.transfer", "register", "Print the service settings, linked hubs, enrollments and groups as one importable document."),
    "stats": ("dpsctl.cli.stats", "register", "Counts of hubs, enrollments, groups, registrations by status, operations, and devices per hub."),
    "store": ("dpsctl.cli.store", "app", "The store itself: backend, size, record counts; migration between TinyDB, SQLite and PostgreSQL."),
    "demo": ("dpsctl.cli.demo", "register", "Provision a symmetric-key, an X.509 and a TPM device against the current store (rerunnable)."),
    "serve": ("dpsctl.cli.serve", "register", "Serve DPS for the official Azure IoT SDK clients: HTTPS, MQTT over TLS, and MQTT over WebSockets."),
}


def load_command(name: str) -> Any:
    """Import the module of one sub-command and build its Click command."""
    import importlib

    module_name, kind, _ = COMMANDS[name]
    module = importlib.import_module(module_name)
    if kind == "app":
        command = typer.main.get_command(module.app)
        command.name = name
    else:
        holder = typer.Typer()
        getattr(module, kind)(holder)
        command = typer.main.get_group(holder).commands[name]
    _plain_help(command)
    return command


def _plain_help(command: Any) -> None:
    """Plain-text help everywhere, like the root: no Rich panels (and no Rich import) for `--help`."""
    command.rich_markup_mode = None
    for sub in getattr(command, "commands", {}).values():
        _plain_help(sub)


class LazyGroup(TyperGroup):
    """The root group: lists sub-commands from COMMANDS and imports one only when it is used."""

    def list_commands(self, ctx: Any) -> list[str]:
        """Sub-command names, in the order of COMMANDS."""
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        """The sub-command, imported on first use."""
        return load_command(cmd_name) if cmd_name in COMMANDS else None

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """`dpsctl --help` lists commands from the table, importing none of them."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_text) for name, (_, _, help_text) in COMMANDS.items()])


app = typer.Typer(
    name="dpsctl",
    cls=LazyGroup,
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
        typer.Option("--db", envvar="DPSCTL_DB", help="Store: a TinyDB JSON file, SQLite for *.sqlite, *.sqlite3, *.db (created 0600 on first use), or a postgresql:// URL (pip install 'dpsctl[postgres]').", show_default=True),
    ] = DEFAULT_DB,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Global options come before the sub-command: dpsctl --db ci.json enrollment list."""
    STATE.db = db
    STATE.stdin_taken_by = None


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app behind the single error boundary."""
    from dpsctl.cli.errors import run_guarded

    command = typer.main.get_command(app)
    sys.exit(run_guarded(command, argv if argv is not None else sys.argv[1:], "dpsctl"))
