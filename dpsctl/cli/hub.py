"""`dpsctl hub ...`: IoT hubs linked to the service."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from dpsctl.cli.context import OutputOpt, ShowKeysOpt, secret_option, session
from dpsctl.cli.render import Output, emit, info

if TYPE_CHECKING:  # for annotations only: the commands that open the store load it
    from dpsctl.core.service_records import LinkedHub
    from dpsctl.store import Transaction

# The core and the store are imported inside the commands that use them: loading this module, for its --help or
# for another of its commands, stays cheap (tests/test_startup.py); each command loads what it needs.

app = typer.Typer(
    add_completion=False,
    help="Link, list, change and unlink IoT hubs (NAME or NAME.azure-devices.net).",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="Hub name or host name.")]
LocationOpt = Annotated[
    str | None,
    typer.Option(
        "--location",
        help="Azure region of the hub, e.g. westeurope (add: default the service's location, else eastus).",
    ),
]
WeightOpt = Annotated[int | None, typer.Option("--weight", help="Allocation weight, 1 to 1000 (default 1).")]
ApplyOpt = Annotated[
    bool | None,
    typer.Option(
        "--apply-allocation-policy/--no-apply-allocation-policy",
        help="Take part in allocation when an enrollment names no hubs.",
    ),
]
CsOpt = Annotated[
    str | None,
    secret_option(
        "--connection-string",
        "hub connection string",
        "The hub's owner connection string (a simulated one is made if absent).",
    ),
]

COLUMNS = ("NAME", "LOCATION", "WEIGHT", "APPLY POLICY", "CONNECTION STRING")
DROP = ("CONNECTION STRING", "APPLY POLICY")  # least useful first, when the terminal is narrow


def rows(hubs: list[dict]) -> list[tuple]:
    """Table rows of linked hubs."""
    return [
        (
            h["name"],
            h["location"],
            h["allocationWeight"] or 1,
            h["applyAllocationPolicy"] is not False,
            h["connectionString"],
        )
        for h in hubs
    ]


def emit_hub(doc: dict, output: Output) -> None:
    """Print one linked hub."""
    emit(doc, output, columns=COLUMNS, rows=lambda: rows([doc]), drop=DROP)


def write_hub(change: Callable[[Transaction], LinkedHub], show_keys: bool, output: Output) -> None:
    """Change a linked hub in one write session, then print it."""
    with session(write=True) as tx:
        hub = change(tx)
    emit_hub(hub.to_dict(show_keys=show_keys), output)


def _change_command(*, add: bool) -> Callable[..., None]:
    """`hub add` or `hub update`: the same options, the hub printed after."""

    def command(
        name: NameArg,
        location: LocationOpt = None,
        weight: WeightOpt = None,
        apply_allocation_policy: ApplyOpt = None,
        connection_string: CsOpt = None,
        show_keys: ShowKeysOpt = False,
        output: OutputOpt = Output.table,
    ) -> None:
        from dpsctl.core import hubs

        change = hubs.add_hub if add else hubs.update_hub
        write_hub(
            lambda tx: change(
                tx,
                name,
                location=location,
                weight=weight,
                apply_allocation_policy=apply_allocation_policy,
                connection_string=connection_string,
            ),
            show_keys,
            output,
        )

    command.__doc__ = (
        "Link an IoT hub to the service."
        if add
        else "Change a linked hub's location, weight, policy participation or connection string."
    )
    return command


app.command("add")(_change_command(add=True))


@app.command("list")
def list_(show_keys: ShowKeysOpt = False, output: OutputOpt = Output.table) -> None:
    """List linked hubs."""
    from dpsctl.core.hubs import list_hubs

    with session() as tx:
        docs = [h.to_dict(show_keys=show_keys) for h in list_hubs(tx)]
    emit(docs, output, columns=COLUMNS, rows=lambda: rows(docs), drop=DROP)


@app.command("show")
def show(name: NameArg, show_keys: ShowKeysOpt = False, output: OutputOpt = Output.table) -> None:
    """Show one linked hub (exit 3 if it is not linked)."""
    from dpsctl.core.hubs import get_hub

    with session() as tx:
        hub = get_hub(tx, name)
    emit_hub(hub.to_dict(show_keys=show_keys), output)


app.command("update")(_change_command(add=False))


@app.command("delete")
def delete(
    name: NameArg,
    force: Annotated[
        bool, typer.Option("--force", help="Unlink even if enrollments name the hub (they lose it).")
    ] = False,
) -> None:
    """Unlink a hub; refused (exit 4) while enrollments name it."""
    from dpsctl.core.hubs import delete_hub

    with session(write=True) as tx:
        hub = delete_hub(tx, name, force=force)
    info(f"unlinked {hub.name}")
