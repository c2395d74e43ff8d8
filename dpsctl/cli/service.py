"""`dpsctl service ...` and `dpsctl init`: the provisioning service instance."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from dpsctl.cli.context import STATE, OutputOpt, now, session
from dpsctl.cli.render import Output, emit
from dpsctl.core.errors import Conflict

if TYPE_CHECKING:  # for annotations only: the commands that open the store load it
    from dpsctl.store import Transaction

# The core and the store are imported inside the commands that use them: loading this module, for its --help or
# for another of its commands, stays cheap (tests/test_startup.py); each command loads what it needs.

app = typer.Typer(
    add_completion=False,
    help="Show and change the service settings (ID scope, default allocation policy, location).",
    no_args_is_help=True,
)

PolicyOpt = Annotated[
    str | None, typer.Option("--allocation-policy", help="Default policy: hashed, geoLatency or static.")
]


def _show(tx: Transaction, output: Output) -> None:
    from dpsctl.core.hubs import list_hubs
    from dpsctl.core.service import load_service, operations_count, service_view

    settings = load_service(tx, now())
    view = service_view(settings, [h.to_dict(show_keys=False) for h in list_hubs(tx)], operations_count(tx, settings))
    props = view["properties"]
    emit(
        view,
        output,
        columns=("ID SCOPE", "DEVICE ENDPOINT", "ALLOCATION POLICY", "LOCATION", "LINKED HUBS", "OPERATIONS"),
        drop=("OPERATIONS", "LINKED HUBS", "LOCATION"),
        rows=lambda: [
            (
                props["idScope"],
                props["deviceProvisioningHostName"],
                props["allocationPolicy"],
                view["location"],
                len(props["iotHubs"]),
                props["operationsCount"],
            )
        ],
    )


@app.command("show")
def show(output: OutputOpt = Output.table) -> None:
    """Show the ID scope, device endpoint, default allocation policy and operations count."""
    with session() as tx:
        _show(tx, output)


@app.command("update")
def update(
    allocation_policy: PolicyOpt = None,
    location: Annotated[
        str | None,
        typer.Option("--location", help="Azure region of the service (default device region for geoLatency)."),
    ] = None,
    output: OutputOpt = Output.table,
) -> None:
    """Change the default allocation policy (custom cannot be the default, as in DPS) or the location."""
    from dpsctl.core.service import update_service

    with session(write=True) as tx:
        update_service(tx, now(), allocation_policy=allocation_policy, location=location)
        _show(tx, output)


@app.command("connection-string")
def connection_string(
    host: Annotated[
        str,
        typer.Option(
            "--host", help="Host name the client connects to (the server certificate names localhost and 127.0.0.1)."
        ),
    ] = "localhost",
    port: Annotated[
        int, typer.Option("--port", help="Port of `dpsctl serve`; 443 leaves it out of HostName.", min=1, max=65535)
    ] = 8443,
    output: OutputOpt = Output.table,
) -> None:
    """Print the service connection string (owner policy) that `dpsctl serve` accepts on its service API."""
    emit(owner_connection_string(host, port), output)


def owner_connection_string(host: str = "localhost", port: int = 8443) -> str:
    """The owner policy's connection string for `dpsctl serve` on host:port (the service key is made on first use)."""
    from dpsctl.core.service import connection_string as build
    from dpsctl.core.service import ensure_service_key, load_service

    with session() as tx:
        settings = load_service(tx, now())
    if not settings.service_key:  # a store made before service keys existed gets one now
        with session(write=True) as tx:
            settings = ensure_service_key(tx, now())
    return build(settings, host if port == 443 else f"{host}:{port}")


def register_init(root: typer.Typer) -> None:
    """Add `dpsctl init` to the root app."""

    @root.command("init")
    def init(
        id_scope: Annotated[
            str | None, typer.Option("--id-scope", help="ID scope to use (default: random 0ne + 8 hex digits).")
        ] = None,
        allocation_policy: Annotated[
            str, typer.Option("--allocation-policy", help="Default policy: hashed, geoLatency or static.")
        ] = "hashed",
        output: OutputOpt = Output.table,
    ) -> None:
        """Create the store explicitly; refuses to overwrite an existing one."""
        from dpsctl.core.service import init_service
        from dpsctl.store import open_store

        with open_store(STATE.db) as store:
            if store.exists():
                raise Conflict(
                    f"store {store.location} already exists", hint="use another --db path, or `dpsctl service update`"
                )
            with store.transaction(write=True) as tx:
                init_service(tx, now(), id_scope=id_scope, allocation_policy=allocation_policy)
                _show(tx, output)
