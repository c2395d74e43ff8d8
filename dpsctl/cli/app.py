"""The root `dpsctl` command: global options, sub-command registration, and the entry point."""

from __future__ import annotations

import importlib
import os
import sys
from difflib import get_close_matches
from typing import Annotated, Any

import typer
from typer._click.shell_completion import CompletionItem
from typer.core import TyperGroup

from dpsctl import __version__
from dpsctl.cli import completion
from dpsctl.cli.completion import SHELLS
from dpsctl.cli.context import DEFAULT_DB, STATE
from dpsctl.cli.render import SELECTION, Output

# Imported inside functions: az_compat (the az spellings) only once a sub-command is loaded, never for --help
# or --version; completion's completers only when a shell asks (start-up: tests/test_startup.py).

# Every sub-command, with the module that defines it and its one-line help. Modules are imported only when
# their command runs, so `dpsctl --version`, `--help` and each command pay only for what they use
# (tests/test_startup.py checks the help lines against the commands themselves).
COMMANDS: dict[str, tuple[str, str, str]] = {
    # name: (module, how it is defined: a Typer "app" or a "register" function, short help)
    "init": (
        "dpsctl.cli.service",
        "register_init",
        "Create the store explicitly; refuses to overwrite an existing one.",
    ),
    "service": (
        "dpsctl.cli.service",
        "app",
        "Show and change the service settings (ID scope, default allocation policy, location).",
    ),
    "hub": ("dpsctl.cli.hub", "app", "Link, list, change and unlink IoT hubs (NAME or NAME.azure-devices.net)."),
    "enrollment": ("dpsctl.cli.enrollment", "app", "Individual enrollments: one device each, by registration ID."),
    "enrollment-group": (
        "dpsctl.cli.group",
        "app",
        "Enrollment groups: many devices sharing a group key or a signing CA.",
    ),
    "registration": (
        "dpsctl.cli.registration",
        "app",
        "Registration records (DeviceRegistrationState): created by provisioning, deletable, never updated.",
    ),
    "provision": (
        "dpsctl.cli.provision",
        "register",
        "Simulate a device registering: exit 0 assigned, 5 unauthorized, 6 disabled, 7 allocation failed.",
    ),
    "device": (
        "dpsctl.cli.device",
        "app",
        "Devices as the linked IoT hubs see them after provisioning (identity, auth, twin).",
    ),
    "tpm": (
        "dpsctl.cli.tpm",
        "app",
        "Software TPMs: an RSA-2048 endorsement key pair and storage root key, kept in a 0600 file.",
    ),
    "cert": (
        "dpsctl.cli.cert",
        "app",
        "Test certificates for DPS (EC P-256 by default) and `cert check`, which tells what DPS would say about one.",
    ),
    "ca": (
        "dpsctl.cli.ca",
        "app",
        "CA certificates for enrollment groups (--ca-ref): upload, prove possession, list, delete. At most 25.",
    ),
    "keys": (
        "dpsctl.cli.keys",
        "app",
        "Symmetric keys: generate, derive group device keys, build SAS tokens, and find out why a key is refused.",
    ),
    "import": (
        "dpsctl.cli.transfer",
        "register",
        "Create or update everything in FILE, all or nothing; running it twice changes nothing.",
    ),
    "export": (
        "dpsctl.cli.transfer",
        "register",
        "Print the service settings, linked hubs, enrollments and groups as one importable document.",
    ),
    "stats": (
        "dpsctl.cli.stats",
        "register",
        "Counts of hubs, enrollments, groups, registrations by status, operations, and devices per hub.",
    ),
    "store": (
        "dpsctl.cli.store",
        "app",
        "The store itself: backend, size, record counts; migration between TinyDB, SQLite and PostgreSQL.",
    ),
    "demo": (
        "dpsctl.cli.demo",
        "register",
        "Provision a symmetric-key, an X.509 and a TPM device against the current store (rerunnable).",
    ),
    "serve": (
        "dpsctl.cli.serve",
        "register",
        "Serve DPS for the official Azure IoT SDK clients: HTTPS, MQTT over TLS, and MQTT over WebSockets.",
    ),
}

# az's nouns that dpsctl names otherwise (`az iot dps linked-hub` is `dpsctl hub`): accepted, hidden from the help.
# Their modules speak az's vocabulary over the same core; "alias" is a hidden copy of another dpsctl command.
AZ_COMMANDS: dict[str, tuple[str, str]] = {
    "linked-hub": ("dpsctl.cli.linked_hub", "app"),
    "certificate": ("dpsctl.cli.certificate", "app"),
    "connection-string": ("dpsctl.cli.connection_string", "app"),
    "compute-device-key": ("dpsctl.cli.az_compat", "alias"),
}


