"""`dpsctl stats`: counts across the store, devices per hub drawn as bars."""

from __future__ import annotations

import typer

from dpsctl.cli.context import OutputOpt, now, session
from dpsctl.cli.render import Output, emit, format_bars, format_table

# The core and the store are imported inside the commands that use them: loading this module, for its --help or
# for another of its commands, stays cheap (tests/test_startup.py); each command loads what it needs.


def register(app: typer.Typer) -> None:
    """Add `dpsctl stats` to the root app."""

    @app.command("stats")
    def stats(output: OutputOpt = Output.table) -> None:
        """Counts of hubs, enrollments, groups, registrations by status, operations, and devices per hub."""
        from dpsctl.core.stats import collect

        with session() as tx:
            doc = collect(tx, now())
        emit(doc, output, table=lambda: _table(doc))


def _table(doc: dict) -> str:
    """The totals (every one of them is in the JSON too), then devices per hub as bars."""
    rows = [
        ("linked hubs", doc["linkedHubs"]),
        ("individual enrollments", doc["enrollments"]),
        ("enrollment groups", doc["enrollmentGroups"]),
    ]
    rows += [("registrations", doc["registrations"])] + [
        (f"registrations: {status}", n) for status, n in doc["registrationsByStatus"].items()
    ]
    rows += [("devices", doc["devices"]), ("operations", doc["operations"])]
    return format_table(("WHAT", "COUNT"), rows) + "\n" + format_bars("devices per hub", doc["devicesPerHub"])
