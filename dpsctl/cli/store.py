"""`dpsctl store ...`: which backend holds the data, and moving it to another one."""

from __future__ import annotations

from typing import Annotated

import typer

from dpsctl.cli.context import STATE, OutputOpt, require_store
from dpsctl.cli.render import Output, emit, info
from dpsctl.core.errors import NotFound

# The core and the store are imported inside the commands that use them: loading this module, for its --help or
# for another of its commands, stays cheap (tests/test_startup.py); each command loads what it needs.

app = typer.Typer(
    add_completion=False,
    help="The store itself: backend, size, record counts; migration between TinyDB, SQLite and PostgreSQL.",
    no_args_is_help=True,
)


@app.command("info")
def show_info(output: OutputOpt = Output.table) -> None:
    """Show the backend, path (a URL without its password), size on disk and record counts."""
    from dpsctl.store import open_store
    from dpsctl.store.migrate import record_counts

    require_store(STATE.db)
    with open_store(STATE.db) as store:
        counts = record_counts(store)
        doc = {
            "backend": store.backend,
            "path": store.location,
            "exists": store.exists(),
            "sizeBytes": store.size_bytes(),
            "records": counts,
        }
    emit(doc, output)


@app.command("migrate")
def migrate(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="STORE",
            help="The new store: a postgresql:// URL, *.sqlite/*.sqlite3/*.db for SQLite, any other file name for TinyDB.",
        ),
    ],
    output: OutputOpt = Output.table,
) -> None:
    """Copy the whole store (service, hubs, enrollments, registrations, devices, history) into a new store."""
    from dpsctl.store import open_store
    from dpsctl.store.migrate import migrate as copy

    require_store(STATE.db)
    with open_store(STATE.db) as source, open_store(to) as target:
        if not source.exists():
            raise NotFound(f"store {source.location} does not exist")
        counts = copy(source, target)
    emit({"from": source.location, "to": target.location, "backend": target.backend, "records": counts}, output)
    # The target as shown (a URL without its password: give that again as PGPASSWORD or in ~/.pgpass).
    info(f"copied {sum(counts.values())} records; use it with --db {target.location} (or DPSCTL_DB={target.location})")
