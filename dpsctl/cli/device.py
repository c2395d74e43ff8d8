"""`dpsctl device ...`: the simulated IoT hubs' device registries."""

from __future__ import annotations

from typing import Annotated

import typer

from dpsctl.cli.context import OutputOpt, ShowKeysOpt, json_arg, now, session
from dpsctl.cli.render import Output, emit

app = typer.Typer(add_completion=False, help="Devices as the linked IoT hubs see them after provisioning (identity, auth, twin).", no_args_is_help=True)

IdArg = Annotated[str, typer.Argument(help="Device ID.")]
HubOpt = Annotated[str | None, typer.Option("--hub", help="The hub (needed when the ID exists in several hubs).")]
COLUMNS = ("HUB", "DEVICE ID", "REGISTRATION ID", "AUTH", "EDGE", "TAGS", "DESIRED", "LAST UPDATED")


def _public(doc: dict, show_keys: bool) -> dict:
    """Hide symmetric keys unless asked, as everywhere in dpsctl."""
    out = dict(doc)
    auth = dict(out.get("authentication") or {})
    if auth.get("symmetricKey") and not show_keys:
        auth["symmetricKey"] = {}
    out["authentication"] = auth
    return out


def _rows(docs: list[dict]) -> list[tuple]:
    return [
        (d["hub"], d["deviceId"], d.get("registrationId"), d["authentication"].get("type"), d["capabilities"]["iotEdge"], d.get("tags"), d["properties"]["desired"], d.get("lastUpdatedDateTimeUtc"))
        for d in docs
    ]


@app.command("list")
def list_(hub: HubOpt = None, show_keys: ShowKeysOpt = False, output: OutputOpt = Output.table) -> None:
    """List devices in all linked hubs, or in one."""
    from dpsctl.core.devices import list_devices

    with session() as tx:
        docs = [_public(d, show_keys) for d in list_devices(tx, hub)]
    emit(docs, output, columns=COLUMNS, rows=lambda: _rows(docs), drop=("LAST UPDATED", "DESIRED", "TAGS", "EDGE", "REGISTRATION ID"))


@app.command("show")
def show(device_id: IdArg, hub: HubOpt = None, show_keys: ShowKeysOpt = False, output: OutputOpt = Output.table) -> None:
    """Show one device and its twin (exit 3 if absent)."""
    from dpsctl.core.devices import get_device

    with session() as tx:
        doc = _public(get_device(tx, device_id, hub), show_keys)
    emit(doc, output)


@app.command("update-twin")
def update_twin(
    device_id: IdArg,
    hub: HubOpt = None,
    desired: Annotated[str | None, typer.Option("--desired", help="Desired properties patch (JSON or @FILE; null removes a key).")] = None,
    tags: Annotated[str | None, typer.Option("--tags", help="Tags patch (JSON or @FILE).")] = None,
    output: OutputOpt = Output.table,
) -> None:
    """Change a device twin as a back end would, so that migrate and reset can be seen on re-registration."""
    from dpsctl.core.devices import update_twin as patch
    from dpsctl.core.errors import InvalidInput

    if desired is None and tags is None:
        raise InvalidInput("give --desired and/or --tags")
    with session(write=True) as tx:
        doc = patch(
            tx, device_id, hub=hub,
            desired=json_arg(desired, "desired properties") if desired is not None else None,
            tags=json_arg(tags, "tags") if tags is not None else None,
            now=now(),
        )
    emit(_public(doc, False), output)