def load_command(name: str) -> Any:
    """Import the module of one sub-command and build its Click command, with dpsctl's conventions and az's spellings applied."""
    from dpsctl.cli.az_compat import accept_bare, alias_command, install
    from dpsctl.cli.conventions import apply

    if name in AZ_COMMANDS:
        module_name, kind = AZ_COMMANDS[name]
        if kind == "alias":
            return alias_command(name)
        module = importlib.import_module(module_name)
        command = typer.main.get_command(module.app)
        command.name, command.hidden = name, True
        apply(command, name)
        accept_bare(command, getattr(module, "THREE_STATE", ()))
        return command
    module_name, kind, _ = COMMANDS[name]
    module = importlib.import_module(module_name)
    if kind == "app":
        command = typer.main.get_command(module.app)
        command.name = name
    else:
        holder = typer.Typer()
        getattr(module, kind)(holder)
        command = typer.main.get_group(holder).commands[name]
    apply(command, name)
    install(command, name)
    accept_bare(command, getattr(module, "THREE_STATE", ()))
    return command


class LazyGroup(TyperGroup):
    """The root group: lists sub-commands from COMMANDS and imports one only when it is used."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        from dpsctl.cli.conventions import placeholders

        placeholders(self.params)

    def list_commands(self, ctx: Any) -> list[str]:
        """Sub-command names, in the order of COMMANDS."""
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        """The sub-command, imported on first use."""
        return load_command(cmd_name) if cmd_name in COMMANDS or cmd_name in AZ_COMMANDS else None

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """`dpsctl --help` lists commands from the table, importing none of them."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_text) for name, (_, _, help_text) in COMMANDS.items()])

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        """The sub-command named first in `args`; a typo gets the closest names (the table, not imports)."""
        try:
            return super().resolve_command(ctx, args)
        except typer._click.exceptions.UsageError as exc:
            matches = get_close_matches(args[0], list(COMMANDS)) if args else []
            if matches and "Did you mean" not in exc.message:
                suggestion = ". Did you mean " + ", ".join(repr(m) for m in matches) + "?"
                raise typer._click.exceptions.UsageError(exc.message.rstrip(".") + suggestion, ctx=exc.ctx) from None
            raise

    def shell_complete(self, ctx: Any, incomplete: str) -> list[Any]:
        """Complete sub-command names from the table (importing none), then the root's options."""
        found = [
            CompletionItem(name, help=text) for name, (_, _, text) in COMMANDS.items() if name.startswith(incomplete)
        ]
        if not incomplete or incomplete.startswith("-"):
            found += typer.core._click.Command.shell_complete(self, ctx, incomplete)
        return found


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


def _show_completion(value: bool) -> None:
    if value:
        completion.show(_ASKED_SHELL.get("shell"))
        raise typer.Exit()


def _install_completion(value: bool) -> None:
    if value:
        completion.install(_ASKED_SHELL.get("shell"))
        raise typer.Exit()


# `--show-completion zsh`: the shell named after the flag (taken out of argv by main before parsing).
_ASKED_SHELL: dict[str, str] = {}


@app.callback()
def root(
    db: Annotated[
        str,
        typer.Option(
            "--db",
            envvar="DPSCTL_DB",
            help="Store: a TinyDB JSON file, SQLite for *.sqlite, *.sqlite3, *.db, or a postgresql:// URL (pip install 'dpsctl[postgres]'). Created 0600 by the first command that writes.",
            show_default=True,
        ),
    ] = DEFAULT_DB,
    output: Annotated[
        Output | None,
        typer.Option(
            "--output",
            "-o",
            help="Output format for any command: table, json, yaml, tsv or none (default: the command's; env DPSCTL_OUTPUT).",
            case_sensitive=False,
            show_default=False,
        ),
    ] = None,
    query: Annotated[
        str | None,
        typer.Option(
            "--query",
            help="JMESPath query applied to the data before any format, as in az: --query \"[?status=='assigned'].deviceId\".",
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    install_completion: Annotated[
        bool,
        typer.Option(
            "--install-completion",
            callback=_install_completion,
            is_eager=True,
            help="Install completion for your shell (bash, zsh or fish; name it after the flag to choose).",
        ),
    ] = False,
    show_completion: Annotated[
        bool,
        typer.Option(
            "--show-completion",
            callback=_show_completion,
            is_eager=True,
            help="Print the completion script for your shell (bash, zsh or fish; name it after the flag to choose).",
        ),
    ] = False,
) -> None:
    """Global options (--db, -o/--output, --query) go before or after the sub-command: dpsctl enrollment list --db ci.json -o tsv."""
    STATE.db = db
    STATE.stdin_taken_by = None
    STATE.output = output
    SELECTION.query = query
    SELECTION.whole_values = False
    SELECTION.top = None


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app behind the single error boundary."""
    from dpsctl.cli.errors import run_guarded

    args = list(argv if argv is not None else sys.argv[1:])
    _ASKED_SHELL.clear()
    for flag in ("--show-completion", "--install-completion"):
        if flag in args:
            at = args.index(flag)
            if at + 1 < len(args) and args[at + 1] in SHELLS:
                _ASKED_SHELL["shell"] = args.pop(at + 1)
    if "_DPSCTL_COMPLETE" in os.environ:
        from typer._completion_classes import completion_init

        completion_init()  # registers the bash, zsh and fish completers: only when a shell asks for completions
    command = typer.main.get_command(app)
    sys.exit(run_guarded(command, args, "dpsctl"))
