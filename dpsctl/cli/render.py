"""The only place that draws: JSON and YAML go to stdout untouched, tables through Rich with markup off."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any

from dpsctl.cli.safetext import safe_json, safe_lines, safe_text


class Output(str, Enum):
    """Output formats of every command that shows data."""

    table = "table"
    json = "json"
    yaml = "yaml"


Row = Sequence[Any]


def emit(data: Any, output: Output, *, columns: Sequence[str] = (), rows: Callable[[], list[Row]] | None = None, title: str | None = None) -> None:
    """Print `data` as JSON or YAML, or as a table of `rows()` under `columns`."""
    from dpsctl.cli.safetext import too_deep_to_print

    with too_deep_to_print():
        if output == Output.json:
            sys.stdout.write(safe_json(json.dumps(data, indent=2, ensure_ascii=False)) + "\n")
        elif output == Output.yaml:
            from dpsctl.cli.safetext import safe_yaml

            sys.stdout.write(safe_yaml(data))
        elif rows is None:
            print_mapping(data)
        else:
            print_table(columns, rows(), title=title)


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    # markup=False: user data such as "[dev]" must never be read as Rich markup.
    import os

    console = Console(markup=False, highlight=False, emoji=False, stderr=stderr, soft_wrap=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 200  # piped tables: do not squeeze into 80 columns and cut IDs
    return console


def cell(value: Any) -> str:
    """A table cell: nested data as compact JSON, None as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return safe_text(json.dumps(value, separators=(",", ":"), ensure_ascii=False))
    return safe_text(str(value))


def print_table(columns: Sequence[str], rows: list[Row], *, title: str | None = None) -> None:
    """A Rich table on stdout."""
    from rich.table import Table

    table = Table(title=safe_text(title) if title else title, show_lines=False, header_style="bold")
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*(cell(v) for v in row))
    _console().print(table)


def print_mapping(data: dict[str, Any]) -> None:
    """A two-column FIELD / VALUE table of one record, nested objects flattened with dots."""
    flat: list[tuple[str, Any]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else key, sub)
        else:
            flat.append((prefix, value))

    walk("", data)
    print_table(("FIELD", "VALUE"), flat)


def print_bars(title: str, counts: dict[str, int], width: int = 30) -> None:
    """Horizontal bars, e.g. devices per hub."""
    from rich.table import Table

    table = Table("HUB", "DEVICES", "", title=title, header_style="bold")
    top = max(counts.values(), default=0) or 1
    for name, count in counts.items():
        table.add_row(safe_text(name), str(count), "█" * max(1 if count else 0, round(width * count / top)))
    _console().print(table)


def info(message: str) -> None:
    """A message for the user (stderr, so that stdout stays data), made safe for the terminal line by line."""
    print(safe_lines(message), file=sys.stderr)


def say(text: str) -> None:
    """Plain text on stdout (a trace, a verdict), made safe for the terminal line by line."""
    print(safe_lines(text))
