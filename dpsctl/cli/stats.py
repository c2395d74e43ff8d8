"""`dpsctl stats`: counts across the store, devices per hub drawn as bars."""

from __future__ import annotations

import typer

from dpsctl.cli.context import OutputOpt, now, session
from dpsctl.cli.render import Output, emit, print_bars, print_table


def register(app: typer.Typer) -> None:
    """Add `dpsctl stats` to the root app."""

    @app.command("stats")
    def stats(output: OutputOpt = Output.table) -> None:
        """Counts of hubs, enrollments, groups, registrations by status, operations, and devices per hub."""
        from dpsctl.core.stats import collect

        with session() as tx:
            doc = collect(tx, now())
        if output != Output.table:
            emit(doc, output)
            return
        rows = [("linked hubs", doc["linkedHubs"]), ("individual enrollments", doc["enrollments"]), ("enrollment groups", doc["enrollmentGroups"])]
        rows += [(f"registrations: {status}", n) for status, n in doc["registrationsByStatus"].items()]
        rows += [("devices", sum(doc["devicesPerHub"].values())), ("operations", doc["operations"])]
        print_table(("WHAT", "COUNT"), rows)
        print_bars("devices per hub", doc["devicesPerHub"])
