"""`dpsctl connection-string show`: az's `iot dps connection-string show`, the service connection string.

The string is the one `dpsctl service connection-string` prints (owner policy, HostName=localhost:8443, as
`dpsctl serve` and `--login` accept it). az's shapes: `{"connectionString": ...}` for a named DPS, and a list of
`{"name", "connectionString"}` (one per DPS: here one) without `--dps-name`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from dpsctl.cli.context import OutputOpt, ResourceGroupOpt, now, session
from dpsctl.cli.render import Output, emit
from dpsctl.core.errors import InvalidInput, NotFound

# The core and the store are imported inside the commands that use them: loading this module, for its --help or
# for another of its commands, stays cheap (tests/test_startup.py); each command loads what it needs.

app = typer.Typer(
    add_completion=False,
    help="az's `iot dps connection-string`: the service connection string (dpsctl's own is `service connection-string`).",
    no_args_is_help=True,
)


@app.callback()
def group() -> None:
    """A group of one command, as in az (so that `connection-string show` is spelled as there)."""


@app.command("show")
def show(
    dps_name: Annotated[
        str | None,
        typer.Option(
            "--dps-name", "-n", help="The DPS name (any: one store is one DPS); without it, az lists every DPS."
        ),
    ] = None,
    resource_group: ResourceGroupOpt = None,
    policy_name: Annotated[
        str, typer.Option("--policy-name", "--pn", help="Shared access policy: the store has provisioningserviceowner.")
    ] = "provisioningserviceowner",
    key_type: Annotated[
        str, typer.Option("--key-type", "--kt", help="primary (the store keeps one key per policy).")
    ] = "primary",
    all_: Annotated[bool, typer.Option("--all", help="Every policy's connection string, as a list.")] = False,
    output: OutputOpt = Output.table,
) -> None:
    """Print the service connection string (owner policy, primary key)."""
    from dpsctl.cli.service import owner_connection_string
    from dpsctl.core.service import SERVICE_POLICY

    if policy_name.lower() != SERVICE_POLICY:
        raise NotFound(
            f"the service has no shared access policy {policy_name!r}", hint=f"its one policy is {SERVICE_POLICY}"
        )
    if key_type.lower() != "primary":
        raise InvalidInput(
            f"--key-type {key_type}: the store keeps one key per policy, the primary", hint="drop --key-type"
        )
    text = owner_connection_string()
    value: object = [text] if all_ else text
    if dps_name is None:
        from dpsctl.core.service import load_service

        with session() as tx:
            name = load_service(tx, now()).name
        emit([{"name": name, "connectionString": value}], output)
    else:
        emit({"connectionString": value}, output)
