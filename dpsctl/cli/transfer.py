"""`dpsctl import` and `dpsctl export`: the whole enrollment list as one YAML or JSON document."""

from __future__ import annotations

from typing import Annotated

import typer

from dpsctl.cli.context import OutputOpt, ShowKeysOpt, now, read_file, read_stdin, session
from dpsctl.cli.render import Output, emit
from dpsctl.core.errors import InvalidInput

# The core and the store are imported inside the commands that use them: loading this module, for its --help or
# for another of its commands, stays cheap (tests/test_startup.py); each command loads what it needs.


def register(app: typer.Typer) -> None:
    """Add `import` and `export` to the root app."""

    @app.command("import")
    def import_(
        file: Annotated[
            str,
            typer.Argument(
                metavar="FILE",
                help="YAML or JSON document: {service, linkedHubs, enrollments, enrollmentGroups}; - reads standard input.",
            ),
        ],
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and print the plan; write nothing.")] = False,
        output: OutputOpt = Output.table,
    ) -> None:
        """Create or update everything in FILE, all or nothing; running it twice changes nothing."""
        from dpsctl.core.transfer import MAX_DOCUMENT_BYTES, import_document, parse_document

        raw = (
            read_stdin(MAX_DOCUMENT_BYTES) if file == "-" else read_file(file, "import file", limit=MAX_DOCUMENT_BYTES)
        )
        doc = parse_document(raw, "standard input" if file == "-" else file)
        with session(write=True) as tx:  # a dry run plans with real writes, then discards them
            plan = import_document(tx, doc, now(), dry_run=dry_run).to_dict()
        rows = [
            (
                action + (" (dry run)" if dry_run else ""),
                kind,
                len(ids),
                ", ".join(ids[:5]) + (" ..." if len(ids) > 5 else ""),
            )
            for action in ("created", "updated", "unchanged")
            for kind, ids in plan[action].items()
            if ids
        ]
        emit(plan, output, columns=("ACTION", "RECORDS", "COUNT", "IDS"), rows=lambda: rows)

    @app.command("export")
    def export(show_keys: ShowKeysOpt = False, output: OutputOpt = Output.yaml) -> None:
        """Print the service settings, linked hubs, enrollments and groups as one importable document."""
        from dpsctl.core.transfer import export_document

        if output == Output.table:
            raise InvalidInput(
                "export has no table format: it prints an importable document",
                hint="use -o yaml (the default) or -o json; -o tsv and -o none work with --query",
            )
        with session() as tx:
            doc = export_document(tx, now(), show_keys=show_keys)
        emit(doc, output)
