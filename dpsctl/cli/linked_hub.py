"""`dpsctl linked-hub ...`: az's `iot dps linked-hub`, in az's words, over the same core as `dpsctl hub`.

The JSON is ARM's: each hub an `iotHubs` entry of the provisioning service (`IotHubDefinitionDescription`),
its key masked as ARM masks it. `create` prints the service's linked hubs, as az does; `delete` prints nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from dpsctl.cli.az_compat import TriState, tri_state
from dpsctl.cli.context import AZ_RESOURCE, OutputOpt, session, shared_options
from dpsctl.cli.hub import COLUMNS, DROP, emit_hub, rows, write_hub
from dpsctl.cli.render import Output, emit
from dpsctl.core.errors import InvalidInput

if TYPE_CHECKING:  # for annotations only: the commands that open the store load it
    from dpsctl.store import Transaction

# The core and the store are imported inside the commands that use them: loading this module, for its --help or
# for another of its commands, stays cheap (tests/test_startup.py); each command loads what it needs.

app = typer.Typer(
    add_completion=False,
    help="az's `iot dps linked-hub`: the IoT hubs linked to the service (dpsctl's own command is `hub`).",
    no_args_is_help=True,
)

# az's three-state flags here: a bare `--apply-allocation-policy` means true.
THREE_STATE = ("--apply-allocation-policy",)

LinkedHubOpt = Annotated[str, typer.Option("--linked-hub", "--lh", help="The linked hub's host name (or name).")]
WeightOpt = Annotated[int | None, typer.Option("--allocation-weight", help="Allocation weight, 1 to 1000.")]
ApplyOpt = Annotated[
    TriState | None,
    typer.Option(
        "--apply-allocation-policy",
        help="true or false: take part in allocation when an enrollment names no hubs.",
        case_sensitive=False,
    ),
]
NoWaitOpt = Annotated[bool, typer.Option("--no-wait", help="Accepted: dpsctl finishes before it returns.")]

# az's options that change nothing here (one store is one DPS, and every command finishes before it returns): the
# commands take them as `**_`.
az_resource = shared_options(AZ_RESOURCE, before="output")
az_resource_no_wait = shared_options(AZ_RESOURCE | {"no_wait": (NoWaitOpt, False)}, before="output")


def _emit_all(tx: Transaction, output: Output) -> None:
    from dpsctl.core.hubs import list_hubs

    docs = [h.to_dict(show_keys=False) for h in list_hubs(tx)]
    emit(docs, output, columns=COLUMNS, rows=lambda: rows(docs), drop=DROP)


@app.command("create")
@az_resource_no_wait
def create(
    connection_string: Annotated[
        str | None,
        typer.Option(
            "--connection-string", "--cs", help="The hub's owner connection string; its HostName names the hub."
        ),
    ] = None,
    hub_name: Annotated[
        str | None, typer.Option("--hub-name", "--hn", help="The hub's name (a simulated connection string is made).")
    ] = None,
    hub_resource_group: Annotated[
        str | None, typer.Option("--hub-resource-group", "--hrg", help="The hub's resource group: accepted, ignored.")
    ] = None,
    location: Annotated[str | None, typer.Option("--location", help="The hub's Azure region, e.g. westeurope.")] = None,
    allocation_weight: WeightOpt = None,
    apply_allocation_policy: ApplyOpt = None,
    output: OutputOpt = Output.table,
    **_: object,
) -> None:
    """Link an IoT hub, by connection string or name; prints the linked hubs (as az)."""
    from dpsctl.core.hubs import add_hub, hub_of_connection_string

    if (connection_string is None) == (hub_name is None):
        raise InvalidInput(
            "give the hub's --connection-string, or its --hub-name (one of them)",
            hint="e.g. dpsctl linked-hub create --dps-name my-dps --hub-name my-hub",
        )
    name = hub_of_connection_string(connection_string) if connection_string else hub_name
    with session(write=True) as tx:
        add_hub(
            tx,
            name or "",
            location=location,
            weight=allocation_weight,
            apply_allocation_policy=tri_state(apply_allocation_policy),
            connection_string=connection_string,
        )
        _emit_all(tx, output)


@app.command("list")
@az_resource
def list_(output: OutputOpt = Output.table, **_: object) -> None:
    """List the linked hubs."""
    with session() as tx:
        _emit_all(tx, output)


@app.command("show")
@az_resource
def show(linked_hub: LinkedHubOpt, output: OutputOpt = Output.table, **_: object) -> None:
    """Show one linked hub (exit 3 if it is not linked)."""
    from dpsctl.core.hubs import get_hub

    with session() as tx:
        hub = get_hub(tx, linked_hub)
    emit_hub(hub.to_dict(show_keys=False), output)


@app.command("update")
@az_resource_no_wait
def update(
    linked_hub: LinkedHubOpt,
    allocation_weight: WeightOpt = None,
    apply_allocation_policy: ApplyOpt = None,
    output: OutputOpt = Output.table,
    **_: object,
) -> None:
    """Change a linked hub's allocation weight or policy participation; prints the hub."""
    from dpsctl.core.hubs import update_hub

    apply = tri_state(apply_allocation_policy)
    write_hub(
        lambda tx: update_hub(tx, linked_hub, weight=allocation_weight, apply_allocation_policy=apply), False, output
    )


@app.command("delete")
@az_resource_no_wait
def delete(linked_hub: LinkedHubOpt, **_: object) -> None:
    """Unlink a hub; refused (exit 4) while enrollments name it, as `dpsctl hub delete`. Prints nothing."""
    from dpsctl.core.hubs import delete_hub

    with session(write=True) as tx:
        delete_hub(tx, linked_hub)
