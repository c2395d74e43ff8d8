"""`dpsctl registration ...`: registration records left by provisioning."""

from __future__ import annotations

from typing import Annotated

import typer

from dpsctl.cli.context import EtagOpt, OutputOpt, session
from dpsctl.cli.render import Output, emit, info

# The core and the store are imported inside the commands that use them: loading this module, for its --help or
# for another of its commands, stays cheap (tests/test_startup.py); each command loads what it needs.

app = typer.Typer(
    add_completion=False,
    help="Registration records (DeviceRegistrationState): created by provisioning, deletable, never updated.",
    no_args_is_help=True,
)

IdArg = Annotated[str, typer.Argument(help="Registration ID.")]
COLUMNS = ("REGISTRATION ID", "STATUS", "SUBSTATUS", "ASSIGNED HUB", "DEVICE ID", "GROUP", "LAST UPDATED", "ERROR")


def _group(doc: dict) -> str | None:
    for kind in ("symmetricKey", "x509", "tpm"):
        sub = doc.get(kind)
        if isinstance(sub, dict) and sub.get("enrollmentGroupId"):
            return sub["enrollmentGroupId"]
    return None


def _rows(docs: list[dict]) -> list[tuple]:
    return [
        (
            d["registrationId"],
            d.get("status"),
            d.get("substatus"),
            d.get("assignedHub"),
            d.get("deviceId"),
            _group(d),
            d.get("lastUpdatedDateTimeUtc"),
            d.get("errorMessage"),
        )
        for d in docs
    ]


@app.command("list")
def list_(
    enrollment_group: Annotated[
        str | None, typer.Option("--enrollment-group", help="Only devices of this group.")
    ] = None,
    hub: Annotated[str | None, typer.Option("--hub", help="Only devices assigned to this hub.")] = None,
    status: Annotated[str | None, typer.Option("--status", help="assigned, failed, disabled...")] = None,
    output: OutputOpt = Output.table,
) -> None:
    """List registration records."""
    from dpsctl.core.registrations import list_registrations

    with session() as tx:
        docs = [r.view() for r in list_registrations(tx, group=enrollment_group, hub=hub, status=status)]
    emit(docs, output, columns=COLUMNS, rows=lambda: _rows(docs), drop=("LAST UPDATED", "SUBSTATUS", "GROUP"))


@app.command("show")
def show(registration_id: IdArg, output: OutputOpt = Output.table) -> None:
    """Show one registration record (exit 3 if absent)."""
    from dpsctl.core.registrations import get_registration

    with session() as tx:
        doc = get_registration(tx, registration_id).view()
    emit(doc, output)


@app.command("delete")
def delete(registration_id: IdArg, etag: EtagOpt = None) -> None:
    """Delete a registration record: the device's next registration is an initial assignment."""
    from dpsctl.core.registrations import delete_registration

    with session(write=True) as tx:
        deleted = delete_registration(tx, registration_id, etag=etag)
    info(f"deleted registration {deleted.registration_id}")


@app.command("history")
def history(
    registration_id: Annotated[str | None, typer.Argument(help="Only this device's attempts.")] = None,
    output: OutputOpt = Output.table,
) -> None:
    """Recent registration attempts, refused ones included (the last 1,000 are kept)."""
    from dpsctl.core.provisioning import history as attempts

    with session() as tx:
        docs = attempts(tx, registration_id)
    emit(
        docs,
        output,
        columns=("#", "TIME", "REGISTRATION ID", "ATTESTATION", "STATUS", "SUBSTATUS", "HUB", "ENROLLMENT", "ERROR"),
        drop=("ENROLLMENT", "SUBSTATUS", "ATTESTATION", "#", "HUB"),
        rows=lambda: [
            # The row number: `sequence` is a time-ordered ID (a string) since issue 12, too long for a column.
            (
                n,
                d["timestampUtc"],
                d["registrationId"],
                d["attestation"],
                d["status"],
                d.get("substatus"),
                d.get("assignedHub"),
                d.get("enrollment"),
                d.get("errorMessage"),
            )
            for n, d in enumerate(docs, start=1)
        ],
    )
